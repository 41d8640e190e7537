"""A small Vision Transformer over space-time tubelets of grayscale video (the video encoder of audio-visual
pre-training, Jain et al. 2024: 16x16 px x 2-frame tubelets, 12 blocks of 768).

Input: uint8 frames (B, T, H, W) and their lengths. Pixels are scaled to [0, 1]; frames of another size than
``frame_size`` are resized (bilinear). ``pixel_norm="fixed"`` then normalises with a fixed mean / std
(``pixel_mean``, ``pixel_std``); ``"clip"`` standardises each clip over its valid frames: each pixel minus its
mean over the clip's frames, divided by the clip's standard deviation of those differences (padding frames 0), as
per-utterance mean / variance normalisation does for fbank. What stays is how the picture moves: a speaker's still
look (face, skin, lighting, the resting mouth) is gone, so contrastive learning cannot match clips by who speaks
and has to match them by what the mouth does. A Conv3d
with kernel = stride = (``tubelet_frames``, ``patch_size``, ``patch_size``) embeds each tubelet; the time axis is
padded to a whole number of tubelets, and a tubelet is valid when all its frames are (``lengths //
tubelet_frames``). Positions are separable: sinusoidal over tubelets in time (any T) + a learned embedding per
patch in space. Pre-norm Transformer layers with a key-padding mask, then a LayerNorm.

Masking (``token_mask``): masked tubelets' embeddings are replaced by one learned mask token before the positions
are added, and the encoder still sees every token (SimMIM style). The paper's MAE instead drops the masked tokens
from the encoder (cheaper: it sees 40%). Keeping them gives a regular (T', P) grid with plain padding masks for
clips of different lengths, and the same treatment as the audio encoder, whose convolutions cannot drop frames.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention_decoder import sinusoidal_embedding
from .subsampling import make_pad_mask
from .transformer import TransformerLayer

PIXEL_NORMS = ("fixed", "clip")
# ViT sizes (``--video-preset``); "base" is the paper's video encoder.
VIDEO_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(dim=64, num_layers=1, num_heads=2, tubelet_frames=2, patch_size=8),
    "mini": dict(dim=128, num_layers=2, num_heads=4, tubelet_frames=2, patch_size=8),
    "base": dict(dim=768, num_layers=12, num_heads=12, tubelet_frames=2, patch_size=16),
}


class VideoEncoding(NamedTuple):
    """``tokens`` (B, T', P, D); ``lens`` (B,) valid tubelets; ``pooled`` (B, D) mean over valid tokens."""

    tokens: Tensor
    lens: Tensor
    pooled: Tensor

    def flat(self) -> Tuple[Tensor, Tensor]:
        """Tokens as (B, T' * P, D) (time-major) and their validity (B, T' * P) bool."""
        b, t, p, d = self.tokens.shape
        valid = (torch.arange(t, device=self.lens.device)[None, :] < self.lens[:, None])
        return self.tokens.reshape(b, t * p, d), valid[:, :, None].expand(b, t, p).reshape(b, t * p)


class VideoViT(nn.Module):
    """``forward(video uint8 (B, T, H, W), lengths (B,), token_mask (B, T', P) bool | None) -> VideoEncoding``."""

    def __init__(self, frame_size: Union[int, Sequence[int]], *, dim: int = 128, num_layers: int = 2,
                 num_heads: int = 4, tubelet_frames: int = 2, patch_size: int = 8, ff_dim: Optional[int] = None,
                 dropout: float = 0.0, pixel_mean: float = 0.5, pixel_std: float = 0.25,
                 pixel_norm: str = "fixed") -> None:
        super().__init__()
        if pixel_norm not in PIXEL_NORMS:
            raise ValueError(f"pixel_norm must be one of {PIXEL_NORMS}, not {pixel_norm!r}")
        self.pixel_norm = pixel_norm
        h, w = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        if h % patch_size or w % patch_size or tubelet_frames < 1:
            raise ValueError(f"frame size {h}x{w} is not a whole number of {patch_size}x{patch_size} patches")
        self.frame_size = (h, w)
        self.tubelet_frames, self.patch_size, self.output_dim = tubelet_frames, patch_size, dim
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.grid = (h // patch_size, w // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = tubelet_frames * patch_size * patch_size
        self.patch_embed = nn.Conv3d(1, dim, (tubelet_frames, patch_size, patch_size),
                                     stride=(tubelet_frames, patch_size, patch_size))
        self.space_pos = nn.Parameter(torch.randn(self.num_patches, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads, ff_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def token_lens(self, video_lens: Tensor) -> Tensor:
        """Valid tubelets per clip: those whose frames are all valid."""
        return video_lens.long() // self.tubelet_frames

    def prepare(self, video: Tensor, video_lens: Optional[Tensor] = None) -> Tensor:
        """uint8 (B, T, H, W) -> normalised float (B, T_pad, H', W'): resized to ``frame_size``, time padded (with
        zero pixels) to a whole number of tubelets. ``pixel_norm="clip"`` needs ``video_lens`` (valid frames)."""
        b, t, h, w = video.shape
        x = video.float() / 255.0
        if (h, w) != self.frame_size:
            x = F.interpolate(x.reshape(b * t, 1, h, w), size=self.frame_size, mode="bilinear", align_corners=False,
                              antialias=True).reshape(b, t, *self.frame_size)
        pad = -t % self.tubelet_frames
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        if self.pixel_norm == "fixed":
            return (x - self.pixel_mean) / self.pixel_std
        if video_lens is None:
            raise ValueError('pixel_norm="clip" needs the clips\' lengths')
        valid = (~make_pad_mask(video_lens.to(x.device), x.shape[1])).to(x.dtype)[..., None, None]
        frames = valid.sum(1, keepdim=True).clamp(min=1.0)
        moving = (x - (x * valid).sum(1, keepdim=True) / frames) * valid
        spread = (moving.pow(2).sum((1, 2, 3), keepdim=True) / (frames * x.shape[2] * x.shape[3])).sqrt()
        return moving / (spread + 1e-3)

    def patchify(self, pixels: Tensor) -> Tensor:
        """(B, T_pad, H, W) prepared pixels -> (B, T', P, tubelet_frames * patch^2), in Conv3d patch order."""
        b, t = pixels.shape[:2]
        tf, p = self.tubelet_frames, self.patch_size
        gh, gw = self.grid
        x = pixels.reshape(b, t // tf, tf, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, t // tf, gh * gw, tf * p * p)

    def encode(self, pixels: Tensor, video_lens: Tensor, token_mask: Optional[Tensor] = None) -> VideoEncoding:
        """:meth:`forward` on already prepared pixels (see :meth:`prepare`)."""
        x = self.patch_embed(pixels[:, None])  # (B, D, T', gh, gw)
        b, d, t = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)  # (B, T', P, D)
        if token_mask is not None:
            x = torch.where(token_mask[..., None], self.mask_token.to(x.dtype), x)
        time = sinusoidal_embedding(torch.arange(t, device=x.device), d)
        x = x + time[None, :, None, :].to(x.dtype) + self.space_pos[None, None].to(x.dtype)
        lens = self.token_lens(video_lens).clamp(max=t)
        encoding = VideoEncoding(x, lens, x[:, 0, 0])
        flat, valid = encoding.flat()
        for layer in self.layers:
            flat = layer(flat, ~valid)
        flat = self.norm(flat)
        weights = valid.to(flat.dtype)[..., None]
        pooled = (flat * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return VideoEncoding(flat.reshape(b, t, self.num_patches, d), lens, pooled)

    def forward(self, video: Tensor, video_lens: Tensor, token_mask: Optional[Tensor] = None) -> VideoEncoding:
        """uint8 frames (B, T, H, W), lengths (B,), optional (B, T', P) bool mask of tubelets to replace by the
        mask token -> tokens (B, T', P, D), valid tubelets (B,), pooled clip embeddings (B, D)."""
        return self.encode(self.prepare(video, video_lens), video_lens, token_mask)
