"""The mini LRS3 and mini MuST-C of local/mini_av_corpus.py: real layouts, a face video whose mouth opening and shape
follow the audio, and MuST-C read by lhotse's own ``prepare_must_c``.

References: the audio and frames are decoded from the written files with ffmpeg (not taken from the generator),
the translations come from ``mini_translation_text.parallel_pairs`` and the segment times from the yaml files.
"""

from __future__ import annotations

import csv
import filecmp
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest
from lhotse.recipes.must_c import prepare_must_c

from conftest import ROOT, make_mini_corpus
from icefall_ext.data.video import extract_audio, probe_video, read_video_frames

sys.path.insert(0, str(ROOT / "local"))
import mini_av_corpus as mav  # noqa: E402
from mini_translation_text import parallel_pairs  # noqa: E402

MOUTH = (0.25, 0.5, 0.5, 0.5)  # the lower-centre box of prepare_lrs3.py --crop mouth


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini_av")
    make_mini_corpus("lrs3", out, seed=1, scale=0.01)
    make_mini_corpus("mustc", out, seed=1, scale=0.02)
    return out


def speakers_of(out: Path, part: str) -> set:
    return {p.name for p in (out / "lrs3" / part).iterdir()}


def test_lrs3_layout_and_txt_format(mini):
    for part in ("pretrain", "trainval", "test"):
        clips = sorted((mini / "lrs3" / part).glob("*/*.mp4"))
        assert clips, part
        for clip in clips:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", clip.parent.name) and re.fullmatch(r"\d{5}", clip.stem)
            lines = clip.with_suffix(".txt").read_text(encoding="iso-8859-1").splitlines()
            assert re.fullmatch(r"Text:  [A-Z' {}]+", lines[0]) and re.fullmatch(r"Conf:  \d", lines[1])
            assert lines[3] == "WORD START END ASDSCORE"
            words = [line.split() for line in lines[4:]]
            assert [w[0] for w in words] == lines[0][7:].replace("{LG}", " ").split()
            times = [float(t) for w in words for t in w[1:3]]
            assert times == sorted(times) and 0 < times[0] and times[-1] <= probe_video(clip).duration
            info = probe_video(clip)
            assert (info.fps, info.width, info.height, info.has_audio) == (25.0, 64, 64, True)
            assert 2.0 <= info.duration <= 6.5 and round(info.duration / 0.32, 6) == round(info.duration / 0.32)
    assert not speakers_of(mini, "test") & (speakers_of(mini, "pretrain") | speakers_of(mini, "trainval"))
    with open(mini / "mini_speakers_lrs3.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert {r["speaker_id"] for r in rows} >= speakers_of(mini, "pretrain") | speakers_of(mini, "test")


def test_mouth_opening_follows_the_audio(mini, tmp_path):
    """Darkness of the mouth box of the decoded frames against the decoded audio's RMS per 40 ms frame."""
    clips = sorted((mini / "lrs3").glob("*/*/*.mp4"))
    darkness, energy = [], []
    for n, clip in enumerate(clips):
        frames = read_video_frames(clip, 32, crop=MOUTH).astype(np.float64)
        audio, rate = sf.read(str(extract_audio(clip, tmp_path / f"{n}.wav")))
        assert rate == 16000 and len(audio) == len(frames) * 640  # audio and video end together
        darkness.append(-frames.mean(axis=(1, 2)))
        energy.append(np.sqrt((audio.reshape(len(frames), 640) ** 2).mean(axis=1)))
    matched, mismatched = [], []
    for i in range(len(clips)):
        j = (i + 1) % len(clips)
        n = min(len(darkness[j]), len(energy[i]))
        matched.append(np.corrcoef(darkness[i], energy[i])[0, 1])
        mismatched.append(np.corrcoef(darkness[j][:n], energy[i][:n])[0, 1])
    assert min(matched) > 0.5, matched
    assert np.mean(mismatched) < np.mean(matched) - 0.3 and all(m > o for m, o in zip(matched, mismatched))
    # silence is a closed mouth: silent frames are lighter than loud ones in every clip
    for d, e in zip(darkness, energy):
        silent, loud = e < 1e-3, e > np.median(e[e >= 1e-3])
        assert silent.sum() >= 2 and d[silent].mean() < d[loud].mean()


def mouth_width(frames: np.ndarray, mouth_row: int) -> np.ndarray:
    """Per frame of a 32 x 32 mouth box, the mouth's width in px: on the row of the darkest pixel within 4 rows of
    ``mouth_row`` and 6 columns of the centre, the run of pixels around it darker than midway from the skin to that
    pixel (the background, dark too, lies beyond the skin)."""
    top = max(mouth_row - 4, 0)
    widths = []
    for frame in frames:
        centre = frame[top: mouth_row + 5, 10:22]
        row, col = np.unravel_index(np.argmin(centre), centre.shape)
        line, col = frame[top + row], col + 10
        dark = line < (np.percentile(frame[top: mouth_row + 5], 95) + line[col]) / 2
        left, right = col, col
        while left > 0 and dark[left - 1]:
            left -= 1
        while right < len(line) - 1 and dark[right + 1]:
            right += 1
        widths.append(right - left + 1)
    return np.array(widths, dtype=np.float64)


def test_mouth_shape_follows_the_spectrum(mini, tmp_path):
    """The mouth's width in the decoded frames rises and falls with the generator's lip spreading computed from the
    decoded audio (its spectral balance), on the loud frames of every clip; another clip's audio does not match."""
    clips = sorted((mini / "lrs3").glob("*/*/*.mp4"))
    widths, spreads, louds = [], [], []
    for n, clip in enumerate(clips):
        face = mav.make_face(1, clip.parent.name)  # the mouth box starts at y = 32 of the 64 x 64 frame
        widths.append(mouth_width(read_video_frames(clip, 32, crop=MOUTH).astype(np.float64), round(face.mouth_y) - 32))
        audio, _ = sf.read(str(extract_audio(clip, tmp_path / f"{n}.wav")))
        envelope = mav.frame_envelope(audio)
        spreads.append(mav.frame_spread(audio, envelope))
        louds.append(envelope > 0.5)
    matched, mismatched = [], []
    for i in range(len(clips)):
        j = (i + 1) % len(clips)
        loud = louds[i]
        matched.append(np.corrcoef(widths[i][loud], spreads[i][loud])[0, 1])
        n = min(len(widths[j]), len(spreads[i]))
        mismatched.append(np.corrcoef(widths[j][:n][loud[:n]], spreads[i][:n][loud[:n]])[0, 1])
    # measured: 0.18-0.80, mean 0.54 (one row of a few px per frame is a coarse ruler); mismatched about 0 +- 0.3
    assert min(matched) > 0.05 and np.mean(matched) > 0.35, matched
    assert np.mean(mismatched) < np.mean(matched) - 0.25, (matched, mismatched)


def test_faces_differ_per_speaker_and_output_is_deterministic(mini, tmp_path):
    clips, _ = mav.plan_lrs3(1, 0.01)
    assert clips == mav.plan_lrs3(1, 0.01)[0] and clips != mav.plan_lrs3(2, 0.01)[0]
    speakers = sorted({c.segment.speaker.id for c in clips})
    assert len({mav.make_face(1, s) for s in speakers}) == len(speakers)
    mav.render_lrs3_clip(str(tmp_path), 1, clips[0])
    for suffix in (".mp4", ".txt"):
        assert filecmp.cmp(tmp_path / (clips[0].path + suffix), mini / (clips[0].path + suffix), shallow=False)


def test_mustc_read_by_lhotse(mini, tmp_path):
    counts = {split: mav.scaled(n, 0.02) for split, (_, n, _) in mav.MUSTC_SPLITS.items()}
    test_pairs = parallel_pairs("it", "test", counts["tst-COMMON"] + counts["tst-HE"], seed=1)
    expected = {"train": parallel_pairs("it", "train", counts["train"], seed=1),
                "dev": parallel_pairs("it", "dev", counts["dev"], seed=1),
                "tst-COMMON": test_pairs[: counts["tst-COMMON"]], "tst-HE": test_pairs[counts["tst-COMMON"]:]}
    prepare_must_c(mini / "mustc", tmp_path, tgt_lang="it", num_jobs=1)
    for split, pairs in expected.items():
        supervisions = load_manifest(tmp_path / f"must_c_supervisions_en-it_{split}.jsonl.gz")
        recordings = load_manifest(tmp_path / f"must_c_recordings_en-it_{split}.jsonl.gz")
        data = mini / "mustc" / "en-it" / "data" / split / "txt"
        yaml_rows = [dict(re.findall(r"(\w+): ([^,}]+)", line)) for line in (data / f"{split}.yaml").open()]
        assert [s.text for s in supervisions] == [it for it, _ in pairs]  # the Italian translation
        assert (data / f"{split}.en").read_text().splitlines() == [en for _, en in pairs]
        assert all(s.language == "it" for s in supervisions)
        for sup, row in zip(supervisions, yaml_rows):
            assert sup.start == pytest.approx(float(row["offset"])) and sup.recording_id == Path(row["wav"]).stem
            assert sup.duration == pytest.approx(float(row["duration"])) and sup.speaker == row["speaker_id"]
        for recording in recordings:
            audio = recording.load_audio()[0]
            inside = np.zeros(len(audio), bool)
            for sup in supervisions:
                if sup.recording_id == recording.id:
                    a, b = round(sup.start * 16000), round(sup.end * 16000)
                    assert np.abs(audio[a:b]).max() > 0.05  # speech where the yaml says
                    inside[a:b] = True
            assert np.abs(audio[~inside]).max() < 1e-3  # silence between the segments
    for tgt in ("de", "nl"):  # the same talks and English sentences for every target language
        for split in expected:
            en = mini / "mustc" / f"en-{tgt}" / "data" / split
            assert filecmp.cmp(en / "txt" / f"{split}.en", mini / "mustc/en-it/data" / split / "txt" / f"{split}.en")
            assert len((en / "txt" / f"{split}.{tgt}").read_text().splitlines()) == counts[split]
            for wav in (mini / "mustc/en-it/data" / split / "wav").glob("*.wav"):
                assert filecmp.cmp(wav, en / "wav" / wav.name, shallow=False)
