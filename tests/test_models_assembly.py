"""Heads, AsrModel losses and config/preset assembly, checked against hand-computed references
(torch CTC, brute-force RNN-T lattices, manual pooling) and a small overfitting run."""

import json
import math

import kaldialign
import pytest
import torch
import torch.nn.functional as F

from icefall_ext.bin import model_info
from icefall_ext.models import (
    AsrModel,
    Conformer,
    Decoder,
    Joiner,
    LidHead,
    build_model,
    list_presets,
    model_config_from_preset,
)

FEATURES = 20



def tiny_model(vocab_size: int = 8, **overrides) -> AsrModel:
    torch.manual_seed(0)
    config = model_config_from_preset(
        "conformer-tiny", vocab_size, feature_dim=FEATURES, encoder_kwargs={"dropout": 0.0}, **overrides
    )
    return build_model(config)


def ctc_greedy(log_probs: torch.Tensor, length: int, blank: int = 0) -> list[int]:
    out, prev = [], blank
    for token in log_probs[:length].argmax(-1).tolist():
        if token != prev and token != blank:
            out.append(token)
        prev = token
    return out


def rnnt_nll(log_probs: torch.Tensor, labels: list[int], blank: int = 0) -> float:
    """-log P(labels) over the full (T, U+1) RNN-T lattice; log_probs (T, U+1, V)."""
    num_frames, num_labels = log_probs.size(0), len(labels)
    lp = log_probs.detach().double()
    alpha = [[-math.inf] * (num_labels + 1) for _ in range(num_frames)]
    alpha[0][0] = 0.0
    for t in range(num_frames):
        for u in range(num_labels + 1):
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + float(lp[t - 1, u, blank]))
            if u > 0:
                terms.append(alpha[t][u - 1] + float(lp[t, u - 1, labels[u - 1]]))
            if terms:
                alpha[t][u] = float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))
    return -(alpha[num_frames - 1][num_labels] + float(lp[num_frames - 1, num_labels, blank]))


@pytest.mark.parametrize("context_size", [1, 3])
def test_decoder_need_pad_semantics(context_size):
    torch.manual_seed(0)
    dim = 8  # icefall's grouping: groups of 4 channels, so 2 groups here
    decoder = Decoder(vocab_size=9, decoder_dim=dim, blank_id=0, context_size=context_size)
    assert (decoder.vocab_size, decoder.decoder_dim, decoder.blank_id, decoder.context_size) == (9, dim, 0, context_size)
    y = torch.randint(1, 9, (2, 5))
    full = decoder(y)
    assert full.shape == (2, 5, dim)
    padded = F.pad(y, (context_size - 1, 0), value=0)
    if decoder.conv is not None:
        assert decoder.conv.weight.shape == (dim, 4, context_size)
    for u in range(5):
        window = padded[:, u : u + context_size]
        step = decoder(window, need_pad=False)
        assert step.shape == (2, 1, dim)
        torch.testing.assert_close(step[:, 0], full[:, u])
        # by hand: output channel o sums its group's 4 input channels over the window (blank embeds to zero)
        emb = decoder.embedding.weight[window] * (window != 0).unsqueeze(-1)  # (N, context, dim)
        expected = torch.zeros(2, dim)
        for o in range(dim):
            if decoder.conv is None:
                expected[:, o] = emb[:, 0, o]
                continue
            group = o // 4
            for c in range(4):
                for k in range(context_size):
                    expected[:, o] += decoder.conv.weight[o, c, k] * emb[:, k, group * 4 + c]
        torch.testing.assert_close(full[:, u], torch.relu(expected))
    with pytest.raises(ValueError):
        decoder(torch.zeros(2, context_size + 1, dtype=torch.int64), need_pad=False)


def test_joiner_project_input_equivalence():
    torch.manual_seed(0)
    joiner = Joiner(encoder_dim=5, decoder_dim=4, joiner_dim=6, vocab_size=7)
    enc, dec = torch.randn(2, 3, 1, 5), torch.randn(2, 1, 4, 4)
    logits = joiner(enc, dec)
    assert logits.shape == (2, 3, 4, 7)
    projected = joiner(joiner.encoder_proj(enc), joiner.decoder_proj(dec), project_input=False)
    torch.testing.assert_close(projected, logits)
    by_hand = (
        torch.tanh(enc @ joiner.encoder_proj.weight.t() + joiner.encoder_proj.bias
                   + dec @ joiner.decoder_proj.weight.t() + joiner.decoder_proj.bias)
        @ joiner.output_linear.weight.t() + joiner.output_linear.bias
    )
    torch.testing.assert_close(logits, by_hand)


def test_lid_pooling_ignores_padding():
    torch.manual_seed(0)
    head = LidHead(encoder_dim=4, num_languages=3)
    enc = torch.randn(2, 6, 4)
    lens = torch.tensor([6, 3])
    logits = head(enc, lens)
    garbage = enc.clone()
    garbage[1, 3:] = 1e3
    torch.testing.assert_close(head(garbage, lens), logits)
    pooled = torch.stack([enc[i, :n].mean(0) for i, n in enumerate(lens.tolist())])
    # training: batch statistics (biased variance); the running statistics move by the momentum
    by_hand = (pooled - pooled.mean(0)) / (pooled.var(0, unbiased=False) + head.norm.eps).sqrt()
    torch.testing.assert_close(logits, head.output(by_hand))
    torch.testing.assert_close(head.norm.running_mean, (0.1 + 0.9 * 0.1) * pooled.mean(0))  # two passes, momentum 0.1
    head.eval()  # inference: running statistics
    expected = (pooled - head.norm.running_mean) / (head.norm.running_var + head.norm.eps).sqrt()
    torch.testing.assert_close(head(enc, lens), head.output(expected))


def test_lid_head_trains_on_one_utterance_and_loads_old_checkpoints():
    torch.manual_seed(0)
    head = LidHead(encoder_dim=4, num_languages=3)
    enc, lens = torch.randn(1, 5, 4), torch.tensor([5])
    assert torch.isfinite(head(enc, lens)).all()  # a batch of one has no batch statistics: running ones are used
    old = {"output.weight": torch.randn(3, 4), "output.bias": torch.randn(3)}  # a head from before the norm
    fresh = LidHead(encoder_dim=4, num_languages=3).eval()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh(enc, lens), enc.mean(1) @ old["output.weight"].t() + old["output.bias"])


def test_ctc_and_lid_losses_match_torch_by_hand():
    torch.manual_seed(0)
    config = model_config_from_preset("conformer-tiny", 8, num_languages=3, feature_dim=FEATURES)
    model = build_model(config).eval()
    assert model.lid is not None and model.decoder is None and model.simple_am_proj is None
    x, x_lens = torch.randn(3, 70, FEATURES), torch.tensor([70, 55, 40])
    y = [[1, 2, 3, 2], [7, 7], [4, 5, 6]]
    lang = torch.tensor([2, 0, 1])
    losses = model(x, x_lens, y, lang)
    assert set(losses) == {"ctc", "lid", "num_frames"}

    enc, enc_lens = model.forward_encoder(x, x_lens)
    log_probs = model.ctc_log_probs(enc)
    assert log_probs.shape == (3, enc.size(1), 8)
    targets = torch.zeros(3, 4, dtype=torch.int64)
    for i, seq in enumerate(y):
        targets[i, : len(seq)] = torch.tensor(seq)
    expected_ctc = F.ctc_loss(log_probs.transpose(0, 1), targets, enc_lens, torch.tensor([4, 2, 3]),
                              blank=0, reduction="sum", zero_infinity=True)
    torch.testing.assert_close(losses["ctc"], expected_ctc)
    logits = model.lid_logits(enc, enc_lens)
    expected_lid = -sum(logits[i].log_softmax(-1)[lang[i]] for i in range(3))
    torch.testing.assert_close(losses["lid"], expected_lid)
    assert losses["num_frames"].dtype == torch.float32
    assert losses["num_frames"].item() == enc_lens.sum().item() == 16 + 13 + 9
    # per-language weights (--lid-balance) scale each utterance's term by its language's weight
    weight = torch.tensor([0.5, 2.0, 3.0])
    weighted = model(x, x_lens, y, lang, lid_weight=weight)["lid"]
    torch.testing.assert_close(weighted, -sum(weight[lang[i]] * logits[i].log_softmax(-1)[lang[i]] for i in range(3)))


def test_transducer_losses_match_brute_force_lattices():
    torch.manual_seed(0)
    config = model_config_from_preset("conformer-tiny", 7, feature_dim=FEATURES, use_ctc=False,
                                      use_transducer=True, decoder_dim=12, joiner_dim=10)
    model = build_model(config).eval()
    assert model.ctc is None and model.lid is None
    x, x_lens = torch.randn(2, 60, FEATURES), torch.tensor([60, 43])
    y = [[1, 2, 3], [4, 6]]
    # prune_range larger than every label sequence keeps the whole lattice, and zero
    # smoothing scales make the simple loss the plain "trivial joiner" RNN-T loss
    losses = model(x, x_lens, y, prune_range=8, am_scale=0.0, lm_scale=0.0)
    assert set(losses) == {"simple", "pruned", "num_frames"}

    enc, enc_lens = model.forward_encoder(x, x_lens)
    expected_simple = expected_pruned = 0.0
    for i, labels in enumerate(y):
        frames = enc[i, : enc_lens[i]]
        dec = model.decoder(torch.tensor([[0] + labels]))[0]  # (U + 1, decoder_dim)
        full_logits = model.joiner(frames.unsqueeze(1), dec.unsqueeze(0))
        expected_pruned += rnnt_nll(full_logits.log_softmax(-1), labels)
        simple_logits = model.simple_am_proj(frames).unsqueeze(1) + model.simple_lm_proj(dec).unsqueeze(0)
        expected_simple += rnnt_nll(simple_logits.log_softmax(-1), labels)
    assert losses["pruned"].item() == pytest.approx(expected_pruned, rel=1e-4)
    assert losses["simple"].item() == pytest.approx(expected_simple, rel=1e-4)

    default = model(x, x_lens, y)  # icefall defaults: prune_range=5, lm_scale=0.25
    total = 0.5 * default["simple"] + default["pruned"]
    assert torch.isfinite(total)
    total.backward()
    assert model.encoder.encoder_embed.out.weight.grad.abs().sum() > 0
    assert model.decoder.embedding.weight.grad.abs().sum() > 0


def test_mixed_precision_losses_stay_close_to_float32():
    torch.manual_seed(0)
    config = model_config_from_preset("conformer-tiny", 12, num_languages=2, feature_dim=FEATURES,
                                      use_transducer=True, encoder_kwargs={"causal": True, "chunk_size": 4})
    model = build_model(config).eval()
    x, x_lens = torch.randn(2, 70, FEATURES), torch.tensor([70, 52])
    y, lang = [[3, 5, 7], [1, 4]], torch.tensor([0, 1])
    reference = model(x, x_lens, y, lang)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x, x_lens, y, lang)
    for key in ("ctc", "lid", "simple", "pruned"):
        assert mixed[key].dtype == torch.float32
        assert mixed[key].item() == pytest.approx(reference[key].item(), rel=0.05)
    sum(mixed[key] for key in ("ctc", "lid", "simple", "pruned")).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

def test_tiny_model_overfits_one_batch():
    model = tiny_model(vocab_size=12)
    x, x_lens = torch.randn(3, 90, FEATURES), torch.tensor([90, 80, 70])
    y = [[3, 5, 7, 2, 9], [1, 4, 4, 6], [11, 8, 10, 2, 3, 1]]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(x, x_lens, y)["ctc"]
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.forward_encoder(x, x_lens)
        log_probs = model.ctc_log_probs(enc)
    # measured: the decoded tokens are exact from step 90 of 150 on (loss 0.07% of the first) with AVX-512, AVX2 and
    # default kernels; at most one token error of the 15 leaves a wide margin for other CPUs
    hyps = [ctc_greedy(log_probs[i], int(enc_lens[i])) for i in range(3)]
    assert sum(kaldialign.edit_distance(ref, hyp)["total"] for ref, hyp in zip(y, hyps)) <= 1, hyps


def test_build_model_round_trips_json_config():
    config = model_config_from_preset("conformer-tiny", 10, num_languages=2, feature_dim=FEATURES,
                                      use_transducer=True, encoder_kwargs={"causal": True, "chunk_size": 4})
    restored = json.loads(json.dumps(config))
    assert restored == config
    torch.manual_seed(0)
    model = build_model(config).eval()
    twin = build_model(restored).eval()
    assert isinstance(twin.encoder, Conformer) and twin.encoder.causal and twin.encoder.chunk_size == 4
    twin.load_state_dict(model.state_dict())
    x, x_lens = torch.randn(2, 40, FEATURES), torch.tensor([40, 31])
    torch.testing.assert_close(twin.forward_encoder(x, x_lens)[0], model.forward_encoder(x, x_lens)[0])


def test_presets_and_overrides():
    names = list_presets()
    assert names == [f"{e}-{s}" for e in ("conformer", "zipformer") for s in ("tiny", "mini", "medium")]
    mini = model_config_from_preset("conformer-mini", 500)
    assert mini["encoder_kwargs"]["d_model"] == 192 and mini["use_ctc"] and not mini["use_transducer"]
    assert mini["feature_dim"] == 80 and mini["num_languages"] == 0
    merged = model_config_from_preset("conformer-mini", 500, encoder_kwargs={"num_layers": 3}, use_transducer=True)
    assert merged["encoder_kwargs"]["num_layers"] == 3 and merged["encoder_kwargs"]["d_model"] == 192
    assert merged["use_transducer"] and model_config_from_preset("conformer-mini", 500) == mini
    with pytest.raises(ValueError):
        model_config_from_preset("conformer-huge", 500)
    with pytest.raises(ValueError):
        model_config_from_preset("conformer-tiny", 500, decoder_size=3)
    with pytest.raises(ValueError):
        build_model({"encoder": "conformer"})


def test_model_info_counts_parameters(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["model_info", "--preset", "conformer-tiny", "--vocab-size", "50"])
    model_info.main()
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| conformer-tiny")][0]
    _, heads, total, encoder, head_params = [cell.strip() for cell in row.strip("|").split("|")]
    model = build_model(model_config_from_preset("conformer-tiny", 50))
    assert heads == "ctc"
    assert total == f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
    assert encoder == f"{sum(p.numel() for p in model.encoder.parameters()) / 1e6:.2f}M"
    assert head_params == f"{sum(p.numel() for p in model.ctc.parameters()) / 1e6:.2f}M"


def test_zipformer_preset_builds_a_model_with_the_encoder_contract():
    from icefall_ext.models.zipformer import PRESETS, Zipformer

    config = model_config_from_preset("zipformer-tiny", 10, num_languages=2, feature_dim=FEATURES)
    expected_kwargs = {k: v for k, v in PRESETS["tiny"].items() if k != "feature_dim"}
    assert config["encoder_kwargs"] == expected_kwargs
    torch.manual_seed(0)
    model = build_model(json.loads(json.dumps(config))).eval()
    assert isinstance(model.encoder, Zipformer)
    assert (model.encoder.feature_dim, model.encoder.subsampling_factor) == (FEATURES, 4)
    x, x_lens = torch.randn(2, 64, FEATURES), torch.tensor([64, 41])
    losses = model(x, x_lens, [[1, 2], [3]], torch.tensor([0, 1]))
    enc, enc_lens = model.forward_encoder(x, x_lens)
    assert enc.shape == (2, int(enc_lens.max()), model.encoder.output_dim)
    assert losses["num_frames"].item() == enc_lens.sum().item()
    assert torch.isfinite(losses["ctc"]) and torch.isfinite(losses["lid"])


def test_lid_head_untouched_when_its_loss_is_off():
    """A run with LID weight 0 (e.g. a single-language fine-tune) must not move the head's normalisation statistics."""
    torch.manual_seed(0)
    model = build_model(model_config_from_preset("conformer-tiny", 8, num_languages=3, feature_dim=FEATURES)).train()
    before = model.lid.norm.running_mean.clone()
    x, x_lens = torch.randn(2, 60, FEATURES), torch.tensor([60, 50])
    losses = model(x, x_lens, [[1, 2], [3]], torch.tensor([0, 0]), lid=False)
    assert "lid" not in losses and torch.equal(model.lid.norm.running_mean, before)
    assert "lid" in model(x, x_lens, [[1, 2], [3]], torch.tensor([0, 0]))


def test_ctc_head_layers_respect_padding_stay_trainable_and_old_checkpoints_load():
    from icefall_ext.bin.train import freeze_for_training

    old = tiny_model()  # no layers: the CTC head is output.* alone, as in older checkpoints
    assert [k for k in old.state_dict() if k.startswith("ctc.")] == ["ctc.output.weight", "ctc.output.bias"]
    again = tiny_model(ctc_head_layers=0)
    again.load_state_dict(old.state_dict())
    model = tiny_model(ctc_head_layers=2).eval()
    assert len(model.ctc.layers) == 2 and model.ctc.layers[0].num_heads == 4
    missing = model.load_state_dict(old.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("ctc.layers.", "ctc.norm.")) for k in missing)
    enc = torch.randn(2, 9, 64)
    with torch.no_grad():
        both = model.ctc_log_probs(enc, torch.tensor([9, 5]))
        alone = model.ctc_log_probs(enc[1:, :5], torch.tensor([5]))
    torch.testing.assert_close(both[1, :5], alone[0], rtol=1e-4, atol=1e-5)  # padded frames are ignored
    y = [[1, 2], [3]]
    x, x_lens = torch.randn(2, 40, FEATURES), torch.tensor([40, 31])
    model.train()
    trainable = freeze_for_training(model, freeze_encoder=True, train_heads=True)
    assert trainable == sum(p.numel() for p in model.ctc.parameters())  # the layers are part of the head
    model(x, x_lens, y)["ctc"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.ctc.layers[0].qkv.weight.grad.abs().sum() > 0


def test_st_target_ctc_is_ctc_on_the_translation_tokens_and_trains_the_encoder():
    from icefall_ext.models.presets import st_config_from_preset

    torch.manual_seed(0)
    config = st_config_from_preset("conformer-tiny", 7, target_ctc=True)
    assert config["st"]["target_ctc"] and not st_config_from_preset("conformer-tiny", 7)["st"]["target_ctc"]
    model = build_model(config).eval()
    x, x_lens, y = torch.randn(2, 40, 80), torch.tensor([40, 31]), [[1, 2, 3], [4]]
    out = model(x, x_lens, y)
    enc, enc_lens = model.encoder(x, x_lens)
    log_probs = model.target_ctc(enc, enc_lens)  # reference: torch's CTC on the head's output, blank 0
    ref = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor([1, 2, 3, 4]), enc_lens, torch.tensor([3, 1]),
                     blank=0, reduction="sum")
    torch.testing.assert_close(out["target_ctc"], ref)
    out["target_ctc"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in model.decoder.parameters())  # CTC alone does not touch the decoder


def test_asr_config_from_any_checkpoint_keeps_the_encoder_only():
    from icefall_ext.models.presets import asr_config_from, st_config_from_preset
    from icefall_ext.pretrain.av_mae import av_config

    encoder = {"encoder_kwargs": {"num_layers": 1, "dropout": 0.0}}
    asr = model_config_from_preset("conformer-tiny", 5, use_transducer=True, ctc_head_layers=1, **encoder)
    kept = asr_config_from(asr, 9, 2, use_ctc=True, use_transducer=False)
    assert kept == dict(asr, vocab_size=9, num_languages=2)  # an ASR checkpoint keeps its heads
    st = st_config_from_preset("conformer-tiny", 7, 5, source_ctc=True)
    st["encoder_kwargs"]["num_layers"] = 1
    av = dict(model_config_from_preset("conformer-tiny", 0, **encoder), pretrain="av", av=av_config("tiny", (16, 16)))
    for source in (st, av):
        config = asr_config_from(source, 9, 0, use_ctc=True, use_transducer=False, head_defaults={"decoder_dim": 32})
        assert set(config) == {"encoder", "encoder_kwargs", "feature_dim", "vocab_size", "num_languages", "use_ctc",
                               "use_transducer", "decoder_dim", "joiner_dim", "context_size"}
        assert config["encoder_kwargs"] == source["encoder_kwargs"] and config["vocab_size"] == 9
        model = build_model(config)
        assert isinstance(model, AsrModel) and len(model.encoder.layers) == 1
    assert asr_config_from(st, 9, 0, head_defaults={"decoder_dim": 32})["decoder_dim"] == 32  # ST has no transducer
    assert asr_config_from(av, 9, 0)["decoder_dim"] == av["decoder_dim"]  # sizes kept where the config has them
