"""Pseudo-label unlabelled cuts with a trained model, shard by shard, then merge and filter.

    # everything in one process (shards labelled one after another), then merge + filter:
    python -m icefall_ext.bin.pseudo_label --exp-dir exp/slimipl-de --lang-dir data/lang_char \\
        --cuts data/fbank/vp-unlabelled_cuts_de.jsonl.gz --out-dir data/pl/de --num-shards 4

    # on a cluster: one job per shard (e.g. one per GPU), then one merge job
    python -m icefall_ext.bin.pseudo_label ... --num-shards 64 --shard-index $RANK
    python -m icefall_ext.bin.pseudo_label ... --num-shards 64 --merge-only

Labels are greedy CTC (or transducer greedy) without an LM, the paper's final pseudo-labels; long utterances are
decoded in stitched crops (--chunk-seconds). Shards are balanced by duration and written atomically, so a killed
job leaves no shard a rerun would trust. The merged, filtered set is ``<out-dir>/pl_cuts.jsonl.gz`` (empty labels
and labels longer than --max-tokens dropped, report in ``filter_report.json``). With --reference-tsv (the mini
corpus writes what its unlabelled audio says) the pseudo-label CER per language goes to ``pl_quality.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..common import add_model_args, atomic_write_text, die, setup_logging

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
    return p


def label_shard(model, tokenizer, cuts, device, args):
    """The shard's cuts with their supervision text replaced by the model's greedy hypothesis."""
    from lhotse import CutSet
    from tqdm import tqdm

    from ..decode.search import decode_encoder_output, encode_batch
    from ..data.dataset import iterate_batches

    by_id = {c.id: c for c in cuts}
    out = []
    with torch.no_grad():
        for batch in tqdm(iterate_batches(cuts, args.max_duration), desc="pseudo-label", mininterval=5.0):
            enc, enc_lens = encode_batch(model, batch, device, int(args.chunk_seconds * 100),
                                         int(args.chunk_overlap_seconds * 100))
            for cid, hyp in zip(batch["cut_ids"], decode_encoder_output(model, enc, enc_lens, "auto")):
                cut = by_id[cid]
                sup = cut.supervisions[0]
                text = tokenizer.decode(hyp)
                cut.supervisions = [sup.with_custom("pseudo_label", True).transform_text(lambda _: text)]
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
            shards = split_for_ranks(cuts, args.num_shards)
            for i in todo:
                labelled = label_shard(model, tokenizer, shards[i], device, args)
                write_shard(labelled, args.out_dir, i)
                logger.info("shard %d/%d: %d cuts labelled with %s", i, args.num_shards, len(labelled),
                            ",".join(p.name for p in paths))
        if args.shard_index is not None:
            return
    missing = [str(p) for p in shard_paths(args.out_dir, args.num_shards) if not p.is_file()]
    if missing:
        die(f"cannot merge: shards not labelled yet: {' '.join(missing)}")
    merged = merge_shards(shard_paths(args.out_dir, args.num_shards), expected_ids=[c.id for c in cuts]).to_eager()
    if args.reference_tsv:
        quality = score_against_references(merged, read_references(args.reference_tsv))
        atomic_write_text(args.out_dir / "pl_quality.json", json.dumps(quality, indent=2))
        logger.info("pseudo-label CER %.2f%% (per language %s)", quality["cer"], quality["per_language_cer"])
    kept, report = filter_pseudo_labels(merged, num_tokens=lambda text: len(tokenizer.encode(text)),
                                        max_tokens=args.max_tokens)
    atomic_write_text(args.out_dir / "filter_report.json", json.dumps(report.to_dict(), indent=2))
    out = args.out_dir / "pl_cuts.jsonl.gz"
    tmp = args.out_dir / "pl_cuts.tmp.jsonl.gz"
    kept.to_file(tmp)
    tmp.rename(out)
    logger.info("wrote %s: kept %d of %d pseudo-labelled cuts (%s)", out, report.kept, report.total, report.counts)


if __name__ == "__main__":
    main()
