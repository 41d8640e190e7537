"""Shortened end-to-end run of egs/fleurs/run.sh on a tiny mini FLEURS: every stage runs, lhotse's prepare_fleurs
reads the synthesised layout, BEST-RQ pre-trains (16 and 1 codebooks), CTC and language-ID models are fine-tuned
from the pre-trained encoder and from scratch, the CTC model is decoded by sherpa-onnx, RESULTS.md is written from
the outputs, and a rerun skips every finished stage."""

import json
import subprocess

import pytest

from conftest import THREADS, assert_stages, run_recipe

LANGS = ["en_us", "de_de", "fi_fi"]
SMOKE = [
    "--mini", "true", "--mini-scale", "0.05", "--preset", "conformer-tiny", "--max-duration", "40",
    "--languages", " ".join(LANGS), "--pretrain-updates", "12", "--ctc-updates", "8", "--lid-updates", "6",
    "--valid-every", "6", "--num-codes", "64", "--threads", THREADS,
]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleurs")
    cmd, r = run_recipe("fleurs", work, *SMOKE)
    return work, cmd, r


def test_all_stages_run(recipe_run):
    work, _, r = recipe_run
    assert_stages(r, range(11))
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
                    "masked accuracy", "sherpa-onnx", "Wall time"):
        assert section in results, section


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "9"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(10), skipped=True)
