#!/usr/bin/env python3
"""Write egs/commonvoice_voxpopuli/RESULTS.md from the recipe's outputs (decode summaries, pseudo-label quality,
LibriSpeech transfer, sherpa-onnx decode) and plot validation CER against updates.

Tables follow the shape of Lugosch et al. 2022: Tables 2/3 (CER per model, averaged over all languages and over
the languages with unlabelled data), Table 4 (LibriSpeech transfer), Table 5 (WER by utterance duration) and
Fig. 6 (validation CER of one low-resource language: supervised fine-tuning vs slimIPL with a cropping warm-up vs
slimIPL cropping throughout); then the wall time of each stage, as the recipe recorded it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, List, Optional

from icefall_ext.decode.results import NOT_CONVERGED, rate_cell
from icefall_ext.report import draw_curves, fmt, mean, stage_time_section, validation_curve
from icefall_ext.report import load_json as load

MODELS = [
    ("base", "Base: CTC + LID on all CV languages"),
    ("pooled-slimipl", "Control: slimIPL on all unlabelled audio pooled (no per-language fine-tuning)"),
    ("final-continue", "Final (a): base continued on CV + pseudo-labels"),
    ("final-scratch", "Final (b): from scratch on CV + pseudo-labels"),
    ("final-scratch-ft", "Final (c): (b) fine-tuned on CV"),
]


def cer_table(exp: Path, split: str, languages: List[str], unlabelled: List[str]) -> List[str]:
    head = ["model", "avg (all)", "avg (with unlabelled)"] + languages
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, desc in MODELS:
        s = load(exp / name / "decode" / f"summary-{split}-ctc-greedy.json")
        if s is None:
            continue
        per = s["per_language_cer"]
        vals = [per.get(l) for l in languages]
        if s.get("collapsed"):  # a model that did not learn gets a marker, not numbers that pass for a result
            rows.append(f"| {desc} | {NOT_CONVERGED} ({s['collapsed']}) |" + " |" * (len(head) - 2))
            continue
        rows.append("| " + " | ".join([desc, fmt(mean(vals)), fmt(mean([per.get(l) for l in unlabelled]))]
                                      + [fmt(v) for v in vals]) + " |")
    own = {l: load(exp / f"slimipl-{l}" / "decode" / f"summary-{split}-ctc-greedy.json") for l in unlabelled}
    if any(own.values()):
        # one model per language: a model that did not learn gets the marker in its own cell, outside the average
        per = {l: (s["per_language_cer"].get(l) if s and not s.get("collapsed") else None) for l, s in own.items()}
        cells = [NOT_CONVERGED if own.get(l) and own[l].get("collapsed") else fmt(per.get(l)) for l in languages]
        rows.append("| " + " | ".join(["Per-language slimIPL models (each on its own language)", "-",
                                        fmt(mean(list(per.values())))] + cells) + " |")
    return rows


def pl_table(data: Path, unlabelled: List[str]) -> List[str]:
    rows = ["| pseudo-labels from | " + " | ".join(unlabelled) + " | avg |", "|---|" + "---|" * (len(unlabelled) + 1)]
    per_lang = {l: load(data / "pl" / l / "pl_quality.json") for l in unlabelled}
    vals = [per_lang[l]["per_language_cer"].get(l) if per_lang[l] else None for l in unlabelled]
    rows.append("| per-language fine-tune + slimIPL | " + " | ".join(fmt(v) for v in vals) + f" | {fmt(mean(vals))} |")
    pooled = load(data / "pl-pooled" / "pl_quality.json")
    if pooled:
        vals = [pooled["per_language_cer"].get(l) for l in unlabelled]
        rows.append("| pooled slimIPL control | " + " | ".join(fmt(v) for v in vals) + f" | {fmt(mean(vals))} |")
    kept = []
    for l in unlabelled:
        rep = load(data / "pl" / l / "filter_report.json")
        kept.append(f"{rep['counts']['kept']}/{rep['counts']['total']}" if rep else "-")
    rows.append("| kept after filtering (per-language PLs) | " + " | ".join(kept) + " | |")
    return rows


def librispeech_tables(exp: Path) -> List[str]:
    d = exp / "ls-transfer" / "decode"
    sets = ["dev-clean", "dev-other", "test-clean", "test-other"]
    out = ["| decoding | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    tuned = load(exp / "ls-transfer" / "lm_tuning.json")
    for method, desc in [("ctc-greedy", "greedy, no LM"), ("ctc-beam-lm", "beam 8 + 4-gram LM")]:
        vals = [load(d / f"summary-{s}-{method}.json") for s in sets]
        if not any(vals):
            continue
        if method == "ctc-beam-lm" and tuned:
            desc += f" (alpha {tuned['alpha']:g}, beta {tuned['beta']:g}, tuned on dev-clean)"
        out.append(f"| {desc} | " + " | ".join(rate_cell(v, "wer", 1) for v in vals) + " |")
    dur = []
    for method, desc in [("ctc-greedy", "greedy"), ("ctc-beam-lm", "4-gram LM")]:
        for s in ("test-clean", "test-other"):
            v = load(d / f"summary-{s}-{method}.json")
            if v and "per_duration_wer" in v:
                dur.append((f"{s}, {desc}", v["per_duration_wer"], v["per_duration_utts"]))
    if dur:
        buckets = ["<10", "10-15", "15-20", ">20"]
        out += ["", "WER (%) by utterance duration (number of utterances in brackets), as in the paper's Table 5:", "",
                "| set | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
        for name, wer, n in dur:
            out.append(f"| {name} | " + " | ".join(f"{fmt(wer.get(b))} ({n.get(b, 0)})" for b in buckets) + " |")
    return out


FIG6_ARMS = [
    ("fig6-{l}-supervised", "supervised fine-tuning only"),
    ("slimipl-{l}", "slimIPL, cropping warm-up"),
    ("fig6-{l}-always-crop", "slimIPL, cropping throughout"),
]


def fig6_curves(exp: Path, language: str) -> Dict[str, List[tuple]]:
    """Each Fig. 6 arm's curve, starting from the fine-tuned model all arms start from (x = updates since the
    base model)."""
    key = f"per_language.{language}"
    start = validation_curve(exp / f"ft-{language}" / "valid.jsonl", key)[-1:]
    offset = start[0][0] if start else 0
    curves = {}
    for name, desc in FIG6_ARMS:
        points = validation_curve(exp / name.format(l=language) / "valid.jsonl", key, offset)
        if points:
            curves[desc] = start + points
    return curves


def fig6_section(exp: Path, language: str, plot_path: Path) -> List[str]:
    curves = fig6_curves(exp, language)
    if not curves:
        return []
    xs = sorted({x for points in curves.values() for x, _ in points})
    out = [f"## Fig. 6: validation CER (%) of {language} against updates", "",
           f"All three arms continue the same model (the base fine-tuned on {language}); updates are counted from "
           "the base model, and slimIPL's updates include its unlabelled ones.", "",
           "| arm | " + " | ".join(str(x) for x in xs) + " |", "|---|" + "---|" * len(xs)]
    for desc, points in curves.items():
        by_x = dict(points)
        out.append(f"| {desc} | " + " | ".join(fmt(by_x.get(x)) for x in xs) + " |")
    if draw_curves(curves, plot_path, f"validation CER of {language} (%)", "updates since the base model"):
        out += ["", f"![Fig. 6]({os.path.basename(plot_path)})"]
    return out + [""]


def plot(exp: Path, out: Path) -> bool:
    curves = {}
    for name, desc in MODELS:
        f = exp / name / "valid.jsonl"
        if f.is_file():
            curves[desc.split(":")[0]] = validation_curve(f, "cer_macro")
    return draw_curves(curves, out, "validation CER, macro average over languages (%)", "updates (of each run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--languages", nargs="+", required=True)
    p.add_argument("--unlabelled-languages", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path, required=True)
    p.add_argument("--command", required=True, help="the command that produced these results")
    p.add_argument("--fig6-language", default="", help="the language of the Fig. 6 arms ('' = none)")
    p.add_argument("--stage-times", type=Path, default=Path("stage_times.tsv"), help="utils/stage.sh's table")
    a = p.parse_args()

    lines = [
        "# Results: massively multilingual pseudo-labelling (commonvoice_voxpopuli)", "",
        f"Produced by `{a.command}` (stage 10 writes this file from the recipe's own outputs).", "",
        "## CER (%) on Common Voice test, greedy decoding, no LM (paper Tables 2-3)", "",
        *cer_table(a.exp, "test", a.languages, a.unlabelled_languages), "",
        "## CER (%) on Common Voice dev", "",
        *cer_table(a.exp, "dev", a.languages, a.unlabelled_languages), "",
        "## Quality of the final pseudo-labels: CER (%) against what the unlabelled audio says", "",
        "(Only the mini corpus knows what its unlabelled audio says; real VoxPopuli has no such reference.)", "",
        *pl_table(a.data, a.unlabelled_languages), "",
        "## LibriSpeech transfer: WER (%) after fine-tuning the final model (paper Tables 4-5)", "",
        *librispeech_tables(a.exp), "",
    ]
    sherpa = load(a.exp / "final-continue" / "sherpa-decode" / "summary-test-sherpa-ctc.json")
    torch_s = load(a.exp / "final-continue" / "decode" / "summary-test-ctc-greedy.json")
    if sherpa:
        lines += ["## sherpa-onnx", "",
                  f"Final model (a) exported to ONNX and decoded with sherpa-onnx on CV test: CER "
                  f"{fmt(sherpa.get('cer'))}% (PyTorch greedy: {fmt(torch_s['cer'] if torch_s else None)}%).", ""]
    if plot(a.exp, a.plot):
        lines += ["## Validation CER against updates", "", f"![validation CER]({os.path.basename(a.plot)})", ""]
    if a.fig6_language:
        lines += fig6_section(a.exp, a.fig6_language, a.plot.with_name(f"results_fig6_{a.fig6_language}.png"))
    lines += stage_time_section(a.stage_times)
    a.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
