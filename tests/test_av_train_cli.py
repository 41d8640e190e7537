"""`train --pretrain av` end to end on tiny cuts with video (features + uint8 frames written with lhotse), then the
multi-stage fine-tuning paths: frozen-encoder CTC with a small decoder in the CTC head, ST from the AV encoder, and
ASR from the ST checkpoint (its encoder only)."""

import json
import subprocess
import sys

import pytest
import torch

from test_av_pretrain import synthetic_clips

LETTERS = "abcdef"


def write_av_corpus(d, n: int = 8, video: bool = True):
    """Cuts of 1.28 s: synthetic fbank (lilcom), video frames (uint8 (T, 16, 16) at 25 fps, numpy files) when
    ``video``, a transcript of a few letters and its "English" translation; character tables for both."""
    from lhotse import CutSet, LilcomChunkyWriter, MonoCut, NumpyFilesWriter, SupervisionSegment
    from lhotse.features.base import Features

    from icefall_ext.data.tokenizer import CharTokenizer

    g = torch.Generator().manual_seed(7)
    feats, _, frames, _ = synthetic_clips(n, g)
    texts = ["".join(LETTERS[int(i)] for i in torch.randint(len(LETTERS), (4,), generator=g)) for _ in range(n)]
    cuts = []
    with LilcomChunkyWriter(d / "feats") as writer, NumpyFilesWriter(d / "video") as video_writer:
        for i in range(n):
            cid = f"clip{i}"
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0, duration=1.28, text=texts[i], language="en",
                                     custom={"translated_text": {"en": " ".join(texts[i].upper())}})
            cut = MonoCut(id=cid, start=0.0, duration=1.28, channel=0, supervisions=[sup])
            cut.features = Features(type="kaldi-native-fbank", num_frames=128, num_features=80, frame_shift=0.01,
                                    sampling_rate=16000, start=0, duration=1.28, storage_type=writer.name,
                                    storage_path=str(writer.storage_path),
                                    storage_key=writer.write(cid, feats[i].numpy()))
            if video:
                cut.custom = {"video_frames": video_writer.store_array(cid, frames[i].numpy(), frame_shift=0.04,
                                                                       temporal_dim=0)}
            cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(d / "cuts.jsonl.gz")
    CharTokenizer(["<blk>"] + list(LETTERS)).save(d / "lang")
    CharTokenizer.build(" ".join(t.upper()) for t in texts).save(d / "lang_tgt")
    return d / "cuts.jsonl.gz"


def train(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.train", *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def encoder_state(state):
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_dataset_collates_video_only_when_the_cuts_have_it(tmp_path):
    from lhotse import CutSet

    from icefall_ext.data.dataset import AsrDataset

    (tmp_path / "av").mkdir()
    (tmp_path / "audio").mkdir()
    cuts = CutSet.from_file(write_av_corpus(tmp_path / "av", n=3)).to_eager()
    short = cuts["clip1"].truncate(duration=1.0)  # 25 video frames
    batch = AsrDataset()[CutSet.from_cuts([cuts["clip0"], short])]
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (2, 32, 16, 16)
    assert batch["video_lens"].tolist() == [32, 25] and batch["video_lens"].dtype == torch.int64
    assert torch.equal(batch["video"][0], torch.from_numpy(cuts["clip0"].load_custom("video_frames")))
    assert (batch["video"][1, 25:] == 0).all()
    assert "video" not in AsrDataset(video=False)[CutSet.from_cuts([cuts["clip0"]])]  # audio-only use
    plain = CutSet.from_file(write_av_corpus(tmp_path / "audio", n=2, video=False)).to_eager()
    assert not {"video", "video_lens"} & set(AsrDataset()[plain])
    with pytest.raises(ValueError, match="video_frames"):
        AsrDataset()[CutSet.from_cuts([cuts["clip0"], plain["clip1"]])]


def test_av_pretraining_then_frozen_ctc_st_and_asr_from_st(tmp_path):
    """`--pretrain av` trains and validates (MAE, CLR, retrieval over the set); `--init-from` it with a frozen
    encoder and one Transformer layer in the CTC head trains the head only (encoder bit-identical to the AV
    checkpoint's); `--task st --init-from` it builds an ST model with its encoder; ASR `--init-from` that ST
    checkpoint gets an AsrModel with the ST encoder and nothing else. Cuts without video are refused in one line."""
    from conftest import THREADS
    from icefall_ext.models.asr_model import AsrModel
    from icefall_ext.models.st_model import SpeechTranslationModel
    from icefall_ext.train.checkpoint import epoch_checkpoints, load_averaged_model, load_checkpoint

    cuts = write_av_corpus(tmp_path)
    common = ["--train-cuts", cuts, "--valid-cuts", cuts, "--preset", "conformer-tiny", "--max-duration", "4",
              "--num-epochs", "0", "--threads", THREADS, "--spec-augment", "false", "--log-every-n", "1"]
    pre = tmp_path / "av"
    r = train("--exp-dir", pre, "--pretrain", "av", "--max-updates", "4", "--valid-every-n", "2", *common)
    assert "AV pre-training: mae+clr; video ViT on 16x16 frames" in r.stderr and "mae_video" in r.stderr
    valid = [json.loads(line) for line in (pre / "valid.jsonl").read_text().splitlines()]
    assert len(valid) == 2 and {"mae_audio_loss", "mae_video_loss", "clr_loss", "a2v_top1"} <= set(valid[-1])
    assert valid[-1]["retrieval_clips"] == 8 and valid[-1]["retrieval_chance"] == 1 / 8
    assert valid[0]["audio_masked_fraction"] == pytest.approx(0.6, abs=0.05)
    assert "retrieval over 8 clips" in r.stderr
    config = json.loads((pre / "model_config.json").read_text())
    assert config["pretrain"] == "av" and config["av"]["video"]["frame_size"] == [16, 16]
    av_encoder = encoder_state(load_checkpoint(epoch_checkpoints(pre)[-1][1])["model"])

    ft = tmp_path / "ctc"
    train("--exp-dir", ft, "--init-from", pre, "--lang-dir", tmp_path / "lang", "--heads", "ctc",
          "--freeze-encoder", "true", "--model-overrides", '{"ctc_head_layers": 1}', "--max-updates", "3",
          "--save-every-n", "1", "--keep-last-k", "5", "--lr", "3e-3", "--warmup-updates", "1", *common)
    config = json.loads((ft / "model_config.json").read_text())
    assert config["ctc_head_layers"] == 1 and "av" not in config and "pretrain" not in config
    first, last = (load_checkpoint(ft / f"checkpoint-{u}.pt")["model"] for u in (1, 3))
    assert_same(encoder_state(first), av_encoder)
    assert_same(encoder_state(last), av_encoder)
    assert any(k.startswith("ctc.layers.0.") for k in last)
    assert all(not k.startswith(("video_encoder.", "mae_decoder.", "clr_")) for k in last)
    assert any(not torch.equal(first[k], last[k]) for k in last if k.startswith("ctc.layers."))
    assert any(not torch.equal(first[k], last[k]) for k in last if k.startswith("ctc.output."))
    model, _, _ = load_averaged_model(ft)
    assert isinstance(model, AsrModel) and len(model.ctc.layers) == 1

    st = tmp_path / "st"
    r = train("--exp-dir", st, "--task", "st", "--init-from", pre, "--lang-dir", tmp_path / "lang_tgt", "--lr", "0",
              "--max-updates", "1", "--target-ctc-scale", "0.5", *common)
    model, st_config, _ = load_averaged_model(st)
    assert isinstance(model, SpeechTranslationModel) and st_config["task"] == "st"
    assert st_config["st"]["target_ctc"] and model.target_ctc is not None and "target_ctc" in r.stderr
    assert_same(encoder_state(model.state_dict()), av_encoder)

    asr = tmp_path / "asr_from_st"
    train("--exp-dir", asr, "--init-from", st, "--lang-dir", tmp_path / "lang", "--heads", "ctc", "--lr", "0",
          "--max-updates", "1", *common)
    model, config, _ = load_averaged_model(asr)
    assert isinstance(model, AsrModel) and "task" not in config and "st" not in config
    assert config["use_ctc"] and not config["use_transducer"] and model.ctc.layers is None
    st_state = load_checkpoint(epoch_checkpoints(st)[-1][1])["model"]
    assert_same(encoder_state(model.state_dict()), encoder_state(st_state))
    log = next((asr / "log").glob("log-train-*")).read_text()
    copied = int(log.split("initialised ")[1].split(" tensors")[0])
    assert copied == len(encoder_state(st_state))  # the encoder and nothing else

    (tmp_path / "plain").mkdir()
    plain = write_av_corpus(tmp_path / "plain", n=2, video=False)
    r = train("--exp-dir", tmp_path / "bad", "--pretrain", "av", "--train-cuts", plain, "--max-updates", "1",
              "--preset", "conformer-tiny", check=False)
    assert r.returncode != 0 and "has no custom['video_frames']" in r.stderr.strip().splitlines()[-1]
