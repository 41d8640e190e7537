"""A Transformer attention decoder over encoder output (speech translation, attention-based ASR).

Token ids ``0..vocab_size-1`` are the target tokenizer's; the decoder adds one symbol, ``<sos/eos>`` =
``vocab_size``, that starts every input and ends every output (as icefall's and ESPnet's attention decoders do).
Inputs: token embedding scaled by sqrt(d) + sinusoidal positions; pre-norm layers (causal self-attention,
cross-attention to the encoder output, feed-forward); a final LayerNorm and a projection to ``vocab_size + 1``.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_ID = -1


def sinusoidal_embedding(positions: Tensor, dim: int) -> Tensor:
    """(...,) positions -> (..., dim) sine/cosine encodings of "Attention is all you need" (also at fractional
    positions: the video ViT and the AV decoder place audio and video on one timeline)."""
    rate = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions.float()[..., None] * rate
    out = torch.zeros(*positions.shape, dim, device=positions.device)
    out[..., 0::2] = torch.sin(angles)
    out[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return out


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    """(length, dim) encodings of positions 0 .. length - 1."""
    return sinusoidal_embedding(torch.arange(length, device=device), dim)


def key_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(N, max_len) bool, True at padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class AttentionDecoder(nn.Module):
    """``forward(memory, memory_lens, ys_in, ys_in_lens) -> logits``; ``loss`` for teacher forcing."""

    def __init__(self, vocab_size: int, memory_dim: int, d_model: int = 256, num_layers: int = 6,
                 num_heads: int = 4, feedforward_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.sos_eos = vocab_size
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size + 1, d_model)
        self.memory_proj = nn.Linear(memory_dim, d_model) if memory_dim != d_model else nn.Identity()
        layer = nn.TransformerDecoderLayer(d_model, num_heads, feedforward_dim, dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size + 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """memory (N, T, D_enc), ys_in (N, U) token ids (``sos_eos`` first) -> logits (N, U, vocab_size + 1)."""
        u = ys_in.shape[1]
        x = self.embed(ys_in) * math.sqrt(self.d_model) + sinusoidal_positions(u, self.d_model, ys_in.device)
        causal = torch.triu(torch.ones(u, u, dtype=torch.bool, device=ys_in.device), diagonal=1)
        x = self.layers(self.dropout(x), self.memory_proj(memory), tgt_mask=causal,
                        tgt_key_padding_mask=key_padding_mask(ys_in_lens, u),
                        memory_key_padding_mask=key_padding_mask(memory_lens, memory.shape[1]))
        return self.output(self.norm(x))

    def teacher_forcing_batch(self, ys: List[List[int]], device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """``[sos] + y`` inputs (padded with ``sos_eos``), their lengths, and ``y + [eos]`` targets (padded with
        ``IGNORE_ID``)."""
        n, longest = len(ys), max(len(y) for y in ys) + 1
        ys_in = torch.full((n, longest), self.sos_eos, dtype=torch.int64)
        ys_out = torch.full((n, longest), IGNORE_ID, dtype=torch.int64)
        for i, y in enumerate(ys):
            ys_in[i, 1: len(y) + 1] = torch.tensor(y, dtype=torch.int64)
            ys_out[i, : len(y)] = torch.tensor(y, dtype=torch.int64)
            ys_out[i, len(y)] = self.sos_eos
        lens = torch.tensor([len(y) + 1 for y in ys], dtype=torch.int64)
        return ys_in.to(device), lens.to(device), ys_out.to(device)

    def loss(self, memory: Tensor, memory_lens: Tensor, ys: List[List[int]],
             label_smoothing: float = 0.1) -> Tuple[Tensor, Tensor]:
        """Summed label-smoothed cross-entropy of ``y + [eos]`` given the memory, and the number of tokens."""
        ys_in, lens, ys_out = self.teacher_forcing_batch(ys, memory.device)
        logits = self(memory, memory_lens, ys_in, lens).float()
        loss = F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=IGNORE_ID, reduction="sum",
                               label_smoothing=label_smoothing)
        return loss, (ys_out != IGNORE_ID).sum()

    def log_probs(self, memory: Tensor, memory_lens: Tensor, ys: List[List[int]]) -> Tensor:
        """(N,) total log-probability of each ``y + [eos]`` under teacher forcing (no smoothing)."""
        ys_in, lens, ys_out = self.teacher_forcing_batch(ys, memory.device)
        logp = self(memory, memory_lens, ys_in, lens).float().log_softmax(-1)
        picked = logp.gather(-1, ys_out.clamp(min=0)[..., None])[..., 0]
        return (picked * (ys_out != IGNORE_ID)).sum(-1)
