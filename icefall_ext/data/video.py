"""Video for audio-visual recipes: ffmpeg decoding into grayscale uint8 frames stored as lhotse ``TemporalArray``s.

lhotse's own video loading (``Recording.load_video``) needs ``torchaudio.io.StreamReader``, which the torch build
here does not have, so videos are decoded once, at preparation time, with the ``ffmpeg``/``ffprobe`` command-line
tools: :func:`read_video_frames` gives a ``(T, size, size)`` uint8 array (optionally cropped first), which is
stored with a lhotse array writer as a ``TemporalArray`` (``frame_shift = 1 / fps``, ``temporal_dim = 0``,
``start = 0``: the array covers its recording from the beginning).

Video index (one per manifest part, written by ``local/prepare_<corpus>.py`` beside the recordings and
supervisions): ``<prefix>_video_<part>.jsonl.gz``, one JSON object per line,
``{"recording_id": <id>, "array": <TemporalArray.to_dict()>}``. :func:`attach_video` puts these arrays into the
cuts as ``cut.custom["video_frames"]`` (not ``"video"``: ``MonoCut.load_video`` is lhotse's recording-video
loader), so that ``cut.load_custom("video_frames")`` returns the cut's frames and
``lhotse.dataset.collation.collate_custom_field(cuts, "video_frames", pad_value=0)`` a ``(B, T, H, W)`` batch
(lhotse promotes uint8 to int64 there). ``icefall_ext.bin.compute_fbank`` attaches the index when it exists.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from lhotse import CutSet
    from lhotse.array import TemporalArray

logger = logging.getLogger(__name__)

VIDEO_FIELD = "video_frames"
Crop = Tuple[Union[int, float], Union[int, float], Union[int, float], Union[int, float]]


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a video file; ``duration`` is ``num_frames / fps`` (constant frame rate)."""

    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    has_audio: bool
    audio_duration: Optional[float] = None  # the audio stream's duration when the container gives it


def _run(command: Sequence[str], path: Union[str, Path], what: str, stdin: Optional[bytes] = None) -> bytes:
    """Run an ffmpeg tool; a RuntimeError naming ``path`` and the tail of the tool's stderr if it fails."""
    try:
        result = subprocess.run(list(command), input=stdin, capture_output=True, check=False)
    except FileNotFoundError as error:
        raise RuntimeError(f"{what} {path}: {command[0]} is not installed ({error})") from error
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{what} {path} failed (exit {result.returncode}): {' | '.join(tail) or 'no message'}")
    return result.stdout


def probe_video(path: Union[str, Path]) -> VideoInfo:
    """Frame rate (``r_frame_rate``), frame count (packets counted by ``ffprobe -count_packets``), size and audio
    presence of the first video stream of ``path``."""
    if not Path(path).is_file():
        raise RuntimeError(f"probing {path}: no such file")
    out = _run(["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                "stream=codec_type,r_frame_rate,nb_read_packets,width,height,duration", "-of", "json", str(path)],
               path, "probing")
    streams = json.loads(out or b"{}").get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise RuntimeError(f"probing {path}: no video stream")
    try:
        fps = float(Fraction(video["r_frame_rate"]))
        num_frames = int(video["nb_read_packets"])
        width, height = int(video["width"]), int(video["height"])
    except (KeyError, ValueError, ZeroDivisionError) as error:
        raise RuntimeError(f"probing {path}: incomplete video stream information ({error!r})") from error
    if fps <= 0 or num_frames <= 0:
        raise RuntimeError(f"probing {path}: {num_frames} frames at {fps} fps")
    audio_duration = None
    if audio is not None and audio.get("duration") not in (None, "N/A"):
        audio_duration = float(audio["duration"])
    return VideoInfo(fps, num_frames, num_frames / fps, width, height, audio is not None, audio_duration)


def _crop_filter(crop: Crop) -> str:
    """ffmpeg ``crop`` of an (x, y, w, h) box: ints are pixels, floats fractions of the frame's width/height."""
    if len(crop) != 4:
        raise ValueError(f"crop must be (x, y, w, h), got {crop!r}")
    x, y, w, h = crop
    if all(isinstance(v, float) for v in crop):
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9):
            raise ValueError(f"fractional crop {crop!r} is not inside the frame")
        return f"crop=w=iw*{w:.6f}:h=ih*{h:.6f}:x=iw*{x:.6f}:y=ih*{y:.6f}"
    if all(isinstance(v, (int, np.integer)) for v in crop):
        if min(x, y) < 0 or min(w, h) <= 0:
            raise ValueError(f"pixel crop {crop!r} is not a box inside the frame")
        return f"crop=w={w}:h={h}:x={x}:y={y}"
    raise ValueError(f"crop {crop!r}: use four ints (pixels) or four floats (fractions), not a mix")


def read_video_frames(path: Union[str, Path], size: int, crop: Optional[Crop] = None,
                      fps: Optional[float] = None) -> np.ndarray:
    """Grayscale frames of ``path`` as uint8 ``(T, size, size)``: ``crop`` (x, y, w, h; ints = pixels, floats =
    fractions) applied first, then scaled to ``size`` x ``size``; constant frame rate at the source's
    ``r_frame_rate`` (or ``fps`` when given), so frame ``t`` shows time ``t / fps``."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if fps is None:
        fps = probe_video(path).fps
    filters = ([_crop_filter(crop)] if crop is not None else []) + [
        f"fps=fps={Fraction(fps).limit_denominator(1001)}", f"scale={size}:{size}:flags=area", "format=gray"]
    out = _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
                "-an", "-vf", ",".join(filters), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"], path, "decoding")
    frame_bytes = size * size
    if not out or len(out) % frame_bytes:
        raise RuntimeError(f"decoding {path}: {len(out)} bytes is not a whole number of {size}x{size} frames")
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, size, size).copy()


def extract_audio(path: Union[str, Path], out_path: Union[str, Path], sample_rate: int = 16000) -> Path:
    """Write the first audio stream of ``path`` as mono ``sample_rate`` Hz audio (FLAC for ``.flac``, 16-bit WAV
    for ``.wav``); returns ``out_path``."""
    out_path = Path(out_path)
    codec = {".flac": "flac", ".wav": "pcm_s16le"}.get(out_path.suffix.lower())
    if codec is None:
        raise ValueError(f"{out_path}: write .flac or .wav")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(path), "-map", "0:a:0",
          "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", codec, "-map_metadata", "-1",
          "-fflags", "+bitexact", "-flags:a", "+bitexact", str(out_path)], path, "extracting audio from")
    return out_path


# ---------------------------------------------------------------------------------------------------------------
# Video index and cuts


def video_index_path(recordings_manifest: Union[str, Path]) -> Path:
    """The video index beside a ``<prefix>_recordings_<part>.jsonl.gz`` manifest."""
    path = Path(recordings_manifest)
    return path.with_name(path.name.replace("_recordings_", "_video_"))


def write_video_index(path: Union[str, Path], arrays: Dict[str, TemporalArray]) -> None:
    """Write ``{recording_id: TemporalArray}`` as a video index (sorted by id; temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        for recording_id in sorted(arrays):
            line = {"recording_id": recording_id, "array": arrays[recording_id].to_dict()}
            f.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(path)


def read_video_index(path: Union[str, Path]) -> Dict[str, TemporalArray]:
    """``{recording_id: TemporalArray}`` of a video index."""
    from lhotse.array import TemporalArray

    arrays = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row["recording_id"] in arrays:
                raise ValueError(f"{path}:{number}: recording {row['recording_id']} is listed twice")
            arrays[row["recording_id"]] = TemporalArray.from_dict(row["array"])
    return arrays


def _is_speed_perturbed(recording) -> bool:
    for transform in recording.transforms or []:
        spec = transform if isinstance(transform, dict) else transform.to_dict()
        if spec.get("name") in ("Speed", "Tempo"):
            return True
    return False


def attach_video(cuts: CutSet, index_path: Union[str, Path], tolerance_frames: int = 2,
                 field: str = VIDEO_FIELD) -> CutSet:
    """The cuts with their recording's frames as ``cut.custom[field]``; cuts whose recording has no video, or
    whose span the video does not cover (within ``tolerance_frames``), are logged (count, first ids) and dropped.

    The array keeps ``start = 0`` (recording time): lhotse reads a cut's frames with the cut's own ``start`` and
    ``duration`` (``TemporalArray.load(start=cut.start, duration=cut.duration)``), so cuts that were already
    trimmed (``start > 0``, shorter ``duration``) get the matching slice, and ``cut.truncate`` keeps working.
    Speed-perturbed cuts are refused: their frames would no longer follow the audio.
    """
    from lhotse import CutSet, MonoCut  # noqa: F811 - the runtime import of the name used in the hints

    arrays = read_video_index(index_path)
    kept, missing, uncovered = [], [], []
    for cut in cuts:
        if not isinstance(cut, MonoCut):
            raise ValueError(f"attach_video: cut {cut.id} is a {type(cut).__name__}; attach video before "
                             "mixing or padding cuts")
        if cut.has_recording and _is_speed_perturbed(cut.recording):
            raise ValueError(f"attach_video: cut {cut.id} is speed-perturbed; its video would not follow the audio")
        array = arrays.get(cut.recording_id)
        if array is None:
            missing.append(cut.id)
            continue
        first = round(cut.start / array.frame_shift)
        last = math.ceil(round(cut.end / array.frame_shift, 6))
        if first < round(array.start / array.frame_shift) or last > array.end / array.frame_shift + tolerance_frames:
            uncovered.append(cut.id)
            continue
        kept.append(cut.with_custom(field, array))
    for ids, why in ((missing, "have no video in"), (uncovered, "are not covered by their video in")):
        if ids:
            logger.warning("%d cuts %s %s; dropped (first: %s)", len(ids), why, index_path, ", ".join(ids[:5]))
    return CutSet.from_cuts(kept)
