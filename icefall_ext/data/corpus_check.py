"""Checked corpus preparation: lhotse's recipes, with every bad item reported by id and skipped.

lhotse's prepare functions assume a clean corpus: ``prepare_commonvoice`` dies on the first clip it cannot read,
``prepare_librispeech`` dies on a transcript line without text, and both drop rows whose audio file is missing
with no more than a debug message. Real releases contain such items. :func:`prepare_checked` runs a lhotse
recipe on a *view* of the corpus from which the bad items are gone:

1. a small reader per layout lists the items of the corpus's own tables (id, audio file, transcript);
2. every audio file is probed as lhotse will read it (:func:`probe_audio`), in a thread pool;
3. the view mirrors the corpus with symbolic links (whole directories where nothing inside changes); tables that
   held bad rows are rewritten without them and unreadable audio files are left out of the view;
4. lhotse's recipe writes its manifests from the view into a staging directory; their audio paths are pointed
   back at the real corpus and the files are moved into the output directory (never half-written);
5. ``bad_items_<layout>.tsv`` (id, path, reason) lands beside the manifests and one log line gives the counts.

Decoding failures that a header read cannot see, and digital silence, are caught by the feature stage
(:mod:`icefall_ext.data.features`), which reports them by cut id the same way.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

logger = logging.getLogger(__name__)


@dataclass
class Item:
    """One entry of a corpus table: the id lhotse will give it, its audio file, its transcript (None: unlabelled)."""

    id: str
    audio: Path
    text: Optional[str] = None


@dataclass
class BadItems:
    """Items left out, with the reason for each."""

    num_items: int = 0
    bad: List[Tuple[str, str, str]] = field(default_factory=list)  # (id, path, reason)

    def add(self, item: Item, reason: str) -> None:
        self.bad.append((item.id, str(item.audio), reason))

    def counts(self) -> Counter:
        return Counter(reason.split(":")[0] for _, _, reason in self.bad)

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("id\tpath\treason\n")
            for row in self.bad:
                f.write("\t".join(row) + "\n")

    def log(self, name: str, max_lines: int = 100) -> None:
        counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts().items()))
        logger.info("%s: %d items, %d skipped%s", name, self.num_items, len(self.bad),
                    f" ({counts})" if counts else "")
        for item_id, path, reason in self.bad[:max_lines]:
            logger.warning("%s: skipped %s (%s): %s", name, item_id, path, reason)
        if len(self.bad) > max_lines:
            logger.warning("%s: ... and %d more (see bad_items_%s.tsv)", name, len(self.bad) - max_lines, name)


def open_recording(path: Path, recording_id: Optional[str] = None):
    """``(Recording, None)`` for a usable audio file, or ``(None, reason)``: missing, empty, unreadable header,
    no samples. The header is read with lhotse's ``Recording.from_file``, which is what lhotse's recipes call."""
    from lhotse import Recording

    try:
        if not os.path.isfile(path):
            return None, "missing file"
        if os.path.getsize(path) == 0:
            return None, "empty file"
        recording = Recording.from_file(path, recording_id=recording_id)
    except Exception as error:  # noqa: BLE001 - any reader failure makes the file unusable
        return None, f"unreadable: {type(error).__name__}: {error}".splitlines()[0][:300]
    if recording.num_samples <= 0:
        return None, "no audio samples"
    return recording, None


def probe_audio(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a recording (see :func:`open_recording`), or None if it can."""
    return open_recording(path)[1]


def probe_all(paths: Iterable[Path], num_jobs: int = 4) -> Dict[Path, Optional[str]]:
    """:func:`probe_audio` of every distinct path, in a thread pool (readers release the GIL or run ffmpeg)."""
    unique = sorted(set(paths))
    with ThreadPoolExecutor(max(1, num_jobs)) as pool:
        return dict(zip(unique, pool.map(probe_audio, unique)))


# ---------------------------------------------------------------------------------------------------------------
# Layouts: how to find the items of a corpus and how to write its tables without some of them.


@dataclass
class Table:
    """A table file of the corpus: its path (relative to the corpus dir), its items and their lines.

    ``lines[i]`` is the raw line of ``items[i]``; ``header`` lines are kept as they are.
    """

    relpath: str
    header: List[str]
    items: List[Item]
    lines: List[str]
    gzipped: bool = False

    def render(self, keep: Callable[[Item], bool]) -> bytes:
        text = "".join(self.header + [line for item, line in zip(self.items, self.lines) if keep(item)])
        data = text.encode("utf-8")
        return gzip.compress(data, mtime=0) if self.gzipped else data


def _read_text(path: Path, gzipped: bool = False) -> List[str]:
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.readlines()


def _column(header_line: str, sep: str) -> Dict[str, int]:
    return {name.strip(): i for i, name in enumerate(header_line.rstrip("\r\n").split(sep))}


def commonvoice_tables(corpus_dir: Path, languages: Sequence[str], parts: Sequence[str]) -> List[Table]:
    """``<lang>/<part>.tsv`` (tab-separated, header, columns path and sentence; audio in ``<lang>/clips/``)."""
    tables = []
    for lang in languages:
        for part in parts:
            tsv = corpus_dir / lang / f"{part}.tsv"
            if not tsv.is_file():
                continue
            lines = _read_text(tsv)
            if not lines:
                continue
            col = _column(lines[0], "\t")
            items, kept_lines = [], []
            for line in lines[1:]:
                if not line.strip():
                    continue
                cells = line.rstrip("\r\n").split("\t")
                clip = cells[col["path"]] if len(cells) > col["path"] else ""
                sentence = cells[col["sentence"]] if len(cells) > col["sentence"] else ""
                items.append(Item(Path(clip).stem, corpus_dir / lang / "clips" / clip, sentence))
                kept_lines.append(line)
            tables.append(Table(f"{lang}/{part}.tsv", lines[:1], items, kept_lines))
    return tables


def librispeech_tables(corpus_dir: Path, parts: Sequence[str]) -> List[Table]:
    """``<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt`` lines ``<id> <TEXT>``; audio ``<id>.flac`` beside it."""
    tables = []
    for part in parts:
        for trans in sorted((corpus_dir / part).rglob("*.trans.txt")):
            items, kept_lines = [], []
            for line in _read_text(trans):
                if not line.strip():
                    continue
                fields = line.strip().split(maxsplit=1)
                items.append(Item(fields[0], trans.parent / f"{fields[0]}.flac", fields[1] if len(fields) > 1 else ""))
                kept_lines.append(line)
            tables.append(Table(str(trans.relative_to(corpus_dir)), [], items, kept_lines))
    return tables


def voxpopuli_asr_table(corpus_dir: Path, annotations: Path, lang: str) -> Table:
    """The official ``asr_<lang>.tsv.gz`` ('|'-separated; session_id, normed_text, start/end_time, split): each
    segment is an item whose audio is its session's ``raw_audios/<lang>/<year>/<session>[_<lang>|_original].ogg``
    (the session id is the file name without those suffixes, as lhotse derives it)."""
    from lhotse.recipes.voxpopuli import RecordingIdFn

    session_of = RecordingIdFn(language=lang)
    sessions = {session_of(p): p for p in (corpus_dir / "raw_audios" / lang).rglob("*.ogg")}
    lines = _read_text(annotations, gzipped=True)
    col = _column(lines[0], "|")
    items, kept_lines, count = [], [], Counter()
    for line in lines[1:]:
        cells = line.rstrip("\r\n").split("|")
        session = cells[col["session_id"]]
        if cells[col["split"]] not in ("train", "dev", "test"):
            continue
        count[session] += 1
        audio = sessions.get(session, corpus_dir / "raw_audios" / lang / f"{session}_{lang}.ogg")
        items.append(Item(f"{session}-{count[session]}", audio, cells[col["normed_text"]]))
        kept_lines.append(line)
    return Table(annotations.name, lines[:1], items, kept_lines, gzipped=True)


def fleurs_tables(corpus_dir: Path, languages: Sequence[str]) -> List[Table]:
    """``metadata/<lang>/<split>.tsv`` (tab-separated, no header: id, file_name, raw_transcription, transcription,
    chars, num_samples, gender); audio ``<lang>/<split>/<file_name>``. Items get lhotse's recording ids (the file
    name's stem)."""
    tables = []
    for lang in languages:
        for split in ("train", "dev", "test"):
            tsv = corpus_dir / "metadata" / lang / f"{split}.tsv"
            if not tsv.is_file():
                continue
            items, kept_lines = [], []
            for line in _read_text(tsv):
                cells = line.rstrip("\r\n").split("\t")
                if not line.strip():
                    continue
                name = cells[1] if len(cells) > 1 else ""
                text = cells[3] if len(cells) == 7 else ""  # a malformed row is reported as an empty transcript
                items.append(Item(Path(name).stem, corpus_dir / lang / split / Path(name).name, text))
                kept_lines.append(line)
            tables.append(Table(f"metadata/{lang}/{split}.tsv", [], items, kept_lines))
    return tables


MUST_C_SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")  # lhotse's prepare_must_c reads all four


def must_c_tables(corpus_dir: Path, tgt_lang: str) -> List[Table]:
    """``en-<tgt>/data/<split>/txt/<split>.{yaml,en,<tgt>}``: one line per segment in each (the yaml is a list of
    one-line flow mappings naming the talk's ``wav``), audio ``wav/<talk>.wav``. The three files of a split share
    one :class:`Item` per segment (text = the translation), so a bad talk or an empty translation takes the segment
    out of all three and the lines stay aligned."""
    tables = []
    for split in MUST_C_SPLITS:
        txt = corpus_dir / f"en-{tgt_lang}" / "data" / split / "txt"
        paths = [txt / f"{split}.yaml", txt / f"{split}.en", txt / f"{split}.{tgt_lang}"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"MuST-C en-{tgt_lang}: missing {', '.join(missing)} (lhotse reads {MUST_C_SPLITS})")
        segments = [line for line in _read_text(paths[0]) if line.strip()]
        english, translated = _read_text(paths[1]), _read_text(paths[2])
        if not len(segments) == len(english) == len(translated):
            raise ValueError(f"MuST-C en-{tgt_lang} {split}: {len(segments)} segments, {len(english)} English lines, "
                             f"{len(translated)} translations")
        items = []
        for n, (line, text) in enumerate(zip(segments, translated)):
            wav = re.search(r"wav:\s*([^,}\s]+)", line)
            items.append(Item(f"en-{tgt_lang}/{split}/{n}", txt.parent / "wav" / (wav.group(1) if wav else "?"),
                              text.strip()))
        for path, lines in zip(paths, (segments, english, translated)):
            tables.append(Table(str(path.relative_to(corpus_dir)), [], items, lines))
    return tables


def musan_tables(corpus_dir: Path) -> List[Table]:
    """``music/<source>/ANNOTATIONS`` lines ``<utt> <genres> <vocals> <musician>``; audio ``<utt>.wav`` beside it
    (lhotse looks each one up among the recordings: a row whose file is left out must go too)."""
    tables = []
    for annotations in sorted((corpus_dir / "music").rglob("ANNOTATIONS")):
        lines = [line for line in _read_text(annotations) if line.strip()]
        items = [Item(line.split()[0], annotations.parent / f"{line.split()[0]}.wav") for line in lines]
        tables.append(Table(str(annotations.relative_to(corpus_dir)), [], items, lines))
    return tables


def audio_files(root: Path, patterns: Sequence[str]) -> List[Item]:
    """Every audio file under ``root`` (corpora without tables: MUSAN, unlabelled audio); id = file stem."""
    return [Item(p.stem, p) for pattern in patterns for p in sorted(root.rglob(pattern))]


# ---------------------------------------------------------------------------------------------------------------
# The view of a corpus without its bad items.


def build_view(src: Path, dst: Path, replaced: Dict[str, bytes], hidden: Set[str],
               link_whole: Callable[[str], bool] = lambda rel: False) -> None:
    """Mirror ``src`` into ``dst``: directories are made, files are symbolic links; files in ``replaced``
    (relative paths) get the given content and files in ``hidden`` are left out. A directory for which
    ``link_whole`` is true and that holds none of those is linked as a whole (only where the recipe reads files
    by name: ``Path.rglob`` does not descend into linked directories from Python 3.13 on)."""
    touched_dirs: Set[str] = set()
    for rel in list(replaced) + list(hidden):
        parent = Path(rel).parent
        while str(parent) != ".":
            touched_dirs.add(str(parent))
            parent = parent.parent

    def mirror(rel: Path) -> None:
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for entry in sorted((src / rel).iterdir()):
            child = rel / entry.name
            key = str(child)
            if key in hidden:
                continue
            if key in replaced:
                (dst / child).write_bytes(replaced[key])
            elif entry.is_dir() and (key in touched_dirs or not link_whole(key)):
                mirror(child)
            else:
                os.symlink(entry.resolve(), dst / child)

    mirror(Path("."))


def check_items(items: Sequence[Item], num_jobs: int, require_text: bool) -> Tuple[Set[int], BadItems]:
    """Indices of good items and the report of the others."""
    probes = probe_all((i.audio for i in items), num_jobs)
    report = BadItems(num_items=len(items))
    good = set()
    for n, item in enumerate(items):
        reason = probes[item.audio]
        if reason is None and require_text and not (item.text or "").strip():
            reason = "empty transcript"
        if reason is None:
            good.add(n)
        else:
            report.add(item, reason)
    return good, report


def run_in_view(corpus_dir: Path, output_dir: Path, name: str, tables: Sequence[Table], loose: Sequence[Item],
                prepare: Callable[[Path, Path], None], num_jobs: int = 2, require_text: bool = True,
                staged_inputs: Sequence[Table] = (), link_whole: Callable[[str], bool] = lambda rel: False
                ) -> BadItems:
    """Check every item, build the view without the bad ones, run ``prepare(view_dir, staging_dir)`` (a lhotse
    recipe), and move its manifests into ``output_dir`` with paths pointing at ``corpus_dir`` and without the
    supervisions of bad items; write and log the report as ``name``.

    ``tables`` are corpus files (relative paths) rewritten without their bad rows. ``loose`` are audio files no
    table lists (read by directory scans): bad ones are left out of the view. ``staged_inputs`` are tables that
    the lhotse recipe reads from its *output* directory (VoxPopuli's annotations): they are written into the
    staging directory without the rows whose audio is bad; rows with an empty transcript stay there (removing a
    row would renumber the ids lhotse derives from row order) and their supervisions are dropped afterwards.
    """
    corpus_dir, output_dir = Path(corpus_dir).resolve(), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # an item may be listed by several tables (MuST-C's yaml, transcript and translation lines): checked once
    items = list({id(item): item for t in list(tables) + list(staged_inputs) for item in t.items}.values())
    items += list(loose)
    good, report = check_items(items, num_jobs, require_text)
    bad_rows = {id(items[n]) for n in range(len(items)) if n not in good}
    bad_audio = {Path(p) for _, p, reason in report.bad if reason != "empty transcript"}
    replaced = {t.relpath: t.render(lambda item: id(item) not in bad_rows)
                for t in tables if any(id(item) in bad_rows for item in t.items)}
    hidden = {rel for rel in (_relative(p, corpus_dir) for p in bad_audio)
              if rel is not None and (corpus_dir / rel).exists()}
    bad_ids = {item_id for item_id, _, _ in report.bad}
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=output_dir) as tmp:
        view_dir, staging = Path(tmp) / "corpus", Path(tmp) / "manifests"
        staging.mkdir()
        build_view(corpus_dir, view_dir, replaced, hidden, link_whole)
        for table in staged_inputs:
            (staging / table.relpath).write_bytes(table.render(lambda item: Path(item.audio) not in bad_audio))
        prepare(view_dir, staging)
        for manifest in sorted(staging.glob("*.jsonl.gz")):
            if "_recordings_" in manifest.name or manifest.name.startswith("recordings"):
                _point_at_corpus(manifest, view_dir, corpus_dir)
            elif "_supervisions_" in manifest.name or manifest.name.startswith("supervisions"):
                _drop_supervisions(manifest, bad_ids)
            shutil.move(str(manifest), str(output_dir / manifest.name))
    report.write(output_dir / f"bad_items_{name}.tsv")
    report.log(name)
    return report


def _relative(path: Path, root: Path) -> Optional[str]:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return None


def _point_at_corpus(manifest: Path, view_dir: Path, corpus_dir: Path) -> None:
    """Rewrite the audio paths of a recordings manifest from the view to the real corpus."""
    from lhotse import RecordingSet

    view, real = str(view_dir), str(corpus_dir)
    recordings = RecordingSet.from_file(manifest).to_eager()
    for recording in recordings:
        for source in recording.sources:
            if source.type == "file" and source.source.startswith(view):
                source.source = real + source.source[len(view):]
    recordings.to_file(manifest)


def _drop_supervisions(manifest: Path, bad_ids: Set[str]) -> None:
    from lhotse import SupervisionSet

    supervisions = SupervisionSet.from_file(manifest).to_eager()
    if any(s.id in bad_ids for s in supervisions):
        supervisions.filter(lambda s: s.id not in bad_ids).to_eager().to_file(manifest)


# ---------------------------------------------------------------------------------------------------------------
# The layouts the recipes read.


def prepare_commonvoice_checked(corpus_dir: Path, output_dir: Path, languages: Sequence[str],
                                parts: Sequence[str] = ("train", "dev", "test"), num_jobs: int = 2) -> BadItems:
    from lhotse.recipes import prepare_commonvoice

    def prepare(view: Path, out: Path) -> None:
        prepare_commonvoice(view, out, languages=list(languages), splits=list(parts), num_jobs=num_jobs)

    corpus_dir = Path(corpus_dir).resolve()
    tables = commonvoice_tables(corpus_dir, languages, parts)
    # clips are read by name: the clips directories are linked whole (no million links)
    return run_in_view(corpus_dir, output_dir, "commonvoice", tables, [], prepare, num_jobs,
                       link_whole=lambda rel: Path(rel).name == "clips")


def librispeech_parts(corpus_dir: Path) -> List[str]:
    return sorted(p.name for p in Path(corpus_dir).iterdir() if p.is_dir() and any(p.rglob("*.trans.txt")))


def prepare_librispeech_checked(corpus_dir: Path, output_dir: Path, parts: Optional[Sequence[str]] = None,
                                num_jobs: int = 2) -> BadItems:
    from lhotse.recipes import prepare_librispeech

    corpus_dir = Path(corpus_dir).resolve()
    parts = list(parts) if parts else librispeech_parts(corpus_dir)

    def prepare(view: Path, out: Path) -> None:
        prepare_librispeech(view, dataset_parts=parts, output_dir=out, num_jobs=num_jobs)

    tables = librispeech_tables(corpus_dir, parts)
    return run_in_view(corpus_dir, output_dir, "librispeech", tables, [], prepare, num_jobs)


def prepare_voxpopuli_asr_checked(corpus_dir: Path, output_dir: Path, lang: str, num_jobs: int = 2) -> BadItems:
    """VoxPopuli transcribed data; the annotations ``asr_<lang>.tsv.gz`` are taken from the output dir (where
    lhotse downloads them) or from ``<corpus>/transcribed_data/<lang>/`` (where the official scripts put them)."""
    from lhotse.recipes import prepare_voxpopuli

    corpus_dir, output_dir = Path(corpus_dir).resolve(), Path(output_dir)
    name = f"asr_{lang}.tsv.gz"
    annotations = next((p for p in (output_dir / name, corpus_dir / "transcribed_data" / lang / name)
                        if p.is_file()), None)
    if annotations is None:
        raise FileNotFoundError(f"no {name} in {output_dir} or {corpus_dir}/transcribed_data/{lang}")
    table = voxpopuli_asr_table(corpus_dir, annotations, lang)
    # sessions that no segment uses are still read by lhotse (RecordingSet.from_dir): check them too
    used = {item.audio for item in table.items}
    loose = [i for i in audio_files(corpus_dir / "raw_audios" / lang, ["*.ogg"]) if i.audio not in used]

    def prepare(view: Path, out: Path) -> None:
        prepare_voxpopuli(view, out, task="asr", lang=lang, num_jobs=num_jobs)

    return run_in_view(corpus_dir, output_dir, f"voxpopuli-asr-{lang}", [], loose, prepare, num_jobs,
                       staged_inputs=[table])


def prepare_fleurs_checked(corpus_dir: Path, output_dir: Path, languages: Sequence[str],
                           num_jobs: int = 2) -> BadItems:
    """FLEURS as lhotse's ``download_fleurs`` lays it out (``<corpus>/<lang>/...`` and ``<corpus>/metadata``);
    the manifests ``fleurs-<lang>_{recordings,supervisions}_<split>.jsonl.gz`` land directly in ``output_dir``."""
    from lhotse.recipes import prepare_fleurs

    corpus_dir = Path(corpus_dir).resolve()
    missing = [lang for lang in languages if not (corpus_dir / lang).is_dir()]
    if missing:
        raise FileNotFoundError(f"no FLEURS audio for {', '.join(missing)} under {corpus_dir}")

    def prepare(view: Path, out: Path) -> None:
        prepare_fleurs(view, out, languages=list(languages), num_jobs=num_jobs)
        for manifest in out.glob("*/fleurs-*.jsonl.gz"):  # lhotse writes one folder per language
            manifest.rename(out / manifest.name)

    return run_in_view(corpus_dir, output_dir, "fleurs", fleurs_tables(corpus_dir, languages), [], prepare,
                       num_jobs)


def prepare_must_c_checked(corpus_dir: Path, output_dir: Path, tgt_langs: Sequence[str],
                           num_jobs: int = 2) -> Dict[str, BadItems]:
    """MuST-C (``<corpus>/en-<tgt>/data/...``) through lhotse's ``prepare_must_c``, one target language at a time,
    into ``must_c_{recordings,supervisions}_en-<tgt>_<split>.jsonl.gz``. lhotse puts the translation in the
    supervision's ``text``; here the supervisions follow this repository's convention instead: ``text`` = the English
    transcript (``<split>.en``), ``language`` = "en", ``custom["translated_text"][<tgt>]`` = the translation."""
    from lhotse import SupervisionSet
    from lhotse.recipes.must_c import prepare_must_c
    from lhotse.utils import fastcopy

    corpus_dir, reports = Path(corpus_dir).resolve(), {}
    for tgt in tgt_langs:
        tables = must_c_tables(corpus_dir, tgt)

        def prepare(view: Path, out: Path, tgt: str = tgt) -> None:
            prepare_must_c(view, out, tgt_lang=tgt, num_jobs=num_jobs)

        report = run_in_view(corpus_dir, output_dir, f"must_c_en-{tgt}", tables, [], prepare, num_jobs)
        bad = {item_id for item_id, _, _ in report.bad}
        for split, (segments, english, _) in zip(MUST_C_SPLITS, (tables[i:i + 3] for i in range(0, len(tables), 3))):
            # lhotse's ids: <talk>-seg-<i>, i counting the kept segments of a talk in order
            english_of, count = {}, {}
            for item, text in zip(segments.items, english.lines):
                if item.id not in bad:
                    talk = item.audio.stem
                    english_of[f"{talk}-seg-{count.get(talk, 0)}"] = text.strip()
                    count[talk] = count.get(talk, 0) + 1
            path = output_dir / f"must_c_supervisions_en-{tgt}_{split}.jsonl.gz"
            supervisions = SupervisionSet.from_file(path).to_eager()
            converted = [fastcopy(s, text=english_of[s.id], language="en",
                                  custom={**(s.custom or {}), "translated_text": {tgt: s.text}})
                         for s in supervisions]
            SupervisionSet.from_segments(converted).to_file(path)
        reports[tgt] = report
    return reports


def prepare_musan_checked(corpus_dir: Path, output_dir: Path, num_jobs: int = 2) -> BadItems:
    from lhotse.recipes import prepare_musan

    def prepare(view: Path, out: Path) -> None:
        prepare_musan(view, out)

    corpus_dir = Path(corpus_dir).resolve()
    tables = musan_tables(corpus_dir)
    listed = {item.audio for t in tables for item in t.items}
    loose = [i for i in audio_files(corpus_dir, ["*.wav"]) if i.audio not in listed]
    return run_in_view(corpus_dir, output_dir, "musan", tables, loose, prepare, num_jobs, require_text=False)
