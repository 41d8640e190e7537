#!/usr/bin/env python3
"""Write egs/lrs3/RESULTS.md from the recipe's outputs: the frozen-encoder LibriSpeech ASR table in the shape of
Jain et al. 2024, Table 1 (rows: audio-visual pre-training none / MAE / CLR / MAE+CLR; columns: translation
mid-training none / en->X), the reference model trained from scratch with its encoder free, what each
pre-training learned (validation reconstruction losses, audio->video retrieval accuracy against chance), the
mid-training BLEU, and the wall time of each stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

from icefall_ext.decode.results import NOT_CONVERGED, rate_cell
from icefall_ext.report import fmt, load_json, stage_time_section, validation_records

PRETRAIN = {"none": "none (random encoder)", "mae": "MAE", "clr": "CLR", "mae+clr": "MAE + CLR"}
# mid-training BLEU under which the translation model is reported as not converged: on the mini grammar's
# sentences a decoder that ignores its input scores 3-4 BLEU (the runs stuck on the plateau: 3.7)
MIN_BLEU = 5.0


def asr_cell(exp: Path, sets: List[str], method: str) -> str:
    """"CER / WER" per evaluation set, sets separated by a semicolon; "did not converge" (with the decoder's reason
    and the CER for the record) for collapsed hypotheses: mostly empty, a handful of distinct strings, or an error
    rate of 95% or more in the decoder's metric (CER for characters, WER for BPE)."""
    cells = []
    for s in sets:
        summary = load_json(exp / "decode" / f"summary-{s}-{method}.json")
        if summary and summary.get("collapsed"):
            why = summary["collapsed"]
            cer = "" if why.startswith("CER") else f"; CER {summary['cer']:.1f}"  # the rate for the record, once
            cells.append(f"{NOT_CONVERGED} ({why}{cer})")
        else:
            cells.append(f"{rate_cell(summary, 'cer', 1)} / {rate_cell(summary, 'wer', 1)}")
    return " ; ".join(cells)


def layer_mix_rows(exp: Path, arms: List[Tuple[str, str]]) -> List[str]:
    """Per fine-tuned arm (``asr-<pre-training>-<mid-training>``), the learnt weights of its layer mix (%), state 0
    being the encoder's input embedding and state i the output of block i; no rows without a layer mix."""
    import torch

    from icefall_ext.train.checkpoint import latest_checkpoint, load_checkpoint

    rows, num_states = [], 0
    for v, m in arms:
        path = latest_checkpoint(exp / f"asr-{v}-{m}")
        weights = None if path is None else load_checkpoint(path)["model"].get("layer_mix.weights")
        if weights is not None:
            mid = "no mid-training" if m == "none" else f"mid-trained en->{m}"
            num_states = weights.numel()
            rows.append(f"| {PRETRAIN.get(v, v)} | {mid} | "
                        + " | ".join(f"{100 * w:.0f}" for w in torch.softmax(weights.float(), 0).tolist()) + " |")
    if not rows:
        return []
    return ["| pre-training | mid-training | " + " | ".join(["input"] + [f"block {i}" for i in range(1, num_states)])
            + " |", "|---|---|" + "---|" * num_states, *rows]


def pretraining_rows(exp: Path, variants: List[str]) -> List[str]:
    rows = ["| pre-training | update | MAE audio | MAE video | CLR loss | audio->video retrieval top-1 (chance) |",
            "|---|---|---|---|---|---|"]
    for v in variants:
        records = validation_records(exp / f"pt-{v}" / "valid.jsonl")
        for label, record in (("first", records[0]), ("last", records[-1])) if records else ():
            acc, chance = record.get("a2v_top1"), record.get("retrieval_chance")
            rows.append(f"| {PRETRAIN.get(v, v)} ({label} validation) | {record.get('update', '-')} | "
                        f"{fmt(record.get('mae_audio_loss'), 3)} | {fmt(record.get('mae_video_loss'), 3)} | "
                        f"{fmt(record.get('clr_loss'), 3)} | "
                        f"{fmt(None if acc is None else 100 * acc)}% ({fmt(None if chance is None else 100 * chance)}%) |")
    return rows if len(rows) > 2 else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--pt-variants", nargs="*", default=[])
    p.add_argument("--mid-langs", nargs="*", default=[])
    p.add_argument("--sets", nargs="+", default=["test-clean", "test-other"])
    p.add_argument("--method", default="ctc-greedy")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage-times", type=Path, default=Path("stage_times.tsv"))
    p.add_argument("--command", required=True, help="the command that produced these results")
    a = p.parse_args()

    pts, mids = ["none"] + a.pt_variants, ["none"] + a.mid_langs
    header = "| pre-training | " + " | ".join("no mid-training" if m == "none" else f"mid-trained en->{m}"
                                              for m in mids) + " |"
    table = [header, "|---|" + "---|" * len(mids)]
    for v in pts:
        table.append(f"| {PRETRAIN.get(v, v)} | " + " | ".join(asr_cell(a.exp / f"asr-{v}-{m}", a.sets, a.method)
                                                             for m in mids) + " |")
    scratch = asr_cell(a.exp / "asr-scratch", a.sets, a.method)
    hours = (load_json(a.exp / "asr-none-none" / "train_config.json") or {}).get("train_hours", 0)
    data = (f"on the same seeded random {hours:g} h of labelled LibriSpeech (--ft-hours)" if hours
            else "on the same data")
    bleu = ["| encoder before mid-training | " + " | ".join(f"en->{m} BLEU" for m in a.mid_langs) + " |",
            "|---|" + "---|" * len(a.mid_langs)]
    for v in pts:
        cells = []
        for m in a.mid_langs:
            s = load_json(a.exp / f"mid-{v}-{m}" / "decode" / "summary-tst-COMMON-st-beam.json")
            cells.append("-" if s is None else
                         fmt(s["bleu"]) + ("" if s["bleu"] >= MIN_BLEU else " (did not converge)"))
        bleu.append(f"| {PRETRAIN.get(v, v)} | " + " | ".join(cells) + " |")

    lines = [
        "# Results: multi-stage multi-modal pre-training for ASR (egs/lrs3)", "",
        f"Produced by `{a.command}` (the last stage writes this file from the recipe's own outputs).", "",
        "## LibriSpeech ASR with the audio encoder frozen (Jain et al. 2024, Table 1 in shape)", "",
        f"Cells: CER / WER (%) on {' ; '.join(a.sets)} ({a.method}). The encoder is frozen in every row: only the "
        f"CTC head (its transformer layers and output layer) is trained, {data} for the same updates. "
        "The paper's direction: pre-training < none, and pre-training + mid-training < pre-training alone. With "
        "character units (the mini corpus: no LM, a few hundred updates) compare the CER: the heads spell words as "
        "they sound and split or merge them, and the WER, which counts a word with one wrong letter as wrong, "
        "hardly tells the arms apart.", "",
        *table, "",
        f"Reference, not frozen: the same model trained from scratch with its encoder free: {scratch}.", "",
    ]
    if a.mid_langs:
        lines += ["## Mid-training: speech translation on MuST-C (tst-COMMON, sacrebleu 13a, beam search)", "",
                  *bleu, ""]
    mix = layer_mix_rows(a.exp, [(v, m) for v in pts for m in mids])
    if mix:
        lines += ["## Which encoder layers the frozen-encoder heads read (learnt layer mix, %)", "",
                  "Each head reads a softmax-weighted sum of the frozen encoder's normalised hidden states (SUPERB); "
                  "the weights start equal and are learnt with the head.", "", *mix, ""]
    pre = pretraining_rows(a.exp, a.pt_variants)
    if pre:
        lines += ["## What the audio-visual pre-training learned (held-out LRS3 clips)", "",
                  "Reconstruction losses are mean squared errors of normalised targets on masked positions (fixed "
                  "validation masks); retrieval: for each held-out clip, is its own video the nearest of all "
                  "held-out videos to its audio embedding.", "", *pre, ""]
    lines += stage_time_section(a.stage_times)
    a.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
