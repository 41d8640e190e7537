"""Word n-gram language models: training to ARPA (interpolated Kneser-Ney) and querying an ARPA file.

Training follows the recipe of Chen & Goodman's interpolated modified Kneser-Ney as lmplz implements it:
the highest order and n-grams starting with ``<s>`` use raw counts, every other order uses continuation
counts (the number of distinct words seen to the left); discounts D1, D2, D3+ per order come from the
count-of-counts, and the unigram level is interpolated with the uniform distribution over the vocabulary
(all words seen, ``</s>`` and ``<unk>``). The interpolated model is written in backoff form, so that
``p(w|h) = bow(h) * p(w|h')`` for an unseen ``h w`` reproduces it exactly.

The written file is an ordinary ARPA file: kenlm loads it, and ``kaldilm.arpa2fst`` turns it into the G
FST of an HLG decoder.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
LN10 = math.log(10.0)
# log10 probability that ARPA files give <s> (it is never predicted) and that kenlm gives <unk> when absent.
BOS_LOG10_PROB = -99.0
MISSING_UNK_LOG10_PROB = -100.0
# Discounts lmplz falls back to when the count-of-counts cannot estimate them (small corpora).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

NGram = Tuple[str, ...]
LmState = Tuple[str, ...]


def _padded(sentence: str) -> List[str]:
    return [BOS] + sentence.split() + [EOS]


def _raw_counts(sentences: Iterable[str], order: int) -> List[Counter]:
    """``counts[n][ngram]`` for n = 1..order over sentences padded with one ``<s>`` and one ``</s>``."""
    counts = [Counter() for _ in range(order + 1)]
    num_sentences = 0
    for sentence in sentences:
        if not sentence.split():
            continue
        num_sentences += 1
        words = _padded(sentence)
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                counts[n][tuple(words[i : i + n])] += 1
    if num_sentences == 0:
        raise ValueError("no non-empty sentence to train an n-gram LM on")
    logger.info("n-gram counts from %d sentences: %s", num_sentences, [len(c) for c in counts[1:]])
    return counts


def _adjusted_counts(raw: List[Counter], order: int) -> List[Counter]:
    """Raw counts at the highest order and after ``<s>``; elsewhere the number of distinct left neighbours."""
    adjusted = [Counter() for _ in range(order + 1)]
    adjusted[order] = Counter(raw[order])
    adjusted[order].pop((BOS,), None)
    for n in range(1, order):
        left_extensions: Counter = Counter(ngram[1:] for ngram in raw[n + 1])
        for ngram, count in raw[n].items():
            if ngram == (BOS,):
                continue
            adjusted[n][ngram] = count if ngram[0] == BOS else left_extensions[ngram]
    return adjusted


def _estimate_discounts(counts: Counter, n: int) -> Tuple[float, float, float]:
    """D1, D2, D3+ from the count-of-counts (Chen & Goodman); the lmplz fallback when they are unusable."""
    coc = Counter(counts.values())
    n1, n2, n3, n4 = (coc[k] for k in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < d <= k for k, d in enumerate(discounts, 1)):
            return discounts
    logger.warning(
        "order %d: count-of-counts %s cannot estimate modified Kneser-Ney discounts; using %s",
        n,
        (n1, n2, n3, n4),
        FALLBACK_DISCOUNTS,
    )
    return FALLBACK_DISCOUNTS


def _interpolated_kneser_ney(
    adjusted: List[Counter], order: int, discount: Optional[float]
) -> Tuple[List[Dict[NGram, float]], List[Dict[NGram, float]]]:
    """Interpolated probabilities of every observed n-gram and backoff weights of every observed context."""
    vocab = {ngram[0] for ngram in adjusted[1]} | {EOS, UNK}
    probs: List[Dict[NGram, float]] = [{} for _ in range(order + 1)]
    backoffs: List[Dict[NGram, float]] = [{} for _ in range(order + 1)]
    for n in range(1, order + 1):
        discounts = (discount,) * 3 if discount is not None else _estimate_discounts(adjusted[n], n)
        logger.info("order %d discounts: %s", n, tuple(round(d, 4) for d in discounts))
        by_context: Dict[NGram, List[Tuple[str, int]]] = defaultdict(list)
        for ngram, count in adjusted[n].items():
            by_context[ngram[:-1]].append((ngram[-1], count))
        if n == 1:
            for word in vocab:
                if (word,) not in adjusted[1]:
                    by_context[()].append((word, 0))
        for context, followers in by_context.items():
            total = sum(count for _, count in followers)
            # the probability mass taken off the seen followers goes to the lower order
            gamma = sum(discounts[min(count, 3) - 1] for _, count in followers if count > 0) / total
            if n > 1:
                backoffs[n - 1][context] = gamma
            for word, count in followers:
                discounted = max(count - discounts[min(count, 3) - 1], 0.0) if count > 0 else 0.0
                lower = 1.0 / len(vocab) if n == 1 else probs[n - 1][context[1:] + (word,)]
                probs[n][context + (word,)] = discounted / total + gamma * lower
    return probs, backoffs


def train_ngram_lm(
    sentences: Iterable[str], order: int, out_arpa: Path, discount: Optional[float] = None
) -> Path:
    """Train a word n-gram LM on whitespace-tokenised ``sentences`` and write it as an ARPA file.

    ``discount=None`` gives interpolated modified Kneser-Ney (discounts estimated per order); a float in (0, 1)
    gives interpolated Kneser-Ney with that single discount at every order. Returns ``out_arpa``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if discount is not None and not 0.0 < discount < 1.0:
        raise ValueError(f"a fixed discount must lie in (0, 1), got {discount}")
    raw = _raw_counts(sentences, order)
    probs, backoffs = _interpolated_kneser_ney(_adjusted_counts(raw, order), order, discount)
    if order > 1:
        probs[1][(BOS,)] = 0.0  # placeholder: written as BOS_LOG10_PROB; <s> is only a context
    out_arpa = Path(out_arpa)
    out_arpa.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_arpa.with_name(out_arpa.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n in range(1, order + 1):
            f.write(f"ngram {n}={len(probs[n])}\n")
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for ngram in sorted(probs[n]):
                log10_prob = BOS_LOG10_PROB if ngram == (BOS,) else math.log10(probs[n][ngram])
                line = f"{log10_prob:.7f}\t{' '.join(ngram)}"
                if ngram in backoffs[n]:
                    line += f"\t{math.log10(backoffs[n][ngram]):.7f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    os.replace(tmp, out_arpa)
    logger.info("wrote %d-gram LM to %s", order, out_arpa)
    return out_arpa


class NgramLm:
    """An ARPA back-off n-gram LM queried word by word; scores are natural-log probabilities.

    A state is the tuple of the last ``order - 1`` words (``<s>`` included); words outside the vocabulary
    are scored, and remembered in the state, as ``<unk>``.
    """

    def __init__(self, log10_probs: Dict[NGram, float], log10_backoffs: Dict[NGram, float], order: int) -> None:
        self.order = order
        self._log10_probs = log10_probs
        self._log10_backoffs = log10_backoffs
        self.vocab = frozenset(ngram[0] for ngram in log10_probs if len(ngram) == 1)
        if (UNK,) not in log10_probs:
            self._log10_probs[(UNK,)] = MISSING_UNK_LOG10_PROB
        self._cache: Dict[Tuple[str, LmState], Tuple[float, LmState]] = {}

    @classmethod
    def from_arpa(cls, path: Path) -> "NgramLm":
        """Read an ARPA file (any order, with or without back-off weights)."""
        probs: Dict[NGram, float] = {}
        backoffs: Dict[NGram, float] = {}
        order = 0
        section = 0
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("ngram "):
                    continue
                if line == "\\data\\":
                    section = 0
                elif line == "\\end\\":
                    break
                elif line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1 : -len("-grams:")])
                    order = max(order, section)
                elif section > 0:
                    fields = line.split()
                    if len(fields) not in (section + 1, section + 2):
                        raise ValueError(f"{path}:{line_number}: malformed {section}-gram line {line!r}")
                    ngram = tuple(fields[1 : section + 1])
                    probs[ngram] = float(fields[0])
                    if len(fields) == section + 2:
                        backoffs[ngram] = float(fields[-1])
        if order == 0:
            raise ValueError(f"{path}: no n-gram section found")
        logger.info("loaded %d-gram LM with %d n-grams from %s", order, len(probs), path)
        return cls(probs, backoffs, order)

    def word_prefixes(self) -> frozenset:
        """Every non-empty beginning of every vocabulary word (``<s>``, ``</s>`` and ``<unk>`` excluded)."""
        if not hasattr(self, "_word_prefixes"):
            words = self.vocab - {BOS, EOS, UNK}
            self._word_prefixes = frozenset(w[:i] for w in words for i in range(1, len(w) + 1))
        return self._word_prefixes

    def begin_state(self, bos: bool = True) -> LmState:
        """The state before the first word: after ``<s>`` or with no context at all."""
        return (BOS,) if bos and self.order > 1 else ()

    def score(self, word: str, state: LmState) -> Tuple[float, LmState]:
        """``(ln p(word | state), next state)`` with ARPA back-off: unseen ``h w`` costs ``bow(h) p(w | h')``."""
        key = (word, state)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if word not in self.vocab:
            word = UNK
        context = state
        log10_prob = 0.0
        while (context + (word,)) not in self._log10_probs:
            log10_prob += self._log10_backoffs.get(context, 0.0)
            context = context[1:]
        log10_prob += self._log10_probs[context + (word,)]
        next_state = (state + (word,))[1 - self.order :] if self.order > 1 else ()
        result = (log10_prob * LN10, next_state)
        self._cache[key] = result
        return result

    def sentence_logprob(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Natural-log probability of ``words`` (``</s>`` included when ``eos``), starting after ``<s>`` if ``bos``."""
        state = self.begin_state(bos)
        total = 0.0
        for word in list(words) + ([EOS] if eos else []):
            logprob, state = self.score(word, state)
            total += logprob
        return total


# One LM per language for a multilingual model: key = language code, None = every language without its own LM.
LanguageLms = Dict[Optional[str], NgramLm]


def parse_lm_specs(specs: Sequence[str]) -> Dict[Optional[str], Path]:
    """``[LANG=]PATH`` items -> ``{language: path}``; a bare ``PATH`` serves every language (key ``None``)."""
    paths: Dict[Optional[str], Path] = {}
    for spec in specs:
        language, sep, path = spec.partition("=")
        key = language if sep and language and "/" not in language else None
        path = path if key is not None else spec
        if key in paths:
            raise ValueError(f"two LMs for {'language ' + key if key else 'every language'}: {paths[key]} and {path}")
        paths[key] = Path(path)
    return paths


def load_language_lms(specs: Sequence[str]) -> LanguageLms:
    """The ARPA files of ``[LANG=]PATH`` items (:func:`parse_lm_specs`), loaded once each."""
    paths = parse_lm_specs(specs)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing LM {' '.join(missing)}")
    return {key: NgramLm.from_arpa(path) for key, path in paths.items()}


def lm_for_language(lms: LanguageLms, language: Optional[str]) -> Optional[NgramLm]:
    """The language's own LM, else the one for every language, else None (decode without an LM)."""
    return lms.get(language, lms.get(None)) if language is not None else lms.get(None)
