#!/usr/bin/env python3
"""Lhotse manifests and grayscale video frames of LRS3 (Afouras et al. 2018) for audio-visual recipes.

LRS3-TED cannot be downloaded by the recipe: request access and accept the licence on the VGG site
(https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs3.html), download the parts by hand and unpack them into one
directory. Layout read here (the real one): ``<corpus>/{pretrain,trainval,test}/<speaker>/<clip>.mp4`` (25 fps
face-centred video with its audio) and ``<clip>.txt``: line 1 ``Text:  <TRANSCRIPT>``, line 2 ``Conf: ...``, then a
``WORD START END ASDSCORE`` block. Transcripts are read as ISO-8859-1; ``{LG}``-style curly-brace tags (laughter,
noise) are removed and spaces collapsed, as ESPnet's lrs3 recipe does.

Per part, in --output-dir:

* ``lrs3_recordings_<part>.jsonl.gz``: the audio, extracted to 16 kHz mono FLAC under ``<audio-dir>/<part>/``;
* ``lrs3_supervisions_<part>.jsonl.gz``: one supervision per clip covering it whole (the shorter of audio and
  video: AAC decoding can add up to 1023 samples at the end), ``language="en"``,
  ``speaker`` = the speaker directory, ``text`` = the transcript; ids are ``<part>_<speaker>_<clip>`` (pretrain
  and trainval reuse clip names of the same speakers: the part keeps ids unique when they are combined);
* ``lrs3_video_<part>.jsonl.gz``: the video index of :mod:`icefall_ext.data.video`; the frames (uint8
  ``(T, S, S)`` grayscale, S = --video-size, ``frame_shift = 1 / fps``) are ``.npy`` files of lhotse's
  ``NumpyFilesWriter`` under ``<video-dir>/<part>/``; ``compute_fbank`` attaches them as
  ``cut.custom["video_frames"]``;
* ``bad_items_lrs3-<part>.tsv``: the clips left out (unreadable mp4, missing or garbled txt, empty transcript,
  audio and video durations differing by more than 2 frames), each by id with the reason, also logged.

--crop mouth keeps a fixed box before scaling: the lower-centre half of the frame (x 25-75 %, y 50-100 % of the
face-centred LRS3 frame, where the mouth is), no landmarks needed; --crop none scales the whole frame. A part whose
three manifests exist is skipped (outputs are renamed into place last, the recordings manifest at the very end).

    python local/prepare_lrs3.py --corpus-dir /data/lrs3 --output-dir data/manifests --num-jobs 8
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from icefall_ext.data.corpus_check import BadItems, Item  # noqa: E402
from icefall_ext.data.video import (  # noqa: E402
    extract_audio,
    probe_video,
    read_video_frames,
    write_video_index,
)

logger = logging.getLogger("prepare_lrs3")

PARTS = ("pretrain", "trainval", "test")
CROPS = {"none": None, "mouth": (0.25, 0.5, 0.5, 0.5)}  # (x, y, w, h) as fractions of the frame
MAX_FRAMES_OFF = 2  # audio and video may differ by this many video frames
_TAG = re.compile(r"\{[^{}]*\}")


def clean_transcript(text: str) -> str:
    """The transcript without ``{LG}``-style tags, spaces collapsed."""
    return " ".join(_TAG.sub(" ", text).split())


def read_transcript(path: Path) -> str:
    """The cleaned ``Text:`` line of an LRS3 txt file (ISO-8859-1); ValueError if the file is not one."""
    if not path.is_file():
        raise ValueError("missing transcript file")
    lines = path.read_text(encoding="iso-8859-1").splitlines()
    if not lines or not lines[0].startswith("Text:"):
        raise ValueError("garbled transcript file (no 'Text:' first line)")
    text = clean_transcript(lines[0][len("Text:"):])
    if not text:
        raise ValueError("empty transcript")
    return text


@dataclass(frozen=True)
class ClipJob:
    id: str
    speaker: str
    video: str
    audio: str  # FLAC to write
    storage: str  # NumpyFilesWriter directory
    key: str  # storage key: <speaker>_<clip> (the writer makes one subfolder per 3-character key prefix)
    size: int
    crop: Optional[Tuple[float, float, float, float]]


def prepare_clip(job: ClipJob) -> Tuple[str, Optional[dict], Optional[str]]:
    """(id, result, None) or (id, None, reason); result holds the recording, supervision and array as dicts."""
    from lhotse import NumpyFilesWriter, Recording, SupervisionSegment

    try:
        text = read_transcript(Path(job.video).with_suffix(".txt"))
    except (ValueError, OSError) as error:
        return job.id, None, str(error)
    try:
        info = probe_video(job.video)
        extract_audio(job.video, job.audio)
        frames = read_video_frames(job.video, job.size, job.crop, fps=info.fps)
        recording = Recording.from_file(job.audio, recording_id=job.id)
    except Exception as error:  # noqa: BLE001 - any decoding failure makes the clip unusable
        Path(job.audio).unlink(missing_ok=True)
        return job.id, None, f"unreadable: {type(error).__name__}: {error}".splitlines()[0][:300]
    video_duration = len(frames) / info.fps
    if abs(recording.duration - video_duration) > MAX_FRAMES_OFF / info.fps:
        Path(job.audio).unlink(missing_ok=True)
        return job.id, None, (f"audio/video durations differ: {recording.duration:.3f} s audio, "
                              f"{video_duration:.3f} s video ({len(frames)} frames at {info.fps:g} fps)")
    with NumpyFilesWriter(job.storage) as writer:
        array = writer.store_array(job.key, frames, frame_shift=1.0 / info.fps, temporal_dim=0, start=0)
    duration = min(recording.duration, video_duration)  # AAC decoders may add up to 1023 samples at the end
    supervision = SupervisionSegment(id=job.id, recording_id=job.id, start=0.0, duration=duration,
                                     channel=0, text=text, language="en", speaker=job.speaker)
    return job.id, {"recording": recording.to_dict(), "supervision": supervision.to_dict(),
                    "array": array.to_dict()}, None


def part_outputs(output_dir: Path, part: str) -> Dict[str, Path]:
    return {kind: output_dir / f"lrs3_{kind}_{part}.jsonl.gz" for kind in ("recordings", "supervisions", "video")}


def find_clips(part_dir: Path) -> List[Tuple[str, str, Path]]:
    """(id, speaker, mp4) of a part, plus transcript files without their mp4 (reported as bad later)."""
    clips = []
    for path in sorted(part_dir.glob("*/*.mp4")) + sorted(
            p for p in part_dir.glob("*/*.txt") if not p.with_suffix(".mp4").exists()):
        clips.append((f"{part_dir.name}_{path.parent.name}_{path.stem}", path.parent.name, path))
    return clips


def prepare_part(corpus_dir: Path, output_dir: Path, part: str, audio_dir: Path, video_dir: Path,
                 video_size: int = 88, crop: str = "none", num_jobs: int = 2) -> Optional[BadItems]:
    """Manifests of one part; None if its outputs exist, else the items left out (also in ``bad_items_*.tsv``)."""
    from lhotse import RecordingSet, SupervisionSet
    from lhotse.array import TemporalArray
    from lhotse.qa import validate_recordings_and_supervisions

    outputs = part_outputs(output_dir, part)
    if all(p.is_file() for p in outputs.values()):
        logger.info("lrs3 %s: manifests exist, skipped", part)
        return None
    part_dir = corpus_dir / part
    if not part_dir.is_dir():
        raise FileNotFoundError(f"{part_dir} does not exist")
    clips = find_clips(part_dir)
    bad = BadItems(num_items=len(clips))
    jobs = []
    for clip_id, speaker, path in clips:
        if path.suffix != ".mp4":
            bad.add(Item(clip_id, path), "missing video file")
            continue
        jobs.append(ClipJob(clip_id, speaker, str(path), str(audio_dir / part / speaker / f"{path.stem}.flac"),
                            str(video_dir / part), f"{speaker}_{path.stem}", video_size, CROPS[crop]))
    videos = {job.id: Path(job.video) for job in jobs}
    results: Dict[str, dict] = {}
    with ProcessPoolExecutor(max(1, num_jobs)) as pool:
        futures = [pool.submit(prepare_clip, job) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"lrs3 {part}", unit="clip"):
            clip_id, result, reason = future.result()
            if result is None:
                bad.add(Item(clip_id, videos[clip_id]), reason)
            else:
                results[clip_id] = result
    ids = sorted(results)
    recordings = RecordingSet.from_dicts(results[i]["recording"] for i in ids)
    supervisions = SupervisionSet.from_dicts(results[i]["supervision"] for i in ids)
    validate_recordings_and_supervisions(recordings, supervisions)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = {kind: path.with_name(path.name.replace(".jsonl.gz", ".tmp.jsonl.gz")) for kind, path in outputs.items()}
    supervisions.to_file(tmp["supervisions"])
    recordings.to_file(tmp["recordings"])
    write_video_index(outputs["video"], {i: TemporalArray.from_dict(results[i]["array"]) for i in ids})
    for kind in ("supervisions", "recordings"):
        tmp[kind].replace(outputs[kind])
    bad.bad.sort()
    bad.write(output_dir / f"bad_items_lrs3-{part}.tsv")
    bad.log(f"lrs3-{part}")
    logger.info("lrs3 %s: %d clips, %.3f h", part, len(ids), sum(r.duration for r in recordings) / 3600)
    return bad


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", type=Path, required=True, help="LRS3 root holding pretrain/ trainval/ test/")
    p.add_argument("--output-dir", type=Path, required=True, help="where the manifests go (e.g. data/manifests)")
    p.add_argument("--audio-dir", type=Path, default=None, help="extracted audio (default: <output-dir>/../lrs3_audio)")
    p.add_argument("--video-dir", type=Path, default=None, help="video frames (default: <output-dir>/../lrs3_video)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--video-size", type=int, default=88, help="frames are scaled to SIZE x SIZE (default: 88)")
    p.add_argument("--crop", choices=sorted(CROPS), default="none", help="none: whole frame; mouth: lower centre")
    p.add_argument("-j", "--num-jobs", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(name)s] %(message)s", level=logging.INFO)
    audio_dir = args.audio_dir or args.output_dir.parent / "lrs3_audio"
    video_dir = args.video_dir or args.output_dir.parent / "lrs3_video"
    for part in args.parts:
        try:
            prepare_part(args.corpus_dir, args.output_dir, part, audio_dir, video_dir, args.video_size, args.crop,
                         args.num_jobs)
        except FileNotFoundError as error:
            sys.exit(f"prepare_lrs3: {error}")


if __name__ == "__main__":
    main()
