"""Per-language residual adapters (USM §2.6): identity at initialisation, per-utterance routing of mixed batches,
training with a frozen encoder, parameter budget, weight transfer, the train CLI, and ONNX export with one
language folded in (onnxruntime and sherpa-onnx)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icefall_ext.models.adapters import (
    AdapterBank,
    adapter_block_groups,
    adapter_params_per_language,
    block_widths,
    bottleneck_for_fraction,
)
from icefall_ext.models.presets import build_model, model_config_from_preset

from conftest import ROOT, THREADS

LANGS = ["de", "en", "fr"]


def tiny_config(encoder: str = "conformer", adapters: bool = True, bottleneck: int = 8, **overrides) -> dict:
    config = model_config_from_preset(f"{encoder}-tiny", vocab_size=12, **overrides)
    if adapters:
        config["adapters"] = {"languages": list(LANGS), "bottleneck": bottleneck}
    return config


def randomise_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero weights for every adapter parameter (a fresh adapter is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def features(n: int = 4, frames: int = 70, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, frames, 80, generator=g)
    x_lens = torch.tensor([frames, frames - 9, frames - 23, frames - 31][:n], dtype=torch.int64)
    return x, x_lens


@pytest.mark.parametrize("encoder", ["conformer", "zipformer"])
def test_fresh_adapters_leave_the_encoder_output_unchanged(encoder):
    torch.manual_seed(0)
    base = build_model(tiny_config(encoder, adapters=False)).eval()
    adapted = build_model(tiny_config(encoder)).eval()
    missing, unexpected = adapted.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("adapters.") for k in missing)
    x, x_lens = features()
    with torch.no_grad():
        ref, ref_lens = base.forward_encoder(x, x_lens)
        out, out_lens = adapted.forward_encoder(x, x_lens, torch.tensor([0, 1, 2, -1]))
    assert torch.equal(out, ref) and torch.equal(out_lens, ref_lens)


@pytest.mark.parametrize("encoder", ["conformer", "zipformer"])
def test_mixed_language_batch_equals_each_utterance_alone(encoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder)).eval()
    randomise_adapters(model)
    x, x_lens = features()
    lang = torch.tensor([2, 0, 1, -1])  # -1: the "no adapter" path
    with torch.no_grad():
        out, out_lens = model.forward_encoder(x, x_lens, lang)
        for i in range(len(lang)):
            alone, alone_len = model.forward_encoder(x[i : i + 1, : x_lens[i]], x_lens[i : i + 1], lang[i : i + 1])
            assert int(alone_len) == int(out_lens[i])
            torch.testing.assert_close(out[i, : out_lens[i]], alone[0], rtol=1e-4, atol=1e-4)
        # the routing matters: another language gives another output; -1 gives the encoder's own output
        other, _ = model.forward_encoder(x, x_lens, torch.tensor([0, 0, 0, 0]))
        assert not torch.allclose(other[0], out[0], atol=1e-3)
        with model.adapters.route(torch.tensor([-1, -1, -1, -1])):
            plain, _ = model.encoder(x, x_lens)
        assert torch.equal(out[3], plain[3])


def test_routing_errors_are_clear():
    model = build_model(tiny_config()).eval()
    x, x_lens = features(2)
    with pytest.raises(ValueError, match="per-language adapters"):
        model.forward_encoder(x, x_lens)
    with pytest.raises(RuntimeError, match="no languages were given"):
        model.encoder(x, x_lens)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_encoder(x, x_lens, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="language ids for a batch of"):
        model.forward_encoder(x, x_lens, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="exposes no list of blocks"):
        adapter_block_groups(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="already has adapters"):
        from icefall_ext.models.adapters import EncoderAdapters

        EncoderAdapters(model.encoder, LANGS, 4)


def test_bf16_autocast_training_step_runs():
    model = build_model(tiny_config()).train()
    randomise_adapters(model)
    x, x_lens = features(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(x, x_lens, [[1, 2, 3], [4, 5]], torch.tensor([1, -1]))
    losses["ctc"].backward()
    assert model.adapters.banks[0].up.grad[1].abs().sum() > 0
    assert not model.adapters.banks[0].up.grad[0].any() and not model.adapters.banks[0].up.grad[2].any()


def test_bank_gathers_per_utterance_weights():
    """The batched (gather + bmm) path equals the one-language path, row by row."""
    torch.manual_seed(0)
    bank = AdapterBank(3, 2, 16, 5, "gelu")
    with torch.no_grad():
        for p in bank.parameters():
            p.normal_()
    x = torch.randn(4, 7, 16)
    lang = torch.tensor([1, 0, 2, 1])
    routed = bank(x, 1, lang)
    for i, l in enumerate(lang.tolist()):
        torch.testing.assert_close(routed[i], bank(x[i : i + 1], 1, l)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder,size", [("conformer", "tiny"), ("conformer", "mini"), ("zipformer", "tiny")])
@pytest.mark.parametrize("fraction", [0.02, 0.05])
def test_bottleneck_sized_from_a_fraction_of_the_encoder(encoder, size, fraction):
    config = model_config_from_preset(f"{encoder}-{size}", vocab_size=12)
    config["adapters"] = {"languages": LANGS, "fraction": fraction}
    model = build_model(config)
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    widths = block_widths(model.encoder)
    bottleneck = model.adapters.bottleneck
    assert bottleneck == bottleneck_for_fraction(model.encoder, fraction)
    per_language = model.adapters.params_per_language()
    assert per_language == adapter_params_per_language(widths, bottleneck)
    assert sum(p.numel() for p in model.adapters.parameters()) == len(LANGS) * per_language
    # within half a step of B of the target
    assert abs(per_language - fraction * encoder_params) <= sum(2 * d + 1 for d in widths) / 2
    # adapters are not encoder parameters (freezing the encoder leaves them trainable)
    assert not {id(p) for p in model.adapters.parameters()} & {id(p) for p in model.encoder.parameters()}


def test_init_from_a_checkpoint_without_adapters_keeps_them_fresh():
    from icefall_ext.train.init import transfer_weights

    torch.manual_seed(0)
    old = build_model(tiny_config(adapters=False))
    new = build_model(tiny_config())
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    done = transfer_weights(new, old.state_dict(), ["t"] * 12, ["t"] * 12, LANGS, LANGS)
    state = new.state_dict()
    for k, v in state.items():
        if k.startswith("adapters."):
            assert done[k] == "new"
            assert torch.equal(v, fresh[k])
            if k.endswith((".up", ".up_bias")):
                assert not v.any()
        else:
            assert torch.equal(v, old.state_dict()[k])
    # a checkpoint with adapters and another language table: adapters are mapped by language
    randomise_adapters(new)
    other = build_model(dict(tiny_config(), adapters={"languages": ["fr", "it", "de"], "bottleneck": 8}))
    transfer_weights(other, new.state_dict(), ["t"] * 12, ["t"] * 12, LANGS, ["fr", "it", "de"])
    for (k, a), b in zip(new.adapters.state_dict().items(), other.adapters.state_dict().values()):
        assert torch.equal(b[0], a[2]) and torch.equal(b[2], a[0]), k  # fr, de copied; it fresh


@pytest.mark.parametrize("train_heads", [True, False])
def test_frozen_encoder_trains_only_adapters_and_heads(tiny_corpus, tmp_path, train_heads):
    from lhotse import CutSet

    from icefall_ext.bin.train import freeze_for_training
    from icefall_ext.data.dataset import AsrDataset
    from icefall_ext.data.tokenizer import load_tokenizer
    from icefall_ext.train.trainer import TrainConfig, Trainer

    tok = load_tokenizer(tiny_corpus["lang_dir"])
    languages = ["de", "en"]
    cfg = TrainConfig(exp_dir=str(tmp_path), lang_dir=str(tiny_corpus["lang_dir"]), train_cuts=[],
                      spec_augment=False, scheduler="constant", lr=3e-3)
    mc = model_config_from_preset("conformer-tiny", vocab_size=tok.vocab_size)
    mc["adapters"] = {"languages": languages, "bottleneck": 8}
    torch.manual_seed(0)
    model = build_model(mc)
    trainable = freeze_for_training(model, freeze_encoder=True, train_heads=train_heads)
    adapter_params = sum(p.numel() for p in model.adapters.parameters())
    head_params = sum(p.numel() for p in model.ctc.parameters())
    assert trainable == adapter_params + (head_params if train_heads else 0)
    trainer = Trainer(cfg, model, mc, tok, languages)
    trainer.train_dataset = AsrDataset(tok, languages)
    trainer.spec_augment = None
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in model.adapters.parameters()} <= in_optimizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = trainer.train_dataset[CutSet.from_file(tiny_corpus["cuts"])]
    assert sorted(set(batch["languages"].tolist())) == [0, 1]
    for _ in range(3):
        assert trainer.train_step(batch, None) is not None
    # the frozen encoder (and a frozen head) ran in eval mode (no dropout: two passes agree), the rest in train mode
    assert not model.encoder.training and model.adapters.training and model.ctc.training == train_heads
    lang = batch["languages"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_encoder(batch["features"], batch["feature_lens"], lang)[0],
                                   model.forward_encoder(batch["features"], batch["feature_lens"], lang)[0])
    after = model.state_dict()
    for k, v in after.items():
        if k.startswith("encoder."):
            assert torch.equal(v, before[k]), k
        elif k.startswith("ctc."):
            assert torch.equal(v, before[k]) != train_heads, k
    for bank in model.adapters.banks:  # both languages' adapters moved (each had utterances in the batch)
        for lang in range(2):
            assert not torch.equal(bank.up[lang], torch.zeros_like(bank.up[lang]))
    changed = [k for k in after if k.startswith("adapters.") and not torch.equal(after[k], before[k])]
    assert len(changed) == len(list(model.adapters.parameters()))


def test_chunked_decoding_routes_each_crop_by_its_utterance():
    from icefall_ext.decode.search import encode_batch

    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    randomise_adapters(model)
    x, x_lens = features(3, frames=200)
    lang = torch.tensor([1, 2, 0])
    batch = {"features": x, "feature_lens": x_lens, "languages": lang}
    with torch.no_grad():
        out, out_lens = encode_batch(model, batch, torch.device("cpu"), chunk_frames=80, overlap_frames=32)
        for i in range(3):
            one = {"features": x[i : i + 1, : x_lens[i]], "feature_lens": x_lens[i : i + 1],
                   "languages": lang[i : i + 1]}
            alone, alone_lens = encode_batch(model, one, torch.device("cpu"), chunk_frames=80, overlap_frames=32)
            assert int(alone_lens) == int(out_lens[i])
            torch.testing.assert_close(out[i, : out_lens[i]], alone[0], rtol=1e-4, atol=1e-4)


def test_decoding_routes_by_the_cuts_languages(tiny_corpus):
    from lhotse import CutSet

    from icefall_ext.data.dataset import AsrDataset
    from icefall_ext.decode.search import adapter_languages

    model = build_model(tiny_config())  # adapters de, en, fr: the dataset's own table is irrelevant
    batch = AsrDataset(None, ["en"])[CutSet.from_file(tiny_corpus["cuts"])]
    codes = [c.supervisions[0].language for c in batch["cuts"]]
    assert adapter_languages(model, batch, torch.device("cpu")).tolist() == [LANGS.index(c) for c in codes]
    model.adapters.languages = ["en"]  # a language without adapter takes the "no adapter" path
    assert adapter_languages(model, batch, torch.device("cpu")).tolist() == [0 if c == "en" else -1 for c in codes]


def _save(exp: Path, model: torch.nn.Module, config: dict, tokens, languages) -> Path:
    from icefall_ext.train.checkpoint import save_checkpoint

    path = exp / "epoch-1.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_config": config, "tokens": list(tokens),
                           "languages": list(languages), "update": 0})
    return path


def test_train_cli_adds_adapters_to_a_checkpoint_and_freezes_its_encoder(tiny_corpus, tmp_path):
    from icefall_ext.data.tokenizer import read_tokens_txt
    from icefall_ext.train.checkpoint import load_checkpoint

    tokens = read_tokens_txt(tiny_corpus["lang_dir"] / "tokens.txt")
    torch.manual_seed(0)
    config = model_config_from_preset("conformer-tiny", vocab_size=len(tokens))
    base = _save(tmp_path / "base", build_model(config), config, tokens, ["de", "en"])
    exp = tmp_path / "adapted"
    cmd = [sys.executable, "-m", "icefall_ext.bin.train", "--exp-dir", str(exp), "--lang-dir",
           str(tiny_corpus["lang_dir"]), "--train-cuts", str(tiny_corpus["cuts"]), "--init-from", str(base),
           "--adapters", "true", "--freeze-encoder", "true", "--adapter-fraction", "0.05", "--max-duration", "100",
           "--num-epochs", "0", "--max-updates", "3", "--scheduler", "constant", "--lr", "3e-3",
           "--spec-augment", "false", "--threads", THREADS]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "adapters for de, en" in log and "training " in log and "encoder frozen" in log
    saved = json.loads((exp / "model_config.json").read_text())
    assert saved["adapters"]["languages"] == ["de", "en"] and saved["adapters"]["bottleneck"] > 0
    old, new = load_checkpoint(base)["model"], load_checkpoint(max(exp.glob("epoch-*.pt")))["model"]
    for k, v in old.items():
        if k.startswith("encoder."):
            assert torch.equal(new[k], v), k
    assert any(k.startswith("adapters.") and k.endswith(".up") and new[k].any() for k in new)


@pytest.fixture(scope="module")
def adapted_ctc_exp(tiny_corpus, tmp_path_factory):
    """A CTC Conformer with random (non-zero) adapters for de and en, saved in the trainer's layout."""
    from icefall_ext.data.tokenizer import read_tokens_txt

    tokens = read_tokens_txt(tiny_corpus["lang_dir"] / "tokens.txt")
    config = model_config_from_preset("conformer-tiny", vocab_size=len(tokens))
    config["adapters"] = {"languages": ["de", "en"], "bottleneck": 8, "activation": "gelu"}
    torch.manual_seed(0)
    model = build_model(config)
    randomise_adapters(model)
    exp = tmp_path_factory.mktemp("adapted_ctc")
    _save(exp, model, config, tokens, ["de", "en"])
    return exp


def _export(exp: Path, lang_dir: Path, out: Path, export_type: str, *extra: str) -> Path:
    from icefall_ext.bin import export_onnx

    export_onnx.main(["--exp-dir", str(exp), "--lang-dir", str(lang_dir), "--out-dir", str(out), "--type",
                      export_type, *extra])
    return out


def test_onnx_export_folds_one_language(adapted_ctc_exp, tiny_corpus):
    import onnxruntime as ort

    from icefall_ext.export.onnx_export import read_metadata
    from icefall_ext.train.checkpoint import load_averaged_model

    model, _, _ = load_averaged_model(adapted_ctc_exp)
    x, x_lens = features(3, frames=90)
    outputs = {}
    for i, lang in enumerate(["de", "en"]):
        out = _export(adapted_ctc_exp, tiny_corpus["lang_dir"], adapted_ctc_exp / f"onnx-ctc-{lang}", "ctc",
                      "--adapter-language", lang)
        assert read_metadata(out / "model.onnx")["adapter_language"] == lang
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [a.name for a in session.get_inputs()] == ["x", "x_lens"]
        log_probs, lens = session.run(None, {"x": x.numpy(), "x_lens": x_lens.numpy()})
        with torch.no_grad():
            enc, enc_lens = model.forward_encoder(x, x_lens, torch.full((3,), i))
            ref = model.ctc_log_probs(enc)
        np.testing.assert_array_equal(lens, enc_lens.numpy())
        for j in range(3):
            np.testing.assert_allclose(log_probs[j, : lens[j]], ref[j, : enc_lens[j]].numpy(), rtol=1e-4, atol=1e-4)
        outputs[lang] = log_probs
    assert not np.allclose(outputs["de"], outputs["en"], atol=1e-3)  # each file holds its own language


def test_onnx_export_of_a_folded_transducer_encoder(tiny_corpus, tmp_path):
    import onnxruntime as ort

    from icefall_ext.data.tokenizer import read_tokens_txt

    tokens = read_tokens_txt(tiny_corpus["lang_dir"] / "tokens.txt")
    config = model_config_from_preset("conformer-tiny", vocab_size=len(tokens), use_ctc=False, use_transducer=True,
                                      decoder_dim=32, joiner_dim=32)
    config["adapters"] = {"languages": ["de", "en"], "bottleneck": 4}
    torch.manual_seed(0)
    model = build_model(config).eval()
    randomise_adapters(model)
    _save(tmp_path, model, config, tokens, ["de", "en"])
    out = _export(tmp_path, tiny_corpus["lang_dir"], tmp_path / "onnx", "transducer", "--adapter-language", "en")
    session = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    x, x_lens = features(2, frames=80)
    enc, lens = session.run(None, {"x": x.numpy(), "x_lens": x_lens.numpy()})
    with torch.no_grad():
        ref, ref_lens = model.forward_encoder(x, x_lens, torch.tensor([1, 1]))
        ref = model.joiner.encoder_proj(ref)
    for j in range(2):
        np.testing.assert_allclose(enc[j, : lens[j]], ref[j, : ref_lens[j]].numpy(), rtol=1e-4, atol=1e-4)
    from icefall_ext.export.onnx_export import export_model

    with pytest.raises(ValueError, match="streaming export of a model with per-language adapters"):
        export_model(model, config, tokens, tmp_path / "stream", "streaming-transducer", adapter_language="en")


def test_sherpa_onnx_decodes_a_folded_model_like_pytorch(adapted_ctc_exp, tiny_corpus):
    from lhotse import CutSet

    from icefall_ext.data.features import compute_fbank
    from icefall_ext.decode.search import decode_encoder_output
    from icefall_ext.export.sherpa import SherpaDecoder, load_cut_audio
    from icefall_ext.train.checkpoint import load_averaged_model

    out = adapted_ctc_exp / "onnx-sherpa-en"
    _export(adapted_ctc_exp, tiny_corpus["lang_dir"], out, "ctc", "--adapter-language", "en")
    waveforms, _ = load_cut_audio(CutSet.from_file(tiny_corpus["cuts"]))
    sherpa_hyps = SherpaDecoder(out, "ctc", num_threads=1).decode(waveforms)
    model, _, _ = load_averaged_model(adapted_ctc_exp)
    feats = [torch.from_numpy(compute_fbank(w)) for w in waveforms]
    lens = torch.tensor([f.shape[0] for f in feats])
    with torch.no_grad():
        enc, enc_lens = model.forward_encoder(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens,
                                              torch.ones(len(feats), dtype=torch.int64))
    torch_hyps = decode_encoder_output(model, enc, enc_lens, "ctc-greedy")
    assert sum(a == b for a, b in zip(sherpa_hyps, torch_hyps)) >= len(torch_hyps) - 1, (sherpa_hyps, torch_hyps)
    assert any(torch_hyps)


def test_export_errors_are_one_line(adapted_ctc_exp, tiny_corpus, tmp_path, capsys):
    from icefall_ext.bin import export_onnx

    base = ["--exp-dir", str(adapted_ctc_exp), "--lang-dir", str(tiny_corpus["lang_dir"]), "--out-dir",
            str(tmp_path / "onnx")]
    for extra, message in [([], "export one language at a time with --adapter-language"),
                           (["--adapter-language", "it"], "no adapter for language 'it'")]:
        with pytest.raises(SystemExit) as e:
            export_onnx.main(base + extra)
        assert e.value.code == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in line and "Traceback" not in line
    assert not (tmp_path / "onnx").exists()
