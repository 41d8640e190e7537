"""Grid-search the LM weight alpha and word bonus beta of CTC beam search with an n-gram LM on a dev set.

    python -m icefall_ext.bin.tune_lm --exp-dir exp/final --lang-dir data/lang_char --lm data/lm/4gram.arpa \\
        --cuts data/fbank/librispeech_cuts_dev-clean.jsonl.gz --out exp/final/lm_tuning.json

The encoder runs once; every (alpha, beta) pair re-runs only the beam search, --num-jobs pairs at a time. The best
pair (lowest WER, ties to the smaller alpha) and the whole grid are written to --out, which ``decode --tuned-lm``
reads.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import List, Optional

import torch

from ..common import add_model_args, atomic_write_text, die, load_lms_or_die, setup_logging

logger = logging.getLogger("icefall_ext.tune_lm")


def floats(s: str) -> List[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--cuts", type=Path, required=True, help="dev set cut manifest")
    p.add_argument("--lm", nargs="+", required=True, metavar="[LANG=]ARPA",
                   help="ARPA file, or LANG=ARPA per language (each utterance searched with its cut's language's LM; "
                        "one alpha/beta for all)")
    p.add_argument("--alphas", type=floats, default=floats("0,0.25,0.5,0.75,1.0,1.5"))
    p.add_argument("--betas", type=floats, default=floats("0,0.5,1.0,2.0"))
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--metric", choices=["wer", "cer"], default="wer")
    p.add_argument("--max-duration", type=float, default=300.0)
    p.add_argument("--num-jobs", type=int, default=2,
                   help="grid points decoded at once, one process each (the beam search is single-threaded)")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    from lhotse import CutSet

    from ..data.tokenizer import load_tokenizer
    from ..decode.lm_tuning import grid_search_alpha_beta
    from ..data.dataset import cut_language
    from ..decode.ngram import lm_for_language
    from ..train.checkpoint import load_averaged_model
    from ..data.dataset import iterate_batches
    from ..decode.search import encode_batch

    if not args.cuts.is_file():
        die(f"missing {args.cuts}")
    lms = load_lms_or_die(args.lm)
    try:
        tokenizer = load_tokenizer(args.lang_dir)
        model, _, _ = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    if model.ctc is None:
        die("LM tuning needs a model with a CTC head")
    log_probs, lens, refs, utt_lms = [], [], [], []
    with torch.no_grad():
        for batch in iterate_batches(CutSet.from_file(args.cuts), args.max_duration):
            enc, enc_lens = encode_batch(model, batch, torch.device("cpu"))  # (routes adapters by language)
            lp = model.ctc_log_probs(enc, enc_lens).float()
            for i in range(lp.shape[0]):
                log_probs.append(lp[i:i + 1, : int(enc_lens[i])])
                lens.append(enc_lens[i:i + 1])
            refs.extend(batch["texts"])
            utt_lms.extend(lm_for_language(lms, cut_language(c)) for c in batch["cuts"])
    alpha, beta, rows = grid_search_alpha_beta(log_probs, lens, refs, tokenizer.token_table, utt_lms, args.alphas,
                                               args.betas, beam=args.beam, metric=args.metric,
                                               num_jobs=args.num_jobs)
    best = next(r for r in rows if r["alpha"] == alpha and r["beta"] == beta)
    atomic_write_text(args.out, json.dumps({"alpha": alpha, "beta": beta, "metric": args.metric,
                                            "best": best, "grid": rows}, indent=2))
    logger.info("best alpha %.2f beta %.2f: %s %.2f (wrote %s)", alpha, beta, args.metric, best["error_rate"], args.out)


if __name__ == "__main__":
    main()
