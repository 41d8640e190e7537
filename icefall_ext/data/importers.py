"""Bring a user's own corpus into lhotse manifests: a Kaldi data directory or a TSV/CSV table.

Kaldi data directories (``wav.scp``, ``text``, optional ``segments``, ``utt2spk``, ``utt2lang``, ``spk2gender``)
are read by lhotse's own importer (:func:`lhotse.kaldi.load_kaldi_data_dir`) after a check that removes what
would make it crash or silently lose data: empty lines, duplicate ids, audio files that do not exist,
utterances whose recording is not in ``wav.scp``, utterances without a transcript. Everything removed is
counted by reason with its ids (a :class:`~icefall_ext.data.filtering.FilterReport`).

A table (``.tsv``, or ``.csv`` for comma-separated) has a header row naming its columns: ``audio`` (or
``path``: a file, relative paths resolved against the table's folder) and ``text`` are required; ``id``,
``language`` (or ``lang``), ``speaker``, ``start`` and ``end`` (seconds) are optional. Each recording is read
with :meth:`lhotse.Recording.from_file`, so its true sampling rate is kept; features are computed at the
model's rate later (:mod:`icefall_ext.bin.compute_fbank` resamples), so 8 kHz audio needs nothing special.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from .filtering import FilterReport

logger = logging.getLogger(__name__)


def _read_table(path: Path, report: FilterReport) -> Dict[str, str]:
    """``id value`` lines of a Kaldi file; empty lines and duplicate ids are reported, the first id wins."""
    out: Dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            report.dropped["empty line"].append(f"{path.name}:{n}")
            continue
        key, _, value = line.strip().partition(" ")
        if key in out:
            report.dropped[f"duplicate id in {path.name}"].append(key)
            continue
        out[key] = value.strip()
    return out


def _is_command(entry: str) -> bool:
    return entry.rstrip().endswith("|")


def _audio_path(entry: str, base: Path) -> Path:
    p = Path(entry)
    return p if p.is_absolute() else base / p


def clean_kaldi_dir(src: Path, dst: Path) -> FilterReport:
    """Write to ``dst`` a copy of the Kaldi data dir ``src`` that lhotse's importer reads without surprises."""
    src, dst = Path(src), Path(dst)
    report = FilterReport()
    if not (src / "wav.scp").is_file():
        raise FileNotFoundError(f"{src}/wav.scp does not exist (not a Kaldi data directory?)")
    if not (src / "text").is_file():
        raise FileNotFoundError(f"{src}/text does not exist (transcripts are needed for training)")
    wav = _read_table(src / "wav.scp", report)
    for rec_id, entry in list(wav.items()):
        if not entry:
            report.dropped["no audio path in wav.scp"].append(rec_id)
            del wav[rec_id]
        elif not _is_command(entry) and not Path(entry).is_file():
            report.dropped["audio file does not exist"].append(rec_id)
            del wav[rec_id]
    text = _read_table(src / "text", report)
    tables = {name: _read_table(src / name, report) for name in ("segments", "utt2spk", "utt2lang", "spk2gender")
              if (src / name).is_file()}
    segments = tables.get("segments")
    if segments is not None:
        utt2rec = {u: v.split()[0] for u, v in segments.items() if len(v.split()) == 3}
        report.dropped["malformed segments line"] += [u for u, v in segments.items() if len(v.split()) != 3]
    else:
        utt2rec = {u: u for u in set(wav) | set(text)}
    report.num_in = len(utt2rec)
    kept: List[str] = []
    for utt in sorted(utt2rec):
        if utt2rec[utt] not in wav:
            report.dropped["no audio (id not in wav.scp, or its file is missing)"].append(utt)
        elif utt not in text:
            report.dropped["no transcript in text"].append(utt)
        elif not text[utt]:
            report.dropped["empty transcript"].append(utt)
        else:
            kept.append(utt)
    report.num_kept = len(kept)
    recs = sorted({utt2rec[u] for u in kept})
    dst.mkdir(parents=True, exist_ok=True)
    base = src.resolve()
    lines = {
        "wav.scp": [f"{r} {wav[r] if _is_command(wav[r]) else _audio_path(wav[r], base)}" for r in recs],
        "text": [f"{u} {text[u]}" for u in kept],
        # without utt2spk lhotse makes no supervisions for whole-recording data: each utterance is its own speaker
        "utt2spk": [f"{u} {tables.get('utt2spk', {}).get(u) or u}" for u in kept],
    }
    if segments is not None:
        lines["segments"] = [f"{u} {segments[u]}" for u in kept]
    if "utt2lang" in tables:
        lines["utt2lang"] = [f"{u} {tables['utt2lang'][u]}" for u in kept if u in tables["utt2lang"]]
    if "spk2gender" in tables:
        lines["spk2gender"] = [f"{s} {g}" for s, g in tables["spk2gender"].items()]
    for name, content in lines.items():
        (dst / name).write_text("".join(line + "\n" for line in content), encoding="utf-8")
    return report


def detect_sampling_rate(wav_scp: Path) -> int:
    """The sampling rate of the first plain audio file of ``wav.scp`` (Kaldi dirs hold one rate)."""
    import soundfile as sf

    for line in wav_scp.read_text(encoding="utf-8").splitlines():
        _, _, entry = line.partition(" ")
        if entry and not _is_command(entry):
            return int(sf.info(entry.strip()).samplerate)
    raise ValueError(f"{wav_scp}: no plain audio file to read the sampling rate from; pass it explicitly")


def import_kaldi_dir(src: Path, sampling_rate: Optional[int] = None, language: Optional[str] = None,
                     num_jobs: int = 1):
    """``(RecordingSet, SupervisionSet, FilterReport)`` of a Kaldi data directory, through lhotse's importer."""
    from lhotse.kaldi import load_kaldi_data_dir

    with tempfile.TemporaryDirectory() as tmp:
        report = clean_kaldi_dir(src, Path(tmp))
        if report.num_kept == 0:
            return None, None, report
        rate = sampling_rate or detect_sampling_rate(Path(tmp) / "wav.scp")
        recordings, supervisions, _ = load_kaldi_data_dir(tmp, rate, num_jobs=num_jobs)
    if language:
        from lhotse import SupervisionSet

        supervisions = SupervisionSet.from_segments(
            [s if s.language else replace(s, language=language) for s in supervisions])
    return recordings, supervisions, report


def _column(header: List[str], *names: str) -> Optional[int]:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def import_table(path: Path, language: Optional[str] = None):
    """``(RecordingSet, SupervisionSet, FilterReport)`` of a TSV/CSV table with a header row (module docstring)."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, rows = rows[0], rows[1:]
    col = {k: _column(header, *names) for k, names in {
        "audio": ("audio", "path", "audio_path", "wav"), "text": ("text", "sentence", "transcript"),
        "id": ("id", "utt_id", "utterance_id"), "language": ("language", "lang", "locale"),
        "speaker": ("speaker", "speaker_id", "client_id"), "start": ("start",), "end": ("end",)}.items()}
    if col["audio"] is None or col["text"] is None:
        raise ValueError(f"{path}: the header must name an 'audio' (or 'path') and a 'text' column; got {header}")

    def cell(row: List[str], key: str) -> str:
        i = col[key]
        return row[i].strip() if i is not None and i < len(row) else ""

    report = FilterReport()
    recordings: Dict[str, object] = {}
    supervisions, seen = [], set()
    for n, row in enumerate(rows, 2):
        if not any(c.strip() for c in row):
            report.dropped["empty line"].append(f"{path.name}:{n}")
            continue
        report.num_in += 1
        audio = _audio_path(cell(row, "audio"), path.parent.resolve()) if cell(row, "audio") else None
        utt_id = cell(row, "id") or (audio.stem if audio else f"{path.stem}-line{n}")
        if utt_id in seen:
            report.dropped["duplicate id"].append(utt_id)
            continue
        seen.add(utt_id)
        if audio is None or not audio.is_file():
            report.dropped["audio file does not exist"].append(utt_id)
            continue
        if not cell(row, "text"):
            report.dropped["empty transcript"].append(utt_id)
            continue
        rec_id = audio.stem if cell(row, "start") else utt_id
        if rec_id not in recordings:
            try:
                recordings[rec_id] = Recording.from_file(audio, recording_id=rec_id)
            except Exception as e:  # noqa: BLE001 - an unreadable file is reported and skipped
                report.dropped["unreadable audio"].append(utt_id)
                logger.debug("%s: %s", audio, e)
                continue
        rec = recordings[rec_id]
        start = float(cell(row, "start") or 0.0)
        end = float(cell(row, "end") or rec.duration)
        if not 0 <= start < end <= rec.duration + 1e-3:
            report.dropped["start/end outside the audio"].append(utt_id)
            continue
        supervisions.append(SupervisionSegment(
            id=utt_id, recording_id=rec_id, start=start, duration=round(min(end, rec.duration) - start, 6),
            text=cell(row, "text"), language=cell(row, "language") or language,
            speaker=cell(row, "speaker") or None))
    report.num_kept = len(supervisions)
    if not supervisions:
        return None, None, report
    used = {s.recording_id for s in supervisions}
    return (RecordingSet.from_recordings(r for k, r in recordings.items() if k in used),
            SupervisionSet.from_segments(supervisions), report)


def import_corpus(source: Path, sampling_rate: Optional[int] = None, language: Optional[str] = None,
                  num_jobs: int = 1):
    """A Kaldi data dir (a directory) or a TSV/CSV table (a file): ``(recordings, supervisions, report)``."""
    source = Path(source)
    if source.is_dir():
        return import_kaldi_dir(source, sampling_rate, language, num_jobs)
    return import_table(source, language)
