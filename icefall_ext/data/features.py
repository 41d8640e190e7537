"""Log-mel filter-bank features identical to what sherpa-onnx computes at inference.

sherpa-onnx computes its features with kaldi-native-fbank; training here uses the very same library and settings
(:class:`FbankOptions`), so there is no train/deploy mismatch. Features are stored with lhotse's
``LilcomChunkyWriter`` and referenced from lhotse cut manifests.

Audio that cannot be read (corrupt, truncated or missing file), digital silence and audio too short for one frame
are reported by cut id and skipped: one bad file never stops a feature stage, and nothing disappears silently
(see :class:`FeatureReport`).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import kaldi_native_fbank as knf
import numpy as np
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.features.base import FeatureExtractor, Features, register_extractor
from lhotse.features.kaldi.extractors import Fbank as LhotseFbank
from tqdm import tqdm

logger = logging.getLogger(__name__)


@dataclass
class FbankOptions:
    """Front-end settings; the defaults are sherpa-onnx's (FeatureExtractorConfig)."""

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    dither: float = 0.0
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0
    remove_dc_offset: bool = True
    window_type: str = "povey"

    @property
    def frame_shift(self) -> float:
        return self.frame_shift_ms / 1000.0

    def to_knf(self) -> "knf.FbankOptions":
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = self.sampling_rate
        opts.frame_opts.frame_shift_ms = self.frame_shift_ms
        opts.frame_opts.frame_length_ms = self.frame_length_ms
        opts.frame_opts.dither = self.dither
        opts.frame_opts.snip_edges = self.snip_edges
        opts.frame_opts.remove_dc_offset = self.remove_dc_offset
        opts.frame_opts.window_type = self.window_type
        opts.mel_opts.num_bins = self.num_mel_bins
        opts.mel_opts.low_freq = self.low_freq
        opts.mel_opts.high_freq = self.high_freq
        return opts


def compute_fbank(samples: np.ndarray, opts: FbankOptions = FbankOptions()) -> np.ndarray:
    """Fbank of mono float samples in [-1, 1] at ``opts.sampling_rate``: (num_frames, num_mel_bins) float32."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    fbank = knf.OnlineFbank(opts.to_knf())
    fbank.accept_waveform(opts.sampling_rate, samples)
    fbank.input_finished()
    n = fbank.num_frames_ready
    if n == 0:
        return np.zeros((0, opts.num_mel_bins), dtype=np.float32)
    return np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32)


@register_extractor
class KnfFbank(FeatureExtractor):
    """The same features as a lhotse extractor (type ``kaldi-native-fbank``), so that lhotse can compute them
    on the fly and mix cuts in the feature domain (noise augmentation) with the log-mel rules of its Fbank."""

    name = "kaldi-native-fbank"
    config_type = FbankOptions

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def extract(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        if sampling_rate != self.config.sampling_rate:
            raise ValueError(f"expected {self.config.sampling_rate} Hz audio, got {sampling_rate} Hz")
        return compute_fbank(samples, self.config)

    mix = staticmethod(LhotseFbank.mix)
    compute_energy = staticmethod(LhotseFbank.compute_energy)


def num_frames(duration: float, opts: FbankOptions = FbankOptions()) -> int:
    """Frames kaldi-native-fbank yields for ``duration`` seconds with snip_edges=False."""
    return int(math.floor(duration * opts.sampling_rate / (opts.frame_shift_ms * opts.sampling_rate / 1000) + 0.5))


@dataclass
class FeatureReport:
    """What a feature run did: cut counts and the ids of unreadable audio with the reason."""

    num_ok: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def merge(self, other: "FeatureReport") -> None:
        self.num_ok += other.num_ok
        self.failed.extend(other.failed)

    def log(self, name: str) -> None:
        logger.info("%s: computed features for %d cuts, skipped %d (unreadable, silent or too short)", name,
                    self.num_ok, len(self.failed))
        for cut_id, why in self.failed:
            logger.warning("%s: skipped cut %s: %s", name, cut_id, why)


def _extract_part(args) -> Tuple[CutSet, FeatureReport]:
    cuts, storage_path, opts_dict, position = args
    opts = FbankOptions(**opts_dict)
    report = FeatureReport()
    done = []
    with LilcomChunkyWriter(storage_path) as writer:
        for cut in tqdm(cuts, desc=Path(storage_path).name, position=position, leave=False, mininterval=2.0):
            try:
                samples = cut.resample(opts.sampling_rate).load_audio()
                if samples.shape[0] > 1:
                    samples = samples.mean(axis=0, keepdims=True)
                if not np.any(samples):
                    raise ValueError("digital silence (every sample is zero)")
                feats = compute_fbank(samples[0], opts)
                if feats.shape[0] == 0:
                    raise ValueError("audio too short for one frame")
                if not np.isfinite(feats).all():
                    raise ValueError("non-finite features")
            except Exception as e:  # noqa: BLE001 - any decoding failure is reported, never fatal
                report.failed.append((cut.id, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
                continue
            done.append(_attach(cut, writer, feats, opts))
            report.num_ok += 1
    return CutSet.from_cuts(done), report


def _attach(cut, writer: LilcomChunkyWriter, feats: np.ndarray, opts: FbankOptions):
    """Store ``feats`` and return the cut with a ``features`` manifest pointing at it."""
    key = writer.write(cut.id, feats)
    cut.features = Features(
        type="kaldi-native-fbank",
        num_frames=feats.shape[0],
        num_features=feats.shape[1],
        frame_shift=opts.frame_shift,
        sampling_rate=opts.sampling_rate,
        start=cut.start,
        duration=cut.duration,
        storage_type=writer.name,
        storage_path=str(writer.storage_path),
        storage_key=key,
        recording_id=cut.recording_id,
        channels=0,
    )
    return cut


def compute_and_store_fbank(
    cuts: CutSet,
    storage_dir: Path,
    name: str,
    opts: FbankOptions = FbankOptions(),
    num_jobs: int = 2,
    executor: Optional[Executor] = None,
) -> Tuple[CutSet, FeatureReport]:
    """Compute fbank for every cut in ``num_jobs`` parts; return the cuts that have features and a report.

    The parts run in ``executor`` when given (reuse one pool across many manifests), else in a new process pool.
    """
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    cuts = cuts.to_eager()
    num_jobs = max(1, min(num_jobs, len(cuts)))
    parts = cuts.split(num_jobs) if num_jobs > 1 else [cuts]
    jobs = [(part, str(storage_dir / f"{name}_feats_{i}"), asdict(opts), i) for i, part in enumerate(parts)]
    if executor is not None:
        outputs = list(executor.map(_extract_part, jobs))
    elif num_jobs == 1:
        outputs = list(map(_extract_part, jobs))
    else:
        with ProcessPoolExecutor(num_jobs) as pool:
            outputs = list(pool.map(_extract_part, jobs))
    report = FeatureReport()
    for _, part_report in outputs:
        report.merge(part_report)
    report.log(name)
    return CutSet.from_cuts(c for part_cuts, _ in outputs for c in part_cuts), report
