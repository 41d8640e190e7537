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
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from icefall_ext.data.unlabelled import UnlabelledManifests, prepare_unlabelled  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

Pathlike = Union[str, Path]


def find_unlabelled_root(corpus_dir: Path) -> Path:
    nested = corpus_dir / "unlabelled_data"
    return nested if nested.is_dir() else corpus_dir


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
    return prepare_unlabelled(find_unlabelled_root(Path(corpus_dir)), output_dir, languages, "voxpopuli-unlabelled",
                              num_jobs, check_decode, patterns=("*.ogg",),
                              custom=lambda recording_id: {"event_id": recording_id.rsplit("_", 1)[0]})


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
