"""Shortened end-to-end smoke of egs/commonvoice_voxpopuli/run.sh on a tiny mini corpus: every stage runs, the
outputs each later stage needs exist, RESULTS.md is written from them, and a rerun skips every finished stage."""

import json
import subprocess

import pytest

from conftest import THREADS, assert_stages, run_recipe

SMOKE = [
    "--mini", "true", "--mini-scale", "0.03", "--preset", "conformer-tiny", "--max-duration", "40",
    "--base-updates", "24", "--ft-updates", "4", "--ipl-updates", "10", "--cache-size", "2", "--lm-alphas", "0,1", "--lm-betas", "0",
    "--lambda-unlabelled", "2", "--crop-updates", "3", "--final-updates", "8", "--scratch-updates", "8",
    "--spec-aug-delay", "4", "--cv-ft-updates", "4", "--ls-updates", "8", "--valid-every", "8", "--pl-shards", "2",
    "--threads", THREADS, "--languages", "en de el", "--unlabelled-languages", "de el",
]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cvvp")
    cmd, r = run_recipe("commonvoice_voxpopuli", work, *SMOKE)
    return work, cmd, r


def test_all_stages_run(recipe_run):
    work, _, r = recipe_run
    assert_stages(r, range(11))
    for path in ["data/lang_char/tokens.txt", "data/lang_char/languages.txt", "data/lm/4gram.arpa",
                 "exp/base/epoch-1.pt", "data/pl/de/pl_cuts.jsonl.gz", "data/pl/el/pl_quality.json",
                 "data/pl-pooled/pl_quality.json", "exp/final-scratch-ft/decode/summary-test-ctc-greedy.json",
                 "exp/ls-transfer/lm_tuning.json", "exp/final-continue/onnx/tokens.txt", "RESULTS.md"]:
        assert (work / path).exists(), path
    assert (work / "data/lang_char/languages.txt").read_text().split() == ["de", "el", "en"]
    summary = json.loads((work / "exp/base/decode/summary-test-ctc-greedy.json").read_text())
    assert set(summary["per_language_cer"]) == {"de", "el", "en"}
    results = (work / "RESULTS.md").read_text()
    assert "Base: CTC + LID" in results and "pooled slimIPL control" in results and "sherpa-onnx" in results


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "9"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(10), skipped=True)
