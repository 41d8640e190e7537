"""Text for the espeak-ng mini corpus: real sentences where a Debian package ships them, else words.

* Sentences (:class:`SentenceSource`): en, de, es, it and ru take human-written
  sentences from the Debian ``fortunes`` packages (``fortunes``, ``fortunes-de``,
  ``fortunes-es``, ``fortunes-it``, ``fortunes-ru``; the offensive ``off/``
  collections are never read). Each fortune is split into sentences, lower-cased,
  stripped of punctuation and kept only if every word is a clean word of the
  language's alphabet and 90% of its words are in wordfreq's list for the
  language (which drops quotes in other languages). Every sentence belongs to
  one split (train 80%, dev 10%, test 10%) by a hash of its text, so dev/test
  transcripts are sentences that no training clip and no LM text contains.
* Words (:class:`WordSource`): fr and el, which have no such package, draw
  Zipf-distributed words from ``wordfreq.top_n_list`` (real words of each
  language, most frequent first). The lists are cleaned: only letters of the
  language's alphabet (plus an inner apostrophe where the language elides), no
  single-letter tokens except genuine one-letter words, no stray pieces of elided
  words, and Greek word-final sigma restored (the lists store ``σ`` where the
  spelling is ``ς``). A 4-gram LM has nothing to learn from such text.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import os
import random
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple, Union

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
    "pt": _LATIN + "áâãàçéêíóôõú",
    "nl": _LATIN + "éëïöü",
    "pl": _LATIN + "ąćęłńóśźż",
    "sv": _LATIN + "åäö",
    "fi": _LATIN + "äö",
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
    "pt": frozenset({"a", "e", "o", "é", "à"}),
    "nl": frozenset(),
    "pl": frozenset({"a", "i", "o", "u", "w", "z"}),
    "sv": frozenset({"i", "å", "ö"}),
    "fi": frozenset(),
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


SPLITS = ("train", "dev", "test")


def join_sentences(next_sentence: Callable[[], Sequence[str]], enough: Callable[[List[str]], bool]) -> Tuple[str, ...]:
    """Words of sentences drawn one after the other, the last word of each closed by a period, until ``enough``."""
    words: List[str] = []
    while not enough(words):
        sentence = list(next_sentence())
        words += sentence[:-1] + [sentence[-1] + "."]
    return tuple(words)


class WordSource:
    """Zipf-distributed word sequences from one language's vocabulary (no held-out text: every split alike)."""

    kind = "words"

    def __init__(self, language: str, vocabulary_size: int = 3000) -> None:
        self.sampler = ZipfSampler(load_vocabulary(language, vocabulary_size))

    def words(self, rng: random.Random, count: int) -> Tuple[str, ...]:
        return tuple(self.sampler.sample(rng, count))

    def utterance(self, rng: random.Random, split: str) -> Tuple[Tuple[str, ...], int]:
        """Candidate words for one labelled utterance and how many of them to prefer (0: fit a prefix)."""
        return self.words(rng, 40), 0

    def sentences_in_a_row(self, rng: random.Random, split: str, seconds: float) -> Tuple[str, ...]:
        """Sentences (last word of each ending in ".") that espeak-ng reads in about ``seconds`` at -s 175."""
        return self.passage(rng, max(3, round(seconds * CHARS_PER_SECOND_AT_175 / 6.5)))

    def passage(self, rng: random.Random, count: int, split: str = "train") -> Tuple[str, ...]:
        """At least ``count`` words in sentences of 5-15 words, each closed by a period."""
        return join_sentences(lambda: self.sampler.sample(rng, rng.randint(5, 15)), lambda w: len(w) >= count)

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


FORTUNES_DIR = Path(os.environ.get("FORTUNES_DIR", "/usr/share/games/fortunes"))
# Debian package -> its directories under FORTUNES_DIR ("" = the top level, which fortunes-it shares with
# English: the language filter of normalise_sentence keeps each sentence in its own language).
FORTUNE_PACKAGES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "en": ("fortunes", ("",)),
    "de": ("fortunes-de", ("de",)),
    "es": ("fortunes-es", ("es",)),
    "it": ("fortunes-it", ("", "it")),
    "ru": ("fortunes-ru", ("ru",)),
}
# espeak-ng says about 15 characters per second at -s 175 in every language used here.
CHARS_PER_SECOND_AT_175 = 15.0
_PUNCTUATION = re.compile(r"[\"“”„«»‹›()\[\]{}<>*_/\\|,;:.!?¡¿…–—~=+#^-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def fortune_files(language: str, root: Path = FORTUNES_DIR) -> List[Path]:
    """The fortune collections of ``language`` (no ``.dat`` indexes, ``.u8`` links or ``off/`` collections)."""
    package, subdirectories = FORTUNE_PACKAGES[language]
    files = sorted(
        p for sub in subdirectories for p in (root / sub).glob("*")
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )
    if not (root / subdirectories[-1]).is_dir() or not files:
        raise FileNotFoundError(
            f"no {language} fortunes under {root / subdirectories[-1]}: install the Debian package {package} "
            "(bash utils/install.sh does), or set FORTUNES_DIR"
        )
    return files


def fortune_sentences(text: str) -> Iterator[str]:
    """Raw sentences of a fortune file: entries split at "%" lines, attributions ("-- Author") dropped."""
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        body = " ".join(line.strip() for line in entry.splitlines() if not line.strip().startswith("--"))
        yield from _SENTENCE_END.split(body)


def normalise_sentence(raw: str, language: str, vocabulary: frozenset, rival: frozenset) -> Tuple[str, ...]:
    """Lower-case words of a real sentence, or () if it is not clean text of ``language``.

    ``vocabulary``: the language's frequent words, which must make up 90% of the sentence; ``rival``: those of
    the language most often quoted in its collections, which must not claim more of its words than it does.
    """
    text = raw.lower().replace("’", "'").replace("`", "'")
    words = tuple(_PUNCTUATION.sub(" ", text).split())
    if language == "el":
        words = tuple(fix_final_sigma(w) for w in words)
    if not 4 <= len(words) <= 20 or not all(is_clean_word(w, language) for w in words):
        return ()
    if sum(w in vocabulary for w in words) < 0.9 * len(words):
        return ()
    if sum(w in rival and w not in vocabulary for w in words) >= sum(w in vocabulary and w not in rival for w in words):
        return ()
    return words


def sentence_split(words: Sequence[str]) -> str:
    """The split a sentence belongs to, by a hash of its text: train 80%, dev 10%, test 10%."""
    bucket = int(hashlib.sha1(" ".join(words).encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


class SentenceSource:
    """Real sentences of one language, each in exactly one split (see :func:`sentence_split`)."""

    kind = "sentences"

    def __init__(self, language: str, root: Path = FORTUNES_DIR) -> None:
        vocabulary = frozenset(wordfreq.top_n_list(language, 50000))
        rival = frozenset(wordfreq.top_n_list("it" if language == "en" else "en", 50000))
        seen, pools = set(), {split: [] for split in SPLITS}
        for path in fortune_files(language, root):
            for raw in fortune_sentences(path.read_text(encoding="utf-8", errors="replace")):
                words = normalise_sentence(raw, language, vocabulary, rival)
                if words and words not in seen:
                    seen.add(words)
                    pools[sentence_split(words)].append(words)
        self.pools: Dict[str, List[Tuple[str, ...]]] = pools
        # Labelled clips (1-8 s) use sentences espeak-ng reads in about 1.3-6 s.
        self.short = {s: [w for w in pool if 20 <= len(" ".join(w)) <= 85] for s, pool in pools.items()}

    def _draw(self, rng: random.Random, split: str, short: bool) -> Tuple[str, ...]:
        return rng.choice((self.short if short else self.pools)[split])

    def utterance(self, rng: random.Random, split: str) -> Tuple[Tuple[str, ...], int]:
        """A whole sentence (preferred), then another one to draw from if it is too short to fit."""
        first = self._draw(rng, split, short=True)
        return first + self._draw(rng, split, short=True), len(first)

    def sentences_in_a_row(self, rng: random.Random, split: str, seconds: float) -> Tuple[str, ...]:
        """Whole sentences (last word of each ending in ".") that espeak-ng reads in about ``seconds`` at -s 175."""
        return join_sentences(lambda: self._draw(rng, split, short=False),
                                  lambda w: len(" ".join(w)) >= seconds * CHARS_PER_SECOND_AT_175)

    def passage(self, rng: random.Random, count: int, split: str = "train") -> Tuple[str, ...]:
        """At least ``count`` words of sentences in a row, each closed by a period."""
        return join_sentences(lambda: self._draw(rng, split, short=False), lambda w: len(w) >= count)

    def lm_sentences(
        self, rng: random.Random, count: int, exclude: Iterable[Tuple[str, ...]]
    ) -> List[Tuple[str, ...]]:
        """Up to ``count`` training-split sentences that no clip speaks (never a dev/test sentence)."""
        excluded = {tuple(word.rstrip(".") for word in words) for words in exclude}
        sentences = [s for s in self.pools["train"] if s not in excluded]
        rng.shuffle(sentences)
        return sentences[:count]


TextSource = Union[WordSource, SentenceSource]


@functools.lru_cache(maxsize=None)
def text_source(language: str) -> TextSource:
    """The language's real sentences where a fortunes package ships them, else its word sampler."""
    return SentenceSource(language) if language in FORTUNE_PACKAGES else WordSource(language)


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
