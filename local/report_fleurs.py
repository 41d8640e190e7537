#!/usr/bin/env python3
"""Write egs/fleurs/RESULTS.md from the recipe's outputs: CER per language of CTC models fine-tuned from BEST-RQ
encoders (N codebooks and 1) and from scratch (USM Tables 3/5 in shape), FLEURS language ID (accuracy per
language, confusion matrices), BEST-RQ curves (masked-frame accuracy and codes in use against updates), the
sherpa-onnx decode of the exported model, residual adapters on the frozen encoder vs full fine-tuning vs head only
(USM Table 3 in shape), noisy-student generations (USM Table 4), long-form WER with chunk-wise vs local vs full
attention (USM Table 7), and the wall time of each stage."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from icefall_ext.decode.results import NOT_CONVERGED
from icefall_ext.report import draw_curves, fmt, load_json, mean, stage_time_section, validation_curve


def decode_summary(exp: Path, name: str, split: str, method: str = "ctc-greedy") -> Optional[dict]:
    """The summary of run ``name``'s decode of ``split`` (greedy CTC unless ``method``, e.g. ``ctc-beam-lm``;
    None when it was not decoded)."""
    return load_json(exp / name / "decode" / f"summary-{split}-{method}.json")


def cer_rows(exp: Path, split: str, languages: List[str], arms: List[Tuple[str, str]],
             extra: Optional[Callable[[str], str]] = None, method: str = "ctc-greedy") -> List[str]:
    """One row per model dir of ``arms`` (dir, description): macro-average CER and CER per language of its greedy
    CTC decode of ``split`` (or ``method``'s); a collapsed model is marked instead. ``extra(dir)``: a cell after the
    description."""
    rows = []
    for name, desc in arms:
        s = decode_summary(exp, name, split, method)
        if s is None:
            continue
        head = f"| {desc} | " + (f"{extra(name)} | " if extra else "")
        if s.get("collapsed"):
            rows.append(head + f"{NOT_CONVERGED} ({s['collapsed']}) |" + " |" * len(languages))
            continue
        per = [s["per_language_cer"].get(lang) for lang in languages]
        rows.append(head + f"{fmt(mean(per))} | " + " | ".join(fmt(v) for v in per) + " |")
    return rows


def cer_table(exp: Path, split: str, languages: List[str], codebooks: int) -> List[str]:
    arms = [(f"bestrq-{codebooks}", f"from BEST-RQ, {codebooks} codebooks"), ("bestrq-1", "from BEST-RQ, 1 codebook"),
            ("scratch", "from scratch")]
    arms = [(f"ctc-{name}", desc) for name, desc in arms[:1] + arms[1 + (codebooks == 1):]]
    return (["| CTC model | avg | " + " | ".join(languages) + " |", "|---|---|" + "---|" * len(languages)]
            + cer_rows(exp, split, languages, arms))


def train_config(exp: Path, name: str) -> dict:
    """A run's train_config.json ({} when the run is missing)."""
    return load_json(exp / name / "train_config.json") or {}


def budget_line(exp: Path, codebooks: int) -> List[str]:
    """How the CTC rows were trained, from their train_config.json: updates, the head-first phase, SpecAugment."""
    scratch = train_config(exp, "ctc-scratch")
    if not scratch:
        return []
    first = train_config(exp, f"ctc-bestrq-{codebooks}/head").get("max_updates", 0)
    total = first + train_config(exp, f"ctc-bestrq-{codebooks}").get("max_updates", 0)
    text = (f"Every row: {scratch.get('max_updates')} updates on the same labelled data, SpecAugment "
            f"{'on' if scratch.get('spec_augment') else 'off'}, lr {scratch.get('lr')} with Eden's decay "
            f"(lr_batches {scratch.get('eden_lr_batches', 0):g}).")
    if first:
        text += (f" From BEST-RQ ({total} in all) the first {first} train the new output layer alone on the frozen "
                 "encoder (`--head-first-updates`), then all weights.")
    return [text, ""]


def trainable(exp: Path, name: str) -> str:
    """Trainable parameters of a run as "N (p% of the model)", from its train_config.json."""
    cfg = train_config(exp, name)
    n, total = cfg.get("trainable_parameters"), cfg.get("parameters")
    return f"{n / 1e6:.3f}M ({100 * n / total:.1f}%)" if n and total else "-"


def adapter_section(exp: Path, languages: List[str], codebooks: int) -> List[str]:
    cfg = load_json(exp / "ft-adapters" / "model_config.json") or {}
    arms = [(f"ctc-bestrq-{codebooks}", "starting point: CTC from BEST-RQ"), ("ft-full", "+ full fine-tuning"),
            ("ft-adapters", "+ residual adapters, frozen encoder"), ("ft-head", "+ output layer only, frozen encoder")]
    rows = cer_rows(exp, "test", languages, arms, lambda name: trainable(exp, name) if name.startswith("ft-") else "-")
    if not rows:
        return []
    b = cfg.get("adapters", {}).get("bottleneck")
    return ([f"Continued training of the CTC model, same updates for each arm (AdamW); adapters: one per language in "
             f"every encoder block, bottleneck {b}, zero-initialised up-projection.", "",
             "| model | trainable parameters | avg | " + " | ".join(languages) + " |",
             "|---|---|---|" + "---|" * len(languages)] + rows)


def noisy_student_section(exp: Path, languages: List[str], teacher: str, generations: int) -> List[str]:
    """Test CER of generation 0's teacher, its labelled-only control and each student; pseudo-label quality."""
    arms = ([(teacher, f"supervised starting point ({teacher})"),
             ("ns-0", "teacher (generation 0): the starting point trained the student's way on labelled audio alone"),
             ("ns-labelled-only", "control: generation 0's teacher trained on, labelled audio alone")]
            + [(f"ns-{g}", f"student, generation {g}") for g in range(1, generations + 1)])

    def dev_cer_test_wer(name: str, method: str = "ctc-greedy") -> str:
        """The dev CER and the test WER, each averaged over the languages."""
        dev = (decode_summary(exp, name, "dev", method) or {}).get("per_language_cer", {})
        wer = (decode_summary(exp, name, "test", method) or {}).get("per_language_wer", {})
        return " | ".join(fmt(mean([per.get(lang) for lang in languages])) for per in (dev, wer))

    rows = cer_rows(exp, "test", languages, arms, dev_cer_test_wer)
    rows[2:2] = cer_rows(exp, "test", languages, [("ns-0", "teacher decoded with its language's LM (how it labels)")],
                         lambda name: dev_cer_test_wer(name, "ctc-beam-lm"), method="ctc-beam-lm")
    teacher_run, student, control = (train_config(exp, n) for n in ("ns-0", "ns-1", "ns-labelled-only"))
    if len(rows) < 3 or not student:
        return []
    out = [f"Generation 0's teacher is {teacher} trained the students' way on the labelled audio alone for "
           f"{teacher_run.get('max_updates', '-')} updates (Park et al. 2020's teacher is the best "
           "supervised model there is). Each student continues "
           f"from its teacher's weights for {student.get('max_updates')} updates (AdamW, lr {student.get('lr')}, "
           f"every weight trained) with SpecAugment ({student.get('spec_aug_time_masks')} time masks) on the "
           f"labelled audio plus pseudo-labelled pool audio ({student.get('mix_ratio', '-')} of the audio "
           f"pseudo-labelled). The control continues generation 0's teacher for {control.get('max_updates', '-')} "
           "updates (as many as all students together) the same way without pseudo-labels: what they add beyond "
           "the extra updates and the noise. Averages are over languages; USM's table gives WER, which at this "
           "scale counts most words wrong (a word with one wrong letter is wrong) but shows what the LM-fused "
           "labels teach: whole words.", "",
           "| model | dev CER avg | test WER avg | test CER avg | " + " | ".join(languages) + " |",
           "|---|---|---|---|" + "---|" * len(languages)] + rows
    out += ["", "| pseudo-labels | search | CER of all labels | CER of the kept labels | kept |",
            "|---|---|---|---|---|"]
    for g in range(1, generations + 1):
        pl = exp.parent / "data" / "pl" / f"ns-{g}"
        q, r, tuned = load_json(pl / "pl_quality.json"), load_json(pl / "filter_report.json"), \
            load_json(pl / "lm_tuning.json")
        search = (f"beam search + word n-gram of the language (LM weight {tuned['alpha']:g}, word bonus "
                  f"{tuned['beta']:g}; dev CER {fmt(100 * tuned['best']['error_rate'])})" if tuned else "greedy")
        if q and r:
            out.append(f"| generation {g} (teacher: ns-{g - 1}) | {search} | "
                       f"{fmt(q['cer'])} | {fmt((q.get('kept') or {}).get('cer'))} | "
                       f"{r['counts']['kept']} of {r['counts']['total']} |")
    return out


def longest_training_clip(fbank: Path) -> Optional[float]:
    from lhotse import load_manifest_lazy

    durations = [c.duration for path in sorted(fbank.glob("fleurs-*_cuts_train.jsonl.gz"))
                 for c in load_manifest_lazy(path)]
    return max(durations) if durations else None


def longform_section(exp: Path, languages: List[str], chunk_seconds: float, local_frames: int,
                     crop_seconds: float) -> List[str]:
    arms = [("ft-full", "long-full", "full attention, whole recording"),
            ("ft-full", "long-chunk", f"chunk-wise attention ({chunk_seconds:g} s chunks), whole recording"),
            ("ft-local", "long-local", f"local attention ({local_frames} frames each side), whole recording"),
            ("ft-full", "long-crop", f"full attention, crop-and-stitch ({crop_seconds:g} s crops)")]
    long_langs = [l for l in languages if any((exp / n / "decode" / f"summary-{l}-ctc-greedy-{t}.json").is_file()
                                               for n, t, _ in arms)]
    if not long_langs:
        return []
    rows = []
    for name, tag, desc in arms:
        per = {l: load_json(exp / name / "decode" / f"summary-{l}-ctc-greedy-{tag}.json") for l in long_langs}
        per = {l: v for l, v in per.items() if v}
        if not per:
            continue
        if all(v.get("collapsed") for v in per.values()):
            rows.append(f"| {desc} | {NOT_CONVERGED} |" + " |" * (3 + len(long_langs)))
            continue
        tot = {k: sum(v["cer_counts"][k] for v in per.values()) for k in ("ref_len", "errors", "ins", "del", "sub")}
        pct = lambda k: fmt(100.0 * tot[k] / max(1, tot["ref_len"]))  # noqa: E731
        rows.append(f"| {desc} | {pct('errors')} | {pct('del')} | {pct('ins')} | {pct('sub')} | "
                    + " | ".join(fmt(per[l]["cer"]) if l in per else "-" for l in long_langs) + " |")
    head = ("| decoding | CER | deletions | insertions | substitutions | " + " | ".join(long_langs) + " |",
            "|---|---|---|---|---|" + "---|" * len(long_langs))
    short = cer_rows(exp, "test", languages, [("ft-full", "full (= chunk-wise) attention"),
                                              ("ft-local", "local attention")])
    longest = longest_training_clip(exp.parent / "data" / "fbank")
    same = (f"The longest training clip lasts {longest:.1f} s, shorter than a chunk, so chunk-wise training is "
            "identical to full-attention training: the chunk-wise row decodes the full-attention model's weights with "
            "chunk-restricted attention." if longest is not None and longest < chunk_seconds else
            "NOTE: training clips longer than a chunk exist; the chunk-wise row still decodes the full-attention "
            "model (train a chunk-wise model with train --attention chunk for the exact USM arm).")
    return ([f"Long recordings (several sentences of one voice with short pauses), CER (%) pooled over languages "
             f"with its error types as % of reference characters (at this scale word error rates are all near 100%). "
             f"{same}", "", *head, *rows, "",
             "Short utterances (FLEURS test, CER %): chunk-wise attention costs nothing there.", "",
             "| model | avg | " + " | ".join(languages) + " |", "|---|---|" + "---|" * len(languages), *short])


def lid_section(exp: Path, languages: List[str], codebooks: int, out_dir: Path) -> List[str]:
    """Accuracy rows on test and dev (a model predicting one language for everything, or scoring under 1.5 x chance,
    is marked as not converged) and the test confusion matrices, copied beside RESULTS.md."""
    out = ["| language-ID model | set | accuracy | macro | " + " | ".join(languages) + " |",
           "|---|---|---|---|" + "---|" * len(languages)]
    images = []
    for name, desc in [(f"bestrq-{codebooks}", "from BEST-RQ"), ("scratch", "from scratch")]:
        png = exp / f"lid-{name}" / "lid" / "confusion-test.png"
        if png.is_file():
            shutil.copyfile(png, out_dir / f"results_lid_confusion_{name}.png")
            images.append(f"![confusion on test, {desc}](results_lid_confusion_{name}.png)")
        for split in ("test", "dev"):
            s = load_json(exp / f"lid-{name}" / "lid" / f"summary-{split}-lid.json")
            if s is None:
                continue
            predicted = [j for j in range(len(s["languages"])) if any(row[j] for row in s["confusion"])]
            chance = 100.0 / max(1, len(s["languages"]))
            if len(s["languages"]) > 1 and len(predicted) <= 1:  # one answer for every utterance: it did not learn
                why = f"always {s['languages'][predicted[0]] if predicted else '-'}"
            elif s["accuracy"] < 1.5 * chance:
                why = f"accuracy {s['accuracy']:.1f}%, chance {chance:.1f}%"
            else:
                per = [s["per_language"].get(lang, {}).get("accuracy") for lang in languages]
                out.append(f"| {desc} | {split} | {fmt(s['accuracy'])} | {fmt(s['macro_accuracy'])} | "
                           + " | ".join(fmt(v) for v in per) + " |")
                continue
            out.append(f"| {desc} | {split} | {NOT_CONVERGED} ({why}) |" + " |" * (len(languages) + 1))
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
    p.add_argument("--ns-generations", type=int, default=1)
    p.add_argument("--ns-teacher", default="ft-adapters", help="generation 0's teacher (a run under --exp)")
    p.add_argument("--chunk-seconds", type=float, default=8.0)
    p.add_argument("--local-frames", type=int, default=128)
    p.add_argument("--crop-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage-times", type=Path, default=Path("stage_times.tsv"))
    p.add_argument("--command", required=True, help="the command that produced these results")
    a = p.parse_args()
    lines = [
        "# Results: BEST-RQ pre-training, CTC and language ID on FLEURS (egs/fleurs)", "",
        f"Produced by `{a.command}` (stage 12 writes this file from the recipe's own outputs).", "",
        f"## CER (%) on FLEURS test, greedy CTC, no LM (pre-trained vs from scratch; {a.codebooks} vs 1 codebooks)",
        "", *budget_line(a.exp, a.codebooks), *cer_table(a.exp, "test", a.languages, a.codebooks), "",
        "## CER (%) on FLEURS dev", "", *cer_table(a.exp, "dev", a.languages, a.codebooks), "",
        "## FLEURS language ID: accuracy (%) on test and dev (chance: 1 / languages)", "",
        *lid_section(a.exp, a.languages, a.codebooks, a.out.parent), "",
        "## BEST-RQ pre-training: validation masked-frame accuracy and codes in use", "",
        *best_rq_section(a.exp, a.codebooks, a.out.parent), "",
    ]
    for title, section in [
        ("Residual adapters on the frozen encoder (USM Table 3 in shape): CER (%) on test",
         adapter_section(a.exp, a.languages, a.codebooks)),
        ("Noisy student (USM Table 4 in shape): CER and WER (%) per generation",
         noisy_student_section(a.exp, a.languages, a.ns_teacher, a.ns_generations)),
        ("Long-form audio: chunk-wise vs local vs full attention (USM Table 7 in shape)",
         longform_section(a.exp, a.languages, a.chunk_seconds, a.local_frames, a.crop_seconds))]:
        if section:
            lines += [f"## {title}", "", *section, ""]
    sherpa = load_json(a.exp / f"ctc-bestrq-{a.codebooks}" / "sherpa-decode" / "summary-test-sherpa-ctc.json")
    torch_s = load_json(a.exp / f"ctc-bestrq-{a.codebooks}" / "decode" / "summary-test-ctc-greedy.json")
    if sherpa:
        lines += ["## sherpa-onnx", "",
                  f"The CTC model fine-tuned from BEST-RQ, exported to ONNX and decoded with sherpa-onnx on test: CER "
                  f"{fmt(sherpa.get('cer'))}% (PyTorch greedy: {fmt(torch_s['cer'] if torch_s else None)}%).", ""]
    first = a.languages[0]
    folded = load_json(a.exp / "ft-adapters" / "sherpa-decode" / f"summary-{first}-sherpa-ctc.json")
    adapted = load_json(a.exp / "ft-adapters" / "decode" / "summary-test-ctc-greedy.json")
    if folded:
        lines += [f"The adapter model exported with its {first} adapters folded in (`export_onnx --adapter-language "
                  f"{first}`: one ordinary CTC model per language), decoded with sherpa-onnx on {first} test: CER "
                  f"{fmt(folded.get('cer'))}% (PyTorch, routed by language: "
                  f"{fmt((adapted or {}).get('per_language_cer', {}).get(first))}%).", ""]
    lines += stage_time_section(a.stage_times)
    a.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
