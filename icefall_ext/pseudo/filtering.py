"""Filtering of pseudo-labelled utterances before they are used for training.

Lugosch et al. 2022 drop pseudo-labels that are empty or longer than 630
tokens. An optional rule (off by default) also drops transcripts stuck in a
loop, i.e. some word n-gram repeated many times in a row, a common failure of
greedy decoding on long or noisy audio.
"""

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from lhotse import CutSet

logger = logging.getLogger(__name__)

EMPTY = "empty"
TOO_LONG = "too_long"
REPEATED_NGRAM = "repeated_ngram"

PseudoLabelRecord = Tuple[str, str, int]  # (id, text, num_tokens)


@dataclass
class FilterReport:
    """What :func:`filter_pseudo_labels` kept and dropped, with the dropped ids per reason."""

    total: int = 0
    kept: int = 0
    dropped: Dict[str, List[str]] = field(default_factory=lambda: {EMPTY: [], TOO_LONG: [], REPEATED_NGRAM: []})

    @property
    def counts(self) -> Dict[str, int]:
        return {"total": self.total, "kept": self.kept, **{r: len(ids) for r, ids in self.dropped.items()}}

    def to_dict(self) -> Dict[str, object]:
        return {"counts": self.counts, "dropped": {r: list(ids) for r, ids in self.dropped.items()}}


def longest_ngram_repeat(units: Sequence[str], max_n: int) -> int:
    """Largest number of back-to-back copies of any n-gram (``1 <= n <= max_n``) in ``units``.

    "a b a b a b c" has the bigram "a b" three times in a row, so the result is 3.
    Returns 0 for an empty sequence and 1 when nothing repeats.
    """
    best = 1 if units else 0
    for n in range(1, max_n + 1):
        for start in range(n):
            # Walk the sequence in steps of n from this phase, counting equal consecutive n-grams.
            run = 1
            for i in range(start + n, len(units) - n + 1, n):
                if units[i : i + n] == units[i - n : i]:
                    run += 1
                    best = max(best, run)
                else:
                    run = 1
    return best


def _drop_reason(
    text: str,
    num_tokens: int,
    max_tokens: int,
    max_ngram_repeats: Optional[int],
    max_ngram: int,
) -> Optional[str]:
    if not text.strip() or num_tokens == 0:
        return EMPTY
    if num_tokens > max_tokens:
        return TOO_LONG
    if max_ngram_repeats is not None and longest_ngram_repeat(text.split(), max_ngram) > max_ngram_repeats:
        return REPEATED_NGRAM
    return None


def _cut_text(cut) -> str:
    return " ".join(s.text for s in cut.supervisions if s.text)


def filter_pseudo_labels(
    cuts: Union[CutSet, Iterable[PseudoLabelRecord]],
    num_tokens: Optional[Callable[[str], int]] = None,
    max_tokens: int = 630,
    max_ngram_repeats: Optional[int] = None,
    max_ngram: int = 4,
) -> Tuple[Union[CutSet, List[PseudoLabelRecord]], FilterReport]:
    """Drop empty pseudo-labels, those longer than ``max_tokens`` and (optionally) looping ones.

    Args:
      cuts: a lhotse ``CutSet`` whose supervision texts are the pseudo-labels
        (texts of several supervisions are joined with spaces), or an iterable
        of ``(id, text, num_tokens)`` records.
      num_tokens: ``text -> token count`` (e.g. ``lambda t: len(sp.encode(t))``);
        required for a ``CutSet``, ignored for records.
      max_tokens: transcripts with more tokens are dropped (paper: 630).
      max_ngram_repeats: if set, drop transcripts where a word n-gram with
        ``n <= max_ngram`` occurs more than this many times back to back.

    Returns:
      ``(kept, report)``: an eager ``CutSet`` (or list of records) in input
      order, and a :class:`FilterReport`. Each dropped id is listed under the
      first rule it breaks, in the order empty, too_long, repeated_ngram.
    """
    is_cutset = isinstance(cuts, CutSet)
    if is_cutset and num_tokens is None:
        raise ValueError("num_tokens (a tokenizer callable) is required to filter a CutSet")

    report = FilterReport()
    kept = []
    for item in cuts:
        if is_cutset:
            item_id, text = item.id, _cut_text(item)
            count = num_tokens(text)
        else:
            item_id, text, count = item
        report.total += 1
        reason = _drop_reason(text, count, max_tokens, max_ngram_repeats, max_ngram)
        if reason is None:
            kept.append(item)
        else:
            report.dropped[reason].append(item_id)
    report.kept = len(kept)

    logger.info("pseudo-label filtering: %s", report.counts)
    for reason, ids in report.dropped.items():
        if ids:
            logger.debug("dropped (%s): %s", reason, ", ".join(ids))
    return (CutSet.from_cuts(kept) if is_cutset else kept), report
