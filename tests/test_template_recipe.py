"""The new-corpus path: Kaldi data dir / TSV import (bad entries reported by id, never a crash), 8 kHz audio,
egs/TEMPLATE/run.sh end to end at tiny size, fine-tuning from it with --init-from and original-data mixing."""

import gzip
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, THREADS

TINY = ["--preset", "conformer-tiny", "--max-updates", "12", "--max-duration", "40", "--threads", THREADS,
        "--spec-augment", "false", "--lr", "0.02"]


@pytest.fixture(scope="module")
def corpus_8k(tmp_path_factory):
    """Mini LibriSpeech audio resampled to 8 kHz, as a Kaldi data dir (train, with bad entries) and TSVs (dev/test)."""
    from lhotse import Recording

    d = tmp_path_factory.mktemp("corpus8k")
    r = subprocess.run([sys.executable, str(ROOT / "local/make_mini_corpus.py"), "--layout", "librispeech",
                        "--out", str(d / "src"), "--scale", "0.03", "--num-jobs", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = {}
    for split, part in (("train-clean-100", "train"), ("dev-clean", "dev"), ("test-clean", "test")):
        items = []
        for trans in sorted((d / "src/LibriSpeech" / split).rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                rec = Recording.from_file(trans.parent / f"{utt}.flac").resample(8000)
                wav = d / "wav8k" / part / f"{utt}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                sf.write(wav, rec.load_audio()[0], 8000)
                items.append((utt, text.lower(), wav))
        parts[part] = items
    kaldi = d / "kaldi_train"
    kaldi.mkdir()
    good = parts["train"]
    wav_scp = [f"{u} {w}" for u, _, w in good] + ["gone-0001 /nonexistent/gone-0001.wav", ""]
    text = [f"{u} {t}" if i != 1 else u for i, (u, t, _) in enumerate(good)]  # utterance 1: empty transcript
    text += ["noaudio-0001 words without audio", f"{good[0][0]} a duplicate line", ""]
    (kaldi / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (kaldi / "text").write_text("\n".join(text) + "\n")
    (kaldi / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u, _, _ in good))
    (kaldi / "utt2lang").write_text("".join(f"{u} en\n" for u, _, _ in good))
    tsvs = {}
    for part in ("dev", "test"):
        rows = ["id\taudio\ttext\tlanguage"] + [f"{u}\t{w.relative_to(d)}\t{t}\ten" for u, t, w in parts[part]]
        tsvs[part] = d / f"{part}.tsv"
        tsvs[part].write_text("\n".join(rows) + "\n")
    return {"dir": d, "kaldi": kaldi, "tsv": tsvs, "parts": parts, "empty_text_id": good[1][0],
            "duplicate_id": good[0][0]}


def test_kaldi_dir_bad_entries_are_reported_by_id(corpus_8k):
    from icefall_ext.data.importers import import_kaldi_dir

    recordings, supervisions, report = import_kaldi_dir(corpus_8k["kaldi"])
    good = corpus_8k["parts"]["train"]
    dropped = {reason: ids for reason, ids in report.dropped.items()}
    assert dropped["audio file does not exist"] == ["gone-0001"]
    assert "noaudio-0001" in dropped["no audio (id not in wav.scp, or its file is missing)"]
    assert dropped["duplicate id in text"] == [corpus_8k["duplicate_id"]]
    assert dropped["empty transcript"] == [corpus_8k["empty_text_id"]]
    assert len(dropped["empty line"]) == 2
    assert report.num_kept == len(good) - 1 == len(supervisions)
    assert {r.sampling_rate for r in recordings} == {8000}
    sup = next(s for s in supervisions if s.id == good[2][0])
    assert sup.text == good[2][1] and sup.language == "en" and sup.speaker == good[2][0].split("-")[0]
    assert abs(sup.duration - sf.info(str(good[2][2])).duration) < 1e-3


def test_kaldi_segments_and_tsv_rows(tmp_path, corpus_8k):
    from icefall_ext.data.importers import import_kaldi_dir, import_table

    (u1, t1, w1), (u2, t2, _) = corpus_8k["parts"]["dev"][:2]
    kaldi = tmp_path / "seg"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"rec1 {w1}\n")
    (kaldi / "segments").write_text("s1 rec1 0.0 0.5\ns2 rec1 0.5 -1\ns3 rec9 0 1\nbroken rec1 0\n")
    (kaldi / "text").write_text("s1 first half\ns2 second half\ns3 no recording\nbroken x\n")
    recordings, supervisions, report = import_kaldi_dir(kaldi, language="de")
    assert [s.id for s in supervisions] == ["s1", "s2"] and supervisions[0].language == "de"
    assert supervisions[1].start == 0.5 and abs(supervisions[1].end - recordings[0].duration) < 1e-3
    assert report.dropped["malformed segments line"] == ["broken"]
    table = tmp_path / "t.csv"
    table.write_text(f"path,text,start,end\n{w1},{t1},,\n{w1},second copy,,\n/no/such.wav,lost,,\n"
                     f",,,\n{w1},,,\n{w1},too far,0,99\n")
    recordings, supervisions, report = import_table(table, language="en")
    assert [s.text for s in supervisions] == [t1] and supervisions[0].language == "en"
    assert report.dropped["duplicate id"] == [w1.stem, w1.stem, w1.stem]
    assert report.dropped["audio file does not exist"] == ["such"] and len(report.dropped["empty line"]) == 1


def test_import_cli_errors_are_one_line(tmp_path):
    for source, msg in [(tmp_path / "missing", "does not exist"), (tmp_path, "wav.scp does not exist")]:
        r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.import_corpus", "--source", str(source),
                            "--prefix", "x", "--part", "train", "--out-dir", str(tmp_path / "m")],
                           capture_output=True, text=True)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\twords\nx.wav\thello\n")
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.import_corpus", "--source", str(bad), "--prefix",
                        "x", "--part", "train", "--out-dir", str(tmp_path / "m")], capture_output=True, text=True)
    assert r.returncode == 1 and "must name an 'audio'" in r.stderr


@pytest.fixture(scope="module")
def template_run(corpus_8k, tmp_path_factory):
    work = tmp_path_factory.mktemp("template")
    cmd = ["bash", str(ROOT / "egs/TEMPLATE/run.sh"), "--work-dir", str(work), "--name", "phone8k",
           "--train", str(corpus_8k["kaldi"]), "--dev", str(corpus_8k["tsv"]["dev"]),
           "--test", str(corpus_8k["tsv"]["test"]), *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return work, cmd, r


def test_template_runs_end_to_end_on_8khz_audio(template_run, corpus_8k):
    from lhotse import CutSet

    work, _, r = template_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    for n in range(7):
        assert re.search(rf"Stage {n}: ", r.stdout), f"stage {n} did not run"
    log = r.stdout + r.stderr
    assert re.search(r"dropped 1 cuts \(audio file does not exist\): gone-0001", log)
    assert re.search(rf"dropped 1 cuts \(empty transcript\): {corpus_8k['empty_text_id']}", log)
    with gzip.open(work / "data/manifests/phone8k_recordings_train.jsonl.gz", "rt") as f:
        assert {json.loads(line)["sampling_rate"] for line in f} == {8000}
    cuts = CutSet.from_file(work / "data/fbank/phone8k_cuts_test.jsonl.gz")
    assert {c.features.sampling_rate for c in cuts} == {16000}
    exp = work / "exp/phone8k-ctc"
    # decoded output: one hypothesis per test utterance, against the TSV's transcripts
    refs = {u: t for u, t, _ in corpus_8k["parts"]["test"]}
    from icefall_ext.data.scoring import read_recogs

    for recogs in (exp / "decode/recogs-test-ctc-greedy.txt", exp / "sherpa-decode/recogs-test-sherpa-ctc.txt"):
        got = read_recogs(recogs)
        assert {u: " ".join(r) for u, (r, _) in got.items()} == refs
    summary = json.loads((exp / "decode/summary-test-ctc-greedy.json").read_text())
    assert summary["num_utts"] == len(refs) and set(summary["per_language_cer"]) == {"en"}
    assert (exp / "onnx/model.onnx").is_file()
    assert (exp / "onnx/tokens.txt").read_text() == (work / "data/lang_char/tokens.txt").read_text()


def test_template_fine_tunes_across_vocabularies_with_mixing(template_run):
    work, cmd, first = template_run
    assert first.returncode == 0
    r = subprocess.run(cmd + ["--stage", "2", "--exp-name", "ft-bpe", "--token-type", "bpe", "--vocab-size", "40",
                              "--init-from", str(work / "exp/phone8k-ctc"), "--max-updates", "4", "--lr", "0.01",
                              "--scheduler", "constant", "--mix-ratio", "0.3",
                              "--mix-cuts", str(work / "data/fbank/phone8k_cuts_dev.jsonl.gz")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    log = r.stdout + r.stderr
    assert "model architecture taken from" in log and re.search(r"mixed in \d+ original cuts", log)
    config = json.loads((work / "exp/ft-bpe/model_config.json").read_text())
    first_config = json.loads((work / "exp/phone8k-ctc/model_config.json").read_text())
    assert config["vocab_size"] == 40 and config["encoder_kwargs"] == first_config["encoder_kwargs"]
    assert (work / "exp/ft-bpe/onnx/tokens.txt").read_text() == (work / "data/lang_bpe_40/tokens.txt").read_text()


def test_mix_in_ratio_by_duration():
    from lhotse import CutSet
    from lhotse.testing.dummies import dummy_cut

    from icefall_ext.train.trainer import mix_in

    new = CutSet.from_cuts(dummy_cut(i, duration=2.0) for i in range(10))  # 20 s
    old = CutSet.from_cuts(dummy_cut(100 + i, duration=1.0) for i in range(50))  # 50 s
    mixed = mix_in(new, old, 0.5, seed=1)
    old_ids = {c.id for c in old}
    assert sum(c.duration for c in mixed if c.id in old_ids) == 20.0
    assert len([c for c in mixed if c.id not in old_ids]) == 10
    assert mix_in(new, old, 0.0) is new
    assert sum(c.duration for c in mix_in(new, old, 0.9) if c.id in old_ids) == 50.0  # all there is
    with pytest.raises(ValueError):
        mix_in(new, old, 1.0)
    assert np.isclose(sum(c.duration for c in mix_in(new, old, 0.2, seed=3) if c.id in old_ids), 5.0)


def test_limit_hours_draws_a_seeded_subset_by_duration():
    from lhotse import CutSet
    from lhotse.testing.dummies import dummy_cut

    from icefall_ext.train.trainer import limit_hours

    cuts = CutSet.from_cuts(dummy_cut(i, duration=1.0 + (i % 3)) for i in range(60))  # 1, 2 or 3 s each: 120 s
    assert limit_hours(cuts, 0.0) is cuts
    ids = {c.id for c in cuts}
    for hours in (10 / 3600, 50 / 3600):
        subset = list(limit_hours(cuts, hours, seed=5))
        total = sum(c.duration for c in subset)
        # at least the asked audio, and without the last cut drawn less than that (drawing stops once reached)
        assert total >= hours * 3600 and total - subset[-1].duration < hours * 3600
        assert {c.id for c in subset} <= ids and len({c.id for c in subset}) == len(subset)
        assert [c.id for c in limit_hours(cuts, hours, seed=5)] == [c.id for c in subset]  # reproducible
    other = [c.id for c in limit_hours(cuts, 50 / 3600, seed=6)]
    assert other != [c.id for c in limit_hours(cuts, 50 / 3600, seed=5)]  # the seed picks the subset
    assert len(limit_hours(cuts, 1.0)) == 60  # more hours than there are: all of them
    with pytest.raises(ValueError):
        limit_hours(cuts, -1.0)
