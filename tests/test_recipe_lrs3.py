"""Shortened end-to-end run of egs/lrs3/run.sh on tiny mini corpora: every stage runs (mini LRS3 video + MuST-C +
LibriSpeech synthesis, LRS3 preparation with ffmpeg video frames, MuST-C through lhotse, features with video
attached, BPE tables, audio-visual pre-training (MAE, MAE + CLR), translation mid-training, frozen-encoder ASR
fine-tuning from every encoder, decoding, RESULTS.md), a rerun skips every finished stage, and each frozen-encoder
run left its encoder bit-identical to the encoder it started from."""

import json
import re
import subprocess

import pytest
import torch

from conftest import THREADS, assert_stages, run_recipe

SMOKE = ["--mini", "true", "--mini-scale", "0.1", "--preset", "conformer-tiny", "--video-size", "16",
         "--pt-updates", "6", "--pt-decoder", "1 32 2", "--mid-updates", "6", "--mid-head-first", "2",
         "--ft-updates", "6", "--ft-hours", "0.02", "--valid-every", "4",
         "--vocab-size", "60", "--mid-vocab-size", "60", "--max-duration", "30", "--layer-mix", "true",
         "--threads", THREADS]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("lrs3")
    cmd, r = run_recipe("lrs3", work, *SMOKE)
    return work, cmd, r


def encoder_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def test_all_stages_run(recipe_run, monkeypatch):
    work, _, r = recipe_run
    assert_stages(r, range(9))
    from lhotse import load_manifest

    monkeypatch.chdir(work)  # feature and video paths are relative to the work dir
    cut = next(iter(load_manifest(work / "data/fbank/lrs3_cuts_test.jsonl.gz")))
    frames = cut.load_custom("video_frames")
    assert frames.dtype.name == "uint8" and frames.shape[1:] == (16, 16)
    assert abs(frames.shape[0] - cut.duration * 25) <= 1  # 25 fps, aligned with the audio
    for v in ("mae", "mae+clr"):
        config = json.loads((work / f"exp/pt-{v}/model_config.json").read_text())
        assert config["pretrain"] == "av" and config["av"]["mode"] == v
        av = config["av"]
        assert (av["decoder_layers"], av["decoder_dim"], av["decoder_heads"]) == (1, 32, 2)  # --pt-decoder
        assert av["video"]["pixel_norm"] == "clip"  # --video-norm's default
        assert av["clr_head"] == "batchnorm"  # train's default
    mid = json.loads((work / "exp/mid-mae-it/model_config.json").read_text())
    # translation only: the auxiliary CTC is on the translation's tokens, never on the English transcript
    assert mid["task"] == "st" and not mid["st"]["source_ctc"] and mid["st"]["target_ctc"]
    asr = json.loads((work / "exp/asr-mae-none/model_config.json").read_text())
    chars = (work / "data/lang_char/tokens.txt").read_text().splitlines()
    assert asr["vocab_size"] == len(chars) and not (work / "data/lang_char/bpe.model").exists()  # mini: characters
    assert asr["layer_mix"] is True and asr["ctc_head_layers"] == 2  # --layer-mix true, --head-layers' default
    # --ft-hours: every stage-6 arm trains on the same seeded 0.02 h (72 s) of the LibriSpeech cuts
    for arm in ("asr-none-none", "asr-mae-it", "asr-scratch"):
        assert json.loads((work / f"exp/{arm}/train_config.json").read_text())["train_hours"] == 0.02
    picked = re.findall(r"limited supervision: (\d+) of the training cuts \(([\d.]+) h", r.stdout + r.stderr)
    assert len(picked) == 7 and len(set(picked)) == 1, picked  # {none, mae, mae+clr} x {none, it} + scratch
    assert 0.02 <= float(picked[0][1]) < 0.03, picked
    results = (work / "RESULTS.md").read_text()
    assert "seeded random 0.02 h of labelled LibriSpeech" in results
    for text in ("| pre-training | no mid-training | mid-trained en->it |", "| MAE + CLR |", "en->it BLEU",
                 "audio->video retrieval", "Wall time"):
        assert text in results, text
    mix = [line for line in results.split("learnt layer mix")[1].splitlines() if line.startswith("| MAE + CLR |")]
    assert len(mix) == 2  # no mid-training, mid-trained en->it
    for row in mix:
        assert 97 <= sum(int(c) for c in row.strip("|").split("|")[2:]) <= 103  # percentages, rounded


@pytest.mark.parametrize("pt,mid", [("mae", "none"), ("mae+clr", "none"), ("mae", "it"), ("none", "it")])
def test_frozen_encoder_is_bit_identical_to_its_source(recipe_run, pt, mid):
    work = recipe_run[0]
    source = work / "exp" / (f"pt-{pt}" if mid == "none" else f"mid-{pt}-{mid}")
    asr = work / "exp" / f"asr-{pt}-{mid}"
    before = encoder_state(max(source.glob("epoch-*.pt")))
    after = encoder_state(max(asr.glob("epoch-*.pt")))
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((asr / "train_config.json").read_text())
    assert config["freeze_encoder"] and config["trainable_parameters"] < config["parameters"]
    mix = torch.load(max(asr.glob("epoch-*.pt")), map_location="cpu", weights_only=False)["model"]["layer_mix.weights"]
    assert mix.abs().max() > 0  # the mix outside the frozen encoder was trained (it starts at zero)


def test_mid_training_trains_its_decoder_first_on_the_frozen_pretrained_encoder(recipe_run):
    """From a pre-trained encoder, mid-training's first --mid-head-first updates leave the encoder bit-identical to
    the pre-trained one (in exp/mid-*/head), the rest train it; the budget is --mid-updates in all. From scratch
    (none) there is no such phase."""
    from icefall_ext.train.checkpoint import epoch_checkpoints

    exp = recipe_run[0] / "exp"
    last = lambda d: torch.load(epoch_checkpoints(d)[-1][1], map_location="cpu", weights_only=False)  # noqa: E731
    pretrained = encoder_state(epoch_checkpoints(exp / "pt-mae")[-1][1])
    head, final = last(exp / "mid-mae-it" / "head"), last(exp / "mid-mae-it")
    head_encoder = {k: v for k, v in head["model"].items() if k.startswith("encoder.")}
    assert head_encoder.keys() == pretrained.keys() and pretrained
    assert all(torch.equal(head_encoder[k], pretrained[k]) for k in pretrained)
    assert any(not torch.equal(head_encoder[k], final["model"][k]) for k in pretrained)
    assert head["update"] == 2 and final["update"] == 4
    assert last(exp / "mid-none-it")["update"] == 6 and not (exp / "mid-none-it" / "head").exists()


def test_rerun_skips_finished_stages(recipe_run):
    work, cmd, _ = recipe_run
    r = subprocess.run(cmd + ["--stop-stage", "7"], capture_output=True, text=True, timeout=300)
    assert_stages(r, range(8), skipped=True)
