"""The trainer's schedules against numbers written down from icefall's zipformer recipe formulas.

- Eden (optim.py): lr = base * ((b^2 + B^2) / B^2)^-0.25 * ((e^2 + E^2) / E^2)^-0.25 * warm-up, with the recipe's
  base 0.045, B = lr_batches = 7500, E = lr_epochs = 3.5, warm-up 500 batches from 0.5; e = epochs completed.
- simple/pruned loss scales (train.py compute_loss, warm_step 2000, simple_loss_scale 0.5):
  simple = 1 - (b / 2000) * (1 - 0.5), pruned = 0.1 + 0.9 * b / 2000, both constant (0.5, 1) from b = 2000.
- the Zipformer's batch count (train.py get_adjusted_batch_count): b * max_duration * world_size / 600.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import torch

from test_train import last_epoch, train_cmd

# (updates, epochs completed) -> lr, computed by hand from the formula above
EDEN_TABLE = [((0, 0), 0.0225), ((250, 0), 0.0337406315), ((7500, 3.5), 0.0318198052), ((30000, 10), 0.0127376033)]
# update -> (simple scale, pruned scale)
WARM_TABLE = [(0, (1.0, 0.1)), (1000, (0.75, 0.55)), (2000, (0.5, 1.0)), (3000, (0.5, 1.0))]


def test_eden_from_the_train_config_matches_the_known_values():
    from icefall_ext.train.schedule import make_scheduler
    from icefall_ext.train.trainer import TrainConfig

    cfg = TrainConfig(exp_dir="-", lang_dir="-", train_cuts=[], scheduler="eden", lr=0.045, warmup_updates=500,
                      eden_lr_batches=7500, eden_lr_epochs=3.5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(cfg.scheduler, opt, cfg.warmup_updates, cfg.max_updates, cfg.eden_lr_batches,
                           cfg.eden_lr_epochs, cfg.eden_warmup_start)
    for (updates, epochs), lr in EDEN_TABLE:
        sched.set_epoch(epochs)
        sched.eden.step_batch(updates)
        assert sched.get_last_lr()[0] == pytest.approx(lr, rel=1e-8), (updates, epochs)


def test_simple_and_pruned_scales_follow_warm_step(tiny_corpus, tmp_path):
    """compute_loss weights the transducer losses by icefall's warm-up, independent of the LR warm-up."""
    from icefall_ext.data.dataset import AsrDataset
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.trainer import TrainConfig, Trainer

    tok = load_tokenizer(tiny_corpus["lang_dir"])
    cfg = TrainConfig(exp_dir=str(tmp_path), lang_dir="-", train_cuts=[], warmup_updates=10, warm_step=2000,
                      simple_scale=0.5, pruned_scale=1.0, ctc_scale=0.0)
    mc = model_config_from_preset("conformer-tiny", vocab_size=tok.vocab_size, use_ctc=False, use_transducer=True)
    trainer = Trainer(cfg, build_model(mc), mc, tok, [])
    from lhotse import CutSet

    batch = AsrDataset(tok)[CutSet.from_file(tiny_corpus["cuts"])]
    trainer.model.eval()
    for update, (simple, pruned) in WARM_TABLE:
        trainer.update = update
        with torch.no_grad():
            loss, parts = trainer.compute_loss(batch, model=trainer.model)
        n = len(batch["cut_ids"])
        assert float(loss) == pytest.approx((simple * parts["simple"] + pruned * parts["pruned"]) * n, rel=1e-5)


def test_zipformer_batch_count_is_duration_adjusted(tmp_path):
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.trainer import TrainConfig, Trainer

    mc = model_config_from_preset("zipformer-tiny", vocab_size=10)
    cfg = TrainConfig(exp_dir=str(tmp_path), lang_dir="-", train_cuts=[], max_duration=1000, ref_duration=600)
    trainer = Trainer(cfg, build_model(mc), mc, SimpleNamespace(token_table=[]), [])
    for update, world_size, expected in [(0, 1, 0.0), (300, 1, 500.0), (300, 4, 2000.0), (6000, 4, 40000.0)]:
        trainer.update, trainer.world_size = update, world_size
        trainer._set_batch_count()
        assert float(trainer.model.encoder.batch_count) == pytest.approx(expected)


def test_eden_epoch_is_epochs_completed(tiny_corpus, tmp_path):
    """After a run, Eden's epoch is the number of epochs completed (icefall: step_epoch(epoch - 1))."""
    from icefall_ext.train.checkpoint import load_checkpoint

    exp = tmp_path / "exp"
    r = subprocess.run(train_cmd(tiny_corpus, exp, "--max-updates", "8", "--max-duration", "3", "--scheduler",
                                 "eden", "--lr", "0.045", "--eden-lr-batches", "7500", "--eden-lr-epochs", "3.5",
                                 "--warmup-updates", "500", "--spec-augment", "false"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    state = load_checkpoint(last_epoch(exp))
    in_progress = state["epoch"]
    assert in_progress >= 3, "the run should span several epochs"
    eden = state["scheduler"]["eden"]
    assert eden["epoch"] == in_progress - 1
    assert state["scheduler"]["updates"] == 8
