#!/usr/bin/env python3
"""Write egs/fleurs/RESULTS.md from the recipe's outputs: CER per language of CTC models fine-tuned from BEST-RQ
encoders (N codebooks and 1) and from scratch (USM Tables 3/5 in shape), FLEURS language ID (accuracy per
language, confusion matrices), BEST-RQ curves (masked-frame accuracy and codes in use against updates), the
sherpa-onnx decode of the exported model and the wall time of each stage."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import List

from icefall_ext.decode.results import NOT_CONVERGED
from icefall_ext.report import draw_curves, fmt, load_json, mean, stage_time_section, validation_curve


def cer_table(exp: Path, split: str, languages: List[str], codebooks: int) -> List[str]:
    rows = ["| CTC model | avg | " + " | ".join(languages) + " |", "|---|---|" + "---|" * len(languages)]
    arms = [(f"bestrq-{codebooks}", f"from BEST-RQ, {codebooks} codebooks"), ("bestrq-1", "from BEST-RQ, 1 codebook"),
            ("scratch", "from scratch")]
    for name, desc in arms[:1] + arms[1 + (codebooks == 1):]:
        s = load_json(exp / f"ctc-{name}" / "decode" / f"summary-{split}-ctc-greedy.json")
        if s is None:
            continue
        if s.get("collapsed"):
            rows.append(f"| {desc} | {NOT_CONVERGED} ({s['collapsed']}) |" + " |" * len(languages))
            continue
        per = [s["per_language_cer"].get(lang) for lang in languages]
        rows.append(f"| {desc} | {fmt(mean(per))} | " + " | ".join(fmt(v) for v in per) + " |")
    return rows


def lid_section(exp: Path, languages: List[str], codebooks: int, out_dir: Path) -> List[str]:
    """Accuracy rows (a model predicting one language for everything, or scoring under 1.5 x chance, is marked as
    not converged) and the confusion matrices, copied beside RESULTS.md."""
    out = ["| language-ID model | accuracy | macro | " + " | ".join(languages) + " |",
           "|---|---|---|" + "---|" * len(languages)]
    images = []
    for name, desc in [(f"bestrq-{codebooks}", "from BEST-RQ"), ("scratch", "from scratch")]:
        s = load_json(exp / f"lid-{name}" / "lid" / "summary-test-lid.json")
        if s is None:
            continue
        png = exp / f"lid-{name}" / "lid" / "confusion-test.png"
        if png.is_file():
            shutil.copyfile(png, out_dir / f"results_lid_confusion_{name}.png")
            images.append(f"![confusion, {desc}](results_lid_confusion_{name}.png)")
        predicted = [j for j in range(len(s["languages"])) if any(row[j] for row in s["confusion"])]
        chance = 100.0 / max(1, len(s["languages"]))
        if len(s["languages"]) > 1 and len(predicted) <= 1:  # one answer for every utterance: it did not learn
            why = f"always {s['languages'][predicted[0]] if predicted else '-'}"
        elif s["accuracy"] < 1.5 * chance:
            why = f"accuracy {s['accuracy']:.1f}%, chance {chance:.1f}%"
        else:
            per = [s["per_language"].get(lang, {}).get("accuracy") for lang in languages]
            out.append(f"| {desc} | {fmt(s['accuracy'])} | {fmt(s['macro_accuracy'])} | "
                       + " | ".join(fmt(v) for v in per) + " |")
            continue
        out.append(f"| {desc} | {NOT_CONVERGED} ({why}) |" + " |" * (len(languages) + 1))
    return out + [""] + images


def best_rq_section(exp: Path, codebooks: int, plot_dir: Path) -> List[str]:
    runs = {f"{n} codebook{'s' if n > 1 else ''}": exp / f"bestrq-{n}" / "valid.jsonl"
            for n in sorted({codebooks, 1}, reverse=True)}
    accuracy = {k: validation_curve(p, "accuracy") for k, p in runs.items()}
    codes = {k: validation_curve(p, "codes_0") for k, p in runs.items()}
    if not any(accuracy.values()):
        return []
    config = load_json(exp / f"bestrq-{codebooks}" / "model_config.json") or {}
    b = config.get("best_rq", {})
    out = [f"Settings: {b.get('num_codes')} codes of dimension {b.get('code_dim')} per codebook, spans of "
           f"{b.get('mask_frames')} frames starting with probability {b.get('mask_prob')}, targets normalised per "
           f"{b.get('norm', 'utterance')}, encoder {config.get('encoder')} "
           f"{config.get('encoder_kwargs', {}).get('d_model')}-d x {config.get('encoder_kwargs', {}).get('num_layers')}.",
           "",
           "| pre-training | " + " | ".join(f"update {int(x)}" for x, _ in next(v for v in accuracy.values() if v))
           + " |", "|---|" + "---|" * len(next(v for v in accuracy.values() if v))]
    for label in runs:
        out.append(f"| {label}: masked accuracy (%) | " + " | ".join(fmt(100 * y) for _, y in accuracy[label]) + " |")
        out.append(f"| {label}: codes predicted (codebook 0) | " + " | ".join(fmt(y, 0) for _, y in codes[label])
                   + " |")
    if draw_curves(accuracy, plot_dir / "results_bestrq_accuracy.png", "masked-frame accuracy (mean over codebooks)",
                   "updates"):
        out += ["", "![BEST-RQ masked accuracy](results_bestrq_accuracy.png)"]
    if draw_curves(codes, plot_dir / "results_bestrq_codes.png", "distinct codes predicted (codebook 0)", "updates"):
        out += ["", "![BEST-RQ codes in use](results_bestrq_codes.png)"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--languages", nargs="+", required=True)
    p.add_argument("--codebooks", type=int, default=16)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage-times", type=Path, default=Path("stage_times.tsv"))
    p.add_argument("--command", required=True, help="the command that produced these results")
    a = p.parse_args()
    lines = [
        "# Results: BEST-RQ pre-training, CTC and language ID on FLEURS (egs/fleurs)", "",
        f"Produced by `{a.command}` (stage 10 writes this file from the recipe's own outputs).", "",
        f"## CER (%) on FLEURS test, greedy CTC, no LM (pre-trained vs from scratch; {a.codebooks} vs 1 codebooks)",
        "", *cer_table(a.exp, "test", a.languages, a.codebooks), "",
        "## CER (%) on FLEURS dev", "", *cer_table(a.exp, "dev", a.languages, a.codebooks), "",
        "## FLEURS language ID: accuracy (%) on test", "", *lid_section(a.exp, a.languages, a.codebooks, a.out.parent), "",
        "## BEST-RQ pre-training: validation masked-frame accuracy and codes in use", "",
        *best_rq_section(a.exp, a.codebooks, a.out.parent), "",
    ]
    sherpa = load_json(a.exp / f"ctc-bestrq-{a.codebooks}" / "sherpa-decode" / "summary-test-sherpa-ctc.json")
    torch_s = load_json(a.exp / f"ctc-bestrq-{a.codebooks}" / "decode" / "summary-test-ctc-greedy.json")
    if sherpa:
        lines += ["## sherpa-onnx", "",
                  f"The CTC model fine-tuned from BEST-RQ, exported to ONNX and decoded with sherpa-onnx on test: CER "
                  f"{fmt(sherpa.get('cer'))}% (PyTorch greedy: {fmt(torch_s['cer'] if torch_s else None)}%).", ""]
    lines += stage_time_section(a.stage_times)
    a.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
