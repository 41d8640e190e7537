#!/usr/bin/env python3
"""Synthesise a small speech corpus with espeak-ng, in the on-disk layout of a real one.

Layouts (read unchanged by lhotse's own preparation functions):

* ``commonvoice``: ``<out>/<lang>/clips/common_voice_<lang>_<n>.mp3`` (48 kHz) with
  the Common Voice 17 TSVs (``train/dev/test/validated/invalidated/other.tsv``,
  ``clip_durations.tsv``, ``validated_sentences.tsv``) -> ``prepare_commonvoice``.
  Extra: ``<lang>/lm_text.txt``, sentences never spoken, for n-gram LMs.
* ``voxpopuli``: transcribed sessions ``raw_audios/<lang>/<year>/<session>_<lang>.ogg``
  with the segment annotations ``transcribed_data/<lang>/asr_<lang>.tsv.gz`` (the file
  the official scripts download; copy it into lhotse's output dir before calling
  ``prepare_voxpopuli(task="asr")``); unlabelled segments as written by the official
  ``get_unlabelled_data``: ``unlabelled_data/<lang>/<year>/<event>_<lang>_<n>.ogg``
  (8-35 s, most 10-30 s, read by ``local/prepare_voxpopuli_unlabelled.py``); LM text
  ``lm_data/<lang>/sentences.txt``. Extra: ``unlabelled_data/<lang>/reference_transcripts.tsv``
  (what the unlabelled audio says, to score pseudo-labels).
* ``fleurs``: ``fleurs/<code>/{train,dev,test}/<n>.wav`` (16 kHz) with the metadata TSVs
  ``fleurs/metadata/<code>/<split>.tsv`` that lhotse's ``download_fleurs`` writes (7 columns, no header)
  -> ``prepare_fleurs``; 11 languages from a few minutes (fi_fi, sv_se) to ~25 min (en_us) of labelled
  training audio, each prompt read by 1-3 readers; an untranscribed pool ``unlabelled/<code>/*.wav``
  (5-15 s, several times the labelled audio, every language alike) with
  ``unlabelled/<code>/reference_transcripts.tsv`` (what it says, to score pseudo-labels).
  With ``--longform [CODE ...]`` (default en_us de_de fr_fr es_419) also a long-form evaluation set (USM §2.4,
  Table 7): ``longform/<code>/<code>_longform_<n>.wav``, 60-180 s each (about 80-100 s), several held-out
  sentences read in a row by ONE test-pool voice with 0.2-0.8 s pauses; ``longform/<code>/transcripts.tsv``
  (id, text: the sentences' FLEURS ``transcription`` texts joined by spaces), ``longform/<code>/segments.tsv``
  (id, speaker_id, start, end, text per sentence), ``longform/speakers.tsv`` and its own marker
  ``longform/.done`` (see :func:`make_longform`) -> ``icefall_ext.bin.prepare_corpus longform``.
* ``covost2``: Common Voice 4 clips ``cv/<lang>/clips/common_voice_<lang>_<n>.mp3`` with CV 4's
  ``validated.tsv`` (client_id, path, sentence, up_votes, down_votes, age, gender, accent) and the CoVoST 2
  translation tables ``covost/covost_v2.<lang>_en.tsv`` (path, sentence, translation, client_id, split; split
  train, train_covost, dev or test) -> ``local/prepare_covost2.py``; 8 source languages in CoVoST's high /
  mid / low resource groups, sentences and translations from a parallel grammar
  (``mini_translation_text``), dev/test holding unseen combinations of seen words. Extra:
  ``covost/mt_text.<lang>_en.tsv`` (source, translation), text-only pairs for machine-translation training.
* ``librispeech``: ``LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
  (16 kHz) with ``<spk>-<chapter>.trans.txt`` -> ``prepare_librispeech``; LM text
  ``librispeech-lm-norm.txt``. Training utterances last 1-8 s; dev/test utterances are
  sentences of one speaker read in a row, in all four duration buckets of the paper's
  Table 5 (<10, 10-15, 15-20, >20 s).
* ``lrs3`` and ``mustc`` (``mini_av_corpus``): LRS3 ``lrs3/{pretrain,trainval,test}/<speaker>/<clip>.mp4`` + ``.txt``,
  25 fps synthetic faces whose mouth opening follows the speech -> ``local/prepare_lrs3.py``; MuST-C
  ``mustc/en-{de,it,nl}/data/<split>/{wav,txt}`` (English talks, translations from the parallel grammar) ->
  ``lhotse.recipes.must_c.prepare_must_c``.

Text (``mini_corpus_text``): real sentences from the Debian fortunes packages for en, de,
es, it and ru, each sentence in one of train/dev/test so that dev/test transcripts are
never in a training clip or an LM text; Zipf-sampled words for fr and el.

Every layout also gets ``mini_speakers_<layout>.tsv`` (speaker -> espeak-ng voice,
pitch, speed, split). A speaker is one voice/pitch/speed combination; train, dev and
test draw from disjoint espeak-ng voice variants, so dev/test measure unseen voices.
The output depends only on (layout, seed, scale); ``<out>/.done-<layout>`` is written
last and makes a rerun with the same arguments a no-op.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import itertools
import json
import logging
import math
import multiprocessing
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mini_corpus_text import (  # noqa: E402
    CHARS_PER_SECOND_AT_175,
    TextSource,
    librispeech_text,
    normalised_text,
    text_source,
    written_passage,
    written_sentence,
)

logger = logging.getLogger(__name__)

LAYOUTS = ("commonvoice", "voxpopuli", "librispeech", "fleurs", "covost2", "lrs3", "mustc")
FORMAT_VERSION = 2  # 2: real sentences (fortunes), long LibriSpeech dev/test, 10-30 s unlabelled audio

# Durations in seconds. Labelled speech is fitted 10 ms inside 1-8 s so that
# annotation times rounded to milliseconds still describe a 1-8 s segment.
LABELLED_RANGE = (1.01, 7.99)
UNLABELLED_RANGE = (8.0, 35.0)  # most real unlabelled VoxPopuli segments last 10-30 s


@dataclass(frozen=True)
class LanguageSpec:
    accents: Tuple[Tuple[str, str], ...]  # (espeak-ng voice, accent label)
    resource: float  # labelled training data relative to English


LANGUAGES: Dict[str, LanguageSpec] = {
    "en": LanguageSpec((("en-us", "United States English"), ("en", "England English")), 1.0),
    "de": LanguageSpec((("de", "Deutschland Deutsch"),), 0.6),
    "fr": LanguageSpec((("fr-fr", "Français de France"), ("fr-be", "Français de Belgique")), 0.45),
    "es": LanguageSpec((("es", "España"), ("es-419", "América Latina")), 0.35),
    "it": LanguageSpec((("it", ""),), 0.25),
    "ru": LanguageSpec((("ru", ""),), 0.18),
    "el": LanguageSpec((("el", ""),), 0.125),
    # FLEURS-only languages (their resource levels are FLEURS_LANGUAGES')
    "pt": LanguageSpec((("pt-br", ""),), 0.0),
    "nl": LanguageSpec((("nl", ""),), 0.0),
    "pl": LanguageSpec((("pl", ""),), 0.0),
    "sv": LanguageSpec((("sv", ""),), 0.0),
    "fi": LanguageSpec((("fi", ""),), 0.0),
    # CoVoST-only source languages (their sizes are COVOST_LANGUAGES')
    "ca": LanguageSpec((("ca", ""),), 0.0),
    "fa": LanguageSpec((("fa", ""),), 0.0),
}
CV_LANGUAGES = ("en", "de", "fr", "es", "it", "ru", "el")
# Real VoxPopuli has no Greek transcriptions (lhotse rejects "el" for task="asr"),
# only unlabelled Greek audio; Russian is not in VoxPopuli at all.
VP_TRANSCRIBED_LANGUAGES = ("en", "de", "fr", "es", "it")
VP_UNLABELLED_LANGUAGES = ("en", "de", "fr", "es", "it", "el")


@dataclass(frozen=True)
class VoicePool:
    variants: Tuple[str, ...]
    pitches: Tuple[int, ...]
    speeds: Tuple[int, ...]


_PITCHES = tuple(range(30, 71, 5))
_SPEEDS = tuple(range(130, 201, 10))
_TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "f1", "f2", "f4")
TRAIN_VOICES = VoicePool(_TRAIN_VARIANTS, _PITCHES, _SPEEDS)
DEV_VOICES = VoicePool(("m5", "f3"), _PITCHES, _SPEEDS)
TEST_VOICES = VoicePool(("m7", "f5"), _PITCHES, _SPEEDS)
UNLABELLED_VOICES = VoicePool(_TRAIN_VARIANTS + ("m8",), _PITCHES, _SPEEDS)
# LibriSpeech "other" sets: the held-out variants at extreme pitch and speed.
_EXTREME_PITCHES = (20, 25, 75, 80)
_EXTREME_SPEEDS = (115, 120, 210, 220, 230)
DEV_OTHER_VOICES = VoicePool(("m5", "f3"), _EXTREME_PITCHES, _EXTREME_SPEEDS)
TEST_OTHER_VOICES = VoicePool(("m7", "f5"), _EXTREME_PITCHES, _EXTREME_SPEEDS)

_AGES = ("twenties", "thirties", "fourties", "fifties", "sixties")

# Sizes at --scale 1.
CV_TRAIN_CLIPS = 1100  # English; other languages get LanguageSpec.resource of it
CV_EVAL_CLIPS = 60  # per language, for dev and for test
CV_LM_SENTENCES = 10000
VP_TRAIN_SEGMENTS = 160
VP_EVAL_SEGMENTS = 20
VP_UNLABELLED_SEGMENTS = 36  # per language, the same for all as in real VoxPopuli
VP_LM_SENTENCES = 5000
LS_SPLITS = {
    "train-clean-100": (850, TRAIN_VOICES),
    "dev-clean": (140, DEV_VOICES),
    "dev-other": (140, DEV_OTHER_VOICES),
    "test-clean": (140, TEST_VOICES),
    "test-other": (140, TEST_OTHER_VOICES),
}
LS_LM_SENTENCES = 20000


# ---------------------------------------------------------------------------
# Voices and synthesis jobs


@dataclass(frozen=True)
class Speaker:
    id: str
    language: str
    split: str
    espeak_voice: str  # e.g. "en-us+m3"
    pitch: int
    speed: int
    gender: str
    accent: str
    age: str


@dataclass(frozen=True)
class SegmentSpec:
    speaker: Speaker
    words: Tuple[str, ...]  # candidates; a prefix of them is spoken
    target_duration: float
    duration_range: Tuple[float, float]
    pause_before: float = 0.0
    whole: int = 0  # > 0: speak exactly these first words (whole sentences) if they fit the range


@dataclass(frozen=True)
class ClipSpec:
    path: str  # relative to the output directory
    sample_rate: int
    codec: str  # "mp3", "ogg" or "flac"
    segments: Tuple[SegmentSpec, ...]
    pause_after: float = 0.0


@dataclass(frozen=True)
class SegmentResult:
    words: Tuple[str, ...]  # the words actually spoken
    start: float
    duration: float


@dataclass(frozen=True)
class ClipResult:
    duration: float
    segments: Tuple[SegmentResult, ...]


def rng_for(seed: int, *keys: str) -> random.Random:
    """An independent, reproducible random stream for one part of the corpus."""
    return random.Random("/".join([str(seed), *keys]))


def scaled(count: float, scale: float, minimum: int = 2) -> int:
    return max(minimum, round(count * scale))


def make_speakers(
    rng: random.Random,
    language: str,
    split: str,
    pool: VoicePool,
    count: int,
    speaker_id: Callable[[str, int, int], str],
) -> List[Speaker]:
    """``count`` distinct voice/pitch/speed combinations, cycling over the pool's variants."""
    spec = LANGUAGES[language]
    combos = {}
    for variant in pool.variants:
        options = list(itertools.product(spec.accents, pool.pitches, pool.speeds))
        rng.shuffle(options)
        combos[variant] = options
    speakers = []
    for index in range(count):
        variant = pool.variants[index % len(pool.variants)]
        (base_voice, accent), pitch, speed = combos[variant].pop()
        voice = f"{base_voice}+{variant}"
        speakers.append(
            Speaker(
                id=speaker_id(voice, pitch, speed),
                language=language,
                split=split,
                espeak_voice=voice,
                pitch=pitch,
                speed=speed,
                gender="female" if variant.startswith("f") else "male",
                accent=accent,
                age=rng.choice(_AGES),
            )
        )
    return speakers


def synthesise(text: str, speaker: Speaker, sample_rate: int) -> np.ndarray:
    """espeak-ng speech for ``text``, resampled to ``sample_rate`` (float32 mono)."""
    command = [
        "espeak-ng", "-v", speaker.espeak_voice, "-s", str(speaker.speed),
        "-p", str(speaker.pitch), "--stdout",
    ]
    wav = subprocess.run(command, input=text.encode(), capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    ratio = Fraction(sample_rate, rate)
    audio = resample_poly(audio, ratio.numerator, ratio.denominator)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def initial_word_count(words: Sequence[str], speed: int, target: float) -> int:
    budget = target * CHARS_PER_SECOND_AT_175 * speed / 175.0
    total = 0
    for count, word in enumerate(words, start=1):
        total += len(word) + 1
        if total >= budget:
            return count
    return len(words)


def render_segment(segment: SegmentSpec, sample_rate: int) -> Tuple[int, np.ndarray]:
    """Speak the whole sentences of the segment if they fit the duration range, else a prefix of the
    candidate words aimed at the target duration."""
    low, high = segment.duration_range
    target, most = segment.target_duration, len(segment.words)
    if segment.whole:
        audio = synthesise(" ".join(segment.words[: segment.whole]), segment.speaker, sample_rate)
        if low <= len(audio) / sample_rate <= high:
            return segment.whole, audio
    count = initial_word_count(segment.words, segment.speaker.speed, target)
    for attempt in range(20):
        audio = synthesise(" ".join(segment.words[:count]), segment.speaker, sample_rate)
        duration = len(audio) / sample_rate
        guess = count * target / duration
        if attempt == 0 and min(most, max(1, round(guess))) != count:
            # One proportional step towards the target: the first estimate
            # ignores how each voice paces its words.
            count = min(most, max(1, round(guess)))
            continue
        if low <= duration <= high:
            return count, audio
        if duration > high:
            count = max(1, min(count - 1, math.floor(guess)))
        else:
            count = min(most, max(count + 1, math.ceil(guess)))
    raise RuntimeError(
        f"Could not fit {segment.speaker.espeak_voice} speech into {segment.duration_range} s"
    )


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, codec: str) -> None:
    """Encode deterministically: same samples in, same bytes out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "mp3":
        # Variable bit rate around 50 kbit/s: real clips are 48 kHz mono at similar rates.
        sf.write(
            path, audio, sample_rate, format="MP3", subtype="MPEG_LAYER_III",
            bitrate_mode="VARIABLE", compression_level=0.9,
        )
    elif codec == "wav":
        sf.write(path, audio, sample_rate, format="WAV", subtype="PCM_16")
    elif codec == "flac":
        sf.write(path, audio, sample_rate, format="FLAC", subtype="PCM_16")
    elif codec == "ogg":
        # libsndfile gives each Ogg stream a time-seeded serial number; ffmpeg's
        # bitexact mode does not, so its output is reproducible byte for byte.
        pcm = (audio * 32767.0).round().astype("<i2").tobytes()
        subprocess.run(
            [
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
                "-c:a", "libvorbis", "-q:a", "4", "-map_metadata", "-1",
                "-fflags", "+bitexact", "-flags:a", "+bitexact", str(path),
            ],
            input=pcm,
            check=True,
        )
    else:
        raise ValueError(f"Unknown codec {codec!r}")


def render_clip(out_dir: str, clip: ClipSpec) -> ClipResult:
    """Synthesise every segment of ``clip``, join them with pauses and write the file."""
    rate = clip.sample_rate
    pieces, segments, offset = [], [], 0
    for segment in clip.segments:
        pause = np.zeros(round(segment.pause_before * rate), dtype=np.float32)
        count, audio = render_segment(segment, rate)
        pieces += [pause, audio]
        offset += len(pause)
        segments.append(
            SegmentResult(segment.words[:count], start=offset / rate, duration=len(audio) / rate)
        )
        offset += len(audio)
    pieces.append(np.zeros(round(clip.pause_after * rate), dtype=np.float32))
    audio = np.concatenate(pieces)
    write_audio(Path(out_dir) / clip.path, audio, rate, clip.codec)
    return ClipResult(duration=len(audio) / rate, segments=tuple(segments))


def render_all(out_dir: Path, clips: Sequence[ClipSpec], num_jobs: int, desc: str) -> List[ClipResult]:
    work = functools.partial(render_clip, str(out_dir))
    progress = functools.partial(tqdm, total=len(clips), desc=desc, unit="file")
    if num_jobs <= 1:
        return [work(clip) for clip in progress(clips)]
    with multiprocessing.get_context("fork").Pool(num_jobs) as pool:
        return list(progress(pool.imap(work, clips, chunksize=4)))


def labelled_segment(
    rng: random.Random, text: TextSource, speaker: Speaker, split: str, **kwargs
) -> SegmentSpec:
    """A 1-8 s utterance: one real sentence of ``split``'s held-out text where the language has them."""
    words, whole = text.utterance(rng, split)
    return SegmentSpec(
        speaker=speaker,
        words=words,
        target_duration=rng.uniform(1.5, 7.0),
        duration_range=LABELLED_RANGE,
        whole=whole,
        **kwargs,
    )


# LibriSpeech dev/test: (probability, target seconds) of the four duration buckets of the paper's Table 5
# (<10, 10-15, 15-20, >20 s), each utterance several sentences of one speaker read in a row.
LS_EVAL_BUCKETS = ((0.4, (2.0, 9.0)), (0.2, (11.0, 14.0)), (0.2, (16.0, 19.0)), (0.2, (21.5, 30.0)))
LS_EVAL_RANGE = (1.0, 35.0)


def long_form_segment(rng: random.Random, text: TextSource, speaker: Speaker, split: str) -> SegmentSpec:
    """Sentences in a row lasting one of :data:`LS_EVAL_BUCKETS`' durations."""
    (low, high), = rng.choices([b for _, b in LS_EVAL_BUCKETS], weights=[p for p, _ in LS_EVAL_BUCKETS])
    target = rng.uniform(low, high)
    words = text.sentences_in_a_row(rng, split, target * speaker.speed / 175.0)
    return SegmentSpec(speaker, words, target, LS_EVAL_RANGE, whole=len(words))


def hex_client_id(language: str) -> Callable[[str, int, int], str]:
    """Common Voice style client ids: 128 hex digits, a function of the voice."""
    return lambda voice, pitch, speed: hashlib.sha512(
        f"{language}/{voice}/{pitch}/{speed}".encode()
    ).hexdigest()


def numeric_ids(start: int) -> Callable[[str, int, int], str]:
    counter = itertools.count(start)
    return lambda voice, pitch, speed: str(next(counter))


# ---------------------------------------------------------------------------
# Output helpers


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def write_table(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], sep: str = "\t") -> None:
    write_lines(path, [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows])


def write_gzip_table(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], sep: str) -> None:
    """Gzip with a zero timestamp and no embedded name, so the bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(sep.join(str(v) for v in row) + "\n" for row in [header, *rows])
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(text.encode("utf-8"))


def write_speakers(path: Path, speakers: Iterable[Speaker]) -> None:
    header = ("speaker_id", "language", "split", "espeak_voice", "pitch", "speed", "gender", "accent")
    rows = [
        (s.id, s.language, s.split, s.espeak_voice, s.pitch, s.speed, s.gender, s.accent)
        for s in speakers
    ]
    write_table(path, header, rows)


Summary = Dict[Tuple[str, str, str], float]  # (part, language, split) -> seconds


# ---------------------------------------------------------------------------
# Common Voice

CV_HEADER = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
    "down_votes", "age", "gender", "accents", "variant", "locale", "segment",
)
CV_GENDER = {"male": "male_masculine", "female": "female_feminine"}


@dataclass(frozen=True)
class CvClip:
    spec: ClipSpec
    language: str
    split: str
    final_period: bool


def plan_commonvoice(seed: int, scale: float) -> Tuple[List[CvClip], List[Speaker]]:
    clips, all_speakers = [], []
    for language in CV_LANGUAGES:
        text = text_source(language)
        number = itertools.count(30000000 + 1000000 * CV_LANGUAGES.index(language))
        splits = (
            ("train", TRAIN_VOICES, CV_TRAIN_CLIPS * LANGUAGES[language].resource),
            ("dev", DEV_VOICES, CV_EVAL_CLIPS),
            ("test", TEST_VOICES, CV_EVAL_CLIPS),
        )
        for split, pool, base_count in splits:
            rng = rng_for(seed, "commonvoice", language, split)
            count = scaled(base_count, scale)
            per_speaker = 25 if split == "train" else 6
            speakers = make_speakers(
                rng, language, split, pool, max(2, count // per_speaker), hex_client_id(language)
            )
            all_speakers += speakers
            for _ in range(count):
                segment = labelled_segment(rng, text, rng.choice(speakers), split)
                path = f"{language}/clips/common_voice_{language}_{next(number)}.mp3"
                spec = ClipSpec(path, 48000, "mp3", (segment,))
                clips.append(CvClip(spec, language, split, final_period=rng.random() < 0.6))
    return clips, all_speakers


def build_commonvoice(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    clips, speakers = plan_commonvoice(seed, scale)
    results = render_all(out, [c.spec for c in clips], num_jobs, "commonvoice")
    summary: Summary = defaultdict(float)
    for language in CV_LANGUAGES:
        lang_dir = out / language
        rows: Dict[str, list] = defaultdict(list)
        durations, spoken = [], []
        for clip, result in zip(clips, results):
            if clip.language != language:
                continue
            words = result.segments[0].words
            spoken.append(words)
            sentence = written_sentence(words, language, clip.final_period)
            speaker = clip.spec.segments[0].speaker
            name = Path(clip.spec.path).name
            rows[clip.split].append((
                speaker.id, name, hashlib.sha256(sentence.encode()).hexdigest(), sentence, "",
                2, 0, speaker.age, CV_GENDER[speaker.gender], speaker.accent, "", language, "",
            ))
            durations.append((name, round(result.duration * 1000)))
            summary[("commonvoice", language, clip.split)] += result.duration
        for split in ("train", "dev", "test"):
            write_table(lang_dir / f"{split}.tsv", CV_HEADER, rows[split])
        write_table(lang_dir / "validated.tsv", CV_HEADER, rows["train"] + rows["dev"] + rows["test"])
        for split in ("invalidated", "other"):
            write_table(lang_dir / f"{split}.tsv", CV_HEADER, [])
        write_table(lang_dir / "clip_durations.tsv", ("clip", "duration[ms]"), durations)

        text = text_source(language)
        lm = text.lm_sentences(
            rng_for(seed, "commonvoice", language, "lm"), scaled(CV_LM_SENTENCES, scale, 20), spoken
        )
        lm_rng = rng_for(seed, "commonvoice", language, "lm-case")
        lm_text = [written_sentence(words, language, lm_rng.random() < 0.6) for words in lm]
        write_lines(lang_dir / "lm_text.txt", lm_text)
        used: Dict[str, int] = defaultdict(int)
        for row in rows["train"] + rows["dev"] + rows["test"]:
            used[row[3]] += 1
        sentences = list(used.items()) + [(s, 0) for s in lm_text if s not in used]
        write_table(
            lang_dir / "validated_sentences.tsv",
            ("sentence_id", "sentence", "sentence_domain", "source", "is_used", "clips_count"),
            [
                (hashlib.sha256(s.encode()).hexdigest(), s, "", "mini-corpus", 1, n)
                for s, n in sentences
            ],
        )
    write_speakers(out / "mini_speakers_commonvoice.tsv", speakers)
    return summary


# ---------------------------------------------------------------------------
# VoxPopuli

VP_ASR_HEADER = (
    "id_", "paragraph_id", "session_id", "speaker_id", "original_text", "normed_text",
    "decoded", "start_time", "end_time", "cer", "wer", "vad", "split", "gender",
)


def plenary_date(rng: random.Random) -> str:
    return f"{rng.randint(2009, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


@dataclass(frozen=True)
class VpSession:
    spec: ClipSpec
    language: str
    split: str
    session_id: str


@dataclass(frozen=True)
class VpUnlabelled:
    spec: ClipSpec
    language: str


def plan_voxpopuli(seed: int, scale: float) -> Tuple[List[VpSession], List[VpUnlabelled], List[Speaker]]:
    sessions, unlabelled, all_speakers = [], [], []
    session_number = itertools.count(1)
    speaker_id = numeric_ids(1000)
    for language in VP_TRANSCRIBED_LANGUAGES:
        text = text_source(language)
        splits = (
            ("train", TRAIN_VOICES, VP_TRAIN_SEGMENTS * LANGUAGES[language].resource),
            ("dev", DEV_VOICES, VP_EVAL_SEGMENTS),
            ("test", TEST_VOICES, VP_EVAL_SEGMENTS),
        )
        for split, pool, base_count in splits:
            rng = rng_for(seed, "voxpopuli", language, split)
            remaining = scaled(base_count, scale)
            speakers = make_speakers(rng, language, split, pool, max(2, remaining // 8), speaker_id)
            all_speakers += speakers
            while remaining:
                size = min(remaining, rng.randint(4, 12))
                remaining -= size
                segments = tuple(
                    labelled_segment(
                        rng, text, rng.choice(speakers), split,
                        pause_before=rng.uniform(1.0, 3.0) if i == 0 else rng.uniform(0.3, 1.5),
                    )
                    for i in range(size)
                )
                date = plenary_date(rng)
                session_id = f"{date}-0900-PLENARY-{next(session_number)}"
                path = f"raw_audios/{language}/{date[:4]}/{session_id}_{language}.ogg"
                spec = ClipSpec(path, 16000, "ogg", segments, pause_after=rng.uniform(1.0, 3.0))
                sessions.append(VpSession(spec, language, split, session_id))
    for language in VP_UNLABELLED_LANGUAGES:
        text = text_source(language)
        rng = rng_for(seed, "voxpopuli", language, "unlabelled")
        remaining = scaled(VP_UNLABELLED_SEGMENTS, scale, minimum=1)
        speakers = make_speakers(
            rng, language, "unlabelled", UNLABELLED_VOICES, max(2, remaining // 3), speaker_id
        )
        all_speakers += speakers
        while remaining:
            size = min(remaining, rng.randint(1, 6))
            remaining -= size
            date = plenary_date(rng)
            event_id = f"{date}-0900-PLENARY-{next(session_number)}_{language}"
            for segment_no in range(size):
                segment = SegmentSpec(
                    speaker=rng.choice(speakers),
                    words=text.passage(rng, 150),
                    target_duration=rng.uniform(10.0, 30.0),
                    duration_range=UNLABELLED_RANGE,
                )
                path = f"unlabelled_data/{language}/{date[:4]}/{event_id}_{segment_no}.ogg"
                unlabelled.append(VpUnlabelled(ClipSpec(path, 16000, "ogg", (segment,)), language))
    return sessions, unlabelled, all_speakers


def build_voxpopuli(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    sessions, unlabelled, speakers = plan_voxpopuli(seed, scale)
    specs = [s.spec for s in sessions] + [u.spec for u in unlabelled]
    results = render_all(out, specs, num_jobs, "voxpopuli")
    session_results, unlabelled_results = results[: len(sessions)], results[len(sessions):]
    summary: Summary = defaultdict(float)
    for language in VP_TRANSCRIBED_LANGUAGES:
        rows, spoken = [], []
        for session, result in zip(sessions, session_results):
            if session.language != language:
                continue
            for number, (spec, segment) in enumerate(zip(session.spec.segments, result.segments)):
                start, end = round(segment.start, 3), round(segment.start + segment.duration, 3)
                normed = normalised_text(segment.words)
                rows.append((
                    number, f"{session.session_id}_{language}_{number}", session.session_id,
                    spec.speaker.id, written_sentence(segment.words, language, final_period=True),
                    normed, normed, start, end, 0.0, 0.0, json.dumps([[start, end]]),
                    session.split, spec.speaker.gender,
                ))
                spoken.append(segment.words)
                summary[("voxpopuli", language, session.split)] += segment.duration
        write_gzip_table(
            out / "transcribed_data" / language / f"asr_{language}.tsv.gz", VP_ASR_HEADER, rows, "|"
        )
        lm = text_source(language).lm_sentences(
            rng_for(seed, "voxpopuli", language, "lm"), scaled(VP_LM_SENTENCES, scale, 20), spoken
        )
        write_lines(out / "lm_data" / language / "sentences.txt", [normalised_text(s) for s in lm])
    for language in VP_UNLABELLED_LANGUAGES:
        rows = []
        for item, result in zip(unlabelled, unlabelled_results):
            if item.language == language:
                rows.append((
                    Path(item.spec.path).stem, item.spec.segments[0].speaker.id,
                    written_passage(result.segments[0].words, language),
                ))
                summary[("voxpopuli-unlabelled", language, "-")] += result.duration
        write_table(
            out / "unlabelled_data" / language / "reference_transcripts.tsv",
            ("id", "speaker_id", "text"), rows,
        )
    write_speakers(out / "mini_speakers_voxpopuli.tsv", speakers)
    return summary


# ---------------------------------------------------------------------------
# LibriSpeech


@dataclass(frozen=True)
class LsUtterance:
    spec: ClipSpec
    split: str
    utterance_id: str


def plan_librispeech(seed: int, scale: float) -> Tuple[List[LsUtterance], List[Speaker]]:
    text = text_source("en")
    speaker_id = numeric_ids(100)
    chapter_number = itertools.count(10000)
    utterances, all_speakers = [], []
    for split, (base_count, pool) in LS_SPLITS.items():
        rng = rng_for(seed, "librispeech", split)
        count = scaled(base_count, scale)
        per_speaker = 30 if split.startswith("train") else 20
        speakers = make_speakers(rng, "en", split, pool, max(2, count // per_speaker), speaker_id)
        all_speakers += speakers
        chapters = {s.id: [next(chapter_number) for _ in range(rng.randint(1, 2))] for s in speakers}
        next_index: Dict[Tuple[str, int], int] = defaultdict(int)
        for _ in range(count):
            speaker = rng.choice(speakers)
            chapter = rng.choice(chapters[speaker.id])
            utterance_id = f"{speaker.id}-{chapter}-{next_index[speaker.id, chapter]:04d}"
            next_index[speaker.id, chapter] += 1
            path = f"LibriSpeech/{split}/{speaker.id}/{chapter}/{utterance_id}.flac"
            if split.startswith("train"):
                segment = labelled_segment(rng, text, speaker, "train")
            else:  # dev-clean, dev-other -> held-out dev text; test-* -> held-out test text
                segment = long_form_segment(rng, text, speaker, split.split("-")[0])
            utterances.append(LsUtterance(ClipSpec(path, 16000, "flac", (segment,)), split, utterance_id))
    return utterances, all_speakers


def build_librispeech(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    utterances, speakers = plan_librispeech(seed, scale)
    results = render_all(out, [u.spec for u in utterances], num_jobs, "librispeech")
    summary: Summary = defaultdict(float)
    transcripts: Dict[Path, List[str]] = defaultdict(list)
    for utterance, result in zip(utterances, results):
        words = result.segments[0].words
        chapter_dir = (out / utterance.spec.path).parent
        transcripts[chapter_dir].append(f"{utterance.utterance_id} {librispeech_text(words)}")
        summary[("librispeech", "en", utterance.split)] += result.duration
    for chapter_dir, lines in transcripts.items():
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        write_lines(chapter_dir / f"{speaker}-{chapter}.trans.txt", sorted(lines))
    lm = text_source("en").lm_sentences(
        rng_for(seed, "librispeech", "lm"),
        scaled(LS_LM_SENTENCES, scale, 20),
        [r.segments[0].words for r in results],
    )
    write_lines(out / "librispeech-lm-norm.txt", [librispeech_text(s) for s in lm])
    write_speakers(out / "mini_speakers_librispeech.tsv", speakers)
    return summary


# ---------------------------------------------------------------------------
# FLEURS

# FLEURS code -> (text language, labelled training audio relative to English)
FLEURS_LANGUAGES: Dict[str, Tuple[str, float]] = {
    "en_us": ("en", 1.0), "de_de": ("de", 0.7), "fr_fr": ("fr", 0.5), "es_419": ("es", 0.4),
    "it_it": ("it", 0.3), "ru_ru": ("ru", 0.22), "pt_br": ("pt", 0.16), "nl_nl": ("nl", 0.12),
    "pl_pl": ("pl", 0.09), "sv_se": ("sv", 0.06), "fi_fi": ("fi", 0.04),
}
FLEURS_TRAIN_PROMPTS = 150  # English; a prompt is read by 1-3 readers
FLEURS_EVAL_PROMPTS = 15  # per language, for dev and for test (2 readers each)
FLEURS_UNLABELLED = 150  # per language
UNLABELLED_POOL_RANGE = (4.0, 16.0)


@dataclass(frozen=True)
class FleursClip:
    spec: ClipSpec
    code: str
    split: str  # train, dev, test or unlabelled
    prompt_id: int


def plan_fleurs(seed: int, scale: float) -> Tuple[List[FleursClip], List[Speaker]]:
    clips, all_speakers = [], []
    file_number = itertools.count(1000000)
    speaker_id = numeric_ids(0)  # one counter: ids are unique across languages and splits
    for code, (language, resource) in FLEURS_LANGUAGES.items():
        text = text_source(language)
        splits = (
            ("train", TRAIN_VOICES, FLEURS_TRAIN_PROMPTS * resource, (1, 3)),
            ("dev", DEV_VOICES, FLEURS_EVAL_PROMPTS, (2, 2)),
            ("test", TEST_VOICES, FLEURS_EVAL_PROMPTS, (2, 2)),
        )
        prompt = itertools.count(1)  # prompt ids are shared by all languages, as FLEURS's n-way parallel ones
        for split, pool, base_count, (low, high) in splits:
            rng = rng_for(seed, "fleurs", code, split)
            prompts = scaled(base_count, scale)
            speakers = make_speakers(rng, language, split, pool, max(3, prompts // 4), speaker_id)
            all_speakers += speakers
            for _ in range(prompts):
                prompt_id = next(prompt)
                words, whole = text.utterance(rng, split)
                for reader in rng.sample(speakers, rng.randint(low, high)):
                    segment = SegmentSpec(reader, words, rng.uniform(2.0, 7.0), LABELLED_RANGE, whole=whole)
                    path = f"fleurs/{code}/{split}/{next(file_number)}.wav"
                    clips.append(FleursClip(ClipSpec(path, 16000, "wav", (segment,)), code, split, prompt_id))
        rng = rng_for(seed, "fleurs", code, "unlabelled")
        speakers = make_speakers(rng, language, "unlabelled", UNLABELLED_VOICES, 6, speaker_id)
        all_speakers += speakers
        for number in range(scaled(FLEURS_UNLABELLED, scale)):
            segment = SegmentSpec(rng.choice(speakers), text.passage(rng, 60), rng.uniform(5.0, 15.0),
                                  UNLABELLED_POOL_RANGE)
            path = f"unlabelled/{code}/{code}_{number:05d}.wav"
            clips.append(FleursClip(ClipSpec(path, 16000, "wav", (segment,)), code, "unlabelled", -1))
    return clips, all_speakers


def fleurs_chars(transcription: str) -> str:
    """The "chars" column of lhotse's download_fleurs: letters space-separated, words closed by "|"."""
    return " ".join("|".join(transcription.split())) + " |"


def build_fleurs(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    clips, speakers = plan_fleurs(seed, scale)
    results = render_all(out, [c.spec for c in clips], num_jobs, "fleurs")
    summary: Summary = defaultdict(float)
    rows: Dict[Tuple[str, str], list] = defaultdict(list)
    for clip, result in zip(clips, results):
        language = FLEURS_LANGUAGES[clip.code][0]
        words = result.segments[0].words
        summary[("fleurs", clip.code, clip.split)] += result.duration
        name = Path(clip.spec.path).name
        if clip.split == "unlabelled":
            rows[clip.code, "unlabelled"].append((Path(name).stem, written_passage(words, language)))
            continue
        transcription = normalised_text(words)
        gender = 1 if clip.spec.segments[0].speaker.gender == "female" else 0  # FLEURS: 0 male, 1 female
        rows[clip.code, clip.split].append((
            clip.prompt_id, name, written_sentence(words, language, final_period=True), transcription,
            fleurs_chars(transcription), round(result.duration * 16000), gender,
        ))
    for (code, split), table in rows.items():
        if split == "unlabelled":
            write_table(out / "unlabelled" / code / "reference_transcripts.tsv", ("id", "text"), table)
        else:
            write_lines(out / "fleurs" / "metadata" / code / f"{split}.tsv",
                        ["\t".join(str(v) for v in row) for row in table])
    write_speakers(out / "mini_speakers_fleurs.tsv", speakers)
    write_fleurs_lm_text(out, seed, scale)
    return summary


FLEURS_LM_SENTENCES = 5000  # per language
FLEURS_LM_KEY_WORDS = 3  # an LM sentence is left out if its first words (up to this many) are heard in any clip


def fleurs_spoken_texts(out: Path, code: str) -> List[str]:
    """Lower-case, period-free text of every clip of ``code``: FLEURS train/dev/test and the untranscribed pool."""
    texts = []
    for split in ("train", "dev", "test"):
        if (out / "fleurs" / "metadata" / code / f"{split}.tsv").is_file():
            texts += fleurs_transcriptions(out, code, split)
    pool = out / "unlabelled" / code / "reference_transcripts.tsv"
    if pool.is_file():
        rows = pool.read_text(encoding="utf-8").splitlines()[1:]
        texts += [row.split("\t", 1)[1].lower().replace(".", "") for row in rows if "\t" in row]
    return texts


def write_fleurs_lm_text(out: Path, seed: int, scale: float) -> None:
    """``fleurs_lm/<code>.txt``: LM text per language (one lower-case sentence per line), as a real recipe takes
    from a text corpus (FLEURS ships none): training-split sentences of the language's text source, none of which
    begins like anything a clip says (the pool's sentences included, so labelling the pool with the LM is not
    reading its answers; dev/test sentences are in other splits anyway). Word languages: fresh Zipf sentences."""
    for code, (language, _) in FLEURS_LANGUAGES.items():
        heard = " " + " | ".join(fleurs_spoken_texts(out, code))
        count = scaled(FLEURS_LM_SENTENCES, scale, 50)
        candidates = text_source(language).lm_sentences(rng_for(seed, "fleurs", code, "lm"), 2 * count, ())
        kept = [" ".join(words) for words in candidates
                if f" {' '.join(words[:FLEURS_LM_KEY_WORDS])}" not in heard][:count]
        write_lines(out / "fleurs_lm" / f"{code}.txt", kept)


# ---------------------------------------------------------------------------
# FLEURS long-form evaluation set (USM §2.4 / Table 7: chunk-wise attention on long audio)

LONGFORM_LANGUAGES = ("en_us", "de_de", "fr_fr", "es_419")
LONGFORM_RECORDINGS = 3  # per language at --scale 1 (at least 1 at any scale)
LONGFORM_TARGET = (80.0, 100.0)  # a recording stops at the first sentence end past this (any scale)
LONGFORM_PAUSE = (0.2, 0.8)  # silence between sentences, and before the first / after the last
LONGFORM_RANGE = (60.0, 180.0)
LONGFORM_VERSION = 1


@dataclass(frozen=True)
class LongformSpec:
    path: str  # relative to the output directory
    code: str
    speaker: Speaker
    sentences: Tuple[Tuple[str, ...], ...]  # candidates, read in order until target_duration is reached
    pauses: Tuple[float, ...]  # pauses[i]: silence before sentence i; pauses[n]: after the n-th, the last read
    target_duration: float


def fleurs_transcriptions(out: Path, code: str, split: str) -> List[str]:
    """The ``transcription`` column of ``fleurs/metadata/<code>/<split>.tsv`` as written by :func:`build_fleurs`."""
    path = out / "fleurs" / "metadata" / code / f"{split}.tsv"
    return [line.split("\t")[3] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trim_silence(audio: np.ndarray, sample_rate: int, threshold: float = 1e-3, margin: float = 0.05) -> np.ndarray:
    """``audio`` without the leading/trailing near-silence espeak-ng adds (~0.35 s at the end), keeping ``margin`` s."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    keep = round(margin * sample_rate)
    return audio[max(0, loud[0] - keep): loud[-1] + 1 + keep]


def plan_longform(
    seed: int, scale: float, codes: Sequence[str], excluded: Dict[str, set], allowed: Dict[str, set]
) -> Tuple[List[LongformSpec], List[Speaker]]:
    """Recordings of held-out sentences per FLEURS code: candidates from the text source's test split (fresh
    Zipf sentences for word languages) whose transcription is not in ``excluded[code]`` (the FLEURS clips') and
    uses only ``allowed[code]`` characters (those of the training transcripts: the CTC table covers them)."""
    specs, all_speakers = [], []
    for code in sorted(codes):
        language = FLEURS_LANGUAGES[code][0]
        text = text_source(language)
        rng = rng_for(seed, "fleurs-longform", code)
        count = max(1, round(LONGFORM_RECORDINGS * scale))
        number = itertools.count()
        speakers = make_speakers(rng, language, "longform", TEST_VOICES, count,
                                 lambda voice, pitch, speed: f"lf-{code}-{next(number)}")
        all_speakers += speakers
        used = set(excluded.get(code, ()))
        for index, speaker in enumerate(speakers):
            target = rng.uniform(*LONGFORM_TARGET)
            chars_per_second = CHARS_PER_SECOND_AT_175 * speaker.speed / 175.0
            sentences, estimate, attempts = [], 0.0, 0
            while estimate < 2 * target + 20:  # twice what the estimate needs: espeak-ng's pace varies by voice
                attempts += 1
                if attempts > 100000:
                    raise RuntimeError(f"{code}: not enough held-out sentences for the long-form set")
                words = text.passage(rng, 1, split="test")
                transcription = normalised_text(words)
                if transcription in used or not set(transcription) <= allowed[code]:
                    continue
                used.add(transcription)
                sentences.append(words)
                estimate += len(transcription) / chars_per_second + sum(LONGFORM_PAUSE) / 2
            pauses = tuple(round(rng.uniform(*LONGFORM_PAUSE), 3) for _ in range(len(sentences) + 1))
            path = f"longform/{code}/{code}_longform_{index:03d}.wav"
            specs.append(LongformSpec(path, code, speaker, tuple(sentences), pauses, round(target, 3)))
    return specs, all_speakers


def render_longform(out_dir: str, spec: LongformSpec) -> ClipResult:
    """Read the spec's sentences with its one voice, each trimmed of espeak-ng's edge silence and preceded by its
    pause, until the audio reaches the target duration; write the 16 kHz WAV."""
    rate = 16000
    pieces, segments, offset = [], [], 0
    for words, pause in zip(spec.sentences, spec.pauses):
        silence = np.zeros(round(pause * rate), dtype=np.float32)
        audio = trim_silence(synthesise(" ".join(words), spec.speaker, rate), rate)
        pieces += [silence, audio]
        offset += len(silence)
        segments.append(SegmentResult(words, start=offset / rate, duration=len(audio) / rate))
        offset += len(audio)
        if offset / rate >= spec.target_duration:
            break
    else:
        raise RuntimeError(f"{spec.path}: the candidate sentences ended before {spec.target_duration} s")
    pieces.append(np.zeros(round(spec.pauses[len(segments)] * rate), dtype=np.float32))
    audio = np.concatenate(pieces)
    duration = len(audio) / rate
    if not LONGFORM_RANGE[0] <= duration <= LONGFORM_RANGE[1]:
        raise RuntimeError(f"{spec.path}: {duration:.1f} s is outside {LONGFORM_RANGE}")
    write_audio(Path(out_dir) / spec.path, audio, rate, "wav")
    return ClipResult(duration=duration, segments=tuple(segments))


def make_longform(out_dir: Path, seed: int = 0, scale: float = 1.0, codes: Sequence[str] = LONGFORM_LANGUAGES,
                  num_jobs: int = 2) -> Summary:
    """Write the long-form set of the FLEURS mini corpus in ``out_dir`` (built first with the same seed and
    scale) under ``<out_dir>/longform``; a no-op if ``longform/.done`` holds the same settings.

    Returns seconds of audio per ("fleurs-longform", code, "test"); empty when skipped.
    """
    out_dir = Path(out_dir)
    codes = sorted(set(codes))
    unknown = [c for c in codes if c not in FLEURS_LANGUAGES]
    if unknown:
        raise ValueError(f"unknown FLEURS codes {unknown}; the mini corpus has {sorted(FLEURS_LANGUAGES)}")
    missing = [c for c in codes if not (out_dir / "fleurs" / "metadata" / c / "train.tsv").is_file()]
    if missing:
        raise FileNotFoundError(f"no FLEURS mini corpus for {missing} in {out_dir}: build --layout fleurs first")
    root = out_dir / "longform"
    marker = root / ".done"
    settings = {"seed": seed, "scale": scale, "languages": codes, "version": LONGFORM_VERSION}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        logger.info("%s exists with the same settings; skipping.", marker)
        return {}
    if root.exists():
        shutil.rmtree(root)
    start = time.time()
    excluded = {c: {t for s in ("train", "dev", "test") for t in fleurs_transcriptions(out_dir, c, s)} for c in codes}
    allowed = {c: set("".join(fleurs_transcriptions(out_dir, c, "train"))) for c in codes}
    specs, speakers = plan_longform(seed, scale, codes, excluded, allowed)
    work = functools.partial(render_longform, str(out_dir))
    if num_jobs <= 1:
        results = [work(spec) for spec in specs]
    else:
        with multiprocessing.get_context("fork").Pool(num_jobs) as pool:
            results = pool.map(work, specs, chunksize=1)
    summary: Summary = defaultdict(float)
    transcripts: Dict[str, list] = defaultdict(list)
    segments: Dict[str, list] = defaultdict(list)
    for spec, result in zip(specs, results):
        recording_id = Path(spec.path).stem
        texts = [normalised_text(segment.words) for segment in result.segments]
        transcripts[spec.code].append((recording_id, " ".join(texts)))
        segments[spec.code] += [
            (recording_id, spec.speaker.id, f"{s.start:.3f}", f"{s.start + s.duration:.3f}", t)
            for s, t in zip(result.segments, texts)
        ]
        summary[("fleurs-longform", spec.code, "test")] += result.duration
    for code in codes:
        write_table(root / code / "transcripts.tsv", ("id", "text"), transcripts[code])
        write_table(root / code / "segments.tsv", ("id", "speaker_id", "start", "end", "text"), segments[code])
    write_speakers(root / "speakers.tsv", speakers)
    log_summary("fleurs long-form", summary, time.time() - start)
    marker.write_text(json.dumps(settings, sort_keys=True) + "\n")
    return summary


# ---------------------------------------------------------------------------
# CoVoST 2 (X -> English speech translation on Common Voice 4 audio)

# CoVoST / Common Voice code -> (text language, CoVoST resource group)
COVOST_LANGUAGES: Dict[str, Tuple[str, str]] = {
    "fr": ("fr", "high"), "de": ("de", "high"), "es": ("es", "high"),
    "it": ("it", "mid"), "ru": ("ru", "mid"), "fa": ("fa", "mid"),
    "nl": ("nl", "low"), "sv-SE": ("sv", "low"),
}
COVOST_TRAIN = {"high": 300, "mid": 150, "low": 60}  # utterances per language at --scale 1
COVOST_EVAL = 25  # per language, for dev and for test
COVOST_MT_TEXT = 1000  # text-only pairs per language
COVOST_RANGE = (0.8, 12.0)  # wide: a sentence is always spoken whole (its translation must match)
CV4_HEADER = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent")
COVOST_HEADER = ("path", "sentence", "translation", "client_id", "split")


@dataclass(frozen=True)
class CovostClip:
    spec: ClipSpec
    code: str
    split: str  # train, train_covost, dev or test
    sentence: str
    translation: str


def plan_covost2(seed: int, scale: float) -> Tuple[List[CovostClip], List[Speaker]]:
    from mini_translation_text import parallel_pairs

    clips, all_speakers = [], []
    for index, (code, (language, group)) in enumerate(COVOST_LANGUAGES.items()):
        number = itertools.count(20000000 + 1000000 * index)
        for split, pool, base_count in (("train", TRAIN_VOICES, COVOST_TRAIN[group]),
                                        ("dev", DEV_VOICES, COVOST_EVAL), ("test", TEST_VOICES, COVOST_EVAL)):
            rng = rng_for(seed, "covost2", code, split)
            count = scaled(base_count, scale)
            speakers = make_speakers(rng, language, split, pool, max(2, count // 12), hex_client_id(code))
            all_speakers += speakers
            # each language its own sample of meanings: the seed differs per language
            for sentence, translation in parallel_pairs(language, split, count, seed=seed * 100 + index):
                words = tuple(sentence.split())
                segment = SegmentSpec(rng.choice(speakers), words, 4.0, COVOST_RANGE, whole=len(words))
                path = f"cv/{code}/clips/common_voice_{code}_{next(number)}.mp3"
                # CoVoST 2 added training clips beyond Common Voice's own split: "train_covost"
                tag = "train_covost" if split == "train" and rng.random() < 0.2 else split
                clips.append(CovostClip(ClipSpec(path, 48000, "mp3", (segment,)), code, tag, sentence, translation))
    return clips, all_speakers


def build_covost2(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    from mini_translation_text import parallel_pairs

    clips, speakers = plan_covost2(seed, scale)
    results = render_all(out, [c.spec for c in clips], num_jobs, "covost2")
    summary: Summary = defaultdict(float)
    validated: Dict[str, list] = defaultdict(list)
    covost: Dict[str, list] = defaultdict(list)
    for clip, result in zip(clips, results):
        if len(result.segments[0].words) != len(clip.spec.segments[0].words):
            raise RuntimeError(f"{clip.spec.path}: the sentence was not spoken whole")
        speaker = clip.spec.segments[0].speaker
        name = Path(clip.spec.path).name
        validated[clip.code].append((speaker.id, name, clip.sentence, 2, 0, speaker.age, speaker.gender, ""))
        covost[clip.code].append((name, clip.sentence, clip.translation, speaker.id, clip.split))
        summary[("covost2", clip.code, clip.split.replace("_covost", ""))] += result.duration
    for index, (code, (language, _)) in enumerate(COVOST_LANGUAGES.items()):
        write_table(out / "cv" / code / "validated.tsv", CV4_HEADER, validated[code])
        write_table(out / "covost" / f"covost_v2.{code}_en.tsv", COVOST_HEADER, covost[code])
        pairs = parallel_pairs(language, "text", scaled(COVOST_MT_TEXT, scale, 20), seed=seed * 100 + index)
        write_lines(out / "covost" / f"mt_text.{code}_en.tsv", [f"{src}\t{tgt}" for src, tgt in pairs])
    write_speakers(out / "mini_speakers_covost2.tsv", speakers)
    return summary


# ---------------------------------------------------------------------------
# Audio-visual LRS3 and MuST-C: mini_av_corpus (imported when used; it imports this module's helpers)


def build_lrs3(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    from mini_av_corpus import build_lrs3 as build

    return build(out, seed, scale, num_jobs)


def build_mustc(out: Path, seed: int, scale: float, num_jobs: int) -> Summary:
    from mini_av_corpus import build_mustc as build

    return build(out, seed, scale, num_jobs)


# ---------------------------------------------------------------------------
# Driver

BUILDERS = {
    "commonvoice": build_commonvoice,
    "voxpopuli": build_voxpopuli,
    "librispeech": build_librispeech,
    "fleurs": build_fleurs,
    "covost2": build_covost2,
    "lrs3": build_lrs3,
    "mustc": build_mustc,
}


def layout_outputs(out: Path, layout: str) -> List[Path]:
    """Everything a layout writes, removed before it is written again."""
    own = {
        "commonvoice": [out / language for language in CV_LANGUAGES],
        "voxpopuli": [out / d for d in ("raw_audios", "transcribed_data", "unlabelled_data", "lm_data")],
        "librispeech": [out / "LibriSpeech", out / "librispeech-lm-norm.txt"],
        "fleurs": [out / "fleurs", out / "unlabelled", out / "longform"],
        "covost2": [out / "cv", out / "covost"],
        "lrs3": [out / "lrs3"],
        "mustc": [out / "mustc"],
    }[layout]
    return own + [out / f"mini_speakers_{layout}.tsv"]


def log_summary(layout: str, summary: Summary, wall_seconds: float) -> None:
    totals: Dict[str, float] = defaultdict(float)
    for (part, language, split), seconds in sorted(summary.items()):
        logger.info("%-22s %-3s %-16s %7.3f h", part, language, split, seconds / 3600)
        totals[part] += seconds
    for part, seconds in totals.items():
        logger.info("%-22s total %.3f h", part, seconds / 3600)
    logger.info("%s mini corpus written in %.1f s", layout, wall_seconds)


def make_mini_corpus(
    layout: str, out_dir: Path, seed: int = 0, scale: float = 1.0, num_jobs: int = 2,
    longform: Optional[Sequence[str]] = None,
) -> Summary:
    """Write the ``layout`` mini corpus under ``out_dir``; a no-op if already complete. ``longform`` (fleurs
    only): FLEURS codes of the long-form set to add (:func:`make_longform`, skipped on its own when complete).

    Returns seconds of audio per (part, language, split); empty when skipped.
    """
    if layout not in BUILDERS:
        raise ValueError(f"Unknown layout {layout!r}; choose from {LAYOUTS}")
    if longform and layout != "fleurs":
        raise ValueError("the long-form set belongs to the fleurs layout")
    add_longform = functools.partial(make_longform, out_dir, seed, scale, longform or (), num_jobs)
    out_dir = Path(out_dir)
    marker = out_dir / f".done-{layout}"
    settings = {"layout": layout, "seed": seed, "scale": scale, "version": FORMAT_VERSION}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        logger.info("%s exists with the same settings; skipping.", marker)
        return add_longform() if longform else {}
    marker.unlink(missing_ok=True)
    for path in layout_outputs(out_dir, layout):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary = BUILDERS[layout](out_dir, seed, scale, num_jobs)
    log_summary(layout, summary, time.time() - start)
    marker.write_text(json.dumps(settings, sort_keys=True) + "\n")
    if longform:
        summary.update(add_longform())
    return summary


def get_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--out", required=True, type=Path, help="corpus root to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 gives ~5 h of Common Voice audio")
    parser.add_argument("--num-jobs", type=int, default=2)
    parser.add_argument("--longform", nargs="*", default=None, metavar="CODE", choices=sorted(FLEURS_LANGUAGES),
                        help="fleurs: also write the long-form evaluation set for these FLEURS codes (no codes: "
                             f"{' '.join(LONGFORM_LANGUAGES)}); see make_longform")
    args = parser.parse_args()
    if args.longform is not None and args.layout != "fleurs":
        parser.error("--longform needs --layout fleurs")
    if args.longform == []:
        args.longform = list(LONGFORM_LANGUAGES)
    return args


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args = get_args()
    make_mini_corpus(args.layout, args.out, args.seed, args.scale, args.num_jobs, args.longform)


if __name__ == "__main__":
    main()
