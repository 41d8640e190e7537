"""ONNX export for sherpa-onnx, checked by decoding the same espeak-ng audio with sherpa-onnx (the real consumer)
and with our PyTorch search: offline transducer, CTC and streaming transducer of a trained causal Conformer,
offline and streaming transducer of a (randomly initialised) Zipformer, int8 files, the sherpa_decode stage and
the one-line errors of the command-line tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from icefall_ext.bin import export_onnx, sherpa_decode
from icefall_ext.data.features import compute_fbank
from icefall_ext.data.scoring import read_recogs, score
from icefall_ext.decode.ctc import tokens_to_text
from icefall_ext.decode.search import decode_encoder_output
from icefall_ext.decode.transducer import greedy_search_batch
from icefall_ext.export.onnx_export import read_metadata
from icefall_ext.export.sherpa import SherpaDecoder, load_cut_audio, streaming_padded
from icefall_ext.export.streaming import online_greedy_search, streaming_window
from icefall_ext.train.checkpoint import load_averaged_model

from conftest import ROOT, THREADS, espeak_corpus

CHUNK = 32  # --decode-chunk-len: 8 encoder frames, the chunk the Conformer is trained with

TEXTS = [
    ("en", "the cat sat down"), ("en", "open the door"), ("en", "a red apple"), ("en", "good night"),
    ("en", "the dog runs fast"), ("en", "come back soon"), ("en", "one two three"), ("en", "the sun is hot"),
    ("en", "read a book"), ("en", "where is the cat"), ("en", "i like tea"), ("en", "the door is red"),
    ("de", "guten morgen"), ("de", "die katze schläft"), ("de", "ein roter apfel"), ("de", "gute nacht"),
    ("de", "der hund läuft"), ("de", "komm bald wieder"), ("de", "eins zwei drei"), ("de", "die sonne ist heiß"),
    ("de", "lies ein buch"), ("de", "wo ist die katze"), ("de", "ich mag tee"), ("de", "die tür ist rot"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 espeak-ng utterances (en, de) as cuts with fbank features, a char lang dir, and their waveforms
    resampled to 16 kHz (the samples both sherpa-onnx and PyTorch decode)."""
    d = tmp_path_factory.mktemp("export_corpus")
    cuts = espeak_corpus(d, TEXTS, "export", id_format="{lang}-{i:02d}")
    waveforms, _ = load_cut_audio(cuts)
    return {"dir": d, "cuts": d / "export_cuts.jsonl.gz", "lang_dir": d / "lang_char", "waveforms": waveforms,
            "refs": [c.supervisions[0].text for c in cuts]}


@pytest.fixture(scope="module")
def conformer_exp(corpus):
    """A causal Conformer with CTC and transducer heads (chunk 8, left context 16), trained briefly."""
    exp = corpus["dir"] / "exp_conformer"
    overrides = {"decoder_dim": 64, "joiner_dim": 64,
                 "encoder_kwargs": {"causal": True, "chunk_size": CHUNK // 4, "left_context": 16}}
    cmd = [sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(exp), "--lang-dir",
           str(corpus["lang_dir"]), "--train-cuts", str(corpus["cuts"]), "--preset", "conformer-tiny",
           "--heads", "hybrid", "--model-overrides", json.dumps(overrides), "--max-duration", "100",
           "--num-epochs", "0", "--max-updates", "120", "--scheduler", "constant", "--warmup-updates", "10",
           "--lr", "5e-3", "--spec-augment", "false", "--threads", THREADS]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return exp


def save_untrained(exp: Path, preset: str, token_table: List[str], **overrides) -> Path:
    """A checkpoint of a freshly initialised model, in the trainer's layout (``epoch-1.pt``)."""
    from icefall_ext.models.presets import build_model, model_config_from_preset
    from icefall_ext.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = model_config_from_preset(preset, vocab_size=len(token_table), **overrides)
    state = {"model": build_model(config).state_dict(), "model_config": config, "tokens": list(token_table),
             "update": 0}
    save_checkpoint(exp / "epoch-1.pt", state)
    return exp


@pytest.fixture(scope="module")
def zipformer_exp(corpus):
    """A causal Zipformer transducer, randomly initialised: its greedy output is long and token-rich, which
    exercises every graph of the export (a few seconds of training would leave it emitting almost nothing)."""
    from icefall_ext.data.tokenizer import read_tokens_txt

    table = read_tokens_txt(corpus["lang_dir"] / "tokens.txt")
    kwargs = {"causal": True, "chunk_size": [CHUNK // 2], "left_context_frames": [32],
              "embed_channels": [8, 32, 128]}
    return save_untrained(corpus["dir"] / "exp_zipformer", "zipformer-tiny", table, use_ctc=False,
                          use_transducer=True, encoder_kwargs=kwargs)


def export(exp: Path, corpus, export_type: str, *extra: str) -> Path:
    out = exp / f"onnx-{export_type}"
    export_onnx.main(["--exp-dir", str(exp), "--lang-dir", str(corpus["lang_dir"]), "--out-dir", str(out),
                      "--type", export_type, "--decode-chunk-len", str(CHUNK), *extra])
    return out


def torch_offline(model, waveforms, method: str) -> List[List[int]]:
    """PyTorch decoding of a padded batch of the exact features sherpa-onnx computes."""
    feats = [torch.from_numpy(compute_fbank(w)) for w in waveforms]
    lens = torch.tensor([f.shape[0] for f in feats])
    with torch.no_grad():
        enc, enc_lens = model.forward_encoder(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens)
    return decode_encoder_output(model, enc, enc_lens, method)


def torch_streaming(model, waveforms) -> List[List[int]]:
    return [online_greedy_search(model, torch.from_numpy(compute_fbank(streaming_padded(w))), CHUNK)
            for w in waveforms]


def assert_parity(sherpa_hyps, torch_hyps, corpus, table) -> None:
    """>= 95% identical hypotheses, WER within 3 points (one utterance of the 24 may differ by a near-tie in a
    trained model's scores: ~1.3 points a word), and hypotheses that are not trivial."""
    assert len(sherpa_hyps) == len(torch_hyps) == len(corpus["refs"]) >= 20
    identical = np.mean([a == b for a, b in zip(sherpa_hyps, torch_hyps)])
    wer_sherpa = score(corpus["refs"], [tokens_to_text(h, table) for h in sherpa_hyps], unit="word").total.rate
    wer_torch = score(corpus["refs"], [tokens_to_text(h, table) for h in torch_hyps], unit="word").total.rate
    assert identical >= 0.95, (identical, sherpa_hyps, torch_hyps)
    assert abs(wer_sherpa - wer_torch) <= 3.0
    assert sum(len(h) > 0 for h in torch_hyps) >= 0.8 * len(torch_hyps)
    assert len({tuple(h) for h in torch_hyps}) >= len(torch_hyps) // 2


@pytest.mark.parametrize("export_type", ["transducer", "ctc", "streaming-transducer"])
def test_conformer_export_decodes_like_pytorch(conformer_exp, corpus, export_type):
    out = export(conformer_exp, corpus, export_type)
    model, _, _ = load_averaged_model(conformer_exp)
    decoder = SherpaDecoder(out, "auto", num_threads=1)
    assert decoder.export_type == export_type
    sherpa_hyps = decoder.decode(corpus["waveforms"])
    if export_type == "streaming-transducer":
        torch_hyps = torch_streaming(model, corpus["waveforms"])
        # the PyTorch online reference equals offline greedy search over the frames the windows covered
        window, shift = streaming_window(model.encoder, CHUNK)
        same = []
        for w, hyp in zip(corpus["waveforms"][:6], torch_hyps):
            feats = torch.from_numpy(compute_fbank(streaming_padded(w)))
            covered = shift * ((feats.shape[0] - window - 1) // shift + 1) + window - shift
            with torch.no_grad():
                enc, lens = model.forward_encoder(feats[None, :covered], torch.tensor([covered]))
            same.append(greedy_search_batch(model, enc, lens) == [hyp])
        assert sum(same) >= 5, same  # two computations of one model (cached chunks vs one pass): near-ties may differ
        meta = read_metadata(out / "encoder.onnx")
        assert meta["model_type"] == "conformer" and (int(meta["T"]), int(meta["decode_chunk_len"])) == (35, 32)
    else:
        torch_hyps = torch_offline(model, corpus["waveforms"], "greedy" if export_type == "transducer" else
                                   "ctc-greedy")
    assert (out / "tokens.txt").read_text() == (corpus["lang_dir"] / "tokens.txt").read_text()
    assert_parity(sherpa_hyps, torch_hyps, corpus, decoder.token_table)


@pytest.mark.parametrize("export_type", ["transducer", "streaming-transducer"])
def test_zipformer_export_decodes_like_pytorch(zipformer_exp, corpus, export_type):
    out = export(zipformer_exp, corpus, export_type)
    model, _, _ = load_averaged_model(zipformer_exp)
    assert read_metadata(out / "encoder.onnx")["model_type"] == "zipformer2"
    decoder_meta = read_metadata(out / "decoder.onnx")
    assert (int(decoder_meta["vocab_size"]), int(decoder_meta["context_size"])) == (model.vocab_size, 2)
    waveforms = corpus["waveforms"]
    decoder = SherpaDecoder(out, export_type, num_threads=1)
    sherpa_hyps = decoder.decode(waveforms)
    if export_type == "streaming-transducer":
        torch_hyps = torch_streaming(model, waveforms)
    else:
        torch_hyps = torch_offline(model, waveforms, "greedy")
    assert_parity(sherpa_hyps, torch_hyps, corpus, decoder.token_table)


def test_int8_files_keep_metadata_and_decode(conformer_exp, corpus):
    out = export(conformer_exp, corpus, "ctc", "--int8", "true")
    float_meta, int8_meta = read_metadata(out / "model.onnx"), read_metadata(out / "model.int8.onnx")
    assert int8_meta["model_type"] == float_meta["model_type"] == "zipformer2_ctc"
    assert (out / "model.int8.onnx").stat().st_size < 0.6 * (out / "model.onnx").stat().st_size
    decoder = SherpaDecoder(out, "ctc", int8=True)
    int8_hyps = decoder.decode(corpus["waveforms"])
    float_hyps = SherpaDecoder(out, "ctc").decode(corpus["waveforms"])
    table = decoder.token_table
    cer_int8 = score(corpus["refs"], [tokens_to_text(h, table) for h in int8_hyps]).total.rate
    cer_float = score(corpus["refs"], [tokens_to_text(h, table) for h in float_hyps]).total.rate
    assert abs(cer_int8 - cer_float) <= 8.0  # int8 kernels round differently with and without VNNI


def test_sherpa_decode_stage_scores_the_test_set(conformer_exp, corpus, tmp_path):
    out = export(conformer_exp, corpus, "transducer")
    r = subprocess.run([sys.executable, "-m", "icefall_ext.bin.sherpa_decode", "--onnx-dir", str(out), "--cuts",
                        f"test={corpus['cuts']}", "--out-dir", str(tmp_path), "--num-threads", "1",
                        "--batch-size", "10"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    # the scores are those of the hypotheses the stage wrote (rescored here with the shared scorer) ...
    recogs = read_recogs(tmp_path / "recogs-test-sherpa-transducer.txt")
    refs = [" ".join(ref) for ref, _ in recogs.values()]
    stage_hyps = [" ".join(hyp) for _, hyp in recogs.values()]
    cer = score(refs, stage_hyps, unit="char").total.rate
    wer = score(refs, stage_hyps, unit="word").total.rate
    assert f"test\tsherpa-transducer\tCER {cer:.2f}\tWER {wer:.2f}" in r.stdout
    summary = json.loads((tmp_path / "summary-test-sherpa-transducer.json").read_text())
    assert summary["num_utts"] == len(TEXTS) and abs(summary["cer"] - cer) < 1e-9
    # ... and those hypotheses are sherpa-onnx's (decoded here in one batch: padding may move a near-tie)
    decoder = SherpaDecoder(out, "transducer")
    hyps = [tokens_to_text(h, decoder.token_table) for h in decoder.decode(corpus["waveforms"])]
    by_ref = dict(zip(corpus["refs"], hyps))
    assert sorted(refs) == sorted(corpus["refs"])
    assert np.mean([" ".join(by_ref[ref].split()) == hyp for ref, hyp in zip(refs, stage_hyps)]) >= 0.9
    assert sorted(summary["per_language_cer"]) == ["de", "en"]
    recogs = (tmp_path / "recogs-test-sherpa-transducer.txt").read_text().splitlines()
    assert len(recogs) == 2 * len(TEXTS)
    assert (tmp_path / "errs-test-sherpa-transducer.txt").read_text().startswith("%CER")
    assert (tmp_path / "results.tsv").read_text().count("sherpa-transducer") == 1


@pytest.fixture(scope="module")
def untrained_ctc_free_exp(corpus):
    """A Conformer transducer without CTC head (untrained): for the error cases."""
    from icefall_ext.data.tokenizer import read_tokens_txt

    table = read_tokens_txt(corpus["lang_dir"] / "tokens.txt")
    return save_untrained(corpus["dir"] / "exp_no_ctc", "conformer-tiny", table, use_ctc=False,
                          use_transducer=True)


def one_line_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_export_errors_are_one_line(untrained_ctc_free_exp, corpus, tmp_path, capsys):
    exp, lang = untrained_ctc_free_exp, corpus["lang_dir"]
    base = ["--lang-dir", str(lang), "--out-dir", str(tmp_path / "onnx")]
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(tmp_path / "nothing"), *base])
    assert "error: no epoch-*.pt" in line
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(exp), "--checkpoint",
                                                     str(exp / "missing.pt"), *base])
    assert "error:" in line and "missing.pt does not exist" in line
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(exp), "--type", "ctc", *base])
    assert "error: --type ctc needs a model with a CTC head" in line
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(exp), "--type", "rnn", *base])
    assert "error: unknown --type 'rnn'" in line
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(exp), "--type", "streaming-transducer",
                                                     *base])
    assert "error: streaming export needs a causal encoder" in line

    other = tmp_path / "lang_other"
    other.mkdir()
    tokens = (lang / "tokens.txt").read_text().splitlines()
    tokens[3], tokens[4] = tokens[4].split()[0] + " 3", tokens[3].split()[0] + " 4"
    (other / "tokens.txt").write_text("\n".join(tokens) + "\n")
    line = one_line_error(capsys, export_onnx.main, ["--exp-dir", str(exp), "--lang-dir", str(other),
                                                     "--out-dir", str(tmp_path / "onnx")])
    assert "differs from the checkpoint's token table" in line and "at id 3" in line
    assert not (tmp_path / "onnx").exists()


def test_sherpa_decode_errors_are_one_line(corpus, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["--onnx-dir", str(tmp_path / "empty"), "--cuts", str(corpus["cuts"]), "--out-dir", str(tmp_path)]
    assert "neither model.onnx nor encoder.onnx" in one_line_error(capsys, sherpa_decode.main, argv)
    argv = ["--onnx-dir", str(tmp_path / "empty"), "--cuts", str(tmp_path / "no.jsonl.gz"), "--out-dir",
            str(tmp_path)]
    assert "missing cut manifest" in one_line_error(capsys, sherpa_decode.main, argv)
    argv = ["--onnx-dir", str(tmp_path / "empty"), "--type", "ctc", "--cuts", str(corpus["cuts"]),
            "--out-dir", str(tmp_path)]
    assert "missing" in one_line_error(capsys, sherpa_decode.main, argv)
