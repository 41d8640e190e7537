"""Tests of the Zipformer encoder against formulas, published sizes and its own
full-utterance computation."""

import math

import pytest
import torch

from icefall_ext.models.zipformer import PRESETS, Zipformer
from icefall_ext.models.zipformer_modules import BiasNorm, SwooshL, SwooshR


def _tiny(**overrides) -> Zipformer:
    torch.manual_seed(0)
    kwargs = dict(PRESETS["tiny"])
    kwargs.update(overrides)
    model = Zipformer(**kwargs)
    model.eval()
    return model


def _expected_out_len(t: int) -> int:
    return ((t - 7) // 2 + 1) // 2


def test_swoosh_match_their_formulas():
    x = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
    ref_r = [math.log1p(math.exp(v - 1.0)) - 0.08 * v - 0.313261687 for v in x.tolist()]
    ref_l = [math.log1p(math.exp(v - 4.0)) - 0.08 * v - 0.035 for v in x.tolist()]
    torch.testing.assert_close(SwooshR()(x), torch.tensor(ref_r, dtype=torch.float64))
    torch.testing.assert_close(SwooshL()(x), torch.tensor(ref_l, dtype=torch.float64))
    assert abs(SwooshR()(torch.zeros(1, dtype=torch.float64)).item()) < 1e-8


def test_biasnorm_matches_formula():
    torch.manual_seed(1)
    norm = BiasNorm(6)
    with torch.no_grad():
        norm.bias.copy_(torch.randn(6))
        norm.log_scale.fill_(0.3)
    x = torch.randn(3, 5, 6)
    ref = torch.empty_like(x)
    for i in range(3):
        for j in range(5):
            row = x[i, j]
            rms = math.sqrt(sum((row[c].item() - norm.bias[c].item()) ** 2 for c in range(6)) / 6)
            ref[i, j] = row * math.exp(0.3) / rms
    torch.testing.assert_close(norm(x), ref)
    # in training the log-scale is limited to [-1.5, 1.5]
    norm.train()
    with torch.no_grad():
        norm.log_scale.fill_(4.0)
    torch.testing.assert_close(norm(x), ref * math.exp(1.5 - 0.3))


@pytest.mark.parametrize("causal", [False, True])
def test_output_shapes_and_lengths(causal):
    model = _tiny(causal=causal, chunk_size=[8] if causal else [-1], left_context_frames=[16])
    assert model.subsampling_factor == 4 and model.feature_dim == 80
    assert model.output_dim == max(PRESETS["tiny"]["encoder_dim"])
    for t in (9, 10, 17, 40, 101):
        x = torch.randn(2, t, 80)
        lens = torch.tensor([t, max(t - 5, 7)])
        with torch.no_grad():
            out, out_lens = model(x, lens)
        assert out.shape == (2, _expected_out_len(t), model.output_dim)
        assert out_lens.tolist() == [_expected_out_len(int(v)) for v in lens]
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_outputs(causal):
    model = _tiny(causal=causal, chunk_size=[8] if causal else [-1], left_context_frames=[16])
    torch.manual_seed(2)
    lengths = [83, 60, 37]
    seqs = [torch.randn(t, 80) for t in lengths]
    batch = torch.randn(3, max(lengths), 80) * 5.0  # padding is garbage, not zeros
    for i, s in enumerate(seqs):
        batch[i, : s.shape[0]] = s
    with torch.no_grad():
        out, out_lens = model(batch, torch.tensor(lengths))
        for i, s in enumerate(seqs):
            alone, alone_len = model(s.unsqueeze(0), torch.tensor([s.shape[0]]))
            n = int(alone_len)
            assert int(out_lens[i]) == n == alone.shape[1]
            torch.testing.assert_close(out[i, :n], alone[0], atol=2e-5, rtol=1e-4)


def test_streaming_matches_chunked_causal_forward():
    chunk, left, num_chunks = 8, 16, 5
    model = _tiny(causal=True, chunk_size=[chunk], left_context_frames=[left])
    torch.manual_seed(3)
    window = 2 * chunk + 13
    feats = torch.randn(2, 2 * chunk * num_chunks + 13, 80)
    with torch.no_grad():
        full, _ = model(feats, torch.full((2,), feats.shape[1]))
        states = model.init_states(batch_size=2)
        pieces = []
        for k in range(num_chunks):
            x = feats[:, 2 * chunk * k : 2 * chunk * k + window]
            out, out_lens, states = model.streaming_forward(x, torch.full((2,), window), states)
            assert out.shape == (2, chunk // 2, model.output_dim)
            assert out_lens.tolist() == [chunk // 2] * 2
            pieces.append(out)
    streamed = torch.cat(pieces, dim=1)
    torch.testing.assert_close(streamed, full[:, : streamed.shape[1]], atol=2e-5, rtol=1e-4)
    assert states[-1].tolist() == [chunk * num_chunks] * 2


def test_streaming_states_follow_sherpa_onnx_layout():
    # shapes as sherpa-onnx's OnlineZipformer2TransducerModel::GetEncoderInitStates builds them
    # sherpa-onnx allocates 128 channels for the embedding cache: the default embed_channels
    model = _tiny(
        causal=True, chunk_size=[8], left_context_frames=[16], embed_channels=[8, 32, 128]
    )
    meta = model.streaming_metadata(decode_chunk_len=16)
    dims = [int(v) for v in meta["encoder_dims"].split(",")]
    layers = [int(v) for v in meta["num_encoder_layers"].split(",")]
    qd = [int(v) for v in meta["query_head_dims"].split(",")]
    vd = [int(v) for v in meta["value_head_dims"].split(",")]
    heads = [int(v) for v in meta["num_heads"].split(",")]
    kernels = [int(v) for v in meta["cnn_module_kernels"].split(",")]
    lefts = [int(v) for v in meta["left_context_len"].split(",")]
    expected = []
    for i in range(len(dims)):
        for _ in range(layers[i]):
            expected += [
                (lefts[i], 3, qd[i] * heads[i]),
                (1, 3, lefts[i], 3 * dims[i] // 4),
                (lefts[i], 3, vd[i] * heads[i]),
                (lefts[i], 3, vd[i] * heads[i]),
                (3, dims[i], kernels[i] // 2),
                (3, dims[i], kernels[i] // 2),
            ]
    expected += [(3, 128, 3, ((80 - 1) // 2 - 1) // 2), (3,)]
    states = model.init_states(batch_size=3)
    assert [tuple(s.shape) for s in states] == expected
    assert states[-1].dtype == torch.int64
    assert meta["T"] == "29" and meta["decode_chunk_len"] == "16"
    assert meta["left_context_len"] == "16,8,4,8"
    assert meta["model_type"] == "zipformer2"


def test_causal_model_ignores_future_chunks():
    model = _tiny(causal=True, chunk_size=[8], left_context_frames=[-1])
    torch.manual_seed(4)
    x = torch.randn(1, 120, 80)
    changed = x.clone()
    changed[:, 80:] = torch.randn(1, 40, 80)
    with torch.no_grad():
        a, _ = model(x, torch.tensor([120]))
        b, _ = model(changed, torch.tensor([120]))
    # embedding frame j sees input frames up to 2j + 14, so frames j >= 33 change; the
    # chunks of 8 embedding frames that end before frame 32, and their outputs, must not
    last_safe_chunk_end = 32
    torch.testing.assert_close(a[:, : last_safe_chunk_end // 2], b[:, : last_safe_chunk_end // 2])
    assert not torch.allclose(a[:, -4:], b[:, -4:])


def _transducer_heads(causal: bool, vocab=500) -> int:
    """Parameters outside the encoder of the model this repository builds for the medium preset: stateless
    decoder, joiner, simple_am_proj / simple_lm_proj (counted on the model, not from a formula)."""
    from icefall_ext.models.presets import build_model, model_config_from_preset

    config = model_config_from_preset("zipformer-medium", vocab_size=vocab, use_ctc=False, use_transducer=True,
                                      encoder_kwargs={"causal": causal})
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))


@pytest.mark.parametrize("causal,published", [(False, 65_549_011), (True, 66_110_931)])
def test_medium_matches_published_icefall_size(causal, published):
    # icefall RESULTS.md: zipformer normal-scaled 65.55M (non-streaming), 66.11M (streaming).
    # Its layers also hold one unused per-channel parameter each, which we do not have.
    with torch.device("meta"):
        model = Zipformer(**PRESETS["medium"], causal=causal)
    encoder = sum(p.numel() for p in model.parameters())
    unused_in_icefall = sum(d * n for d, n in zip(model.encoder_dim, model.num_encoder_layers))
    heads = _transducer_heads(causal)
    assert encoder + heads + unused_in_icefall == published
    assert 64e6 <= encoder + heads <= 67e6


def test_preset_sizes():
    counts = {}
    for name in ("tiny", "mini"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in Zipformer(**PRESETS[name]).parameters())
    assert 1e5 <= counts["tiny"] <= 4e5
    assert 3e6 <= counts["mini"] <= 5e6


def test_tiny_zipformer_with_ctc_head_overfits():
    from icefall_ext.train.optim import Eden, ScaledAdam

    torch.manual_seed(5)
    encoder = Zipformer(**PRESETS["tiny"], dropout=0.0)
    head = torch.nn.Linear(encoder.output_dim, 8)
    model = torch.nn.ModuleList([encoder, head])
    model.train()
    x = torch.randn(2, 40, 80)
    x_lens = torch.tensor([40, 32])
    targets = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 3, 2, 0]])
    target_lens = torch.tensor([5, 4])
    opt = ScaledAdam(model.parameters(), lr=0.08, clipping_scale=2.0)
    sched = Eden(opt, lr_batches=100, lr_epochs=10, warmup_batches=10)

    def loss_fn():
        out, out_lens = encoder(x, x_lens)
        log_probs = head(out).log_softmax(-1).transpose(0, 1)
        return torch.nn.functional.ctc_loss(log_probs, targets, out_lens, target_lens)

    losses = []
    for _ in range(40):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch()
        losses.append(loss.item())
    assert encoder.batch_count.item() == 40
    model.eval()
    with torch.no_grad():
        final = loss_fn().item()
    assert final < 0.2 * losses[0], (losses[0], final)


def test_causal_training_step_with_random_chunks():
    torch.manual_seed(6)
    model = Zipformer(
        **PRESETS["tiny"], causal=True, chunk_size=[8, 16, -1], left_context_frames=[16, -1]
    )
    model.train()
    x, lens = torch.randn(2, 50, 80), torch.tensor([50, 41])
    for step in range(3):
        out, out_lens = model(x, lens)
        out.pow(2).mean().backward()
        assert out_lens.tolist() == [_expected_out_len(50), _expected_out_len(41)]
    assert model.batch_count.item() == 3
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_exports_to_onnx_offline_and_streaming():
    import io

    import onnxruntime as ort

    class StreamingWrapper(torch.nn.Module):
        """What an exporter wraps: x_lens is implied by the fixed chunk window."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, x, states):
            x_lens = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
            out, _, new_states = self.encoder.streaming_forward(x, x_lens, states)
            return out, new_states

    model = _tiny(causal=True, chunk_size=[8], left_context_frames=[16])
    wrapper = StreamingWrapper(model).eval()
    states = model.init_states(1)
    names = [f"state{i}" for i in range(len(states))]
    buf = io.BytesIO()
    torch.onnx.export(
        wrapper, (torch.randn(1, 29, 80), states), buf, dynamo=False, opset_version=13,
        input_names=["x"] + names, output_names=["out"] + [f"new_{n}" for n in names],
    )
    wrapper.eval()  # the exporter restores the wrapper's (training) mode recursively
    session = ort.InferenceSession(buf.getvalue())
    torch.manual_seed(7)
    onnx_states = [s.numpy() for s in states]
    for _ in range(2):
        x = torch.randn(1, 29, 80)
        with torch.no_grad():
            ref, states = wrapper(x, states)
        got = session.run(None, {"x": x.numpy(), **dict(zip(names, onnx_states))})
        onnx_states = got[1:]
        torch.testing.assert_close(torch.from_numpy(got[0]), ref, atol=1e-4, rtol=1e-4)

    offline = _tiny()
    buf = io.BytesIO()
    torch.onnx.export(
        offline, (torch.randn(2, 100, 80), torch.tensor([100, 80])), buf, dynamo=False,
        opset_version=13, input_names=["x", "x_lens"], output_names=["out", "out_lens"],
        dynamic_axes={
            "x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "out": {0: "N", 1: "T"}, "out_lens": {0: "N"}
        },
    )
    offline.eval()
    session = ort.InferenceSession(buf.getvalue())
    x, lens = torch.randn(3, 77, 80), torch.tensor([77, 60, 41])
    with torch.no_grad():
        ref, ref_lens = offline(x, lens)
    got, got_lens = session.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), ref, atol=1e-4, rtol=1e-4)
    assert got_lens.tolist() == ref_lens.tolist()


def test_feature_mask_zeroes_channels_above_the_unmasked_dims_in_training_only():
    torch.manual_seed(0)
    model = Zipformer(**PRESETS["tiny"], encoder_unmasked_dim=[16, 24, 32, 24], feature_mask_prob=1.0)
    seen = {}
    model.stacks[0].register_forward_hook(lambda mod, args, out: seen.__setitem__("out", out[0]))
    x, x_lens = torch.randn(2, 100, 80), torch.tensor([100, 80])
    model.train()
    model(x, x_lens)
    assert seen["out"][..., 16:].abs().max() == 0 and seen["out"][..., :16].abs().max() > 0
    model.eval()
    model(x, x_lens)
    assert seen["out"][..., 16:].abs().max() > 0
    # with p = 0.5 about p of the utterances lose the middle band and about 1 - (1-p)^2 the top band
    model.feature_mask_prob = 0.5
    model.train()
    masks = model._feature_masks(torch.zeros(4000, 1, 32))
    mid, top = masks[0][:, 0, 16 + 4], masks[0][:, 0, 31]
    assert abs(float((mid == 0).float().mean()) - 0.5) < 0.04
    assert abs(float((top == 0).float().mean()) - 0.75) < 0.04
    assert bool(((mid == 0) <= (top == 0)).all())  # the top band is masked whenever the middle one is


def test_constant_attention_attends_uniformly_to_unpadded_frames():
    from icefall_ext.models.zipformer_modules import Scheduled

    torch.manual_seed(0)
    model = Zipformer(**PRESETS["tiny"])
    layer = model.stacks[0].layers[0]
    layer.const_attention_rate = Scheduled(model.clock, (0.0, 1.0))
    seen = {}
    original = layer.self_attn1.forward

    def capture(x, weights, cache=None):
        seen["w"] = weights
        return original(x, weights, cache)

    layer.self_attn1.forward = capture
    x, x_lens = torch.randn(2, 100, 80), torch.tensor([100, 60])
    model.train()
    model(x, x_lens)
    w = seen["w"]  # (N, H, T, T) at the first stack's frame rate
    counts = (w > 0).sum(-1)  # attended keys per query
    for i in range(2):
        n = int(counts[i, 0, 0])
        assert bool((counts[i] == n).all())  # every query of an utterance attends to the same (unpadded) keys
        torch.testing.assert_close(w[i][w[i] > 0], torch.full_like(w[i][w[i] > 0], 1.0 / n))
    assert int(counts[1, 0, 0]) < int(counts[0, 0, 0]) == w.shape[-1]  # the padded utterance attends to fewer
    valid = [int(counts[0, 0, 0])]
    model.eval()
    model(x, x_lens)
    assert not torch.allclose(seen["w"][0, 0, 0, :valid[0]], torch.full((valid[0],), 1.0 / valid[0]))
