"""Word lists and sentence sampling for the espeak-ng mini corpus.

Words come from ``wordfreq.top_n_list`` (real words of each language, most
frequent first). The lists are cleaned: only letters of the language's
alphabet (plus an inner apostrophe where the language elides), no
single-letter tokens except genuine one-letter words, no stray pieces of
elided words, and Greek word-final sigma restored (the lists store ``σ``
where the spelling is ``ς``).
"""
from __future__ import annotations

import bisect
import functools
import itertools
import random
import re
from typing import Dict, Iterable, List, Sequence, Tuple

import wordfreq

_LATIN = "abcdefghijklmnopqrstuvwxyz"
ALPHABETS: Dict[str, str] = {
    "en": _LATIN,
    "de": _LATIN + "äöüß",
    "fr": _LATIN + "àâæçéèêëîïôœùûüÿ",
    "es": _LATIN + "áéíóúüñ",
    "it": _LATIN + "àèéìíîòóùú",
    "el": "αβγδεζηθικλμνξοπρστυφχψωςάέήίόύώϊϋΐΰ",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
}

# One-letter tokens that are words on their own; every other one-letter
# token in the frequency lists is a fragment ("l" of "l'homme", "d", ...).
SINGLE_LETTER_WORDS: Dict[str, frozenset] = {
    "en": frozenset({"a", "i"}),
    "de": frozenset(),
    "fr": frozenset({"à", "a", "y"}),
    "es": frozenset({"y", "a", "o", "e", "u"}),
    "it": frozenset({"e", "a", "è", "i", "o"}),
    "el": frozenset({"η", "ο", "ή"}),
    "ru": frozenset({"в", "и", "с", "я", "а", "о", "к", "у"}),
}

# Pieces of elided words that the frequency lists store as separate tokens
# ("qu" of "qu'il", Greek "απ" of "απ'το", Italian "dell" of "dell'anno").
ELISION_FRAGMENTS: Dict[str, frozenset] = {
    "en": frozenset({"ll", "ve", "im", "dont"}),
    "fr": frozenset({"qu"}),
    "it": frozenset({"dell", "nell", "dall", "all"}),
    "el": frozenset({"απ", "γι", "στ", "κατ", "παρ", "καθ", "υπ", "επ"}),
}

# Languages whose written words may contain an inner apostrophe.
_ELIDING_LANGUAGES = frozenset({"en", "fr", "it"})


def supported_languages() -> List[str]:
    """Languages that have an alphabet and a one-letter word list here."""
    return sorted(ALPHABETS)


def fix_final_sigma(word: str) -> str:
    """Write a word-final Greek sigma as ``ς``."""
    return word[:-1] + "ς" if word.endswith("σ") else word


def is_clean_word(word: str, language: str) -> bool:
    """True if ``word`` uses only the language's letters (and allowed apostrophes)."""
    letters = ALPHABETS[language]
    if word in ELISION_FRAGMENTS.get(language, ()):
        return False
    if len(word) == 1:
        return word in SINGLE_LETTER_WORDS[language]
    parts = word.split("'") if language in _ELIDING_LANGUAGES else [word]
    return all(part and all(ch in letters for ch in part) for part in parts)


def load_vocabulary(language: str, size: int = 3000) -> List[str]:
    """The ``size`` most frequent clean words of ``language``, most frequent first."""
    if language not in ALPHABETS:
        raise ValueError(f"No alphabet defined for language {language!r}")
    vocabulary: List[str] = []
    seen = set()
    for word in wordfreq.top_n_list(language, 2 * size):
        if language == "el":
            word = fix_final_sigma(word)
        if word in seen or not is_clean_word(word, language):
            continue
        seen.add(word)
        vocabulary.append(word)
        if len(vocabulary) == size:
            return vocabulary
    raise ValueError(
        f"wordfreq has only {len(vocabulary)} clean {language} words, {size} requested"
    )


class ZipfSampler:
    """Draws words with probability proportional to 1 / (rank + 1)."""

    def __init__(self, vocabulary: Sequence[str], exponent: float = 1.0) -> None:
        self.vocabulary = list(vocabulary)
        weights = [1.0 / (rank + 1) ** exponent for rank in range(len(vocabulary))]
        self._cumulative = list(itertools.accumulate(weights))

    def sample(self, rng: random.Random, count: int) -> List[str]:
        total = self._cumulative[-1]
        return [
            self.vocabulary[bisect.bisect_right(self._cumulative, rng.random() * total)]
            for _ in range(count)
        ]


class TextSource:
    """Zipf-distributed word sequences from one language's vocabulary."""

    def __init__(self, language: str, vocabulary_size: int = 3000) -> None:
        self.sampler = ZipfSampler(load_vocabulary(language, vocabulary_size))

    def words(self, rng: random.Random, count: int) -> Tuple[str, ...]:
        return tuple(self.sampler.sample(rng, count))

    def passage(self, rng: random.Random, count: int) -> Tuple[str, ...]:
        """At least ``count`` words in sentences of 5-15 words, each closed by a period."""
        words: List[str] = []
        while len(words) < count:
            sentence = self.sampler.sample(rng, rng.randint(5, 15))
            words += sentence[:-1] + [sentence[-1] + "."]
        return tuple(words)

    def lm_sentences(
        self, rng: random.Random, count: int, exclude: Iterable[Tuple[str, ...]]
    ) -> List[Tuple[str, ...]]:
        """``count`` sentences of 3-15 words, none equal to an excluded word sequence."""
        excluded = {tuple(word.rstrip(".") for word in words) for words in exclude}
        sentences = []
        while len(sentences) < count:
            sentence = tuple(self.sampler.sample(rng, rng.randint(3, 15)))
            if sentence not in excluded:
                sentences.append(sentence)
        return sentences


@functools.lru_cache(maxsize=None)
def text_source(language: str) -> TextSource:
    return TextSource(language)


def _capitalise_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def natural_case(words: Sequence[str], language: str) -> List[str]:
    """Lower-case words in written case: English "i" (and "i'm", ...) capitalised."""
    if language != "en":
        return list(words)
    return [
        "I" + word[1:] if word.rstrip(".") == "i" or word.startswith("i'") else word
        for word in words
    ]


def written_sentence(words: Sequence[str], language: str, final_period: bool) -> str:
    """Sentence as Common Voice writes it: first letter upper case, optional period."""
    text = _capitalise_first(" ".join(natural_case(words, language)))
    return text + "." if final_period else text


def written_passage(words: Sequence[str], language: str) -> str:
    """Several sentences: a word ending in "." closes a sentence, the next one is capitalised."""
    sentences = re.split(r"(?<=\.) ", " ".join(words))
    return " ".join(
        written_sentence(sentence.split(" "), language, final_period=False)
        for sentence in sentences
    )


def normalised_text(words: Sequence[str]) -> str:
    """VoxPopuli "normed_text": lower case, no punctuation except inner apostrophes."""
    return " ".join(word.rstrip(".") for word in words)


def librispeech_text(words: Sequence[str]) -> str:
    """LibriSpeech transcript: upper case, no punctuation except apostrophes."""
    return " ".join(word.rstrip(".") for word in words).upper()
