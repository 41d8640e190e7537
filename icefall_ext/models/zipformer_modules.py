"""Building blocks of the Zipformer encoder (Yao et al., 2023).

Every module works on batch-first tensors: (N, T, C) for sequences, and
streaming caches are kept batch-first here; the sherpa-onnx layout of the
caches is handled by :class:`icefall_ext.models.zipformer.ZipformerLayer`.

Regularisers of the reference recipe that only shape gradients (Balancer,
Whiten, ScaleGrad, the attention-score penalty) are left out; the scheduled
dropouts, layer skipping, bypass-scale limits, constant-attention rate and
feature masking (``encoder_unmasked_dim``, in the medium preset) are kept.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687 (zero at x = 0)."""
    return F.softplus(x - 1.0) - 0.08 * x - 0.313261687


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    return F.softplus(x - 4.0) - 0.08 * x - 0.035


class SwooshR(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class SwooshL(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class TrainingClock:
    """Count of training batches seen by one model, read by its scheduled values."""

    def __init__(self) -> None:
        self.batch_count = 0.0


class Scheduled:
    """A value that is piecewise-linear in the training batch count of a clock.

    Before the first point it keeps the first value, after the last point the last.
    """

    def __init__(self, clock: TrainingClock, *points: Tuple[float, float]) -> None:
        if not points:
            raise ValueError("a schedule needs at least one (batch, value) point")
        self.clock = clock
        self.points = sorted((float(b), float(v)) for b, v in points)

    def __float__(self) -> float:
        b = self.clock.batch_count
        pts = self.points
        if b <= pts[0][0]:
            return pts[0][1]
        for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
            if b <= b1:
                return v0 + (v1 - v0) * (b - b0) / (b1 - b0)
        return pts[-1][1]


class _LimitValue(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let through only the
    gradient components that would move an out-of-range value back inside."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        outward = ((x < ctx.low) & (grad > 0)) | ((x > ctx.high) & (grad < 0))
        return grad.masked_fill(outward, 0.0), None, None


def limit_value(x: Tensor, low: float, high: float) -> Tensor:
    return _LimitValue.apply(x, low, high)


def scaled_linear(
    in_features: int, out_features: int, initial_scale: float, bias: bool = True
) -> nn.Linear:
    """nn.Linear whose default initial weights are multiplied by `initial_scale`
    (bias uniform in +-0.1 * initial_scale)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(initial_scale)
        if bias:
            nn.init.uniform_(layer.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return layer


def shared_time_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on (N, T, C) whose mask is shared by all frames of a sequence."""
    if not training or p == 0.0:
        return x
    keep = (torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= p).to(x.dtype)
    return x * keep * (1.0 / (1.0 - p))


def sequence_dropout(x: Tensor, rate: float, training: bool) -> Tensor:
    """Zero the whole (N, T, C) output for a random subset of sequences (module skipping)."""
    if not training or rate == 0.0:
        return x
    keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= rate).to(x.dtype)
    return x * keep


def extend_with_cache(x: Tensor, cache: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    """Prepend `cache` (N, L, C) to `x` (N, T, C) along time and return the
    extended tensor with its last L frames (the next cache)."""
    if cache is None:
        return x, None
    full = torch.cat([cache, x], dim=1)
    return full, full[:, full.shape[1] - cache.shape[1] :]


def make_pad_mask(lens: Tensor, max_len: int) -> Tensor:
    """(N, max_len) bool, True at frames >= lens."""
    return torch.arange(max_len, device=lens.device)[None, :] >= lens[:, None]


def chunk_causal_mask(num_frames: int, chunk_size: int, left_chunks: int, device) -> Tensor:
    """(T, T) bool attention mask, True where query t may not see key s: keys in
    later chunks, or more than `left_chunks` chunks back (-1: unlimited)."""
    chunk = torch.arange(num_frames, device=device) // chunk_size
    query, key = chunk[:, None], chunk[None, :]
    masked = key > query
    if left_chunks >= 0:
        masked = masked | (key < query - left_chunks)
    return masked


class BiasNorm(nn.Module):
    """y = x * exp(log_scale) / sqrt(mean_c((x - b)^2)) over the last (channel) axis.

    The learned bias b only enters the scale, so one large constant channel cannot
    dominate the normalisation as it can in LayerNorm.
    """

    def __init__(
        self,
        num_channels: int,
        log_scale: float = 1.0,
        log_scale_min: float = -1.5,
        log_scale_max: float = 1.5,
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0.0, std=1e-4))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        log_scale = self.log_scale
        if self.training:
            log_scale = limit_value(log_scale, self.log_scale_min, self.log_scale_max)
        inv_rms = (x - self.bias).pow(2).mean(dim=-1, keepdim=True).rsqrt()
        return x * inv_rms * log_scale.exp()


class Bypass(nn.Module):
    """out = x_orig + c * (x - x_orig) with a learned per-channel scale c.

    In training c is kept within [scale_min, scale_max] and, with probability
    `skip_rate`, set to zero for a whole sequence (layer skipping).
    """

    def __init__(
        self,
        dim: int,
        clock: TrainingClock,
        skip_rate: Optional[Scheduled] = None,
        scale_min: Optional[Scheduled] = None,
        scale_max: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), 0.5))
        self.skip_rate = skip_rate
        self.scale_min = scale_min or Scheduled(clock, (0.0, 0.9), (20000.0, 0.2))
        self.scale_max = scale_max

    def forward(self, x_orig: Tensor, x: Tensor) -> Tensor:
        scale = self.scale
        if self.training:
            scale = limit_value(scale, float(self.scale_min), self.scale_max)
            rate = float(self.skip_rate) if self.skip_rate is not None else 0.0
            if rate > 0.0:
                keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= rate
                scale = scale * keep.to(x.dtype)
        return x_orig + (x - x_orig) * scale


class FeedForward(nn.Module):
    """Linear -> SwooshL -> dropout (shared over time) -> linear."""

    def __init__(self, dim: int, hidden_dim: int, dropout: Scheduled) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, hidden_dim)
        self.out_proj = scaled_linear(hidden_dim, dim, initial_scale=0.1)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        h = swoosh_l(self.in_proj(x))
        h = shared_time_dropout(h, float(self.dropout), self.training)
        return self.out_proj(h)


class CompactRelPositionalEncoding(nn.Module):
    """Embeddings of relative offsets d = key_pos - query_pos.

    Large offsets are compressed logarithmically and then mapped to a finite
    interval with atan before the Fourier features, so nearby offsets are well
    separated and distant ones differ little.  The last channel is a constant 1
    that lets the projection learn a bias.
    """

    def __init__(self, dim: int, dropout_rate: float = 0.15, length_factor: float = 1.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"pos_dim must be even, got {dim}")
        self.dim = dim
        self.length_factor = length_factor
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, num_queries: int, num_keys: int, like: Tensor) -> Tensor:
        """Returns (num_keys + num_queries - 1, dim); row n is offset n - (num_keys - 1)."""
        offsets = torch.arange(
            -(num_keys - 1), num_queries, device=like.device, dtype=torch.float32
        ).unsqueeze(1)
        c = math.sqrt(self.dim)
        compressed = c * offsets.sign() * ((offsets.abs() + c).log() - math.log(c))
        length_scale = self.length_factor * self.dim / (2.0 * math.pi)
        angle = torch.atan(compressed / length_scale)
        freqs = 1.0 + torch.arange(self.dim // 2, device=like.device, dtype=torch.float32)
        phase = angle * freqs
        pe = torch.stack([phase.cos(), phase.sin()], dim=-1).reshape(offsets.shape[0], self.dim)
        pe = torch.cat([pe[:, :-1], torch.ones_like(pe[:, -1:])], dim=1)
        return self.dropout(pe.to(like.dtype))


class RelPositionAttentionWeights(nn.Module):
    """Multi-head attention weights with relative-position scores.

    The weights are computed once per layer and shared by the non-linear
    attention and both self-attention modules.
    """

    def __init__(
        self,
        dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        in_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        # the usual head_dim**-0.5 score scale is split between query and key weights
        self.in_proj = scaled_linear(dim, in_dim, initial_scale=query_head_dim**-0.25)
        self.linear_pos = scaled_linear(
            pos_dim, num_heads * pos_head_dim, initial_scale=0.05, bias=False
        )

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        cached_key: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (N, T, C); pos_emb: (Tk + T - 1, pos_dim); key_padding_mask: (N, Tk);
        attn_mask: (T, Tk); cached_key: (N, L, H * query_head_dim) with Tk = L + T.
        Returns weights (N, H, T, Tk) and the next key cache."""
        n, t, _ = x.shape
        h, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        q, k, p = self.in_proj(x).split([h * dq, h * dq, h * dp], dim=-1)
        k, new_cache = extend_with_cache(k, cached_key)
        tk = k.shape[1]

        q = q.reshape(n, t, h, dq).transpose(1, 2)
        k = k.reshape(n, tk, h, dq).permute(0, 2, 3, 1)
        scores = torch.matmul(q, k)  # (N, H, T, Tk)

        pos = self.linear_pos(pos_emb).reshape(-1, h, dp).permute(1, 2, 0)  # (H, dp, P)
        p = p.reshape(n, t, h, dp).transpose(1, 2)
        pos_scores = torch.matmul(p, pos)  # (N, H, T, Tk + T - 1), by relative offset
        # query i sits at key position i + Tk - T; offset row of key j is j + T - 1 - i
        rows = torch.arange(t, device=x.device).unsqueeze(1)
        cols = torch.arange(tk, device=x.device).unsqueeze(0)
        index = (cols + (t - 1) - rows).expand(n, h, t, tk)
        scores = scores + pos_scores.gather(-1, index)

        # -1000 rather than -inf: exp underflows to exactly zero without NaNs
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -1000.0)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -1000.0)
        return scores.softmax(dim=-1), new_cache


class SelfAttention(nn.Module):
    """Value projection, weighting by given attention weights, output projection."""

    def __init__(self, dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(dim, num_heads * value_head_dim)
        self.out_proj = scaled_linear(num_heads * value_head_dim, dim, initial_scale=0.05)

    def forward(
        self, x: Tensor, weights: Tensor, cached_val: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        n, t, _ = x.shape
        v, new_cache = extend_with_cache(self.in_proj(x), cached_val)
        v = v.reshape(n, v.shape[1], self.num_heads, -1).transpose(1, 2)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(n, t, -1)
        return self.out_proj(out), new_cache


class NonlinAttention(nn.Module):
    """Three projections (s, v, y): tanh(s) * v is averaged over time with the
    first head's attention weights and then gated by y."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, 3 * hidden_dim)
        self.out_proj = scaled_linear(hidden_dim, dim, initial_scale=0.05)

    def forward(
        self, x: Tensor, weights: Tensor, cache: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """weights: (N, 1, T, Tk); cache: (N, L, hidden_dim)."""
        s, v, y = self.in_proj(x).chunk(3, dim=-1)
        v, new_cache = extend_with_cache(v * torch.tanh(s), cache)
        out = torch.matmul(weights[:, 0], v)
        return self.out_proj(out * y), new_cache


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise convolution that sees no frame beyond the current chunk.

    Sum of a causal convolution of half the kernel width (left context from the
    whole past) and a full-width convolution applied inside each chunk, scaled by
    learned corrections near the chunk edges.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.left_pad = kernel_size // 2
        self.causal_conv = nn.Conv1d(
            channels, channels, (kernel_size + 1) // 2, groups=channels
        )
        self.chunkwise_conv = nn.Conv1d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))

    def _chunk_scale(self, chunk_size: int) -> Tensor:
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]
        if chunk_size < self.kernel_size:
            left, right = left[:, :chunk_size], right[:, -chunk_size:]
        else:
            pad = left.new_zeros(left.shape[0], chunk_size - self.kernel_size)
            left, right = torch.cat([left, pad], dim=1), torch.cat([pad, right], dim=1)
        return 1.0 + left + right

    def forward(
        self, x: Tensor, chunk_size: int = -1, cache: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor]:
        """x: (N, C, T); cache: (N, C, kernel_size // 2) of preceding inputs (zeros
        at the start).  chunk_size <= 0 means one chunk.  Returns (y, next cache)."""
        n, c, t = x.shape
        if cache is None:
            cache = x.new_zeros(n, c, self.left_pad)
        full = torch.cat([cache, x], dim=2)
        new_cache = full[:, :, full.shape[2] - self.left_pad :]
        causal = self.causal_conv(full)

        chunk = t if chunk_size <= 0 or chunk_size > t else chunk_size
        x = F.pad(x, (0, (-t) % chunk))
        num_chunks = x.shape[2] // chunk
        x = x.reshape(n, c, num_chunks, chunk).transpose(1, 2).reshape(n * num_chunks, c, chunk)
        y = self.chunkwise_conv(x) * self._chunk_scale(chunk)
        y = y.reshape(n, num_chunks, c, chunk).transpose(1, 2).reshape(n, c, num_chunks * chunk)
        return y[:, :, :t] + causal, new_cache


class ConvolutionModule(nn.Module):
    """Gated (GLU-style, sigmoid) projection -> depthwise conv -> SwooshR -> projection."""

    def __init__(self, dim: int, kernel_size: int, causal: bool) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.causal = causal
        self.in_proj = nn.Linear(dim, 2 * dim)
        if causal:
            self.depthwise_conv = ChunkCausalDepthwiseConv1d(dim, kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(
                dim, dim, kernel_size, padding=kernel_size // 2, groups=dim
            )
        self.out_proj = scaled_linear(dim, dim, initial_scale=0.05)

    def forward(
        self,
        x: Tensor,
        pad_mask: Optional[Tensor] = None,
        chunk_size: int = -1,
        cache: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (N, T, C); pad_mask: (N, T), True at padding (zeroed before the conv)."""
        v, gate = self.in_proj(x).chunk(2, dim=-1)
        v = v * torch.sigmoid(gate)
        if pad_mask is not None:
            v = v.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        v = v.transpose(1, 2)
        if self.causal:
            v, new_cache = self.depthwise_conv(v, chunk_size=chunk_size, cache=cache)
        else:
            if cache is not None:
                raise ValueError("streaming needs a model built with causal=True")
            v, new_cache = self.depthwise_conv(v), None
        return self.out_proj(swoosh_r(v.transpose(1, 2))), new_cache


class Downsample(nn.Module):
    """Downsample time by `factor`: softmax-weighted sum of each group of frames.

    Frames at or past a sequence's length are replaced by its last valid frame
    first, so the result does not depend on how the batch was padded.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.bias = nn.Parameter(torch.zeros(factor))

    def forward(self, x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        n, t, c = x.shape
        d = self.factor
        t_out = (t + d - 1) // d
        last = (lens - 1).clamp(min=0).unsqueeze(1)
        index = torch.minimum(torch.arange(t_out * d, device=x.device).unsqueeze(0), last)
        x = x.gather(1, index.unsqueeze(-1).expand(n, t_out * d, c))
        weights = self.bias.softmax(dim=0).to(x.dtype).unsqueeze(-1)
        y = (x.reshape(n, t_out, d, c) * weights).sum(dim=2)
        return y, (lens + d - 1) // d


def upsample(x: Tensor, factor: int, num_frames: int) -> Tensor:
    """Repeat each frame `factor` times and keep the first `num_frames`."""
    n, t, c = x.shape
    x = x.unsqueeze(2).expand(n, t, factor, c).reshape(n, t * factor, c)
    return x[:, :num_frames]


class ConvNeXt(nn.Module):
    """Depthwise 7x7 conv -> 1x1 conv (x3 channels) -> SwooshL -> 1x1 conv, residual."""

    def __init__(
        self,
        channels: int,
        layerdrop_rate: Scheduled,
        hidden_ratio: int = 3,
        kernel_size: Tuple[int, int] = (7, 7),
    ) -> None:
        super().__init__()
        self.padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.layerdrop_rate = layerdrop_rate
        self.depthwise_conv = nn.Conv2d(
            channels, channels, kernel_size, padding=self.padding, groups=channels
        )
        self.pointwise_conv1 = nn.Conv2d(channels, hidden_ratio * channels, 1)
        self.pointwise_conv2 = nn.Conv2d(hidden_ratio * channels, channels, 1)
        with torch.no_grad():
            self.pointwise_conv2.weight.mul_(0.01)
            nn.init.uniform_(self.pointwise_conv2.bias, -0.001, 0.001)

    def forward(
        self, x: Tensor, cached_left_pad: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x: (N, C, T, F).  Offline (no cache) time is zero-padded on both sides.
        Streaming: the last `padding[0]` frames of x are look-ahead, the output has
        T - padding[0] frames and cached_left_pad (N, C, padding[0], F) holds the
        frames before x."""
        pt = self.padding[0]
        if cached_left_pad is None:
            residual, new_cache = x, None
            x = F.pad(x, (0, 0, pt, pt))
        else:
            t_out = x.shape[2] - pt
            residual = x[:, :, :t_out]
            x = torch.cat([cached_left_pad, x], dim=2)
            new_cache = x[:, :, t_out : t_out + pt]
        conv = self.depthwise_conv
        h = F.conv2d(x, conv.weight, conv.bias, padding=(0, self.padding[1]), groups=conv.groups)
        h = self.pointwise_conv2(swoosh_l(self.pointwise_conv1(h)))
        if self.training:
            rate = float(self.layerdrop_rate)
            keep = torch.rand(h.shape[0], 1, 1, 1, device=h.device) >= rate
            h = h * keep.to(h.dtype)
        return residual + h, new_cache


class ZipformerEmbed(nn.Module):
    """Input embedding: (N, T, F) -> (N, (T - 7) // 2, dim) at twice the frame shift.

    Three 3x3 convolutions (the second with stride 2 in time and frequency, the
    third with stride 2 in frequency), each followed by SwooshR, a ConvNeXt
    block, a projection and BiasNorm.
    """

    def __init__(
        self,
        feature_dim: int,
        out_dim: int,
        dropout: Scheduled,
        layerdrop_rate: Scheduled,
        channels: Tuple[int, int, int] = (8, 32, 128),
    ) -> None:
        super().__init__()
        if feature_dim < 7:
            raise ValueError(f"feature_dim must be >= 7, got {feature_dim}")
        c1, c2, c3 = channels
        self.channels = c3
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=(0, 1)),
            SwooshR(),
            nn.Conv2d(c1, c2, 3, stride=2),
            SwooshR(),
            nn.Conv2d(c2, c3, 3, stride=(1, 2)),
            SwooshR(),
        )
        self.convnext = ConvNeXt(c3, layerdrop_rate)
        self.out_width = ((feature_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(c3 * self.out_width, out_dim)
        self.out_norm = BiasNorm(out_dim)
        self.dropout = dropout

    @property
    def left_pad(self) -> int:
        return self.convnext.padding[0]

    def forward(
        self, x: Tensor, x_lens: Tensor, cached_left_pad: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Returns (embeddings, lengths, next cache).  With a cache (streaming), the
        last `left_pad` output frames of the convolutions are look-ahead only."""
        if x.shape[1] < 7:
            raise ValueError(f"need at least 7 input frames, got {x.shape[1]}")
        h = self.conv(x.unsqueeze(1))  # (N, C, (T - 7) // 2, W)
        lens = torch.div(x_lens - 7, 2, rounding_mode="floor").clamp(min=0)
        # frames built from padding are zeroed, as the ConvNeXt padding would be
        valid = ~make_pad_mask(lens, h.shape[2])
        h = h * valid[:, None, :, None].to(h.dtype)
        h, new_cache = self.convnext(h, cached_left_pad)
        if cached_left_pad is not None:
            lens = (lens - self.left_pad).clamp(min=0)
        n, c, t, w = h.shape
        h = self.out(h.transpose(1, 2).reshape(n, t, c * w))
        h = self.out_norm(h)
        h = shared_time_dropout(h, float(self.dropout), self.training)
        return h, lens, new_cache

    def init_cache(self, batch_size: int, device=None) -> Tensor:
        return torch.zeros(batch_size, self.channels, self.left_pad, self.out_width, device=device)
