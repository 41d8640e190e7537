"""Conformer encoder: shapes and lengths, padding invariance, causality, streaming equals the
chunked whole-utterance forward, and relative-position attention against a brute force."""

import math

import pytest
import torch

from icefall_ext.models.conformer import (
    Conformer,
    RelPositionMultiheadAttention,
    chunk_attention_mask,
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
