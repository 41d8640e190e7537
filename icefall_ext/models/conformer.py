"""Conformer encoder (Gulati et al., 2020) with optional causal/chunked streaming.

Block: x + 1/2 FFN -> x + rel-pos MHSA -> x + Conv module -> x + 1/2 FFN -> LayerNorm, every
module pre-normalised (LayerNorm) and followed by dropout. The self-attention uses
Transformer-XL relative positions: score(i, j) = (q_i + u) k_j + (q_i + v) W_pos R(i - j).

Restricted attention for long-form audio in a non-streaming model (``attention``, USM §2.4):
``"chunk"`` lets each frame attend only to its own non-overlapping chunk of ``attention_chunk_frames``
frames (after subsampling, 40 ms each: 200 = 8 s; :func:`chunk_attention_mask` with no left context),
``"local"`` to a sliding window of ``attention_left`` past and ``attention_right`` future frames
(:func:`local_attention_mask`); ``"full"`` (default) is unrestricted. Only self-attention is restricted:
the (non-causal) convolutions and everything else still see across chunk edges, so information
crosses chunks through the convolutions of stacked layers. Masks are built from the actual number of
frames of each call (and stay dynamic in a traced ONNX graph).

Streaming (``causal=True``): the depthwise convolution pads on the left only, attention is
restricted to chunks of ``chunk_size`` frames plus ``left_context`` frames of history, and
``streaming_forward`` carries three explicit state tensors
(the layout the sherpa-onnx streaming conformer uses for the first two):

- ``attn_cache`` (num_layers, left_context, N, d_model): the normalised attention inputs of the
  last ``left_context`` frames; keys and values are recomputed from them.
- ``conv_cache`` (num_layers, cnn_module_kernel - 1, N, d_model): the last inputs of the
  depthwise convolution.
- ``processed_lens`` (N,) int64: output frames emitted so far (masks the unfilled cache).

The subsampling keeps no state: each call takes ``4 * c + pad_length`` feature frames and the
next call starts ``4 * c`` frames later (windows overlap by ``pad_length`` = 3 frames), exactly
sherpa-onnx's ``T`` / ``decode_chunk_len`` protocol (see :meth:`Conformer.streaming_window`).

Mapping to sherpa-onnx's streaming conformer (online-conformer-transducer-model.cc): its encoder
inputs (x, cached_attn, cached_conv, processed_frames) are (window, attn_cache, conv_cache,
processed_frames // 4) here, since it counts processed feature frames; its metadata is
num_encoder_layers = num_layers, encoder_dim = output_dim, cnn_module_kernel, left_context,
(T, decode_chunk_len) = streaming_window(chunk_size) and pad_length = 3.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall_ext.models.subsampling import Conv2dSubsampling, make_pad_mask


def relative_positional_encoding(num_keys: int, num_queries: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoids for relative distances ``num_keys - 1, ..., -(num_queries - 1)`` (descending).

    Row r encodes distance d = num_keys - 1 - r as ``[sin(d w_0), cos(d w_0), sin(d w_1), ...]``
    with ``w_k = 10000 ** (-2k / dim)``. Shape (num_keys + num_queries - 1, dim), float32.
    """
    distances = torch.arange(num_keys - 1, -num_queries, -1, device=device, dtype=torch.float32)
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = distances.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(angles.size(0), dim)


def chunk_attention_mask(num_frames: int, chunk_size: int, left_context: int, device: torch.device) -> Tensor:
    """(T, T) bool mask, True where query frame i may NOT attend key frame j.

    Frame i sees its whole chunk and ``left_context`` frames before the chunk start
    (all earlier frames when ``left_context < 0``).
    """
    frames = torch.arange(num_frames, device=device)
    chunk_start = torch.div(frames, chunk_size, rounding_mode="floor") * chunk_size
    blocked = frames.unsqueeze(0) >= (chunk_start + chunk_size).unsqueeze(1)
    if left_context >= 0:
        blocked = blocked | (frames.unsqueeze(0) < (chunk_start - left_context).unsqueeze(1))
    return blocked


def local_attention_mask(num_frames: int, left: int, right: int, device: torch.device) -> Tensor:
    """(T, T) bool mask, True where query frame i may NOT attend key frame j.

    Frame i sees the frames ``[i - left, i + right]`` (clipped to the sequence): a sliding window.
    """
    frames = torch.arange(num_frames, device=device)
    offset = frames.unsqueeze(0) - frames.unsqueeze(1)  # [i, j] = j - i
    return (offset < -left) | (offset > right)


class RelPositionMultiheadAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positional encoding.

    Queries are the last ``Tq`` of the ``Tk`` key positions (``Tq == Tk`` without a cache).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads != 0 or (d_model // num_heads) % 2 != 0:
            raise ValueError(f"d_model={d_model} must split into {num_heads} heads of even size")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def rel_shift(scores: Tensor, num_keys: int) -> Tensor:
        """(..., Tq, Tk + Tq - 1) indexed by distance row -> (..., Tq, Tk) indexed by key.

        out[..., i, j] = scores[..., i, Tq - 1 - i + j] (the row for distance (Tk - Tq + i) - j),
        done by padding one column and re-reading the flat buffer with a shorter row stride.
        """
        *batch, num_queries, num_rows = scores.shape
        flat = F.pad(scores, (0, 1)).reshape(*batch, num_queries * (num_rows + 1))
        flat = flat[..., num_queries - 1 : num_queries - 1 + num_queries * num_rows]
        return flat.reshape(*batch, num_queries, num_rows)[..., :num_keys]

    def forward(self, query: Tensor, key: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """query (N, Tq, D), key (N, Tk, D) (also the values' input), attn_mask bool
        broadcastable to (N, Tq, Tk), True = blocked. Returns (N, Tq, D)."""
        n, num_queries, _ = query.shape
        num_keys = key.size(1)
        heads, head_dim = self.num_heads, self.head_dim
        q = self.linear_q(query).view(n, num_queries, heads, head_dim)
        k = self.linear_k(key).view(n, num_keys, heads, head_dim).transpose(1, 2)
        v = self.linear_v(key).view(n, num_keys, heads, head_dim).transpose(1, 2)
        pos = relative_positional_encoding(num_keys, num_queries, self.d_model, query.device).to(query.dtype)
        pos = self.linear_pos(pos).view(-1, heads, head_dim).permute(1, 2, 0)  # (H, head_dim, R)

        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(2, 3))
        position = self.rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), pos), num_keys)
        scores = (content + position) / math.sqrt(head_dim)  # (N, H, Tq, Tk)
        if attn_mask is not None:
            blocked = attn_mask.unsqueeze(1)
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        context = torch.matmul(self.dropout(weights), v)  # (N, H, Tq, head_dim)
        return self.linear_out(context.transpose(1, 2).reshape(n, num_queries, self.d_model))


class FeedForward(nn.Module):
    """Linear -> Swish -> Dropout -> Linear."""

    def __init__(self, d_model: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvolutionModule(nn.Module):
    """Pointwise (2D) -> GLU -> depthwise conv -> LayerNorm -> Swish -> pointwise.

    LayerNorm (over channels) replaces the paper's BatchNorm so that training, padded batches
    and streaming see identical statistics. Padded frames are zeroed before the depthwise conv.
    """

    def __init__(self, d_model: int, kernel_size: int, causal: bool) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal = causal
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)

    def _gated(self, x: Tensor, pad_mask: Optional[Tensor]) -> Tensor:
        y = F.glu(self.pointwise_in(x), dim=-1)
        return y if pad_mask is None else y.masked_fill(pad_mask.unsqueeze(-1), 0.0)

    def _depthwise_tail(self, y: Tensor) -> Tensor:
        """y (N, T + K - 1, D) already padded/cached -> (N, T, D)."""
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        return self.pointwise_out(F.silu(self.norm(y)))

    def forward(self, x: Tensor, pad_mask: Optional[Tensor] = None) -> Tensor:
        """x (N, T, D), pad_mask (N, T) True at padding -> (N, T, D)."""
        y = self._gated(x, pad_mask)
        context = self.kernel_size - 1
        left = context if self.causal else context // 2
        return self._depthwise_tail(F.pad(y, (0, 0, left, context - left)))

    def streaming_forward(self, x: Tensor, cache: Tensor, pad_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Causal conv on a chunk: x (N, T, D), cache (N, K - 1, D) -> (out, new cache)."""
        full = torch.cat([cache, self._gated(x, pad_mask)], dim=1)
        new_cache = full[:, full.size(1) - cache.size(1) :]
        return self._depthwise_tail(full), new_cache


class ConformerBlock(nn.Module):
    """One Conformer block (macaron FFN, rel-pos MHSA, convolution, FFN, final LayerNorm)."""

    def __init__(
        self, d_model: int, num_heads: int, feedforward_dim: int, cnn_module_kernel: int, causal: bool, dropout: float
    ) -> None:
        super().__init__()
        self.norm_ff_macaron = nn.LayerNorm(d_model)
        self.ff_macaron = FeedForward(d_model, feedforward_dim, dropout)
        self.norm_mha = nn.LayerNorm(d_model)
        self.self_attn = RelPositionMultiheadAttention(d_model, num_heads, dropout)
        self.norm_conv = nn.LayerNorm(d_model)
        self.conv_module = ConvolutionModule(d_model, cnn_module_kernel, causal)
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, feedforward_dim, dropout)
        self.norm_final = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _feed_forward_and_norm(self, x: Tensor) -> Tensor:
        x = x + 0.5 * self.dropout(self.feed_forward(self.norm_ff(x)))
        return self.norm_final(x)

    def forward(self, x: Tensor, attn_mask: Tensor, pad_mask: Tensor) -> Tensor:
        """x (N, T, D); attn_mask bool broadcastable to (N, T, T); pad_mask (N, T)."""
        x = x + 0.5 * self.dropout(self.ff_macaron(self.norm_ff_macaron(x)))
        attn_in = self.norm_mha(x)
        x = x + self.dropout(self.self_attn(attn_in, attn_in, attn_mask))
        x = x + self.dropout(self.conv_module(self.norm_conv(x), pad_mask))
        return self._feed_forward_and_norm(x)

    def streaming_forward(
        self, x: Tensor, attn_cache: Tensor, conv_cache: Tensor, attn_mask: Tensor, pad_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Chunk x (N, T, D) with caches (N, left, D) and (N, K - 1, D); attn_mask (N, 1, left + T)."""
        x = x + 0.5 * self.dropout(self.ff_macaron(self.norm_ff_macaron(x)))
        attn_in = self.norm_mha(x)
        keys = torch.cat([attn_cache, attn_in], dim=1)
        new_attn_cache = keys[:, keys.size(1) - attn_cache.size(1) :]
        x = x + self.dropout(self.self_attn(attn_in, keys, attn_mask))
        conv_out, new_conv_cache = self.conv_module.streaming_forward(self.norm_conv(x), conv_cache, pad_mask)
        x = x + self.dropout(conv_out)
        return self._feed_forward_and_norm(x), new_attn_cache, new_conv_cache


class Conformer(nn.Module):
    """Conv2d subsampling (x4) followed by ``num_layers`` Conformer blocks.

    Args:
      feature_dim: input feature bins F.
      d_model: model / output dimension D.
      causal: causal depthwise convolutions and chunk-restricted attention (streaming).
      dynamic_chunk_training: in training mode, draw a chunk size per batch: full context with
        probability ``full_context_prob``, else uniform in ``1..max_chunk_size`` (needs causal).
      chunk_size: attention chunk (frames after subsampling) outside dynamic training;
        -1 = full context.
      left_context: history frames (after subsampling) a chunk may attend to; -1 = unlimited
        (not streamable). Used whenever chunking is active.
      attention: self-attention restriction of a non-causal model: "full", "chunk" (each frame
        sees only its own chunk of ``attention_chunk_frames`` frames) or "local" (frames
        ``[i - attention_left, i + attention_right]``). Convolutions are not restricted.
        Not combinable with ``causal=True`` (streaming has its own chunking).
      attention_chunk_frames: chunk of ``attention="chunk"`` in frames after subsampling (40 ms
        each; 200 = 8 s, USM).
      attention_left, attention_right: window of ``attention="local"`` in frames (USM: 128/128).
    """

    ATTENTION_MODES = ("full", "chunk", "local")

    subsampling_factor = 4

    def __init__(
        self,
        feature_dim: int = 80,
        d_model: int = 256,
        num_layers: int = 12,
        num_heads: int = 4,
        feedforward_dim: int = 1024,
        cnn_module_kernel: int = 31,
        dropout: float = 0.1,
        subsampling_channels: int = 64,
        causal: bool = False,
        dynamic_chunk_training: bool = False,
        chunk_size: int = -1,
        left_context: int = 64,
        max_chunk_size: int = 25,
        full_context_prob: float = 0.5,
        attention: str = "full",
        attention_chunk_frames: int = 200,
        attention_left: int = 128,
        attention_right: int = 128,
    ) -> None:
        super().__init__()
        if dynamic_chunk_training and not causal:
            raise ValueError("dynamic_chunk_training needs causal=True")
        if attention not in self.ATTENTION_MODES:
            raise ValueError(f"attention={attention!r}; choose from {', '.join(self.ATTENTION_MODES)}")
        if attention != "full" and causal:
            raise ValueError(f"attention={attention!r} is for non-causal models; causal=True (streaming) "
                             "restricts attention with its own chunk_size/left_context")
        if attention_chunk_frames < 1:
            raise ValueError(f"attention_chunk_frames must be >= 1, got {attention_chunk_frames}")
        if attention_left < 0 or attention_right < 0:
            raise ValueError(f"attention_left/attention_right must be >= 0, got {attention_left}/{attention_right}")
        self.feature_dim = feature_dim
        self.output_dim = d_model
        self.num_layers = num_layers
        self.cnn_module_kernel = cnn_module_kernel
        self.causal = causal
        self.dynamic_chunk_training = dynamic_chunk_training
        self.chunk_size = chunk_size
        self.left_context = left_context
        self.max_chunk_size = max_chunk_size
        self.full_context_prob = full_context_prob
        self.attention = attention
        self.attention_chunk_frames = attention_chunk_frames
        self.attention_left = attention_left
        self.attention_right = attention_right
        self.encoder_embed = Conv2dSubsampling(feature_dim, d_model, subsampling_channels, dropout)
        self.pad_length = self.encoder_embed.pad_length
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, num_heads, feedforward_dim, cnn_module_kernel, causal, dropout)
            for _ in range(num_layers)
        )

    def _attention_chunk_size(self, num_frames: int) -> int:
        """Chunk size for this forward pass; -1 means full context."""
        if not self.causal:
            return -1
        if self.training and self.dynamic_chunk_training:
            if torch.rand(()).item() < self.full_context_prob:
                return -1
            return int(torch.randint(1, self.max_chunk_size + 1, ()).item())
        return self.chunk_size

    def attention_mask(self, num_frames: int, device: torch.device) -> Optional[Tensor]:
        """(T, T) bool mask (True = blocked) of this forward pass's attention restriction, or None
        for full context. Draws the dynamic chunk size in causal training mode."""
        chunk = self._attention_chunk_size(num_frames)
        if chunk > 0:
            return chunk_attention_mask(num_frames, chunk, self.left_context, device)
        if self.attention == "chunk":
            return chunk_attention_mask(num_frames, self.attention_chunk_frames, 0, device)
        if self.attention == "local":
            return local_attention_mask(num_frames, self.attention_left, self.attention_right, device)
        return None

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, T, F) float, x_lens (N,) int64 -> (out (N, T', D), out_lens (N,))."""
        return self.forward_layers(*self.encoder_embed(x, x_lens))

    def forward_layers(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """The Conformer blocks alone on already embedded input (N, T', D): the entry point of other modalities
        (e.g. text embeddings) into the shared encoder. The attention restriction (causal chunks, or
        ``attention`` chunk/local) applies to any input, positions counted in its own frames."""
        num_frames = x.size(1)
        pad_mask = make_pad_mask(lens, num_frames)
        attn_mask = pad_mask.unsqueeze(1)
        restriction = self.attention_mask(num_frames, x.device)
        if restriction is not None:
            attn_mask = attn_mask | restriction.unsqueeze(0)
        for layer in self.layers:
            x = layer(x, attn_mask, pad_mask)
        return x, lens

    def streaming_window(self, chunk_size: int) -> tuple[int, int]:
        """(input frames per streaming call, frames to advance) for ``chunk_size`` output frames."""
        shift = chunk_size * self.subsampling_factor
        return shift + self.pad_length, shift

    def _check_streamable(self) -> None:
        if not self.causal or self.left_context < 0:
            raise RuntimeError("streaming needs causal=True and left_context >= 0")

    def init_states(self, batch_size: int = 1, device: Optional[torch.device] = None) -> list[Tensor]:
        """Zero states ``[attn_cache, conv_cache, processed_lens]`` (see module docstring)."""
        self._check_streamable()
        d_model = self.output_dim
        return [
            torch.zeros(self.num_layers, self.left_context, batch_size, d_model, device=device),
            torch.zeros(self.num_layers, self.cnn_module_kernel - 1, batch_size, d_model, device=device),
            torch.zeros(batch_size, dtype=torch.int64, device=device),
        ]

    def streaming_forward(self, x: Tensor, x_lens: Tensor, states: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Encode one window of ``4 * c + pad_length`` frames (see :meth:`streaming_window`).

        Returns (out (N, c, D), out_lens (N,), new_states). Equals frames ``[p, p + c)`` of
        :meth:`forward` with ``chunk_size = c`` (same ``left_context``), p = frames already emitted.
        """
        self._check_streamable()
        attn_cache, conv_cache, processed_lens = states
        x, lens = self.encoder_embed(x, x_lens)
        pad_mask = make_pad_mask(lens, x.size(1))
        left = attn_cache.size(1)
        unfilled = torch.arange(left, device=x.device).unsqueeze(0) < (left - processed_lens).unsqueeze(1)
        attn_mask = torch.cat([unfilled, pad_mask], dim=1).unsqueeze(1)
        new_attn, new_conv = [], []
        for i, layer in enumerate(self.layers):
            x, layer_attn, layer_conv = layer.streaming_forward(
                x, attn_cache[i].transpose(0, 1), conv_cache[i].transpose(0, 1), attn_mask, pad_mask
            )
            new_attn.append(layer_attn.transpose(0, 1))
            new_conv.append(layer_conv.transpose(0, 1))
        return x, lens, [torch.stack(new_attn), torch.stack(new_conv), processed_lens + lens]
