#!/usr/bin/env python3
"""Training speed by autocast dtype: float32 vs bfloat16 (and what ``--dtype auto`` picks here).

One update = forward + CTC (+ LID) loss + backward + ScaledAdam step of a freshly built --preset model on a
synthetic batch of --batch-seconds of 80-dim features split into --utt-seconds utterances, the shape of the mini
recipes' batches (--max-duration 40). The dtypes run interleaved, each timed as the best of --repeats rounds of
--updates updates after a warm-up, so both see the same machine state; the ratio column is float32's time over
the row's.

    python bench/train_step.py                       # conformer-mini on 40 s batches, both dtypes
    python bench/train_step.py --preset zipformer-mini --threads 2
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional

import torch

from icefall_ext.models.presets import build_model, model_config_from_preset
from icefall_ext.train.optim import ScaledAdam
from icefall_ext.train.precision import autocast_dtype


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="conformer-mini")
    p.add_argument("--vocab-size", type=int, default=60, help="output units (the mini character tables: ~30-60)")
    p.add_argument("--num-languages", type=int, default=7, help="LID classes (0: no LID head)")
    p.add_argument("--batch-seconds", type=float, default=40.0)
    p.add_argument("--utt-seconds", type=float, default=4.5)
    p.add_argument("--updates", type=int, default=10, help="updates per timed round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p


def make_batch(args: argparse.Namespace, gen: torch.Generator) -> tuple:
    n = max(1, round(args.batch_seconds / args.utt_seconds))
    frames = int(args.utt_seconds * 100)
    x = torch.randn(n, frames, 80, generator=gen)
    x_lens = torch.full((n,), frames, dtype=torch.int64)
    chars = max(1, int(args.utt_seconds * 12))  # ~12 characters per second of speech
    y = torch.randint(1, args.vocab_size, (n, chars), generator=gen).tolist()
    lang = torch.randint(0, args.num_languages, (n,), generator=gen) if args.num_languages else None
    return x, x_lens, y, lang


def time_round(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple, dtype: Optional[torch.dtype],
               updates: int) -> float:
    x, x_lens, y, lang = batch
    start = time.perf_counter()
    for _ in range(updates):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            losses = model(x, x_lens, y, lang)
        loss = sum(v for k, v in losses.items() if k in ("ctc", "lid"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / updates


def main() -> None:
    args = get_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    dtypes: Dict[str, Optional[torch.dtype]] = {name: autocast_dtype(name, cpu) for name in ("float32", "bfloat16")}
    auto = autocast_dtype("auto", cpu)
    gen = torch.Generator().manual_seed(args.seed)
    batch = make_batch(args, gen)
    runs = {}
    for name in dtypes:
        torch.manual_seed(args.seed)
        model = build_model(model_config_from_preset(args.preset, args.vocab_size, args.num_languages))
        model.train()
        runs[name] = (model, ScaledAdam(model.parameters(), lr=0.01))
        time_round(*runs[name], batch, dtypes[name], 2)  # warm-up (oneDNN primitive creation)
    best: Dict[str, List[float]] = {name: [] for name in dtypes}
    for _ in range(args.repeats):
        for name in dtypes:
            best[name].append(time_round(*runs[name], batch, dtypes[name], args.updates))
    audio = batch[0].shape[0] * args.utt_seconds
    base = min(best["float32"])
    print(f"{args.preset}, batches of {batch[0].shape[0]} x {args.utt_seconds:g} s, {torch.get_num_threads()} "
          f"threads; --dtype auto picks {'bfloat16' if auto is torch.bfloat16 else 'float32'} on this CPU")
    print(f"{'dtype':<10} {'s/update':>9} {'x real time':>12} {'speed-up':>9}")
    for name in dtypes:
        t = min(best[name])
        print(f"{name:<10} {t:>9.3f} {audio / t:>12.0f} {base / t:>9.2f}")


if __name__ == "__main__":
    main()
