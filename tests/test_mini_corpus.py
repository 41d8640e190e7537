"""The espeak-ng mini corpus, read back by lhotse's own corpus recipes.

Tiny corpora are written with the command-line tool and then prepared exactly as
a recipe prepares the real corpus: ``prepare_commonvoice``, ``prepare_voxpopuli``,
``prepare_librispeech`` and ``local/prepare_voxpopuli_unlabelled.py``. Word
membership is checked against wordfreq itself, not against the generator's lists, and
the real sentences against the text of the Debian fortunes packages they come from.
"""
from __future__ import annotations

import csv
import filecmp
import gzip
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import wordfreq
from lhotse import load_manifest
from lhotse.recipes import prepare_commonvoice, prepare_fleurs, prepare_librispeech, prepare_voxpopuli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "local"))
import make_mini_corpus as mmc  # noqa: E402
from conftest import make_mini_corpus  # noqa: E402
from prepare_voxpopuli_unlabelled import prepare_voxpopuli_unlabelled  # noqa: E402

SCALE = 0.01


def make_corpus(layout: str, out: Path, seed: int = 0, scale: float = SCALE) -> subprocess.CompletedProcess:
    return make_mini_corpus(layout, out, seed, scale)

CV_LANGS = {"en", "de", "fr", "es", "it", "el", "ru"}
VP_TRANSCRIBED = {"en", "de", "fr", "es", "it"}
VP_UNLABELLED = {"en", "de", "fr", "es", "it", "el"}
LS_SPLITS = {"train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini")
    for layout in ("commonvoice", "voxpopuli", "librispeech", "fleurs"):
        make_corpus(layout, out)
    return out


SENTENCE_LANGS = {"en", "de", "es", "it", "ru"}  # a Debian fortunes package each
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_DIRS = {"en": [""], "de": ["de"], "es": ["es"], "it": ["", "it"], "ru": ["ru"]}


def fortunes_text(language: str) -> str:
    """All of the language's fortune files as one lower-case string, runs of non-letters as one space."""
    parts = []
    for sub in FORTUNE_DIRS[language]:
        for path in sorted((FORTUNES / sub).iterdir()):
            if path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8"):
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
    text = "\n".join(parts).lower().replace("’", "'")
    return " " + re.sub(r"[^\w']+|_", " ", text) + " "


def reference_words(language: str) -> set:
    """wordfreq's top words, Greek final sigma written as in running text."""
    words = wordfreq.top_n_list(language, 50000 if language in SENTENCE_LANGS else 6000)
    if language == "el":
        words = [w[:-1] + "ς" if w.endswith("σ") else w for w in words]
    return set(words)


def assert_real_words(text: str, language: str) -> None:
    vocabulary = reference_words(language)
    words = text.rstrip(".").replace(". ", " ").split(" ")
    known = sum(w.lower() in vocabulary for w in words)
    # Zipf words: all frequent; real sentences: kept when 90% of their words are
    assert words and known >= (0.9 * len(words) if language in SENTENCE_LANGS else len(words)), (language, text)
    assert not any(w.lower() in {"l", "d"} for w in words if language == "fr"), text
    assert not any(w.endswith("σ") for w in words), text


def assert_disjoint_speakers(speakers_by_split: dict) -> None:
    splits = sorted(speakers_by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not speakers_by_split[a] & speakers_by_split[b], (a, b)


def voice_variants_by_split(corpus: Path, layout: str) -> dict:
    variants = defaultdict(set)
    with open(corpus / f"mini_speakers_{layout}.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            variants[row["language"], row["split"]].add(row["espeak_voice"].split("+")[1])
    return variants


def test_commonvoice_layout_read_by_lhotse(corpora, tmp_path, monkeypatch):
    # lhotse scans files in a spawned process pool per split; threads do the same work
    # without paying for 21 interpreter start-ups.
    import lhotse.recipes.commonvoice as cv_recipe

    monkeypatch.setattr(
        cv_recipe, "ProcessPoolExecutor", lambda max_workers, mp_context: ThreadPoolExecutor(max_workers)
    )
    manifests = prepare_commonvoice(corpora, tmp_path, languages=sorted(CV_LANGS))
    assert set(manifests) == CV_LANGS
    for language, parts in manifests.items():
        assert set(parts) == {"train", "dev", "test"}
        speakers = {}
        for split, pair in parts.items():
            recordings, supervisions = pair["recordings"], pair["supervisions"]
            with open(corpora / language / f"{split}.tsv") as f:
                assert len(recordings) == len(supervisions) == sum(1 for _ in f) - 1 > 0
            for sup in supervisions:
                assert sup.language == language
                assert 1.0 <= sup.duration <= 8.0
                assert_real_words(sup.text, language)
                assert sup.text[0] == sup.text[0].upper()
            speakers[split] = {s.speaker for s in supervisions}
            recording = next(iter(recordings))
            audio = recording.load_audio()
            assert recording.sampling_rate == 48000
            assert audio.shape == (1, recording.num_samples)
            assert abs(audio).max() > 0.05
        assert_disjoint_speakers(speakers)

        spoken = {s.text.rstrip(".").lower() for p in parts.values() for s in p["supervisions"]}
        lm_lines = (corpora / language / "lm_text.txt").read_text().splitlines()
        assert lm_lines and not {line.rstrip(".").lower() for line in lm_lines} & spoken
        for line in lm_lines[:50]:
            assert_real_words(line, language)

    variants = voice_variants_by_split(corpora, "commonvoice")
    for language in CV_LANGS:
        assert_disjoint_speakers({split: variants[language, split] for split in ("train", "dev", "test")})


def test_commonvoice_sizes_follow_resource_levels():
    clips, _ = mmc.plan_commonvoice(seed=0, scale=1.0)
    train = defaultdict(int)
    for clip in clips:
        if clip.split == "train":
            train[clip.language] += 1
    counts = sorted(train.values())
    assert len(set(counts)) == len(counts) == len(CV_LANGS)  # every language differs
    assert max(train, key=train.get) == "en"
    assert 0.1 <= train["el"] / train["en"] <= 0.15  # about one eighth


def test_voxpopuli_transcribed_read_by_lhotse(corpora, tmp_path):
    for language in sorted(VP_TRANSCRIBED):
        # The official scripts download this annotation file; lhotse looks for it in its output dir.
        shutil.copy(corpora / "transcribed_data" / language / f"asr_{language}.tsv.gz", tmp_path)
        manifests = prepare_voxpopuli(corpora, tmp_path, task="asr", lang=language)
        with gzip.open(corpora / "transcribed_data" / language / f"asr_{language}.tsv.gz", "rt") as f:
            expected = sum(1 for _ in f) - 1
        assert sum(len(p["supervisions"]) for p in manifests.values()) == expected
        speakers = {}
        for split, pair in manifests.items():
            recordings, supervisions = pair["recordings"], pair["supervisions"]
            assert len(supervisions) > 0
            for sup in supervisions:
                assert sup.language == language
                assert 1.0 <= sup.duration <= 8.0
                assert sup.text == sup.text.lower()
                assert_real_words(sup.text, language)
                assert sup.end <= recordings[sup.recording_id].duration
            speakers[split] = {s.speaker for s in supervisions}
            sup = next(iter(supervisions))
            recording = recordings[sup.recording_id]
            assert recording.sampling_rate == 16000
            segment = recording.load_audio(offset=sup.start, duration=sup.duration)
            assert abs(segment.shape[1] - round(sup.duration * 16000)) <= 1
            assert abs(segment).max() > 0.05
        assert_disjoint_speakers(speakers)


def test_voxpopuli_unlabelled_script(corpora, tmp_path):
    out = tmp_path / "manifests"
    subprocess.run(
        [
            sys.executable, str(ROOT / "local" / "prepare_voxpopuli_unlabelled.py"),
            "--corpus-dir", str(corpora), "--output-dir", str(out), "--languages", "auto",
        ],
        check=True, capture_output=True,
    )
    languages = {p.name.split("_")[-1].split(".")[0] for p in out.glob("*_recordings_*.jsonl.gz")}
    assert languages == VP_UNLABELLED  # Russian is Common Voice only
    for language in VP_UNLABELLED:
        recordings = load_manifest(out / f"voxpopuli-unlabelled_recordings_{language}.jsonl.gz")
        supervisions = load_manifest(out / f"voxpopuli-unlabelled_supervisions_{language}.jsonl.gz")
        files = sorted((corpora / "unlabelled_data" / language).rglob("*.ogg"))
        assert sorted(r.id for r in recordings) == [f.stem for f in files]
        for sup in supervisions:
            assert sup.language == language and sup.text == "" and sup.custom["unlabelled"]
            assert 8.0 <= sup.duration <= 35.0
            assert sup.duration == recordings[sup.recording_id].duration
        recording = next(iter(recordings))
        assert recording.sampling_rate == 16000
        assert recording.load_audio().shape == (1, recording.num_samples)


def test_voxpopuli_unlabelled_skips_unreadable_files(corpora, tmp_path):
    language_dir = tmp_path / "unlabelled_data" / "el" / "2020"
    language_dir.mkdir(parents=True)
    good = next((corpora / "unlabelled_data" / "el").rglob("*.ogg"))
    shutil.copy(good, language_dir)
    (language_dir / "20200101-0900-PLENARY-1_el_0.ogg").write_bytes(b"not an ogg file" * 100)
    (language_dir / "20200101-0900-PLENARY-1_el_1.ogg").write_bytes(good.read_bytes()[:300])
    result = prepare_voxpopuli_unlabelled(tmp_path, languages=["el"], check_decode=True)["el"]
    assert [r.id for r in result.recordings] == [good.stem]
    assert sorted(result.unreadable) == ["20200101-0900-PLENARY-1_el_0", "20200101-0900-PLENARY-1_el_1"]


def test_librispeech_read_by_lhotse(corpora, tmp_path):
    manifests = prepare_librispeech(corpora / "LibriSpeech", tmp_path)
    assert set(manifests) == LS_SPLITS
    speakers = {}
    for split, pair in manifests.items():
        recordings, supervisions = pair["recordings"], pair["supervisions"]
        assert len(supervisions) == len(recordings) > 0
        for sup in supervisions:
            assert sup.language == "English"
            assert 1.0 <= sup.duration <= (8.0 if split.startswith("train") else 35.0)
            assert sup.text == sup.text.upper() and "." not in sup.text
            assert_real_words(sup.text, "en")
        speakers[split] = {s.speaker for s in supervisions}
        recording = next(iter(recordings))
        assert recording.sampling_rate == 16000
        assert recording.load_audio().shape == (1, recording.num_samples)
    assert_disjoint_speakers(speakers)
    variants = voice_variants_by_split(corpora, "librispeech")
    assert not variants["en", "train-clean-100"] & (variants["en", "dev-clean"] | variants["en", "test-clean"])
    lm = (corpora / "librispeech-lm-norm.txt").read_text().splitlines()
    assert lm and all(line == line.upper() for line in lm)


def test_same_seed_gives_identical_files(corpora, tmp_path):
    again = tmp_path / "again"
    make_corpus("librispeech", again)
    compared = 0
    for path in sorted(again.rglob("*")):
        if path.is_file():
            assert filecmp.cmp(path, corpora / path.relative_to(again), shallow=False), path
            compared += 1
    assert compared > 20


@pytest.mark.parametrize(
    "plan", [mmc.plan_commonvoice, mmc.plan_voxpopuli, mmc.plan_librispeech], ids=lambda f: f.__name__
)
def test_plans_and_encoded_bytes_depend_only_on_the_seed(plan, tmp_path):
    first, *rest = plan(seed=3, scale=SCALE)
    assert (first, *rest) == plan(seed=3, scale=SCALE)
    assert first != plan(seed=4, scale=SCALE)[0]
    spec = first[0].spec  # an MP3 clip, an Ogg session of several speakers, a FLAC file
    results = [mmc.render_clip(str(tmp_path / name), spec) for name in ("a", "b")]
    assert results[0] == results[1]
    assert (tmp_path / "a" / spec.path).read_bytes() == (tmp_path / "b" / spec.path).read_bytes()


def test_rerun_with_same_arguments_is_skipped(corpora):
    transcript = next((corpora / "LibriSpeech").rglob("*.trans.txt"))
    before = transcript.stat().st_mtime_ns
    result = make_corpus("librispeech", corpora)
    assert "skipping" in result.stderr
    assert transcript.stat().st_mtime_ns == before


def test_real_sentences_and_held_out_test_text(corpora):
    """Common Voice transcripts of the fortunes languages are sentences of the fortunes text; a test sentence
    is never a training transcript or a line of the LM text."""
    for language in sorted(SENTENCE_LANGS):
        reference = fortunes_text(language)
        text = {}
        for split in ("train", "dev", "test"):
            with open(corpora / language / f"{split}.tsv") as f:
                text[split] = {row["sentence"].rstrip(".").lower() for row in csv.DictReader(f, delimiter="\t")}
        for sentence in text["train"] | text["test"]:
            assert f" {sentence} " in reference, (language, sentence)
        lm = {line.rstrip(".").lower() for line in (corpora / language / "lm_text.txt").read_text().splitlines()}
        assert len(lm) >= 20
        assert not text["test"] & (text["train"] | text["dev"] | lm), language


def test_librispeech_long_evaluation_utterances_and_disjoint_lm(corpora):
    """Dev/test utterances are sentences read in a row, in all four of Table 5's duration buckets (checked on
    a plan of the recipe's size); LM text never holds a sentence of a test transcript."""
    utterances, _ = mmc.plan_librispeech(seed=0, scale=0.5)
    estimates = defaultdict(list)
    for u in utterances:
        spoken = " ".join(u.spec.segments[0].words)
        estimates[u.split].append(len(spoken) / 15.0 * 175 / u.spec.segments[0].speaker.speed)
    for split in ("dev-clean", "test-clean", "test-other"):
        buckets = {0 if s < 10 else 1 if s < 15 else 2 if s < 20 else 3 for s in estimates[split]}
        assert buckets == {0, 1, 2, 3}, split
    lm = [line for line in (corpora / "librispeech-lm-norm.txt").read_text().splitlines() if line]
    tests = [
        line.split(" ", 1)[1]
        for path in (corpora / "LibriSpeech").glob("test-*/*/*/*.trans.txt")
        for line in path.read_text().splitlines()
    ]
    assert tests and len(lm) >= 20
    for transcript in tests:
        padded = f" {transcript} "
        assert not any(f" {line} " in padded for line in lm), transcript


def test_fleurs_layout_read_by_lhotse(corpora, tmp_path):
    """lhotse's prepare_fleurs reads every language; prompts are read by several readers in train; the untranscribed
    pool is larger than the labelled training audio and says what its reference says."""
    codes = sorted(mmc.FLEURS_LANGUAGES)
    assert len(codes) >= 10
    manifests = prepare_fleurs(corpora / "fleurs", tmp_path, languages=codes)
    assert set(manifests) == set(codes)
    for code, parts in manifests.items():
        language = mmc.FLEURS_LANGUAGES[code][0]
        for split, pair in parts.items():
            recordings, supervisions = pair["recordings"], pair["supervisions"]
            assert len(recordings) == len(supervisions) > 0, (code, split)
            for sup in supervisions:
                assert sup.language == code and sup.text == sup.text.lower() and "." not in sup.text
                assert 1.0 <= sup.duration <= 8.0
                assert abs(sup.duration - recordings[sup.recording_id].duration) < 1e-3
                assert_real_words(sup.text, language)
        pool = sorted((corpora / "unlabelled" / code).glob("*.wav"))
        refs = (corpora / "unlabelled" / code / "reference_transcripts.tsv").read_text().splitlines()[1:]
        assert len(pool) == len(refs) > 0
    # at the recipe's scale (sizes of a tiny test corpus are set by per-language minimums), the pool holds more than
    # twice the labelled training audio (durations estimated from the spoken text, as espeak-ng reads ~15 chars/s)
    clips, speakers = mmc.plan_fleurs(seed=0, scale=1.0)
    assert len({s.id for s in speakers}) == len(speakers)  # the speakers table names each reader once

    def seconds(spec):
        segment = spec.segments[0]
        words = segment.words[: segment.whole] if segment.whole else segment.words
        spoken = min(len(" ".join(words)) / 15.0 * 175 / segment.speaker.speed,
                     segment.target_duration if not segment.whole else float("inf"))
        return spoken

    planned = defaultdict(float)
    for clip in clips:
        planned[clip.split] += seconds(clip.spec)
    assert planned["unlabelled"] > 2 * planned["train"]
    train = defaultdict(int)
    readers = defaultdict(int)
    for clip in clips:
        if clip.split == "train":
            train[clip.code] += 1
            readers[clip.code, clip.prompt_id] += 1
    assert train["en_us"] > 10 * train["fi_fi"]  # strong imbalance
    assert max(readers.values()) >= 2 and min(readers.values()) == 1  # 1-3 readers per prompt


def test_fleurs_lm_text_is_real_text_none_of_it_heard(corpora):
    """fleurs_lm/<code>.txt: sentences of the language (real ones where fortunes ship them), and none begins with
    the first words of any sentence a FLEURS clip or the untranscribed pool says (checked against the written
    transcripts, independently of how the generator excludes them)."""
    for code, (language, _) in mmc.FLEURS_LANGUAGES.items():
        lines = (corpora / "fleurs_lm" / f"{code}.txt").read_text(encoding="utf-8").splitlines()
        count = mmc.scaled(mmc.FLEURS_LM_SENTENCES, SCALE, 50)  # fewer where a fortunes package runs out
        assert len(lines) == count or (language in SENTENCE_LANGS and count // 2 < len(lines) < count), code
        assert len(set(lines)) > 0.9 * len(lines)
        heard = [mmc.fleurs_transcriptions(corpora, code, split) for split in ("train", "dev", "test")]
        sentences = [t for texts in heard for t in texts]
        pool = (corpora / "unlabelled" / code / "reference_transcripts.tsv").read_text(encoding="utf-8")
        for row in pool.splitlines()[1:]:
            sentences += [s.strip().lower() for s in row.split("\t")[1].split(".") if s.strip()]
        starts = {" ".join(s.split()[:3]) for s in sentences}
        for line in lines:
            assert line == line.lower() and " ".join(line.split()[:3]) not in starts, (code, line)
            assert_real_words(line, language)
        if language in SENTENCE_LANGS:
            text = fortunes_text(language)
            assert sum(f" {line} " in f" {text} " for line in lines[:20]) == 20  # whole fortune sentences


# ---------------------------------------------------------------------------
# FLEURS long-form evaluation set (USM §2.4 / Table 7)


@pytest.fixture(scope="module")
def longform(corpora) -> subprocess.CompletedProcess:
    """The long-form set of one language added to the fleurs corpus (which is skipped as complete)."""
    command = [sys.executable, str(ROOT / "local" / "make_mini_corpus.py"), "--layout", "fleurs", "--out",
               str(corpora), "--seed", "0", "--scale", str(SCALE), "--num-jobs", "2", "--longform", "en_us"]
    return subprocess.run(command, check=True, capture_output=True, text=True)


def read_rows(path: Path) -> list:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_fleurs_longform_recordings(corpora, longform):
    """60-180 s recordings of one test-pool voice reading held-out sentences with short pauses; the reference is
    the sentences' FLEURS transcriptions joined, in characters the training transcripts already use."""
    import soundfile as sf

    from mini_corpus_text import sentence_split

    assert "fleurs" in longform.stderr and "skipping" in longform.stderr  # the corpus itself was complete
    root = corpora / "longform" / "en_us"
    transcripts = {r["id"]: r["text"] for r in read_rows(root / "transcripts.tsv")}
    assert sorted(transcripts) == sorted(p.stem for p in root.glob("*.wav")) and len(transcripts) == 1
    segments = defaultdict(list)
    for row in read_rows(root / "segments.tsv"):
        segments[row["id"]].append(row)
    voices = {r["speaker_id"]: r for r in read_rows(corpora / "longform" / "speakers.tsv")}
    train = mmc.fleurs_transcriptions(corpora, "en_us", "train")
    for recording_id, reference in transcripts.items():
        audio, rate = sf.read(root / f"{recording_id}.wav", dtype="float32")
        assert rate == 16000 and 60.0 <= len(audio) / rate <= 180.0
        rows = segments[recording_id]
        assert len(rows) >= 5 and reference == " ".join(r["text"] for r in rows)
        assert reference == reference.lower() and "." not in reference and set(reference) <= set("".join(train))
        speakers = {r["speaker_id"] for r in rows}
        assert len(speakers) == 1  # one voice per recording, drawn like the test speakers
        voice = voices[speakers.pop()]
        assert voice["language"] == "en" and voice["espeak_voice"].split("+")[1] in mmc.TEST_VOICES.variants
        for row, after in zip(rows, rows[1:]):
            gap = float(after["start"]) - float(row["end"])
            assert 0.2 <= gap <= 0.9, gap  # 0.2-0.8 s pauses, plus <= 50 ms of espeak-ng's edge kept each side
            between = audio[round(float(row["end"]) * rate) + 800: round(float(after["start"]) * rate) - 800]
            assert between.size and abs(between).max() < 2e-3
        for row in rows:
            assert row["text"] not in train and sentence_split(tuple(row["text"].split())) == "test"
            assert abs(audio[round(float(row["start"]) * rate): round(float(row["end"]) * rate)]).max() > 0.05


def test_fleurs_longform_rerun_is_skipped(corpora, longform):
    wav = next((corpora / "longform" / "en_us").glob("*.wav"))
    before = wav.stat().st_mtime_ns
    again = subprocess.run(longform.args, check=True, capture_output=True, text=True)
    assert again.stderr.count("skipping") == 2 and wav.stat().st_mtime_ns == before


def test_fleurs_longform_plan_sizes():
    """At the recipe's scale: 3 recordings per default language, each its own voice; at least 1 at any scale."""
    from mini_corpus_text import ALPHABETS

    letters = {code: set(" '" + ALPHABETS[mmc.FLEURS_LANGUAGES[code][0]]) for code in mmc.LONGFORM_LANGUAGES}
    specs, speakers = mmc.plan_longform(0, 1.0, mmc.LONGFORM_LANGUAGES, {}, letters)
    assert sorted(s.code for s in specs) == sorted(mmc.LONGFORM_LANGUAGES * 3)
    assert len({s.speaker.id for s in specs}) == len(specs) == len(speakers)
    assert specs == mmc.plan_longform(0, 1.0, mmc.LONGFORM_LANGUAGES, {}, letters)[0]
    small, _ = mmc.plan_longform(0, 0.01, ["de_de"], {}, letters)
    assert len(small) == 1
    with pytest.raises(ValueError, match="fleurs"):
        mmc.make_mini_corpus("librispeech", Path("/nonexistent"), longform=["en_us"])


def test_fleurs_longform_prepared_as_manifests(corpora, longform, tmp_path):
    """prepare_corpus longform: one recording and one supervision spanning it per row, valid for lhotse; a
    missing and an unreadable file are reported by id and skipped."""
    from lhotse.qa import validate_recordings_and_supervisions

    from icefall_ext.bin.prepare_corpus import main as prepare_corpus

    source = corpora / "longform" / "en_us"
    corpus = tmp_path / "longform" / "en_us"
    corpus.mkdir(parents=True)
    good = next(source.glob("*.wav"))
    (corpus / good.name).symlink_to(good)
    shutil.copy(source / "segments.tsv", corpus)
    (corpus / "broken.wav").write_bytes(b"RIFF" + b"\0" * 100)
    rows = (source / "transcripts.tsv").read_text().splitlines()
    (corpus / "transcripts.tsv").write_text("\n".join(rows + ["missing\tsome words", "broken\tmore words"]) + "\n")
    out = tmp_path / "manifests"
    prepare_corpus(["longform", "--corpus-dir", str(tmp_path / "longform"), "--output-dir", str(out), "-j", "1"])
    recordings = load_manifest(out / "longform-en_us_recordings_test.jsonl.gz")
    supervisions = load_manifest(out / "longform-en_us_supervisions_test.jsonl.gz")
    validate_recordings_and_supervisions(recordings, supervisions)
    assert [r.id for r in recordings] == [good.stem] and len(supervisions) == 1
    sup, recording = next(iter(supervisions)), recordings[good.stem]
    assert sup.recording_id == recording.id and sup.start == 0 and sup.duration == recording.duration >= 60
    assert sup.text == rows[1].split("\t")[1] and sup.language == "en_us" and sup.speaker.startswith("lf-en_us")
    bad = {r["id"]: r["reason"] for r in read_rows(out / "bad_items_longform-en_us.tsv")}
    assert set(bad) == {"missing", "broken"} and bad["missing"] == "missing file"
