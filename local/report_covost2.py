#!/usr/bin/env python3
"""Write egs/covost2/RESULTS.md from the recipe's outputs: test BLEU per source language and per CoVoST resource
group (mSLAM Table 1 in shape: high / mid / low, "all" = unweighted mean over languages) for speech translation
alone and jointly with text MT, the identity baseline (the transcript taken as its translation), chrF, the BLEU
validation curves, and the wall time of each stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

from icefall_ext.decode.results import NOT_CONVERGED
from icefall_ext.report import draw_curves, fmt, load_json, mean, stage_time_section, validation_curve

# mSLAM's grouping of CoVoST 2's 21 X -> En directions by training hours
GROUPS: Dict[str, List[str]] = {
    "high": ["fr", "de", "es", "ca"],
    "mid": ["fa", "it", "ru", "pt", "zh-CN"],
    "low": ["et", "mn", "nl", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy"],
}
ARMS = [("st", "ST alone (+ CTC)"), ("st-mt", "joint ST + MT")]
MIN_BLEU = 1.0  # pooled BLEU under which an arm is reported as "did not converge" (identity baseline: ~0.1)


def group_cells(per: Dict[str, Optional[float]], languages: List[str]) -> List[str]:
    cells = []
    for group in GROUPS.values():
        cells.append(fmt(mean([per.get(l) for l in languages if l in group])))
    return cells + [fmt(mean([per.get(l) for l in languages]))]


def identity_bleu(test_cuts: Path) -> Dict[str, float]:
    """BLEU per language of the source transcript taken as the translation (what a copy model would get)."""
    from lhotse import load_manifest_lazy

    from icefall_ext.data.dataset import cut_language, cut_text, cut_translation
    from icefall_ext.decode.translate import bleu_report

    cuts = list(load_manifest_lazy(test_cuts))
    report = bleu_report([cut_translation(c) for c in cuts], [cut_text(c) for c in cuts],
                         [cut_language(c) for c in cuts])
    return report["per_language_bleu"]


def bleu_table(exp: Path, split: str, languages: List[str], identity: Optional[Dict[str, float]]) -> List[str]:
    present = [g for g, members in GROUPS.items() if any(l in members for l in languages)]
    rows = ["| system | " + " | ".join(GROUPS) + " | all | " + " | ".join(languages) + " |",
            "|---|" + "---|" * (len(GROUPS) + 1 + len(languages))]
    if identity is not None:
        rows.append("| identity (transcript as translation) | " + " | ".join(group_cells(identity, languages)) +
                    " | " + " | ".join(fmt(identity.get(l)) for l in languages) + " |")
    for name, desc in ARMS:
        s = load_json(exp / name / "decode" / f"summary-{split}-st-beam.json")
        if s is None:
            continue
        if s["bleu"] < MIN_BLEU:  # no better than the identity baseline's chance overlap: not a result
            why = s.get("collapsed") or f"BLEU {s['bleu']:.2f}"
            rows.append(f"| {desc} | {NOT_CONVERGED} ({why}) |" + " |" * (len(GROUPS) + len(languages)))
            continue
        per = s["per_language_bleu"]
        rows.append(f"| {desc} | " + " | ".join(group_cells(per, languages)) + " | " +
                    " | ".join(fmt(per.get(l)) for l in languages) + " |")
    rows += ["", f"Groups present here: {', '.join(present)} (a group without languages shows -)."]
    return rows


PT_VARIANTS = {"speech": "speech only (BEST-RQ)", "text": "speech + text, no alignment",
               "ctc": "speech + text + paired CTC (mSLAM-CTC)"}


def summary_cells(s: Optional[Dict], languages: List[str]) -> str:
    """"all" BLEU (unweighted mean over languages) and the groups, or the not-converged marker."""
    if s is None:
        return "-"
    if s["bleu"] < MIN_BLEU:
        return f"{NOT_CONVERGED} ({s.get('collapsed') or 'BLEU %.2f' % s['bleu']})"
    per = s["per_language_bleu"]
    return " / ".join(group_cells(per, languages)[-1:] + group_cells(per, languages)[:-1])


def zero_shot_cell(zero: Optional[Dict], floor: Optional[Dict]) -> str:
    """Zero-shot BLEU, marked when it does not beat the untrained (speech-only) text path's by 1 BLEU: such a
    decoder ignores its input (it writes the grammar's common sentences)."""
    if zero is None:
        return "-"
    if floor is not None and zero["bleu"] < floor["bleu"] + 1.0:
        return f"{fmt(zero['bleu'])} (at the floor: no better than the untrained text path)"
    return fmt(zero["bleu"])


def pretraining_section(exp: Path, languages: List[str], variants: List[str]) -> List[str]:
    rows = []
    floor = load_json(exp / "st-pt-speech" / "decode" / "summary-test-st-beam-text.json")
    for v in variants:
        st = load_json(exp / f"st-pt-{v}" / "decode" / "summary-test-st-beam.json")
        joint = load_json(exp / f"st-mt-pt-{v}" / "decode" / "summary-test-st-beam.json")
        zero = load_json(exp / f"st-pt-{v}" / "decode" / "summary-test-st-beam-text.json")
        if st is None and joint is None:
            continue
        rows.append(f"| {PT_VARIANTS.get(v, v)} | {summary_cells(st, languages)} | {summary_cells(joint, languages)} | "
                    f"{zero_shot_cell(zero, floor)} |")
    if not rows:
        return []
    settings = [pt_settings(exp / f"pt-{v}", PT_VARIANTS.get(v, v)) for v in variants]
    settings = [f"- {line}" for line in settings if line]
    return ["Each pre-trained encoder fine-tuned for speech translation (cells: test BLEU all / "
            + " / ".join(GROUPS) + "); zero-shot: the ST-only model translating the test *transcripts* given as "
            "text through the text path it never saw in fine-tuning (mSLAM §5: clearly above 0 only with the paired "
            "CTC loss). The speech-only encoder's text path was never trained: its zero-shot BLEU is the floor of a "
            "decoder that ignores its input and writes the grammar's common phrases.", "",
            "| pre-training | ST alone | joint ST + MT | zero-shot text -> en BLEU |", "|---|---|---|---|", *rows,
            *([""] + ["Pre-training settings (each run's model_config.json and train_config.json):"] + settings
              if settings else [])]


def pt_settings(pt_dir: Path, name: str) -> Optional[str]:
    """One line of a pre-training run's loss weights, text-loss positions and length, or None if it is missing."""
    model, train = load_json(pt_dir / "model_config.json"), load_json(pt_dir / "train_config.json")
    if model is None or "mslam" not in model:
        return None
    m = model["mslam"]  # train writes every weight; text_loss is missing from checkpoints older than the option
    text = (f"text {m['text_scale']:g} on {m.get('text_loss', 'masked')} characters (spans of {m['span']})"
            if m["text_scale"] > 0 else "no text")
    ctc = f"paired CTC {m['ctc_scale']:g}" if m["use_ctc"] else "no paired CTC"
    updates = f", {train['max_updates']} updates" if train and train.get("max_updates") else ""
    return f"{name}: speech {m['speech_scale']:g}, {text}, {ctc}{updates}"


def chrf_line(exp: Path, split: str) -> List[str]:
    cells = []
    for name, desc in ARMS:
        s = load_json(exp / name / "decode" / f"summary-{split}-st-beam.json")
        if s:
            cells.append(f"{desc}: BLEU {fmt(s['bleu'])}, chrF {fmt(s['chrf'])} (corpus, all languages pooled)")
    return [f"- {c}" for c in cells]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--test-cuts", type=Path, required=True)
    p.add_argument("--languages", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage-times", type=Path, default=Path("stage_times.tsv"))
    p.add_argument("--pt-variants", nargs="*", default=[], help="stage 7's pre-training variants")
    p.add_argument("--command", required=True, help="the command that produced these results")
    a = p.parse_args()
    identity = identity_bleu(a.test_cuts) if a.test_cuts.is_file() else None
    plot = a.out.parent / "bleu_curves.png"
    drawn = draw_curves({desc: validation_curve(a.exp / name / "valid.jsonl", "bleu") for name, desc in ARMS},
                        plot, "dev BLEU (greedy)", "update")
    lines = [
        "# Results: X -> English speech translation on CoVoST 2 (egs/covost2)", "",
        f"Produced by `{a.command}` (the last stage writes this file from the recipe's own outputs).", "",
        "## BLEU on test (sacrebleu 13a, case-sensitive; beam search)", "",
        "mSLAM Table 1 in shape: groups by training hours, \"all\" = unweighted mean over languages.", "",
        *bleu_table(a.exp, "test", a.languages, identity), "", *chrf_line(a.exp, "test"), "",
        "## BLEU on dev", "", *bleu_table(a.exp, "dev", a.languages, None), "",
    ]
    pretraining = pretraining_section(a.exp, a.languages, a.pt_variants)
    if pretraining:
        lines += ["## Joint speech-text pre-training (mSLAM Table 1 / §5 in shape)", "", *pretraining, ""]
    if drawn:
        lines += ["## Validation BLEU during training", "", f"![dev BLEU]({plot.name})", ""]
    lines += stage_time_section(a.stage_times)
    a.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
