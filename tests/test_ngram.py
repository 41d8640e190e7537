"""N-gram LM: hand-computed Kneser-Ney values, normalisation of every conditional, kenlm and kaldilm as consumers."""

import logging
import math
import random
from collections import Counter

import pytest

from icefall_ext.decode.ngram import BOS, EOS, LN10, UNK, NgramLm, train_ngram_lm


def random_corpus(seed: int, num_sentences: int, vocab_size: int):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (i + 1) for i in range(vocab_size)]  # Zipf-like: many rare words, a few frequent ones
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 7))) for _ in range(num_sentences)]


def histories(sentences, order):
    """Every LM state met while scoring the sentences, plus unseen ones (an OOV word, an unseen pair)."""
    found = {(BOS,)[: order - 1]}
    for sentence in sentences:
        words = [BOS] + sentence.split()
        for i in range(1, len(words) + 1):
            found.add(tuple(words[:i])[-(order - 1) :] if order > 1 else ())
    if order > 1:
        found.add((UNK,))
        found.add(tuple(sentences[0].split()[:1] * (order - 1)))
    return found


def test_hand_computed_bigram_with_fixed_discount(tmp_path):
    # Corpus "a b", "a b", "b" padded: <s> a b </s> (x2), <s> b </s>.
    # Bigram counts: <s>a=2, ab=2, b</s>=3, <s>b=1. Continuation counts: a=1 ({<s>}), b=2 ({a,<s>}), </s>=1 ({b}),
    # total 4; vocabulary {a, b, </s>, <unk>}; D = 0.75, so the unigram level keeps 0.75 * 3 / 4 for the uniform 1/4:
    #   p(a) = 0.25/4 + 0.140625 = 0.203125, p(b) = 1.25/4 + 0.140625 = 0.453125, p(</s>) = 0.203125,
    #   p(<unk>) = 0.140625.
    #   p(b|a) = 1.25/2 + (0.75*1/2) * p(b) = 0.794921875; p(</s>|a) = 0.375 * p(</s>) = 0.076171875
    #   p(a|<s>) = 1.25/3 + (0.75*2/3) * p(a) = 0.518229166...; p(</s>|b) = 2.25/3 + (0.75/3) * p(</s>) = 0.80078125
    lm = NgramLm.from_arpa(train_ngram_lm(["a b", "a b", "b"], 2, tmp_path / "lm.arpa", discount=0.75))
    expected = {
        ("a", ()): 0.203125,
        ("b", ()): 0.453125,
        (EOS, ()): 0.203125,
        ("zebra", ()): 0.140625,
        ("b", ("a",)): 0.794921875,
        (EOS, ("a",)): 0.076171875,
        ("a", (BOS,)): 1.25 / 3 + 0.5 * 0.203125,
        (EOS, ("b",)): 0.80078125,
    }
    for (word, state), prob in expected.items():
        assert math.exp(lm.score(word, state)[0]) == pytest.approx(prob, rel=1e-6)
    sentence = (1.25 / 3 + 0.5 * 0.203125) * 0.794921875 * 0.80078125
    assert math.exp(lm.sentence_logprob(["a", "b"])) == pytest.approx(sentence, rel=1e-6)


def reference_bigram_kneser_ney(sentences, word, context, discounts_for):
    """Interpolated (modified) Kneser-Ney bigram written directly from the formulas, for one (context, word)."""
    padded = [[BOS] + s.split() + [EOS] for s in sentences]
    bigrams = Counter((s[i], s[i + 1]) for s in padded for i in range(len(s) - 1))
    continuation = Counter(w for (_, w) in bigrams)  # number of distinct left neighbours
    vocab = {w for s in padded for w in s if w != BOS} | {UNK}
    d1 = discounts_for(Counter(continuation.values()))
    d2 = discounts_for(Counter(bigrams.values()))

    def discount(count, d):
        return d[min(count, 3) - 1] if count else 0.0

    total = sum(continuation.values())
    uni_gamma = sum(discount(c, d1) for c in continuation.values()) / total
    word = word if word in vocab else UNK
    p_uni = max(continuation[word] - discount(continuation[word], d1), 0) / total + uni_gamma / len(vocab)
    followers = {w: c for (v, w), c in bigrams.items() if v == context}
    if not followers:
        return p_uni
    context_total = sum(followers.values())
    gamma = sum(discount(c, d2) for c in followers.values()) / context_total
    count = followers.get(word, 0)
    return max(count - discount(count, d2), 0) / context_total + gamma * p_uni


def chen_goodman_discounts(count_of_counts):
    n1, n2, n3, n4 = (count_of_counts[k] for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    return (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)


def test_modified_kneser_ney_bigram_matches_formula(tmp_path, caplog):
    corpus = random_corpus(seed=1, num_sentences=200, vocab_size=300)
    with caplog.at_level(logging.WARNING):
        lm = NgramLm.from_arpa(train_ngram_lm(corpus, 2, tmp_path / "lm.arpa"))
    assert "cannot estimate" not in caplog.text  # the estimated discounts are used, not the fallback
    words = sorted({w for s in corpus for w in s.split()})
    for context in [BOS, words[0], words[5], words[-1], "unseen"]:
        for word in [words[0], words[1], words[7], words[-1], EOS, "unseen"]:
            expected = reference_bigram_kneser_ney(corpus, word, context, chen_goodman_discounts)
            assert math.exp(lm.score(word, (context,))[0]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.6])
def test_every_conditional_distribution_sums_to_one(tmp_path, order, discount):
    corpus = random_corpus(seed=order, num_sentences=150, vocab_size=12)
    lm = NgramLm.from_arpa(train_ngram_lm(corpus, order, tmp_path / "lm.arpa", discount=discount))
    predictable = sorted(lm.vocab - {BOS})
    assert EOS in predictable and UNK in predictable
    for history in histories(corpus, order):
        total = sum(math.exp(lm.score(word, history)[0]) for word in predictable)
        assert total == pytest.approx(1.0, abs=1e-4), history


def test_unknown_words_score_as_unk(tmp_path):
    lm = NgramLm.from_arpa(train_ngram_lm(random_corpus(3, 50, 8), 3, tmp_path / "lm.arpa"))
    logprob, state = lm.score("never-seen", (BOS,))
    assert (logprob, state) == lm.score(UNK, (BOS,)) and state == (BOS, UNK)
    assert lm.score("w1", state)[0] != lm.score("w1", (BOS, "w0"))[0]


def test_scores_match_kenlm(tmp_path):
    import kenlm

    corpus = random_corpus(seed=7, num_sentences=300, vocab_size=25)
    for order in (2, 3, 5):
        arpa = train_ngram_lm(corpus, order, tmp_path / f"lm{order}.arpa")
        ours, theirs = NgramLm.from_arpa(arpa), kenlm.Model(str(arpa))
        tests = corpus[:40] + ["w1 oov w2", "oov", "w3 w3 w3 w3 w3 w3", "w24 w0 w13"]
        for sentence in tests:
            for bos, eos in [(True, True), (False, False)]:
                expected = theirs.score(sentence, bos=bos, eos=eos)
                assert ours.sentence_logprob(sentence.split(), bos, eos) / LN10 == pytest.approx(expected, abs=1e-5)


def test_kaldilm_builds_the_grammar_fst(tmp_path):
    import kaldilm

    corpus = random_corpus(seed=5, num_sentences=80, vocab_size=10)
    arpa = train_ngram_lm(corpus, 3, tmp_path / "lm.arpa")
    words_txt = tmp_path / "words.txt"
    fst_text = kaldilm.arpa2fst(str(arpa), disambig_symbol="#0", write_symbol_table=str(words_txt))
    symbols = {int(i): s for s, i in (line.split() for line in words_txt.read_text().splitlines())}
    arcs = [line.split() for line in fst_text.strip().splitlines() if len(line.split()) >= 4]
    word_arcs = [a for a in arcs if symbols[int(a[2])] not in ("<eps>", "#0")]
    # One arc per n-gram, except that </s> ends the sentence as a final weight and <s> is only a context.
    ngrams = [line.split("\t")[1].split() for line in arpa.read_text().splitlines() if line.count("\t") >= 1]
    assert len(word_arcs) == sum(1 for ng in ngrams if ng[-1] != EOS and ng != [BOS])
    # Unigram arcs leave the back-off (empty history) state with cost -ln p(w).
    lm = NgramLm.from_arpa(arpa)
    backoff_arcs = [a for a in arcs if symbols[int(a[2])] == "#0"]
    (null_history_state,) = {a[1] for a in backoff_arcs} - {a[0] for a in backoff_arcs}
    unigram_arcs = {symbols[int(a[2])]: float(a[4]) for a in word_arcs if a[0] == null_history_state}
    assert set(unigram_arcs) == lm.vocab - {BOS, EOS}
    for word, cost in unigram_arcs.items():
        assert cost == pytest.approx(-lm.score(word, ())[0], abs=1e-4)
