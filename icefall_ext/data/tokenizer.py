"""Token tables: multilingual characters and sentencepiece BPE, both written as ``tokens.txt``.

``tokens.txt`` has one ``symbol id`` per line with ``<blk> 0`` first: the format icefall writes and sherpa-onnx
reads. In character tables the space is the symbol ``▁`` (a space cannot appear in ``tokens.txt``); case and
punctuation are kept. A lang dir holding ``bpe.model`` is a BPE tokenizer, otherwise a character tokenizer.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Protocol, Sequence

from ..common import atomic_write_text

logger = logging.getLogger(__name__)

BLANK = "<blk>"
UNK = "<unk>"
SPACE = "▁"


class Tokenizer(Protocol):
    token_table: List[str]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, skip_unknown: bool = False) -> List[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def can_encode(self, text: str) -> bool: ...


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def write_tokens_txt(symbols: Sequence[str], path: Path) -> None:
    """Write ``symbol id`` lines atomically; ``symbols[0]`` must be ``<blk>``."""
    if symbols[0] != BLANK:
        raise ValueError(f"the first token must be {BLANK}, got {symbols[0]!r}")
    bad = [s for s in symbols if not s or any(ch.isspace() for ch in s)]
    if bad:
        raise ValueError(f"tokens may not be empty or contain whitespace: {bad[:5]}")
    atomic_write_text(Path(path), "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))


def read_tokens_txt(path: Path) -> List[str]:
    """Read ``tokens.txt`` into a list indexed by id; ids must be 0..N-1 with ``<blk>`` at 0."""
    table = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: expected 'symbol id', got {line!r}")
        table[int(parts[1])] = parts[0]
    if sorted(table) != list(range(len(table))):
        raise ValueError(f"{path}: ids are not 0..{len(table) - 1}")
    symbols = [table[i] for i in range(len(table))]
    if symbols[0] != BLANK:
        raise ValueError(f"{path}: id 0 must be {BLANK}, got {symbols[0]!r}")
    return symbols


class CharTokenizer:
    """Characters as tokens (case and punctuation kept, space = ``▁``)."""

    def __init__(self, token_table: Sequence[str]) -> None:
        self.token_table = list(token_table)
        self._ids = {s: i for i, s in enumerate(self.token_table)}

    @property
    def vocab_size(self) -> int:
        return len(self.token_table)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "CharTokenizer":
        """Table of every character seen at least ``min_count`` times, most frequent first (ties by code point)."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(normalize_whitespace(text).replace(" ", SPACE))
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls([BLANK] + chars)

    def _symbols(self, text: str) -> str:
        return normalize_whitespace(text).replace(" ", SPACE)

    def can_encode(self, text: str) -> bool:
        return all(c in self._ids for c in self._symbols(text))

    def unknown_chars(self, text: str) -> List[str]:
        return sorted({c for c in self._symbols(text) if c not in self._ids})

    def encode(self, text: str, skip_unknown: bool = False) -> List[int]:
        """Token ids of ``text``; characters outside the table raise KeyError (filter with ``can_encode``),
        or are left out with ``skip_unknown`` (e.g. for a validation loss on held-out text)."""
        if skip_unknown:
            return [self._ids[c] for c in self._symbols(text) if c in self._ids]
        return [self._ids[c] for c in self._symbols(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.token_table[i] for i in ids if i != 0).replace(SPACE, " ").strip()

    def save(self, lang_dir: Path) -> None:
        write_tokens_txt(self.token_table, Path(lang_dir) / "tokens.txt")


class BpeTokenizer:
    """sentencepiece model with ``<blk>`` at id 0 and ``<unk>`` at id 1."""

    def __init__(self, model_path: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.token_table = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        if self.token_table[0] != BLANK:
            raise ValueError(f"{model_path}: id 0 is {self.token_table[0]!r}, expected {BLANK}")
        self._unk = self.sp.unk_id()

    @property
    def vocab_size(self) -> int:
        return len(self.token_table)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        lang_dir: Path,
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
    ) -> "BpeTokenizer":
        """Train ``lang_dir/bpe.model`` on ``texts`` and write ``tokens.txt`` beside it."""
        import sentencepiece as spm

        lang_dir = Path(lang_dir)
        lang_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "text.txt"
            corpus.write_text("\n".join(normalize_whitespace(t) for t in texts if t.strip()) + "\n", encoding="utf-8")
            prefix = Path(tmp) / "bpe"
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                user_defined_symbols=[BLANK],
                unk_id=1,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                hard_vocab_limit=False,
                minloglevel=2,
            )
            os.replace(f"{prefix}.model", lang_dir / "bpe.model")
        tok = cls(lang_dir / "bpe.model")
        write_tokens_txt(tok.token_table, lang_dir / "tokens.txt")
        return tok

    def can_encode(self, text: str) -> bool:
        return self._unk not in self.encode(text)

    def encode(self, text: str, skip_unknown: bool = False) -> List[int]:
        """Token ids of ``text``; unknown pieces become ``<unk>``, or are left out with ``skip_unknown``."""
        ids = list(self.sp.encode(normalize_whitespace(text)))
        return [i for i in ids if i != self._unk] if skip_unknown else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i for i in ids if i != 0])

    def save(self, lang_dir: Path) -> None:
        write_tokens_txt(self.token_table, Path(lang_dir) / "tokens.txt")


def load_tokenizer(lang_dir: Path) -> "CharTokenizer | BpeTokenizer":
    """The tokenizer stored in ``lang_dir`` (``bpe.model`` -> BPE, else ``tokens.txt`` -> characters)."""
    lang_dir = Path(lang_dir)
    if (lang_dir / "bpe.model").is_file():
        return BpeTokenizer(lang_dir / "bpe.model")
    if (lang_dir / "tokens.txt").is_file():
        return CharTokenizer(read_tokens_txt(lang_dir / "tokens.txt"))
    raise FileNotFoundError(f"{lang_dir}: neither bpe.model nor tokens.txt found (run the token stage first)")
