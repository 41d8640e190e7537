#!/usr/bin/env python3
"""Lhotse manifests for unlabelled VoxPopuli audio.

Reads the layout that the official ``voxpopuli.get_unlabelled_data`` writes,
``<corpus-dir>/unlabelled_data/<lang>/<year>/<event_id>_<segment_no>.ogg``
(``--corpus-dir`` may also point at ``unlabelled_data`` itself), and writes per
language ``voxpopuli-unlabelled_recordings_<lang>.jsonl.gz`` and
``voxpopuli-unlabelled_supervisions_<lang>.jsonl.gz``: one recording per file and
one supervision covering it, with empty text, ``language`` set and
``custom={"unlabelled": True, "event_id": ...}``. Files that cannot be read are
logged with their ids, counted and left out.
"""
from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import validate_recordings_and_supervisions

from icefall_ext.data.corpus_check import BadItems, Item, open_recording

logger = logging.getLogger(__name__)

Pathlike = Union[str, Path]


class UnlabelledManifests(NamedTuple):
    recordings: RecordingSet
    supervisions: SupervisionSet
    unreadable: List[str]  # ids of files that were skipped
    report: Optional[BadItems] = None  # the same, with the reasons


def find_unlabelled_root(corpus_dir: Path) -> Path:
    nested = corpus_dir / "unlabelled_data"
    return nested if nested.is_dir() else corpus_dir


def read_recording(path: Path, check_decode: bool) -> Tuple[str, Optional[Recording], str]:
    """(id, recording, "") of ``path``, or (id, None, reason) if it cannot be read (the shared corpus check)."""
    recording_id = path.stem
    recording, reason = open_recording(path, recording_id)
    if recording is not None and check_decode:
        try:
            samples = recording.load_audio()
            if samples.shape[-1] != recording.num_samples:
                raise ValueError(f"decoded {samples.shape[-1]} samples, header says {recording.num_samples}")
        except Exception as error:  # noqa: BLE001 - any decoder failure means the file is unusable
            recording, reason = None, f"unreadable: {type(error).__name__}: {error}".splitlines()[0][:300]
    return recording_id, recording, reason or ""


def prepare_language(
    language_dir: Path, language: str, num_jobs: int = 1, check_decode: bool = False
) -> UnlabelledManifests:
    paths = sorted(language_dir.rglob("*.ogg"))
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as pool:
        results = list(pool.map(lambda p: read_recording(p, check_decode), paths))
    recordings, unreadable = [], []
    report = BadItems(num_items=len(paths))
    for path, (recording_id, recording, reason) in zip(paths, results):
        if recording is None:
            unreadable.append(recording_id)
            report.add(Item(recording_id, path), reason)
        else:
            recordings.append(recording)
    report.log(f"voxpopuli-unlabelled-{language}")
    supervisions = [
        SupervisionSegment(
            id=recording.id,
            recording_id=recording.id,
            start=0.0,
            duration=recording.duration,
            channel=0,
            language=language,
            text="",
            custom={"unlabelled": True, "event_id": recording.id.rsplit("_", 1)[0]},
        )
        for recording in recordings
    ]
    recording_set = RecordingSet.from_recordings(recordings)
    supervision_set = SupervisionSet.from_segments(supervisions)
    if recordings:
        validate_recordings_and_supervisions(recording_set, supervision_set)
    return UnlabelledManifests(recording_set, supervision_set, unreadable, report)


def prepare_voxpopuli_unlabelled(
    corpus_dir: Pathlike,
    output_dir: Optional[Pathlike] = None,
    languages: Union[str, Sequence[str]] = "auto",
    num_jobs: int = 1,
    check_decode: bool = False,
) -> Dict[str, UnlabelledManifests]:
    """Manifests per language; written to ``output_dir`` when given.

    :param languages: "auto" (every language directory found) or language codes.
    :param check_decode: also decode every file (slow) instead of reading headers only.
    """
    root = find_unlabelled_root(Path(corpus_dir))
    if languages == "auto":
        languages = sorted(p.name for p in root.iterdir() if p.is_dir())
    elif isinstance(languages, str):
        languages = [languages]
    manifests = {}
    for language in languages:
        language_dir = root / language
        if not language_dir.is_dir():
            raise FileNotFoundError(f"No unlabelled VoxPopuli audio for {language!r} in {root}")
        result = prepare_language(language_dir, language, num_jobs, check_decode)
        hours = sum(r.duration for r in result.recordings) / 3600
        logger.info(
            "%s: %d recordings (%.2f h), %d unreadable skipped",
            language, len(result.recordings), hours, len(result.unreadable),
        )
        if output_dir is not None:
            output_dir = Path(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            result.report.write(output_dir / f"bad_items_voxpopuli-unlabelled-{language}.tsv")
            result.recordings.to_file(output_dir / f"voxpopuli-unlabelled_recordings_{language}.jsonl.gz")
            result.supervisions.to_file(
                output_dir / f"voxpopuli-unlabelled_supervisions_{language}.jsonl.gz"
            )
        manifests[language] = result
    return manifests


def get_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", required=True, type=Path, help="VoxPopuli root (holding unlabelled_data/)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--languages", nargs="+", default=["auto"], help='codes, or "auto" for all found')
    parser.add_argument("--num-jobs", type=int, default=1)
    parser.add_argument("--check-decode", action="store_true", help="decode every file, not only its header")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args = get_args()
    languages = "auto" if args.languages == ["auto"] else args.languages
    prepare_voxpopuli_unlabelled(args.corpus_dir, args.output_dir, languages, args.num_jobs, args.check_decode)


if __name__ == "__main__":
    main()
