"""Conformer encoder: shapes and lengths, padding invariance, causality, streaming equals the
chunked whole-utterance forward, and relative-position attention against a brute force."""

import math

import pytest
import torch

from icefall_ext.models.conformer import (
    Conformer,
    RelPositionMultiheadAttention,
    chunk_attention_mask,
    local_attention_mask,
)
from icefall_ext.models.subsampling import Conv2dSubsampling

FEATURES = 20



def tiny_conformer(**kwargs) -> Conformer:
    torch.manual_seed(0)
    defaults = dict(
        feature_dim=FEATURES, d_model=32, num_layers=2, num_heads=4, feedforward_dim=48,
        cnn_module_kernel=5, subsampling_channels=8, dropout=0.0,
    )
    return Conformer(**{**defaults, **kwargs}).eval()


def test_output_lengths_match_receptive_field_count():
    sub = Conv2dSubsampling(FEATURES, 16, channels=4).eval()
    for num_frames in range(7, 60):
        # output frame j reads input frames 4j .. 4j+6
        expected = sum(1 for j in range(num_frames) if 4 * j + 6 <= num_frames - 1)
        out, lens = sub(torch.randn(1, num_frames, FEATURES), torch.tensor([num_frames]))
        assert out.shape == (1, expected, 16)
        assert lens.tolist() == [expected] == [((num_frames - 1) // 2 - 1) // 2]


def test_forward_shapes_and_attributes():
    model = tiny_conformer()
    assert (model.subsampling_factor, model.output_dim, model.feature_dim) == (4, 32, FEATURES)
    x_lens = torch.tensor([50, 37, 12])
    out, out_lens = model(torch.randn(3, 50, FEATURES), x_lens)
    assert out.shape == (3, 11, 32)
    assert out_lens.tolist() == [11, 8, 2]
    assert out_lens.dtype == torch.int64


@pytest.mark.parametrize("streaming_kwargs", [{}, {"causal": True, "chunk_size": 3, "left_context": 4}])
def test_padding_invariance(streaming_kwargs):
    model = tiny_conformer(**streaming_kwargs)
    lengths = [41, 29, 16]
    x = torch.randn(len(lengths), max(lengths), FEATURES)
    batch_out, batch_lens = model(x, torch.tensor(lengths))
    for i, length in enumerate(lengths):
        alone, alone_lens = model(x[i : i + 1, :length], torch.tensor([length]))
        assert batch_lens[i] == alone_lens[0] == alone.size(1)
        torch.testing.assert_close(batch_out[i, : alone.size(1)], alone[0], atol=1e-5, rtol=0)


def test_chunk_mask_against_definition():
    for chunk, left in [(3, 4), (2, -1), (4, 0)]:
        mask = chunk_attention_mask(11, chunk, left, torch.device("cpu"))
        for i in range(11):
            start = (i // chunk) * chunk
            for j in range(11):
                allowed = j < start + chunk and (left < 0 or j >= start - left)
                assert bool(mask[i, j]) == (not allowed)


def test_causal_chunked_outputs_ignore_future_chunks():
    chunk = 3
    model = tiny_conformer(causal=True, chunk_size=chunk, left_context=6)
    x = torch.randn(1, 4 * 4 * chunk + 3, FEATURES)
    lens = torch.tensor([x.size(1)])
    out, _ = model(x, lens)
    boundary = 2 * chunk  # first output frame of chunk 2 reads inputs from 4 * boundary on
    perturbed = x.clone()
    perturbed[:, 4 * boundary + 3 :] += torch.randn_like(perturbed[:, 4 * boundary + 3 :])
    out2, _ = model(perturbed, lens)
    torch.testing.assert_close(out2[:, :boundary], out[:, :boundary], atol=1e-6, rtol=0)
    assert (out2[:, boundary:] - out[:, boundary:]).abs().max() > 1e-3


def test_non_causal_model_sees_the_future():
    model = tiny_conformer()
    x = torch.randn(1, 51, FEATURES)
    out, _ = model(x, torch.tensor([51]))
    perturbed = x.clone()
    perturbed[:, 40:] += 1.0
    out2, _ = model(perturbed, torch.tensor([51]))
    assert (out2[:, 0] - out[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("chunk,left_context", [(4, 8), (2, 3), (3, 0), (1, 5)])
def test_streaming_equals_chunked_full_forward(chunk, left_context):
    model = tiny_conformer(causal=True, chunk_size=chunk, left_context=left_context)
    window, shift = model.streaming_window(chunk)
    assert (window, shift) == (4 * chunk + 3, 4 * chunk)
    num_chunks = 5
    lengths = [shift * num_chunks + 3, shift * (num_chunks - 1) + 3 + 6]  # 2nd ends mid-chunk
    x = torch.randn(2, lengths[0], FEATURES)
    full, full_lens = model(x, torch.tensor(lengths))

    states = model.init_states(batch_size=2)
    assert [s.shape for s in states] == [
        (2, left_context, 2, 32), (2, model.cnn_module_kernel - 1, 2, 32), (2,),
    ]
    outs, out_lens = [], torch.zeros(2, dtype=torch.int64)
    for k in range(num_chunks):
        begin = k * shift
        piece = x[:, begin : begin + window]
        piece_lens = (torch.tensor(lengths) - begin).clamp(min=0, max=window)
        out, lens, states = model.streaming_forward(piece, piece_lens, states)
        assert out.shape == (2, chunk, 32)
        outs.append(out)
        out_lens += lens
    streamed = torch.cat(outs, dim=1)
    assert out_lens.tolist() == full_lens.tolist()
    for i in range(2):
        n = int(full_lens[i])
        torch.testing.assert_close(streamed[i, :n], full[i, :n], atol=1e-5, rtol=0)


def test_streaming_requires_causal_model():
    with pytest.raises(RuntimeError):
        tiny_conformer().init_states()
    with pytest.raises(ValueError):
        Conformer(feature_dim=FEATURES, d_model=32, num_layers=1, dynamic_chunk_training=True)


def test_dynamic_chunk_training_uses_a_chunk_mask():
    # full_context_prob=0 and max_chunk_size=1 force chunk size 1 in training mode
    model = tiny_conformer(causal=True, dynamic_chunk_training=True, max_chunk_size=1, full_context_prob=0.0,
                           left_context=2)
    x, lens = torch.randn(2, 40, FEATURES), torch.tensor([40, 33])
    trained_view, _ = model.train()(x, lens)
    model.eval()
    model.chunk_size = 1
    chunked, _ = model(x, lens)
    model.chunk_size = -1
    full_context, _ = model(x, lens)
    torch.testing.assert_close(trained_view, chunked, atol=1e-6, rtol=0)
    assert (trained_view - full_context).abs().max() > 1e-3


def _sinusoid(distance: int, dim: int) -> torch.Tensor:
    values = []
    for k in range(dim // 2):
        angle = distance * 10000.0 ** (-2.0 * k / dim)
        values += [math.sin(angle), math.cos(angle)]
    return torch.tensor(values)


def brute_force_rel_attention(attn: RelPositionMultiheadAttention, query, key, blocked) -> torch.Tensor:
    """Per (head, i, j) evaluation of Transformer-XL scores; queries are the last Tq keys."""
    heads, head_dim = attn.num_heads, attn.head_dim
    num_queries, num_keys = query.size(0), key.size(0)
    offset = num_keys - num_queries
    q = attn.linear_q(query).view(num_queries, heads, head_dim)
    k = attn.linear_k(key).view(num_keys, heads, head_dim)
    v = attn.linear_v(key).view(num_keys, heads, head_dim)
    context = torch.zeros(num_queries, heads, head_dim)
    for h in range(heads):
        for i in range(num_queries):
            scores = []
            for j in range(num_keys):
                rel = attn.linear_pos(_sinusoid(offset + i - j, attn.d_model)).view(heads, head_dim)[h]
                score = (q[i, h] + attn.pos_bias_u[h]) @ k[j, h] + (q[i, h] + attn.pos_bias_v[h]) @ rel
                scores.append(score / math.sqrt(head_dim))
            scores = torch.stack(scores).masked_fill(blocked[i], float("-inf"))
            context[i, h] = torch.softmax(scores, dim=0) @ v[:, h]
    return attn.linear_out(context.reshape(num_queries, -1))


@pytest.mark.parametrize("num_queries,num_keys", [(5, 5), (3, 7), (1, 4)])
def test_rel_position_attention_against_brute_force(num_queries, num_keys):
    torch.manual_seed(1)
    attn = RelPositionMultiheadAttention(d_model=8, num_heads=2).eval()
    key = torch.randn(num_keys, 8)
    query = key[num_keys - num_queries :] if num_queries == num_keys else torch.randn(num_queries, 8)
    blocked = torch.rand(num_queries, num_keys) < 0.3
    blocked[:, -1] = False  # every query keeps at least one key
    with torch.no_grad():
        fast = attn(query.unsqueeze(0), key.unsqueeze(0), blocked.unsqueeze(0))[0]
        slow = brute_force_rel_attention(attn, query, key, blocked)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_rel_shift_is_a_gather():
    torch.manual_seed(2)
    for num_queries, num_keys in [(4, 4), (2, 6), (1, 3)]:
        scores = torch.randn(2, 3, num_queries, num_keys + num_queries - 1)
        shifted = RelPositionMultiheadAttention.rel_shift(scores, num_keys)
        for i in range(num_queries):
            for j in range(num_keys):
                torch.testing.assert_close(shifted[..., i, j], scores[..., i, num_queries - 1 - i + j])


# --- restricted attention of non-causal models: attention="chunk" | "local" (USM §2.4) ---------------------------


def _visible_keys(mode: str, num_frames: int, chunk: int = 0, left: int = 0, right: int = 0):
    """Brute-force key sets per query frame: "full", own "chunk", or "local" window."""
    if mode == "full":
        return [set(range(num_frames)) for _ in range(num_frames)]
    if mode == "chunk":
        return [{j for j in range(num_frames) if j // chunk == i // chunk} for i in range(num_frames)]
    return [{j for j in range(num_frames) if i - left <= j <= i + right} for i in range(num_frames)]


def _expected_changed(perturbed: set, visible, kernel: int, num_layers: int) -> set:
    """Output frames that can depend on ``perturbed`` input frames of ``forward_layers``: per block, attention
    spreads a change to the queries that see it (plus the residual), the depthwise conv to +-(kernel-1)/2 frames;
    FFNs and norms are per frame."""
    changed, half, num_frames = set(perturbed), (kernel - 1) // 2, len(visible)
    for _ in range(num_layers):
        changed |= {i for i in range(num_frames) if visible[i] & changed}
        changed = {i for c in changed for i in range(c - half, c + half + 1) if 0 <= i < num_frames}
    return changed


def _changed_frames(model: Conformer, x: torch.Tensor, perturbed: list, lens=None) -> set:
    lens = torch.tensor([x.size(1)] * x.size(0)) if lens is None else lens
    y = x.clone()
    y[:, perturbed] += 10.0 * torch.randn(x.size(0), len(perturbed), x.size(2))
    with torch.no_grad():
        a, _ = model.forward_layers(x, lens)
        b, _ = model.forward_layers(y, lens)
    diff = (a - b).abs().amax(dim=(0, 2))
    # blocked keys get a weight of exactly 0, so independent frames are bit-identical
    assert bool(((diff == 0) | (diff > 1e-6)).all()), diff  # no ambiguous frame
    return {i for i in range(x.size(1)) if diff[i] > 0}


def test_local_mask_against_brute_force():
    for num_frames, left, right in [(9, 2, 1), (7, 0, 0), (6, 0, 3), (5, 10, 10), (1, 2, 2)]:
        mask = local_attention_mask(num_frames, left, right, torch.device("cpu"))
        assert mask.shape == (num_frames, num_frames) and mask.dtype == torch.bool
        for i in range(num_frames):
            for j in range(num_frames):
                assert bool(mask[i, j]) == (not (i - left <= j <= i + right))


def test_chunk_mask_without_left_context_is_own_chunk_only():
    for num_frames, chunk in [(11, 4), (8, 8), (5, 1), (7, 10)]:
        mask = chunk_attention_mask(num_frames, chunk, 0, torch.device("cpu"))
        for i in range(num_frames):
            for j in range(num_frames):
                assert bool(mask[i, j]) == (i // chunk != j // chunk)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_chunk_attention_blocks_attention_across_chunks_but_not_convolution(num_layers):
    chunk, kernel, num_frames = 8, 5, 40  # 5 chunks
    model = tiny_conformer(num_layers=num_layers, cnn_module_kernel=kernel, attention="chunk",
                           attention_chunk_frames=chunk)
    visible = _visible_keys("chunk", num_frames, chunk=chunk)
    torch.manual_seed(3)
    x = torch.randn(2, num_frames, 32)
    for perturbed in ([20], [16, 17], [23], [12]):  # inside chunk 2 (frames 16..23) and chunk 1
        changed = _changed_frames(model, x, perturbed)
        assert changed == _expected_changed(set(perturbed), visible, kernel, num_layers), perturbed
    changed = _changed_frames(model, x, [20])
    if num_layers == 1:  # the whole chunk (attention) and 2 frames either side of it (convolution): 14..25
        assert changed == set(range(14, 26))
    else:
        assert min(changed) > 0 and max(changed) < num_frames - 1  # far frames untouched even with 2 layers
    full = tiny_conformer(num_layers=num_layers, cnn_module_kernel=kernel)
    assert _changed_frames(full, x, [20]) == set(range(num_frames))


def test_chunk_attention_with_padding_matches_unpadded():
    model = tiny_conformer(attention="chunk", attention_chunk_frames=3)
    lengths = [41, 29, 16]
    x = torch.randn(len(lengths), max(lengths), FEATURES)
    batch_out, batch_lens = model(x, torch.tensor(lengths))
    assert torch.isfinite(batch_out).all()
    for i, length in enumerate(lengths):
        alone, _ = model(x[i : i + 1, :length], torch.tensor([length]))
        torch.testing.assert_close(batch_out[i, : alone.size(1)], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel,left,right", [(1, 3, 2), (5, 4, 0), (3, 0, 1)])
def test_local_attention_window(kernel, left, right):
    num_frames = 20
    model = tiny_conformer(num_layers=1, cnn_module_kernel=kernel, attention="local", attention_left=left,
                           attention_right=right)
    visible = _visible_keys("local", num_frames, left=left, right=right)
    torch.manual_seed(4)
    x = torch.randn(1, num_frames, 32)
    for p in (0, 7, 19):
        assert _changed_frames(model, x, [p]) == _expected_changed({p}, visible, kernel, 1)
    if kernel == 1:  # frame i depends exactly on [i - left, i + right]
        i = 10
        outside = [j for j in range(num_frames) if not i - left <= j <= i + right]
        assert i not in _changed_frames(model, x, outside)
        for j in range(i - left, i + right + 1):
            assert i in _changed_frames(model, x, [j])


def test_restricted_attention_forward_layers_takes_text_like_input():
    """forward_layers (the text-input entry of speech translation) works with any length, shorter than a chunk."""
    model = tiny_conformer(attention="chunk", attention_chunk_frames=200)
    full = tiny_conformer()
    x, lens = torch.randn(2, 7, 32), torch.tensor([7, 4])
    with torch.no_grad():
        torch.testing.assert_close(model.forward_layers(x, lens)[0], full.forward_layers(x, lens)[0])
    local = tiny_conformer(attention="local", attention_left=1, attention_right=1)
    out, out_lens = local.forward_layers(x, lens)
    assert out.shape == (2, 7, 32) and out_lens.tolist() == [7, 4] and torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs,message", [
    (dict(attention="sliding"), "choose from full, chunk, local"),
    (dict(attention="chunk", causal=True), "non-causal"),
    (dict(attention="local", causal=True, chunk_size=4), "non-causal"),
    (dict(attention="chunk", attention_chunk_frames=0), "attention_chunk_frames"),
    (dict(attention="local", attention_left=-1), "attention_left"),
])
def test_restricted_attention_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conformer(feature_dim=FEATURES, d_model=32, num_layers=1, num_heads=4, **kwargs)


def test_restricted_attention_survives_the_model_config_round_trip():
    import json

    from icefall_ext.models.presets import build_encoder, build_model, model_config_from_preset

    config = model_config_from_preset("conformer-tiny", vocab_size=12,
                                      encoder_kwargs={"attention": "chunk", "attention_chunk_frames": 3})
    torch.manual_seed(0)
    model = build_model(config).eval()
    rebuilt = build_model(json.loads(json.dumps(config))).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert (rebuilt.encoder.attention, rebuilt.encoder.attention_chunk_frames) == ("chunk", 3)
    x, lens = torch.randn(2, 80, 80), torch.tensor([80, 61])
    with torch.no_grad():
        a, a_lens = model.encoder(x, lens)
        b, b_lens = rebuilt.encoder(x, lens)
        unrestricted = build_model(model_config_from_preset("conformer-tiny", vocab_size=12)).eval()
        unrestricted.load_state_dict(model.state_dict())
        c, _ = unrestricted.encoder(x, lens)
    assert torch.equal(a, b) and torch.equal(a_lens, b_lens)
    assert (a - c).abs().max() > 1e-3  # the setting took effect
    with pytest.raises(ValueError, match="conformer only"):
        build_encoder(model_config_from_preset("zipformer-tiny", vocab_size=12,
                                               encoder_kwargs={"attention": "chunk"}))


def test_train_attention_flags_become_encoder_kwargs():
    from icefall_ext.bin.train import apply_attention, attention_encoder_kwargs, get_parser
    from icefall_ext.models.presets import model_config_from_preset

    base = ["--exp-dir", "e", "--train-cuts", "t.jsonl.gz"]
    parse = lambda *extra: attention_encoder_kwargs(get_parser().parse_args(base + list(extra)))  # noqa: E731
    assert parse() == {}
    assert parse("--attention", "chunk") == {"attention": "chunk", "attention_chunk_frames": 200}
    assert parse("--attention", "chunk", "--attention-chunk-seconds", "2.0") == {
        "attention": "chunk", "attention_chunk_frames": 50}
    assert parse("--attention", "local") == {"attention": "local", "attention_left": 128, "attention_right": 128}
    assert parse("--attention", "local", "--attention-left-frames", "64", "--attention-right-frames", "0") == {
        "attention": "local", "attention_left": 64, "attention_right": 0}
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        parse("--attention", "chunk", "--attention-chunk-seconds", "0.01")

    config = model_config_from_preset("conformer-tiny", vocab_size=12)
    apply_attention(config, parse("--attention", "chunk", "--attention-chunk-seconds", "4"))
    assert config["encoder_kwargs"]["attention_chunk_frames"] == 100 and config["encoder_kwargs"]["d_model"] == 64
    zipformer = model_config_from_preset("zipformer-tiny", vocab_size=12)
    with pytest.raises(ValueError, match="needs a conformer encoder"):
        apply_attention(zipformer, parse("--attention", "local"))
    apply_attention(zipformer, parse("--attention", "full"))  # nothing to do
    assert "attention" not in zipformer["encoder_kwargs"]


def test_chunk_attention_ctc_onnx_export_matches_pytorch(tmp_path):
    """The non-streaming CTC export traces the chunk mask from the dynamic frame count: onnxruntime equals PyTorch
    at lengths other than the traced example's (100 feature frames -> 24 encoder frames)."""
    import onnxruntime as ort

    from icefall_ext.export.onnx_export import export_ctc
    from icefall_ext.models.presets import build_model, model_config_from_preset

    config = model_config_from_preset("conformer-tiny", vocab_size=12, feature_dim=FEATURES,
                                      encoder_kwargs={"attention": "chunk", "attention_chunk_frames": 5})
    torch.manual_seed(0)
    model = build_model(config).eval()
    (path,) = export_ctc(model, config, tmp_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for lengths in ([187, 130], [43], [100, 100, 61]):
        x = torch.randn(len(lengths), max(lengths), FEATURES)
        x_lens = torch.tensor(lengths, dtype=torch.int64)
        with torch.no_grad():
            enc, enc_lens = model.encoder(x, x_lens)
            expected = model.ctc(enc)
        log_probs, log_probs_len = session.run(None, {"x": x.numpy(), "x_lens": x_lens.numpy()})
        assert log_probs_len.tolist() == enc_lens.tolist()
        for i, n in enumerate(enc_lens.tolist()):
            np_ref = expected[i, :n].numpy()
            assert abs(log_probs[i, :n] - np_ref).max() < 1e-4, lengths


def test_decode_attention_override_equals_a_model_built_with_that_attention():
    """``decode --attention chunk`` on a full-attention model = the same weights in a chunk-wise model."""
    from icefall_ext.bin.decode import get_parser, restrict_attention
    from icefall_ext.models.presets import build_model, model_config_from_preset

    torch.manual_seed(0)
    full = build_model(model_config_from_preset("conformer-tiny", vocab_size=12)).eval()
    chunked = build_model(model_config_from_preset(
        "conformer-tiny", vocab_size=12, encoder_kwargs={"attention": "chunk", "attention_chunk_frames": 5})).eval()
    chunked.load_state_dict(full.state_dict())
    args = get_parser().parse_args(["--exp-dir", "e", "--lang-dir", "l", "--cuts", "c",
                                    "--attention", "chunk", "--attention-chunk-seconds", "0.2"])
    x, lens = torch.randn(2, 90, 80), torch.tensor([90, 70])
    with torch.no_grad():
        before, _ = full.encoder(x, lens)
        restrict_attention(full, args)
        after, _ = full.encoder(x, lens)
        reference, _ = chunked.encoder(x, lens)
    assert torch.equal(after, reference) and (after - before).abs().max() > 1e-3
    causal = build_model(model_config_from_preset("conformer-tiny", vocab_size=12,
                                                  encoder_kwargs={"causal": True, "chunk_size": 4}))
    with pytest.raises(ValueError, match="non-causal"):
        restrict_attention(causal, args)
