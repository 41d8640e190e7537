"""ONNX export for sherpa-onnx (offline transducer, CTC, streaming transducer; optional int8) and decoding of the
exported files with sherpa-onnx."""

from icefall_ext.export.onnx_export import (
    EXPORT_TYPES,
    export_ctc,
    export_model,
    export_offline_transducer,
    quantize_int8,
    read_metadata,
)
from icefall_ext.export.sherpa import SherpaDecoder, detect_export_type, load_cut_audio, model_files
from icefall_ext.export.streaming import export_streaming_transducer, online_greedy_search, streaming_window

__all__ = [
    "EXPORT_TYPES",
    "SherpaDecoder",
    "detect_export_type",
    "export_ctc",
    "export_model",
    "export_offline_transducer",
    "export_streaming_transducer",
    "load_cut_audio",
    "model_files",
    "online_greedy_search",
    "quantize_int8",
    "read_metadata",
    "streaming_window",
]
