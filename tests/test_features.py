"""Fbank features: parity with kaldi-native-fbank (what sherpa-onnx runs) and with lhotse's own torch
implementation of Kaldi fbank, storage round trip, and unreadable audio reported and skipped."""

import numpy as np
import pytest
from lhotse import CutSet, Recording
from lhotse.features.kaldi.extractors import Fbank, FbankConfig

from conftest import espeak_wav
from icefall_ext.data.features import FbankOptions, compute_and_store_fbank, compute_fbank, num_frames


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    espeak_wav(d / "a.wav", "the quick brown fox jumps over the lazy dog", "en")
    espeak_wav(d / "b.wav", "guten morgen meine damen und herren", "de", speed=140)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    return d


def test_matches_independent_kaldi_fbank(audio_dir):
    samples = Recording.from_file(audio_dir / "a.wav").resample(16000).load_audio()[0]
    ours = compute_fbank(samples)
    ref = Fbank(FbankConfig(num_mel_bins=80, dither=0.0, snip_edges=False)).extract(samples, 16000)
    assert ours.shape == ref.shape == (num_frames(len(samples) / 16000), 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)


def test_sherpa_onnx_front_end_defaults():
    import kaldi_native_fbank as knf

    opts = FbankOptions().to_knf()
    assert opts.frame_opts.dither == 0.0 and opts.frame_opts.snip_edges is False
    assert (opts.mel_opts.low_freq, opts.mel_opts.high_freq, opts.mel_opts.num_bins) == (20.0, -400.0, 80)
    assert opts.frame_opts.window_type == "povey"
    assert isinstance(opts, knf.FbankOptions)


def test_stored_features_equal_direct_knf_and_bad_audio_is_reported(audio_dir, tmp_path):
    recs = [Recording.from_file(audio_dir / f"{n}.wav") for n in ("a", "b")]
    good = CutSet.from_manifests(recordings=__import__("lhotse").RecordingSet.from_recordings(recs))
    corrupt = recs[0].to_dict()
    corrupt["id"] = "corrupt"
    corrupt["sources"][0]["source"] = str(audio_dir / "corrupt.wav")
    missing = recs[1].to_dict()
    missing["id"] = "missing"
    missing["sources"][0]["source"] = str(audio_dir / "does-not-exist.wav")
    from lhotse import RecordingSet

    all_recs = RecordingSet.from_recordings(recs + [Recording.from_dict(corrupt), Recording.from_dict(missing)])
    cuts = CutSet.from_manifests(recordings=all_recs)
    out, report = compute_and_store_fbank(cuts, tmp_path / "feats", "test", num_jobs=2)
    assert sorted(c.recording_id for c in out) == ["a", "b"]
    assert report.num_ok == 2
    assert sorted(i for i, _ in report.failed) == sorted(c.id for c in cuts if c.recording_id in ("corrupt", "missing"))
    for cut in out:
        direct = compute_fbank(cut.resample(16000).load_audio()[0])
        stored = cut.load_features()
        assert stored.shape == direct.shape
        np.testing.assert_allclose(stored, direct, atol=0.05)  # lilcom compression is lossy but tight
    assert len(good) == 2


def test_noise_recordings_are_cut_into_windows(tmp_path):
    """compute_fbank --window-seconds: recordings without supervisions (MUSAN-like noise) become fixed windows."""
    import subprocess
    import sys

    import soundfile as sf
    from lhotse import CutSet, Recording, RecordingSet

    rng = np.random.default_rng(0)
    recs = []
    for name, seconds in (("hum", 23.0), ("hiss", 4.0), ("short", 2.0)):
        sf.write(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(int(seconds * 8000)), 8000)
        recs.append(Recording.from_file(tmp_path / f"{name}.wav"))
    (tmp_path / "m").mkdir()
    RecordingSet.from_recordings(recs).to_file(tmp_path / "m/noise_recordings_all.jsonl.gz")
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.compute_fbank", "--manifest-dir", str(tmp_path / "m"),
                        "--glob", "noise", "--out-dir", str(tmp_path / "f"), "--window-seconds", "10",
                        "--num-jobs", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cuts = CutSet.from_file(tmp_path / "f/noise_cuts_all.jsonl.gz")
    # 23 s -> 10 + 10 + 3 (dropped: under half a window); 4 s -> dropped; 2 s -> dropped
    assert sorted(round(c.duration, 3) for c in cuts) == [10.0, 10.0]
    assert all(c.has_features and c.features.sampling_rate == 16000 and c.num_frames == 1000 for c in cuts)
