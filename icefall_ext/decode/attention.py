"""Greedy and beam search over an :class:`~icefall_ext.models.attention_decoder.AttentionDecoder`, batched.

Each step re-runs the decoder over the prefixes (no key/value cache: the targets here are sentences of tens of
tokens). Beam search keeps ``beam`` live prefixes per utterance, moves a prefix to the finished list when it emits
``<eos>`` among the ``beam`` best candidates of a step, stops an utterance once ``beam`` prefixes have finished or
its length cap is reached, unless a live prefix could still beat the best of them (only ``<eos>``
is allowed at the cap), and returns the finished hypothesis with the best length-normalised score
``log P(y, eos) / (|y| + 1) ** length_penalty`` (``length_penalty`` 0: raw log-probability). The returned score
is the raw log-probability, which a teacher-forced pass over the hypothesis reproduces.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor


# Output tokens allowed per encoder frame. A translation has far fewer tokens than the encoder has frames (40 ms each):
# mini CoVoST's English BPE-500 targets are 0.15-0.3 tokens per frame. The decoder recomputes every prefix at each
# step, so the cap bounds the cost of hypotheses that never end.
MAX_LEN_RATIO = 0.5
# ... and per source character when the text path encodes characters (target tokens are at most about one per
# source character, fewer with BPE)
TEXT_MAX_LEN_RATIO = 1.5


def length_caps(memory_lens: Tensor, max_len_ratio: float, min_len: int = 5) -> List[int]:
    """Most output tokens (before ``<eos>``) per utterance: ``max(min_len, ceil(ratio * encoder frames))``."""
    return [max(min_len, math.ceil(max_len_ratio * int(n))) for n in memory_lens.tolist()]


@torch.no_grad()
def greedy_search(decoder, memory: Tensor, memory_lens: Tensor,
                  max_len_ratio: float = MAX_LEN_RATIO) -> List[Tuple[List[int], float]]:
    """The most probable token at each step, for each utterance: (tokens, log-probability incl. ``<eos>``)."""
    n, eos = memory.shape[0], decoder.sos_eos
    caps = length_caps(memory_lens, max_len_ratio)
    ys = torch.full((n, 1), eos, dtype=torch.int64, device=memory.device)
    scores = torch.zeros(n, device=memory.device)
    done = torch.zeros(n, dtype=torch.bool, device=memory.device)
    out: List[List[int]] = [[] for _ in range(n)]
    for step in range(max(caps) + 1):
        rows = (~done).nonzero()[:, 0]  # finished utterances leave the decoder's batch
        lens = torch.full((len(rows),), ys.shape[1], dtype=torch.int64, device=memory.device)
        found = decoder(memory[rows], memory_lens[rows], ys[rows], lens)[:, -1].float().log_softmax(-1)
        logp = torch.zeros(n, found.shape[-1], device=memory.device)
        logp[rows] = found
        at_cap = torch.tensor([step >= c for c in caps], device=memory.device)
        best = torch.where(at_cap, torch.full_like(done, eos, dtype=torch.int64), logp.argmax(-1))
        scores += torch.where(done, torch.zeros_like(scores), logp.gather(-1, best[:, None])[:, 0])
        for i in range(n):
            if not done[i] and int(best[i]) != eos:
                out[i].append(int(best[i]))
        done |= best == eos
        if bool(done.all()):
            break
        ys = torch.cat([ys, best[:, None]], 1)
    return [(tokens, float(score)) for tokens, score in zip(out, scores.tolist())]


@torch.no_grad()
def beam_search(decoder, memory: Tensor, memory_lens: Tensor, beam: int = 4, length_penalty: float = 1.0,
                max_len_ratio: float = MAX_LEN_RATIO, early_stop: bool = True) -> List[Tuple[List[int], float]]:
    """Length-normalised beam search: (tokens, raw log-probability incl. ``<eos>``) per utterance.

    An utterance is done when ``beam`` hypotheses have ended and the best of them beats every live prefix as that
    prefix would score if it ended at the next step (``early_stop``, the rule of Hugging Face's generate); with
    ``early_stop=False``, only when no live prefix can beat it at any length up to the cap, which makes a beam as wide
    as all prefixes exhaustive but, with length normalisation, runs nearly every utterance to its cap. Stopping as
    soon as ``beam`` hypotheses have ended is not enough: a confident model's low-ranked beams end early with poor
    scores and would stop the search before its good prefix ends."""
    n, eos, device = memory.shape[0], decoder.sos_eos, memory.device
    caps = length_caps(memory_lens, max_len_ratio)
    mem = memory.repeat_interleave(beam, 0)
    mem_lens = memory_lens.repeat_interleave(beam, 0)
    prefixes: List[List[List[int]]] = [[[] for _ in range(beam)] for _ in range(n)]
    scores = torch.full((n, beam), -math.inf, device=device)
    scores[:, 0] = 0.0
    finished: List[List[Tuple[float, List[int], float]]] = [[] for _ in range(n)]  # (normalised, tokens, raw)
    active = [True] * n

    def norm(raw: float, length: int) -> float:
        return raw / (length ** length_penalty) if length_penalty else raw

    for step in range(max(caps) + 1):
        # only utterances still searching go through the decoder; the others' rows are left at -inf
        act = [i for i in range(n) if active[i]]
        rows = torch.tensor([i * beam + b for i in act for b in range(beam)], dtype=torch.int64, device=device)
        ys = torch.tensor([[eos] + p for i in act for p in prefixes[i]], dtype=torch.int64, device=device)
        lens = torch.full((len(rows),), ys.shape[1], dtype=torch.int64, device=device)
        out = decoder(mem[rows], mem_lens[rows], ys, lens)[:, -1].float().log_softmax(-1)
        vocab = out.shape[-1]
        logp = torch.full((n * beam, vocab), -math.inf, device=device)
        logp[rows] = out
        total = (scores.reshape(-1, 1) + logp).reshape(n, beam * vocab)
        top_scores, top_ids = total.topk(min(2 * beam, beam * vocab), dim=-1)
        new_scores = torch.full((n, beam), -math.inf, device=device)
        new_prefixes: List[List[List[int]]] = [[[] for _ in range(beam)] for _ in range(n)]
        for i in act:
            # every row of the next step's batch has the same length: empty beam slots carry a filler prefix with
            # score -inf
            filler = prefixes[i][0] + [eos]
            new_prefixes[i] = [filler] * beam
            at_cap, live = step >= caps[i], 0
            if at_cap:  # only <eos>: close every live prefix
                for b in range(beam):
                    raw = float(scores[i, b] + logp[i * beam + b, eos])
                    if raw > -math.inf:
                        finished[i].append((norm(raw, len(prefixes[i][b]) + 1), prefixes[i][b], raw))
                active[i] = False
                continue
            for rank, (raw, flat) in enumerate(zip(top_scores[i].tolist(), top_ids[i].tolist())):
                if raw == -math.inf:
                    break
                b, token = divmod(flat, vocab)
                if token == eos:
                    # an ending counts only when it ranks among the best `beam` candidates: weak early endings
                    # would otherwise fill the finished list and stop the search before the good prefixes end
                    if rank < beam:
                        finished[i].append((norm(raw, len(prefixes[i][b]) + 1), prefixes[i][b], raw))
                elif live < beam:
                    new_prefixes[i][live] = prefixes[i][b] + [token]
                    new_scores[i, live] = raw
                    live += 1
            # done when nothing is live, or when `beam` hypotheses have ended and no live prefix can still beat the
            # best of them (a prefix's raw score only falls; its normalised score is at most raw / (cap + 1) ** p)
            best_live = max((float(new_scores[i, k]) for k in range(live)), default=-math.inf)
            horizon = step + 2 if early_stop else caps[i] + 1  # live prefixes have step + 1 tokens
            bound = norm(best_live, horizon) if best_live > -math.inf else -math.inf
            if live == 0 or (len(finished[i]) >= beam and max(f[0] for f in finished[i]) >= bound):
                active[i] = False
        if not any(active):
            break
        prefixes, scores = new_prefixes, new_scores
    results = []
    for i in range(n):
        if not finished[i]:
            results.append(([], -math.inf))
            continue
        _, tokens, raw = max(finished[i], key=lambda f: f[0])
        results.append((tokens, raw))
    return results
