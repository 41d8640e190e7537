"""CTC decoding: greedy search and prefix beam search with optional word n-gram shallow fusion.

The fused search ranks prefixes by ``log p(y|x) + alpha * log p_LM(words) + beta * |words|`` (Lugosch et al.,
2022, "Pseudo-labeling for massively multilingual speech recognition"). A word is scored by the LM when it is
closed, i.e. when a token starting with the word separator ``▁`` follows it or the utterance ends; ``</s>``
is scored at the end.

Out-of-vocabulary look-ahead: while a word is still open, a prefix whose open word is no longer the beginning of
any word of the LM's vocabulary is ranked as if that word were already scored as ``<unk>`` (its unigram
log-prob). Without it, a prefix that never closes its misspelt words (drops the spaces) postpones every ``<unk>``
cost to the end and crowds out the spaced hypotheses: with a weak acoustic model, the LM then glues words
together instead of fixing them. Finished hypotheses are scored exactly as above.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from icefall_ext.decode.ngram import EOS, UNK, LmState, NgramLm

WORD_SEPARATOR = "▁"
_NEG_INF = float("-inf")


def tokens_to_text(ids: Sequence[int], token_table: Sequence[str], blank_id: int = 0) -> str:
    """Text of token ids: BPE pieces (``▁`` starts a word) or characters (``▁`` or ``" "`` is a space)."""
    pieces = "".join(token_table[i] for i in ids if i != blank_id)
    return " ".join(pieces.replace(WORD_SEPARATOR, " ").split())


def _token_pieces(token_table: Sequence[str]) -> Tuple[List[str], List[bool]]:
    """Per token: the characters it adds to a word, and whether it starts a new word."""
    pieces, starts_word = [], []
    for token in token_table:
        text = token.replace(" ", WORD_SEPARATOR)
        starts_word.append(text.startswith(WORD_SEPARATOR))
        pieces.append(text.replace(WORD_SEPARATOR, ""))
    return pieces, starts_word


def ctc_greedy_search(log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> List[List[int]]:
    """Best token per frame, repeats collapsed, blanks dropped; ``log_probs`` is (N, T, V), ``lens`` (N,)."""
    return ctc_greedy_search_with_confidence(log_probs, lens, blank_id)[0]


def ctc_greedy_search_with_confidence(
    log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0
) -> Tuple[List[List[int]], List[Optional[float]]]:
    """:func:`ctc_greedy_search` plus a per-utterance confidence: ``(token ids, confidences)``.

    The greedy path takes the best token ``pi_t`` of each frame. The confidence is the log-probability that
    path gives its non-blank frames, per emitted token:

        confidence = sum_{t < T, pi_t != blank} log p_t(pi_t) / U,   U = number of emitted tokens

    (a token held over k frames contributes k terms, so each uncertain frame lowers it). Blank frames are left
    out, so silence and the frame rate do not shift the score. It is <= 0, 0 only for a certain path;
    ``None`` when nothing is emitted. Sums are in float64.
    """
    values, best = log_probs.max(dim=-1)
    values, best = values.detach().cpu().double(), best.cpu()
    tokens, confidences = [], []
    for n, length in enumerate(lens.tolist()):
        path, scores = best[n, :length], values[n, :length]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        emitted = [t for t in path[keep].tolist() if t != blank_id]
        tokens.append(emitted)
        confidences.append(float(scores[path != blank_id].sum()) / len(emitted) if emitted else None)
    return tokens, confidences


def ctc_label_confidence(
    log_probs: torch.Tensor, lens: torch.Tensor, labels: Sequence[Sequence[int]], blank_id: int = 0
) -> List[Optional[float]]:
    """CTC log-likelihood of given labels per label token: ``log p_ctc(y | x) / |y|`` for each utterance.

    ``log p_ctc(y | x)`` sums the probabilities of every alignment of ``y`` (the CTC forward algorithm,
    :func:`torch.nn.functional.ctc_loss`), so it scores any label sequence, e.g. one an LM helped choose, by
    the acoustic model alone. <= 0; ``None`` for an empty label or one the utterance is too short to align
    (more frames needed than it has).
    """
    out: List[Optional[float]] = [None] * len(labels)
    rows = [n for n, y in enumerate(labels) if y]
    if not rows:
        return out
    lp = log_probs[rows].detach().double().cpu()
    targets = torch.tensor([t for n in rows for t in labels[n]], dtype=torch.long)
    target_lens = torch.tensor([len(labels[n]) for n in rows], dtype=torch.long)
    nll = torch.nn.functional.ctc_loss(lp.transpose(0, 1), targets, lens[rows].cpu().long(), target_lens,
                                       blank=blank_id, reduction="none", zero_infinity=False)
    for n, value, size in zip(rows, nll.tolist(), target_lens.tolist()):
        out[n] = -value / size if math.isfinite(value) else None
    return out


@dataclass(frozen=True)
class _WordContext:
    """LM bookkeeping of a prefix: LM state after its closed words, the open word, their LM sum and count."""

    lm_state: LmState
    open_word: str
    lm_logprob: float
    num_words: int


@dataclass
class CtcHypothesis:
    """A finished prefix: tokens, acoustic log p(y|x) (all alignments), LM log-prob of its words and fused score."""

    tokens: List[int]
    am_logprob: float
    lm_logprob: float
    num_words: int
    score: float


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _WordFusion:
    """Tracks words along token prefixes and scores them with a word n-gram LM."""

    def __init__(self, lm: NgramLm, token_table: Sequence[str], alpha: float, beta: float) -> None:
        self.lm = lm
        self.pieces, self.starts_word = _token_pieces(token_table)
        self.alpha = alpha
        self.beta = beta
        self.word_prefixes = lm.word_prefixes()
        self.oov_logprob = lm.score(UNK, ())[0]

    def initial(self) -> _WordContext:
        return _WordContext(self.lm.begin_state(bos=True), "", 0.0, 0)

    def close_word(self, ctx: _WordContext) -> _WordContext:
        if not ctx.open_word:
            return ctx
        logprob, state = self.lm.score(ctx.open_word, ctx.lm_state)
        return _WordContext(state, "", ctx.lm_logprob + logprob, ctx.num_words + 1)

    def extend(self, ctx: _WordContext, token: int) -> _WordContext:
        if self.starts_word[token]:
            ctx = self.close_word(ctx)
        if not self.pieces[token]:
            return ctx
        return _WordContext(ctx.lm_state, ctx.open_word + self.pieces[token], ctx.lm_logprob, ctx.num_words)

    def finish(self, ctx: _WordContext) -> _WordContext:
        ctx = self.close_word(ctx)
        logprob, state = self.lm.score(EOS, ctx.lm_state)
        return _WordContext(state, "", ctx.lm_logprob + logprob, ctx.num_words)

    def base(self, ctx: _WordContext) -> float:
        """alpha * LM log-prob of the closed words + beta * their number."""
        return self.alpha * ctx.lm_logprob + self.beta * ctx.num_words

    def open_word_cost(self, open_word: str) -> float:
        """The out-of-vocabulary look-ahead of an open word (0 while some vocabulary word starts with it)."""
        return 0.0 if not open_word or open_word in self.word_prefixes else self.alpha * self.oov_logprob

    def bonus(self, ctx: _WordContext) -> float:
        """The rank a prefix gets on top of its acoustic score."""
        return self.base(ctx) + self.open_word_cost(ctx.open_word)

    def extension_bonus(self, ctx: _WordContext, token: int, open_base: float, closed_base: float) -> float:
        """The bonus of ``ctx`` extended by ``token``, given ``base(ctx)`` and ``base`` of ctx with its word closed."""
        if self.starts_word[token]:
            return closed_base + self.open_word_cost(self.pieces[token])
        return open_base + self.open_word_cost(ctx.open_word + self.pieces[token])


def _frame_candidates(
    log_probs: torch.Tensor, blank_id: int, prune_topk: int, token_min_logprob: float
) -> List[List[int]]:
    """Per frame, the non-blank tokens worth extending with: the top-k above the threshold, and always the best."""
    scores = log_probs.clone()
    scores[:, blank_id] = _NEG_INF
    k = max(1, min(prune_topk, scores.size(1) - 1))
    values, ids = scores.topk(k, dim=-1)
    keep = values >= token_min_logprob
    keep[:, 0] = True
    return [row_ids[row_keep].tolist() for row_ids, row_keep in zip(ids, keep)]


def _prefix_beam_search_one(
    log_probs: torch.Tensor,
    beam: int,
    blank_id: int,
    fusion: Optional[_WordFusion],
    prune_topk: int,
    token_min_logprob: float,
) -> List[CtcHypothesis]:
    """Prefix beam search over one utterance's (T, V) log-probs; returns the final beam, best first."""
    lp = log_probs.double().cpu()
    candidates = _frame_candidates(lp, blank_id, prune_topk, token_min_logprob)
    # prefix -> [log p(prefix, path ends in blank), log p(prefix, path ends in its last token)]
    beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, _NEG_INF]}
    # For the prefixes in the beam: their word context and fusion bonus (alpha * LM + beta * words). An extension
    # has its parent's bonus unless its token starts a word and so closes the parent's open word; its context is
    # built only if it survives pruning.
    contexts: Dict[Tuple[int, ...], _WordContext] = {(): fusion.initial()} if fusion is not None else {}
    bonuses: Dict[Tuple[int, ...], float] = {(): 0.0}
    for frame, frame_tokens in zip(lp.tolist(), candidates):
        blank_lp = frame[blank_id]
        next_beams: Dict[Tuple[int, ...], List[float]] = {}
        next_bonuses: Dict[Tuple[int, ...], float] = {}
        for prefix, (p_blank, p_token) in beams.items():
            p_total = _logaddexp(p_blank, p_token)
            entry = next_beams.setdefault(prefix, [_NEG_INF, _NEG_INF])
            entry[0] = _logaddexp(entry[0], p_total + blank_lp)
            bonus = next_bonuses[prefix] = bonuses[prefix]
            if fusion is not None:
                ctx = contexts[prefix]
                open_base = fusion.base(ctx)
                closed_base = fusion.base(fusion.close_word(ctx))
            last = prefix[-1] if prefix else None
            for token in frame_tokens:
                token_lp = frame[token]
                source = p_total
                if token == last:
                    # a repeat continues the same token unless a blank separated them
                    entry[1] = _logaddexp(entry[1], p_token + token_lp)
                    source = p_blank
                    if source == _NEG_INF:
                        continue
                extended = prefix + (token,)
                new_entry = next_beams.setdefault(extended, [_NEG_INF, _NEG_INF])
                new_entry[1] = _logaddexp(new_entry[1], source + token_lp)
                if extended not in next_bonuses:
                    next_bonuses[extended] = (
                        bonus if fusion is None else fusion.extension_bonus(ctx, token, open_base, closed_base)
                    )
        beams = dict(
            heapq.nlargest(beam, next_beams.items(), key=lambda kv: _logaddexp(*kv[1]) + next_bonuses[kv[0]])
        )
        bonuses = {prefix: next_bonuses[prefix] for prefix in beams}
        if fusion is not None:
            contexts = {
                prefix: contexts[prefix] if prefix in contexts else fusion.extend(contexts[prefix[:-1]], prefix[-1])
                for prefix in beams
            }

    hyps = []
    for prefix, (p_blank, p_token) in beams.items():
        am = _logaddexp(p_blank, p_token)
        if fusion is None:
            hyps.append(CtcHypothesis(list(prefix), am, 0.0, 0, am))
        else:
            ctx = fusion.finish(contexts[prefix])
            hyps.append(CtcHypothesis(list(prefix), am, ctx.lm_logprob, ctx.num_words, am + fusion.base(ctx)))
    hyps.sort(key=lambda h: h.score, reverse=True)
    return hyps


def ctc_prefix_beam_search_nbest(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam: int = 8,
    *,
    lm: Optional[NgramLm] = None,
    token_table: Optional[Sequence[str]] = None,
    alpha: float = 0.5,
    beta: float = 1.0,
    blank_id: int = 0,
    prune_topk: int = 16,
    token_min_logprob: float = -10.0,
) -> List[List[CtcHypothesis]]:
    """Final beams (best first) of CTC prefix beam search per utterance; see ``ctc_prefix_beam_search``."""
    if lm is not None and token_table is None:
        raise ValueError("LM fusion needs token_table to turn tokens into words")
    fusion = _WordFusion(lm, token_table, alpha, beta) if lm is not None else None
    return [
        _prefix_beam_search_one(log_probs[n, :length], beam, blank_id, fusion, prune_topk, token_min_logprob)
        for n, length in enumerate(lens.tolist())
    ]


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam: int = 8,
    *,
    lm: Optional[NgramLm] = None,
    token_table: Optional[Sequence[str]] = None,
    alpha: float = 0.5,
    beta: float = 1.0,
    blank_id: int = 0,
    prune_topk: int = 16,
    token_min_logprob: float = -10.0,
) -> List[List[int]]:
    """Best token sequence per utterance by CTC prefix beam search over (N, T, V) log-probs.

    With ``lm`` (a word n-gram) and ``token_table``, prefixes are ranked by
    ``log p(y|x) + alpha * log p_LM(words) + beta * |words|``. Each frame extends prefixes only with its
    ``prune_topk`` best non-blank tokens whose log-prob is at least ``token_min_logprob`` (the best is always
    tried); blank is always tried.
    """
    nbest = ctc_prefix_beam_search_nbest(
        log_probs,
        lens,
        beam,
        lm=lm,
        token_table=token_table,
        alpha=alpha,
        beta=beta,
        blank_id=blank_id,
        prune_topk=prune_topk,
        token_min_logprob=token_min_logprob,
    )
    return [hyps[0].tokens for hyps in nbest]
