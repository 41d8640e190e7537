"""Shortened end-to-end smoke of egs/librispeech/run.sh on a tiny mini LibriSpeech (every stage, a rerun that
skips them all), and the transfer of a multilingual CTC model checked on tensors: the encoder is kept, the output
layer is rebuilt for the new token table with the rows of shared tokens copied, the LID head is dropped."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import THREADS, assert_stages, run_recipe
from icefall_ext.decode.results import NOT_CONVERGED

SMOKE = [
    "--mini", "true", "--mini-scale", "0.03", "--size", "mini", "--vocab-size", "60", "--max-duration", "40",
    "--max-updates", "8", "--warmup-updates", "2", "--save-every-n", "4", "--valid-every", "8", "--avg", "1",
    "--transfer-updates", "4", "--streaming-updates", "4", "--threads", THREADS,
]


def train_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "icefall_ext.bin.train", "--threads", THREADS, "--max-duration", "40", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def multilingual_exp(tiny_corpus, tmp_path_factory):
    """A tiny multilingual (en, de) CTC + LID model, as egs/commonvoice_voxpopuli stage 4 makes."""
    exp = tmp_path_factory.mktemp("multilingual") / "base"
    r = train_cli("--exp-dir", str(exp), "--lang-dir", str(tiny_corpus["lang_dir"]), "--train-cuts",
                  str(tiny_corpus["cuts"]), "--preset", "conformer-tiny", "--heads", "ctc", "--lid-scale", "1.0",
                  "--max-updates", "3", "--num-epochs", "0", "--spec-augment", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    return exp


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, multilingual_exp):
    work = tmp_path_factory.mktemp("librispeech")
    cmd, r = run_recipe("librispeech", work, *SMOKE,
           "--multilingual-exp", str(multilingual_exp))
    return work, cmd, r


def test_all_stages_run(recipe_run):
    work, _, r = recipe_run
    assert_stages(r, range(11))
    sets = ["dev-clean", "dev-other", "test-clean", "test-other"]
    for s in sets:
        for path in [f"exp/zipformer/decode/summary-{s}-{m}.json" for m in ("greedy", "modified-beam", "ctc-greedy")] + [
            f"exp/zipformer/sherpa-decode/summary-{s}-sherpa-transducer.json",
            *([f"exp/zipformer-streaming/decode/summary-{s}-streaming-greedy.json"] if "test" in s else []),
            *([f"exp/zipformer-streaming/sherpa-decode/summary-{s}-sherpa-streaming-transducer.json"] if "test" in s else []),
            f"exp/transfer-multilingual-train-clean-100/decode/summary-{s}-ctc-greedy.json",
            f"exp/transfer-scratch-train-clean-100/decode/summary-{s}-ctc-greedy.json",
        ]:
            assert (work / path).is_file(), path
    assert (work / "data/lang_bpe_60/tokens.txt").read_text().splitlines()[0] == "<blk> 0"
    config = json.loads((work / "exp/zipformer-streaming/model_config.json").read_text())
    assert config["encoder_kwargs"]["causal"] and config["encoder_kwargs"]["chunk_size"] == [16, 32, 64, -1]
    assert config["use_transducer"] and config["use_ctc"]
    results = (work / "RESULTS.md").read_text()
    for heading in ("## Offline model", "## Streaming model", "## PyTorch vs sherpa-onnx", "## Transfer"):
        assert heading in results, heading
    # no row of the transfer table is a collapsed model passed off as a result: a cell is a WER well below 100
    # or the report's marker (at this scale, 4 updates, the marker is what a working report must print)
    transfer = results.split("## Transfer", 1)[1]
    cells = [c.strip() for line in transfer.splitlines() if line.startswith("| train-clean-100")
             for c in line.strip("|").split("|")[1:]]
    assert len(cells) == 8
    assert all(c.startswith(NOT_CONVERGED) or float(c) < 95 for c in cells), cells
    # the scratch twin has the multilingual model's architecture, with the LibriSpeech output size
    ml = json.loads((work / "exp/transfer-multilingual-train-clean-100/model_config.json").read_text())
    scratch = json.loads((work / "exp/transfer-scratch-train-clean-100/model_config.json").read_text())
    assert ml == scratch and ml["encoder"] == "conformer" and ml["vocab_size"] == 60 and ml["num_languages"] == 0


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "9"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(10), skipped=True)


def test_missing_multilingual_model_is_a_clear_error(recipe_run, tmp_path):
    work, cmd, _ = recipe_run
    (work / "exp/.done.transfer").unlink()
    r = subprocess.run(cmd + ["--stage", "9", "--stop-stage", "9", "--multilingual-exp", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no multilingual model at" in r.stderr


def test_transfer_keeps_encoder_and_maps_output_rows(multilingual_exp, recipe_run, tmp_path):
    """The stage's own command with a zero learning rate: what it trains from is exactly the adapted model."""
    from icefall_ext.data.tokenizer import read_tokens_txt
    from icefall_ext.train.checkpoint import epoch_checkpoints, load_checkpoint

    work, _, _ = recipe_run
    lang = work / "data/lang_bpe_60"
    exp = tmp_path / "adapted"
    r = train_cli("--exp-dir", str(exp), "--lang-dir", str(lang), "--init-from", str(multilingual_exp),
                  "--train-cuts", str(work / "data/fbank/librispeech_cuts_train-clean-100.jsonl.gz"),
                  "--lr", "0", "--scheduler", "constant", "--warmup-updates", "1", "--max-updates", "1",
                  "--num-epochs", "0", "--spec-augment", "false", cwd=work)  # the manifests hold relative paths
    assert r.returncode == 0, r.stderr[-3000:]
    old = load_checkpoint(epoch_checkpoints(multilingual_exp)[-1][1])
    new = load_checkpoint(epoch_checkpoints(exp)[-1][1])
    old_params = dict(old["model"])
    encoder_keys = [k for k in old_params if k.startswith("encoder.") and old_params[k].is_floating_point()]
    assert encoder_keys
    for k in encoder_keys:
        if "running_" in k or "num_batches" in k:  # batch-norm statistics move in train mode even at lr 0
            continue
        torch.testing.assert_close(new["model"][k], old_params[k], rtol=0, atol=0, msg=k)
    assert not any(k.startswith("lid") for k in new["model"]), "the LID head is dropped (no languages)"
    old_tokens = old["tokens"]
    new_tokens = read_tokens_txt(lang / "tokens.txt")
    ctc_key = next(k for k in new["model"] if k.startswith("ctc") and k.endswith("weight"))
    w_old, w_new = old_params[ctc_key], new["model"][ctc_key]
    assert w_new.shape[0] == len(new_tokens) != w_old.shape[0]
    shared = [t for t in new_tokens if t in old_tokens]
    assert "<blk>" in shared and len(shared) >= 2
    for t in shared:
        torch.testing.assert_close(w_new[new_tokens.index(t)], w_old[old_tokens.index(t)], rtol=0, atol=0)
