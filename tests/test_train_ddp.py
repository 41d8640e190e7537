"""DDP correctness of the trainer, on CPU with two gloo processes running its real ``train_step``.

- a bad batch on one rank (NaN feature) skips the update on every rank, and the ranks stay bit-identical;
- one update on 2 ranks with batches A and B equals one update on 1 process with A and B together;
- a non-finite gradient with a finite loss never reaches the weights;
- checkpoints carry each rank's own state, and validation scores the whole set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from conftest import THREADS


def make_trainer(corpus: dict, exp_dir: Path, rank: int = 0, world_size: int = 1, optimizer: str = "adamw",
                 sgd: bool = False):
    """A Trainer around a dropout-free tiny conformer (same initial weights on every rank). With ``sgd`` its
    optimiser is plain SGD, whose step is proportional to the gradient (Adam-like optimisers turn gradients that
    are zero up to rounding, such as an attention key bias's, into full-size steps of random sign)."""
    from icefall_ext.data.dataset import AsrDataset
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.trainer import TrainConfig, Trainer

    tok = load_tokenizer(corpus["lang_dir"])
    cfg = TrainConfig(exp_dir=str(exp_dir), lang_dir=str(corpus["lang_dir"]), train_cuts=[], spec_augment=False,
                      scheduler="constant", warmup_updates=1, lr=1e-3, optimizer=optimizer, grad_clip=0.0)
    torch.manual_seed(0)
    mc = model_config_from_preset("conformer-tiny", vocab_size=tok.vocab_size, encoder_kwargs={"dropout": 0.0})
    trainer = Trainer(cfg, build_model(mc), mc, tok, [], rank=rank, world_size=world_size)
    trainer.train_dataset = AsrDataset(tok)
    trainer.spec_augment = None
    if sgd:
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    return trainer


def batches(corpus: dict):
    """Two disjoint batches A (3 utterances) and B (3 utterances) and their union."""
    from lhotse import CutSet

    from icefall_ext.data.dataset import AsrDataset
    from icefall_ext.data.tokenizer import load_tokenizer

    cuts = list(CutSet.from_file(corpus["cuts"]))
    ds = AsrDataset(load_tokenizer(corpus["lang_dir"]))
    return ds[CutSet.from_cuts(cuts[:3])], ds[CutSet.from_cuts(cuts[3:])], ds[CutSet.from_cuts(cuts)]


def _worker(rank: int, world_size: int, init_file: str, corpus: dict, out_dir: str, scenario: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        trainer = make_trainer(corpus, Path(out_dir) / "exp", rank, world_size, sgd=scenario == "average")
        a, b, _ = batches(corpus)
        mine = a if rank == 0 else b
        results = []
        if scenario == "average":
            results.append(trainer.train_step(mine, None) is not None)
        elif scenario == "poison":
            for step in range(3):
                batch = mine
                if step == 1 and rank == 1:  # a NaN feature on one rank only
                    batch = dict(mine, features=mine["features"].clone())
                    batch["features"][0, 3, 2] = float("nan")
                results.append(trainer.train_step(batch, None) is not None)
                trainer.update += 1
        torch.save({"params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                    "taken": results, "nonfinite": trainer.num_nonfinite,
                    "lr": trainer.scheduler.get_last_lr()[0]},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def run_two_ranks(corpus: dict, scenario: str):
    with tempfile.TemporaryDirectory() as out:
        init_file = os.path.join(out, "init")
        mp.spawn(_worker, args=(2, init_file, corpus, out, scenario), nprocs=2, join=True)
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_average_gradients_like_one_process_on_the_union(tiny_corpus, tmp_path):
    ranks = run_two_ranks(tiny_corpus, "average")
    assert all(r["taken"] == [True] for r in ranks)
    single = make_trainer(tiny_corpus, tmp_path / "single", sgd=True)
    before = {k: v.clone() for k, v in single.model.state_dict().items()}
    _, _, union = batches(tiny_corpus)
    assert single.train_step(union, None) is not None
    moved = 0
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["params"][k], ranks[1]["params"][k], rtol=0, atol=0)  # DDP in sync
        step_ddp, step_single = ranks[0]["params"][k] - before[k], v - before[k]
        torch.testing.assert_close(step_ddp, step_single, rtol=1e-3, atol=1e-7, msg=k)
        moved += int(step_single.abs().max() > 1e-5)
    assert moved > 10  # the update did something: the comparison is not of two untouched models


def test_bad_batch_on_one_rank_is_skipped_by_every_rank(tiny_corpus):
    ranks = run_two_ranks(tiny_corpus, "poison")
    for r in ranks:
        assert r["taken"] == [True, False, True]  # update 1 skipped on rank 0 too, although its batch was fine
        assert r["nonfinite"] == 1
    for k in ranks[0]["params"]:
        assert torch.isfinite(ranks[0]["params"][k]).all()
        torch.testing.assert_close(ranks[0]["params"][k], ranks[1]["params"][k], rtol=0, atol=0, msg=k)
    assert ranks[0]["lr"] == ranks[1]["lr"]


@pytest.mark.parametrize("optimizer", ["adamw", "scaled_adam"])
def test_nonfinite_gradient_with_finite_loss_never_reaches_the_weights(tiny_corpus, tmp_path, optimizer):
    trainer = make_trainer(tiny_corpus, tmp_path, optimizer=optimizer)
    a, _, _ = batches(tiny_corpus)
    assert trainer.train_step(a, None) is not None
    # a gradient hook turns one parameter's gradient into inf: the loss stays finite
    param = next(p for p in trainer.model.parameters() if p.ndim == 2)
    handle = param.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim_before = {id(p): {k: v.clone() for k, v in trainer.optimizer.state[p].items() if torch.is_tensor(v)}
                    for p in trainer.model.parameters() if p in trainer.optimizer.state}
    lr_before = trainer.scheduler.get_last_lr()[0]
    assert trainer.train_step(a, None) is None
    handle.remove()
    assert trainer.num_nonfinite == 1
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    for p in trainer.model.parameters():  # no moment update either
        for k, v in optim_before.get(id(p), {}).items():
            torch.testing.assert_close(trainer.optimizer.state[p][k], v, rtol=0, atol=0)
    assert trainer.scheduler.get_last_lr()[0] == lr_before  # constant schedule; stepped like a taken update
    assert trainer.train_step(a, None) is not None


def test_torchrun_two_ranks_log_apart_and_validate_the_whole_set(tiny_corpus, tmp_path):
    """A 2-rank run through the CLI (torchrun, gloo): rank 1 writes its own log, and the CER the run logs equals a
    1-process validation of the saved model on the whole set."""
    import json
    import subprocess
    import sys

    from icefall_ext.train.checkpoint import load_checkpoint

    exp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(exp), "--lang-dir",
           str(tiny_corpus["lang_dir"]), "--train-cuts", str(tiny_corpus["cuts"]), "--valid-cuts",
           str(tiny_corpus["cuts"]), "--preset", "conformer-tiny", "--max-duration", "3", "--num-epochs", "0",
           "--max-updates", "6", "--scheduler", "constant", "--warmup-updates", "1", "--lr", "3e-3",
           "--spec-augment", "false", "--threads", THREADS, "--world-size", "2", "--log-every-n", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert any((exp / "log").glob("*-1.txt")), "rank 1 writes its own log"
    logged = json.loads((exp / "valid.jsonl").read_text().splitlines()[-1])
    assert logged["update"] == 6
    (tmp_path / "single").mkdir()
    single = make_trainer(tiny_corpus, tmp_path / "single")
    final = max(exp.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    single.model.load_state_dict(load_checkpoint(final)["model"])
    from lhotse import CutSet

    single.valid_cuts = CutSet.from_file(tiny_corpus["cuts"])
    single.update, single.source = 6, SimpleNamespace(epoch=1)
    ref = single.validate()
    assert logged["cer"] == pytest.approx(ref["cer"], abs=1e-9)
    assert sum(1 for _ in single.valid_cuts) == 6


def _run(cmd):
    import subprocess

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_rank_slimipl_resume_equals_an_uninterrupted_run(tiny_corpus, tmp_path):
    """Each rank's data position, pseudo-label cache and random streams are saved and restored as its own."""
    from test_train_slimipl import slimipl_cmd, unlabelled_cuts

    from icefall_ext.train.checkpoint import load_checkpoint

    unlab = unlabelled_cuts(tiny_corpus, tmp_path)
    two = ["--world-size", "2", "--max-duration", "2"]
    ref, res = tmp_path / "ref", tmp_path / "res"
    _run(slimipl_cmd(tiny_corpus, unlab, ref, 18) + two)
    _run(slimipl_cmd(tiny_corpus, unlab, res, 12) + two)
    assert "resumed from" in _run(slimipl_cmd(tiny_corpus, unlab, res, 18) + two).stderr
    a, b = load_checkpoint(ref / "checkpoint-18.pt"), load_checkpoint(res / "checkpoint-18.pt")
    assert len(a["ranks"]) == len(b["ranks"]) == 2
    caches = [[r["source"]["slimipl"]["cache"]["entries"] for r in s["ranks"]] for s in (a, b)]
    assert caches[0] == caches[1]
    assert caches[0][0] != caches[0][1], "each rank has its own cache"
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)


def test_noise_mixing_resume_equals_an_uninterrupted_run(tiny_corpus, tmp_path):
    """The noise generator (lhotse CutMix) is part of the saved state: a resumed run mixes the same noise."""
    from lhotse import CutSet

    from icefall_ext.train.checkpoint import load_checkpoint
    from test_train import train_cmd

    noise = tmp_path / "noise.jsonl.gz"
    CutSet.from_file(tiny_corpus["cuts"]).drop_supervisions().modify_ids(lambda i: f"n-{i}").to_file(noise)
    extra = ["--noise-cuts", str(noise), "--noise-prob", "1.0", "--save-every-n", "4", "--spec-augment", "false",
             "--max-duration", "3"]
    ref, res = tmp_path / "ref", tmp_path / "res"
    _run(train_cmd(tiny_corpus, ref, "--max-updates", "12", *extra))
    _run(train_cmd(tiny_corpus, res, "--max-updates", "8", *extra))
    assert "resumed from" in _run(train_cmd(tiny_corpus, res, "--max-updates", "12", *extra)).stderr
    a, b = load_checkpoint(ref / "checkpoint-12.pt"), load_checkpoint(res / "checkpoint-12.pt")
    assert a["noise_rng"] == b["noise_rng"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)


def test_resume_reads_no_checkpoint_to_find_the_latest(tmp_path, monkeypatch):
    """latest_checkpoint takes the update count from each checkpoint's sidecar, not by loading the files."""
    from icefall_ext.train import checkpoint as ck

    for name, update in [("epoch-1.pt", 10), ("checkpoint-15.pt", 15), ("epoch-2.pt", 20), ("checkpoint-5.pt", 5)]:
        ck.save_checkpoint(tmp_path / name, {"update": update, "epoch": 1, "model": {"w": torch.zeros(1000)}})

    def no_load(*args, **kwargs):
        raise AssertionError("a checkpoint was loaded")

    monkeypatch.setattr(torch, "load", no_load)
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "epoch-2.pt"
    monkeypatch.undo()
    (tmp_path / "epoch-2.pt.json").unlink()  # an experiment written before sidecars: still found (memory-mapped)
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "epoch-2.pt"
