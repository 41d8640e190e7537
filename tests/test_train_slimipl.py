"""slimIPL inside the trainer: cache of cut ids + labels from the current model, cropping warm-up, exact resume."""

import subprocess

import pytest
import torch
from lhotse import CutSet

from icefall_ext.train.checkpoint import load_checkpoint
from test_train import last_epoch, train_cmd


def unlabelled_cuts(corpus, d):
    """The corpus with its transcripts removed, as ``d/unlab.jsonl.gz``."""
    cuts = CutSet.from_file(corpus["cuts"]).map_supervisions(lambda s: s.transform_text(lambda _: ""))
    cuts.modify_ids(lambda i: f"u-{i}").to_file(d / "unlab.jsonl.gz")
    return d / "unlab.jsonl.gz"


@pytest.fixture(scope="module")
def unlabelled(tiny_corpus, tmp_path_factory):
    return unlabelled_cuts(tiny_corpus, tmp_path_factory.mktemp("unlab"))


def slimipl_cmd(corpus, unlab, exp, updates):
    return train_cmd(corpus, exp, "--unlabelled-cuts", str(unlab), "--max-updates", str(updates),
                     "--slimipl-cache-size", "3", "--slimipl-lambda", "2", "--slimipl-crop-updates", "4",
                     "--slimipl-crop-seconds", "0.4", "--slimipl-supervised-updates", "2",
                     "--slimipl-replace-prob", "0.5", "--save-every-n", "6", "--lid-scale", "1.0",
                     "--max-duration", "3")


def test_slimipl_run_and_exact_resume(tiny_corpus, unlabelled, tmp_path):
    ref = tmp_path / "ref"
    r = subprocess.run(slimipl_cmd(tiny_corpus, unlabelled, ref, 18), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starts filling the cache" in r.stderr and "starts mixing" in r.stderr
    assert "ends the cropping warm-up" in r.stderr
    state = load_checkpoint(last_epoch(ref))
    # like any run, one epoch-N.pt per completed pass over the labelled data (so --avg works)
    completed = state["source"]["labelled"]["epoch"] - 1
    assert completed >= 1
    assert {int(p.stem.split("-")[1]) for p in ref.glob("epoch-*.pt")} >= set(range(1, completed + 1))
    src = state["source"]["slimipl"]
    entries = src["cache"]["entries"]
    assert len(entries) == 3
    for cut_ids, labels in entries:  # the cache holds cut ids and token labels, not feature tensors
        assert all(cid.startswith("u-") for cid in cut_ids) and len(labels) == len(cut_ids)
        assert all(isinstance(t, int) for lab in labels for t in lab)
    # schedule: 2 supervised updates, then groups of 3 (lambda = 2) with one labelled update each in a random slot;
    # the first 3 unlabelled slots fill the cache
    assert 2 + 16 // 3 <= src["labelled_batches"] <= 2 + 16 // 3 + 1
    assert src["unlabelled_batches"] == 3 + src["num_replacements"]

    res = tmp_path / "resumed"
    r = subprocess.run(slimipl_cmd(tiny_corpus, unlabelled, res, 12), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(slimipl_cmd(tiny_corpus, unlabelled, res, 18), capture_output=True, text=True)
    assert r.returncode == 0 and "resumed from" in r.stderr, r.stderr[-3000:]
    a = load_checkpoint(ref / "checkpoint-18.pt")
    b = load_checkpoint(res / "checkpoint-18.pt")
    assert a["source"]["slimipl"]["cache"]["entries"] == b["source"]["slimipl"]["cache"]["entries"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("heads", ["ctc", "transducer"])
def test_cropping_labels_long_utterances_from_crops(tiny_corpus, unlabelled, tmp_path, heads):
    """With cropping the labeller's encoder sees crops of --slimipl-crop-seconds only (CTC and transducer-only
    models alike) and the labels of utterances longer than a crop change; without it, whole utterances."""
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.trainer import TrainConfig, Trainer

    tok = load_tokenizer(tiny_corpus["lang_dir"])
    cfg = TrainConfig(exp_dir=str(tmp_path), lang_dir=str(tiny_corpus["lang_dir"]), train_cuts=[],
                      spec_augment=False, scheduler="constant", max_duration=100, slimipl_crop_seconds=0.4,
                      slimipl_cache_size=2)
    torch.manual_seed(0)
    mc = model_config_from_preset("conformer-tiny", vocab_size=tok.vocab_size, use_ctc=heads == "ctc",
                                  use_transducer=heads == "transducer")
    trainer = Trainer(cfg, build_model(mc), mc, tok, [])
    trainer.build_sources(CutSet.from_file(tiny_corpus["cuts"]), None, CutSet.from_file(unlabelled))
    source = trainer.source
    seen = []
    forward = trainer.model.forward_encoder
    trainer.model.forward_encoder = lambda x, x_lens: (seen.append(int(x.shape[1])), forward(x, x_lens))[1]
    ids = [c.id for c in CutSet.from_file(unlabelled)]
    longest = max(int(c.duration * 100) for c in CutSet.from_file(unlabelled))
    assert longest > 60, "the test needs utterances longer than a 0.4 s crop"
    whole = source.label(ids, crop=False)
    assert max(seen) >= longest - 1
    seen.clear()
    cropped = source.label(ids, crop=True)
    assert seen and max(seen) <= 40  # every encoder call saw at most one 0.4 s crop (40 frames)
    assert len(cropped) == len(whole) and cropped != whole


def test_dropout_changes_when_pseudo_labelling_starts(tiny_corpus, unlabelled, tmp_path):
    """--slimipl-dyn-dropout: the encoder's dropout is that value from the first pseudo-labelling update on."""
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.trainer import TrainConfig, Trainer

    tok = load_tokenizer(tiny_corpus["lang_dir"])
    cfg = TrainConfig(exp_dir=str(tmp_path), lang_dir=str(tiny_corpus["lang_dir"]), train_cuts=[],
                      spec_augment=False, max_duration=3, slimipl_cache_size=2, slimipl_supervised_updates=3,
                      slimipl_dyn_dropout=0.37)
    mc = model_config_from_preset("conformer-tiny", vocab_size=tok.vocab_size, encoder_kwargs={"dropout": 0.2})
    trainer = Trainer(cfg, build_model(mc), mc, tok, [])
    trainer.build_sources(CutSet.from_file(tiny_corpus["cuts"]), None, CutSet.from_file(unlabelled))
    rates = lambda: {m.p for m in trainer.model.encoder.modules() if isinstance(m, torch.nn.Dropout)}  # noqa
    for update in range(5):
        trainer.source.next(update)
        assert rates() == ({0.2} if update < 3 else {0.37}), update
