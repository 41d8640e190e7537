"""ScaledAdam optimiser and Eden learning-rate schedule (Yao et al., 2023, Zipformer).

ScaledAdam makes every update relative to the size of the parameter it changes:
the Adam-normalised step of a tensor is multiplied by the tensor's RMS, and the
RMS itself is learned through an explicit update of a scalar log-scale per
tensor.  Gradients are clipped against a running median of the (RMS-weighted)
gradient norm.  Parameters of the same shape are updated together as one
stacked tensor for speed.

Eden: lr = base_lr * ((b^2 + B^2) / B^2)^-0.25 * ((e^2 + E^2) / E^2)^-0.25 * warmup(b),
with warmup rising linearly from `warmup_start` (0.5) to 1 over `warmup_batches`.
"""

import logging
import math
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import Optimizer

logger = logging.getLogger(__name__)

# steps (besides multiples of the period) at which the clipping threshold is
# first estimated, from the few norms seen so far and with a doubled margin
_EARLY_CLIPPING_STEPS = (10, 20, 40)


def _as_param_groups(params) -> List[Dict]:
    """Accept parameters, (name, parameter) pairs, or parameter-group dicts."""
    items = list(params)
    if not items:
        raise ValueError("optimizer got an empty parameter list")
    if isinstance(items[0], dict):
        groups = []
        for group in items:
            group = dict(group)
            if "named_params" in group:
                group["params"] = [p for _, p in group.pop("named_params")]
            groups.append(group)
        return groups
    return [{"params": [p[1] if isinstance(p, tuple) else p for p in items]}]


class ScaledAdam(Optimizer):
    """Adam whose step for each tensor is scaled by the tensor's RMS, plus a learned
    per-tensor scale.

    Args:
      params: parameters, (name, parameter) pairs, or parameter groups.
      lr: learning rate (relative change per step; e.g. 0.045 with Eden).
      clipping_scale: clip the RMS-weighted gradient norm to this multiple of its
        median over the last `clipping_update_period` steps (None: no clipping).
      betas: momentum of the update and decay of the squared-gradient average.
      scalar_lr_scale: learning-rate factor for scalar parameters and for the
        per-tensor scale updates.
      eps: added to the root of the squared-gradient average.
      param_min_rms, param_max_rms: the RMS used to scale updates is at least
        param_min_rms; the scale update never shrinks below it or grows past max.
      scalar_max: scalar parameters are clamped to [-scalar_max, scalar_max].
      size_update_period: the RMS is refreshed and the scale updated every this
        many steps, from the accumulated scale gradients.
      clipping_update_period: steps between re-estimates of the clipping threshold.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.045,
        clipping_scale: Optional[float] = None,
        betas: Tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ) -> None:
        if not 0.0 < betas[0] <= betas[1] < 1.0:
            raise ValueError(f"need 0 < beta1 <= beta2 < 1, got {betas}")
        defaults = dict(
            lr=lr,
            clipping_scale=clipping_scale,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
            clipping_update_period=clipping_update_period,
        )
        super().__init__(_as_param_groups(params), defaults)

    @staticmethod
    def _buckets(group: Dict) -> List[List[Tensor]]:
        """Parameters of a group batched by (dtype, device, shape), in a fixed order."""
        buckets: Dict[tuple, List[Tensor]] = {}
        for p in group["params"]:
            buckets.setdefault((str(p.dtype), str(p.device), tuple(p.shape)), []).append(p)
        return list(buckets.values())

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            batches = []
            for params in self._buckets(group):
                for q in params:
                    if q.grad is not None and q.grad.is_sparse:
                        raise RuntimeError("ScaledAdam does not support sparse gradients")
                # a bucket's state lives with its first parameter
                state = self.state[params[0]]
                p = torch.stack([q.detach() for q in params])
                g = torch.stack(
                    [torch.zeros_like(q) if q.grad is None else q.grad for q in params]
                )
                if "step" not in state:
                    self._init_state(group, state, p)
                batches.append((params, p, g, state))

            factor = self._clipping_factor(group, batches)
            for params, p, g, state in batches:
                if factor == 0.0:
                    g = torch.zeros_like(g)
                elif factor != 1.0:
                    g = g * factor
                self._update(group, p, g, state)
                for q, new in zip(params, p.unbind(0)):
                    if q.grad is not None:  # parameters without a gradient stay as they are
                        q.copy_(new)
        return loss

    @staticmethod
    def _is_scalar(p: Tensor) -> bool:
        return p[0].numel() == 1

    def _init_state(self, group: Dict, state: Dict, p: Tensor) -> None:
        state["step"] = 0
        state["exp_avg_sq"] = torch.zeros_like(p)
        state["delta"] = torch.zeros_like(p)
        if not self._is_scalar(p):
            rms = p.pow(2).mean(dim=tuple(range(1, p.ndim)), keepdim=True).sqrt()
            state["param_rms"] = rms
            state["scale_exp_avg_sq"] = torch.zeros_like(rms)
            state["scale_grads"] = torch.zeros(
                group["size_update_period"], *rms.shape, dtype=p.dtype, device=p.device
            )

    def _clipping_factor(self, group: Dict, batches: List[tuple]) -> float:
        """Factor (<= 1) for this step's gradients; 0 if their norm is not finite."""
        clipping_scale = group["clipping_scale"]
        if clipping_scale is None:
            return 1.0
        sumsq = torch.zeros((), device=batches[0][1].device)
        for _, p, g, state in batches:
            if self._is_scalar(p):
                sumsq = sumsq + (g * group["scalar_lr_scale"]).pow(2).sum()
            else:
                sumsq = sumsq + (g * state["param_rms"]).pow(2).sum()
        norm = math.sqrt(sumsq.item())
        if not math.isfinite(norm):
            logger.warning("ScaledAdam: gradient norm is %s; skipping this gradient", norm)
            return 0.0

        clip = self.state[group["params"][0]]  # clipping statistics of this group
        period = group["clipping_update_period"]
        step = batches[0][3]["step"]
        norms = clip.setdefault("clip_norms", [])
        if len(norms) < period:
            norms.append(norm)
        else:
            norms[step % period] = norm
        early = step in _EARLY_CLIPPING_STEPS and step < period
        if step % period == 0 or early:
            ordered = sorted(norms)
            quartiles = [ordered[min(len(ordered) - 1, (len(ordered) // 4) * i)] for i in range(5)]
            threshold = clipping_scale * quartiles[2] * (2.0 if early else 1.0)
            clipped = clip.get("clip_num_clipped", 0)
            logger.info(
                "ScaledAdam clipping: grad-norm quartiles %s, threshold %.3e, %.1f%% clipped",
                " ".join(f"{q:.3e}" for q in quartiles),
                threshold,
                100.0 * clipped / len(ordered),
            )
            clip["clip_threshold"] = threshold
            clip["clip_num_clipped"] = 0
        threshold = clip["clip_threshold"]
        if norm <= threshold:
            return 1.0
        clip["clip_num_clipped"] += 1
        factor = threshold / norm
        if factor < 0.5:
            logger.warning("ScaledAdam: scaling gradients by %.3f (norm %.3e)", factor, norm)
        return factor

    def _update(self, group: Dict, p: Tensor, g: Tensor, state: Dict) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        step = state["step"]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (exp_avg_sq / (1.0 - beta2 ** (step + 1))).sqrt_().add_(group["eps"])
        if self._is_scalar(p):
            delta = g / denom * (-lr * group["scalar_lr_scale"])
        else:
            dims = tuple(range(1, p.ndim))
            period = group["size_update_period"]
            rms = state["param_rms"]
            state["scale_grads"][step % period] = (p * g).sum(dim=dims, keepdim=True)
            size_step = step % period == period - 1
            if size_step:
                rms.copy_(p.pow(2).mean(dim=dims, keepdim=True).sqrt())
            delta = g / denom * rms.clamp(min=group["param_min_rms"]) * (-lr)
            if size_step:
                delta += p * self._scale_step(group, state, step)
        momentum = state["delta"]
        momentum.mul_(beta1).add_(delta, alpha=1.0 - beta1)
        p.add_(momentum)
        if self._is_scalar(p):
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        state["step"] = step + 1

    @staticmethod
    def _scale_step(group: Dict, state: Dict, step: int) -> Tensor:
        """Relative change of each tensor's scale: an Adam step on its log-scale,
        from the gradients accumulated over the last size_update_period steps."""
        period = group["size_update_period"]
        rms = state["param_rms"]
        grads = state["scale_grads"]
        beta2 = group["betas"][1] ** period
        avg_sq = state["scale_exp_avg_sq"]
        avg_sq.mul_(beta2).add_(grads.pow(2).mean(dim=0), alpha=1.0 - beta2)
        num_updates = (step + 1) // period
        denom = (avg_sq / (1.0 - beta2**num_updates)).sqrt() + group["eps"]
        change = grads.sum(dim=0) / denom * (-group["lr"] * group["scalar_lr_scale"])
        # never shrink a tensor whose RMS is already below the minimum
        change = torch.where(rms < group["param_min_rms"], change.clamp(min=0.0), change)
        change = change.clamp(min=-0.1, max=0.1)
        return torch.minimum(change, (group["param_max_rms"] - rms) / rms)


class Eden:
    """Eden learning-rate schedule over batches and epochs (Zipformer paper).

    lr = base_lr * ((batch^2 + lr_batches^2) / lr_batches^2) ** -0.25
                 * ((epoch^2 + lr_epochs^2) / lr_epochs^2) ** -0.25 * warmup,
    warmup = warmup_start + (1 - warmup_start) * batch / warmup_batches until
    warmup_batches, then 1.  `batch` counts optimiser steps and `epoch` completed
    epochs (both start at 0).  base_lr is each group's lr when Eden is created.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_batches: float,
        lr_epochs: float,
        warmup_batches: float = 500.0,
        warmup_start: float = 0.5,
    ) -> None:
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start}")
        self.optimizer = optimizer
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.batch = 0
        self.epoch = 0
        self._set_lrs()

    def factor(self) -> float:
        b, e = self.batch, self.epoch
        decay = ((b**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25 * (
            (e**2 + self.lr_epochs**2) / self.lr_epochs**2
        ) ** -0.25
        if b >= self.warmup_batches:
            return decay
        return decay * (self.warmup_start + (1.0 - self.warmup_start) * b / self.warmup_batches)

    def _set_lrs(self) -> None:
        factor = self.factor()
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * factor

    def step_batch(self, batch: Optional[int] = None) -> None:
        """Set the batch count (default: one more) and update the learning rates."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: Optional[float] = None) -> None:
        """Set the number of completed epochs (default: one more) and update the rates."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def get_last_lr(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> Dict:
        return {"batch": self.batch, "epoch": self.epoch}

    def load_state_dict(self, state_dict: Dict) -> None:
        self.batch = state_dict["batch"]
        self.epoch = state_dict["epoch"]
        self._set_lrs()
