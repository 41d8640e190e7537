"""Zipformer encoder (Yao et al., 2023, "Zipformer: A faster and better encoder
for automatic speech recognition"), written from the paper.

Stacks of layers run at different frame rates (U-Net like); each layer has
three feed-forward modules, one set of attention weights shared by a
non-linear attention and two self-attention modules, two convolution modules,
BiasNorm and learned bypasses.  The encoder includes its input embedding
(50 Hz) and the final downsampling to 25 Hz, so its overall subsampling is 4.

Streaming states follow the layout of sherpa-onnx's streaming zipformer2: per
layer (cached_key, cached_nonlin_attn, cached_val1, cached_val2, cached_conv1,
cached_conv2), then the embedding's cached left pad and processed_lens.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from icefall_ext.models.zipformer_modules import (
    BiasNorm,
    Bypass,
    CompactRelPositionalEncoding,
    ConvolutionModule,
    Downsample,
    FeedForward,
    NonlinAttention,
    RelPositionAttentionWeights,
    Scheduled,
    SelfAttention,
    TrainingClock,
    ZipformerEmbed,
    chunk_causal_mask,
    make_pad_mask,
    sequence_dropout,
    upsample,
)

IntOrList = Union[int, Sequence[int]]

# 50 Hz frames the embedding needs beyond a chunk: 7 for its convolutions and
# 2 * 3 look-ahead frames for its ConvNeXt (sherpa-onnx's T = decode_chunk_len + 13).
STREAMING_PAD_FRAMES = 7 + 2 * 3


class ZipformerLayer(nn.Module):
    """One Zipformer block (the paper's Fig. 2):

    x -> +FF1 -> +NLA -> +SA1 -> +Conv1 -> +FF2 -> bypass_mid -> +SA2 -> +Conv2
      -> +FF3 -> BiasNorm -> bypass,
    with one set of attention weights shared by NLA, SA1 and SA2.
    """

    def __init__(
        self,
        dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        cnn_module_kernel: int,
        causal: bool,
        clock: TrainingClock,
        dropout: Scheduled,
        warmup_batches: float = 4000.0,
    ) -> None:
        super().__init__()
        self.attn_weights = RelPositionAttentionWeights(
            dim, pos_dim, num_heads, query_head_dim, pos_head_dim
        )
        self.feed_forward1 = FeedForward(dim, feedforward_dim * 3 // 4, dropout)
        self.nonlin_attention = NonlinAttention(dim, 3 * dim // 4)
        self.self_attn1 = SelfAttention(dim, num_heads, value_head_dim)
        self.conv_module1 = ConvolutionModule(dim, cnn_module_kernel, causal)
        self.feed_forward2 = FeedForward(dim, feedforward_dim, dropout)
        self.bypass_mid = Bypass(dim, clock)
        self.self_attn2 = SelfAttention(dim, num_heads, value_head_dim)
        self.conv_module2 = ConvolutionModule(dim, cnn_module_kernel, causal)
        self.feed_forward3 = FeedForward(dim, feedforward_dim * 5 // 4, dropout)
        self.norm = BiasNorm(dim)
        # its skip rate (layer drop) is scheduled by the owning stack
        self.bypass = Bypass(dim, clock)

        self.attention_skip_rate = Scheduled(clock, (0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.conv_skip_rate = Scheduled(clock, (0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.ff2_skip_rate = Scheduled(clock, (0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = Scheduled(clock, (0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        # in training, sometimes attend uniformly to every unmasked frame (pushes the attention modules towards
        # also being useful as averages over time); 0.25 -> 0.025 over the encoder's warm-up (icefall: 4000 batches,
        # the medium preset's warm-up; the mini preset's short runs shorten it with the other schedules)
        self.const_attention_rate = Scheduled(clock, (0.0, 0.25), (warmup_batches, 0.025))

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        key_padding_mask: Tensor,
        attn_mask: Optional[Tensor] = None,
        chunk_size: int = -1,
        cache: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Optional[List[Tensor]]]:
        """x: (N, T, C); key_padding_mask: (N, L + T) (L cached frames, 0 offline);
        cache: the six tensors of this layer in sherpa-onnx layout, or None."""
        if cache is None:
            key_c = nla_c = val1_c = val2_c = conv1_c = conv2_c = None
        else:
            key_c, nla_c, val1_c, val2_c, conv1_c, conv2_c = cache
            key_c, val1_c, val2_c = (c.transpose(0, 1) for c in (key_c, val1_c, val2_c))
            nla_c = nla_c[0]
        frame_pad_mask = key_padding_mask[:, key_padding_mask.shape[1] - x.shape[1] :]
        train = self.training
        attn_skip = float(self.attention_skip_rate) if train else 0.0
        conv_skip = float(self.conv_skip_rate) if train else 0.0
        # one skip decision for the three attention-weighted modules
        attn_keep = sequence_dropout(torch.ones_like(x[:, :1, :1]), attn_skip, train)

        x_orig = x
        weights, key_c = self.attn_weights(x, pos_emb, key_padding_mask, attn_mask, key_c)
        if train and float(torch.rand(())) < float(self.const_attention_rate):
            allowed = (weights[:, :1] > 0).to(weights.dtype)  # (N, 1, T, Tk): masks are the same for every head
            weights = (allowed / allowed.sum(dim=-1, keepdim=True).clamp(min=1.0)).expand_as(weights)
        x = x + self.feed_forward1(x)
        na, nla_c = self.nonlin_attention(x, weights[:, 0:1], nla_c)
        x = x + na * attn_keep
        sa, val1_c = self.self_attn1(x, weights, val1_c)
        x = x + sa * attn_keep
        conv, conv1_c = self.conv_module1(x, frame_pad_mask, chunk_size, conv1_c)
        x = x + sequence_dropout(conv, conv_skip, train)
        ff2_skip = float(self.ff2_skip_rate) if train else 0.0
        x = x + sequence_dropout(self.feed_forward2(x), ff2_skip, train)
        x = self.bypass_mid(x_orig, x)
        sa, val2_c = self.self_attn2(x, weights, val2_c)
        x = x + sa * attn_keep
        conv, conv2_c = self.conv_module2(x, frame_pad_mask, chunk_size, conv2_c)
        x = x + sequence_dropout(conv, conv_skip, train)
        ff3_skip = float(self.ff3_skip_rate) if train else 0.0
        x = x + sequence_dropout(self.feed_forward3(x), ff3_skip, train)
        x = self.bypass(x_orig, self.norm(x))

        if cache is None:
            return x, None
        new_cache = [
            key_c.transpose(0, 1),
            nla_c.unsqueeze(0),
            val1_c.transpose(0, 1),
            val2_c.transpose(0, 1),
            conv1_c,
            conv2_c,
        ]
        return x, new_cache


class ZipformerStack(nn.Module):
    """Layers running at 1/downsample of the embedding frame rate.

    With downsample > 1 the input is downsampled (learned weights), passed
    through the layers, upsampled by repetition and combined with the input by
    a learned bypass.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int,
        downsample: int,
        pos_dim: int,
        clock: TrainingClock,
        warmup_begin: float,
        warmup_end: float,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_layers = num_layers
        self.downsample_factor = downsample
        self.pos_encoding = CompactRelPositionalEncoding(pos_dim)
        self.layers = nn.ModuleList(
            ZipformerLayer(dim, pos_dim, clock=clock, **layer_kwargs) for _ in range(num_layers)
        )
        # layer drop: 0.5 while each layer warms up in turn, then a small final rate
        final_rate = 0.035 * downsample**0.5
        step = (warmup_end - warmup_begin) / num_layers
        for i, layer in enumerate(self.layers):
            begin = warmup_begin + i * step
            layer.bypass.skip_rate = Scheduled(clock, (begin, 0.5), (begin + step, final_rate))
        if downsample > 1:
            self.downsample = Downsample(downsample)
            self.out_combiner = Bypass(dim, clock)

    def forward(
        self,
        x: Tensor,
        lens: Tensor,
        chunk_size: int = -1,
        left_context_chunks: int = -1,
        states: Optional[List[Tensor]] = None,
        processed_lens: Optional[Tensor] = None,
        feature_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, List[Tensor]]:
        """x: (N, T, dim) at the embedding rate; lens: (N,).  chunk_size is in
        embedding frames (-1: no chunking).  Streaming: `states` holds 6 tensors
        per layer and processed_lens (N,) the embedding frames already seen.
        feature_mask (N, 1, dim), training only: multiplies each layer's output."""
        x_orig = x
        ds = self.downsample_factor
        if ds > 1:
            x, lens = self.downsample(x, lens)
        t = x.shape[1]
        key_padding_mask = make_pad_mask(lens, t)
        attn_mask = None
        left = 0
        if states is not None:
            # cached frames that no earlier chunk has filled are masked
            left = states[0].shape[0]
            seen = torch.div(processed_lens + ds - 1, ds, rounding_mode="floor")
            distance = left - torch.arange(left, device=x.device)
            key_padding_mask = torch.cat([distance[None, :] > seen[:, None], key_padding_mask], 1)
            chunk_size = -1
        elif chunk_size > 0:
            chunk_size = chunk_size // ds
            attn_mask = chunk_causal_mask(t, chunk_size, left_context_chunks, x.device)
        pos_emb = self.pos_encoding(t, t + left, x)

        new_states: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            cache = None if states is None else states[6 * i : 6 * i + 6]
            x, new_cache = layer(x, pos_emb, key_padding_mask, attn_mask, chunk_size, cache)
            if feature_mask is not None:
                x = x * feature_mask
            if new_cache is not None:
                new_states.extend(new_cache)

        if ds > 1:
            x = upsample(x, ds, x_orig.shape[1])
            x = self.out_combiner(x_orig, x)
        return x, new_states


def _per_stack(value: IntOrList, num_stacks: int, name: str) -> List[int]:
    if isinstance(value, int):
        return [value] * num_stacks
    value = [int(v) for v in value]
    if len(value) == 1:
        return value * num_stacks
    if len(value) != num_stacks:
        raise ValueError(f"{name} has {len(value)} entries, expected 1 or {num_stacks}")
    return value


def _match_channels(x: Tensor, dim: int) -> Tensor:
    """Truncate or zero-pad the channel axis to `dim`."""
    if dim <= x.shape[-1]:
        return x[..., :dim]
    return torch.nn.functional.pad(x, (0, dim - x.shape[-1]))


class Zipformer(nn.Module):
    """Zipformer encoder: ``encoder(x (N, T, F), x_lens) -> (out (N, T', D), out_lens)``.

    T' = ((T - 7) // 2 + 1) // 2 (overall subsampling 4) and D = ``output_dim``
    = max(encoder_dim): the last stack's output, with the channels it lacks taken
    from the most recent stack that has them.

    Per-stack arguments accept an int or a list with one entry per stack.
    causal=True makes attention and convolutions chunk-causal: in training the
    chunk size and left context are drawn from `chunk_size` and
    `left_context_frames` (embedding frames at 50 Hz; -1 means full), in
    evaluation and streaming their first entries are used.  Chunked evaluation
    equals streaming when left_context_frames[0] is a multiple of chunk_size[0].
    dropout: a constant rate, or None for the schedule 0.3 -> 0.1 over 20k batches.
    The encoder counts its own training batches (buffer `batch_count`) to drive
    the scheduled regularisers, so resuming from a state_dict resumes them too;
    the trainer sets the count (`set_batch_count`) to icefall's duration-adjusted
    batch index before each update.
    """

    subsampling_factor = 4

    def __init__(
        self,
        feature_dim: int = 80,
        encoder_dim: IntOrList = (192, 256, 384, 512, 384, 256),
        num_encoder_layers: IntOrList = (2, 2, 3, 4, 3, 2),
        downsampling_factor: Sequence[int] = (1, 2, 4, 8, 4, 2),
        feedforward_dim: IntOrList = (512, 768, 1024, 1536, 1024, 768),
        num_heads: IntOrList = (4, 4, 4, 8, 4, 4),
        cnn_module_kernel: IntOrList = (31, 31, 15, 15, 15, 31),
        query_head_dim: IntOrList = 32,
        value_head_dim: IntOrList = 12,
        pos_head_dim: IntOrList = 4,
        pos_dim: int = 48,
        causal: bool = False,
        chunk_size: Sequence[int] = (-1,),
        left_context_frames: Sequence[int] = (-1,),
        dropout: Optional[float] = None,
        warmup_batches: float = 4000.0,
        embed_channels: Sequence[int] = (8, 32, 128),
        encoder_unmasked_dim: Optional[IntOrList] = None,
        feature_mask_prob: float = 0.125,
    ) -> None:
        super().__init__()
        ds = [int(d) for d in downsampling_factor]
        n = len(ds)
        self.feature_dim = feature_dim
        self.downsampling_factor = ds
        self.encoder_dim = _per_stack(encoder_dim, n, "encoder_dim")
        self.num_encoder_layers = _per_stack(num_encoder_layers, n, "num_encoder_layers")
        self.num_heads = _per_stack(num_heads, n, "num_heads")
        self.query_head_dim = _per_stack(query_head_dim, n, "query_head_dim")
        self.value_head_dim = _per_stack(value_head_dim, n, "value_head_dim")
        self.cnn_module_kernel = _per_stack(cnn_module_kernel, n, "cnn_module_kernel")
        feedforward = _per_stack(feedforward_dim, n, "feedforward_dim")
        pos_head = _per_stack(pos_head_dim, n, "pos_head_dim")
        for d in self.encoder_dim:
            if d % 4 != 0:
                raise ValueError(f"encoder dims must be multiples of 4, got {d}")
        self.output_dim = max(self.encoder_dim)
        # feature masking in training: channels above encoder_unmasked_dim[i] of stack i are zeroed for some
        # utterances (the upper half of them for p of the utterances, the rest for about 2p); None: off
        self.encoder_unmasked_dim = (None if encoder_unmasked_dim is None
                                     else _per_stack(encoder_unmasked_dim, n, "encoder_unmasked_dim"))
        if self.encoder_unmasked_dim is not None and any(
                u > d for u, d in zip(self.encoder_unmasked_dim, self.encoder_dim)):
            raise ValueError("encoder_unmasked_dim must not exceed encoder_dim")
        self.feature_mask_prob = float(feature_mask_prob)
        self.causal = causal
        self.chunk_size = [int(c) for c in chunk_size]
        self.left_context_frames = [int(c) for c in left_context_frames]
        if not causal and self.chunk_size != [-1]:
            raise ValueError("chunk_size other than [-1] needs causal=True")
        for c in self.chunk_size:
            if c > 0 and any(c % d for d in ds):
                raise ValueError(f"chunk size {c} is not a multiple of every downsampling {ds}")

        self.clock = TrainingClock()
        self.register_buffer("batch_count", torch.zeros(()))
        if dropout is None:
            drop = Scheduled(self.clock, (0.0, 0.3), (20000.0, 0.1))
        else:
            drop = Scheduled(self.clock, (0.0, float(dropout)))
        self.dropout_schedule = drop

        self.encoder_embed = ZipformerEmbed(
            feature_dim,
            self.encoder_dim[0],
            dropout=drop,
            layerdrop_rate=Scheduled(self.clock, (0.0, 0.2), (20000.0, 0.015)),
            channels=tuple(embed_channels),
        )
        # the embedding trains alone for the first slice of warm-up, then each stack in turn
        self.stacks = nn.ModuleList(
            ZipformerStack(
                dim=self.encoder_dim[i],
                num_layers=self.num_encoder_layers[i],
                downsample=ds[i],
                pos_dim=pos_dim,
                clock=self.clock,
                warmup_begin=warmup_batches * (i + 1) / (n + 1),
                warmup_end=warmup_batches * (i + 2) / (n + 1),
                num_heads=self.num_heads[i],
                query_head_dim=self.query_head_dim[i],
                pos_head_dim=pos_head[i],
                value_head_dim=self.value_head_dim[i],
                feedforward_dim=feedforward[i],
                cnn_module_kernel=self.cnn_module_kernel[i],
                causal=causal,
                dropout=drop,
                warmup_batches=warmup_batches,
            )
            for i in range(n)
        )
        self.downsample_output = Downsample(2)

    def _chunk_config(self) -> Tuple[int, int]:
        """(chunk_size, left_context_chunks) for this forward pass."""
        if not self.causal:
            return -1, -1
        if self.training:
            chunk = self.chunk_size[int(torch.randint(len(self.chunk_size), ()))]
            left = self.left_context_frames[int(torch.randint(len(self.left_context_frames), ()))]
        else:
            chunk, left = self.chunk_size[0], self.left_context_frames[0]
        if chunk <= 0:
            return -1, -1
        return chunk, (-1 if left < 0 else max(left // chunk, 1))

    def _feature_masks(self, x: Tensor) -> List[Optional[Tensor]]:
        """Per stack, a (N, 1, dim) mask of kept channels in training, or None."""
        if not self.training or self.encoder_unmasked_dim is None or self.feature_mask_prob <= 0:
            return [None] * len(self.encoder_dim)
        n, p = x.shape[0], self.feature_mask_prob
        keep_mid = (torch.rand(n, 1, 1, device=x.device) > p).to(x.dtype)
        keep_top = keep_mid * (torch.rand(n, 1, 1, device=x.device) > p).to(x.dtype)
        masks = []
        for dim, unmasked in zip(self.encoder_dim, self.encoder_unmasked_dim):
            mid = unmasked + (dim - unmasked) // 2
            mask = torch.ones(n, 1, dim, dtype=x.dtype, device=x.device)
            mask[..., unmasked:mid] = keep_mid
            mask[..., mid:] = keep_top
            masks.append(mask)
        return masks

    def _combine_outputs(self, outputs: List[Tensor]) -> Tensor:
        pieces, have = [outputs[-1]], self.encoder_dim[-1]
        for out, dim in zip(reversed(outputs[:-1]), reversed(self.encoder_dim[:-1])):
            if dim > have:
                pieces.append(out[..., have:dim])
                have = dim
        return torch.cat(pieces, dim=-1)

    def _run_stacks(
        self,
        x: Tensor,
        lens: Tensor,
        chunk_size: int,
        left_context_chunks: int,
        states: Optional[List[Tensor]] = None,
        processed_lens: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, List[Tensor]]:
        outputs, new_states, offset = [], [], 0
        masks = self._feature_masks(x)
        for stack, dim, mask in zip(self.stacks, self.encoder_dim, masks):
            x = _match_channels(x, dim)
            stack_states = None
            if states is not None:
                stack_states = states[6 * offset : 6 * (offset + stack.num_layers)]
                offset += stack.num_layers
            x, stack_new = stack(
                x, lens, chunk_size, left_context_chunks, stack_states, processed_lens, mask
            )
            outputs.append(x)
            new_states.extend(stack_new)
        out, out_lens = self.downsample_output(self._combine_outputs(outputs), lens)
        return out, out_lens, new_states

    def set_dropout(self, p: float) -> int:
        """Replace the dropout schedule (shared by the embedding and every layer) by the constant ``p``."""
        self.dropout_schedule.points = [(0.0, float(p))]
        return 1

    def set_batch_count(self, count: float) -> None:
        """Set the training-batch count that drives the scheduled regularisers (the trainer passes icefall's
        duration-adjusted count before each update; without it, each training forward counts one)."""
        self.batch_count.fill_(float(count))

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (N, T, feature_dim) with T >= 7; x_lens: (N,) int64.
        Returns (N, ((T - 7) // 2 + 1) // 2, output_dim) and the output lengths."""
        if self.training:
            self.clock.batch_count = float(self.batch_count)
            self.batch_count += 1
        h, lens, _ = self.encoder_embed(x, x_lens)
        chunk, left_chunks = self._chunk_config()
        out, out_lens, _ = self._run_stacks(h, lens, chunk, left_chunks)
        return out, out_lens

    # ---- streaming -------------------------------------------------------

    def _streaming_left_context(self) -> List[int]:
        if not self.causal:
            raise ValueError("streaming needs a model built with causal=True")
        left = self.left_context_frames[0]
        if left <= 0 or any(left % d for d in self.downsampling_factor):
            raise ValueError(
                f"streaming needs left_context_frames[0] > 0 divisible by every "
                f"downsampling factor, got {left}"
            )
        return [left // d for d in self.downsampling_factor]

    def init_states(
        self, batch_size: int = 1, device: Optional[torch.device] = None
    ) -> List[Tensor]:
        """Zero streaming states in sherpa-onnx zipformer2 order and shapes.

        Per layer: cached_key (L_i, N, num_heads*query_head_dim), cached_nonlin_attn
        (1, N, L_i, 3*dim/4), cached_val1 and cached_val2 (L_i, N,
        num_heads*value_head_dim), cached_conv1 and cached_conv2 (N, dim, kernel//2);
        then the embedding's cached left pad (N, 128, 3, ((F-1)//2-1)//2) and
        processed_lens (N,) int64.  L_i = left_context_frames[0] // downsampling_i.
        """
        lefts = self._streaming_left_context()
        states: List[Tensor] = []
        for i, left in enumerate(lefts):
            dim, heads = self.encoder_dim[i], self.num_heads[i]
            key_dim = heads * self.query_head_dim[i]
            value_dim = heads * self.value_head_dim[i]
            conv_pad = self.cnn_module_kernel[i] // 2
            for _ in range(self.num_encoder_layers[i]):
                states += [
                    torch.zeros(left, batch_size, key_dim, device=device),
                    torch.zeros(1, batch_size, left, 3 * dim // 4, device=device),
                    torch.zeros(left, batch_size, value_dim, device=device),
                    torch.zeros(left, batch_size, value_dim, device=device),
                    torch.zeros(batch_size, dim, conv_pad, device=device),
                    torch.zeros(batch_size, dim, conv_pad, device=device),
                ]
        states.append(self.encoder_embed.init_cache(batch_size, device))
        states.append(torch.zeros(batch_size, dtype=torch.int64, device=device))
        return states

    def streaming_forward(
        self, x: Tensor, x_lens: Tensor, states: List[Tensor]
    ) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """Encode one chunk.  x: (N, 2 * C + 13, F) feature frames, where C (the
        chunk in 50 Hz frames) is a multiple of every downsampling factor; the
        next chunk starts 2 * C frames later.  Returns (N, C / 2, output_dim),
        lengths, and the new states (same layout as init_states)."""
        self._streaming_left_context()
        embed_cache, processed_lens = states[-2], states[-1]
        h, lens, new_embed_cache = self.encoder_embed(x, x_lens, embed_cache)
        chunk = h.shape[1]
        for d in self.downsampling_factor + [2]:
            if chunk % d != 0:
                raise ValueError(
                    f"streaming chunk of {chunk} frames (from {x.shape[1]} feature frames) "
                    f"is not a multiple of {d}"
                )
        out, out_lens, new_states = self._run_stacks(h, lens, -1, -1, states[:-2], processed_lens)
        new_states += [new_embed_cache, processed_lens + lens.to(processed_lens.dtype)]
        return out, out_lens, new_states

    def streaming_metadata(self, decode_chunk_len: int) -> Dict[str, str]:
        """ONNX metadata that sherpa-onnx reads from a streaming zipformer2 encoder.

        decode_chunk_len: feature frames per chunk (twice the 50 Hz chunk size);
        T = decode_chunk_len + 13 frames are fed per call.
        """
        lefts = self._streaming_left_context()
        chunk = decode_chunk_len // 2
        if decode_chunk_len % 2 or any(chunk % d for d in self.downsampling_factor + [2]):
            raise ValueError(f"decode_chunk_len {decode_chunk_len} does not fit the downsampling")

        def join(values: Sequence[int]) -> str:
            return ",".join(str(v) for v in values)

        return {
            "model_type": "zipformer2",
            "version": "1",
            "comment": "streaming zipformer2 (icefall_ext)",
            "decode_chunk_len": str(decode_chunk_len),
            "T": str(decode_chunk_len + STREAMING_PAD_FRAMES),
            "num_encoder_layers": join(self.num_encoder_layers),
            "encoder_dims": join(self.encoder_dim),
            "cnn_module_kernels": join(self.cnn_module_kernel),
            "left_context_len": join(lefts),
            "query_head_dims": join(self.query_head_dim),
            "value_head_dims": join(self.value_head_dim),
            "num_heads": join(self.num_heads),
        }


PRESETS: Dict[str, Dict] = {
    # for tests: small dims, one layer per stack, runs in milliseconds
    "tiny": dict(
        feature_dim=80,
        encoder_dim=[32, 48, 64, 48],
        num_encoder_layers=[1, 1, 1, 1],
        downsampling_factor=[1, 2, 4, 2],
        feedforward_dim=[64, 96, 128, 96],
        num_heads=[2, 2, 2, 2],
        cnn_module_kernel=[7, 7, 5, 7],
        query_head_dim=8,
        value_head_dim=8,
        pos_head_dim=2,
        pos_dim=16,
        embed_channels=[8, 16, 32],
    ),
    # CPU-sized (about 4.6M parameters) for the mini corpus; runs there are a few hundred updates long, so the
    # stack-by-stack warm-up and the dropout schedule (4000 and 20000 batches at full size) are shortened
    "mini": dict(
        warmup_batches=200.0,
        dropout=0.1,
        feature_dim=80,
        encoder_dim=[96, 128, 160, 192, 160, 128],
        num_encoder_layers=[1, 1, 1, 2, 1, 1],
        downsampling_factor=[1, 2, 4, 8, 4, 2],
        feedforward_dim=[256, 320, 384, 448, 384, 320],
        num_heads=[4, 4, 4, 4, 4, 4],
        cnn_module_kernel=[31, 31, 15, 15, 15, 31],
        query_head_dim=24,
        value_head_dim=12,
        pos_head_dim=4,
        pos_dim=48,
    ),
    # icefall's LibriSpeech "normal" Zipformer (65.5M parameters with a 512/512
    # transducer decoder/joiner and 500 tokens)
    "medium": dict(
        feature_dim=80,
        encoder_dim=[192, 256, 384, 512, 384, 256],
        num_encoder_layers=[2, 2, 3, 4, 3, 2],
        downsampling_factor=[1, 2, 4, 8, 4, 2],
        feedforward_dim=[512, 768, 1024, 1536, 1024, 768],
        num_heads=[4, 4, 4, 8, 4, 4],
        cnn_module_kernel=[31, 31, 15, 15, 15, 31],
        query_head_dim=32,
        value_head_dim=12,
        pos_head_dim=4,
        pos_dim=48,
        encoder_unmasked_dim=[192, 192, 256, 256, 256, 192],  # icefall's feature masking
    ),
}
