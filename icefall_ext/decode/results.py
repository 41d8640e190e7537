"""One place that turns decoding results into files: ``recogs-*``, ``errs-*``, ``summary-*.json`` and a line of
``results.tsv``, for PyTorch decoding and sherpa-onnx decoding alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..common import atomic_write_text
from ..data.scoring import ErrorCounts, score, write_errs, write_recogs

logger = logging.getLogger(__name__)

TSV_HEADER = "exp_dir\tcheckpoints\tset\tmethod\tlm\tnum_utts\tCER\tWER\tCER_macro\n"


def collapse_reason(hyps: Sequence[str], rate: float, metric: str = "cer") -> Optional[str]:
    """Why ``hyps`` look like the output of a model that did not learn (None if they do not).

    Collapsed models emit nothing, one string for every utterance, or characters unrelated to the reference; a
    report prints "did not converge" for them instead of an error rate that would pass for a result.
    """
    n = len(hyps)
    if n == 0:
        return None
    empty = sum(not h.strip() for h in hyps) / n
    if empty >= 0.5:
        return f"{empty:.0%} empty hypotheses"
    distinct = len({" ".join(h.split()) for h in hyps})
    if n >= 10 and distinct <= max(1, n // 10):
        return f"{distinct} distinct hypotheses for {n} utterances"
    if rate >= 95.0:  # the table's own metric (CER or WER): hardly a unit right
        return f"{metric.upper()} {rate:.1f}%"
    return None


NOT_CONVERGED = "did not converge"


def error_counts(counts: ErrorCounts) -> Dict[str, int]:
    """Insertions, deletions and substitutions (kaldialign's alignment), their sum and the reference length."""
    return {"ref_len": counts.ref_len, "errors": counts.errors, "ins": counts.ins, "del": counts.dels,
            "sub": counts.subs}


def rate_cell(summary: Optional[Dict], key: str = "wer", digits: int = 2) -> str:
    """A report's table cell for ``summary[key]``: "-" when missing, :data:`NOT_CONVERGED` for a collapsed model."""
    if summary is None:
        return "-"
    if summary.get("collapsed"):
        return NOT_CONVERGED
    return f"{summary[key]:.{digits}f}"


def write_results(
    out_dir: Path,
    suffix: str,
    results: Sequence[Tuple[str, str, str]],
    languages: Sequence[Optional[str]],
    *,
    metric: str,
    source: str,
    set_name: str,
    method: str,
    checkpoints: str = "-",
    lm: Optional[str] = None,
    extra: Optional[Dict] = None,
) -> Dict:
    """Score (cut_id, ref, hyp) triples, write the files, print one line; returns the summary dict (error rates,
    and ``*_counts``: insertions, deletions, substitutions and reference length, pooled and per language)."""
    out_dir = Path(out_dir)
    refs, hyps = [r for _, r, _ in results], [h for _, _, h in results]
    cer = score(refs, hyps, languages, unit="char")
    wer = score(refs, hyps, languages, unit="word")
    write_recogs(out_dir / f"recogs-{suffix}.txt", results)
    write_errs(out_dir / f"errs-{suffix}.txt", results, cer if metric == "cer" else wer,
               unit="char" if metric == "cer" else "word")
    summary = {
        "source": source, "checkpoints": checkpoints, "set": set_name, "method": method, "lm": lm,
        "num_utts": len(results), "cer": cer.total.rate, "wer": wer.total.rate, "cer_macro": cer.macro_average,
        "per_language_cer": {k: v.rate for k, v in cer.per_language.items()},
        "per_language_wer": {k: v.rate for k, v in wer.per_language.items()},
        "cer_counts": error_counts(cer.total), "wer_counts": error_counts(wer.total),
        "per_language_cer_counts": {k: error_counts(v) for k, v in cer.per_language.items()},
        "per_language_wer_counts": {k: error_counts(v) for k, v in wer.per_language.items()},
        "collapsed": collapse_reason(hyps, (cer if metric == "cer" else wer).total.rate, metric),
        **(extra or {}),
    }
    atomic_write_text(out_dir / f"summary-{suffix}.json", json.dumps(summary, indent=2))
    table = out_dir / "results.tsv"
    with open(table, "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write(TSV_HEADER)
        f.write(f"{source}\t{checkpoints}\t{set_name}\t{method}\t{lm or '-'}\t{len(results)}\t"
                f"{cer.total.rate:.2f}\t{wer.total.rate:.2f}\t{cer.macro_average:.2f}\n")
    per_lang = " ".join(f"{k}:{v.rate:.1f}" for k, v in cer.per_language.items())
    logger.info("%s %s: CER %.2f%% WER %.2f%% (%d utts; per-language CER %s)", set_name, method, cer.total.rate,
                wer.total.rate, len(results), per_lang)
    if summary["collapsed"]:
        logger.warning("%s %s: the model did not converge (%s)", set_name, method, summary["collapsed"])
    print(f"{set_name}\t{method}\tCER {cer.total.rate:.2f}\tWER {wer.total.rate:.2f}\t{per_lang}")
    return summary
