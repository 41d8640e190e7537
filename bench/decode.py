#!/usr/bin/env python3
"""Decoding speed: PyTorch batched greedy search vs sherpa-onnx on the same exported model and the same audio.

Rows (one run, printed side by side):
  pytorch <device> <dtype> bs=B   encoder + batched greedy search (transducer) or CTC greedy, from precomputed
                                  features, utterances sorted by length and batched B at a time; on CUDA in
                                  float16 autocast for each of --batch-sizes (the sweep), on CPU in float32.
  fbank (python)                  our kaldi-native-fbank features (PyTorch rows exclude it; add it for
                                  an end-to-end comparison)
  sherpa-onnx cpu [int8]          end to end from waveforms (its features included), --sherpa-batch-size
                                  streams per decode call, --num-threads threads
RTF = processing seconds / audio seconds; utt/s = utterances / processing seconds; "x sherpa" = the row's
throughput over sherpa-onnx fp32's. Time = best of --repeats runs after a warm-up. The last column is the share
of hypotheses identical to PyTorch's CPU float32 ones (the export check, here on the benchmark audio).

    # a trained model and a test set (exports to --onnx-dir first when it holds no model)
    python bench/decode.py --exp-dir exp/base --onnx-dir exp/base/onnx --cuts data/fbank/cv-en_cuts_test.jsonl.gz
    # anywhere: a randomly initialised preset on N utterances of noise (2-8 s), nothing trained
    python bench/decode.py --synthetic 32 --preset conformer-mini --type transducer
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from icefall_ext.common import die, str2bool
from icefall_ext.data.features import compute_fbank
from icefall_ext.decode.search import decode_encoder_output
from icefall_ext.export import SherpaDecoder, export_model, load_cut_audio, model_files


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, help="trained model (with --cuts)")
    p.add_argument("--epoch", type=int, default=None)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--cuts", type=Path, help="cut manifest whose audio is decoded")
    p.add_argument("--max-utts", type=int, default=0, help="decode only the first N cuts (0: all)")
    p.add_argument("--synthetic", type=int, default=0, help="N utterances of noise and a random --preset model")
    p.add_argument("--preset", default="conformer-mini", help="model preset for --synthetic")
    p.add_argument("--vocab-size", type=int, default=500, help="vocabulary of the --synthetic model")
    p.add_argument("--onnx-dir", type=Path, default=None, help="exported model (default: a temporary dir)")
    p.add_argument("--type", choices=["transducer", "ctc"], default="transducer")
    p.add_argument("--int8", type=str2bool, default=True, help="also time the int8 sherpa-onnx model")
    p.add_argument("--num-threads", type=int, default=1,
                   help="CPU threads of PyTorch and sherpa-onnx (more threads spin badly on a busy machine)")
    p.add_argument("--batch-sizes", default="", help="PyTorch batch sizes (default: 16 on CPU, "
                   "1,8,32,128 on CUDA)")
    p.add_argument("--sherpa-batch-size", type=int, default=16)
    p.add_argument("--cuda", type=str2bool, default=True, help="also time PyTorch on CUDA when available")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def best_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None):
    """(best wall seconds of ``repeats`` calls after one warm-up call, the last result)."""
    result = fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def synthetic_audio(num_utts: int, seed: int) -> List[np.ndarray]:
    """``num_utts`` waveforms of amplitude-modulated noise, 2 to 8 seconds at 16 kHz."""
    rng = np.random.default_rng(seed)
    waves = []
    for seconds in rng.uniform(2.0, 8.0, num_utts):
        n = int(seconds * 16000)
        envelope = 0.5 + 0.5 * np.sin(np.linspace(0, seconds * 2 * np.pi * 3, n))
        waves.append((0.1 * envelope * rng.standard_normal(n)).astype(np.float32))
    return waves


def pytorch_decoder(model, method: str, feats: Sequence[torch.Tensor], batch_size: int, device: torch.device,
                    amp_dtype: Optional[torch.dtype]) -> Callable[[], List[List[int]]]:
    """A function decoding all ``feats`` (sorted by length, ``batch_size`` at a time); results in input order."""
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0], reverse=True)
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = torch.nn.utils.rnn.pad_sequence([feats[i] for i in idx], batch_first=True).to(device)
        lens = torch.tensor([feats[i].shape[0] for i in idx], device=device)
        batches.append((idx, x, lens))

    @torch.no_grad()
    def run() -> List[List[int]]:
        hyps: List[List[int]] = [[] for _ in feats]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            for idx, x, lens in batches:
                enc, enc_lens = model.forward_encoder(x, lens)
                for i, hyp in zip(idx, decode_encoder_output(model, enc, enc_lens, method)):
                    hyps[i] = hyp
        return hyps

    return run


def load_model(args):
    """(model, config, token table) from --exp-dir or a random --preset model."""
    if args.synthetic:
        from icefall_ext.models.presets import build_model, model_config_from_preset

        torch.manual_seed(args.seed)
        config = model_config_from_preset(args.preset, args.vocab_size, use_transducer=True, use_ctc=True)
        table = ["<blk>"] + [f"t{i}" for i in range(1, args.vocab_size)]
        return build_model(config).eval(), config, table
    from icefall_ext.train.checkpoint import load_averaged_model, load_checkpoint

    model, config, paths = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint)
    table = load_checkpoint(paths[-1]).get("tokens")
    if table is None:
        raise ValueError(f"{paths[-1]} stores no token table")
    return model, config, list(table)


def format_table(rows: List[Dict[str, str]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if bool(args.synthetic) == bool(args.exp_dir):
        die("give either --synthetic N or --exp-dir with --cuts")
    if args.exp_dir and not (args.cuts and args.cuts.is_file()):
        die(f"--exp-dir needs --cuts with an existing manifest, got {args.cuts}")
    torch.set_num_threads(args.num_threads)
    try:
        model, config, table = load_model(args)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    method = "greedy" if args.type == "transducer" else "ctc-greedy"
    if (args.type == "transducer" and model.joiner is None) or (args.type == "ctc" and model.ctc is None):
        die(f"this model has no {args.type} head")

    tmp = tempfile.TemporaryDirectory()
    onnx_dir = args.onnx_dir or Path(tmp.name)
    try:
        model_files(onnx_dir, args.type, int8=args.int8)
    except FileNotFoundError:
        print(f"exporting {args.type} to {onnx_dir} ...", file=sys.stderr)
        export_model(model, config, table, onnx_dir, args.type, int8=args.int8)

    if args.synthetic:
        waves = synthetic_audio(args.synthetic, args.seed)
        source = f"{args.synthetic} noise utterances, random {args.preset}"
    else:
        from lhotse import CutSet

        cuts = CutSet.from_file(args.cuts).to_eager()
        if args.max_utts:
            cuts = cuts.subset(first=args.max_utts)
        waves, _ = load_cut_audio(cuts)
        source = f"{len(waves)} cuts of {args.cuts}"
    audio = sum(len(w) for w in waves) / 16000
    params = sum(p.numel() for p in model.parameters()) / 1e6

    rows: List[Dict[str, str]] = []
    reference: List[List[int]] = []

    def add(name: str, seconds: float, hyps: Optional[List[List[int]]]) -> None:
        same = "-" if hyps is None else f"{100 * np.mean([a == b for a, b in zip(hyps, reference)]):.0f}%"
        rows.append({"system": name, "seconds": f"{seconds:.3f}", "RTF": f"{seconds / audio:.4f}",
                     "utt/s": f"{len(waves) / seconds:.1f}", "_s": seconds, "same hyps": same})

    fbank_s, feats = best_time(lambda: [torch.from_numpy(compute_fbank(w)) for w in waves], 1)
    cpu_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [16]
    for bs in cpu_sizes:
        seconds, hyps = best_time(pytorch_decoder(model, method, feats, bs, torch.device("cpu"), None),
                                  args.repeats)
        reference = reference or hyps
        add(f"pytorch cpu fp32 bs={bs}", seconds, hyps)
    if args.cuda and torch.cuda.is_available():
        gpu = torch.device("cuda")
        model.to(gpu)
        sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [1, 8, 32, 128]
        for bs in sizes:
            run = pytorch_decoder(model, method, feats, bs, gpu, torch.float16)
            seconds, hyps = best_time(run, args.repeats, torch.cuda.synchronize)
            add(f"pytorch cuda fp16 bs={bs}", seconds, hyps)
        model.to("cpu")
    add("fbank (python)", fbank_s, None)

    def sherpa_run(decoder: SherpaDecoder) -> Callable[[], List[List[int]]]:
        def run() -> List[List[int]]:
            hyps: List[List[int]] = []
            for start in range(0, len(waves), args.sherpa_batch_size):
                hyps += decoder.decode(waves[start : start + args.sherpa_batch_size])
            return hyps

        return run

    sherpa_rows = []
    for int8 in ([False, True] if args.int8 else [False]):
        decoder = SherpaDecoder(onnx_dir, args.type, num_threads=args.num_threads, int8=int8)
        seconds, hyps = best_time(sherpa_run(decoder), args.repeats)
        add(f"sherpa-onnx cpu {'int8' if int8 else 'fp32'}", seconds, hyps)
        sherpa_rows.append(rows[-1])
    base = sherpa_rows[0]["_s"]
    for row in rows:
        row["x sherpa"] = f"{base / row.pop('_s'):.2f}"
        row["same hyps"] = row.pop("same hyps")

    print(f"{source}: {audio:.1f} s of audio; {config['encoder']} {args.type}, {params:.1f}M parameters; "
          f"{args.num_threads} CPU threads; torch {torch.__version__}")
    print(format_table(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
