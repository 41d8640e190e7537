"""Shortened end-to-end smoke of egs/commonvoice_voxpopuli/run.sh on a tiny mini corpus: every stage runs, the
outputs each later stage needs exist, RESULTS.md is written from them, no row of it passes a model that did not
learn for a result, final (c) is a real fine-tune of (b), and a rerun skips every finished stage."""

import json
import re
import subprocess

import pytest
import torch
from lhotse import CutSet

from conftest import THREADS, assert_stages, run_recipe

SMOKE = [
    "--mini", "true", "--mini-scale", "0.03", "--preset", "conformer-tiny", "--max-duration", "40",
    "--base-updates", "24", "--ft-updates", "4", "--ipl-updates", "10", "--cache-size", "2", "--lm-alphas", "0,1", "--lm-betas", "0",
    "--lambda-unlabelled", "2", "--crop-updates", "3", "--final-updates", "8", "--scratch-updates", "8",
    "--spec-aug-delay", "4", "--cv-ft-updates", "4", "--ls-updates", "8", "--valid-every", "8", "--pl-shards", "2",
    "--threads", THREADS, "--languages", "en de el", "--unlabelled-languages", "de el", "--fig6-valid-every", "5",
]
MODEL_ROWS = ("Base:", "Control:", "Final (a)", "Final (b)", "Final (c)", "Per-language slimIPL")


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


def test_every_results_row_learned_or_is_marked(recipe_run):
    """A CER row is either a model that learned (every cell below 80%) or the not-converged marker (the whole
    row, or the cell of one language's own model)."""
    work, _, _ = recipe_run
    results = (work / "RESULTS.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| ") and line[2:].startswith(MODEL_ROWS)]
    assert len(rows) == 2 * len(MODEL_ROWS)  # test and dev tables
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        if "did not converge" in cells[0]:  # the whole model
            continue
        # a row of one model per language marks each model that did not learn in its own cell
        values = [float(c) for c in cells if re.fullmatch(r"[0-9.]+", c)]
        assert all(v < 80.0 for v in values), row
        assert values or any("did not converge" in c for c in cells), row
    assert "## Fig. 6" in results and "slimIPL, cropping throughout" in results
    assert "## Wall time of each stage" in results
    times = [line.split("\t") for line in (work / "stage_times.tsv").read_text().splitlines()]
    assert [int(n) for n, _, _ in times] == list(range(11))  # stage 10 (the report) ends after writing it


def test_final_c_is_a_fine_tune_of_b(recipe_run, monkeypatch):
    """(c) starts from (b) and trains further: other parameters, other posteriors on the same utterances."""
    from icefall_ext.data.dataset import iterate_batches
    from icefall_ext.train.checkpoint import load_averaged_model

    work, _, _ = recipe_run
    monkeypatch.chdir(work)  # feature paths in the manifests are relative to the work dir
    b, _, _ = load_averaged_model(work / "exp/final-scratch")
    c, _, _ = load_averaged_model(work / "exp/final-scratch-ft")
    cfg_c = json.loads((work / "exp/final-scratch-ft/train_config.json").read_text())
    assert re.search(r"exp/final-scratch/epoch-[0-9]+\.pt$", cfg_c["init_from"]), cfg_c["init_from"]
    pb, pc = dict(b.named_parameters()), dict(c.named_parameters())
    assert pb.keys() == pc.keys()
    changed = [n for n in pb if not torch.equal(pb[n], pc[n])]
    assert len(changed) > len(pb) // 2
    batch = next(iter(iterate_batches(CutSet.from_file(work / "data/fbank/cv_cuts_dev.jsonl.gz"), 20)))
    with torch.no_grad():
        lp = [m.ctc_log_probs(m.forward_encoder(batch["features"], batch["feature_lens"])[0]) for m in (b, c)]
    assert (lp[0] - lp[1]).abs().max() > 1e-2


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "9"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(10), skipped=True)
