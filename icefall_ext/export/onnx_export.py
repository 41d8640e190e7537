"""ONNX export of :class:`~icefall_ext.models.asr_model.AsrModel` in the layouts sherpa-onnx loads as they are.

Offline transducer (``OfflineRecognizer.from_transducer``)::

    encoder.onnx  x (N, T, F) float, x_lens (N,) int64 -> encoder_out (N, T', joiner_dim), encoder_out_lens (N,)
    decoder.onnx  y (N, context_size) int64 -> decoder_out (N, joiner_dim)
    joiner.onnx   encoder_out (N, joiner_dim), decoder_out (N, joiner_dim) -> logit (N, vocab_size)

The joiner's input projections are folded into the encoder and decoder graphs, so the joiner graph is only
``output_linear(tanh(a + b))``. sherpa-onnx starts decoding from the context ``[-1, ..., -1, blank]``; the exported
decoder maps negative ids to the blank, whose embedding is fixed at zero, so its first output equals the one of
an all-blank context (what our PyTorch search uses).

CTC (``OfflineRecognizer.from_zipformer_ctc``; any encoder, the contract is only the I/O)::

    model.onnx    x (N, T, F), x_lens (N,) -> log_probs (N, T', vocab_size), log_probs_len (N,) int64

A model with per-language adapters (:mod:`icefall_ext.models.adapters`) is exported for one language at a time
(``adapter_language``): that language's adapters are folded into the encoder graph with a constant language, so
each language gets an ordinary model with the I/O above (metadata ``adapter_language``); streaming export of
adapted models is not supported.

Streaming transducers are in :mod:`icefall_ext.export.streaming`. Every file is written through a temporary
file and a rename, metadata included, so an interrupted export never leaves a file a rerun would trust.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import onnx
import torch
from torch import Tensor, nn

from icefall_ext.data.tokenizer import write_tokens_txt

logger = logging.getLogger(__name__)

OPSET = 17
EXPORT_TYPES = ("transducer", "ctc", "streaming-transducer")


class OfflineEncoder(nn.Module):
    """Encoder followed by the joiner's encoder projection."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.encoder_proj = model.joiner.encoder_proj

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        out, out_lens = self.encoder(x, x_lens)
        return self.encoder_proj(out), out_lens


class ProjectedDecoder(nn.Module):
    """Stateless decoder on one context followed by the joiner's decoder projection: (N, C) -> (N, joiner_dim)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.decoder_proj = model.joiner.decoder_proj

    def forward(self, y: Tensor) -> Tensor:
        # negative ids (sherpa-onnx's "no token yet") become the blank, whose embedding is zero
        out = self.decoder(y.clamp(min=0), need_pad=False).squeeze(1)
        return self.decoder_proj(out)


class ProjectedJoiner(nn.Module):
    """Joiner on already projected inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out, project_input=False)


class CtcModel(nn.Module):
    """Encoder followed by the CTC head (log-softmax)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.ctc = model.ctc

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        out, out_lens = self.encoder(x, x_lens)
        return self.ctc(out, out_lens), out_lens


def encoder_model_type(config: Mapping) -> str:
    """sherpa-onnx ``model_type`` of an encoder: "conformer" or "zipformer2"."""
    return {"conformer": "conformer", "zipformer": "zipformer2"}[config["encoder"]]


def save_onnx(proto: onnx.ModelProto, path: Path, metadata: Mapping[str, object] = ()) -> Path:
    """Add ``metadata`` (stringified) to ``proto`` and write it atomically to ``path``."""
    add_metadata(proto, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def add_metadata(proto: onnx.ModelProto, metadata: Mapping[str, object]) -> None:
    """Set (or replace) custom metadata entries of an ONNX model."""
    metadata = dict(metadata)
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)


def read_metadata(path: Path) -> Dict[str, str]:
    """Custom metadata of an ONNX file (without loading the weights)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def trace_to_onnx(
    module: nn.Module,
    args: tuple,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> onnx.ModelProto:
    """Export ``module`` (eval mode, on CPU) with the legacy TorchScript exporter into an in-memory model."""
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
        )
    module.eval()  # the exporter restores the mode it found recursively, which may be training
    return onnx.load_from_string(buf.getvalue())


def _example_features(config: Mapping, batch: int = 2, frames: int = 100) -> Tuple[Tensor, Tensor]:
    x = torch.randn(batch, frames, config["feature_dim"])
    x_lens = torch.tensor([frames] + [frames - 17] * (batch - 1), dtype=torch.int64)
    return x, x_lens


def export_decoder_joiner(model: nn.Module, out_dir: Path) -> List[Path]:
    """``decoder.onnx`` (metadata vocab_size, context_size) and ``joiner.onnx`` (metadata joiner_dim)."""
    out_dir = Path(out_dir)
    context_size = model.decoder.context_size
    y = torch.zeros(2, context_size, dtype=torch.int64)
    decoder = trace_to_onnx(
        ProjectedDecoder(model), (y,), ["y"], ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}}
    )
    joiner_dim = model.joiner.output_linear.in_features
    enc, dec = torch.randn(3, joiner_dim), torch.randn(3, joiner_dim)
    joiner = trace_to_onnx(
        ProjectedJoiner(model),
        (enc, dec),
        ["encoder_out", "decoder_out"],
        ["logit"],
        {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
    )
    return [
        save_onnx(decoder, out_dir / "decoder.onnx", {"vocab_size": model.vocab_size, "context_size": context_size}),
        save_onnx(joiner, out_dir / "joiner.onnx", {"joiner_dim": joiner_dim}),
    ]


def export_offline_transducer(model: nn.Module, config: Mapping, out_dir: Path,
                              metadata: Mapping[str, object] = ()) -> List[Path]:
    """``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` for sherpa-onnx's offline transducer."""
    if model.joiner is None:
        raise ValueError("this model has no transducer head (decoder/joiner); export it with type ctc")
    x, x_lens = _example_features(config)
    encoder = trace_to_onnx(
        OfflineEncoder(model),
        (x, x_lens),
        ["x", "x_lens"],
        ["encoder_out", "encoder_out_lens"],
        {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"}, "encoder_out_lens": {0: "N"}},
    )
    meta = {
        "model_type": encoder_model_type(config),
        "version": "1",
        "model_author": "icefall_ext",
        "comment": f"offline {config['encoder']} transducer",
        "subsampling_factor": model.encoder.subsampling_factor,
        **dict(metadata),
    }
    paths = [save_onnx(encoder, Path(out_dir) / "encoder.onnx", meta)]
    return paths + export_decoder_joiner(model, out_dir)


def export_ctc(model: nn.Module, config: Mapping, out_dir: Path, metadata: Mapping[str, object] = ()) -> List[Path]:
    """``model.onnx`` for ``OfflineRecognizer.from_zipformer_ctc`` (metadata model_type=zipformer2_ctc)."""
    if model.ctc is None:
        raise ValueError("this model has no CTC head; export it with type transducer")
    x, x_lens = _example_features(config)
    proto = trace_to_onnx(
        CtcModel(model),
        (x, x_lens),
        ["x", "x_lens"],
        ["log_probs", "log_probs_len"],
        {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T_out"}, "log_probs_len": {0: "N"}},
    )
    meta = {
        "model_type": "zipformer2_ctc",
        "version": "1",
        "model_author": "icefall_ext",
        "comment": f"{config['encoder']} CTC",
        "vocab_size": model.vocab_size,
        "subsampling_factor": model.encoder.subsampling_factor,
        **dict(metadata),
    }
    return [save_onnx(proto, Path(out_dir) / "model.onnx", meta)]


def quantize_int8(path: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul weights: ``name.onnx`` -> ``name.int8.onnx`` (metadata kept)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    out = path.with_name(path.stem + ".int8.onnx")
    tmp = out.with_name(out.name + ".tmp")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantiser logs every tensor it skips on the root logger
    try:
        quantize_dynamic(str(path), str(tmp), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    return save_onnx(proto, out, read_metadata(path))


def export_model(
    model: nn.Module,
    config: Mapping,
    token_table: Sequence[str],
    out_dir: Path,
    export_type: str,
    *,
    decode_chunk_len: int = 32,
    int8: bool = False,
    adapter_language: Optional[str] = None,
) -> List[Path]:
    """Export ``model`` as ``export_type`` (one of :data:`EXPORT_TYPES`) into ``out_dir`` with ``tokens.txt``.

    A model with per-language adapters needs ``adapter_language``: the language whose adapters are folded in.
    Returns the written paths (the ``*.int8.onnx`` files too when ``int8``).
    """
    if export_type not in EXPORT_TYPES:
        raise ValueError(f"unknown export type {export_type!r}; choose from {', '.join(EXPORT_TYPES)}")
    if len(token_table) != model.vocab_size:
        raise ValueError(f"the token table has {len(token_table)} symbols but the model's vocabulary is "
                         f"{model.vocab_size}")
    if getattr(model, "layer_mix", None) is not None:
        raise ValueError("ONNX export of a model whose heads read a layer mix (layer_mix) is not supported")
    model = model.to("cpu").eval()
    metadata = {}
    adapters = getattr(model, "adapters", None)
    if adapters is not None:
        if adapter_language is None:
            raise ValueError(f"this model has per-language adapters ({', '.join(adapters.languages)}): export one "
                             f"language at a time with --adapter-language")
        if export_type == "streaming-transducer":
            raise ValueError("streaming export of a model with per-language adapters is not supported")
        from icefall_ext.models.adapters import fold_language

        model = fold_language(model, adapter_language).eval()
        metadata["adapter_language"] = adapter_language
    elif adapter_language is not None:
        raise ValueError(f"--adapter-language {adapter_language}: this model has no per-language adapters")
    out_dir = Path(out_dir)
    if export_type == "transducer":
        paths = export_offline_transducer(model, config, out_dir, metadata)
    elif export_type == "ctc":
        paths = export_ctc(model, config, out_dir, metadata)
    else:
        from icefall_ext.export.streaming import export_streaming_transducer

        paths = export_streaming_transducer(model, out_dir, decode_chunk_len)
    if int8:
        paths += [quantize_int8(p) for p in list(paths)]
    write_tokens_txt(list(token_table), out_dir / "tokens.txt")
    paths.append(out_dir / "tokens.txt")
    logger.info("exported %s to %s: %s", export_type, out_dir, ", ".join(p.name for p in paths))
    return paths
