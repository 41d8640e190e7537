"""Shared fixtures: small synthetic audio made with espeak-ng (deterministic), and the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The models in the tests are tiny: one thread avoids the oversubscription that makes small ops on 2 shared
# cores tens of times slower. Subprocesses started by the tests pass --threads THREADS for the same reason.
# ICEFALL_EXT_TEST_THREADS=2 runs the suite with two (assertions on trained models must hold either way).
THREADS = os.environ.get("ICEFALL_EXT_TEST_THREADS", "1")
torch.set_num_threads(int(THREADS))

ROOT = Path(__file__).resolve().parents[1]


def espeak_wav(path: Path, text: str, voice: str = "en", speed: int = 160) -> Path:
    """Synthesise ``text`` with espeak-ng into ``path`` (22.05 kHz mono WAV)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


TINY_TEXTS = [
    ("en", "hello world"), ("en", "good morning"), ("en", "thank you"),
    ("de", "guten tag"), ("de", "danke schön"), ("de", "bis bald"),
]


def espeak_corpus(d: Path, texts, name: str, id_format: str = "{lang}-{i}"):
    """``texts`` ((lang, text) pairs) synthesised with espeak-ng into ``d``, as lhotse cuts with fbank features
    written to ``d/<name>_cuts.jsonl.gz``, and a char lang dir ``d/lang_char``. Returns the (eager) cuts."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from icefall_ext.data.features import compute_and_store_fbank
    from icefall_ext.data.tokenizer import CharTokenizer

    recs, sups = [], []
    for i, (lang, text) in enumerate(texts):
        rid = id_format.format(lang=lang, i=i)
        rec = Recording.from_file(espeak_wav(d / f"{rid}.wav", text, lang, speed=170), recording_id=rid)
        recs.append(rec)
        sups.append(SupervisionSegment(id=rid, recording_id=rid, start=0, duration=rec.duration, text=text,
                                       language=lang))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups)).trim_to_supervisions()
    cuts, _ = compute_and_store_fbank(cuts, d / "fbank", name, num_jobs=1)
    cuts.to_file(d / f"{name}_cuts.jsonl.gz")
    CharTokenizer.build(t for _, t in texts).save(d / "lang_char")
    return cuts.to_eager()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Six short espeak-ng utterances (en, de) as a prepared corpus: cuts with fbank features, a char lang dir.

    Returns a dict with paths: ``cuts`` (jsonl.gz), ``lang_dir``, and ``texts``.
    """
    from icefall_ext.data.dataset import write_languages

    d = tmp_path_factory.mktemp("tiny_corpus")
    espeak_corpus(d, TINY_TEXTS, "tiny")
    lang_dir = d / "lang_char"
    write_languages(["de", "en"], lang_dir / "languages.txt")
    return {"cuts": d / "tiny_cuts.jsonl.gz", "lang_dir": lang_dir, "texts": [t for _, t in TINY_TEXTS], "dir": d}


def make_mini_corpus(layout: str, out: Path, seed: int = 0, scale: float = 0.01) -> subprocess.CompletedProcess:
    """Write a mini corpus in ``layout`` (commonvoice, voxpopuli, librispeech) with the synthesiser's command line."""
    command = [sys.executable, str(ROOT / "local" / "make_mini_corpus.py"), "--layout", layout, "--out", str(out),
               "--seed", str(seed), "--scale", str(scale), "--num-jobs", "2"]
    return subprocess.run(command, check=True, capture_output=True, text=True)


def run_recipe(recipe: str, work: Path, *args: str, timeout: int = 1500) -> tuple:
    """Run ``egs/<recipe>/run.sh --work-dir work args...``; returns (command, CompletedProcess)."""
    cmd = ["bash", str(ROOT / "egs" / recipe / "run.sh"), "--work-dir", str(work), *args]
    return cmd, subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def assert_stages(r: subprocess.CompletedProcess, stages: range, skipped: bool = False) -> None:
    """Every stage printed ``Stage N: `` (and, with ``skipped``, that it was skipped as done); exit status 0."""
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    for n in stages:
        pattern = rf"Stage {n}: .*\(skipped: done" if skipped else rf"Stage {n}: "
        assert re.search(pattern, r.stdout), f"stage {n} {'ran again' if skipped else 'did not run'}"
