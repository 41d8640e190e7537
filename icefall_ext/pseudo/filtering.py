"""Filtering of pseudo-labelled utterances before they are used for training.

Rules, checked in this order (a dropped id is reported under the first rule it breaks):

* ``empty`` / ``too_long``: Lugosch et al. 2022 drop pseudo-labels that are empty or longer than 630 tokens.
* ``repeated_ngram`` (off by default): transcripts stuck in a loop, i.e. some word n-gram repeated many times in
  a row, a common failure of greedy decoding on long or noisy audio.
* ``rate_too_low`` / ``rate_too_high`` (off by default): USM's ratio filter. The label's rate, non-space
  characters (or words) per second of the cut, must lie in bounds that are either fixed or estimated from
  labelled cuts per language (:func:`estimate_rate_bounds`); languages without their own bounds use pooled ones.
* ``low_confidence`` (off by default): confidence below an absolute threshold.
* ``below_keep_fraction`` (off by default): per language, only the ``keep_fraction`` most confident labels of
  those left by the rules above are kept, so a low-resource language (lower confidences) is not wiped out.

The confidence is the one the labeller stored in the supervision's ``custom["pl_confidence"]``
(:func:`icefall_ext.decode.ctc.ctc_greedy_search_with_confidence`: greedy CTC log-probability per token).
Labels without one (e.g. transducer labels) pass the confidence rules and are counted as ``no_confidence``.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from lhotse import CutSet

logger = logging.getLogger(__name__)

EMPTY = "empty"
TOO_LONG = "too_long"
REPEATED_NGRAM = "repeated_ngram"
RATE_TOO_LOW = "rate_too_low"
RATE_TOO_HIGH = "rate_too_high"
LOW_CONFIDENCE = "low_confidence"
BELOW_KEEP_FRACTION = "below_keep_fraction"

CONFIDENCE_FIELD = "pl_confidence"  # supervision custom field written by the labeller
NO_LANGUAGE = "<none>"  # report key for cuts whose supervision has no language
RATE_UNITS = ("char", "word")

# (id, text, num_tokens), optionally followed by (duration, language, confidence) for the rate/confidence rules.
PseudoLabelRecord = Tuple


@dataclass
class FilterReport:
    """What :func:`filter_pseudo_labels` kept and dropped: dropped ids per reason (reasons of enabled optional
    rules are added), counts per language, and the thresholds used."""

    total: int = 0
    kept: int = 0
    dropped: Dict[str, List[str]] = field(default_factory=lambda: {EMPTY: [], TOO_LONG: [], REPEATED_NGRAM: []})
    per_language: Dict[str, Dict[str, int]] = field(default_factory=dict)
    thresholds: Dict[str, object] = field(default_factory=dict)

    @property
    def counts(self) -> Dict[str, int]:
        return {"total": self.total, "kept": self.kept, **{r: len(ids) for r, ids in self.dropped.items()}}

    def language_summary(self) -> Dict[str, Dict[str, float]]:
        """Per language: total, kept, ``kept_fraction``, a count per reason (and ``no_confidence``)."""
        return {
            lang: {**c, "kept_fraction": c["kept"] / c["total"] if c["total"] else 0.0}
            for lang, c in sorted(self.per_language.items())
        }

    def to_dict(self) -> Dict[str, object]:
        return {
            "counts": self.counts,
            "per_language": self.language_summary(),
            "thresholds": self.thresholds,
            "dropped": {r: list(ids) for r, ids in self.dropped.items()},
        }


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


def label_rate(text: str, duration: float, unit: str = "char") -> float:
    """Non-space characters (``unit="char"``) or words (``"word"``) of ``text`` per second; inf if duration <= 0."""
    if unit not in RATE_UNITS:
        raise ValueError(f"rate unit must be one of {RATE_UNITS}, got {unit!r}")
    words = text.split()
    count = sum(len(w) for w in words) if unit == "char" else len(words)
    return count / duration if duration > 0 else math.inf


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100), interpolating linearly between closest ranks (numpy's default):
    the value at position ``(n - 1) * q / 100`` of the sorted values."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


@dataclass
class RateBounds:
    """Allowed label rates (units per second) as ``(low, high)``, per language; other languages use ``pooled``."""

    unit: str = "char"
    pooled: Tuple[float, float] = (0.0, math.inf)
    per_language: Dict[Optional[str], Tuple[float, float]] = field(default_factory=dict)
    source: str = "fixed"

    def bounds(self, language: Optional[str]) -> Tuple[float, float]:
        return self.per_language.get(language, self.pooled)

    def to_dict(self) -> Dict[str, object]:
        def js(b: Tuple[float, float]) -> List[Optional[float]]:
            return [x if math.isfinite(x) else None for x in b]  # JSON has no inf: None = unbounded

        return {"unit": self.unit, "source": self.source, "pooled": js(self.pooled),
                "per_language": {_lang_key(k): js(v) for k, v in self.per_language.items()}}


def estimate_rate_bounds(
    reference_cuts: Iterable,
    unit: str = "char",
    percentiles: Tuple[float, float] = (1.0, 99.0),
    margin: float = 0.2,
    min_cuts_per_language: int = 20,
) -> RateBounds:
    """Rate bounds from labelled cuts: ``[(1 - margin) * P_lo, (1 + margin) * P_hi]`` where ``P_lo``/``P_hi``
    are the ``percentiles`` (:func:`percentile`) of the cuts' label rates (text / cut duration).

    Computed per language (first supervision's ``language``) for languages with at least
    ``min_cuts_per_language`` usable cuts, and pooled over all cuts for the others. Cuts with an empty text or
    no duration are skipped.
    """
    lo_q, hi_q = percentiles
    if not 0 <= lo_q <= hi_q <= 100:
        raise ValueError(f"rate percentiles must satisfy 0 <= low <= high <= 100, got {percentiles}")
    if margin < 0:
        raise ValueError(f"rate margin must be >= 0, got {margin}")
    rates: Dict[Optional[str], List[float]] = {}
    for cut in reference_cuts:
        text = _cut_text(cut)
        if text.strip() and cut.duration > 0:
            rates.setdefault(_cut_language(cut), []).append(label_rate(text, cut.duration, unit))
    if not rates:
        raise ValueError("no labelled reference cut with text and duration to estimate rate bounds from")

    def widen(values: List[float]) -> Tuple[float, float]:
        return (max(0.0, (1 - margin) * percentile(values, lo_q)), (1 + margin) * percentile(values, hi_q))

    return RateBounds(
        unit=unit,
        pooled=widen([r for rs in rates.values() for r in rs]),
        per_language={lang: widen(rs) for lang, rs in rates.items() if len(rs) >= min_cuts_per_language},
        source=f"reference cuts: percentiles {lo_q:g}/{hi_q:g}, margin {margin:g}, "
        f"own bounds from {min_cuts_per_language} cuts per language",
    )


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


def _cut_language(cut) -> Optional[str]:
    return cut.supervisions[0].language if cut.supervisions else None


def _cut_confidence(cut) -> Optional[float]:
    for s in cut.supervisions:
        if s.custom and s.custom.get(CONFIDENCE_FIELD) is not None:
            return float(s.custom[CONFIDENCE_FIELD])
    return None


def _lang_key(language: Optional[str]) -> str:
    return NO_LANGUAGE if language is None else str(language)


def filter_pseudo_labels(
    cuts: Union[CutSet, Iterable[PseudoLabelRecord]],
    num_tokens: Optional[Callable[[str], int]] = None,
    max_tokens: int = 630,
    max_ngram_repeats: Optional[int] = None,
    max_ngram: int = 4,
    rate_bounds: Optional[RateBounds] = None,
    min_confidence: Optional[float] = None,
    keep_fraction: Optional[float] = None,
) -> Tuple[Union[CutSet, List[PseudoLabelRecord]], FilterReport]:
    """Drop pseudo-labels that break the rules of the module docstring (the optional ones are off by default).

    Args:
      cuts: a lhotse ``CutSet`` whose supervision texts are the pseudo-labels
        (texts of several supervisions are joined with spaces; duration, language
        and ``custom["pl_confidence"]`` come from the cut), or an iterable of
        ``(id, text, num_tokens)`` records, extended to
        ``(id, text, num_tokens, duration, language, confidence)`` for the rate
        and confidence rules.
      num_tokens: ``text -> token count`` (e.g. ``lambda t: len(sp.encode(t))``);
        required for a ``CutSet``, ignored for records.
      max_tokens: transcripts with more tokens are dropped (paper: 630).
      max_ngram_repeats: if set, drop transcripts where a word n-gram with
        ``n <= max_ngram`` occurs more than this many times back to back.
      rate_bounds: if set, drop labels whose rate (:func:`label_rate`) is
        outside the bounds of their language.
      min_confidence: if set, drop labels with a lower confidence.
      keep_fraction: if set (0 < f <= 1), per language keep the
        ``ceil(f * n)`` most confident of the ``n`` labels that have a
        confidence and pass all other rules (ties: input order).

    Returns:
      ``(kept, report)``: an eager ``CutSet`` (or list of records) in input
      order, and a :class:`FilterReport`. Each dropped id is listed under the
      first rule it breaks, in the order of the module docstring.
    """
    is_cutset = isinstance(cuts, CutSet)
    if is_cutset and num_tokens is None:
        raise ValueError("num_tokens (a tokenizer callable) is required to filter a CutSet")
    if keep_fraction is not None and not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    use_confidence = min_confidence is not None or keep_fraction is not None

    report = FilterReport()
    for reason, enabled in ((RATE_TOO_LOW, rate_bounds), (RATE_TOO_HIGH, rate_bounds),
                            (LOW_CONFIDENCE, min_confidence is not None),
                            (BELOW_KEEP_FRACTION, keep_fraction is not None)):
        if enabled:
            report.dropped[reason] = []
    report.thresholds = {
        "max_tokens": max_tokens,
        "max_ngram_repeats": max_ngram_repeats,
        "rate": rate_bounds.to_dict() if rate_bounds is not None else None,
        "min_confidence": min_confidence,
        "keep_fraction": keep_fraction,
    }

    # First pass: the per-utterance rules. entries: (item, id, language, confidence, reason or None)
    entries = []
    for item in cuts:
        if is_cutset:
            item_id, text = item.id, _cut_text(item)
            count = num_tokens(text)
            duration, language, confidence = item.duration, _cut_language(item), _cut_confidence(item)
        else:
            item_id, text, count = item[:3]
            duration, language, confidence = (tuple(item[3:6]) + (None, None, None))[:3]
        reason = _drop_reason(text, count, max_tokens, max_ngram_repeats, max_ngram)
        if reason is None and rate_bounds is not None:
            if duration is None:
                raise ValueError("the rate rule needs durations: pass a CutSet or "
                                 "(id, text, num_tokens, duration, language, confidence) records")
            low, high = rate_bounds.bounds(language)
            rate = label_rate(text, duration, rate_bounds.unit)
            reason = RATE_TOO_LOW if rate < low else (RATE_TOO_HIGH if rate > high else None)
        if reason is None and min_confidence is not None and confidence is not None and confidence < min_confidence:
            reason = LOW_CONFIDENCE
        entries.append([item, item_id, language, confidence, reason])

    # Second pass: per language, keep the most confident fraction of what is left.
    if keep_fraction is not None:
        by_language: Dict[Optional[str], List[list]] = {}
        for entry in entries:
            if entry[4] is None and entry[3] is not None:
                by_language.setdefault(entry[2], []).append(entry)
        cutoffs = {}
        for language, group in by_language.items():
            ranked = sorted(group, key=lambda e: -e[3])  # stable: ties keep input order
            num_keep = math.ceil(keep_fraction * len(group) - 1e-9)
            for entry in ranked[num_keep:]:
                entry[4] = BELOW_KEEP_FRACTION
            cutoffs[_lang_key(language)] = ranked[num_keep - 1][3] if num_keep else None
        report.thresholds["keep_fraction_cutoff"] = dict(sorted(cutoffs.items()))

    kept = []
    num_without_confidence = 0
    for item, item_id, language, confidence, reason in entries:
        stats = report.per_language.setdefault(
            _lang_key(language), {"total": 0, "kept": 0, **{r: 0 for r in report.dropped}}
        )
        stats["total"] += 1
        report.total += 1
        if reason is None:
            kept.append(item)
            stats["kept"] += 1
        else:
            report.dropped[reason].append(item_id)
            stats[reason] += 1
        if use_confidence and confidence is None and reason is None:
            stats["no_confidence"] = stats.get("no_confidence", 0) + 1
            num_without_confidence += 1
    report.kept = len(kept)

    logger.info("pseudo-label filtering: %s", report.counts)
    logger.info("pseudo-label filter thresholds: %s", report.thresholds)
    for language, stats in report.language_summary().items():
        logger.info("pseudo-label filtering [%s]: kept %d of %d (%.1f%%); %s", language, stats["kept"],
                    stats["total"], 100 * stats["kept_fraction"],
                    ", ".join(f"{k} {v}" for k, v in stats.items() if k not in ("total", "kept", "kept_fraction")))
    if num_without_confidence:
        logger.warning("%d kept pseudo-labels have no confidence (e.g. transducer labels): the confidence rules "
                       "left them in", num_without_confidence)
    for reason, ids in report.dropped.items():
        if ids:
            logger.debug("dropped (%s): %s", reason, ", ".join(ids))
    return (CutSet.from_cuts(kept) if is_cutset else kept), report
