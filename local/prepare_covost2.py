#!/usr/bin/env python3
"""Lhotse manifests of CoVoST 2 X -> English (Wang et al. 2020) from Common Voice 4 audio and the CoVoST tables.

Inputs (the layout of facebookresearch/covost and ESPnet's ``egs2/covost2``):

* ``<cv-dir>/<lang>/clips/*.mp3`` and ``<cv-dir>/<lang>/validated.tsv`` (Common Voice 4: client_id, path,
  sentence, ...): the audio and its transcript;
* ``<covost-dir>/covost_v2.<lang>_en.tsv`` (path, translation, split, and usually sentence and client_id): the
  English translation of each clip and its split; ``train`` and ``train_covost`` make the training set.

Each clip becomes a recording and one supervision with ``text`` = the source transcript, ``language`` = the source
language code, ``speaker`` = the client id and ``custom={"translated_text": {"en": <translation>}}`` (the convention
of lhotse's iwslt22_ta recipe). Written as ``<out>/covost2-<lang>_{recordings,supervisions}_{train,dev,test}
.jsonl.gz``. Rows whose audio is missing or unreadable, or that lack a transcript or a translation, are reported by
id in ``<out>/bad_items_covost2-<lang>.tsv`` and left out.

    python local/prepare_covost2.py --cv-dir cv-corpus-4 --covost-dir covost_tsv --out-dir data/manifests -l fr de
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lhotse import RecordingSet, SupervisionSegment, SupervisionSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from icefall_ext.data.corpus_check import BadItems, Item, open_recording  # noqa: E402

logger = logging.getLogger("prepare_covost2")

SPLITS = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}


def read_tsv(path: Path) -> List[Dict[str, str]]:
    """Rows of a tab-separated table with a header; quotes are text (Common Voice writes them unescaped)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def prepare_language(cv_dir: Path, covost_dir: Path, out_dir: Path, lang: str, num_jobs: int = 4) -> BadItems:
    """Manifests of one source language; returns the items left out (also written to ``bad_items_*.tsv``)."""
    table = covost_dir / f"covost_v2.{lang}_en.tsv"
    validated = cv_dir / lang / "validated.tsv"
    for path in (table, validated):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    transcripts = {row["path"]: row for row in read_tsv(validated)}
    rows = read_tsv(table)
    bad = BadItems(num_items=len(rows))
    kept = []
    for row in rows:
        clip = row.get("path") or ""
        item = Item(Path(clip).stem, cv_dir / lang / "clips" / clip)
        cv_row = transcripts.get(clip, {})
        sentence = (cv_row.get("sentence") or row.get("sentence") or "").strip()
        translation = (row.get("translation") or "").strip()
        split = SPLITS.get(row.get("split", ""))
        if split is None:
            bad.add(item, f"unknown split: {row.get('split')!r}")
        elif not sentence:
            bad.add(item, "no transcript")
        elif not translation:
            bad.add(item, "no translation")
        else:
            kept.append((item, split, sentence, translation, cv_row.get("client_id") or row.get("client_id")))
    with ThreadPoolExecutor(max(1, num_jobs)) as pool:
        opened = list(pool.map(lambda k: open_recording(k[0].audio, k[0].id), kept))
    recordings: Dict[str, list] = {s: [] for s in ("train", "dev", "test")}
    supervisions: Dict[str, list] = {s: [] for s in ("train", "dev", "test")}
    for (item, split, sentence, translation, speaker), (recording, reason) in zip(kept, opened):
        if recording is None:
            bad.add(item, reason)
            continue
        recordings[split].append(recording)
        supervisions[split].append(SupervisionSegment(
            id=item.id, recording_id=item.id, start=0.0, duration=recording.duration, channel=0, text=sentence,
            language=lang, speaker=speaker or None, custom={"translated_text": {"en": translation}}))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in recordings:
        prefix = out_dir / f"covost2-{lang}"
        RecordingSet.from_recordings(recordings[split]).to_file(f"{prefix}_recordings_{split}.jsonl.gz")
        SupervisionSet.from_segments(supervisions[split]).to_file(f"{prefix}_supervisions_{split}.jsonl.gz")
    bad.write(out_dir / f"bad_items_covost2-{lang}.tsv")
    bad.log(f"covost2-{lang}")
    return bad


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv-dir", type=Path, required=True, help="Common Voice 4 root (<lang>/clips, <lang>/validated.tsv)")
    p.add_argument("--covost-dir", type=Path, required=True, help="folder of covost_v2.<lang>_en.tsv")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("-l", "--languages", nargs="+", required=True, help="Common Voice codes, e.g. fr de sv-SE")
    p.add_argument("-j", "--num-jobs", type=int, default=4)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(name)s] %(message)s", level=logging.INFO)
    for lang in args.languages:
        try:
            prepare_language(args.cv_dir, args.covost_dir, args.out_dir, lang, args.num_jobs)
        except FileNotFoundError as error:
            sys.exit(f"prepare_covost2: {error}")


if __name__ == "__main__":
    main()
