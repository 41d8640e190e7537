#!/usr/bin/env python3
"""Full vs pruned RNN-T loss: time and peak memory of forward + backward.

"full":   logits = joiner(am, lm) on every (t, s) node, rnnt_loss.
"pruned": rnnt_loss_simple(return_grad=True) -> get_rnnt_prune_ranges ->
          do_rnnt_pruning -> joiner on s_range nodes per frame -> rnnt_loss_pruned
          (the icefall recipe; the loss is 0.5 * simple + pruned).

The joiner is either plain addition of the encoder/decoder outputs (default,
``--joiner-dim 0``: only the loss machinery is measured) or
``Linear(tanh(enc + dec))`` with ``--joiner-dim J`` (the simple loss then gets
its own V-dim projections, as in icefall).

Peak memory, of one forward+backward, above the memory allocated before it
(inputs, parameters):
  cuda: torch.cuda.max_memory_allocated().
  cpu:  the same quantity rebuilt from the allocation/free events that
        torch.profiler(profile_memory=True) records for torch's CPU allocator
        (temporaries inside ops included; allocator overhead and RSS not).
Time: best wall time of ``--iters`` forward+backward passes after one warm-up
(the best rather than the median because the CPU may be shared).

Usage: python bench/rnnt_loss.py --device cpu --sizes 16x250x60x500,16x400x80x1000
"""

import argparse
import time
from typing import Callable, Dict, List, Tuple

import torch

from icefall_ext.losses import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)

BLANK = 0
METHODS = ("full", "pruned")


def parse_size(text: str) -> Tuple[int, int, int, int]:
    B, T, U, V = (int(x) for x in text.lower().split("x"))
    return B, T, U, V


def make_problem(size, joiner_dim: int, device: torch.device, seed: int = 0) -> Dict:
    """Random encoder/decoder outputs, targets and variable lengths."""
    B, T, U, V = size
    g = torch.Generator().manual_seed(seed)
    t_lens = T - torch.randint(0, T // 5 + 1, (B,), generator=g)
    u_lens = torch.randint(U // 2, U + 1, (B,), generator=g)
    t_lens[0], u_lens[0] = T, U
    boundary = torch.zeros(B, 4, dtype=torch.int64)
    boundary[:, 2], boundary[:, 3] = u_lens, t_lens
    dim = joiner_dim or V
    params = {
        "enc": torch.randn(B, T, dim, generator=g),
        "dec": torch.randn(B, U + 1, dim, generator=g),
    }
    if joiner_dim:
        for name in ("w_out", "w_simple_am", "w_simple_lm"):
            params[name] = torch.randn(joiner_dim, V, generator=g) / joiner_dim**0.5
    params = {k: v.to(device).requires_grad_(True) for k, v in params.items()}
    symbols = torch.randint(1, V, (B, U), generator=g)
    return dict(params=params, symbols=symbols.to(device), boundary=boundary.to(device))


def joiner(params: Dict, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    if "w_out" not in params:
        return enc + dec
    return torch.tanh(enc + dec) @ params["w_out"]


def full_loss(problem: Dict, prune_range: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(objective, RNN-T negative log-likelihood)."""
    p = problem["params"]
    logits = joiner(p, p["enc"][:, :, None, :], p["dec"][:, None, :, :])
    nll = rnnt_loss(logits, problem["symbols"], BLANK, boundary=problem["boundary"],
                    reduction="sum")
    return nll, nll


def pruned_loss(problem: Dict, prune_range: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(objective, negative log-likelihood of the pruned lattice)."""
    p, symbols, boundary = problem["params"], problem["symbols"], problem["boundary"]
    if "w_out" in p:
        am, lm = p["enc"] @ p["w_simple_am"], p["dec"] @ p["w_simple_lm"]
    else:
        am, lm = p["enc"], p["dec"]
    simple, (px_grad, py_grad) = rnnt_loss_simple(
        lm, am, symbols, BLANK, boundary=boundary, reduction="sum", return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune_range)
    enc_pruned, dec_pruned = do_rnnt_pruning(p["enc"], p["dec"], ranges)
    logits = joiner(p, enc_pruned, dec_pruned)
    pruned = rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary=boundary,
                              reduction="sum")
    return 0.5 * simple + pruned, pruned


# forward functions; as in a training loop, backward runs after they return
LOSSES: Dict[str, Callable[[Dict, int], Tuple[torch.Tensor, torch.Tensor]]] = {
    "full": full_loss,
    "pruned": pruned_loss,
}


def profiled_peak_bytes(run: Callable[[], None]) -> int:
    """Peak of live CPU tensor bytes during ``run``, above what was live before.

    Replays the allocation/free events that torch.profiler records with
    ``profile_memory=True`` (every allocation of torch's CPU allocator, including
    temporaries inside ops) in time order.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def measure(method: str, size, device: torch.device, iters: int, prune_range: int,
            joiner_dim: int) -> Dict:
    """Time (s, best of ``iters``), peak memory (MiB) and loss of one method."""
    problem = make_problem(size, joiner_dim, device)
    compute_loss = LOSSES[method]
    cuda = device.type == "cuda"
    losses: List[float] = []

    def run() -> None:
        for param in problem["params"].values():
            param.grad = None
        objective, nll = compute_loss(problem, prune_range)
        objective.backward()
        losses.append(float(nll.detach()))

    run()  # warm-up
    times: List[float] = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    for param in problem["params"].values():
        param.grad = None
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = profiled_peak_bytes(run)
    return dict(time_s=min(times), peak_mib=peak / 2**20, nll=losses[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="16x250x60x500,16x400x80x1000",
                        help="comma-separated BxTxUxV (batch, frames, symbols, vocab)")
    parser.add_argument("--prune-range", type=int, default=5)
    parser.add_argument("--joiner-dim", type=int, default=0,
                        help="0: additive joiner; J: Linear(tanh(enc + dec)) with J hidden")
    parser.add_argument("--iters", type=int, default=3,
                        help="timed iterations after one warm-up; the best is reported")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    memory_kind = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                   else "torch.profiler allocation events")
    print(f"device={args.device} threads={torch.get_num_threads()} "
          f"prune_range={args.prune_range} joiner_dim={args.joiner_dim} "
          f"iters={args.iters} memory={memory_kind}")
    header = (f"{'B x T x U x V':>18} | {'full s':>8} {'pruned s':>9} {'speedup':>8} | "
              f"{'full MiB':>9} {'pruned MiB':>10} {'mem ratio':>9} | "
              f"{'full NLL':>10} {'pruned NLL':>10}")
    print(header)
    print("-" * len(header))
    for size_text in args.sizes.split(","):
        full, pruned = (
            measure(m, parse_size(size_text), device, args.iters, args.prune_range,
                    args.joiner_dim)
            for m in METHODS
        )
        print(f"{size_text:>18} | {full['time_s']:8.3f} {pruned['time_s']:9.3f} "
              f"{full['time_s'] / pruned['time_s']:7.1f}x | "
              f"{full['peak_mib']:9.0f} {pruned['peak_mib']:10.0f} "
              f"{full['peak_mib'] / pruned['peak_mib']:8.1f}x | "
              f"{full['nll']:10.1f} {pruned['nll']:10.1f}", flush=True)


if __name__ == "__main__":
    main()
