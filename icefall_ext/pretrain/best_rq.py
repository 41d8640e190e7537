"""BEST-RQ self-supervised pre-training (Chiu et al. 2022) with USM's multi-softmax (Zhang et al. 2023).

Targets come from the *unmasked* input features: each feature dimension is normalised to mean 0 / std 1 over the
utterance's own frames (padding excluded, so a target never depends on the batch; NeMo's ``per_feature``
normalisation), frames are stacked to the encoder's frame rate (4 frames for a x4 subsampling), projected by a frozen Xavier-initialised matrix to ``code_dim`` dimensions,
L2-normalised, and labelled with its nearest codeword (largest cosine) in a frozen N(0, 1) codebook whose
entries are L2-normalised too. Projections and codebooks are buffers: no gradient, not in any optimiser group,
computed in fp32 even under autocast.

The encoder sees the features with random spans replaced by N(0, ``noise_std``) noise (each frame starts a span
with probability ``mask_prob``; spans of ``mask_frames`` frames, 400 ms by default); the loss is the
cross-entropy of a linear head per codebook on the encoder outputs whose stacked group is mostly masked,
averaged over the codebooks (equal weights).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Encoder = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]


def stack_frames(x: Tensor, x_lens: Tensor, factor: int) -> Tuple[Tensor, Tensor]:
    """(N, T, F) -> (N, T // factor, F * factor): each group of ``factor`` consecutive frames as one vector."""
    n, t, f = x.shape
    groups = t // factor
    return x[:, : groups * factor].reshape(n, groups, f * factor), x_lens // factor


def normalise_per_utterance(x: Tensor, x_lens: Tensor, eps: float = 1e-5) -> Tensor:
    """(N, T, F): each feature dimension to mean 0 / std 1 over the utterance's valid frames; padding -> 0.

    The default BEST-RQ normalisation. Unlike :func:`normalise_per_vector` it keeps a frame's level, so pauses
    (whose spectra are flat up to dither) share a few codes instead of drawing random ones from amplified noise.
    """
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < x_lens[:, None])[..., None].to(x.dtype)
    count = valid.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * valid).sum(1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / count
    return (x - mean) / (var + eps).sqrt() * valid


NORMALISATIONS = ("utterance", "vector")


def normalise_per_vector(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Mean 0 / std 1 over the last (feature) axis of each vector; each frame independently of the others
    (``--bestrq-norm vector``: silent frames then get codes drawn from their normalised noise)."""
    return F.layer_norm(z, (z.shape[-1],), eps=eps)


class RandomProjectionQuantizer(nn.Module):
    """Frozen random projection + frozen codebook; ``forward`` labels vectors with their nearest codeword."""

    def __init__(self, input_dim: int, code_dim: int = 16, num_codes: int = 8192,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        bound = (6.0 / (input_dim + code_dim)) ** 0.5  # Xavier (Glorot) uniform
        projection = (torch.rand(input_dim, code_dim, generator=generator) * 2 - 1) * bound
        codebook = F.normalize(torch.randn(num_codes, code_dim, generator=generator), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    @torch.no_grad()
    def forward(self, z: Tensor) -> Tensor:
        """(..., input_dim) normalised vectors -> (...,) int64 code indices."""
        with torch.autocast(z.device.type, enabled=False):
            projected = F.normalize(z.float() @ self.projection, dim=-1)
            return (projected @ self.codebook.t()).argmax(dim=-1)


def span_mask(x_lens: Tensor, max_len: int, prob: float, span: int,
              generator: Optional[torch.Generator] = None) -> Tensor:
    """(N, max_len) bool: each valid frame starts a masked span of ``span`` frames with probability ``prob``
    (spans may overlap; none reaches past an utterance's length)."""
    n = x_lens.shape[0]
    frames = torch.arange(max_len, device=x_lens.device)
    valid = frames[None, :] < x_lens[:, None]
    starts = (torch.rand(n, max_len, generator=generator).to(x_lens.device) < prob) & valid
    # frame t is masked when a span starts in (t - span, t]: a running count of starts over a window of `span`
    counts = F.conv1d(starts.float()[:, None, :], torch.ones(1, 1, span), padding=span - 1)[:, 0, :max_len]
    return (counts > 0.5) & valid


def expected_masked_fraction(prob: float, span: int) -> float:
    """Probability that a frame far from the utterance's start is masked: 1 - (1 - p)^span."""
    return 1.0 - (1.0 - prob) ** span


class BestRq(nn.Module):
    """The BEST-RQ objective: quantisers (targets), masking, and a prediction head per codebook."""

    def __init__(self, feature_dim: int, encoder_dim: int, *, stack: int = 4, num_codebooks: int = 1,
                 code_dim: int = 16, num_codes: int = 8192, mask_prob: float = 0.01, mask_frames: int = 40,
                 noise_std: float = 0.1, seed: int = 0, norm: str = "utterance") -> None:
        super().__init__()
        if num_codebooks < 1 or stack < 1 or mask_frames < 1:
            raise ValueError("num_codebooks, stack and mask_frames must be >= 1")
        if norm not in NORMALISATIONS:
            raise ValueError(f"norm must be one of {NORMALISATIONS}, not {norm!r}")
        self.norm = norm
        generator = torch.Generator().manual_seed(seed)
        self.stack, self.mask_prob, self.mask_frames, self.noise_std = stack, mask_prob, mask_frames, noise_std
        self.quantizers = nn.ModuleList(
            RandomProjectionQuantizer(feature_dim * stack, code_dim, num_codes, generator)
            for _ in range(num_codebooks)
        )
        self.heads = nn.ModuleList(nn.Linear(encoder_dim, num_codes) for _ in range(num_codebooks))

    def targets(self, x: Tensor, x_lens: Tensor) -> Tuple[List[Tensor], Tensor]:
        """Code labels (N, T // stack) of every quantiser, from the unmasked features, and their lengths."""
        if self.norm == "utterance":
            z, lens = stack_frames(normalise_per_utterance(x.float(), x_lens), x_lens, self.stack)
        else:
            stacked, lens = stack_frames(x, x_lens, self.stack)
            z = normalise_per_vector(stacked.float())
        return [q(z) for q in self.quantizers], lens

    def mask(self, x: Tensor, x_lens: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """Features with masked frames replaced by N(0, noise_std) noise, and the (N, T) mask."""
        mask = span_mask(x_lens, x.shape[1], self.mask_prob, self.mask_frames, generator)
        noise = torch.randn(x.shape, generator=generator).to(x) * self.noise_std
        return torch.where(mask[..., None], noise, x), mask

    def forward(self, encoder: Encoder, x: Tensor, x_lens: Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Summed masked-prediction loss (mean over codebooks) as "bestrq", "num_masked" and per-codebook
        statistics: "acc_k" (accuracy on masked groups), "codes_k" (distinct predicted codes), "ppl_k"
        (perplexity of the mean predicted distribution), plus "masked_fraction" of the valid frames."""
        labels, label_lens = self.targets(x, x_lens)
        masked_x, mask = self.mask(x, x_lens, generator)
        enc, enc_lens = encoder(masked_x, x_lens)
        t = min(enc.shape[1], labels[0].shape[1])
        groups = mask[:, : t * self.stack].reshape(mask.shape[0], t, self.stack).float().mean(-1) > 0.5
        positions = torch.arange(t, device=x.device)[None, :]
        selected = groups & (positions < torch.minimum(enc_lens, label_lens)[:, None])
        out: Dict[str, Tensor] = {}
        chosen = enc[:, :t][selected]
        losses = []
        for k, (head, target) in enumerate(zip(self.heads, labels)):
            logits = head(chosen).float()
            y = target[:, :t][selected]
            losses.append(F.cross_entropy(logits, y, reduction="sum") if y.numel() else logits.sum() * 0.0)
            with torch.no_grad():
                predicted = logits.argmax(-1)
                out[f"acc_{k}"] = (predicted == y).float().mean() if y.numel() else torch.tensor(0.0)
                out[f"codes_{k}"] = torch.tensor(float(predicted.unique().numel()))
                mean_p = logits.softmax(-1).mean(0) if y.numel() else torch.ones(1)
                out[f"ppl_{k}"] = torch.exp(-(mean_p * (mean_p + 1e-10).log()).sum())
        out["bestrq"] = torch.stack(losses).mean()
        out["num_masked"] = selected.sum().float()
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < x_lens[:, None]
        out["masked_fraction"] = mask[valid].float().mean()
        return out


class BestRqModel(nn.Module):
    """An encoder pre-trained with BEST-RQ. Its ``encoder.*`` weights are what ``train --init-from`` fine-tunes (the
    ASR heads are built fresh); the quantisers and prediction heads stay in the pre-training checkpoint."""

    def __init__(self, encoder: nn.Module, best_rq: BestRq) -> None:
        super().__init__()
        self.encoder = encoder
        self.best_rq = best_rq

    def forward(self, x: Tensor, x_lens: Tensor) -> Dict[str, Tensor]:
        """Features (N, T, F) and lengths -> the BEST-RQ losses and statistics (see :meth:`BestRq.forward`)."""
        return self.best_rq(self.encoder, x, x_lens)
