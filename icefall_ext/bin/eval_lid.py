"""Evaluate a model's language-ID head: accuracy per language and a confusion matrix (JSON and PNG).

    python -m icefall_ext.bin.eval_lid --exp-dir exp/lid-pretrained --cuts test=data/fbank/fleurs_cuts_test.jsonl.gz

The languages are those the model was trained with (stored in its checkpoint). For each set it writes
``<out-dir>/summary-<set>-lid.json`` (accuracy, macro accuracy, per-language accuracy and counts, the confusion
matrix with rows = reference, columns = prediction) and ``<out-dir>/confusion-<set>.png``. Utterances whose
language the model does not know are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..common import add_model_args, atomic_write_text, die, setup_logging

logger = logging.getLogger("icefall_ext.eval_lid")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--cuts", nargs="+", required=True, help="NAME=PATH or PATH (name = file stem)")
    p.add_argument("--max-duration", type=float, default=300.0, help="seconds of audio per batch")
    p.add_argument("--out-dir", type=Path, default=None, help="default: <exp-dir>/lid")
    p.add_argument("--threads", type=int, default=0)
    return p


def lid_report(refs: Sequence[int], hyps: Sequence[int], languages: Sequence[str]) -> Dict:
    """Accuracy (%), macro accuracy over the languages present, per-language accuracy and the confusion matrix."""
    size = len(languages)
    confusion = [[0] * size for _ in range(size)]
    for r, h in zip(refs, hyps):
        confusion[r][h] += 1
    per_language = {}
    for i, lang in enumerate(languages):
        total = sum(confusion[i])
        if total:
            per_language[lang] = {"accuracy": 100.0 * confusion[i][i] / total, "utterances": total}
    right = sum(confusion[i][i] for i in range(size))
    return {
        "accuracy": 100.0 * right / max(1, len(refs)),
        "macro_accuracy": sum(v["accuracy"] for v in per_language.values()) / max(1, len(per_language)),
        "utterances": len(refs), "per_language": per_language, "languages": list(languages), "confusion": confusion,
    }


def plot_confusion(report: Dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages, confusion = report["languages"], report["confusion"]
    rows = [[c / max(1, sum(row)) for c in row] for row in confusion]
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(languages), 0.8 + 0.5 * len(languages)))
    ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(languages)), languages, rotation=90, fontsize=8)
    ax.set_yticks(range(len(languages)), languages, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                        color="white" if rows[i][j] > 0.5 else "black")
    ax.set_title(f"{title}: accuracy {report['accuracy']:.1f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    out_dir = args.out_dir or args.exp_dir / "lid"
    setup_logging(out_dir / "log", "log-eval-lid")
    if args.threads:
        torch.set_num_threads(args.threads)
    from lhotse import CutSet

    from ..data.dataset import cut_language, iterate_batches
    from ..decode.search import encode_batch
    from ..train.checkpoint import load_averaged_model, load_checkpoint
    from .decode import parse_cut_args

    sets = parse_cut_args(args.cuts)
    try:
        model, _, paths = load_averaged_model(args.exp_dir, args.epoch, args.avg, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        die(str(e))
    if getattr(model, "lid", None) is None:
        die(f"the model of {args.exp_dir} has no language-ID head (train it with --lid-scale > 0)")
    languages = list(load_checkpoint(paths[-1]).get("languages", []))
    index = {lang: i for i, lang in enumerate(languages)}
    device = torch.device("cpu")
    for name, path in sets:
        refs: List[int] = []
        hyps: List[int] = []
        unknown = 0
        with torch.no_grad():
            for batch in iterate_batches(CutSet.from_file(path), args.max_duration):
                ids = torch.tensor([index.get(cut_language(c), -1) for c in batch["cuts"]])
                known = ids >= 0
                unknown += int((~known).sum())
                if not bool(known.any()):
                    continue
                enc, enc_lens = encode_batch(model, batch, device)
                predicted = model.lid_logits(enc, enc_lens).argmax(-1)
                refs.extend(ids[known].tolist())
                hyps.extend(predicted[known].tolist())
        report = dict(lid_report(refs, hyps, languages), unknown_language_utterances=unknown)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / f"summary-{name}-lid.json", json.dumps(report, indent=2))
        plot_confusion(report, out_dir / f"confusion-{name}.png", f"{args.exp_dir.name} on {name}")
        logger.info("%s: language ID accuracy %.2f%% (macro %.2f%%) on %d utterances%s", name, report["accuracy"],
                    report["macro_accuracy"], len(refs),
                    f"; {unknown} of unknown languages left out" if unknown else "")


if __name__ == "__main__":
    main()
