"""Pseudo-label filtering rules and rank sharding / merging of lhotse cut sets."""

import random

import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment

from icefall_ext.pseudo.filtering import filter_pseudo_labels, longest_ngram_repeat
from icefall_ext.pseudo.sharding import merge_shards, shard_path, shard_paths, split_for_ranks, write_shard


def _cut(cut_id: str, duration: float, text=None) -> MonoCut:
    supervisions = []
    if text is not None:
        supervisions.append(
            SupervisionSegment(id=cut_id, recording_id=f"rec-{cut_id}", start=0.0, duration=duration, text=text)
        )
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=supervisions)


def _char_tokens(text: str) -> int:
    """A character tokenizer: one token per non-space character, one per word boundary."""
    words = text.split()
    return sum(len(w) for w in words) + max(len(words) - 1, 0)


# ---- filtering ----


def test_filter_cutset_by_paper_rules():
    cuts = CutSet.from_cuts(
        [
            _cut("ok-short", 1.0, "hi"),
            _cut("blank", 2.0, "   "),
            _cut("no-sup", 2.0),
            _cut("at-limit", 3.0, "a" * 10),
            _cut("over-limit", 3.0, "a" * 11),
            _cut("ok-words", 3.0, "ab cd"),
            _cut("loop", 3.0, "xy xy xy"),
        ]
    )
    kept, report = filter_pseudo_labels(cuts, num_tokens=_char_tokens, max_tokens=10)
    assert isinstance(kept, CutSet)
    assert [c.id for c in kept] == ["ok-short", "at-limit", "ok-words", "loop"]  # loop rule is off by default
    assert report.dropped == {"empty": ["blank", "no-sup"], "too_long": ["over-limit"], "repeated_ngram": []}
    assert report.counts == {"total": 7, "kept": 4, "empty": 2, "too_long": 1, "repeated_ngram": 0}
    assert report.to_dict()["counts"]["kept"] == 4


def test_filter_optional_loop_rule_and_reason_precedence():
    records = [
        ("a", "the cat sat on the mat", 22),
        ("b", "the the the", 11),  # unigram x3
        ("c", "go to go to go to go to", 23),  # bigram x4
        ("d", "go to go to", 11),  # bigram x2
        ("e", "la la la la la la", 700),  # too long first
        ("f", "", 0),
    ]
    kept, report = filter_pseudo_labels(records, max_tokens=630, max_ngram_repeats=2)
    assert [r[0] for r in kept] == ["a", "d"]
    assert report.dropped == {"empty": ["f"], "too_long": ["e"], "repeated_ngram": ["b", "c"]}


def test_filter_requires_tokenizer_for_cutset():
    with pytest.raises(ValueError):
        filter_pseudo_labels(CutSet.from_cuts([_cut("a", 1.0, "x")]))


def _brute_force_repeat(units, max_n):
    best = 1 if units else 0
    for n in range(1, max_n + 1):
        for start in range(len(units) - n + 1):
            gram, copies = units[start : start + n], 1
            while units[start + copies * n : start + (copies + 1) * n] == gram:
                copies += 1
            best = max(best, copies)
    return best


def test_longest_ngram_repeat_matches_brute_force():
    rng = random.Random(0)
    assert longest_ngram_repeat("a b a b a b c".split(), 4) == 3
    for _ in range(400):
        units = [rng.choice("ab") for _ in range(rng.randint(0, 14))]
        for max_n in (1, 2, 3, 5):
            assert longest_ngram_repeat(units, max_n) == _brute_force_repeat(units, max_n), (units, max_n)


# ---- sharding ----


def _random_cuts(num: int, seed: int) -> CutSet:
    rng = random.Random(seed)
    return CutSet.from_cuts(_cut(f"u{i:04d}", round(rng.uniform(0.5, 30.0), 2), f"t{i}") for i in range(num))


@pytest.mark.parametrize("num,world_size", [(0, 3), (1, 4), (5, 5), (37, 4), (200, 8), (61, 1)])
def test_split_is_a_balanced_partition(num, world_size):
    cuts = _random_cuts(num, seed=num)
    shards = split_for_ranks(cuts, world_size)
    assert len(shards) == world_size
    ids = [c.id for shard in shards for c in shard]
    assert sorted(ids) == sorted(c.id for c in cuts) and len(ids) == len(set(ids))
    position = {c.id: i for i, c in enumerate(cuts)}
    for shard in shards:  # input order kept inside each shard
        order = [position[c.id] for c in shard]
        assert order == sorted(order)
    if num:
        totals = [sum(c.duration for c in shard) for shard in shards]
        assert max(totals) - min(totals) <= max(c.duration for c in cuts) + 1e-9
    assert [[c.id for c in s] for s in split_for_ranks(cuts, world_size)] == [[c.id for c in s] for s in shards]


def test_merge_of_split_round_trips(tmp_path):
    cuts = _random_cuts(50, seed=1)
    for rank, shard in enumerate(split_for_ranks(cuts, 4)):
        assert write_shard(shard, tmp_path, rank) == shard_path(tmp_path, rank)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in shard_paths(tmp_path, 4)]
    merged = merge_shards(shard_paths(tmp_path, 4), expected_ids=[c.id for c in cuts])
    original = {c.id: c.to_dict() for c in cuts}
    merged_dicts = {c.id: c.to_dict() for c in merged}
    assert merged_dicts == original and len(list(merged)) == len(cuts)


def test_merge_detects_missing_shard_and_ids(tmp_path):
    cuts = _random_cuts(20, seed=2)
    shards = split_for_ranks(cuts, 3)
    for rank in (0, 2):
        write_shard(shards[rank], tmp_path, rank)
    with pytest.raises(FileNotFoundError, match=shard_path(tmp_path, 1).name):
        merge_shards(shard_paths(tmp_path, 3))
    # Merging only the shards that exist is caught by the expected id list.
    with pytest.raises(ValueError, match=f"{len(shards[1])} missing"):
        merge_shards([shard_path(tmp_path, 0), shard_path(tmp_path, 2)], expected_ids=[c.id for c in cuts])
    with pytest.raises(ValueError, match="1 unexpected"):
        merge_shards([shard_path(tmp_path, 0)], expected_ids=[c.id for c in shards[0]][1:])


def test_merge_detects_duplicates(tmp_path):
    cuts = _random_cuts(6, seed=3)
    write_shard(cuts, tmp_path, 0)
    write_shard(cuts.subset(first=2), tmp_path, 1)
    with pytest.raises(ValueError, match="2 cut id"):
        merge_shards(shard_paths(tmp_path, 2))


def test_merge_accepts_empty_shards(tmp_path):
    """More ranks than cuts: some shards are empty files, and merging still gives every cut once."""
    from lhotse import CutSet, MonoCut

    from icefall_ext.pseudo.sharding import merge_shards, shard_paths, split_for_ranks, write_shard

    cuts = CutSet.from_cuts([MonoCut(id="only", start=0, duration=1.0, channel=0)])
    for rank, shard in enumerate(split_for_ranks(cuts, 3)):
        write_shard(shard, tmp_path, rank)
    merged = merge_shards(shard_paths(tmp_path, 3), expected_ids=["only"])
    assert [c.id for c in merged] == ["only"]
