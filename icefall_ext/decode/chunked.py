"""Crop-and-stitch inference for inputs longer than a model handles well.

One implementation serves both the slimIPL cropping warm-up (pseudo-labels of
long unlabelled audio computed on ~10 s crops) and long-audio decoding.

The input is cut into overlapping windows; every window is run through the
model; of each window's output only a *kept* region is used, and the kept
regions tile the utterance. Boundaries between kept regions sit in the middle
of the overlaps, so every kept output frame saw at least half an overlap of
real context on both sides.

Alignment rule (how the ±1 frame of subsampling is resolved): windows are
planned on the grid of ``subsampling_factor`` input frames, so a window that
starts at input frame ``s * sf`` yields output frame ``j`` of the whole
utterance as its local frame ``j - s``. Output frame ``j`` is taken from the
window whose kept input region contains input frame ``j * sf``. The total
output length is that of the last window plus its offset, ``s_last +
out_len_last``. For every subsampling whose length formula commutes with a
shift of ``sf`` input frames (strided conv stacks with total stride ``sf``,
``ceil(T / sf)``, ``((T - 7) // 2 + 1) // 2``, ...) this equals the length the
model gives for the whole input.
"""

import logging
from typing import Callable, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

ForwardFn = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def plan_chunks(num_frames: int, chunk: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Plan overlapping windows over ``[0, num_frames)``.

    Returns ``(start, end, keep_start, keep_end)`` per window, all in absolute
    frame indices. Windows have length ``chunk`` (only a single window for a
    short input is shorter) and consecutive windows overlap by at least
    ``overlap`` frames (the last window is moved back so that it ends at
    ``num_frames`` with full length, which can enlarge its overlap). The kept
    regions tile ``[0, num_frames)`` without gaps or overlaps; the boundary
    between two windows is the middle (rounded down) of their overlap.
    """
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap must satisfy 0 <= overlap < chunk, got overlap={overlap}, chunk={chunk}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be non-negative, got {num_frames}")
    if num_frames <= chunk:
        return [(0, num_frames, 0, num_frames)]

    stride = chunk - overlap
    starts = list(range(0, num_frames - chunk, stride)) + [num_frames - chunk]
    windows = [(s, s + chunk) for s in starts]
    boundaries = [0]
    for (_, prev_end), (next_start, _) in zip(windows, windows[1:]):
        boundaries.append((next_start + prev_end) // 2)
    boundaries.append(num_frames)
    return [(s, e, boundaries[i], boundaries[i + 1]) for i, (s, e) in enumerate(windows)]


def chunked_log_probs(
    forward_fn: ForwardFn,
    feats: torch.Tensor,
    feat_lens: Optional[torch.Tensor],
    chunk_frames: int,
    overlap_frames: int,
    subsampling_factor: int = 4,
    max_crops_per_batch: Optional[int] = None,
    per_utterance: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``forward_fn`` on overlapping crops of ``feats`` and stitch the outputs.

    Args:
      forward_fn: ``forward_fn(x (B, T, F), x_lens (B,)) -> (log_probs (B, T', V), out_lens (B,))``.
      feats: ``(T, F)`` for one utterance or ``(N, T, F)`` for a padded batch.
      feat_lens: ``(N,)`` valid lengths; ``None`` means every row is full length.
      chunk_frames: crop length in input frames (e.g. 1000 for 10 s at 100 Hz);
        a multiple of ``subsampling_factor``.
      overlap_frames: overlap between crops in input frames; a multiple of
        ``subsampling_factor``; must exceed the model's receptive field for the
        result to equal whole-utterance inference.
      subsampling_factor: input frames per output frame.
      max_crops_per_batch: bound on crops per ``forward_fn`` call (all at once if ``None``).
      per_utterance: optional ``(N,)`` values (e.g. language ids) passed as a third argument to
        ``forward_fn``, one row per crop: ``forward_fn(x, x_lens, per_utterance[crop utterances])``.

    Returns:
      ``(log_probs (N, T'_max, V), lens (N,) int64)``; padding is zero. See the
      module docstring for the alignment and length rule.
    """
    sf = subsampling_factor
    if sf <= 0 or chunk_frames % sf or overlap_frames % sf:
        raise ValueError(
            f"chunk_frames ({chunk_frames}) and overlap_frames ({overlap_frames}) must be "
            f"multiples of subsampling_factor ({sf})"
        )
    if feats.dim() == 2:
        feats = feats.unsqueeze(0)
    if feats.dim() != 3:
        raise ValueError(f"feats must be (T, F) or (N, T, F), got shape {tuple(feats.shape)}")
    num_utts, max_len, _ = feats.shape
    if feat_lens is None:
        feat_lens = torch.full((num_utts,), max_len, dtype=torch.int64)
    lens = [int(n) for n in feat_lens.tolist()]

    # (utterance, input start, input end, first kept output frame, end of kept output frames or None for last)
    crops: List[Tuple[int, int, int, int, Optional[int]]] = []
    for utt, num_frames in enumerate(lens):
        if num_frames == 0:
            continue
        num_units = -(-num_frames // sf)
        plan = plan_chunks(num_units, chunk_frames // sf, overlap_frames // sf)
        for i, (start, end, keep_start, keep_end) in enumerate(plan):
            is_last = i == len(plan) - 1
            crops.append((utt, start * sf, min(end * sf, num_frames), keep_start, None if is_last else keep_end))
    logger.debug("chunked_log_probs: %d utterances -> %d crops", num_utts, len(crops))

    crop_outputs = _run_crops(forward_fn, feats, crops, max_crops_per_batch, per_utterance)

    pieces: List[List[torch.Tensor]] = [[] for _ in range(num_utts)]
    out_lens = [0] * num_utts
    for (utt, in_start, _, keep_start, keep_end), (log_probs, out_len) in zip(crops, crop_outputs):
        offset = in_start // sf
        if keep_end is None:
            keep_end = offset + out_len
        elif keep_end > offset + out_len:
            raise ValueError(
                f"crop at input frame {in_start} gave {out_len} output frames, fewer than the "
                f"{keep_end - offset} to keep; increase overlap_frames"
            )
        if keep_end > keep_start:
            pieces[utt].append(log_probs[keep_start - offset : keep_end - offset])
            out_lens[utt] = keep_end

    vocab = crop_outputs[0][0].shape[-1] if crop_outputs else 0
    like = crop_outputs[0][0] if crop_outputs else feats
    result = like.new_zeros((num_utts, max(out_lens, default=0), vocab))
    for utt, utt_pieces in enumerate(pieces):
        if utt_pieces:
            result[utt, : out_lens[utt]] = torch.cat(utt_pieces, dim=0)
    return result, torch.tensor(out_lens, dtype=torch.int64, device=result.device)


def _run_crops(
    forward_fn: ForwardFn,
    feats: torch.Tensor,
    crops: List[Tuple[int, int, int, int, Optional[int]]],
    max_crops_per_batch: Optional[int],
    per_utterance: Optional[torch.Tensor] = None,
) -> List[Tuple[torch.Tensor, int]]:
    """Batch the crops through ``forward_fn``; return each crop's (log_probs (T', V), out_len)."""
    step = max_crops_per_batch or max(len(crops), 1)
    outputs: List[Tuple[torch.Tensor, int]] = []
    for first in range(0, len(crops), step):
        group = crops[first : first + step]
        crop_lens = [end - start for _, start, end, _, _ in group]
        x = feats.new_zeros((len(group), max(crop_lens), feats.shape[-1]))
        for row, (utt, start, end, _, _) in enumerate(group):
            x[row, : end - start] = feats[utt, start:end]
        x_lens = torch.tensor(crop_lens, dtype=torch.int64, device=feats.device)
        if per_utterance is None:
            log_probs, group_out_lens = forward_fn(x, x_lens)
        else:
            rows = torch.tensor([utt for utt, *_ in group], dtype=torch.int64, device=per_utterance.device)
            log_probs, group_out_lens = forward_fn(x, x_lens, per_utterance[rows])
        for row, out_len in enumerate(group_out_lens.tolist()):
            outputs.append((log_probs[row], int(out_len)))
    return outputs
