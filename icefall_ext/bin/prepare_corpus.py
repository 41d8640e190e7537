"""Lhotse manifests of a corpus through lhotse's own recipe, with bad items reported by id and skipped.

Missing, empty or unreadable audio files and empty transcripts never stop the stage: each is written to
``<output-dir>/bad_items_<name>.tsv`` (id, path, reason), logged, and left out; the stage's log line gives the count.
See :mod:`icefall_ext.data.corpus_check`.

    python -m icefall_ext.bin.prepare_corpus commonvoice --corpus-dir cv-corpus --output-dir data/manifests -l en de
    python -m icefall_ext.bin.prepare_corpus librispeech --corpus-dir download/LibriSpeech --output-dir data/manifests
    python -m icefall_ext.bin.prepare_corpus voxpopuli-asr --corpus-dir download/voxpopuli --output-dir data/manifests -l en
    python -m icefall_ext.bin.prepare_corpus musan --corpus-dir download/musan --output-dir data/manifests
    python -m icefall_ext.bin.prepare_corpus fleurs --corpus-dir download/fleurs --output-dir data/manifests -l en_us fi_fi
    # untranscribed audio, one folder per language (<corpus-dir>/<lang>/**/*.wav|flac|ogg|opus|mp3)
    python -m icefall_ext.bin.prepare_corpus unlabelled-audio --corpus-dir my_audio --output-dir data/manifests \
        --name pool -l en_us fi_fi
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from ..common import die, setup_logging

LAYOUTS = ("commonvoice", "librispeech", "voxpopuli-asr", "musan", "fleurs", "unlabelled-audio")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layout", choices=LAYOUTS)
    p.add_argument("--corpus-dir", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("-l", "--languages", nargs="+", default=[],
                   help="language codes (commonvoice, fleurs (e.g. en_us): required; voxpopuli-asr: one run per "
                        "language)")
    p.add_argument("--parts", nargs="+", default=None,
                   help="commonvoice splits (default: train dev test); librispeech parts (default: all found)")
    p.add_argument("--name", default="unlabelled", help="unlabelled-audio: the manifests' name prefix")
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
    elif args.layout == "unlabelled-audio":
        from ..data.unlabelled import prepare_unlabelled

        try:
            prepare_unlabelled(args.corpus_dir, args.output_dir, args.languages or "auto", args.name, args.num_jobs)
        except FileNotFoundError as e:
            die(str(e))
    else:
        cc.prepare_musan_checked(args.corpus_dir, args.output_dir, args.num_jobs)


if __name__ == "__main__":
    main()
