"""Mini LRS3 (audio-visual) and mini MuST-C (En -> X speech translation), layouts of ``make_mini_corpus.py``.

* ``lrs3``: ``<out>/lrs3/{pretrain,trainval,test}/<speaker>/<clip>.mp4`` + ``<clip>.txt`` in the real layout
  (``local/prepare_lrs3.py`` reads it). Each clip is one English fortunes sentence spoken by an espeak-ng voice
  (2-6 s with short silences around it), muxed by ffmpeg with a 64x64, 25 fps libx264 (yuv420p) video of a
  synthetic face: per speaker its own face shape, skin and background brightness, position, eyes and mouth width;
  per frame the mouth follows the audio of that 40 ms like a crude viseme: its opening the smoothed RMS energy
  (normalised per clip), so silence is a closed mouth, and its shape the spectral balance (one fixed map for every
  voice): energy at 1.2-3.5 kHz over 0.1-1.2 kHz high (front vowels such as /i/) spreads the lips wide and flat,
  low (back rounded vowels such as /u/, /o/) makes them narrow and round. So the video carries what is said, not
  only when, and a model can tell which video belongs to which audio; small head jitter, blinks and pixel noise on
  top. Audio is AAC at 16 kHz; a clip lasts a multiple of 0.32 s (whole video frames and whole
  AAC frames), so decoded audio and video last exactly the same.
  The txt has the real format: ``Text:  <UPPER CASE>``, ``Conf:  <n>``, and a ``WORD START END ASDSCORE`` block
  with word times spread over the speech; a few transcripts carry a ``{LG}`` tag (as real LRS3 does) that the
  preparation removes. pretrain and trainval share the training voices (trainval speaks held-out "dev"
  sentences), test has its own voices and "test" sentences. Speaker directories are YouTube-like 11-character ids.
* ``mustc``: ``<out>/mustc/en-<tgt>/data/{train,dev,tst-COMMON,tst-HE}/wav/ted_<n>.wav`` (16 kHz talks, one speaker
  each, several segments separated by short silences) with ``txt/<split>.yaml`` (a list of ``{duration, offset,
  rW, uW, speaker_id, wav}``), ``txt/<split>.en`` and ``txt/<split>.<tgt>`` (one line per segment, same order), for
  tgt in de, it, nl -> ``lhotse.recipes.must_c.prepare_must_c(<out>/mustc, ..., tgt_lang)``. English speech of the
  English side of ``mini_translation_text``'s parallel grammar, the translation its de/it/nl side; MuST-C's train,
  dev and tst-COMMON/tst-HE take the grammar's train, dev and test sentences. One seed gives every language the
  same English sentences, so the three pairs share the same talks (hard links where the file system allows).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import multiprocessing
import os
import random
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from make_mini_corpus import (
    DEV_VOICES,
    TEST_VOICES,
    TRAIN_VOICES,
    ClipSpec,
    SegmentSpec,
    Speaker,
    Summary,
    make_speakers,
    render_all,
    render_segment,
    rng_for,
    scaled,
    write_lines,
    write_speakers,
)
from mini_corpus_text import librispeech_text, text_source

# ---------------------------------------------------------------------------
# LRS3

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: 40 ms
FACE_SIZE = 64  # even, as yuv420p needs
# AAC decoders return whole 1024-sample frames: clips last a multiple of lcm(640, 1024) samples (0.32 s), so the
# decoded audio ends exactly with the last video frame.
AUDIO_BLOCK = 5120
# part -> (clips at --scale 1, sentence split of mini_corpus_text)
LRS3_PARTS: Dict[str, Tuple[int, str]] = {"pretrain": (750, "train"), "trainval": (120, "dev"), "test": (60, "test")}
LRS3_TRAIN_SPEAKERS = 24  # pretrain and trainval, at --scale 1
LRS3_TEST_SPEAKERS = 6
LRS3_SPEECH_RANGE = (1.6, 5.2)  # espeak-ng output (its own ~0.3 s of trailing silence included)
LRS3_PAUSE = (0.1, 0.4)  # silence before and after the speech
LRS3_TAG_RATE = 0.05  # transcripts with a "{LG}" tag


@dataclass(frozen=True)
class Face:
    """One speaker's look (pixels of the FACE_SIZE frame; grey levels 0-255)."""

    background: float
    skin: float
    cx: float
    cy: float
    ax: float  # half-width of the face
    ay: float  # half-height of the face
    eye_dx: float
    eye_y: float
    eye_ax: float
    eye_ay: float
    eye_level: float
    mouth_y: float
    mouth_ax: float
    mouth_closed: float  # half-height of the closed mouth
    mouth_open: float  # half-height of the widest opening
    mouth_level: float


def make_face(seed: int, speaker_id: str) -> Face:
    """A face of its own per speaker, reproducible from (seed, speaker id); the mouth stays in the lower-centre
    quarter (x 25-75 %, y 50-100 %) that ``prepare_lrs3.py --crop mouth`` keeps."""
    rng = rng_for(seed, "lrs3-face", speaker_id)
    cx, cy = 32 + rng.uniform(-3, 3), 30 + rng.uniform(-2, 2)
    ax, ay = rng.uniform(17, 23), rng.uniform(23, 28)
    return Face(
        background=rng.uniform(20, 90), skin=rng.uniform(130, 215), cx=cx, cy=cy, ax=ax, ay=ay,
        eye_dx=ax * rng.uniform(0.33, 0.45), eye_y=cy - ay * rng.uniform(0.22, 0.35),
        eye_ax=rng.uniform(2.2, 3.6), eye_ay=rng.uniform(1.3, 2.2), eye_level=rng.uniform(20, 70),
        mouth_y=cy + ay * rng.uniform(0.52, 0.62), mouth_ax=rng.uniform(5.5, 9.0),
        mouth_closed=rng.uniform(0.5, 0.8), mouth_open=rng.uniform(4.5, 6.5), mouth_level=rng.uniform(10, 45),
    )


# lip spreading from the spectral balance: log10(E 1.2-3.5 kHz / E 0.1-1.2 kHz) of a loud frame maps linearly from
# SPREAD_RANGE to 0 (round) .. 1 (spread); over the espeak-ng voices the 5th-95th percentiles are about -2.6 .. 0.3
SPREAD_RANGE = (-2.2, -0.4)
SPREAD_BANDS_HZ = (100, 1200, 3500)


def _frames(audio: np.ndarray) -> np.ndarray:
    return audio[: len(audio) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME].reshape(-1, SAMPLES_PER_FRAME)


def _smooth(track: np.ndarray) -> np.ndarray:
    return np.convolve(np.pad(track, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")


def frame_envelope(audio: np.ndarray) -> np.ndarray:
    """RMS of each 40 ms frame, smoothed over three frames and scaled so the clip's 95th percentile is 1 (0-1)."""
    smooth = _smooth(np.sqrt(np.mean(_frames(audio).astype(np.float64) ** 2, axis=1)))
    peak = np.percentile(smooth, 95)
    return np.clip(smooth / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(smooth)


def frame_spread(audio: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """Lip spreading of each 40 ms frame, 0 (round) .. 1 (spread), from the spectral balance of the frame
    (``SPREAD_BANDS_HZ``, ``SPREAD_RANGE``), weighted towards neutral (0.5) as ``envelope`` falls to 0 and smoothed
    over three frames."""
    spectrum = np.abs(np.fft.rfft(_frames(audio).astype(np.float64) * np.hanning(SAMPLES_PER_FRAME), axis=1)) ** 2
    hz = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1.0 / SAMPLE_RATE)
    low_edge, mid_edge, high_edge = SPREAD_BANDS_HZ
    low = spectrum[:, (hz >= low_edge) & (hz < mid_edge)].sum(axis=1)
    mid = spectrum[:, (hz >= mid_edge) & (hz < high_edge)].sum(axis=1)
    ratio = np.log10((mid + 1e-12) / (low + 1e-12))
    spread = np.clip((ratio - SPREAD_RANGE[0]) / (SPREAD_RANGE[1] - SPREAD_RANGE[0]), 0.0, 1.0)
    return _smooth(0.5 + envelope * (spread - 0.5))


def _soft_ellipse(yy: np.ndarray, xx: np.ndarray, cy, cx, ay, ax) -> np.ndarray:
    """Approximate pixel coverage (0-1) of ellipses; per-frame parameters broadcast as (T, 1, 1)."""
    distance = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    return np.clip((1.0 - distance) * np.minimum(ax, ay) + 0.5, 0.0, 1.0)


def render_face(face: Face, envelope: np.ndarray, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (T, FACE_SIZE, FACE_SIZE) frames: the mouth's opening follows ``envelope`` (0 = closed) and its shape
    ``spread`` (half-width x 0.7 .. 1.3 and the opening x 1.25 .. 0.75 from round to spread), plus head jitter (a
    smooth random walk within about 2 px), blinks and Gaussian pixel noise."""
    count = len(envelope)
    jitter = np.zeros((count, 2))
    for t in range(1, count):
        jitter[t] = np.clip(0.8 * jitter[t - 1] + rng.normal(0, 0.35, 2), -2, 2)
    dx, dy = (jitter[:, i].reshape(-1, 1, 1) for i in range(2))
    blink = np.ones(count)
    for t in np.flatnonzero(rng.random(count) < 0.015):
        blink[t: t + 3] = 0.25
    yy, xx = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE].astype(np.float64)
    yy, xx = yy[None], xx[None]
    image = np.full((count, FACE_SIZE, FACE_SIZE), face.background)
    cover = _soft_ellipse(yy, xx, face.cy + dy, face.cx + dx, face.ay, face.ax)
    image += cover * (face.skin - image)
    eye_ay = (face.eye_ay * blink).reshape(-1, 1, 1)
    for side in (-1, 1):
        cover = _soft_ellipse(yy, xx, face.eye_y + dy, face.cx + side * face.eye_dx + dx, eye_ay, face.eye_ax)
        image += cover * (face.eye_level - image)
    opening = (face.mouth_open - face.mouth_closed) * envelope * (1.25 - 0.5 * spread)
    half_height = (face.mouth_closed + opening).reshape(-1, 1, 1)
    half_width = (face.mouth_ax * (0.7 + 0.6 * spread)).reshape(-1, 1, 1)
    cover = _soft_ellipse(yy, xx, face.mouth_y + dy, face.cx + dx, half_height, half_width)
    image += cover * (face.mouth_level - image)
    image += rng.normal(0, 3.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Lrs3Clip:
    path: str  # relative to the output directory, without suffix
    part: str
    segment: SegmentSpec
    pause_before: float
    pause_after: float
    tag_at: int  # -1: no tag; else the word index before which "{LG}" is written
    confidence: int


@dataclass(frozen=True)
class Lrs3Result:
    duration: float
    words: Tuple[str, ...]


def youtube_id(seed: int) -> Callable[[str, int, int], str]:
    """Speaker directory names like LRS3's (11 characters of base64url), a function of the voice."""
    def make(voice: str, pitch: int, speed: int) -> str:
        digest = hashlib.sha1(f"{seed}/{voice}/{pitch}/{speed}".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode()[:11]
    return make


def plan_lrs3(seed: int, scale: float) -> Tuple[List[Lrs3Clip], List[Speaker]]:
    text = text_source("en")
    rng = rng_for(seed, "lrs3", "speakers")
    train_speakers = make_speakers(rng, "en", "train", TRAIN_VOICES, scaled(LRS3_TRAIN_SPEAKERS, scale, 3),
                                   youtube_id(seed))
    test_speakers = make_speakers(rng, "en", "test", TEST_VOICES, scaled(LRS3_TEST_SPEAKERS, scale, 2),
                                  youtube_id(seed))
    clips = []
    for part, (base_count, split) in LRS3_PARTS.items():
        rng = rng_for(seed, "lrs3", part)
        speakers = test_speakers if part == "test" else train_speakers
        number: Dict[str, itertools.count] = defaultdict(lambda: itertools.count(1))
        for _ in range(scaled(base_count, scale)):
            speaker = rng.choice(speakers)
            words, whole = text.utterance(rng, split)
            segment = SegmentSpec(speaker, words, rng.uniform(2.0, 4.5), LRS3_SPEECH_RANGE, whole=whole)
            path = f"lrs3/{part}/{speaker.id}/{next(number[speaker.id]):05d}"
            tag_at = rng.randint(0, 3) if rng.random() < LRS3_TAG_RATE else -1
            clips.append(Lrs3Clip(path, part, segment, round(rng.uniform(*LRS3_PAUSE), 3),
                                  round(rng.uniform(*LRS3_PAUSE), 3), tag_at, rng.randint(2, 8)))
    return clips, train_speakers + test_speakers


def lrs3_txt(words: Sequence[str], speech_start: float, speech_end: float, tag_at: int, confidence: int,
             rng: random.Random) -> List[str]:
    """The lines of an LRS3 txt: transcript, confidence and word times spread over the speech by word length."""
    upper = librispeech_text(words).split()
    shown = list(upper)
    if 0 <= tag_at:
        shown.insert(min(tag_at, len(shown)), "{LG}")
    weights = np.array([len(w) + 1.0 for w in upper])
    edges = speech_start + (speech_end - speech_start) * np.concatenate([[0], np.cumsum(weights) / weights.sum()])
    lines = [f"Text:  {' '.join(shown)}", f"Conf:  {confidence}", "", "WORD START END ASDSCORE"]
    lines += [f"{w} {edges[i]:.2f} {edges[i + 1]:.2f} {rng.uniform(2.0, 9.5):.1f}" for i, w in enumerate(upper)]
    return lines


def render_lrs3_clip(out_dir: str, seed: int, clip: Lrs3Clip) -> Lrs3Result:
    """Speak the clip, draw its face video, mux both into ``<path>.mp4`` and write ``<path>.txt``."""
    count, speech = render_segment(clip.segment, SAMPLE_RATE)
    before = np.zeros(round(clip.pause_before * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([before, speech, np.zeros(round(clip.pause_after * SAMPLE_RATE), dtype=np.float32)])
    audio = np.pad(audio, (0, -len(audio) % AUDIO_BLOCK))  # audio and video end together, even after AAC
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(f"{seed}/{clip.path}".encode()).digest()[:8], "big"))
    envelope = frame_envelope(audio)
    frames = render_face(make_face(seed, clip.segment.speaker.id), envelope, frame_spread(audio, envelope), rng)
    target = Path(out_dir) / clip.path
    target.parent.mkdir(parents=True, exist_ok=True)
    wav = target.with_name(target.name + ".tmp.wav")
    sf.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
    try:
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{FACE_SIZE}x{FACE_SIZE}", "-r", str(FPS), "-i", "pipe:0",
             "-i", str(wav), "-map", "0:v", "-map", "1:a",
             "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-threads", "1",
             "-c:a", "aac", "-b:a", "48k", "-ar", str(SAMPLE_RATE), "-ac", "1",
             "-map_metadata", "-1", "-fflags", "+bitexact", "-flags", "+bitexact", str(target) + ".mp4"],
            input=frames.tobytes(), check=True, capture_output=True)
    finally:
        wav.unlink(missing_ok=True)
    loud = np.flatnonzero(np.abs(speech) > 1e-3)
    first, last = (loud[0], loud[-1] + 1) if loud.size else (0, len(speech))
    offset = len(before) / SAMPLE_RATE
    words = clip.segment.words[:count]
    lines = lrs3_txt(words, offset + first / SAMPLE_RATE, offset + last / SAMPLE_RATE, clip.tag_at, clip.confidence,
                     rng_for(seed, "lrs3-txt", clip.path))
    write_lines(target.with_suffix(".txt"), lines)
    return Lrs3Result(len(audio) / SAMPLE_RATE, tuple(words))


def build_lrs3(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    clips, speakers = plan_lrs3(seed, scale)
    work = functools.partial(render_lrs3_clip, str(out), seed)
    progress = functools.partial(tqdm, total=len(clips), desc="lrs3", unit="clip")
    if num_jobs <= 1:
        results = [work(clip) for clip in progress(clips)]
    else:
        with multiprocessing.get_context("fork").Pool(num_jobs) as pool:
            results = list(progress(pool.imap(work, clips, chunksize=4)))
    summary: Summary = defaultdict(float)
    for clip, result in zip(clips, results):
        summary[("lrs3", "en", clip.part)] += result.duration
    write_speakers(out / "mini_speakers_lrs3.tsv", speakers)
    return summary


# ---------------------------------------------------------------------------
# MuST-C (English talks -> de / it / nl)

MUSTC_TARGETS = ("de", "it", "nl")
# MuST-C split -> (grammar split, segments at --scale 1, voices)
MUSTC_SPLITS = {
    "train": ("train", 600, TRAIN_VOICES),
    "dev": ("dev", 40, DEV_VOICES),
    "tst-COMMON": ("test", 40, TEST_VOICES),
    "tst-HE": ("test", 20, TEST_VOICES),  # the grammar's test pairs after tst-COMMON's
}
MUSTC_SEGMENTS_PER_TALK = (4, 12)
MUSTC_RANGE = (0.5, 12.0)  # wide: a sentence is always spoken whole (its translation must match)


@dataclass(frozen=True)
class MustcTalk:
    spec: ClipSpec
    split: str
    first: int  # index of its first segment in the split's pair list


def mustc_pairs(seed: int, scale: float) -> Dict[str, Dict[str, List[Tuple[str, str]]]]:
    """Per MuST-C split, per target language: (translation, English) pairs, the same English for every target."""
    from mini_translation_text import parallel_pairs

    counts = {split: scaled(n, scale) for split, (_, n, _) in MUSTC_SPLITS.items()}
    pairs: Dict[str, Dict[str, List[Tuple[str, str]]]] = defaultdict(dict)
    for tgt in MUSTC_TARGETS:
        test = parallel_pairs(tgt, "test", counts["tst-COMMON"] + counts["tst-HE"], seed=seed)
        for split, (grammar_split, _, _) in MUSTC_SPLITS.items():
            if split == "tst-COMMON":
                pairs[split][tgt] = test[: counts[split]]
            elif split == "tst-HE":
                pairs[split][tgt] = test[counts["tst-COMMON"]:]
            else:
                pairs[split][tgt] = parallel_pairs(tgt, grammar_split, counts[split], seed=seed)
    return pairs


def plan_mustc(seed: int, scale: float) -> Tuple[List[MustcTalk], List[Speaker], Dict]:
    pairs = mustc_pairs(seed, scale)
    talk_number = itertools.count(1)
    talks, all_speakers = [], []
    for split, (_, _, pool) in MUSTC_SPLITS.items():
        english = [en for _, en in pairs[split][MUSTC_TARGETS[0]]]
        rng = rng_for(seed, "mustc", split)
        sizes = []
        while sum(sizes) < len(english):
            sizes.append(min(rng.randint(*MUSTC_SEGMENTS_PER_TALK), len(english) - sum(sizes)))
        numbers = [next(talk_number) for _ in sizes]
        ids = iter(numbers)  # MuST-C: speaker "spk.<n>" gives talk "ted_<n>.wav"
        speakers = make_speakers(rng, "en", split, pool, len(sizes), lambda voice, pitch, speed: f"spk.{next(ids)}")
        all_speakers += speakers
        first = 0
        for number, speaker, size in zip(numbers, speakers, sizes):
            segments = tuple(
                SegmentSpec(speaker, tuple(english[first + i].split()), 3.0, MUSTC_RANGE,
                            pause_before=rng.uniform(0.6, 1.5) if i == 0 else rng.uniform(0.3, 1.0),
                            whole=len(english[first + i].split()))
                for i in range(size))
            path = f"mustc/en-{MUSTC_TARGETS[0]}/data/{split}/wav/ted_{number}.wav"
            talks.append(MustcTalk(ClipSpec(path, SAMPLE_RATE, "wav", segments, pause_after=rng.uniform(0.5, 1.5)),
                                   split, first))
            first += size
    return talks, all_speakers, pairs


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_mustc(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    talks, speakers, pairs = plan_mustc(seed, scale)
    results = render_all(out, [t.spec for t in talks], num_jobs, "mustc")
    summary: Summary = defaultdict(float)
    yaml_lines: Dict[str, List[str]] = defaultdict(list)
    for talk, result in zip(talks, results):
        summary[("mustc", "en", talk.split)] += result.duration
        name = Path(talk.spec.path).name
        for spec, segment in zip(talk.spec.segments, result.segments):
            if len(segment.words) != len(spec.words):
                raise RuntimeError(f"{talk.spec.path}: a sentence was not spoken whole")
            yaml_lines[talk.split].append(
                f"- {{duration: {segment.duration:.6f}, offset: {segment.start:.6f}, rW: {len(segment.words)}, "
                f"uW: 0, speaker_id: {spec.speaker.id}, wav: {name}}}")
    for tgt in MUSTC_TARGETS:
        for split in MUSTC_SPLITS:
            data = out / "mustc" / f"en-{tgt}" / "data" / split
            write_lines(data / "txt" / f"{split}.yaml", yaml_lines[split])
            write_lines(data / "txt" / f"{split}.en", [en for _, en in pairs[split][tgt]])
            write_lines(data / "txt" / f"{split}.{tgt}", [translation for translation, _ in pairs[split][tgt]])
        if tgt != MUSTC_TARGETS[0]:
            for talk in talks:
                src = out / talk.spec.path
                _link_or_copy(src, out / talk.spec.path.replace(f"/en-{MUSTC_TARGETS[0]}/", f"/en-{tgt}/"))
    write_speakers(out / "mini_speakers_mustc.tsv", speakers)
    return summary

