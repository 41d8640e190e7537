"""Streaming transducer export for sherpa-onnx's ``OnlineRecognizer.from_transducer``, and the same online
protocol run in PyTorch (the reference the exported files are checked against).

The online protocol (sherpa-onnx's online transducer recognizer): feature frames are fed in windows of ``T``
frames that start ``decode_chunk_len`` frames apart, a window being run only while ``start + T`` is below the
number of frames available; the encoder carries explicit states from window to window, and greedy search keeps
its decoder context across windows, emitting at most one symbol per encoder frame.

Conformer (model_type ``conformer``): encoder inputs ``x (N, T, F)``, ``cached_attn (L, left, N, D)``,
``cached_conv (L, K-1, N, D)``, ``processed_frames (N,)`` int64 (feature frames consumed so far); outputs
``encoder_out (N, decode_chunk_len/4, joiner_dim)``, ``new_cached_attn``, ``new_cached_conv``; metadata
``T, decode_chunk_len, num_encoder_layers, encoder_dim, cnn_module_kernel, left_context, pad_length``.

Zipformer (model_type ``zipformer2``): encoder inputs ``x`` then the states of
:meth:`~icefall_ext.models.zipformer.Zipformer.init_states` (6 per layer, the embedding cache, processed_lens),
outputs ``encoder_out`` then the new states in the same order; metadata from ``Zipformer.streaming_metadata``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from icefall_ext.export.onnx_export import export_decoder_joiner, save_onnx, trace_to_onnx

# sherpa-onnx allocates the streaming zipformer2 embedding cache with this many channels
SHERPA_ZIPFORMER_EMBED_CHANNELS = 128


def streaming_window(encoder: nn.Module, decode_chunk_len: int) -> Tuple[int, int]:
    """(T, shift): feature frames per streaming call and frames between call starts."""
    if decode_chunk_len <= 0:
        raise ValueError(f"decode_chunk_len must be positive, got {decode_chunk_len}")
    if hasattr(encoder, "streaming_window"):  # conformer: T = decode_chunk_len + pad_length
        if decode_chunk_len % encoder.subsampling_factor:
            raise ValueError(f"decode_chunk_len {decode_chunk_len} is not a multiple of the subsampling factor "
                             f"{encoder.subsampling_factor}")
        return encoder.streaming_window(decode_chunk_len // encoder.subsampling_factor)
    return int(encoder.streaming_metadata(decode_chunk_len)["T"]), decode_chunk_len


class ConformerStreamingEncoder(nn.Module):
    """sherpa-onnx's online conformer encoder on top of :meth:`Conformer.streaming_forward`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.encoder_proj = model.joiner.encoder_proj

    def forward(self, x: Tensor, cached_attn: Tensor, cached_conv: Tensor,
                processed_frames: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x_lens = torch.full_like(processed_frames, x.shape[1])
        processed_lens = torch.div(processed_frames, self.encoder.subsampling_factor, rounding_mode="floor")
        out, _, (new_attn, new_conv, _) = self.encoder.streaming_forward(
            x, x_lens, [cached_attn, cached_conv, processed_lens]
        )
        return self.encoder_proj(out), new_attn, new_conv


class ZipformerStreamingEncoder(nn.Module):
    """sherpa-onnx's online zipformer2 encoder on top of :meth:`Zipformer.streaming_forward`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.encoder_proj = model.joiner.encoder_proj

    def forward(self, x: Tensor, states: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        x_lens = torch.full_like(states[-1], x.shape[1])
        out, _, new_states = self.encoder.streaming_forward(x, x_lens, states)
        return self.encoder_proj(out), new_states


def _conformer_export(model: nn.Module, decode_chunk_len: int) -> Tuple[object, Dict[str, object]]:
    encoder = model.encoder
    window, shift = streaming_window(encoder, decode_chunk_len)
    attn, conv, _ = encoder.init_states(batch_size=2)
    x = torch.randn(2, window, encoder.feature_dim)
    processed = torch.tensor([0, shift], dtype=torch.int64)
    proto = trace_to_onnx(
        ConformerStreamingEncoder(model),
        (x, attn, conv, processed),
        ["x", "cached_attn", "cached_conv", "processed_frames"],
        ["encoder_out", "new_cached_attn", "new_cached_conv"],
        {"x": {0: "N"}, "cached_attn": {2: "N"}, "cached_conv": {2: "N"}, "processed_frames": {0: "N"},
         "encoder_out": {0: "N"}, "new_cached_attn": {2: "N"}, "new_cached_conv": {2: "N"}},
    )
    meta = {
        "model_type": "conformer",
        "T": window,
        "decode_chunk_len": shift,
        "num_encoder_layers": encoder.num_layers,
        "encoder_dim": encoder.output_dim,
        "cnn_module_kernel": encoder.cnn_module_kernel,
        "left_context": encoder.left_context,
        "pad_length": encoder.pad_length,
    }
    return proto, meta


# batch axis of each per-layer zipformer state: cached_key, cached_nonlin_attn, cached_val1, cached_val2,
# cached_conv1, cached_conv2
_ZIPFORMER_LAYER_STATES = (("cached_key", 1), ("cached_nonlin_attn", 1), ("cached_val1", 1), ("cached_val2", 1),
                           ("cached_conv1", 0), ("cached_conv2", 0))


def _zipformer_export(model: nn.Module, decode_chunk_len: int) -> Tuple[object, Dict[str, object]]:
    encoder = model.encoder
    meta: Dict[str, object] = dict(encoder.streaming_metadata(decode_chunk_len))
    states = encoder.init_states(batch_size=2)
    embed_channels = states[-2].shape[1]
    if embed_channels != SHERPA_ZIPFORMER_EMBED_CHANNELS:
        raise ValueError(f"sherpa-onnx's streaming zipformer2 expects an embedding cache of "
                         f"{SHERPA_ZIPFORMER_EMBED_CHANNELS} channels; this model has {embed_channels} "
                         f"(embed_channels must end with {SHERPA_ZIPFORMER_EMBED_CHANNELS})")
    num_layers = (len(states) - 2) // len(_ZIPFORMER_LAYER_STATES)
    names, axes = [], []
    for layer in range(num_layers):
        for name, axis in _ZIPFORMER_LAYER_STATES:
            names.append(f"{name}_{layer}")
            axes.append(axis)
    names += ["embed_states", "processed_lens"]
    axes += [0, 0]
    dynamic = {"x": {0: "N"}, "encoder_out": {0: "N"}}
    for name, axis in zip(names, axes):
        dynamic[name] = {axis: "N"}
        dynamic[f"new_{name}"] = {axis: "N"}
    x = torch.randn(2, int(meta["T"]), encoder.feature_dim)
    proto = trace_to_onnx(
        ZipformerStreamingEncoder(model), (x, states), ["x"] + names,
        ["encoder_out"] + [f"new_{n}" for n in names], dynamic,
    )
    return proto, meta


def export_streaming_transducer(model: nn.Module, out_dir: Path, decode_chunk_len: int = 32) -> List[Path]:
    """``encoder.onnx`` (streaming), ``decoder.onnx``, ``joiner.onnx`` for ``OnlineRecognizer.from_transducer``.

    The encoder must be causal with a finite left context (a model trained for streaming).
    """
    if model.joiner is None:
        raise ValueError("streaming export needs a transducer head (decoder/joiner)")
    encoder = model.encoder
    if not getattr(encoder, "causal", False):
        raise ValueError("streaming export needs a causal encoder (train with causal=True)")
    if hasattr(encoder, "streaming_window"):
        proto, meta = _conformer_export(model, decode_chunk_len)
    elif hasattr(encoder, "streaming_metadata"):
        proto, meta = _zipformer_export(model, decode_chunk_len)
    else:
        raise ValueError(f"{type(encoder).__name__} has no streaming export")
    meta.update(version="1", model_author="icefall_ext", comment=f"streaming {meta['model_type']} transducer")
    paths = [save_onnx(proto, Path(out_dir) / "encoder.onnx", meta)]
    return paths + export_decoder_joiner(model, out_dir)


@torch.no_grad()
def online_greedy_search(model: nn.Module, features: Tensor, decode_chunk_len: int = 32) -> List[int]:
    """Greedy transducer search of one utterance's features (T, F) following the online protocol above.

    This is what sherpa-onnx's online recognizer computes with the exported files, with the PyTorch model.
    """
    encoder, decoder, joiner = model.encoder, model.decoder, model.joiner
    device = features.device
    window, shift = streaming_window(encoder, decode_chunk_len)
    states = encoder.init_states(batch_size=1, device=device)
    blank, context_size = decoder.blank_id, decoder.context_size
    hyp = [blank] * context_size

    def decoder_out() -> Tensor:
        y = torch.tensor([hyp[-context_size:]], dtype=torch.int64, device=device)
        return joiner.decoder_proj(decoder(y, need_pad=False)).squeeze(1)

    dec = decoder_out()
    window_lens = torch.full((1,), window, dtype=torch.int64, device=device)
    start = 0
    while start + window < features.shape[0]:
        out, _, states = encoder.streaming_forward(features[start : start + window].unsqueeze(0), window_lens, states)
        for frame in joiner.encoder_proj(out)[0]:
            token = int(joiner(frame.unsqueeze(0), dec, project_input=False).argmax(dim=-1))
            if token != blank:
                hyp.append(token)
                dec = decoder_out()
        start += shift
    return hyp[context_size:]
