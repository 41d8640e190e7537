"""Decoding audio with sherpa-onnx from a directory written by :func:`icefall_ext.export.onnx_export.export_model`.

The export type of a directory is read from its files: ``model.onnx`` alone is CTC, an ``encoder.onnx`` whose
metadata has ``T``/``decode_chunk_len`` is a streaming transducer, any other ``encoder.onnx`` an offline one.
Hypotheses come back as token ids of the directory's ``tokens.txt``, so that they compare directly with the
PyTorch search; streaming decoding appends :data:`STREAMING_TAIL_PADDING_S` seconds of silence to each
utterance so that its last frames fill a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from icefall_ext.data.tokenizer import read_tokens_txt
from icefall_ext.export.onnx_export import EXPORT_TYPES, read_metadata

STREAMING_TAIL_PADDING_S = 0.66
SAMPLE_RATE = 16000


def detect_export_type(onnx_dir: Path) -> str:
    """The export type ("ctc", "transducer" or "streaming-transducer") of the files in ``onnx_dir``."""
    onnx_dir = Path(onnx_dir)
    has_ctc, has_encoder = (onnx_dir / "model.onnx").is_file(), (onnx_dir / "encoder.onnx").is_file()
    if has_ctc and has_encoder:
        raise ValueError(f"{onnx_dir} holds both a CTC model.onnx and a transducer encoder.onnx: pass the type")
    if has_ctc:
        return "ctc"
    if not has_encoder:
        raise FileNotFoundError(f"{onnx_dir} holds neither model.onnx nor encoder.onnx (export first)")
    meta = read_metadata(onnx_dir / "encoder.onnx")
    return "streaming-transducer" if "decode_chunk_len" in meta else "transducer"


def model_files(onnx_dir: Path, export_type: str, int8: bool = False) -> Dict[str, Path]:
    """The files of ``export_type`` in ``onnx_dir`` (``*.int8.onnx`` when ``int8``); missing ones raise."""
    if export_type not in EXPORT_TYPES:
        raise ValueError(f"unknown export type {export_type!r}; choose from {', '.join(EXPORT_TYPES)}")
    suffix = ".int8.onnx" if int8 else ".onnx"
    names = ["model"] if export_type == "ctc" else ["encoder", "decoder", "joiner"]
    files = {name: Path(onnx_dir) / f"{name}{suffix}" for name in names}
    files["tokens"] = Path(onnx_dir) / "tokens.txt"
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)} (export with --type {export_type}"
                                f"{' --int8 true' if int8 else ''})")
    return files


class SherpaDecoder:
    """A sherpa-onnx recognizer over an exported directory, decoding batches of 16 kHz waveforms to token ids."""

    def __init__(self, onnx_dir: Path, export_type: str = "auto", num_threads: int = 1, int8: bool = False,
                 decoding_method: str = "greedy_search") -> None:
        import sherpa_onnx

        self.export_type = detect_export_type(onnx_dir) if export_type == "auto" else export_type
        files = model_files(onnx_dir, self.export_type, int8)
        self.token_table = read_tokens_txt(files["tokens"])
        # sherpa-onnx may return the word-boundary mark "▁" of a symbol as a space
        self._ids = {symbol: i for i, symbol in enumerate(self.token_table)}
        for i, symbol in enumerate(self.token_table):
            self._ids.setdefault(symbol.replace("▁", " "), i)
        tokens = str(files["tokens"])
        if self.export_type == "ctc":
            if decoding_method != "greedy_search":
                raise ValueError("CTC models decode with greedy_search only")
            self.recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
                model=str(files["model"]), tokens=tokens, num_threads=num_threads)
        elif self.export_type == "transducer":
            self.recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
                encoder=str(files["encoder"]), decoder=str(files["decoder"]), joiner=str(files["joiner"]),
                tokens=tokens, num_threads=num_threads, decoding_method=decoding_method)
        else:
            self.recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
                tokens=tokens, encoder=str(files["encoder"]), decoder=str(files["decoder"]),
                joiner=str(files["joiner"]), num_threads=num_threads, decoding_method=decoding_method)

    @property
    def streaming(self) -> bool:
        return self.export_type == "streaming-transducer"

    def _to_ids(self, symbols: Sequence[str]) -> List[int]:
        return [self._ids[s] for s in symbols]

    def decode(self, waveforms: Sequence[np.ndarray]) -> List[List[int]]:
        """Token ids of the best hypothesis of each mono 16 kHz float waveform, decoded as one batch."""
        if self.streaming:
            return self._decode_online(waveforms)
        streams = []
        for samples in waveforms:
            stream = self.recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, np.asarray(samples, dtype=np.float32))
            streams.append(stream)
        self.recognizer.decode_streams(streams)
        return [self._to_ids(s.result.tokens) for s in streams]

    def _decode_online(self, waveforms: Sequence[np.ndarray]) -> List[List[int]]:
        tail = np.zeros(int(STREAMING_TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
        streams = []
        for samples in waveforms:
            stream = self.recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, np.asarray(samples, dtype=np.float32))
            stream.accept_waveform(SAMPLE_RATE, tail)
            stream.input_finished()
            streams.append(stream)
        while True:
            ready = [s for s in streams if self.recognizer.is_ready(s)]
            if not ready:
                break
            self.recognizer.decode_streams(ready)
        return [self._to_ids(self.recognizer.get_result_all(s).tokens) for s in streams]


def streaming_padded(samples: np.ndarray) -> np.ndarray:
    """``samples`` followed by the tail padding :class:`SherpaDecoder` adds in streaming mode."""
    tail = np.zeros(int(STREAMING_TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([np.asarray(samples, dtype=np.float32).reshape(-1), tail])


def load_cut_audio(cuts) -> Tuple[List[np.ndarray], List[float]]:
    """Mono 16 kHz float32 samples and durations of lhotse ``cuts`` (resampled where needed)."""
    waveforms, durations = [], []
    for cut in cuts:
        samples = cut.resample(SAMPLE_RATE).load_audio()
        waveforms.append(samples.mean(axis=0).astype(np.float32))
        durations.append(cut.duration)
    return waveforms, durations
