"""Small helpers shared by the command-line tools: logging set-up, boolean options, atomic text writes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from .decode.ngram import LanguageLms


def str2bool(v: str) -> bool:
    """argparse type for Kaldi-style booleans: true/false, yes/no, 1/0."""
    s = str(v).lower()
    if s in ("true", "yes", "1", "y", "t"):
        return True
    if s in ("false", "no", "0", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that pick a trained model: experiment dir, token table, and which checkpoint(s) to average."""
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, default=None, help="last epoch to average (default: the newest)")
    p.add_argument("--avg", type=int, default=1, help="number of epoch checkpoints to average")
    p.add_argument("--checkpoint", type=Path, default=None, help="use this checkpoint instead of --epoch/--avg")


def setup_logging(log_dir: Optional[Path] = None, name: str = "log", rank: int = 0, verbose: bool = False) -> None:
    """Log to stderr (rank 0) and, when ``log_dir`` is given, to ``log_dir/<name>-<timestamp>[-rank].txt``."""
    fmt = f"%(asctime)s %(levelname)s [%(filename)s:%(lineno)d]{f' (rank {rank})' if rank else ''} %(message)s"
    handlers = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
        handlers.append(logging.FileHandler(log_dir / f"{name}-{stamp}{f'-{rank}' if rank else ''}.txt"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, handlers=handlers, force=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def die(msg: str) -> NoReturn:
    """One-line error on stderr and exit status 1 (for command-line tools)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "icefall_ext"
    print(f"{prog}: error: {msg}", file=sys.stderr)
    raise SystemExit(1)


def add_lm_args(p) -> None:
    """The options of word n-gram shallow fusion for ctc-beam: --lm [LANG=]ARPA ..., --alpha, --beta, --tuned-lm
    (``p``: a parser or an argument group)."""
    p.add_argument("--lm", nargs="+", default=[], metavar="[LANG=]ARPA",
                   help="word n-gram(s) for ctc-beam shallow fusion: a bare ARPA for every utterance, or LANG=ARPA "
                        "per language (the cut's supervision language; others fall back to a bare one, else none)")
    p.add_argument("--alpha", type=float, default=0.5, help="LM weight")
    p.add_argument("--beta", type=float, default=1.0, help="word insertion bonus")
    p.add_argument("--tuned-lm", type=Path, default=None, help="JSON from tune_lm with alpha/beta (overrides)")


def lm_weights_from_args(args: argparse.Namespace) -> Tuple[float, float]:
    """(alpha, beta): those tune_lm wrote to --tuned-lm, else --alpha / --beta."""
    if args.tuned_lm is None:
        return args.alpha, args.beta
    if not args.tuned_lm.is_file():
        die(f"missing {args.tuned_lm}")
    import json

    tuned = json.loads(args.tuned_lm.read_text())
    return tuned["alpha"], tuned["beta"]


def load_lms_or_die(specs: Sequence[str]) -> LanguageLms:
    """:func:`icefall_ext.decode.ngram.load_language_lms` for a command line: a missing file or a language given
    twice ends the program with a one-line error."""
    from .decode.ngram import load_language_lms

    try:
        return load_language_lms(specs)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
