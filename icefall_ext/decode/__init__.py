"""Decoding: CTC greedy / prefix beam search (with word n-gram fusion), transducer greedy / modified beam search,
n-gram LM training and querying, and LM weight tuning."""

from icefall_ext.decode.ctc import (
    CtcHypothesis,
    ctc_greedy_search,
    ctc_prefix_beam_search,
    ctc_prefix_beam_search_nbest,
    tokens_to_text,
)
from icefall_ext.decode.lm_tuning import grid_search_alpha_beta
from icefall_ext.decode.ngram import NgramLm, train_ngram_lm
from icefall_ext.decode.transducer import greedy_search_batch, modified_beam_search, modified_beam_search_nbest

__all__ = [
    "CtcHypothesis",
    "NgramLm",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "ctc_prefix_beam_search_nbest",
    "greedy_search_batch",
    "grid_search_alpha_beta",
    "modified_beam_search",
    "modified_beam_search_nbest",
    "tokens_to_text",
    "train_ngram_lm",
]
