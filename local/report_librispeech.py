#!/usr/bin/env python3
"""Write egs/librispeech/RESULTS.md from the recipe's decode outputs: WER per test set and decoding method for
the offline and streaming transducers (PyTorch and sherpa-onnx), the PyTorch/sherpa-onnx agreement of the
exported models, and the transfer rows of Lugosch et al. 2022, Table 4 (multilingual init vs from scratch).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from icefall_ext.common import atomic_write_text
from icefall_ext.data.scoring import read_recogs, score
from icefall_ext.decode.results import rate_cell
from icefall_ext.report import load_json as load

SETS = ("dev-clean", "dev-other", "test-clean", "test-other")


def wer_row(label: str, summaries: Sequence[Optional[Dict]]) -> str:
    cells = [rate_cell(s, "wer") for s in summaries]
    return f"| {label} | " + " | ".join(cells) + " |"


def table(rows: List[Tuple[str, Path, str]]) -> List[str]:
    """rows: (label, decode dir, file suffix after the set name); cells are WER per set."""
    out = ["| model / decoding | " + " | ".join(SETS) + " |", "|---|" + "---|" * len(SETS)]
    for label, directory, suffix in rows:
        summaries = [load(directory / f"summary-{s}-{suffix}.json") for s in SETS]
        if any(summaries):
            out.append(wer_row(label, summaries))
    return out


def parity(torch_recogs: Path, sherpa_recogs: Path) -> Optional[Tuple[int, float, float, float]]:
    """(utterances, % identical hypotheses, WER PyTorch, WER sherpa-onnx) over the same utterances."""
    if not (torch_recogs.is_file() and sherpa_recogs.is_file()):
        return None
    a, b = read_recogs(torch_recogs), read_recogs(sherpa_recogs)
    ids = sorted(set(a) & set(b))
    if not ids:
        return None
    same = 100.0 * sum(a[i][1] == b[i][1] for i in ids) / len(ids)
    refs = [" ".join(a[i][0]) for i in ids]
    wer_a = score(refs, [" ".join(a[i][1]) for i in ids], unit="word").total.rate
    wer_b = score(refs, [" ".join(b[i][1]) for i in ids], unit="word").total.rate
    return len(ids), same, wer_a, wer_b


def num_params(exp_dir: Path) -> str:
    config = load(exp_dir / "model_config.json")
    if config is None:
        return "-"
    from icefall_ext.models.presets import build_model

    return f"{sum(p.numel() for p in build_model(config).parameters()) / 1e6:.2f}M"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", type=Path, default=Path("exp"))
    p.add_argument("--encoder", default="zipformer")
    p.add_argument("--transfer-sets", nargs="*", default=["train-clean-100"])
    p.add_argument("--out", type=Path, default=Path("RESULTS.md"))
    p.add_argument("--command", default="egs/librispeech/run.sh")
    args = p.parse_args()
    exp, enc = args.exp, args.encoder
    offline, streaming = exp / enc, exp / f"{enc}-streaming"
    config = load(offline / "train_config.json") or {}

    lines = [
        "# LibriSpeech results",
        "",
        f"Written by stage 10 of `{args.command}` (rerun that command to reproduce every number here).",
        f"Model: {config.get('preset', enc)}, transducer (pruned RNN-T) + CTC, {num_params(offline)} parameters; "
        "WER in %.",
        "",
        "With `--mini true` the corpus is the synthesised mini LibriSpeech (espeak-ng voices reading sequences of "
        "frequent English words, 1 h of training audio, held-out voices for dev/test and extreme pitch/speed for "
        "the 'other' sets) and the models train for minutes on a CPU: the numbers show that each stage learns and "
        "that the exported models decode like PyTorch, not LibriSpeech accuracy. The real-data settings are in "
        "`conf/` (icefall's 65.5M-parameter Zipformer reports 2.22 / 4.87 WER on test-clean / test-other with "
        "greedy search).",
        "",
        "## Offline model",
        "",
        *table([("greedy search", offline / "decode", "greedy"),
                ("modified beam search", offline / "decode", "modified-beam"),
                ("CTC greedy", offline / "decode", "ctc-greedy"),
                ("sherpa-onnx (exported, greedy)", offline / "sherpa-decode", "sherpa-transducer")]),
        "",
    ]
    if streaming.is_dir():
        lines += [
            "## Streaming model (chunk-causal, trained with random chunk sizes)",
            "",
            *table([("PyTorch, chunk by chunk with states (streaming-greedy)", streaming / "decode",
                     "streaming-greedy"),
                    ("PyTorch, whole utterance with the chunk mask (greedy)", streaming / "decode", "greedy"),
                    ("sherpa-onnx OnlineRecognizer", streaming / "sherpa-decode", "sherpa-streaming-transducer")]),
            "",
        ]
    checks = [("offline", offline / "decode" / "recogs-{}-greedy.txt",
               offline / "sherpa-decode" / "recogs-{}-sherpa-transducer.txt"),
              ("streaming", streaming / "decode" / "recogs-{}-streaming-greedy.txt",
               streaming / "sherpa-decode" / "recogs-{}-sherpa-streaming-transducer.txt")]
    parity_rows = []
    for name, torch_pat, sherpa_pat in checks:
        for s in SETS:
            r = parity(Path(str(torch_pat).format(s)), Path(str(sherpa_pat).format(s)))
            if r:
                parity_rows.append(f"| {name} | {s} | {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.2f} |")
    if parity_rows:
        lines += ["## PyTorch vs sherpa-onnx (same audio, greedy search)", "",
                  "| model | set | utterances | identical hypotheses (%) | WER PyTorch | WER sherpa-onnx |",
                  "|---|---|---|---|---|---|", *parity_rows, ""]
    transfer = []
    for t in args.transfer_sets:
        for init, label in (("multilingual", "multilingual CTC model, output layer replaced"),
                            ("scratch", "same architecture from scratch")):
            transfer.append((f"{t}: {label}", exp / f"transfer-{init}-{t}" / "decode", "ctc-greedy"))
    rows = table(transfer)
    if len(rows) > 2:
        lines += ["## Transfer of the multilingual model (Lugosch et al. 2022, Table 4 shape; CTC greedy)", "",
                  *rows, ""]
        budgets = []
        for t in args.transfer_sets:
            for init in ("multilingual", "scratch"):
                cfg = load(exp / f"transfer-{init}-{t}" / "train_config.json")
                if cfg:
                    budgets.append(f"{init} ({t}): {cfg['max_updates']} updates, {cfg['scheduler']} lr {cfg['lr']:g}"
                                   + (f", warm-up {cfg['warmup_updates']}" if cfg["scheduler"] == "eden" else ""))
        if budgets:
            lines += ["Training of each row (from its train_config.json): " + "; ".join(budgets) + ".", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
