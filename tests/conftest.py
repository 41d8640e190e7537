"""Shared fixtures: small synthetic audio made with espeak-ng (deterministic), and the repository root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def espeak_wav(path: Path, text: str, voice: str = "en", speed: int = 160) -> Path:
    """Synthesise ``text`` with espeak-ng into ``path`` (22.05 kHz mono WAV)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
