"""Bad items in real corpus layouts: reported by id and skipped by the preparation and feature stages.

Tiny mini corpora in the Common Voice, VoxPopuli (transcribed and unlabelled), LibriSpeech and MUSAN layouts get a
truncated clip, an empty file, a missing file, an empty transcript and a clip of digital silence. lhotse's own
recipe is shown to fail on such a corpus; the recipes' commands (``prepare_corpus``, the VoxPopuli-unlabelled
script, ``compute_fbank``) must report every bad item by id, never crash, and give finite features for the rest.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_mini_corpus

ROOT = Path(__file__).resolve().parents[1]


def silence(path: Path, seconds: float = 2.0) -> None:
    """Replace ``path`` by digital silence in the same container/codec (ffmpeg picks it from the extension)."""
    tmp = path.with_name("silence" + path.suffix)
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                    "-t", str(seconds), str(tmp)], check=True)
    tmp.replace(path)


def truncate(path: Path, keep: float = 0.3) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def plant(audio: list) -> dict:
    """Truncate, empty, delete and silence the first four files of ``audio``; return {kind: path}."""
    truncated, empty, missing, silent = audio[:4]
    truncate(truncated)
    empty.write_bytes(b"")
    missing.unlink()
    silence(silent)
    return {"truncated": truncated, "empty": empty, "missing": missing, "silent": silent}


def run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, *cmd], cwd=cwd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def reported(out: Path, logs: str) -> set:
    """Ids reported as skipped: the bad_items_*.tsv files of the preparation and the feature stage's log."""
    ids = set()
    for tsv in out.glob("bad_items_*.tsv"):
        ids |= {line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]}
    for line in logs.splitlines():
        if ": skipped cut " in line:
            ids.add(line.split(": skipped cut ")[1].split(":")[0])
    return ids


def features_and_ids(fbank: Path) -> set:
    """Ids of all cuts with features; every feature matrix is finite."""
    from lhotse import CutSet

    ids = set()
    for path in fbank.glob("*_cuts_*.jsonl.gz"):
        for cut in CutSet.from_file(path):
            feats = cut.load_features()
            assert feats.shape[0] > 0 and np.isfinite(feats).all(), cut.id
            ids.add(cut.supervisions[0].id if cut.supervisions else cut.id)
    return ids


def fbank(manifests: Path, out: Path, glob: str, cwd: Path) -> str:
    return run("-m", "icefall_ext.bin.compute_fbank", "--manifest-dir", str(manifests), "--glob", glob,
               "--out-dir", str(out), "--num-jobs", "1", cwd=cwd).stderr


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_corpora")
    for layout in ("commonvoice", "voxpopuli", "librispeech"):
        make_mini_corpus(layout, out / layout)
    return out


def set_cv_sentence(tsv: Path, clip: str, sentence: str) -> None:
    lines = tsv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    for i, line in enumerate(lines[1:], 1):
        cells = line.rstrip("\n").split("\t")
        if cells[header.index("path")] == clip:
            cells[header.index("sentence")] = sentence
            lines[i] = "\t".join(cells) + "\n"
    tsv.write_text("".join(lines))


def test_commonvoice_bad_clips_reported_and_skipped(mini, tmp_path):
    from lhotse.audio.utils import AudioLoadingError
    from lhotse.recipes import prepare_commonvoice

    corpus = tmp_path / "cv"
    shutil.copytree(mini / "commonvoice", corpus)
    train = corpus / "en" / "train.tsv"
    clips = [line.split("\t")[1] for line in train.read_text().splitlines()[1:]]
    bad = plant([corpus / "en" / "clips" / c for c in clips])
    set_cv_sentence(train, clips[4], "")
    expected = {Path(p).stem for p in bad.values()} | {Path(clips[4]).stem}

    # lhotse's recipe alone dies on the first unreadable clip (and would drop the missing one silently)
    with pytest.raises(AudioLoadingError):
        prepare_commonvoice(corpus, tmp_path / "raw", languages=["en"], num_jobs=1)

    out = tmp_path / "manifests"
    r = run("-m", "icefall_ext.bin.prepare_corpus", "commonvoice", "--corpus-dir", str(corpus), "--output-dir",
            str(out), "-l", "en", "de", "-j", "1", cwd=tmp_path)
    assert "commonvoice: " in r.stderr and " skipped (" in r.stderr  # the count in the stage's log line
    logs = fbank(out, tmp_path / "fbank", "cv-*", tmp_path)
    assert reported(out, logs) == expected
    kept = features_and_ids(tmp_path / "fbank")
    assert not kept & expected
    all_ids = {Path(line.split("\t")[1]).stem for lang in ("en", "de") for part in ("train", "dev", "test")
               for line in (corpus / lang / f"{part}.tsv").read_text().splitlines()[1:]}
    assert kept == all_ids - expected, "every good clip has features"
    # manifests point at the real corpus, not at the temporary view
    from lhotse import RecordingSet
    for rec in RecordingSet.from_file(out / "cv-en_recordings_train.jsonl.gz"):
        assert Path(rec.sources[0].source).parent == corpus.resolve() / "en" / "clips"


def test_librispeech_bad_files_reported_and_skipped(mini, tmp_path):
    from lhotse.recipes import prepare_librispeech

    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(mini / "librispeech" / "LibriSpeech", corpus)
    flacs = sorted((corpus / "train-clean-100").rglob("*.flac"))
    bad = plant(flacs)
    trans = next(flacs[4].parent.glob("*.trans.txt"))
    trans.write_text("".join(line if not line.startswith(flacs[4].stem) else flacs[4].stem + "\n"
                             for line in trans.read_text().splitlines(keepends=True)))
    expected = {p.stem for p in bad.values()} | {flacs[4].stem}

    with pytest.raises(Exception):  # a transcript line without text kills lhotse's recipe
        prepare_librispeech(corpus, dataset_parts=["train-clean-100"], output_dir=tmp_path / "raw", num_jobs=1)

    out = tmp_path / "manifests"
    run("-m", "icefall_ext.bin.prepare_corpus", "librispeech", "--corpus-dir", str(corpus), "--output-dir",
        str(out), cwd=tmp_path)
    logs = fbank(out, tmp_path / "fbank", "librispeech", tmp_path)
    assert reported(out, logs) == expected
    kept = features_and_ids(tmp_path / "fbank")
    assert kept == {p.stem for p in corpus.rglob("*.flac")} - expected


def test_voxpopuli_bad_sessions_and_unlabelled_files(mini, tmp_path):
    corpus = tmp_path / "voxpopuli"
    shutil.copytree(mini / "voxpopuli", corpus)
    lang = "en"
    annotations = corpus / "transcribed_data" / lang / f"asr_{lang}.tsv.gz"
    with gzip.open(annotations, "rt") as f:
        lines = f.readlines()
    header = lines[0].rstrip("\n").split("|")
    col = {name: i for i, name in enumerate(header)}
    session_of = {line: line.split("|")[col["session_id"]] for line in lines[1:]}
    train = next(session_of[line] for line in lines[1:] if line.split("|")[col["split"]] == "train")
    train_audio = next((corpus / "raw_audios" / lang).rglob(f"{train}_{lang}.ogg"))
    train_rows = [line for line in lines[1:] if session_of[line] == train]
    # more train sessions (copies of one under new ids), so that bad ones leave good ones in the split;
    # the last one has no audio at all (annotations may cover sessions a download lacks)
    clones = [f"20210{n}01-0900-PLENARY-{n}" for n in range(1, 5)]
    for clone in clones[:3]:
        shutil.copy(train_audio, train_audio.with_name(f"{clone}_{lang}.ogg"))
    for clone in clones:
        lines += [line.replace(train, clone) for line in train_rows]
    truncate(train_audio.with_name(f"{clones[0]}_{lang}.ogg"), 0.05)
    train_audio.with_name(f"{clones[1]}_{lang}.ogg").write_bytes(b"")
    empty_row = lines.index(train_rows[0].replace(train, clones[2]))
    cells = lines[empty_row].split("|")
    cells[col["normed_text"]] = ""
    lines[empty_row] = "|".join(cells)
    with gzip.open(annotations, "wt") as f:
        f.writelines(lines)
    segments = {session: [f"{session}-{n}" for n in range(1, len(train_rows) + 1)] for session in clones}
    expected = set(segments[clones[0]] + segments[clones[1]] + segments[clones[3]]) | {f"{clones[2]}-1"}

    # unlabelled audio: a truncated, an empty and a silent file
    unlabelled = sorted((corpus / "unlabelled_data").rglob("*.ogg"))
    assert len(unlabelled) >= 3
    truncate(unlabelled[0], 0.05)
    unlabelled[1].write_bytes(b"")
    silence(unlabelled[2])
    expected |= {p.stem for p in unlabelled[:3]}

    out = tmp_path / "manifests"
    run("-m", "icefall_ext.bin.prepare_corpus", "voxpopuli-asr", "--corpus-dir", str(corpus), "--output-dir",
        str(out), "-l", lang, cwd=tmp_path)
    run(str(ROOT / "local" / "prepare_voxpopuli_unlabelled.py"), "--corpus-dir", str(corpus), "--output-dir",
        str(out), cwd=tmp_path)
    logs = fbank(out, tmp_path / "fbank", "voxpopuli-*", tmp_path)
    assert reported(out, logs) == expected
    kept = features_and_ids(tmp_path / "fbank")
    assert kept and not kept & expected
    assert set(segments[clones[2]][1:]) | {f"{train}-{n}" for n in range(1, len(train_rows) + 1)} <= kept


def test_musan_bad_files_reported_and_skipped(tmp_path):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "musan"
    files = {}
    for part, source in (("music", "fma"), ("speech", "librivox"), ("noise", "free-sound")):
        d = corpus / part / source
        d.mkdir(parents=True)
        names = [f"{part}-{source}-{i:04d}" for i in range(3)]
        for name in names:
            sf.write(d / f"{name}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
            files[name] = d / f"{name}.wav"
        if part == "music":
            (d / "ANNOTATIONS").write_text("".join(f"{n} pop N someone\n" for n in names))
    files["music-fma-0000"].unlink()  # listed in ANNOTATIONS, missing on disk
    files["noise-free-sound-0001"].write_bytes(b"RIFF not really")
    files["speech-librivox-0002"].write_bytes(b"")
    expected = {"music-fma-0000", "noise-free-sound-0001", "speech-librivox-0002"}
    out = tmp_path / "manifests"
    run("-m", "icefall_ext.bin.prepare_corpus", "musan", "--corpus-dir", str(corpus), "--output-dir", str(out),
        cwd=tmp_path)
    assert reported(out, "") == expected
    from lhotse import RecordingSet
    ids = {r.id for part in ("music", "speech", "noise")
           for r in RecordingSet.from_file(out / f"musan_recordings_{part}.jsonl.gz")}
    assert ids == set(files) - expected
