"""Video frames through ffmpeg (icefall_ext.data.video), LRS3 preparation (local/prepare_lrs3.py) and the feature
stage that attaches the frames to the cuts.

References are independent of the code under test: videos written here frame by frame (frame i has brightness
8 i, or a known pattern), lossless (FFV1) where exact values are checked, and a mini LRS3 with hand-made bad items.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, NumpyFilesWriter, Recording, load_manifest
from lhotse.dataset.collation import collate_custom_field
from lhotse.qa import validate_recordings_and_supervisions

from conftest import ROOT, make_mini_corpus
from icefall_ext.data.video import (
    VIDEO_FIELD,
    attach_video,
    extract_audio,
    probe_video,
    read_video_frames,
    write_video_index,
)

sys.path.insert(0, str(ROOT / "local"))
import prepare_lrs3  # noqa: E402


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "ffv1", audio: Path = None) -> Path:
    """Encode uint8 (T, H, W) gray frames (FFV1 gray: lossless; libx264: yuv420p) with optional audio."""
    t, h, w = frames.shape
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray",
               "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
    if audio is not None:
        command += ["-i", str(audio), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-ar", "16000", "-ac", "1"]
    if codec == "ffv1":
        command += ["-c:v", "ffv1", "-pix_fmt", "gray"]
    else:
        command += ["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p"]
    subprocess.run(command + [str(path)], input=frames.tobytes(), check=True)
    return path


def ramp(count: int = 30, h: int = 32, w: int = 48) -> np.ndarray:
    return np.stack([np.full((h, w), 8 * i % 256, np.uint8) for i in range(count)])


def test_frames_count_order_and_values(tmp_path):
    frames = ramp()
    for codec, suffix, tolerance in (("ffv1", ".mkv", 0), ("h264", ".mp4", 2)):
        path = write_video(tmp_path / f"ramp{suffix}", frames, codec=codec)
        info = probe_video(path)
        assert (info.fps, info.num_frames, info.width, info.height, info.has_audio) == (25.0, 30, 48, 32, False)
        assert info.duration == pytest.approx(1.2)
        out = read_video_frames(path, 16)
        assert out.dtype == np.uint8 and out.shape == (30, 16, 16) and len(out) == info.num_frames
        assert np.abs(out.astype(int) - frames[:, :16, :16].astype(int)).max() <= tolerance, codec


def test_crop_in_pixels_and_fractions(tmp_path):
    y, x = np.mgrid[0:32, 0:64]
    pattern = (20 + 100 * (x >= 32) + 50 * (y >= 16)).astype(np.uint8)
    path = write_video(tmp_path / "quadrants.mkv", np.stack([pattern] * 5))
    assert np.all(read_video_frames(path, 8, crop=(32, 16, 32, 16)) == 170)
    assert np.all(read_video_frames(path, 8, crop=(0.5, 0.5, 0.5, 0.5)) == 170)
    assert np.all(read_video_frames(path, 6, crop=(0, 0, 32, 16)) == 20)
    assert read_video_frames(path, 12).shape == (5, 12, 12)
    with pytest.raises(ValueError):
        read_video_frames(path, 8, crop=(0, 0, 0.5, 0.5))  # ints and floats mixed
    with pytest.raises(ValueError):
        read_video_frames(path, 8, crop=(0.6, 0.0, 0.5, 0.5))  # outside the frame


def test_unreadable_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    for call in (lambda p: probe_video(p), lambda p: read_video_frames(p, 8, fps=25.0),
                 lambda p: extract_audio(p, tmp_path / "x.flac")):
        with pytest.raises(RuntimeError, match="garbage.mp4"):
            call(garbage)
    with pytest.raises(RuntimeError, match="missing.mp4"):
        probe_video(tmp_path / "missing.mp4")
    silent = write_video(tmp_path / "silent.mkv", ramp(5))
    with pytest.raises(RuntimeError, match="silent.mkv"):  # no audio stream to extract
        extract_audio(silent, tmp_path / "y.wav")


def test_extracted_audio_and_video_last_the_same(tmp_path):
    samples = (0.3 * np.sin(2 * np.pi * 300 * np.arange(40960) / 16000)).astype(np.float32)  # 2.56 s
    sf.write(tmp_path / "tone.wav", samples, 16000)
    path = write_video(tmp_path / "av.mp4", ramp(64), codec="h264", audio=tmp_path / "tone.wav")
    info = probe_video(path)
    assert info.has_audio and info.num_frames == 64
    audio = extract_audio(path, tmp_path / "av.flac")
    assert sf.info(str(audio)).samplerate == 16000 and sf.info(str(audio)).channels == 1
    assert abs(sf.info(str(audio)).duration - info.duration) <= 1 / info.fps


def test_attach_video_follows_trimmed_cuts(tmp_path, caplog):
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).normal(0, 0.1, 64000).astype(np.float32), 16000)
    recording = Recording.from_file(tmp_path / "a.wav", recording_id="rec")  # 4 s
    frames = np.stack([np.full((4, 4), i, np.uint8) for i in range(100)])  # frame i shows i
    with NumpyFilesWriter(tmp_path / "frames") as writer:
        array = writer.store_array("rec", frames, frame_shift=0.04, temporal_dim=0)
    short = np.zeros((50, 4, 4), np.uint8)
    with NumpyFilesWriter(tmp_path / "frames") as writer:
        short_array = writer.store_array("short", short, frame_shift=0.04, temporal_dim=0)
    index = tmp_path / "x_video_part.jsonl.gz"
    write_video_index(index, {"rec": array, "short": short_array})
    row = json.loads(gzip.open(index, "rt").readline())
    assert row["recording_id"] == "rec" and row["array"]["frame_shift"] == 0.04 and row["array"]["start"] == 0

    whole = MonoCut("whole", 0.0, 4.0, 0, recording=recording)
    trimmed = MonoCut("trimmed", 1.0, 2.0, 0, recording=recording)  # trimmed before attaching
    short_rec = Recording.from_file(tmp_path / "a.wav", recording_id="short")
    orphan = Recording.from_file(tmp_path / "a.wav", recording_id="no-video")
    cuts = CutSet.from_cuts([whole, trimmed, MonoCut("uncovered", 0.0, 4.0, 0, recording=short_rec),
                             MonoCut("orphan", 0.0, 4.0, 0, recording=orphan)])
    with caplog.at_level(logging.WARNING):
        attached = attach_video(cuts, index).to_eager()
    assert sorted(c.id for c in attached) == ["trimmed", "whole"]
    assert "orphan" in caplog.text and "uncovered" in caplog.text
    got = {c.id: c.load_custom(VIDEO_FIELD) for c in attached}
    assert got["whole"].shape == (100, 4, 4) and list(got["whole"][:, 0, 0]) == list(range(100))
    assert list(got["trimmed"][:, 0, 0]) == list(range(25, 75))
    # attached first, truncated afterwards: lhotse slices the same way
    later = attached["whole"].truncate(offset=1.0, duration=2.0)
    assert list(later.load_custom(VIDEO_FIELD)[:, 0, 0]) == list(range(25, 75))
    batch, lens = collate_custom_field(attached, VIDEO_FIELD, pad_value=0)
    assert tuple(batch.shape) == (2, 100, 4, 4) and sorted(lens.tolist()) == [50, 100]
    with pytest.raises(ValueError, match="speed"):
        attach_video(CutSet.from_cuts([whole.perturb_speed(1.1)]), index)


# ---------------------------------------------------------------------------------------------------------------
# LRS3 preparation on a mini corpus with bad items


@pytest.fixture(scope="module")
def lrs3_corpus(tmp_path_factory):
    """A tiny mini LRS3 plus: a truncated mp4, an empty transcript (only a tag), a garbled and a missing txt, a
    clip whose audio lasts a second longer than its video, and a hand-written txt with tags and ISO-8859-1."""
    out = tmp_path_factory.mktemp("mini")
    make_mini_corpus("lrs3", out, seed=3, scale=0.01)
    corpus = out / "lrs3"
    clips = sorted((corpus / "pretrain").glob("*/*.mp4"))
    assert len(clips) >= 7
    bad = {}
    data = clips[0].read_bytes()
    clips[0].write_bytes(data[: len(data) // 3])
    bad[clips[0]] = "unreadable"
    clips[1].with_suffix(".txt").write_text("Text:  {LG}\nConf:  3\n\nWORD START END ASDSCORE\n")
    bad[clips[1]] = "empty transcript"
    clips[2].with_suffix(".txt").write_text("WORD START END ASDSCORE\nHELLO 0.1 0.5 3.0\n")
    bad[clips[2]] = "garbled"
    clips[3].with_suffix(".txt").unlink()
    bad[clips[3]] = "missing transcript"
    clips[4].with_suffix(".txt").write_bytes("Text:  {NS} CAF\u00c9 AU  {LG} LAIT {LG}\nConf:  4\n".encode("iso-8859-1"))
    mismatched = clips[5].parent / "99999.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=gray:s=64x64:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=f=300:d=3:sample_rate=16000", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(mismatched)], check=True)
    mismatched.with_suffix(".txt").write_text("Text:  A LONGER SOUND\nConf:  1\n")
    bad[mismatched] = "audio/video durations differ"
    return corpus, {f"pretrain_{p.parent.name}_{p.stem}": why for p, why in bad.items()}, clips[4]


@pytest.fixture(scope="module")
def prepared(lrs3_corpus, tmp_path_factory):
    corpus, _, _ = lrs3_corpus
    work = tmp_path_factory.mktemp("prepared")
    manifests = work / "manifests"
    prepare_lrs3.main(["--corpus-dir", str(corpus), "--output-dir", str(manifests), "--video-size", "24",
                       "--crop", "mouth", "--num-jobs", "2"])
    return work, manifests


def test_prepare_lrs3_manifests_and_bad_items(lrs3_corpus, prepared):
    corpus, bad, tagged = lrs3_corpus
    _, manifests = prepared
    rows = [line.split("\t") for line in (manifests / "bad_items_lrs3-pretrain.tsv").read_text().splitlines()[1:]]
    reasons = {row[0]: row[2] for row in rows}
    assert set(reasons) == set(bad)
    for clip_id, why in bad.items():
        assert why in reasons[clip_id], (clip_id, reasons[clip_id])
    for part in prepare_lrs3.PARTS:
        recordings = load_manifest(manifests / f"lrs3_recordings_{part}.jsonl.gz")
        supervisions = load_manifest(manifests / f"lrs3_supervisions_{part}.jsonl.gz")
        validate_recordings_and_supervisions(recordings, supervisions)
        mp4s = sorted((corpus / part).glob("*/*.mp4"))
        expected = {f"{part}_{p.parent.name}_{p.stem}" for p in mp4s} - set(bad)
        assert set(recordings.ids) == expected == {s.id for s in supervisions}  # nothing else lost
        for sup in supervisions:
            speaker, clip = sup.id.split("_", 1)[1].rsplit("_", 1)
            txt = corpus / part / speaker / f"{clip}.txt"
            assert sup.speaker == speaker and sup.language == "en" and sup.start == 0
            if txt != tagged.with_suffix(".txt"):
                first = txt.read_text(encoding="iso-8859-1").splitlines()[0]
                assert sup.text == " ".join(first[len("Text:"):].replace("{LG}", " ").split())
                assert "{" not in sup.text and sup.text == sup.text.upper()
    tagged_id = f"pretrain_{tagged.parent.name}_{tagged.stem}"
    assert load_manifest(manifests / "lrs3_supervisions_pretrain.jsonl.gz")[tagged_id].text == "CAF\u00c9 AU LAIT"


def test_prepared_audio_and_video_stay_aligned(prepared):
    work, manifests = prepared
    for part in prepare_lrs3.PARTS:
        recordings = load_manifest(manifests / f"lrs3_recordings_{part}.jsonl.gz")
        supervisions = load_manifest(manifests / f"lrs3_supervisions_{part}.jsonl.gz")
        with gzip.open(manifests / f"lrs3_video_{part}.jsonl.gz", "rt") as f:
            index = {row["recording_id"]: row["array"] for row in map(json.loads, f)}
        assert set(index) == set(recordings.ids)
        for recording in recordings:
            array = index[recording.id]
            frames = array["array"]["shape"][0]
            assert array["array"]["shape"][1:] == [24, 24] and array["frame_shift"] == 0.04
            assert abs(recording.duration - frames * 0.04) <= 0.04 + 1e-9  # within one frame
            assert supervisions[recording.id].duration <= min(recording.duration, frames * 0.04) + 1e-9
            assert str(work / "lrs3_audio" / part) in recording.sources[0].source


def test_prepare_lrs3_rerun_skips_finished_parts(lrs3_corpus, prepared, caplog):
    corpus, _, _ = lrs3_corpus
    work, manifests = prepared
    stamps = {p: p.stat().st_mtime_ns for p in manifests.glob("*.jsonl.gz")}
    with caplog.at_level(logging.INFO):
        result = prepare_lrs3.prepare_part(corpus, manifests, "test", work / "lrs3_audio", work / "lrs3_video")
    assert result is None and "skipped" in caplog.text
    assert stamps == {p: p.stat().st_mtime_ns for p in manifests.glob("*.jsonl.gz")}


def test_help_says_how_to_obtain_lrs3():
    r = subprocess.run([sys.executable, str(ROOT / "local" / "prepare_lrs3.py"), "--help"], capture_output=True,
                       text=True, check=True)
    assert "licence" in r.stdout and "--crop" in r.stdout and "--video-size" in r.stdout


def test_compute_fbank_attaches_video_frames(prepared, tmp_path):
    from icefall_ext.bin import compute_fbank

    work, manifests = prepared
    local = tmp_path / "manifests"
    shutil.copytree(manifests, local)
    (local / "lrs3_video_trainval.jsonl.gz").unlink()  # a part without video: written without frames
    compute_fbank.main(["--manifest-dir", str(local), "--glob", "lrs3", "--out-dir", str(tmp_path / "fbank"),
                        "--num-jobs", "1"])
    cuts = load_manifest(tmp_path / "fbank" / "lrs3_cuts_pretrain.jsonl.gz")
    assert len(cuts) == len(load_manifest(local / "lrs3_recordings_pretrain.jsonl.gz"))
    for cut in cuts:
        frames = cut.load_custom(VIDEO_FIELD)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (24, 24)
        assert abs(frames.shape[0] - cut.duration * 25) <= 1
        assert cut.load_features().shape[0] == pytest.approx(cut.duration * 100, abs=1)
    batch, lens = collate_custom_field(cuts, VIDEO_FIELD, pad_value=0)
    assert batch.shape == (len(cuts), int(lens.max()), 24, 24)
    assert not any(c.has_custom(VIDEO_FIELD) for c in load_manifest(tmp_path / "fbank" / "lrs3_cuts_trainval.jsonl.gz"))
    with pytest.raises(SystemExit):  # speed perturbation would desynchronise the video
        compute_fbank.main(["--manifest-dir", str(manifests), "--glob", "lrs3", "--parts", "trainval", "--out-dir",
                            str(tmp_path / "fbank2"), "--speed-perturb", "true", "--num-jobs", "1"])
