"""A pre-norm Transformer layer with a key-padding mask, shared by the video ViT, the audio-visual MAE decoder and
the optional layers of the CTC head.

Attention is :func:`torch.nn.functional.scaled_dot_product_attention` (no fused ``nn.MultiheadAttention`` fast
path, so the layer exports to ONNX with the legacy exporter). A row whose keys are all padding (an empty sequence)
attends to all of them instead of producing NaN; its outputs are meaningless and callers ignore them.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


class TransformerLayer(nn.Module):
    """x + MHSA(LN(x)) then x + MLP(LN(x)) (GELU, ``ff_dim`` = 4 x ``dim`` unless given)."""

    def __init__(self, dim: int, num_heads: int, ff_dim: Optional[int] = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dimension {dim} is not divisible by {num_heads} attention heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim or 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ff_dim or 4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad_mask: Optional[Tensor] = None) -> Tensor:
        """x (N, S, D); ``pad_mask`` (N, S) bool, True at padding (keys there are ignored)."""
        n, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        keep = None
        if pad_mask is not None:
            keep = ~pad_mask
            keep = (keep | ~keep.any(-1, keepdim=True))[:, None, None, :]  # (N, 1, 1, S): True = attend
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(n, s, d)))
        return x + self.drop(self.mlp(self.norm2(x)))
