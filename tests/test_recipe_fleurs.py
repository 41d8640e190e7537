"""Shortened end-to-end run of egs/fleurs/run.sh on a tiny mini FLEURS: every stage runs, lhotse's prepare_fleurs
reads the synthesised layout, BEST-RQ pre-trains (16 and 1 codebooks), CTC and language-ID models are fine-tuned
from the pre-trained encoder and from scratch, the CTC model is decoded by sherpa-onnx, RESULTS.md is written from
the outputs, and a rerun skips every finished stage. The USM methods on top: adapters on the frozen encoder (encoder
weights untouched), head-only and full continued training, local attention, a noisy-student generation, and the
long-form set decoded whole (full / chunk-wise / local attention) and crop-and-stitch."""

import json
import subprocess

import pytest

from conftest import THREADS, assert_stages, run_recipe

LANGS = ["en_us", "de_de", "fi_fi"]
SMOKE = [
    "--mini", "true", "--mini-scale", "0.05", "--preset", "conformer-tiny", "--max-duration", "40",
    "--languages", " ".join(LANGS), "--pretrain-updates", "12", "--ctc-updates", "8", "--lid-updates", "6",
    "--valid-every", "6", "--num-codes", "64", "--ft-updates", "4", "--ns-updates", "4", "--ns-teacher-updates", "5",
    "--head-first-updates", "3", "--threads", THREADS,
]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleurs")
    cmd, r = run_recipe("fleurs", work, *SMOKE)
    return work, cmd, r


def test_all_stages_run(recipe_run):
    work, _, r = recipe_run
    assert_stages(r, range(13))
    for path in ["data/lang_char/tokens.txt", "data/fbank/fleurs_cuts_test.jsonl.gz", "data/fbank/pool_cuts_fi_fi.jsonl.gz",
                 "exp/bestrq-16/epoch-1.pt", "exp/bestrq-1/valid.jsonl", "exp/ctc-scratch/decode/summary-test-ctc-greedy.json",
                 "exp/lid-bestrq-16/lid/confusion-test.png", "exp/ctc-bestrq-16/onnx/tokens.txt", "RESULTS.md"]:
        assert (work / path).exists(), path
    assert (work / "data/lang_char/languages.txt").read_text().split() == sorted(LANGS)
    pretrain = json.loads((work / "exp/bestrq-16/model_config.json").read_text())
    assert pretrain["pretrain"] == "best_rq" and pretrain["best_rq"]["num_codebooks"] == 16
    ctc = json.loads((work / "exp/ctc-bestrq-16/model_config.json").read_text())
    assert "pretrain" not in ctc and ctc["use_ctc"]
    lid = json.loads((work / "exp/lid-scratch/model_config.json").read_text())
    assert not lid["use_ctc"] and not lid["use_transducer"] and lid["num_languages"] == len(LANGS)
    summary = json.loads((work / "exp/lid-bestrq-16/lid/summary-test-lid.json").read_text())
    assert summary["languages"] == sorted(LANGS) and summary["utterances"] > 0
    assert sum(map(sum, summary["confusion"])) == summary["utterances"]
    results = (work / "RESULTS.md").read_text()
    for section in ("from BEST-RQ, 16 codebooks", "from BEST-RQ, 1 codebook", "from scratch", "language ID",
                    "masked accuracy", "sherpa-onnx", "Wall time", "residual adapters, frozen encoder",
                    "student, generation 1", "chunk-wise attention (8 s chunks), whole recording", "crop-and-stitch"):
        assert section in results, section


def test_head_first_fine_tuning(recipe_run):
    """From BEST-RQ the CTC and LID runs first train their new output layer alone on the frozen encoder (the encoder
    leaves that phase bit-identical to the pre-trained one), then all weights; the budget is the same as from scratch."""
    import torch

    from icefall_ext.train.checkpoint import epoch_checkpoints

    exp = recipe_run[0] / "exp"
    last = lambda d: torch.load(epoch_checkpoints(d)[-1][1], weights_only=True)  # noqa: E731
    pretrained = last(exp / "bestrq-16")["model"]
    for run in ("ctc-bestrq-16", "lid-bestrq-16"):
        head, final = last(exp / run / "head"), last(exp / run)
        encoder = [k for k in head["model"] if k.startswith("encoder.")]
        assert encoder and all(torch.equal(head["model"][k], pretrained[k]) for k in encoder), run
        assert any(not torch.equal(head["model"][k], final["model"][k]) for k in encoder), run
        assert head["update"] + final["update"] == (6 if run.startswith("lid") else 8), run
    scratch = last(exp / "ctc-scratch")
    assert scratch["update"] == 8 and not (exp / "ctc-scratch" / "head").exists()


def test_usm_methods_stages(recipe_run):
    """Adapters train on a frozen encoder (its weights equal the starting CTC model's), the head-only arm trains
    the output layer alone, the long-form set is decoded four ways with error types, and the noisy student learns
    from filtered pseudo-labels of the pool."""
    import torch

    from icefall_ext.train.checkpoint import epoch_checkpoints

    work, _, _ = recipe_run
    exp = work / "exp"
    last = lambda name: torch.load(epoch_checkpoints(exp / name)[-1][1], weights_only=True)["model"]  # noqa: E731
    start, adapted = last("ctc-bestrq-16"), last("ft-adapters")
    encoder = [k for k in start if k.startswith("encoder.")]
    assert encoder and all(torch.equal(start[k], adapted[k]) for k in encoder)
    assert any(k.startswith("adapters.") for k in adapted)
    assert not torch.equal(start["ctc.output.weight"], adapted["ctc.output.weight"])
    full = last("ft-full")
    assert any(not torch.equal(start[k], full[k]) for k in encoder)
    configs = {n: json.loads((exp / n / "train_config.json").read_text()) for n in ("ft-full", "ft-adapters", "ft-head")}
    assert (configs["ft-head"]["trainable_parameters"] < configs["ft-adapters"]["trainable_parameters"]
            < 0.2 * configs["ft-full"]["trainable_parameters"])
    local = json.loads((exp / "ft-local/model_config.json").read_text())
    assert local["encoder_kwargs"]["attention"] == "local"
    for tag in ("long-full", "long-chunk", "long-crop"):
        summary = json.loads((exp / f"ft-full/decode/summary-en_us-ctc-greedy-{tag}.json").read_text())
        assert set(summary["wer_counts"]) >= {"ins", "del", "sub", "ref_len"} and summary["wer_counts"]["ref_len"] > 100
    assert (exp / "ft-local/decode/summary-en_us-ctc-greedy-long-local.json").is_file()
    report = json.loads((work / "data/pl/ns-1/filter_report.json").read_text())
    assert report["counts"]["total"] > 0 and "per_language" in report  # a smoke-scale teacher may emit only blanks
    quality = json.loads((work / "data/pl/ns-1/pl_quality.json").read_text())
    assert quality["num_utts"] == report["counts"]["total"] and "kept" in quality
    # generation 0's teacher is the adapter model trained the students' way on labelled audio; the student
    # continues from it, every weight trained; the control is the same run without the pseudo-labels
    teacher, student, control = (json.loads((exp / n / "train_config.json").read_text())
                                 for n in ("ns-0", "ns-1", "ns-labelled-only"))
    assert teacher["init_from"].startswith("exp/ft-adapters/") and teacher["spec_augment"] and not teacher["mix_cuts"]
    assert teacher["max_updates"] == 5  # --ns-teacher-updates, apart from the students' --ns-updates
    assert student["init_from"].startswith("exp/ns-0/") and student["max_updates"] == 4
    assert not student["freeze_encoder"] and student["trainable_parameters"] == student["parameters"]
    assert json.loads((exp / "ns-1/model_config.json").read_text())["adapters"]["languages"] == sorted(LANGS)
    assert student["spec_augment"] and student["mix_cuts"] == ["data/pl/ns-1/pl_cuts.jsonl.gz"]
    differ = {k for k in student if student[k] != control.get(k)}
    assert differ == {"exp_dir", "mix_cuts", "mix_ratio"} and control["mix_cuts"] == [], differ
    for run in ("ns-0", "ns-1", "ns-labelled-only"):
        assert (exp / run / "decode/summary-test-ctc-greedy.json").is_file()
    assert (exp / "ft-adapters/sherpa-decode").is_dir()
    # the teacher labelled by beam search with each language's word LM (from the mini's LM text), its weights tuned
    # on dev; the same search decodes the teacher's test set
    assert all((work / f"data/lm/{lang}.arpa").is_file() for lang in LANGS)
    tuning = json.loads((work / "data/pl/ns-1/lm_tuning.json").read_text())
    assert tuning["metric"] == "cer" and len(tuning["grid"]) == 9
    with_lm = json.loads((exp / "ns-0/decode/summary-test-ctc-beam-lm.json").read_text())
    assert with_lm["lm"].split() == [f"{lang}=data/lm/{lang}.arpa" for lang in LANGS]
    assert "beam search + word n-gram of the language" in (work / "RESULTS.md").read_text()


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "11"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(12), skipped=True)
