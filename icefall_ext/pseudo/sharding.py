"""Split unlabelled cuts across ranks for pseudo-labelling, and merge the labelled shards back.

Every rank (one GPU/job) labels its own shard independently and writes it with
:func:`write_shard`; :func:`merge_shards` then checks that each cut came back
exactly once before the manifests are combined.
"""

import heapq
import logging
import os
from pathlib import Path
from typing import Iterable, List, Optional, Union

from lhotse import CutSet, combine

logger = logging.getLogger(__name__)

Pathlike = Union[str, Path]


def split_for_ranks(cuts: CutSet, world_size: int) -> List[CutSet]:
    """Partition ``cuts`` into ``world_size`` eager CutSets of nearly equal total duration.

    Greedy longest-first assignment to the currently lightest shard (ties: the
    lower rank; equal durations: input order), so the heaviest and lightest
    shards differ by at most the longest cut. Each shard keeps the input order.
    Deterministic; every cut lands in exactly one shard (some may be empty if
    there are fewer cuts than ranks). ``CutSet.split`` balances cut counts
    rather than duration, hence this function.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    cut_list = list(cuts)
    order = sorted(range(len(cut_list)), key=lambda i: (-cut_list[i].duration, i))
    loads = [(0.0, rank) for rank in range(world_size)]  # heap of (total duration, rank)
    assigned: List[List[int]] = [[] for _ in range(world_size)]
    for i in order:
        load, rank = heapq.heappop(loads)
        assigned[rank].append(i)
        heapq.heappush(loads, (load + cut_list[i].duration, rank))
    shards = [CutSet.from_cuts(cut_list[i] for i in sorted(indices)) for indices in assigned]
    logger.info(
        "split %d cuts into %d shards; durations: %s",
        len(cut_list),
        world_size,
        ", ".join(f"{load:.1f}s" for load, _ in sorted(loads, key=lambda x: x[1])),
    )
    return shards


def shard_path(out_dir: Pathlike, rank: int, name: str = "cuts") -> Path:
    """Manifest path of one rank's shard: ``<out_dir>/<name>.<rank:06d>.jsonl.gz``."""
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}")
    return Path(out_dir) / f"{name}.{rank:06d}.jsonl.gz"


def shard_paths(out_dir: Pathlike, world_size: int, name: str = "cuts") -> List[Path]:
    """The paths of all ``world_size`` shards, in rank order."""
    return [shard_path(out_dir, rank, name) for rank in range(world_size)]


def write_shard(cuts: CutSet, out_dir: Pathlike, rank: int, name: str = "cuts") -> Path:
    """Write one rank's shard atomically (temporary file, then rename) and return its path."""
    path = shard_path(out_dir, rank, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp.{os.getpid()}.{path.name}")
    try:
        cuts.to_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def merge_shards(paths: Iterable[Pathlike], expected_ids: Optional[Iterable[str]] = None) -> CutSet:
    """Combine shard manifests after checking that every cut is present exactly once.

    Raises ``FileNotFoundError`` naming the missing shard files, and
    ``ValueError`` for ids found in several shards or, when ``expected_ids`` is
    given, for expected ids that no shard holds and ids that were not expected.
    The result is lazy (shards are re-read on iteration), so memory stays flat
    for very large sets; ``.to_eager()`` or ``.to_file()`` it as needed.
    """
    paths = [Path(p) for p in paths]
    missing_files = [str(p) for p in paths if not p.is_file()]
    if missing_files:
        raise FileNotFoundError(f"{len(missing_files)} shard(s) missing: {', '.join(missing_files)}")

    # read lazily: an empty shard (more ranks than cuts) is a valid, empty manifest
    shards = [CutSet.from_jsonl_lazy(p) for p in paths]
    seen = {}
    duplicates = []
    for path, shard in zip(paths, shards):
        for cut in shard:
            if cut.id in seen:
                duplicates.append(f"{cut.id} ({seen[cut.id]} and {path})")
            else:
                seen[cut.id] = path
    if duplicates:
        raise ValueError(f"{len(duplicates)} cut id(s) appear more than once: {_preview(duplicates)}")

    if expected_ids is not None:
        expected = set(expected_ids)
        absent = sorted(expected.difference(seen))
        unexpected = sorted(set(seen).difference(expected))
        if absent or unexpected:
            raise ValueError(
                f"merged shards do not match the expected ids: {len(absent)} missing "
                f"({_preview(absent)}), {len(unexpected)} unexpected ({_preview(unexpected)})"
            )
    logger.info("merged %d shards holding %d cuts", len(paths), len(seen))
    if len(shards) == 1:  # lhotse's combine() of a single CutSet iterates its cuts instead
        return shards[0]
    return combine(*shards) if shards else CutSet()


def _preview(items: List[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
