"""Shortened end-to-end run of egs/covost2/run.sh on a tiny mini CoVoST 2: every stage runs (synthesis, our
CoVoST preparation, features, source characters + target BPE, ST alone and joint ST + MT, beam-search decoding with
BLEU, RESULTS.md), a rerun skips every finished stage, and a tiny ST model overfits a few of its utterances to their
exact translations."""

import json
import subprocess
import sys

import pytest

from conftest import THREADS, assert_stages, run_recipe

LANGS = ["fr", "de", "nl"]
SMOKE = [
    "--mini", "true", "--mini-scale", "0.1", "--preset", "conformer-tiny", "--languages", " ".join(LANGS),
    "--updates", "8", "--asr-updates", "6", "--pt-updates", "6", "--valid-every", "4", "--vocab-size", "120", "--max-duration", "40", "--threads", THREADS,
]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("covost2")
    cmd, r = run_recipe("covost2", work, *SMOKE)
    return work, cmd, r


def test_all_stages_run(recipe_run):
    work, _, r = recipe_run
    assert_stages(r, range(11))
    for path in ["data/lang_char/tokens.txt", "data/lang_bpe_120/bpe.model", "data/fbank/covost2_cuts_test.jsonl.gz",
                 "exp/st/decode/summary-test-st-beam.json", "exp/st-mt/decode/recogs-dev-st-beam.txt", "RESULTS.md"]:
        assert (work / path).exists(), path
    st = json.loads((work / "exp/st/model_config.json").read_text())
    joint = json.loads((work / "exp/st-mt/model_config.json").read_text())
    assert st["task"] == "st" and st["st"]["source_ctc"] and not st["st"]["text_input"]
    assert joint["st"]["text_input"]
    for arm in ("st", "st-mt"):  # both arms start from the ASR-pretrained encoder
        assert json.loads((work / f"exp/{arm}/train_config.json").read_text())["init_from"].endswith(".pt")
    log = next((work / "exp/st-mt/log").glob("log-train-*")).read_text()
    assert "joint MT:" in log and "from --mt-text" in log
    summary = json.loads((work / "exp/st/decode/summary-test-st-beam.json").read_text())
    assert set(summary["per_language_bleu"]) == set(LANGS) and 0.0 <= summary["bleu"] <= 100.0
    for v in ("speech", "text", "ctc"):  # three pre-training variants, each fine-tuned for ST, each probed zero-shot
        pt = json.loads((work / f"exp/pt-{v}/model_config.json").read_text())
        assert pt["pretrain"] == "mslam" and pt["mslam"]["use_ctc"] == (v == "ctc")
        assert (pt["mslam"]["text_scale"] > 0) == (v != "speech")
        if v != "speech":  # mini: the text loss scores every character (--pt-text-loss all)
            assert pt["mslam"]["text_loss"] == "all"
        # mini --pt-joint: only the mSLAM-CTC encoder is also fine-tuned jointly with MT
        assert (work / f"exp/st-mt-pt-{v}/decode/summary-test-st-beam.json").is_file() == (v == "ctc")
        zero = json.loads((work / f"exp/st-pt-{v}/decode/summary-test-st-beam-text.json").read_text())
        assert zero["input"] == "text" and 0.0 <= zero["bleu"] <= 100.0
    results = (work / "RESULTS.md").read_text()
    for text in ("identity (transcript as translation)", "| high | mid | low | all |", "Wall time",
                 "speech + text + paired CTC (mSLAM-CTC)", "zero-shot",
                 "speech + text + paired CTC (mSLAM-CTC): speech 1, text 0.3 on all characters"):
        assert text in results, text


def test_every_bleu_row_learned_or_is_marked(recipe_run):
    """An ST arm's row is either the not-converged marker or BLEU from a model that is not collapsed and beats
    the identity baseline's chance overlap (at smoke scale the arms cannot learn: the marker is expected)."""
    work, _, _ = recipe_run
    lines = (work / "RESULTS.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(("| ST alone", "| joint ST + MT"))]
    assert len(rows) == 4  # two arms, test and dev tables
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        if "did not converge" in cells[0]:
            continue
        arm = "st" if row.startswith("| ST alone") else "st-mt"
        split = "test" if row in lines[: lines.index("## BLEU on dev")] else "dev"
        summary = json.loads((work / f"exp/{arm}/decode/summary-{split}-st-beam.json").read_text())
        assert summary["collapsed"] is None and summary["bleu"] >= 1.0, row


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "9"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(10), skipped=True)


def test_a_tiny_st_model_overfits_a_few_utterances(recipe_run, tmp_path):
    """Trained on 4 utterances only (no label smoothing, which would cap each token's probability at 0.9 and make
    shorter sentences score better), the model reproduces their reference translations exactly, greedy and beam."""
    from lhotse import CutSet, load_manifest

    work = recipe_run[0]
    cuts = load_manifest(work / "data/fbank/covost2-fr_cuts_train.jsonl.gz").subset(first=4)
    few = tmp_path / "few.jsonl.gz"
    CutSet.from_cuts(list(cuts)).to_file(few)
    exp = tmp_path / "st"
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", "--task", "st", "--exp-dir", str(exp),
                        "--preset", "conformer-tiny", "--lang-dir", str(work / "data/lang_bpe_120"),
                        "--train-cuts", str(few), "--valid-cuts", str(few), "--max-updates", "400",
                        "--num-epochs", "0", "--lr", "3e-3", "--warmup-updates", "10", "--scheduler", "constant",
                        "--spec-augment", "false", "--max-duration", "100", "--valid-every-n", "400",
                        "--model-overrides", '{"decoder_dropout": 0.0, "label_smoothing": 0.0}', "--threads", THREADS],
                       capture_output=True, text=True, timeout=900, cwd=work)  # feature paths are relative to it
    assert r.returncode == 0, r.stderr[-3000:]
    for method in ("st-greedy", "st-beam"):
        d = subprocess.run([sys.executable, "-m", "icefall_ext.bin.decode", "--exp-dir", str(exp), "--avg", "1",
                            "--lang-dir", str(work / "data/lang_bpe_120"), "--cuts", f"few={few}", "--method", method,
                            "--threads", THREADS], capture_output=True, text=True, timeout=300, cwd=work)
        assert d.returncode == 0, d.stderr[-3000:]
        summary = json.loads((exp / "decode" / f"summary-few-{method}.json").read_text())
        assert summary["bleu"] == pytest.approx(100.0), (method, (exp / "decode" / f"recogs-few-{method}.txt").read_text())
