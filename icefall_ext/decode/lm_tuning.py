"""Grid search of the LM weight ``alpha`` and word bonus ``beta`` for CTC prefix beam search with a word n-gram."""

from __future__ import annotations

import itertools
import logging
from typing import Dict, List, Sequence, Tuple

import kaldialign
import torch

from icefall_ext.data.scoring import units
from icefall_ext.decode.ctc import ctc_prefix_beam_search, tokens_to_text
from icefall_ext.decode.ngram import NgramLm

logger = logging.getLogger(__name__)


def _units(text: str, metric: str) -> List[str]:
    """Words for WER; characters (spaces included, runs of whitespace as one) for CER."""
    return units(text, "word" if metric == "wer" else "char")


def grid_search_alpha_beta(
    log_probs_list: Sequence[torch.Tensor],
    lens_list: Sequence[torch.Tensor],
    refs: Sequence[str],
    token_table: Sequence[str],
    lm: NgramLm,
    alphas: Sequence[float],
    betas: Sequence[float],
    beam: int = 8,
    metric: str = "wer",
    prune_topk: int = 16,
    token_min_logprob: float = -10.0,
) -> Tuple[float, float, List[Dict[str, float]]]:
    """Decode every (N, T, V) batch with each (alpha, beta) and score against ``refs`` (in batch order).

    Returns ``(best_alpha, best_beta, rows)``; each row holds alpha, beta, errors, ref_len and error_rate.
    Ties go to the smaller alpha, then the smaller beta (alpha = 0 is plain prefix beam search).
    """
    if metric not in ("wer", "cer"):
        raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
    num_utts = sum(int(lens.numel()) for lens in lens_list)
    if num_utts != len(refs):
        raise ValueError(f"{num_utts} utterances but {len(refs)} references")
    ref_units = [_units(ref, metric) for ref in refs]
    ref_len = sum(len(units) for units in ref_units)
    rows = []
    for alpha, beta in itertools.product(alphas, betas):
        hyps: List[str] = []
        for log_probs, lens in zip(log_probs_list, lens_list):
            for ids in ctc_prefix_beam_search(
                log_probs,
                lens,
                beam,
                lm=lm,
                token_table=token_table,
                alpha=alpha,
                beta=beta,
                prune_topk=prune_topk,
                token_min_logprob=token_min_logprob,
            ):
                hyps.append(tokens_to_text(ids, token_table))
        errors = sum(
            kaldialign.edit_distance(ref, _units(hyp, metric))["total"] for ref, hyp in zip(ref_units, hyps)
        )
        error_rate = errors / max(ref_len, 1)
        row = {"alpha": alpha, "beta": beta, "errors": errors, "ref_len": ref_len, "error_rate": error_rate}
        logger.info("alpha=%g beta=%g %s=%.2f%% (%d/%d)", alpha, beta, metric, 100 * row["error_rate"], errors, ref_len)
        rows.append(row)
    best = min(rows, key=lambda r: (r["errors"], r["alpha"], r["beta"]))
    return best["alpha"], best["beta"], rows
