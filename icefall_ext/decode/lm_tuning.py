"""Grid search of the LM weight ``alpha`` and word bonus ``beta`` for CTC prefix beam search with a word n-gram."""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
from typing import Dict, List, Optional, Sequence, Tuple, Union

import kaldialign
import torch

from icefall_ext.data.scoring import units
from icefall_ext.decode.ctc import ctc_prefix_beam_search, tokens_to_text
from icefall_ext.decode.ngram import NgramLm

logger = logging.getLogger(__name__)


def _units(text: str, metric: str) -> List[str]:
    """Words for WER; characters (spaces included, runs of whitespace as one) for CER."""
    return units(text, "word" if metric == "wer" else "char")


# what each forked grid worker decodes (set before the pool forks, so it is inherited instead of pickled)
_JOB: Optional[dict] = None


def _decode_grid_point(point: Tuple[float, float]) -> int:
    """Total errors of the beam search with LM weight / word bonus ``point`` on ``_JOB``'s utterances."""
    job = _JOB
    alpha, beta = point
    errors = 0
    refs = iter(job["ref_units"])
    lms = job["lm"] if isinstance(job["lm"], (list, tuple)) else [job["lm"]] * len(job["log_probs"])
    for log_probs, lens, lm in zip(job["log_probs"], job["lens"], lms):
        for ids in ctc_prefix_beam_search(log_probs, lens, job["beam"], lm=lm, token_table=job["token_table"],
                                          alpha=alpha, beta=beta, prune_topk=job["prune_topk"],
                                          token_min_logprob=job["token_min_logprob"]):
            hyp = _units(tokens_to_text(ids, job["token_table"]), job["metric"])
            errors += kaldialign.edit_distance(next(refs), hyp)["total"]
    return errors


def _single_thread_worker() -> None:
    torch.set_num_threads(1)


def grid_search_alpha_beta(
    log_probs_list: Sequence[torch.Tensor],
    lens_list: Sequence[torch.Tensor],
    refs: Sequence[str],
    token_table: Sequence[str],
    lm: Union[NgramLm, Sequence[Optional[NgramLm]]],
    alphas: Sequence[float],
    betas: Sequence[float],
    beam: int = 8,
    metric: str = "wer",
    prune_topk: int = 16,
    token_min_logprob: float = -10.0,
    num_jobs: int = 1,
) -> Tuple[float, float, List[Dict[str, float]]]:
    """Decode every (N, T, V) batch with each (alpha, beta) and score against ``refs`` (in batch order).

    ``lm``: one LM for every batch, or a list with each batch's (e.g. its language's; None: no LM).
    Returns ``(best_alpha, best_beta, rows)``; each row holds alpha, beta, errors, ref_len and error_rate.
    Ties go to the smaller alpha, then the smaller beta (alpha = 0 is plain prefix beam search).
    The beam search is single-threaded Python, so ``num_jobs`` > 1 decodes grid points in that many forked
    processes (same rows, in the same order, as ``num_jobs=1``).
    """
    global _JOB
    if metric not in ("wer", "cer"):
        raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
    num_utts = sum(int(lens.numel()) for lens in lens_list)
    if num_utts != len(refs):
        raise ValueError(f"{num_utts} utterances but {len(refs)} references")
    if isinstance(lm, (list, tuple)) and len(lm) != len(log_probs_list):
        raise ValueError(f"{len(lm)} LMs for {len(log_probs_list)} batches")
    ref_units = [_units(ref, metric) for ref in refs]
    ref_len = sum(len(units) for units in ref_units)
    points = list(itertools.product(alphas, betas))
    _JOB = dict(log_probs=log_probs_list, lens=lens_list, ref_units=ref_units, lm=lm, token_table=token_table,
                beam=beam, metric=metric, prune_topk=prune_topk, token_min_logprob=token_min_logprob)
    num_jobs = max(1, min(num_jobs, len(points)))
    pool = (multiprocessing.get_context("fork").Pool(num_jobs, initializer=_single_thread_worker)
            if num_jobs > 1 else contextlib.nullcontext())
    try:
        with pool:
            all_errors = (pool.imap if num_jobs > 1 else map)(_decode_grid_point, points)
            rows = []
            for (alpha, beta), errors in zip(points, all_errors):
                row = {"alpha": alpha, "beta": beta, "errors": errors, "ref_len": ref_len,
                       "error_rate": errors / max(ref_len, 1)}
                logger.info("alpha=%g beta=%g %s=%.2f%% (%d/%d)", alpha, beta, metric, 100 * row["error_rate"],
                            errors, ref_len)
                rows.append(row)
    finally:
        _JOB = None
    best = min(rows, key=lambda r: (r["errors"], r["alpha"], r["beta"]))
    return best["alpha"], best["beta"], rows
