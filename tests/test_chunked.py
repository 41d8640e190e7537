"""Crop-and-stitch: plan tiling, and equality with whole-utterance inference for local models."""

import pytest
import torch

from icefall_ext.decode.chunked import chunked_log_probs, plan_chunks


@pytest.mark.parametrize("chunk,overlap", [(1, 0), (5, 0), (5, 2), (8, 7), (10, 4), (250, 50)])
def test_plan_tiles_input_exactly(chunk, overlap):
    for num_frames in list(range(0, 60)) + [249, 250, 251, 999, 1000, 1001, 2501]:
        plan = plan_chunks(num_frames, chunk, overlap)
        covered = []
        for start, end, keep_start, keep_end in plan:
            assert 0 <= start <= keep_start < keep_end <= end <= num_frames or num_frames == 0
            assert end - start == min(chunk, num_frames)
            covered.extend(range(keep_start, keep_end))
        assert covered == list(range(num_frames))
        for (s0, e0, _, k0), (s1, _, k1, _) in zip(plan, plan[1:]):
            assert e0 - s1 >= overlap  # consecutive windows overlap by at least `overlap`
            assert k0 == k1 == (s1 + e0) // 2  # boundary in the middle of the overlap
            assert s1 > s0


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError):
        plan_chunks(10, 0, 0)
    with pytest.raises(ValueError):
        plan_chunks(10, 4, 4)
    with pytest.raises(ValueError):
        plan_chunks(-1, 4, 1)


def _pointwise_subsample(x: torch.Tensor, x_lens: torch.Tensor):
    """Frame-local model: every 4th frame (ceil(T/4) outputs), a fixed nonlinear map, log-softmax."""
    weight = torch.linspace(-1.0, 1.0, x.shape[-1] * 7, dtype=x.dtype).reshape(x.shape[-1], 7)
    out = torch.log_softmax(torch.tanh(x[:, ::4]) @ weight, dim=-1)
    return out, (x_lens + 3) // 4


class _ConvModel(torch.nn.Module):
    """Limited receptive field: 'same' conv of width 9, then two stride-2 convs of width 3 (no padding)."""

    def __init__(self, num_feats: int, vocab: int):
        super().__init__()
        torch.manual_seed(0)
        self.same = torch.nn.Conv1d(num_feats, 16, kernel_size=9, padding=4)
        self.sub1 = torch.nn.Conv1d(16, 16, kernel_size=3, stride=2)
        self.sub2 = torch.nn.Conv1d(16, vocab, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < x_lens[:, None]
        h = (x * mask[..., None]).transpose(1, 2)
        h = self.sub2(torch.relu(self.sub1(torch.relu(self.same(h)))))
        out_lens = ((x_lens - 1) // 2 - 1) // 2
        return torch.log_softmax(h.transpose(1, 2), dim=-1), out_lens


def _whole(forward_fn, feats, lens):
    outs = []
    for row, n in enumerate(lens.tolist()):
        out, out_len = forward_fn(feats[row : row + 1, :n], torch.tensor([n]))
        outs.append(out[0, : int(out_len[0])])
    return outs


def _assert_matches_whole(forward_fn, feats, lens, chunk, overlap, max_crops=None):
    stitched, stitched_lens = chunked_log_probs(
        forward_fn, feats, lens, chunk, overlap, subsampling_factor=4, max_crops_per_batch=max_crops
    )
    for row, ref in enumerate(_whole(forward_fn, feats, lens)):
        assert int(stitched_lens[row]) == ref.shape[0]
        torch.testing.assert_close(stitched[row, : ref.shape[0]], ref, rtol=0, atol=1e-12)
        assert torch.all(stitched[row, ref.shape[0] :] == 0)


def test_frame_local_model_equals_whole_utterance():
    gen = torch.Generator().manual_seed(1)
    lens = torch.tensor([403, 37, 4, 1, 160, 161, 299])
    feats = torch.randn(len(lens), int(lens.max()), 5, generator=gen, dtype=torch.float64)
    _assert_matches_whole(_pointwise_subsample, feats, lens, chunk=40, overlap=8)
    _assert_matches_whole(_pointwise_subsample, feats, lens, chunk=40, overlap=0)


@pytest.mark.parametrize("chunk,overlap,max_crops", [(64, 32, None), (100, 40, 3), (200, 24, 1)])
def test_limited_receptive_field_equals_whole_utterance(chunk, overlap, max_crops):
    model = _ConvModel(num_feats=6, vocab=5).double()
    gen = torch.Generator().manual_seed(2)
    lens = torch.tensor([517, 64, 65, 130, 7, 301, 1000])
    feats = torch.randn(len(lens), int(lens.max()), 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        _assert_matches_whole(model, feats, lens, chunk, overlap, max_crops)


def test_too_small_overlap_is_detected_or_visible():
    """Overlap below the receptive field: missing frames raise; otherwise the edge effects show."""
    model = _ConvModel(num_feats=3, vocab=4).double()
    feats = torch.randn(1, 400, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lens = torch.tensor([400])
    with torch.no_grad():
        ref = _whole(model, feats, lens)[0]
        with pytest.raises(ValueError, match="increase overlap_frames"):
            chunked_log_probs(model, feats, lens, 64, 0)  # each crop loses its last output frame
        out, out_lens = chunked_log_probs(model, feats, lens, 64, 8)
    assert int(out_lens[0]) == ref.shape[0]
    assert not torch.allclose(out[0, : ref.shape[0]], ref)


def test_single_utterance_2d_input_and_lengths():
    feats = torch.randn(1234, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out, out_lens = chunked_log_probs(_pointwise_subsample, feats, None, 1000, 200)
    ref, ref_lens = _pointwise_subsample(feats[None], torch.tensor([1234]))
    assert out.shape == ref.shape and out_lens.tolist() == ref_lens.tolist() == [309]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_rejects_chunk_not_multiple_of_subsampling():
    with pytest.raises(ValueError):
        chunked_log_probs(_pointwise_subsample, torch.zeros(10, 2), None, 10, 4)
