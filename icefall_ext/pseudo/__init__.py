"""Pseudo-labelling: slimIPL cache and schedule, pseudo-label filtering, rank sharding.

Crop-and-stitch inference used by the cropping warm-up lives in
:mod:`icefall_ext.decode.chunked`.
"""

from icefall_ext.pseudo.filtering import FilterReport, filter_pseudo_labels, longest_ngram_repeat
from icefall_ext.pseudo.sharding import merge_shards, shard_path, shard_paths, split_for_ranks, write_shard
from icefall_ext.pseudo.slimipl import (
    LABELLED,
    UNLABELLED,
    CacheEntry,
    PseudoLabelCache,
    SlimIpl,
    SlimIplSchedule,
)

__all__ = [
    "LABELLED",
    "UNLABELLED",
    "CacheEntry",
    "FilterReport",
    "PseudoLabelCache",
    "SlimIpl",
    "SlimIplSchedule",
    "filter_pseudo_labels",
    "longest_ngram_repeat",
    "merge_shards",
    "shard_path",
    "shard_paths",
    "split_for_ranks",
    "write_shard",
]
