"""Checkpoints: one dict per file, written atomically, with the model config inside so that a checkpoint
rebuilds its model without the original command line.

Layout of an experiment directory::

    exp/model_config.json    exp/train_config.json
    exp/epoch-N.pt           end of epoch N (full training state)
    exp/checkpoint-U.pt      every --save-every-n updates (full training state, last --keep-last-k kept)
    exp/<name>.pt.json       sidecar of each: {"update": U, "epoch": N}, so that finding the checkpoint to resume
                             from reads a few bytes per file instead of loading every checkpoint
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)


def save_checkpoint(path: Path, state: Dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename, then its sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if "update" in state:
        meta = {"update": int(state["update"]), "epoch": int(state.get("epoch", 0))}
        tmp_meta = _sidecar(path).with_name(_sidecar(path).name + ".tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, _sidecar(path))


def _sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def checkpoint_update(path: Path) -> int:
    """The number of updates a checkpoint holds: from its sidecar, else from the file itself (memory-mapped)."""
    meta = _sidecar(path)
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text())["update"])
        except (ValueError, KeyError):
            logger.warning("ignoring unreadable sidecar %s", meta)
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["update"])


def load_checkpoint(path: Path, map_location: str = "cpu") -> Dict:
    """Load a checkpoint; tensors-and-containers only (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def _numbered(exp_dir: Path, prefix: str) -> List[Tuple[int, Path]]:
    pat = re.compile(rf"^{prefix}-(\d+)\.pt$")
    found = []
    for p in Path(exp_dir).glob(f"{prefix}-*.pt"):
        m = pat.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def epoch_checkpoints(exp_dir: Path) -> List[Tuple[int, Path]]:
    return _numbered(exp_dir, "epoch")


def update_checkpoints(exp_dir: Path) -> List[Tuple[int, Path]]:
    return _numbered(exp_dir, "checkpoint")


def remove_partial_checkpoints(exp_dir: Path) -> List[Path]:
    """Delete ``*.pt.tmp`` and ``*.pt.json.tmp`` files (a checkpoint or its sidecar): what a process killed in the
    middle of ``save_checkpoint`` leaves behind. Each is logged by name."""
    removed = sorted(Path(exp_dir).glob("*.pt.tmp")) + sorted(Path(exp_dir).glob("*.pt.json.tmp"))
    for p in removed:
        logger.warning("removing partial checkpoint %s (a previous run was killed while writing it)", p)
        p.unlink(missing_ok=True)
    return removed


def latest_checkpoint(exp_dir: Path) -> Optional[Path]:
    """The checkpoint with the most updates done (epoch or periodic), to resume from."""
    remove_partial_checkpoints(exp_dir)
    best: Optional[Tuple[int, Path]] = None
    for _, p in epoch_checkpoints(exp_dir) + update_checkpoints(exp_dir):
        try:
            updates = checkpoint_update(p)
        except Exception as e:  # noqa: BLE001 - an unreadable checkpoint is reported and ignored
            logger.warning("ignoring unreadable checkpoint %s: %s", p, e)
            continue
        if best is None or updates > best[0]:
            best = (updates, p)
    return None if best is None else best[1]


def remove_old_update_checkpoints(exp_dir: Path, keep_last_k: int) -> None:
    for _, p in update_checkpoints(exp_dir)[:-keep_last_k] if keep_last_k > 0 else []:
        p.unlink(missing_ok=True)
        _sidecar(p).unlink(missing_ok=True)


def average_state_dicts(states: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of model state dicts (integer buffers are taken from the last one)."""
    if not states:
        raise ValueError("nothing to average")
    avg = {}
    for k, v in states[-1].items():
        if v.is_floating_point():
            avg[k] = sum(s[k].to(torch.float64) for s in states).div(len(states)).to(v.dtype)
        else:
            avg[k] = v.clone()
    return avg


def select_checkpoints(exp_dir: Path, epoch: Optional[int] = None, avg: int = 1,
                       checkpoint: Optional[Path] = None) -> List[Path]:
    """Files to average: ``epoch-(epoch-avg+1) .. epoch-epoch``, or the given checkpoint, or the latest epoch."""
    if checkpoint is not None:
        return [Path(checkpoint)]
    epochs = dict(epoch_checkpoints(exp_dir))
    if not epochs:
        raise FileNotFoundError(f"no epoch-*.pt in {exp_dir} (train first, or pass --checkpoint)")
    if epoch is None:
        epoch = max(epochs)
    wanted = list(range(epoch - avg + 1, epoch + 1))
    missing = [e for e in wanted if e not in epochs]
    if missing:
        raise FileNotFoundError(f"{exp_dir}: missing epoch checkpoints {missing} for --epoch {epoch} --avg {avg}")
    return [epochs[e] for e in wanted]


def load_averaged_model(exp_dir: Path, epoch: Optional[int] = None, avg: int = 1,
                        checkpoint: Optional[Path] = None, device: str = "cpu"):
    """Rebuild the model from the config stored in the checkpoint(s) and load the averaged weights.

    Returns ``(model in eval mode, model_config, paths used)``.
    """
    from ..models.presets import build_model

    paths = select_checkpoints(Path(exp_dir), epoch, avg, checkpoint)
    states = [load_checkpoint(p) for p in paths]
    config = states[-1]["model_config"]
    model = build_model(config)
    model.load_state_dict(average_state_dicts([s["model"] for s in states]))
    model.to(device).eval()
    logger.info("loaded %s", ", ".join(p.name for p in paths))
    return model, config, paths
