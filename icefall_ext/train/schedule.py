"""Learning-rate schedules stepped once per update (all resumable through ``state_dict``)."""

from __future__ import annotations

import math
from typing import Callable

import torch


def lr_lambda(name: str, warmup_updates: int, max_updates: int, min_ratio: float = 0.05) -> Callable[[int], float]:
    """Multiplier of the base lr after ``u`` updates.

    - ``constant``: 1 (after an optional linear warm-up);
    - ``noam``: linear warm-up, then proportional to 1/sqrt(u) (open-ended training);
    - ``warmup_cosine``: linear warm-up, then cosine decay to ``min_ratio`` at ``max_updates``.
    """
    w = max(1, warmup_updates)

    def constant(u: int) -> float:
        return min(1.0, (u + 1) / w)

    def noam(u: int) -> float:
        u = u + 1
        return min(u / w, math.sqrt(w / u))

    def warmup_cosine(u: int) -> float:
        if u < w:
            return (u + 1) / w
        if max_updates <= w:
            return 1.0
        progress = min(1.0, (u - w) / (max_updates - w))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    table = {"constant": constant, "noam": noam, "warmup_cosine": warmup_cosine}
    if name not in table:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(table)} or 'eden'")
    if name == "warmup_cosine" and max_updates <= 0:
        raise ValueError("--scheduler warmup_cosine needs --max-updates > 0")
    return table[name]


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_updates: int, max_updates: int,
                   eden_lr_batches: float = 5000, eden_lr_epochs: float = 6, eden_warmup_start: float = 0.5):
    """A scheduler whose ``step()`` is called after every update (Eden: ``set_epoch(epochs completed)`` too)."""
    if name == "eden":
        from .optim import Eden

        return _EdenPerUpdate(Eden(optimizer, eden_lr_batches, eden_lr_epochs, warmup_batches=warmup_updates,
                                   warmup_start=eden_warmup_start))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, warmup_updates, max_updates))


class _EdenPerUpdate:
    """Adapts Eden (step_batch/step_epoch) to the per-update ``step()`` interface."""

    def __init__(self, eden) -> None:
        self.eden = eden
        self.updates = 0

    def step(self) -> None:
        self.updates += 1
        self.eden.step_batch(self.updates)

    def set_epoch(self, epoch: int) -> None:
        self.eden.step_epoch(epoch)

    def get_last_lr(self):
        return self.eden.get_last_lr()

    def state_dict(self):
        return {"updates": self.updates, "eden": self.eden.state_dict()}

    def load_state_dict(self, state) -> None:
        self.updates = state["updates"]
        self.eden.load_state_dict(state["eden"])
