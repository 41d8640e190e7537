"""Lhotse manifests for untranscribed audio laid out one folder per language (``<root>/<lang>/**/<file>``).

One recording per file and one supervision covering it, with empty text, ``language`` set and
``custom={"unlabelled": True, ...}``; written per language as ``<name>_recordings_<lang>.jsonl.gz`` and
``<name>_supervisions_<lang>.jsonl.gz``. Files that cannot be read are reported by id
(``bad_items_<name>-<lang>.tsv``), counted and left out (the corpus check of :mod:`icefall_ext.data.corpus_check`).
Used for VoxPopuli's unlabelled segments and for any pool of untranscribed audio (e.g. for BEST-RQ pre-training).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import validate_recordings_and_supervisions

from .corpus_check import BadItems, Item, open_recording

logger = logging.getLogger(__name__)

AUDIO_PATTERNS = ("*.wav", "*.flac", "*.ogg", "*.opus", "*.mp3")


class UnlabelledManifests(NamedTuple):
    recordings: RecordingSet
    supervisions: SupervisionSet
    unreadable: List[str]  # ids of files that were skipped
    report: Optional[BadItems] = None  # the same, with the reasons


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


def prepare_language(language_dir: Path, language: str, name: str, num_jobs: int = 1, check_decode: bool = False,
                     patterns: Sequence[str] = AUDIO_PATTERNS,
                     custom: Callable[[str], Dict] = lambda recording_id: {}) -> UnlabelledManifests:
    """Manifests of every audio file under ``language_dir``; ``custom(id)`` adds fields to each supervision."""
    paths = sorted({p for pattern in patterns for p in language_dir.rglob(pattern)})
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
    report.log(f"{name}-{language}")
    supervisions = [
        SupervisionSegment(id=r.id, recording_id=r.id, start=0.0, duration=r.duration, channel=0, language=language,
                           text="", custom={"unlabelled": True, **custom(r.id)})
        for r in recordings
    ]
    recording_set = RecordingSet.from_recordings(recordings)
    supervision_set = SupervisionSet.from_segments(supervisions)
    if recordings:
        validate_recordings_and_supervisions(recording_set, supervision_set)
    return UnlabelledManifests(recording_set, supervision_set, unreadable, report)


def prepare_unlabelled(root: Path, output_dir: Optional[Path], languages: Union[str, Sequence[str]], name: str,
                       num_jobs: int = 1, check_decode: bool = False, patterns: Sequence[str] = AUDIO_PATTERNS,
                       custom: Callable[[str], Dict] = lambda recording_id: {}) -> Dict[str, UnlabelledManifests]:
    """Manifests per language ("auto": every folder of ``root``); written to ``output_dir`` when given."""
    root = Path(root)
    if languages == "auto":
        languages = sorted(p.name for p in root.iterdir() if p.is_dir())
    elif isinstance(languages, str):
        languages = [languages]
    manifests = {}
    for language in languages:
        language_dir = root / language
        if not language_dir.is_dir():
            raise FileNotFoundError(f"No {name} audio for {language!r} in {root}")
        result = prepare_language(language_dir, language, name, num_jobs, check_decode, patterns, custom)
        hours = sum(r.duration for r in result.recordings) / 3600
        logger.info("%s %s: %d recordings (%.2f h), %d unreadable skipped", name, language, len(result.recordings),
                    hours, len(result.unreadable))
        if output_dir is not None:
            output_dir = Path(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            result.report.write(output_dir / f"bad_items_{name}-{language}.tsv")
            result.recordings.to_file(output_dir / f"{name}_recordings_{language}.jsonl.gz")
            result.supervisions.to_file(output_dir / f"{name}_supervisions_{language}.jsonl.gz")
        manifests[language] = result
    return manifests
