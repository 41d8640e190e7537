"""Lhotse manifests of a corpus through lhotse's own recipe, with bad items reported by id and skipped.

Missing, empty or unreadable audio files and empty transcripts never stop the stage: each is written to
``<output-dir>/bad_items_<name>.tsv`` (id, path, reason), logged, and left out; the stage's log line gives the count.
See :mod:`icefall_ext.data.corpus_check`.

    python -m icefall_ext.bin.prepare_corpus commonvoice --corpus-dir cv-corpus --output-dir data/manifests -l en de
    python -m icefall_ext.bin.prepare_corpus librispeech --corpus-dir download/LibriSpeech --output-dir data/manifests
    python -m icefall_ext.bin.prepare_corpus voxpopuli-asr --corpus-dir download/voxpopuli --output-dir data/manifests -l en
    python -m icefall_ext.bin.prepare_corpus musan --corpus-dir download/musan --output-dir data/manifests
    python -m icefall_ext.bin.prepare_corpus fleurs --corpus-dir download/fleurs --output-dir data/manifests -l en_us fi_fi
    # MuST-C (<corpus-dir>/en-<tgt>/data/...): -l the target languages; text = English, translated_text = {tgt: ...}
    python -m icefall_ext.bin.prepare_corpus must-c --corpus-dir download/must-c --output-dir data/manifests -l de it
    # untranscribed audio, one folder per language (<corpus-dir>/<lang>/**/*.wav|flac|ogg|opus|mp3)
    python -m icefall_ext.bin.prepare_corpus unlabelled-audio --corpus-dir my_audio --output-dir data/manifests \
        --name pool -l en_us fi_fi
    # long-form evaluation audio (<corpus-dir>/<lang>/<id>.wav + <lang>/transcripts.tsv with columns id, text), e.g.
    # the FLEURS mini corpus's longform/: one supervision spanning each recording, written as
    # longform-<lang>_{recordings,supervisions}_test.jsonl.gz (compute_fbank --glob 'longform-*' makes
    # longform-<lang>_cuts_test.jsonl.gz)
    python -m icefall_ext.bin.prepare_corpus longform --corpus-dir mini_corpus/longform --output-dir data/manifests \
        -l en_us de_de
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from ..common import die, setup_logging

if TYPE_CHECKING:
    from ..data.corpus_check import BadItems

LAYOUTS = ("commonvoice", "librispeech", "voxpopuli-asr", "musan", "fleurs", "must-c", "unlabelled-audio", "longform")
LONGFORM_AUDIO = (".wav", ".flac", ".ogg", ".opus", ".mp3")

logger = logging.getLogger(__name__)


def _read_tsv(path: Path) -> List[Dict[str, str]]:
    """Rows of a tab-separated file with a header line (cells beyond the header are ignored)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def prepare_longform(corpus_dir: Path, output_dir: Path, languages: Sequence[str], name: str = "longform",
                     num_jobs: int = 2) -> Dict[str, BadItems]:
    """Manifests of long-form evaluation audio, one language per folder: ``<corpus>/<lang>/transcripts.tsv``
    (header ``id  text``) names each recording ``<lang>/<id>.wav`` (or .flac/.ogg/.opus/.mp3); an optional
    ``segments.tsv`` (``id  speaker_id ...``) gives its speaker. One recording and one supervision spanning it
    (text, ``language`` = the folder name) per row, written to ``<output>/<name>-<lang>_{recordings,supervisions}
    _test.jsonl.gz`` through a temporary directory. Missing or unreadable audio, duplicate ids and empty texts
    are reported by id in ``bad_items_<name>-<lang>.tsv`` and skipped. Returns the report per language."""
    from lhotse import RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.qa import validate_recordings_and_supervisions

    from ..data.corpus_check import BadItems, Item, open_recording

    corpus_dir, output_dir = Path(corpus_dir), Path(output_dir)
    missing = [lang for lang in languages if not (corpus_dir / lang / "transcripts.tsv").is_file()]
    if missing:
        raise FileNotFoundError(f"no transcripts.tsv for {', '.join(missing)} under {corpus_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for lang in languages:
        lang_dir = corpus_dir / lang
        rows = _read_tsv(lang_dir / "transcripts.tsv")
        speakers = {}
        if (lang_dir / "segments.tsv").is_file():
            speakers = {r["id"]: r.get("speaker_id") for r in _read_tsv(lang_dir / "segments.tsv")}
        items = []
        for row in rows:
            rid = (row.get("id") or "").strip()
            audio = next((lang_dir / f"{rid}{ext}" for ext in LONGFORM_AUDIO if (lang_dir / f"{rid}{ext}").is_file()),
                         lang_dir / f"{rid}.wav")
            items.append(Item(rid, audio, (row.get("text") or "").strip()))
        with ThreadPoolExecutor(max(1, num_jobs)) as pool:
            opened = list(pool.map(lambda item: open_recording(item.audio, item.id), items))
        report = BadItems(num_items=len(items))
        recordings, supervisions, seen = [], [], set()
        for item, (recording, reason) in zip(items, opened):
            if not item.id or item.id in seen:
                reason = "duplicate id" if item.id else "empty id"
            elif recording is not None and not item.text:
                reason = "empty transcript"
            if reason is not None:
                report.add(item, reason)
                continue
            seen.add(item.id)
            recordings.append(recording)
            supervisions.append(SupervisionSegment(
                id=item.id, recording_id=item.id, start=0.0, duration=recording.duration, channel=0,
                text=item.text, language=lang, speaker=speakers.get(item.id)))
        recording_set = RecordingSet.from_recordings(recordings)
        supervision_set = SupervisionSet.from_segments(supervisions)
        if recordings:
            validate_recordings_and_supervisions(recording_set, supervision_set)
        prefix = f"{name}-{lang}"
        with tempfile.TemporaryDirectory(prefix=f".{prefix}-", dir=output_dir) as tmp:
            for kind, manifest in (("recordings", recording_set), ("supervisions", supervision_set)):
                staged = Path(tmp) / f"{prefix}_{kind}_test.jsonl.gz"
                manifest.to_file(staged)
                shutil.move(str(staged), str(output_dir / staged.name))
        report.write(output_dir / f"bad_items_{prefix}.tsv")
        report.log(prefix)
        logger.info("%s: %d recordings (%.2f h)", prefix, len(recordings),
                    sum(r.duration for r in recordings) / 3600)
        reports[lang] = report
    return reports


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layout", choices=LAYOUTS)
    p.add_argument("--corpus-dir", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("-l", "--languages", nargs="+", default=[],
                   help="language codes (commonvoice, fleurs (e.g. en_us): required; voxpopuli-asr: one run per "
                        "language; must-c: the target languages)")
    p.add_argument("--parts", nargs="+", default=None,
                   help="commonvoice splits (default: train dev test); librispeech parts (default: all found)")
    p.add_argument("--name", default=None,
                   help="the manifests' name prefix (unlabelled-audio: default unlabelled; longform: longform)")
    p.add_argument("-j", "--num-jobs", type=int, default=2)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    if not args.corpus_dir.is_dir():
        die(f"corpus dir {args.corpus_dir} does not exist")
    from ..data import corpus_check as cc

    if args.layout == "commonvoice":
        if not args.languages:
            die("commonvoice needs --languages")
        cc.prepare_commonvoice_checked(args.corpus_dir, args.output_dir, args.languages,
                                       args.parts or ("train", "dev", "test"), args.num_jobs)
    elif args.layout == "librispeech":
        cc.prepare_librispeech_checked(args.corpus_dir, args.output_dir, args.parts, args.num_jobs)
    elif args.layout == "voxpopuli-asr":
        if not args.languages:
            die("voxpopuli-asr needs --languages")
        for lang in args.languages:
            try:
                cc.prepare_voxpopuli_asr_checked(args.corpus_dir, args.output_dir, lang, args.num_jobs)
            except FileNotFoundError as e:
                die(str(e))
    elif args.layout == "fleurs":
        if not args.languages:
            die("fleurs needs --languages (FLEURS codes such as en_us)")
        try:
            cc.prepare_fleurs_checked(args.corpus_dir, args.output_dir, args.languages, args.num_jobs)
        except FileNotFoundError as e:
            die(str(e))
    elif args.layout == "must-c":
        if not args.languages:
            die("must-c needs --languages (target languages such as de it nl)")
        try:
            cc.prepare_must_c_checked(args.corpus_dir, args.output_dir, args.languages, args.num_jobs)
        except (FileNotFoundError, ValueError) as e:
            die(str(e))
    elif args.layout == "unlabelled-audio":
        from ..data.unlabelled import prepare_unlabelled

        try:
            prepare_unlabelled(args.corpus_dir, args.output_dir, args.languages or "auto", args.name or "unlabelled",
                               args.num_jobs)
        except FileNotFoundError as e:
            die(str(e))
    elif args.layout == "longform":
        languages = args.languages or sorted(p.name for p in args.corpus_dir.iterdir()
                                             if (p / "transcripts.tsv").is_file())
        if not languages:
            die(f"no <lang>/transcripts.tsv under {args.corpus_dir}")
        try:
            prepare_longform(args.corpus_dir, args.output_dir, languages, args.name or "longform", args.num_jobs)
        except FileNotFoundError as e:
            die(str(e))
    else:
        cc.prepare_musan_checked(args.corpus_dir, args.output_dir, args.num_jobs)


if __name__ == "__main__":
    main()
