"""Train a word n-gram LM (interpolated modified Kneser-Ney) and write it as ARPA.

    python -m icefall_ext.bin.train_lm --text data/lm/librispeech-lm-norm.txt --order 4 --out data/lm/4gram.arpa
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from ..common import die, setup_logging

logger = logging.getLogger("icefall_ext.train_lm")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, nargs="+", required=True, help="one sentence per line")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--lowercase", action="store_true", help="lower-case the text first")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    from ..decode.ngram import train_ngram_lm

    missing = [str(p) for p in args.text if not p.is_file()]
    if missing:
        die(f"missing LM text: {' '.join(missing)}")
    sentences = [line.strip().lower() if args.lowercase else line.strip()
                 for p in args.text for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        die("the LM text is empty")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    train_ngram_lm(sentences, args.order, tmp)
    tmp.rename(args.out)
    logger.info("wrote %s (%d-gram, %d sentences)", args.out, args.order, len(sentences))


if __name__ == "__main__":
    main()
