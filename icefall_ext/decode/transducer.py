"""Transducer decoding: batched greedy search and modified beam search (at most one symbol per frame).

The model is anything with ``.decoder`` (attributes ``blank_id``, ``context_size``; ``decoder(y, need_pad=False)``
maps (N, context_size) int64 to (N, 1, decoder_dim)) and ``.joiner`` (``encoder_proj``, ``decoder_proj`` and
``joiner(enc, dec, project_input=False)`` on already projected inputs). The encoder output is projected once,
decoder outputs as contexts change. Decoding starts from a context of blanks, as sherpa-onnx does (and as
icefall's ``need_pad`` training does).
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high if low == float("-inf") else high + math.log1p(math.exp(low - high))


def _decoder_out(model: torch.nn.Module, contexts: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Projected decoder output (len(contexts), joiner_dim) for the given token contexts."""
    y = torch.tensor(contexts, dtype=torch.int64, device=device)
    return model.joiner.decoder_proj(model.decoder(y, need_pad=False)).squeeze(1)


@torch.no_grad()
def greedy_search_batch(
    model: torch.nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    max_sym_per_frame: int = 1,
) -> List[List[int]]:
    """Greedy transducer search over a batch (N, T, C) of different lengths; returns token ids per utterance.

    At frame t all utterances longer than t advance together; an utterance stays on the frame while it emits
    non-blank symbols, at most ``max_sym_per_frame`` of them.
    """
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    blank_id, context_size = model.decoder.blank_id, model.decoder.context_size
    device = encoder_out.device
    enc_proj = model.joiner.encoder_proj(encoder_out)
    lens = encoder_out_lens.tolist()
    hyps = [[blank_id] * context_size for _ in lens]
    dec_proj = _decoder_out(model, hyps, device)
    for t in range(max(lens, default=0)):
        pending = [n for n, length in enumerate(lens) if length > t]
        for _ in range(max_sym_per_frame):
            if not pending:
                break
            rows = torch.tensor(pending, device=device)
            logits = model.joiner(enc_proj[rows, t], dec_proj[rows], project_input=False)
            best = logits.argmax(dim=-1).tolist()
            pending = [n for n, token in zip(pending, best) if token != blank_id]
            if not pending:
                break
            for n, token in zip(rows.tolist(), best):
                if token != blank_id:
                    hyps[n].append(token)
            dec_proj[torch.tensor(pending, device=device)] = _decoder_out(
                model, [hyps[n][-context_size:] for n in pending], device
            )
    return [hyp[context_size:] for hyp in hyps]


@torch.no_grad()
def modified_beam_search_nbest(
    model: torch.nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    beam: int = 4,
) -> List[List[Tuple[List[int], float]]]:
    """Modified beam search (one symbol at most per frame) over a batch; per utterance the final beam as
    ``(tokens, log-prob)`` pairs, best first.

    At each frame every hypothesis of every active utterance is extended by blank or one token; of all
    extensions of an utterance the ``beam`` best are kept, and extensions with the same token sequence are
    merged by adding their probabilities. A hypothesis's log-prob is that of all alignments kept for it.
    """
    blank_id, context_size = model.decoder.blank_id, model.decoder.context_size
    device = encoder_out.device
    enc_proj = model.joiner.encoder_proj(encoder_out)
    lens = encoder_out_lens.tolist()
    start = tuple([blank_id] * context_size)
    beams: List[Dict[Tuple[int, ...], float]] = [{start: 0.0} for _ in lens]
    for t in range(max(lens, default=0)):
        active = [n for n, length in enumerate(lens) if length > t]
        flat = [(n, hyp, logp) for n in active for hyp, logp in beams[n].items()]
        rows = torch.tensor([n for n, _, _ in flat], device=device)
        dec_proj = _decoder_out(model, [hyp[-context_size:] for _, hyp, _ in flat], device)
        logits = model.joiner(enc_proj[rows, t], dec_proj, project_input=False)
        hyp_logp = torch.tensor([logp for _, _, logp in flat], device=device, dtype=torch.float64)
        scores = logits.float().log_softmax(dim=-1).double() + hyp_logp.unsqueeze(1)
        vocab_size = scores.size(1)
        offset = 0
        for n in active:
            num_hyps = len(beams[n])
            candidates = scores[offset : offset + num_hyps].reshape(-1)
            top_scores, top_ids = candidates.topk(min(beam, candidates.numel()))
            merged: Dict[Tuple[int, ...], float] = {}
            for score, flat_id in zip(top_scores.tolist(), top_ids.tolist()):
                _, hyp, _ = flat[offset + flat_id // vocab_size]
                token = flat_id % vocab_size
                new_hyp = hyp if token == blank_id else hyp + (token,)
                merged[new_hyp] = _logaddexp(merged[new_hyp], score) if new_hyp in merged else score
            beams[n] = merged
            offset += num_hyps
    return [
        [(list(hyp[context_size:]), logp) for hyp, logp in sorted(b.items(), key=lambda kv: kv[1], reverse=True)]
        for b in beams
    ]


def modified_beam_search(
    model: torch.nn.Module,
    encoder_out: torch.Tensor,
    encoder_out_lens: torch.Tensor,
    beam: int = 4,
) -> List[List[int]]:
    """Best token sequence per utterance from ``modified_beam_search_nbest``."""
    return [nbest[0][0] for nbest in modified_beam_search_nbest(model, encoder_out, encoder_out_lens, beam)]
