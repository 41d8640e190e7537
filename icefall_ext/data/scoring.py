"""WER / CER with a per-language breakdown, and icefall-style ``recogs-*.txt`` / ``errs-*.txt`` files.

Alignment and edit distances come from kaldialign. CER is computed over characters with runs of whitespace
collapsed to a single space, which is kept as a character (so word-boundary errors count).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import kaldialign

from ..common import atomic_write_text

EPS = "*"


def units(text: str, unit: str) -> List[str]:
    """Split ``text`` into words (``unit='word'``) or characters (``unit='char'``)."""
    words = text.split()
    if unit == "word":
        return words
    if unit == "char":
        return list(" ".join(words))
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


@dataclass
class ErrorCounts:
    ref_len: int = 0
    ins: int = 0
    dels: int = 0
    subs: int = 0
    num_utts: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def rate(self) -> float:
        """Error rate in percent (errors / reference length)."""
        return 100.0 * self.errors / max(1, self.ref_len)

    def add(self, other: "ErrorCounts") -> None:
        self.ref_len += other.ref_len
        self.ins += other.ins
        self.dels += other.dels
        self.subs += other.subs
        self.num_utts += other.num_utts


def count_errors(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    d = kaldialign.edit_distance(list(ref), list(hyp))
    return ErrorCounts(ref_len=len(ref), ins=d["ins"], dels=d["del"], subs=d["sub"], num_utts=1)


@dataclass
class ScoreReport:
    unit: str
    total: ErrorCounts = field(default_factory=ErrorCounts)
    per_language: Dict[str, ErrorCounts] = field(default_factory=dict)

    @property
    def macro_average(self) -> float:
        """Average of the per-language error rates (each language counts once)."""
        if not self.per_language:
            return self.total.rate
        return sum(c.rate for c in self.per_language.values()) / len(self.per_language)


def score(
    refs: Sequence[str],
    hyps: Sequence[str],
    languages: Optional[Sequence[Optional[str]]] = None,
    unit: str = "char",
) -> ScoreReport:
    """Pooled and per-language error counts of ``hyps`` against ``refs``."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    report = ScoreReport(unit=unit)
    per_lang: Dict[str, ErrorCounts] = defaultdict(ErrorCounts)
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        c = count_errors(units(ref, unit), units(hyp, unit))
        report.total.add(c)
        if languages is not None and languages[i] is not None:
            per_lang[languages[i]].add(c)
    report.per_language = dict(sorted(per_lang.items()))
    return report


def write_recogs(path: Path, results: Sequence[Tuple[str, str, str]]) -> None:
    """``recogs`` file: for each (cut_id, ref, hyp) a ``ref=`` and a ``hyp=`` line, sorted by id."""
    lines = []
    for cut_id, ref, hyp in sorted(results):
        lines.append(f"{cut_id}:\tref={ref.split()}\n{cut_id}:\thyp={hyp.split()}\n")
    atomic_write_text(Path(path), "".join(lines))


def read_recogs(path: Path) -> Dict[str, Tuple[List[str], List[str]]]:
    """Inverse of :func:`write_recogs`: cut id -> (reference words, hypothesis words)."""
    import ast

    out: Dict[str, Tuple[List[str], List[str]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        cut_id, _, field = line.rpartition(":\t")
        kind, _, words = field.partition("=")
        ref, hyp = out.get(cut_id, ([], []))
        out[cut_id] = (ast.literal_eval(words), hyp) if kind == "ref" else (ref, ast.literal_eval(words))
    return out


def write_errs(
    path: Path,
    results: Sequence[Tuple[str, str, str]],
    report: ScoreReport,
    unit: str = "word",
) -> None:
    """``errs`` file: summary, per-language table, then each utterance aligned as ``(ref->hyp)`` edits."""
    t = report.total
    out = [
        f"%{'WER' if report.unit == 'word' else 'CER'} {t.rate:.2f} [ {t.errors} / {t.ref_len}, {t.ins} ins, "
        f"{t.dels} del, {t.subs} sub ] over {t.num_utts} utterances\n",
    ]
    if report.per_language:
        out.append(f"\nPER-LANGUAGE {report.unit.upper()} ER (macro average {report.macro_average:.2f}):\n")
        out.append("language\tutts\tref_len\tins\tdel\tsub\terror_rate\n")
        for lang, c in report.per_language.items():
            out.append(f"{lang}\t{c.num_utts}\t{c.ref_len}\t{c.ins}\t{c.dels}\t{c.subs}\t{c.rate:.2f}\n")
    out.append("\nPER-UTT DETAILS: corr or (ref->hyp)\n")
    for cut_id, ref, hyp in sorted(results):
        ali = kaldialign.align(units(ref, unit), units(hyp, unit), EPS)
        shown = [r if r == h else f"({r}->{h})" for r, h in ali]
        sep = " " if unit == "word" else ""
        out.append(f"{cut_id}:\t{sep.join(shown)}\n")
    atomic_write_text(Path(path), "".join(out))
