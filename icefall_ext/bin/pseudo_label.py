"""Pseudo-label unlabelled cuts with a trained model, shard by shard, then merge and filter.

    # everything in one process (shards labelled one after another), then merge + filter:
    python -m icefall_ext.bin.pseudo_label --exp-dir exp/slimipl-de --lang-dir data/lang_char \\
        --cuts data/fbank/vp-unlabelled_cuts_de.jsonl.gz --out-dir data/pl/de --num-shards 4

    # on a cluster: one job per shard (e.g. one per GPU), then one merge job
    python -m icefall_ext.bin.pseudo_label ... --num-shards 64 --shard-index $RANK
    python -m icefall_ext.bin.pseudo_label ... --num-shards 64 --merge-only

Labels are greedy CTC (or transducer greedy) without an LM by default, the paper's final pseudo-labels; or CTC
prefix beam search with word n-gram shallow fusion (--method ctc-beam --lm, one LM per language as LANG=ARPA: each
utterance is searched with its cut's language's LM; noisy student's teachers label with an LM, Park et al. 2020).
Long utterances are decoded in stitched crops (--chunk-seconds). Shards are balanced by duration and written
atomically, so a killed job leaves no shard a rerun would trust. Each label's supervision records
``custom["pl_confidence"]``, <= 0, higher is surer: for greedy CTC the greedy path's log-probability per emitted
token (sum of log p_t(best token) over its non-blank frames, divided by the number of output tokens); for CTC beam
search the CTC log-likelihood of the label per token (acoustic evidence only, the LM left out); transducer labels
record none (null).

    # labels from beam search with each language's LM, weights tuned on dev by tune_lm
    python -m icefall_ext.bin.pseudo_label ... --method ctc-beam --lm en_us=data/lm/en_us.arpa \
        de_de=data/lm/de_de.arpa --tuned-lm exp/ft-adapters/lm_tuning.json

The merged, filtered set is ``<out-dir>/pl_cuts.jsonl.gz``: empty labels and labels longer than --max-tokens are
dropped, and optionally (filtering options, all off by default) labels whose rate (non-space characters or words
per second) is out of bounds, and labels of low confidence. Counts per reason and per language and the thresholds
go to ``filter_report.json``; re-running with --merge-only re-filters with other options without relabelling:

    # USM-style ratio filter with per-language bounds from the labelled training cuts, then keep the 80% most
    # confident labels of each language
    python -m icefall_ext.bin.pseudo_label ... --merge-only \\
        --rate-reference-cuts data/fbank/fleurs_cuts_train.jsonl.gz --keep-fraction 0.8

With --reference-tsv (the mini corpus writes what its unlabelled audio says) the pseudo-label CER per language
(before filtering, and of the labels kept under ``"kept"``) goes to ``pl_quality.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..common import (add_lm_args, add_model_args, atomic_write_text, die, lm_weights_from_args,
                      load_lms_or_die, setup_logging)

logger = logging.getLogger("icefall_ext.pseudo_label")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--cuts", type=Path, nargs="+", required=True, help="unlabelled cut manifests")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--shard-index", type=int, default=None, help="label only this shard (0-based)")
    p.add_argument("--merge-only", action="store_true", help="merge and filter already labelled shards")
    p.add_argument("--max-tokens", type=int, default=630, help="drop longer pseudo-labels (paper: 630)")
    p.add_argument("--chunk-seconds", type=float, default=0.0, help="decode longer utterances in crops")
    p.add_argument("--chunk-overlap-seconds", type=float, default=2.0)
    p.add_argument("--max-duration", type=float, default=300.0)
    p.add_argument("--reference-tsv", type=Path, nargs="*", default=[],
                   help="TSVs with columns id, text: score the pseudo-labels against them")
    p.add_argument("--device", default="auto")
    d = p.add_argument_group("search")
    d.add_argument("--method", choices=("auto", "ctc-greedy", "ctc-beam"), default="auto",
                   help="auto: transducer greedy if the model has a transducer, else CTC greedy (default)")
    d.add_argument("--beam", type=int, default=8)
    add_lm_args(d)
    f = p.add_argument_group("pseudo-label filtering (applied at merge time; optional rules off by default)")
    f.add_argument("--rate-unit", choices=("char", "word"), default="char",
                   help="unit of the label rate: non-space characters or words per second of the cut "
                        "(default: %(default)s)")
    f.add_argument("--rate-reference-cuts", type=Path, nargs="+", default=[], metavar="CUTS",
                   help="labelled cut manifests: turns on the rate filter with bounds estimated per language "
                        "(supervision language) from their rates: [(1-margin)*P_low, (1+margin)*P_high]")
    f.add_argument("--rate-percentiles", type=float, nargs=2, default=(1.0, 99.0), metavar=("LOW", "HIGH"),
                   help="percentiles P_low, P_high of the reference rates, linear interpolation (default: 1 99)")
    f.add_argument("--rate-margin", type=float, default=0.2,
                   help="relative widening of the percentile bounds (default 0.2: 80%% of P_low to 120%% of P_high)")
    f.add_argument("--rate-min-reference-cuts", type=int, default=20,
                   help="languages with fewer reference cuts use the bounds pooled over all reference cuts "
                        "(default: %(default)s)")
    f.add_argument("--min-rate", type=float, default=None,
                   help="fixed lower rate bound for all languages (instead of --rate-reference-cuts)")
    f.add_argument("--max-rate", type=float, default=None,
                   help="fixed upper rate bound for all languages (instead of --rate-reference-cuts)")
    f.add_argument("--min-confidence", type=float, default=None,
                   help="drop labels whose confidence (CTC log-prob per token, <= 0) is lower")
    f.add_argument("--keep-fraction", type=float, default=None,
                   help="per language, keep only this fraction (0-1] of the labels left by the other rules, "
                        "the most confident ones")
    return p


def rate_bounds_from_args(args):
    """The rate filter's bounds from the command line: None (off), fixed, or estimated from reference cuts."""
    from lhotse import CutSet

    from ..pseudo.filtering import RateBounds, estimate_rate_bounds

    fixed = args.min_rate is not None or args.max_rate is not None
    if fixed and args.rate_reference_cuts:
        die("give either --rate-reference-cuts or --min-rate/--max-rate, not both")
    if fixed:
        return RateBounds(unit=args.rate_unit, pooled=(args.min_rate if args.min_rate is not None else 0.0,
                                                      args.max_rate if args.max_rate is not None else float("inf")))
    if not args.rate_reference_cuts:
        return None
    for path in args.rate_reference_cuts:
        if not path.is_file():
            die(f"missing reference cut manifest {path}")
    try:
        return estimate_rate_bounds((c for path in args.rate_reference_cuts for c in CutSet.from_file(path)),
                                    unit=args.rate_unit, percentiles=tuple(args.rate_percentiles),
                                    margin=args.rate_margin, min_cuts_per_language=args.rate_min_reference_cuts)
    except ValueError as e:
        die(str(e))


def label_shard(model, tokenizer, cuts, device, args, lms=None):
    """The shard's cuts with their supervision text replaced by the model's hypothesis (--method; ``lms``: LMs by
    language for ctc-beam), and its confidence in ``custom["pl_confidence"]``
    (:func:`~icefall_ext.decode.search.decode_encoder_output_with_confidence`)."""
    from lhotse import CutSet
    from lhotse.utils import fastcopy
    from tqdm import tqdm

    from ..decode.search import decode_encoder_output_with_confidence, encode_batch
    from ..data.dataset import cut_language, iterate_batches

    by_id = {c.id: c for c in cuts}
    out = []
    with torch.no_grad():
        for batch in tqdm(iterate_batches(cuts, args.max_duration), desc="pseudo-label", mininterval=5.0):
            enc, enc_lens = encode_batch(model, batch, device, int(args.chunk_seconds * 100),
                                         int(args.chunk_overlap_seconds * 100))
            languages = [cut_language(by_id[cid]) for cid in batch["cut_ids"]]
            hyps, confidences = decode_encoder_output_with_confidence(
                model, enc, enc_lens, args.method, beam=args.beam, lm=lms or None, alpha=args.alpha,
                beta=args.beta, token_table=tokenizer.token_table, languages=languages)
            for cid, hyp, confidence in zip(batch["cut_ids"], hyps, confidences):
                cut = by_id[cid]
                sup = cut.supervisions[0].with_custom("pseudo_label", True).with_custom("pl_confidence", confidence)
                # fastcopy, not transform_text: that one leaves a supervision whose text is None unlabelled
                cut.supervisions = [fastcopy(sup, text=tokenizer.decode(hyp))]
                out.append(cut)
    return CutSet.from_cuts(out)


def read_references(paths: List[Path]) -> Dict[str, str]:
    refs = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                refs[row["id"]] = row["text"]
    return refs


def score_against_references(cuts, refs: Dict[str, str]) -> Dict:
    from ..data.dataset import cut_language, cut_text
    from ..data.scoring import score

    pairs = [(refs[c.recording_id], cut_text(c), cut_language(c)) for c in cuts if c.recording_id in refs]
    if not pairs:
        die("no pseudo-labelled cut matches an id of --reference-tsv")
    rep = score([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], unit="char")
    return {"num_utts": len(pairs), "cer": rep.total.rate, "cer_macro": rep.macro_average,
            "per_language_cer": {k: v.rate for k, v in rep.per_language.items()}}


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.out_dir / "log", "log-pseudo-label")
    from lhotse import CutSet

    from ..data.tokenizer import load_tokenizer
    from ..pseudo.filtering import filter_pseudo_labels
    from ..pseudo.sharding import merge_shards, shard_path, shard_paths, split_for_ranks, write_shard
    from ..train.checkpoint import load_averaged_model

    for p in args.cuts:
        if not p.is_file():
            die(f"missing cut manifest {p}")
    if args.shard_index is not None and not 0 <= args.shard_index < args.num_shards:
        die(f"--shard-index must be in [0, {args.num_shards})")
    if args.keep_fraction is not None and not 0 < args.keep_fraction <= 1:
        die(f"--keep-fraction must be in (0, 1], got {args.keep_fraction}")
    if args.lm and args.method != "ctc-beam":
        die("--lm is used by --method ctc-beam only")
    args.alpha, args.beta = lm_weights_from_args(args)
    cuts = CutSet.from_cuts(c for p in args.cuts for c in CutSet.from_file(p)).to_eager()
    tokenizer = load_tokenizer(args.lang_dir)
    if not args.merge_only:
        todo = [args.shard_index] if args.shard_index is not None else list(range(args.num_shards))
        todo = [i for i in todo if not shard_path(args.out_dir, i).is_file()]
        if todo:
            device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                                  ("cpu" if args.device == "auto" else args.device))
            try:
                model, _, paths = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint, device)
            except FileNotFoundError as e:
                die(str(e))
            lms = load_lms_or_die(args.lm) if args.lm else {}
            if lms:
                logger.info("ctc-beam (beam %d) with LMs for %s, alpha %.2f beta %.2f", args.beam,
                            ", ".join(k or "every other language" for k in lms), args.alpha, args.beta)
            shards = split_for_ranks(cuts, args.num_shards)
            for i in todo:
                labelled = label_shard(model, tokenizer, shards[i], device, args, lms)
                write_shard(labelled, args.out_dir, i)
                logger.info("shard %d/%d: %d cuts labelled with %s", i, args.num_shards, len(labelled),
                            ",".join(p.name for p in paths))
        if args.shard_index is not None:
            return
    missing = [str(p) for p in shard_paths(args.out_dir, args.num_shards) if not p.is_file()]
    if missing:
        die(f"cannot merge: shards not labelled yet: {' '.join(missing)}")
    merged = merge_shards(shard_paths(args.out_dir, args.num_shards), expected_ids=[c.id for c in cuts]).to_eager()
    kept, report = filter_pseudo_labels(merged, num_tokens=lambda text: len(tokenizer.encode(text)),
                                        max_tokens=args.max_tokens, rate_bounds=rate_bounds_from_args(args),
                                        min_confidence=args.min_confidence, keep_fraction=args.keep_fraction)
    if args.reference_tsv:  # all labels, and the labels the filters kept: do the filters keep the better ones?
        refs = read_references(args.reference_tsv)
        quality = score_against_references(merged, refs)
        quality["kept"] = score_against_references(kept, refs) if len(kept) else None
        atomic_write_text(args.out_dir / "pl_quality.json", json.dumps(quality, indent=2))
        logger.info("pseudo-label CER %.2f%% before filtering, %s of the kept labels (per language %s)",
                    quality["cer"], f"{quality['kept']['cer']:.2f}%" if quality["kept"] else "none",
                    quality["per_language_cer"])
    atomic_write_text(args.out_dir / "filter_report.json", json.dumps(report.to_dict(), indent=2))
    out = args.out_dir / "pl_cuts.jsonl.gz"
    tmp = args.out_dir / "pl_cuts.tmp.jsonl.gz"
    kept.to_file(tmp)
    tmp.rename(out)
    logger.info("wrote %s: kept %d of %d pseudo-labelled cuts (%s)", out, report.kept, report.total, report.counts)


if __name__ == "__main__":
    main()
