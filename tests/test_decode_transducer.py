"""Transducer decoding against unbatched references, an independent alignment-sum scorer and brute force."""

import itertools
import math
from collections import defaultdict
from typing import Dict, List, Tuple

import pytest
import torch
from torch import nn

from icefall_ext.decode.transducer import greedy_search_batch, modified_beam_search, modified_beam_search_nbest


class TinyDecoder(nn.Module):
    """Stateless decoder with the interface of icefall_ext.models.heads (embedding of the last tokens)."""

    def __init__(self, vocab_size: int, dim: int, context_size: int = 2, blank_id: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.blank_id, self.context_size = vocab_size, blank_id, context_size
        self.embedding = nn.Embedding(vocab_size, dim)
        self.mix = nn.Linear(dim * context_size, dim)

    def forward(self, y: torch.Tensor, need_pad: bool = False) -> torch.Tensor:
        assert y.shape[1] == self.context_size and not need_pad
        return torch.relu(self.mix(self.embedding(y).flatten(1))).unsqueeze(1)


class TinyJoiner(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, project_input: bool = True) -> torch.Tensor:
        if project_input:
            encoder_out, decoder_out = self.encoder_proj(encoder_out), self.decoder_proj(decoder_out)
        return self.output_linear(torch.tanh(encoder_out + decoder_out))


class TinyTransducer(nn.Module):
    def __init__(self, vocab_size: int, encoder_dim: int = 6, dim: int = 8, context_size: int = 2) -> None:
        super().__init__()
        self.decoder = TinyDecoder(vocab_size, dim, context_size)
        self.joiner = TinyJoiner(encoder_dim, dim, dim, vocab_size)


def make_case(seed: int, vocab_size: int, lens: List[int], scale: float = 3.0):
    torch.manual_seed(seed)
    model = TinyTransducer(vocab_size).eval()
    with torch.no_grad():
        for p in model.joiner.output_linear.parameters():
            p.mul_(scale)  # sharper distributions: emissions as well as blanks
    encoder_out = torch.randn(len(lens), max(lens), 6)
    return model, encoder_out, torch.tensor(lens)


def step_log_probs(model: nn.Module, frame: torch.Tensor, tokens: List[int]) -> torch.Tensor:
    """log p(. | frame, tokens) with the joiner applied to unprojected inputs (the other code path)."""
    cs, blank = model.decoder.context_size, model.decoder.blank_id
    context = ([blank] * cs + tokens)[-cs:]
    with torch.no_grad():
        dec = model.decoder(torch.tensor([context]), need_pad=False)[:, 0]
        return model.joiner(frame.unsqueeze(0), dec, project_input=True)[0].double().log_softmax(-1)


def reference_greedy(model: nn.Module, frames: torch.Tensor, max_sym_per_frame: int) -> List[int]:
    tokens: List[int] = []
    for frame in frames:
        for _ in range(max_sym_per_frame):
            best = int(step_log_probs(model, frame, tokens).argmax())
            if best == model.decoder.blank_id:
                break
            tokens.append(best)
    return tokens


def sequence_logprob(model: TinyTransducer, frames: torch.Tensor, tokens: List[int]) -> float:
    """log p(tokens | frames) summed over all alignments of the one-symbol-per-frame topology (forward DP)."""
    T, U = len(frames), len(tokens)
    alpha = [[-math.inf] * (U + 1) for _ in range(T + 1)]
    alpha[0][0] = 0.0
    for t in range(T):
        lps = [step_log_probs(model, frames[t], tokens[:u]) for u in range(U + 1)]
        for u in range(U + 1):
            stay = alpha[t][u] + float(lps[u][0])
            emit = alpha[t][u - 1] + float(lps[u - 1][tokens[u - 1]]) if u > 0 else -math.inf
            alpha[t + 1][u] = float(torch.logaddexp(torch.tensor(stay), torch.tensor(emit)))
    return alpha[T][U]


def brute_force_distribution(model: TinyTransducer, frames: torch.Tensor) -> Dict[Tuple[int, ...], float]:
    """Every emission path (one symbol per frame) enumerated; probabilities summed per token sequence."""
    vocab_size = model.decoder.vocab_size
    totals: Dict[Tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(vocab_size), repeat=len(frames)):
        tokens: List[int] = []
        logp = 0.0
        for frame, symbol in zip(frames, path):
            logp += float(step_log_probs(model, frame, tokens)[symbol])
            if symbol != model.decoder.blank_id:
                tokens.append(symbol)
        totals[tuple(tokens)] += math.exp(logp)
    return totals


@pytest.mark.parametrize("max_sym_per_frame", [1, 3])
def test_greedy_batch_matches_unbatched_reference(max_sym_per_frame):
    for seed in range(3):
        model, encoder_out, lens = make_case(seed, vocab_size=7, lens=[9, 4, 12, 1, 7])
        hyps = greedy_search_batch(model, encoder_out, lens, max_sym_per_frame=max_sym_per_frame)
        refs = [reference_greedy(model, encoder_out[n, :length], max_sym_per_frame) for n, length in enumerate(lens)]
        assert hyps == refs
        assert sum(map(len, refs)) > 0


def test_greedy_emits_several_symbols_per_frame_when_allowed():
    model, encoder_out, lens = make_case(4, vocab_size=7, lens=[10, 6])
    with torch.no_grad():
        model.joiner.output_linear.bias[0] -= 20.0  # blank never wins: every step emits
    one = greedy_search_batch(model, encoder_out, lens, max_sym_per_frame=1)
    three = greedy_search_batch(model, encoder_out, lens, max_sym_per_frame=3)
    assert [len(h) for h in one] == [10, 6]
    assert [len(h) for h in three] == [30, 18]


def test_beam_one_equals_greedy():
    for seed in range(3):
        model, encoder_out, lens = make_case(seed, vocab_size=7, lens=[9, 4, 12, 1, 7])
        assert modified_beam_search(model, encoder_out, lens, beam=1) == greedy_search_batch(model, encoder_out, lens)


def test_batched_beam_search_matches_single_utterances():
    model, encoder_out, lens = make_case(5, vocab_size=6, lens=[8, 3, 11])
    batched = modified_beam_search_nbest(model, encoder_out, lens, beam=4)
    for n, length in enumerate(lens.tolist()):
        alone = modified_beam_search_nbest(model, encoder_out[n : n + 1, :length], torch.tensor([length]), beam=4)[0]
        assert [tokens for tokens, _ in alone] == [tokens for tokens, _ in batched[n]]
        assert [score for _, score in alone] == pytest.approx([score for _, score in batched[n]], abs=1e-5)


def test_beam_four_beats_greedy_on_average():
    """Scored by the exact alignment sum, beam 4 finds likelier sequences than greedy.

    Not per utterance: the beam ranks a sequence by the alignments it kept, so a sequence whose alignments
    were partly pruned (greedy's, sometimes) can lose to a truly less likely one. Over 30 utterances it must
    win on average and be at least as good in a clear majority.
    """
    diffs = []
    for seed in range(10):
        model, encoder_out, lens = make_case(seed, vocab_size=5, lens=[8, 6, 7], scale=1.5)
        greedy = greedy_search_batch(model, encoder_out, lens)
        nbest = modified_beam_search_nbest(model, encoder_out, lens, beam=4)
        for n, length in enumerate(lens.tolist()):
            frames = encoder_out[n, :length]
            best_tokens, best_search_score = nbest[n][0]
            best = sequence_logprob(model, frames, best_tokens)
            # the search sums only the alignments it kept: never more than the exact sum
            assert best_search_score <= best + 1e-6
            diffs.append(best - sequence_logprob(model, frames, greedy[n]))
    assert sum(diffs) / len(diffs) > 0.1
    assert sum(d >= -1e-6 for d in diffs) >= 0.7 * len(diffs)
    assert sum(d > 1e-6 for d in diffs) >= 0.3 * len(diffs)


def test_wide_beam_is_exact_against_brute_force():
    for seed in range(3):
        vocab_size, T = 3, 3
        model, encoder_out, lens = make_case(seed, vocab_size=vocab_size, lens=[T, 2], scale=1.5)
        nbest = modified_beam_search_nbest(model, encoder_out, lens, beam=vocab_size**T)
        for n, length in enumerate(lens.tolist()):
            exact = brute_force_distribution(model, encoder_out[n, :length])
            found = {tuple(tokens): math.exp(score) for tokens, score in nbest[n]}
            assert found.keys() == exact.keys()
            for tokens, prob in exact.items():
                assert found[tokens] == pytest.approx(prob, rel=1e-5)
            assert tuple(nbest[n][0][0]) == max(exact, key=exact.get)


def test_beam_four_scores_bounded_by_brute_force():
    """Every final hypothesis's score is the probability of a subset of its alignments."""
    for seed in range(5):
        model, encoder_out, lens = make_case(seed, vocab_size=3, lens=[3])
        exact = brute_force_distribution(model, encoder_out[0])
        nbest = modified_beam_search_nbest(model, encoder_out, lens, beam=4)[0]
        assert len(nbest) <= 4 and len({tuple(tokens) for tokens, _ in nbest}) == len(nbest)
        for tokens, score in nbest:
            assert math.exp(score) <= exact[tuple(tokens)] * (1 + 1e-5)


def test_project_heads_decode_like_the_reference():
    """The project's own Decoder/Joiner (icefall_ext.models.heads) as the consumer of these searches."""
    from icefall_ext.models.heads import Decoder, Joiner

    torch.manual_seed(11)
    model = nn.Module()
    model.decoder = Decoder(vocab_size=9, decoder_dim=8, context_size=2)
    model.joiner = Joiner(encoder_dim=6, decoder_dim=8, joiner_dim=10, vocab_size=9)
    model.eval()
    with torch.no_grad():
        model.joiner.output_linear.weight.mul_(4.0)
    encoder_out, lens = torch.randn(3, 10, 6), torch.tensor([10, 7, 3])
    refs = [reference_greedy(model, encoder_out[n, :length], 1) for n, length in enumerate(lens.tolist())]
    assert greedy_search_batch(model, encoder_out, lens) == refs
    assert modified_beam_search(model, encoder_out, lens, beam=1) == refs
    assert sum(map(len, refs)) > 0
