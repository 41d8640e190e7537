"""Export a trained model to ONNX files that sherpa-onnx loads as they are, plus tokens.txt.

    python -m icefall_ext.bin.export_onnx --exp-dir exp/base --epoch 10 --avg 3 --lang-dir data/lang_char
    python -m icefall_ext.bin.export_onnx --exp-dir exp/stream --lang-dir data/lang_char \\
        --type streaming-transducer --decode-chunk-len 32 --int8 true

Types: ``transducer`` (encoder/decoder/joiner.onnx for OfflineRecognizer.from_transducer), ``ctc`` (model.onnx
for OfflineRecognizer.from_zipformer_ctc), ``streaming-transducer`` (a causal model, for
OnlineRecognizer.from_transducer), ``auto`` (transducer when the model has one, else ctc). ``--int8 true`` also
writes dynamically quantised ``*.int8.onnx``. A model with per-language adapters is exported one language at a
time: ``--adapter-language de`` folds the German adapters into the graph (one ordinary model per language). Decode the result with ``python -m icefall_ext.bin.sherpa_decode``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from ..common import die, setup_logging, str2bool

logger = logging.getLogger("icefall_ext.export_onnx")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, default=None, help="last epoch to average (default: the newest)")
    p.add_argument("--avg", type=int, default=1, help="number of epoch checkpoints to average")
    p.add_argument("--checkpoint", type=Path, default=None, help="export this checkpoint instead of --epoch/--avg")
    p.add_argument("--lang-dir", type=Path, required=True, help="its tokens.txt must match the checkpoint's table")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <exp-dir>/onnx")
    p.add_argument("--type", default="auto", help="auto, transducer, ctc or streaming-transducer")
    p.add_argument("--decode-chunk-len", type=int, default=32,
                   help="streaming: feature frames (10 ms) per chunk (default: %(default)s)")
    p.add_argument("--int8", type=str2bool, default=False, help="also write int8-quantised *.int8.onnx")
    p.add_argument("--adapter-language", default=None,
                   help="a model with per-language adapters: the language whose adapters are folded in (required)")
    return p


def resolve_type(requested: str, model) -> str:
    from ..export.onnx_export import EXPORT_TYPES

    if requested == "auto":
        return "transducer" if model.joiner is not None else "ctc"
    if requested not in EXPORT_TYPES:
        raise ValueError(f"unknown --type {requested!r}; choose from auto, {', '.join(EXPORT_TYPES)}")
    if requested == "ctc" and model.ctc is None:
        raise ValueError("--type ctc needs a model with a CTC head; this one has none (use --type transducer)")
    if requested != "ctc" and model.joiner is None:
        raise ValueError(f"--type {requested} needs a model with a transducer head; this one has none "
                         f"(use --type ctc)")
    return requested


def checkpoint_tokens(path: Path, lang_dir: Path) -> List[str]:
    """The checkpoint's token table, checked against ``lang_dir/tokens.txt``."""
    from ..data.tokenizer import read_tokens_txt
    from ..train.checkpoint import load_checkpoint

    lang_tokens = lang_dir / "tokens.txt"
    if not lang_tokens.is_file():
        raise FileNotFoundError(f"missing {lang_tokens}")
    table = read_tokens_txt(lang_tokens)
    stored = load_checkpoint(path).get("tokens")
    if stored is None:
        logger.warning("%s stores no token table: using %s", path, lang_tokens)
        return table
    stored = list(stored)
    if stored != table:
        diff = next((i for i, (a, b) in enumerate(zip(stored, table)) if a != b), min(len(stored), len(table)))
        raise ValueError(f"{lang_tokens} ({len(table)} tokens) differs from the checkpoint's token table "
                         f"({len(stored)} tokens) at id {diff}: wrong --lang-dir?")
    return stored


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    from ..export.onnx_export import export_model
    from ..train.checkpoint import load_averaged_model

    out_dir = args.out_dir or args.exp_dir / "onnx"
    try:
        model, config, paths = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint)
        export_type = resolve_type(args.type, model)
        tokens = checkpoint_tokens(paths[-1], args.lang_dir)
        export_model(model, config, tokens, out_dir, export_type, decode_chunk_len=args.decode_chunk_len,
                     int8=args.int8, adapter_language=args.adapter_language)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        logger.debug("export failed", exc_info=True)
        die(str(e).splitlines()[0])


if __name__ == "__main__":
    main()
