"""CTC greedy and prefix beam search against brute-force path enumeration, torch's CTC loss and the n-gram LM."""

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

from icefall_ext.decode.ctc import (
    ctc_greedy_search,
    ctc_prefix_beam_search,
    ctc_prefix_beam_search_nbest,
    tokens_to_text,
)
from icefall_ext.decode.ngram import NgramLm, train_ngram_lm

CHAR_TABLE = ["<blk>", "▁", "a", "b"]


def random_log_probs(seed: int, lens: List[int], vocab_size: int, scale: float = 1.5) -> torch.Tensor:
    torch.manual_seed(seed)
    return (scale * torch.randn(len(lens), max(lens), vocab_size)).log_softmax(-1)


def collapse(path) -> Tuple[int, ...]:
    out, previous = [], None
    for token in path:
        if token != previous and token != 0:
            out.append(token)
        previous = token
    return tuple(out)


def brute_force(log_probs: torch.Tensor) -> Dict[Tuple[int, ...], float]:
    """log p(y|x) of every label sequence, by enumerating all V^T frame paths."""
    T, V = log_probs.shape
    lp = log_probs.double().tolist()
    probs: Dict[Tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(V), repeat=T):
        probs[collapse(path)] += math.exp(sum(lp[t][k] for t, k in enumerate(path)))
    return {y: math.log(p) for y, p in probs.items()}


def torch_ctc_logprob(log_probs: torch.Tensor, tokens) -> float:
    """log p(y|x) from torch's CTC loss (an independent forward algorithm)."""
    loss = F.ctc_loss(
        log_probs.double().unsqueeze(1),
        torch.tensor([list(tokens)], dtype=torch.long).reshape(1, -1),
        torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(tokens)]),
        blank=0,
        reduction="none",
    )
    return -float(loss)


def test_tokens_to_text_bpe_and_chars():
    bpe = ["<blk>", "<unk>", "▁the", "▁c", "at", "s", "▁"]
    assert tokens_to_text([2, 3, 4, 5], bpe) == "the cats"
    assert tokens_to_text([6, 3, 4, 0, 2], bpe) == "cat the"
    chars = ["<blk>", "▁", "h", "i", "é", " ", "!"]
    assert tokens_to_text([2, 3, 1, 4, 6, 1], chars) == "hi é!"
    assert tokens_to_text([2, 5, 5, 3], chars) == "h i"
    assert tokens_to_text([], chars) == ""


def test_greedy_collapses_repeats_and_drops_blanks():
    V = 4
    paths = [[1, 1, 0, 1, 2, 2, 0, 3], [0, 0, 3, 3, 3, 0, 0, 0]]
    log_probs = torch.full((2, 8, V), -5.0)
    for n, path in enumerate(paths):
        for t, k in enumerate(path):
            log_probs[n, t, k] = -0.01
    assert ctc_greedy_search(log_probs, torch.tensor([8, 3])) == [[1, 1, 2, 3], [3]]
    # and against the definition on random input of different lengths
    lens = [9, 4, 1, 7]
    log_probs = random_log_probs(0, lens, 5)
    expected = [list(collapse(log_probs[n, :length].argmax(-1).tolist())) for n, length in enumerate(lens)]
    assert ctc_greedy_search(log_probs, torch.tensor(lens)) == expected


def test_wide_prefix_beam_search_is_exact():
    lens = [6, 4, 5]
    log_probs = random_log_probs(1, lens, 3, scale=1.0)
    nbest = ctc_prefix_beam_search_nbest(
        log_probs, torch.tensor(lens), beam=10_000, prune_topk=3, token_min_logprob=-math.inf
    )
    for n, length in enumerate(lens):
        exact = brute_force(log_probs[n, :length])
        found = {tuple(h.tokens): h.am_logprob for h in nbest[n]}
        assert found.keys() == exact.keys()
        for tokens, logprob in exact.items():
            assert found[tokens] == pytest.approx(logprob, abs=1e-9)
            if tokens:
                assert torch_ctc_logprob(log_probs[n, :length], tokens) == pytest.approx(logprob, abs=1e-6)
        assert tuple(nbest[n][0].tokens) == max(exact, key=exact.get)


def test_narrow_beam_scores_are_lower_bounds():
    lens = [30, 25]
    log_probs = random_log_probs(2, lens, 6, scale=2.0)
    nbest = ctc_prefix_beam_search_nbest(log_probs, torch.tensor(lens), beam=4)
    for n, length in enumerate(lens):
        assert len(nbest[n]) <= 4
        for hyp in nbest[n]:
            exact = torch_ctc_logprob(log_probs[n, :length], hyp.tokens)
            assert hyp.am_logprob <= exact + 1e-9
        scores = [h.score for h in nbest[n]]
        assert scores == sorted(scores, reverse=True)


def test_peaky_output_gives_greedy_result():
    """On a confident CTC output prefix beam search returns the greedy sequence (repeats kept apart by blank)."""
    V, path = 5, [0, 2, 2, 0, 2, 3, 0, 0, 4, 4, 1, 0]
    log_probs = torch.full((1, len(path), V), -9.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    log_probs = log_probs.log_softmax(-1)
    lens = torch.tensor([len(path)])
    assert ctc_prefix_beam_search(log_probs, lens, beam=4) == ctc_greedy_search(log_probs, lens) == [[2, 2, 3, 4, 1]]


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    sentences = ["ab ba", "ab ab ba", "b ab", "ba", "ab a", "a ba ab"]
    return NgramLm.from_arpa(train_ngram_lm(sentences, 2, tmp_path_factory.mktemp("lm") / "lm.arpa"))


def fused_score(log_probs, tokens, lm, alpha, beta) -> float:
    """log p(y|x) + alpha * log p_LM(words of y, with </s>) + beta * |words|, computed from the text."""
    words = tokens_to_text(tokens, CHAR_TABLE).split()
    return torch_ctc_logprob(log_probs, tokens) + alpha * lm.sentence_logprob(words) + beta * len(words)


@pytest.mark.parametrize("alpha,beta", [(0.7, 0.5), (2.0, -1.0)])
def test_wide_fused_search_maximises_the_fused_objective(char_lm, alpha, beta):
    lens = [6, 5]
    log_probs = random_log_probs(3, lens, len(CHAR_TABLE), scale=1.0)
    nbest = ctc_prefix_beam_search_nbest(
        log_probs,
        torch.tensor(lens),
        beam=10_000,
        lm=char_lm,
        token_table=CHAR_TABLE,
        alpha=alpha,
        beta=beta,
        prune_topk=len(CHAR_TABLE),
        token_min_logprob=-math.inf,
    )
    for n, length in enumerate(lens):
        utt = log_probs[n, :length]
        objective = {
            y: am + alpha * char_lm.sentence_logprob(tokens_to_text(y, CHAR_TABLE).split())
            + beta * len(tokens_to_text(y, CHAR_TABLE).split())
            for y, am in brute_force(utt).items()
        }
        best = max(objective, key=objective.get)
        assert tuple(nbest[n][0].tokens) == best
        assert nbest[n][0].score == pytest.approx(objective[best], abs=1e-6)
        # every hypothesis's incremental LM bookkeeping equals scoring its text as a whole
        for hyp in nbest[n][:20]:
            assert hyp.score == pytest.approx(fused_score(utt, hyp.tokens, char_lm, alpha, beta), abs=1e-6)


def reference_fused_beam(log_probs, beam, lm, alpha, beta):
    """Textbook prefix beam search whose ranking rescores every prefix's closed words from its text, plus the
    out-of-vocabulary look-ahead on its open word."""
    NEG = -math.inf

    def closed_words(prefix):
        text = "".join(CHAR_TABLE[k] for k in prefix).replace("▁", " ")
        return [w for w in text.split(" ")[:-1] if w]

    vocabulary = [w for w in lm.vocab if w not in ("<s>", "</s>", "<unk>")]

    def open_word(prefix):
        return "".join(CHAR_TABLE[k] for k in prefix).replace("▁", " ").split(" ")[-1]

    def rank(prefix, am):
        words = closed_words(prefix)
        word = open_word(prefix)
        # an open word that no vocabulary word starts with is charged <unk>'s unigram log-prob right away
        oov = 0.0 if not word or any(v.startswith(word) for v in vocabulary) else lm.sentence_logprob(
            ["<unk>"], bos=False, eos=False)
        return am + alpha * (lm.sentence_logprob(words, eos=False) + oov) + beta * len(words)

    beams = {(): (0.0, NEG)}
    for frame in log_probs.double().tolist():
        nxt = defaultdict(lambda: [NEG, NEG])
        for prefix, (pb, pnb) in beams.items():
            total = float(torch.logaddexp(torch.tensor(pb), torch.tensor(pnb)))
            nxt[prefix][0] = float(torch.logaddexp(torch.tensor(nxt[prefix][0]), torch.tensor(total + frame[0])))
            for k in range(1, len(frame)):
                if prefix and prefix[-1] == k:
                    nxt[prefix][1] = float(torch.logaddexp(torch.tensor(nxt[prefix][1]), torch.tensor(pnb + frame[k])))
                    source = pb
                else:
                    source = total
                ext = nxt[prefix + (k,)]
                ext[1] = float(torch.logaddexp(torch.tensor(ext[1]), torch.tensor(source + frame[k])))
        scored = {p: float(torch.logaddexp(torch.tensor(v[0]), torch.tensor(v[1]))) for p, v in nxt.items()}
        kept = sorted((p for p in scored if scored[p] > NEG), key=lambda p: rank(p, scored[p]), reverse=True)[:beam]
        beams = {p: tuple(nxt[p]) for p in kept}
    return set(beams)


def test_narrow_fused_beam_matches_textbook_reference(char_lm):
    """With pruning active, the incremental LM bookkeeping ranks prefixes exactly like rescoring their text."""
    for seed in range(4):
        log_probs = random_log_probs(10 + seed, [12], len(CHAR_TABLE), scale=2.0)
        nbest = ctc_prefix_beam_search_nbest(
            log_probs,
            torch.tensor([12]),
            beam=3,
            lm=char_lm,
            token_table=CHAR_TABLE,
            alpha=1.5,
            beta=0.5,
            prune_topk=len(CHAR_TABLE),
            token_min_logprob=-math.inf,
        )[0]
        assert {tuple(h.tokens) for h in nbest} == reference_fused_beam(log_probs[0], 3, char_lm, 1.5, 0.5)


def test_lm_changes_the_decision_when_acoustics_are_ambiguous(char_lm):
    # frames spelling "ab" then a space then an ambiguous word "?a" where the acoustics slightly prefer "aa",
    # a word the LM never saw; "ba" is in the LM's text.
    frames = [
        {2: 0.9},
        {0: 0.9},
        {3: 0.9},
        {1: 0.9},
        {2: 0.5, 3: 0.4},
        {0: 0.9},
        {2: 0.9},
    ]
    log_probs = torch.full((1, len(frames), len(CHAR_TABLE)), 1e-3)
    for t, probs in enumerate(frames):
        for k, p in probs.items():
            log_probs[0, t, k] = p
    log_probs = (log_probs / log_probs.sum(-1, keepdim=True)).log()
    lens = torch.tensor([len(frames)])
    assert tokens_to_text(ctc_greedy_search(log_probs, lens)[0], CHAR_TABLE) == "ab aa"
    plain = ctc_prefix_beam_search(log_probs, lens, beam=8)[0]
    fused = ctc_prefix_beam_search(log_probs, lens, beam=8, lm=char_lm, token_table=CHAR_TABLE, alpha=1.0, beta=0.0)
    assert tokens_to_text(plain, CHAR_TABLE) == "ab aa"
    assert tokens_to_text(fused[0], CHAR_TABLE) == "ab ba"


def test_empty_utterance_and_lm_without_table_rejected(char_lm):
    log_probs = random_log_probs(4, [3], 4)
    assert ctc_prefix_beam_search(log_probs, torch.tensor([0])) == [[]]
    with pytest.raises(ValueError):
        ctc_prefix_beam_search(log_probs, torch.tensor([3]), lm=char_lm)


WORD_TABLE = ["<blk>", "▁", "a", "c", "e", "h", "r", "s", "t"]
CAT_TEXT = ["the cat sat", "a cat sat", "the cat ran", "a cat ran", "the cat sat on the mat"]


def spelled_log_probs(spellings: List[List[Dict[str, float]]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, T, V) log-probs where each entry is one frame's {char: prob}, each followed by a confident blank frame;
    the remaining probability of a frame is spread over the other tokens."""
    ids = {c: i for i, c in enumerate(WORD_TABLE)}
    utts = []
    for frames in spellings:
        rows = []
        for probs in frames:
            for frame in (probs, {"<blk>": 0.9}):
                row = torch.full((len(WORD_TABLE),), (1 - sum(frame.values())) / (len(WORD_TABLE) - len(frame)))
                for c, p in frame.items():
                    row[ids[c]] = p
                rows.append(row.log())
        utts.append(torch.stack(rows))
    lens = torch.tensor([len(u) for u in utts])
    return torch.nn.utils.rnn.pad_sequence(utts, batch_first=True), lens


def spell(text: str) -> List[Dict[str, float]]:
    return [{c.replace(" ", "▁"): 0.9} for c in text]


def test_grid_search_picks_lm_weight_only_when_the_lm_helps(tmp_path):
    from icefall_ext.decode.lm_tuning import grid_search_alpha_beta

    # utterance 1: "the ?at sat" with acoustics preferring r (0.5) over c (0.4); utterance 2 is clear
    ambiguous = spell("the ") + [{"r": 0.5, "c": 0.4}] + spell("at sat")
    log_probs, lens = spelled_log_probs([ambiguous, spell("a cat sat")])
    assert [tokens_to_text(ids, WORD_TABLE) for ids in ctc_greedy_search(log_probs, lens)] == [
        "the rat sat",
        "a cat sat",
    ]
    cat_lm = NgramLm.from_arpa(train_ngram_lm(CAT_TEXT, 3, tmp_path / "cat.arpa"))
    unrelated_lm = NgramLm.from_arpa(train_ngram_lm(["dogs bark", "birds sing loudly"], 3, tmp_path / "other.arpa"))
    grid = dict(alphas=[0.0, 0.3, 1.0, 2.0], betas=[0.0, 1.0], beam=8)

    def run(refs, lm, metric="wer"):
        best_alpha, best_beta, rows = grid_search_alpha_beta(
            [log_probs], [lens], refs, WORD_TABLE, lm, metric=metric, **grid
        )
        errors = {(r["alpha"], r["beta"]): r["errors"] for r in rows}
        return best_alpha, best_beta, errors, rows

    # the truth is "cat": the LM trained on cat sentences repairs the acoustic error once alpha is large enough
    best_alpha, best_beta, errors, rows = run(["the cat sat", "a cat sat"], cat_lm)
    assert best_alpha > 0 and errors[(best_alpha, best_beta)] == 0
    assert errors[(0.0, 0.0)] == errors[(0.0, 1.0)] == 1
    assert {r["ref_len"] for r in rows} == {6} and len(rows) == 8
    # grid points decoded in two forked processes: the same rows in the same order
    parallel = grid_search_alpha_beta([log_probs], [lens], ["the cat sat", "a cat sat"], WORD_TABLE, cat_lm,
                                      num_jobs=2, **grid)
    assert parallel == (best_alpha, best_beta, rows)
    best_alpha_cer, _, errors_cer, rows_cer = run(["the cat sat", "a cat sat"], cat_lm, metric="cer")
    assert best_alpha_cer > 0 and errors_cer[(0.0, 0.0)] == 1 and rows_cer[0]["ref_len"] == 20

    # the truth is "rat": the same LM now misleads, so the search must keep alpha = 0
    best_alpha, _, errors, _ = run(["the rat sat", "a cat sat"], cat_lm)
    assert best_alpha == 0.0 and errors[(0.0, 0.0)] == 0
    assert errors[(2.0, 0.0)] == 1

    # an LM of unrelated text cannot tell "cat" from "rat" (both <unk>); a large weight only makes every word
    # costly, so words merge or vanish. alpha = 0 is kept.
    best_alpha, best_beta, errors, _ = run(["the cat sat", "a cat sat"], unrelated_lm)
    assert (best_alpha, best_beta) == (0.0, 0.0)
    assert all(errors[(a, b)] == 1 for a in (0.0, 0.3, 1.0) for b in (0.0, 1.0))
    assert errors[(2.0, 0.0)] > 1


# ---- one LM per language (multilingual models) ----


def test_parse_lm_specs_per_language_and_for_every_language(tmp_path):
    from icefall_ext.decode.ngram import load_language_lms, parse_lm_specs

    assert parse_lm_specs(["en_us=lm/en.arpa", "de=a=b.arpa", "dir/x=y.arpa"]) == {
        "en_us": Path("lm/en.arpa"), "de": Path("a=b.arpa"), None: Path("dir/x=y.arpa")}
    with pytest.raises(ValueError, match="two LMs for language en"):
        parse_lm_specs(["en=a.arpa", "en=b.arpa"])
    with pytest.raises(ValueError, match="every language"):
        parse_lm_specs(["a.arpa", "b.arpa"])
    with pytest.raises(FileNotFoundError, match="missing LM"):
        load_language_lms([f"en={tmp_path / 'none.arpa'}"])


def test_search_with_lms_by_language_uses_each_utterances_own(tmp_path):
    from icefall_ext.decode.ngram import lm_for_language
    from icefall_ext.decode.search import decode_ctc_log_probs

    # the same ambiguous audio three times ("the ?at sat", acoustics prefer r over c) and a clear one
    ambiguous = spell("the ") + [{"r": 0.5, "c": 0.4}] + spell("at sat")
    log_probs, lens = spelled_log_probs([ambiguous, ambiguous, ambiguous, spell("a cat sat")])
    cat_lm = NgramLm.from_arpa(train_ngram_lm(CAT_TEXT, 3, tmp_path / "cat.arpa"))
    rat_lm = NgramLm.from_arpa(train_ngram_lm([s.replace("cat", "rat") for s in CAT_TEXT] * 3 + ["the cat ran"], 3,
                                              tmp_path / "rat.arpa"))
    languages = ["xx", "yy", "zz", "xx"]
    kw = dict(beam=8, alpha=2.0, beta=0.0, token_table=WORD_TABLE)
    texts = lambda hyps: [tokens_to_text(h, WORD_TABLE) for h in hyps]  # noqa: E731
    routed = decode_ctc_log_probs(log_probs, lens, "ctc-beam", lm={"xx": cat_lm, "yy": rat_lm}, languages=languages,
                                  **kw)
    assert texts(routed) == ["the cat sat", "the rat sat", "the rat sat", "a cat sat"]  # zz: no LM at all
    with_default = decode_ctc_log_probs(log_probs, lens, "ctc-beam", lm={"yy": rat_lm, None: cat_lm},
                                        languages=languages, **kw)
    assert texts(with_default) == ["the cat sat", "the rat sat", "the cat sat", "a cat sat"]
    # each utterance decoded alone with the LM its language selects: the same hypotheses
    lms = {"yy": rat_lm, None: cat_lm}
    for n, language in enumerate(languages):
        alone = ctc_prefix_beam_search(log_probs[n:n + 1, : int(lens[n])], lens[n:n + 1], 8,
                                       lm=lm_for_language(lms, language), token_table=WORD_TABLE, alpha=2.0, beta=0.0)
        assert alone[0] == with_default[n]
    with pytest.raises(ValueError, match="language of every utterance"):
        decode_ctc_log_probs(log_probs, lens, "ctc-beam", lm=lms, **kw)


def test_grid_search_with_one_lm_per_utterance(tmp_path):
    from icefall_ext.decode.lm_tuning import grid_search_alpha_beta

    ambiguous = spell("the ") + [{"r": 0.5, "c": 0.4}] + spell("at sat")
    log_probs, lens = spelled_log_probs([ambiguous, ambiguous])
    cat_lm = NgramLm.from_arpa(train_ngram_lm(CAT_TEXT, 3, tmp_path / "cat.arpa"))
    batches = [log_probs[0:1], log_probs[1:2]]
    batch_lens = [lens[0:1], lens[1:2]]
    grid = dict(alphas=[0.0, 2.0], betas=[0.0], beam=8)
    # "cat" is right for both: with the LM on both, alpha 2 makes no error; on one only, one error is left
    _, _, rows = grid_search_alpha_beta(batches, batch_lens, ["the cat sat"] * 2, WORD_TABLE, [cat_lm, cat_lm], **grid)
    assert [r["errors"] for r in rows] == [2, 0]
    _, _, rows = grid_search_alpha_beta(batches, batch_lens, ["the cat sat"] * 2, WORD_TABLE, [cat_lm, None], **grid)
    assert [r["errors"] for r in rows] == [2, 1]
    with pytest.raises(ValueError, match="LMs for 2 batches"):
        grid_search_alpha_beta(batches, batch_lens, ["the cat sat"] * 2, WORD_TABLE, [cat_lm], **grid)


def test_label_confidence_is_the_ctc_likelihood_per_token():
    from icefall_ext.decode.ctc import ctc_label_confidence

    log_probs = random_log_probs(5, [5, 4, 2], 3, scale=1.0)
    lens = torch.tensor([5, 4, 2])
    labels = [[1, 2], [2, 2, 1], [1, 1]]  # the last needs 3 frames (a blank between the repeats): impossible
    confidence = ctc_label_confidence(log_probs, lens, labels)
    for n in range(2):
        exact = brute_force(log_probs[n, : int(lens[n])])[tuple(labels[n])]
        assert confidence[n] == pytest.approx(exact / len(labels[n]), abs=1e-9)
    assert confidence[2] is None
    assert ctc_label_confidence(log_probs, lens, [[], [1], []])[0::2] == [None, None]
