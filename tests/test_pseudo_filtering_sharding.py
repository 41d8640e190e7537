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


@pytest.mark.parametrize("num_shards", [1, 3])
def test_merge_of_split_round_trips_for_any_shard_count(tmp_path, num_shards):
    cuts = _random_cuts(7, seed=4)
    for rank, shard in enumerate(split_for_ranks(cuts, num_shards)):
        write_shard(shard, tmp_path, rank)
    merged = merge_shards(shard_paths(tmp_path, num_shards), expected_ids=[c.id for c in cuts])
    assert sorted(c.id for c in merged) == sorted(c.id for c in cuts)


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


# ---- confidence, rate and confidence filters (noisy-student pseudo-labels) ----


def _lang_cut(cut_id: str, duration: float, text: str, language, confidence=None) -> MonoCut:
    sup = SupervisionSegment(
        id=cut_id, recording_id=f"rec-{cut_id}", start=0.0, duration=duration, text=text, language=language,
        custom={"pseudo_label": True, "pl_confidence": confidence},
    )
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[sup])


def _reference_cuts() -> CutSet:
    # Non-space characters per second. de: 2, 3, 4, 5, 6 (5 cuts); el: 8, 2 (2 cuts, too few for its own bounds).
    return CutSet.from_cuts(
        [
            _lang_cut("r-de1", 2.0, "abcd", "de"),
            _lang_cut("r-de2", 2.0, "abcdef", "de"),
            _lang_cut("r-de3", 1.0, "ab cd", "de"),  # the space does not count: 4 / 1
            _lang_cut("r-de4", 2.0, "abcdefghij", "de"),
            _lang_cut("r-de5", 2.0, "abcdefghijkl", "de"),
            _lang_cut("r-el1", 1.0, "abcdefgh", "el"),
            _lang_cut("r-el2", 1.0, "ab", "el"),
            _lang_cut("r-empty", 3.0, "  ", "de"),  # skipped: no text
            _cut("r-nosup", 3.0),  # skipped: no supervision
        ]
    )


def test_percentile_and_label_rate_by_hand():
    from icefall_ext.pseudo.filtering import label_rate, percentile

    assert percentile([6, 2, 4, 3, 5], 10) == pytest.approx(2.4)  # position 0.4 between 2 and 3
    assert percentile([2, 3, 4, 5, 6], 90) == pytest.approx(5.6)  # position 3.6 between 5 and 6
    assert percentile([7.0], 1) == 7.0
    assert label_rate("ab  cd e", 2.0) == 2.5
    assert label_rate("ab  cd e", 2.0, unit="word") == 1.5
    assert label_rate("abc", 0.0) == float("inf")


def test_rate_bounds_estimated_per_language_with_pooled_fallback():
    from icefall_ext.pseudo.filtering import estimate_rate_bounds

    bounds = estimate_rate_bounds(_reference_cuts(), percentiles=(10, 90), margin=0.25, min_cuts_per_language=3)
    # de sorted [2, 3, 4, 5, 6]: P10 = 2.4, P90 = 5.6 -> [0.75 * 2.4, 1.25 * 5.6] = [1.8, 7.0]
    assert bounds.bounds("de") == pytest.approx((1.8, 7.0))
    # pooled sorted [2, 2, 3, 4, 5, 6, 8]: P10 at 0.6 -> 2.0, P90 at 5.4 -> 6.8 -> [1.5, 8.5]
    assert bounds.pooled == pytest.approx((1.5, 8.5))
    assert set(bounds.per_language) == {"de"}
    assert bounds.bounds("el") == bounds.bounds("it") == bounds.pooled

    pl = CutSet.from_cuts(
        [
            _lang_cut("de-slow", 2.0, "abc", "de"),  # 1.5 < 1.8
            _lang_cut("de-lo-ok", 2.0, "abcd", "de"),  # 2.0
            _lang_cut("de-hi-ok", 2.0, "abcdefghijklm", "de"),  # 6.5
            _lang_cut("de-fast", 2.0, "abcdefghijklmno", "de"),  # 7.5 > 7.0
            _lang_cut("de-empty", 2.0, "", "de"),  # empty comes first
            _lang_cut("el-ok", 1.0, "abcdefgh", "el"),  # 8.0: too fast for de, fine for the pooled bounds
            _lang_cut("el-slow", 1.0, "a", "el"),  # 1.0 < 1.5
            _lang_cut("it-fast", 1.0, "abcdefghi", "it"),  # 9.0 > 8.5
            _lang_cut("it-ok", 1.0, "a b c", "it"),  # 3.0
        ]
    )
    kept, report = filter_pseudo_labels(pl, num_tokens=_char_tokens, rate_bounds=bounds)
    assert [c.id for c in kept] == ["de-lo-ok", "de-hi-ok", "el-ok", "it-ok"]
    assert report.dropped == {"empty": ["de-empty"], "too_long": [], "repeated_ngram": [],
                              "rate_too_low": ["de-slow", "el-slow"], "rate_too_high": ["de-fast", "it-fast"]}
    summary = report.to_dict()["per_language"]
    assert summary["de"] == {"total": 5, "kept": 2, "empty": 1, "too_long": 0, "repeated_ngram": 0,
                             "rate_too_low": 1, "rate_too_high": 1, "kept_fraction": 0.4}
    assert summary["it"]["kept_fraction"] == 0.5
    rate = report.to_dict()["thresholds"]["rate"]
    assert rate["unit"] == "char" and rate["pooled"] == pytest.approx([1.5, 8.5])
    assert rate["per_language"]["de"] == pytest.approx([1.8, 7.0])


def test_fixed_rate_bounds_and_word_unit():
    from icefall_ext.pseudo.filtering import RateBounds, estimate_rate_bounds

    records = [("a", "one two", 7, 1.0, "en", None), ("b", "one two three four", 18, 1.0, "en", None),
               ("c", "one", 3, 1.0, "fr", None)]
    kept, report = filter_pseudo_labels(records, rate_bounds=RateBounds(unit="word", pooled=(2.0, float("inf"))))
    assert [r[0] for r in kept] == ["a", "b"] and report.dropped["rate_too_low"] == ["c"]
    assert report.thresholds["rate"]["pooled"] == [2.0, None]  # JSON-safe: None = unbounded
    # words per second, one language with enough cuts: [1, 2, 3] -> P0 = 1, P100 = 3, no margin
    refs = [_lang_cut(f"w{i}", 1.0, " ".join(["x"] * n), "en") for i, n in enumerate([3, 1, 2])]
    bounds = estimate_rate_bounds(refs, unit="word", percentiles=(0, 100), margin=0.0, min_cuts_per_language=3)
    assert bounds.bounds("en") == (1.0, 3.0)
    with pytest.raises(ValueError, match="durations"):
        filter_pseudo_labels([("a", "x", 1)], rate_bounds=bounds)


def _conf_records():
    # (id, text, num_tokens, duration, language, confidence)
    return [
        ("a", "x", 1, 1.0, "de", -0.1),
        ("b", "x", 1, 1.0, "de", -0.5),
        ("f", "x", 1, 1.0, "el", -2.0),
        ("c", "x", 1, 1.0, "de", -0.3),
        ("h", "x", 1, 1.0, None, None),  # no confidence (e.g. a transducer label): left in
        ("d", "x", 1, 1.0, "de", -0.2),
        ("g", "x", 1, 1.0, "el", -1.5),
        ("e", "x", 1, 1.0, "de", -0.9),
        ("z", "", 0, 1.0, "de", -0.01),  # empty: dropped before the confidence rules
    ]


def test_keep_fraction_per_language():
    kept, report = filter_pseudo_labels(_conf_records(), keep_fraction=0.5)
    # de: 5 with confidence -> ceil(2.5) = 3 best: a (-0.1), d (-0.2), c (-0.3); el: 2 -> ceil(1) = 1: g (-1.5)
    assert [r[0] for r in kept] == ["a", "c", "h", "d", "g"]
    assert report.dropped["below_keep_fraction"] == ["b", "f", "e"] and report.dropped["empty"] == ["z"]
    assert report.thresholds["keep_fraction_cutoff"] == {"de": -0.3, "el": -1.5}
    summary = report.language_summary()
    assert summary["el"]["kept_fraction"] == 0.5 and summary["<none>"]["no_confidence"] == 1
    assert summary["de"]["kept"] == 3 and summary["de"]["below_keep_fraction"] == 2
    # ties keep input order; a fraction of 1 keeps everything
    ties = [(i, "x", 1, 1.0, "de", -1.0) for i in "pqr"]
    assert [r[0] for r in filter_pseudo_labels(ties, keep_fraction=0.4)[0]] == ["p", "q"]
    assert len(filter_pseudo_labels(_conf_records(), keep_fraction=1.0)[0]) == 8
    with pytest.raises(ValueError):
        filter_pseudo_labels(ties, keep_fraction=0.0)


def test_min_confidence_then_keep_fraction():
    kept, report = filter_pseudo_labels(_conf_records(), min_confidence=-1.0)
    assert [r[0] for r in kept] == ["a", "b", "c", "h", "d", "e"]
    assert report.dropped["low_confidence"] == ["f", "g"] and "below_keep_fraction" not in report.dropped
    kept, report = filter_pseudo_labels(_conf_records(), min_confidence=-0.8, keep_fraction=0.5)
    # de after the threshold: a, b, c, d -> ceil(2) = 2 best: a, d; el: none left
    assert [r[0] for r in kept] == ["a", "h", "d"]
    assert report.dropped["low_confidence"] == ["f", "g", "e"]
    assert report.dropped["below_keep_fraction"] == ["b", "c"]
    assert report.thresholds["min_confidence"] == -0.8 and report.thresholds["keep_fraction"] == 0.5


def _brute_force_greedy_confidence(log_probs, length, blank=0):
    """Best CTC path found by enumerating every path, then its non-blank frame log-probs per emitted token."""
    import itertools

    rows = log_probs[:length].tolist()
    best_path = max(itertools.product(range(len(rows[0])), repeat=length),
                    key=lambda path: sum(rows[t][v] for t, v in enumerate(path)))
    tokens = [v for t, v in enumerate(best_path) if v != blank and (t == 0 or best_path[t - 1] != v)]
    if not tokens:
        return tokens, None
    return tokens, sum(rows[t][v] for t, v in enumerate(best_path) if v != blank) / len(tokens)


def test_ctc_greedy_confidence_by_hand_and_brute_force():
    import math

    import torch

    from icefall_ext.decode.ctc import ctc_greedy_search, ctc_greedy_search_with_confidence

    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4], [0.3, 0.1, 0.6]])
    log_probs = probs.log().unsqueeze(0)
    tokens, conf = ctc_greedy_search_with_confidence(log_probs, torch.tensor([4]))
    assert tokens == [[1, 2]]  # path blank 1 1 2
    assert conf[0] == pytest.approx((math.log(0.7) + math.log(0.5) + math.log(0.6)) / 2, abs=1e-6)
    assert ctc_greedy_search_with_confidence(log_probs, torch.tensor([1]))[1] == [None]  # blank only

    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(6, 6, 3, generator=gen).mul(2).log_softmax(-1)
    lens = torch.tensor([6, 5, 3, 6, 1, 4])
    tokens, conf = ctc_greedy_search_with_confidence(batch, lens)
    assert tokens == ctc_greedy_search(batch, lens)
    for n in range(6):
        ref_tokens, ref_conf = _brute_force_greedy_confidence(batch[n], int(lens[n]))
        assert tokens[n] == ref_tokens
        assert (conf[n] is None) if ref_conf is None else conf[n] == pytest.approx(ref_conf, abs=1e-5)


def test_decode_encoder_output_with_confidence_on_a_ctc_model():
    from types import SimpleNamespace

    import torch

    from icefall_ext.decode.ctc import ctc_greedy_search_with_confidence
    from icefall_ext.decode.search import decode_encoder_output, decode_encoder_output_with_confidence

    model = SimpleNamespace(ctc=object(), joiner=None, ctc_log_probs=lambda enc, lens=None: enc.log_softmax(-1))
    enc = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(1))
    lens = torch.tensor([5, 3])
    hyps, conf = decode_encoder_output_with_confidence(model, enc, lens)
    assert (hyps, conf) == ctc_greedy_search_with_confidence(enc.log_softmax(-1), lens)
    assert hyps == decode_encoder_output(model, enc, lens)
    hyps, conf = decode_encoder_output_with_confidence(model, enc, lens, "ctc-beam", beam=2)
    assert hyps == decode_encoder_output(model, enc, lens, "ctc-beam", beam=2)
    # beam labels: their CTC log-likelihood per token, here checked against torch's CTC loss by hand
    for n, hyp in enumerate(hyps):
        nll = torch.nn.functional.ctc_loss(enc.log_softmax(-1)[n:n + 1, : int(lens[n])].double().transpose(0, 1),
                                           torch.tensor([hyp]), lens[n:n + 1], torch.tensor([len(hyp)]),
                                           reduction="sum")
        assert conf[n] == pytest.approx(-float(nll) / len(hyp), abs=1e-9) and conf[n] <= 0


def test_merge_of_shards_keeps_confidence(tmp_path):
    cuts = CutSet.from_cuts(
        [_lang_cut(cid, 1.0, "x", lang, conf) for cid, _, _, _, lang, conf in _conf_records() if cid != "z"]
    )
    for rank, shard in enumerate(split_for_ranks(cuts, 3)):
        write_shard(shard, tmp_path, rank)
    merged = merge_shards(shard_paths(tmp_path, 3), expected_ids=[c.id for c in cuts]).to_eager()
    confidences = {c.id: c.supervisions[0].custom["pl_confidence"] for c in merged}
    assert confidences == {c.id: c.supervisions[0].custom["pl_confidence"] for c in cuts}
    assert confidences["h"] is None and confidences["g"] == -1.5
    kept, report = filter_pseudo_labels(merged, num_tokens=_char_tokens, keep_fraction=0.5)
    assert sorted(c.id for c in kept) == ["a", "c", "d", "g", "h"]


def test_cli_merge_only_filters_and_reports(tmp_path):
    import json

    from icefall_ext.bin.pseudo_label import main
    from icefall_ext.data.tokenizer import CharTokenizer

    lang_dir = tmp_path / "lang"
    lang_dir.mkdir()
    CharTokenizer.build(["abcdefghijklmno x"]).save(lang_dir)
    pl = CutSet.from_cuts(
        [
            _lang_cut("de-slow", 2.0, "abc", "de", -0.1),
            _lang_cut("de-a", 2.0, "abcd", "de", -0.2),
            _lang_cut("de-b", 2.0, "abcdefghijklm", "de", -0.4),
            _lang_cut("de-c", 2.0, "abcdefgh", "de", -0.3),
            _lang_cut("el-a", 1.0, "abcdefgh", "el", -3.0),
            _lang_cut("el-b", 1.0, "abcdefg", "el", -2.0),
        ]
    )
    cuts_path, refs_path, out = tmp_path / "cuts.jsonl.gz", tmp_path / "refs.jsonl.gz", tmp_path / "pl"
    pl.to_file(cuts_path)
    _reference_cuts().to_file(refs_path)
    for rank, shard in enumerate(split_for_ranks(pl, 2)):
        write_shard(shard, out, rank)
    argv = ["--exp-dir", str(tmp_path / "exp"), "--lang-dir", str(lang_dir), "--cuts", str(cuts_path),
            "--out-dir", str(out), "--merge-only", "--num-shards", "2"]
    main(argv + ["--rate-reference-cuts", str(refs_path), "--rate-percentiles", "10", "90", "--rate-margin",
                 "0.25", "--rate-min-reference-cuts", "3", "--keep-fraction", "0.5"])
    # de bounds [1.8, 7.0] drop de-slow (1.5); then de keeps ceil(1.5) = 2 of a, b, c: de-a, de-c;
    # el (pooled bounds [1.5, 8.5]) keeps ceil(1) = 1: el-b
    assert sorted(c.id for c in CutSet.from_file(out / "pl_cuts.jsonl.gz")) == ["de-a", "de-c", "el-b"]
    report = json.loads((out / "filter_report.json").read_text())
    assert report["dropped"]["rate_too_low"] == ["de-slow"]
    assert report["thresholds"]["rate"]["per_language"]["de"] == pytest.approx([1.8, 7.0])
    assert report["thresholds"]["keep_fraction_cutoff"] == {"de": -0.3, "el": -2.0}
    assert report["per_language"]["de"]["kept_fraction"] == 0.5
    main(argv + ["--min-rate", "7.2"])  # fixed bounds: only el-a (8.0) is fast enough
    assert [c.id for c in CutSet.from_file(out / "pl_cuts.jsonl.gz")] == ["el-a"]
    with pytest.raises(SystemExit):
        main(argv + ["--min-rate", "1", "--rate-reference-cuts", str(refs_path)])


def _label_shard_with_stubs(monkeypatch, method: str, alpha: float = 0.5, beta: float = 1.0, lms=None):
    """label_shard on two cuts (de: empty text, el: no text) with the encoder and batching stubbed: the batch's
    "encoder output" is a fixed (2, 6, 4) log-prob tensor that the model's CTC layer passes through.
    Returns (labelled supervisions by cut id, log-probs, lens, tokenizer); the batch order is u1, u0."""
    from types import SimpleNamespace

    import torch

    import icefall_ext.data.dataset as dataset
    import icefall_ext.decode.search as search
    from icefall_ext.bin.pseudo_label import label_shard
    from icefall_ext.data.tokenizer import CharTokenizer

    log_probs = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(3)).log_softmax(-1)
    lens = torch.tensor([6, 4])
    monkeypatch.setattr(dataset, "iterate_batches", lambda cuts, max_duration: iter([{"cut_ids": ["u1", "u0"]}]))
    monkeypatch.setattr(search, "encode_batch", lambda *args: (log_probs, lens))
    model = SimpleNamespace(ctc=object(), joiner=None, ctc_log_probs=lambda enc, lens=None: enc)
    cuts = CutSet.from_cuts([_lang_cut("u0", 1.0, "", "de"), _lang_cut("u1", 1.0, None, "el")])
    tokenizer = CharTokenizer(["<blk>", "a", "b", "c"])
    args = SimpleNamespace(max_duration=10.0, chunk_seconds=0.0, chunk_overlap_seconds=0.0, method=method, beam=4,
                           alpha=alpha, beta=beta)
    labelled = label_shard(model, tokenizer, cuts, torch.device("cpu"), args, lms)
    return {c.id: c.supervisions[0] for c in labelled}, log_probs, lens, tokenizer


def test_label_shard_records_confidence(monkeypatch):
    """label_shard writes the greedy CTC text and its confidence."""
    from icefall_ext.decode.ctc import ctc_greedy_search_with_confidence

    out, log_probs, lens, _ = _label_shard_with_stubs(monkeypatch, "auto")
    hyps, confidences = ctc_greedy_search_with_confidence(log_probs, lens)
    for n, cut_id in enumerate(["u1", "u0"]):
        assert out[cut_id].text == "".join("_abc"[t] for t in hyps[n]) != ""  # a None text is labelled too
        assert out[cut_id].custom["pl_confidence"] == confidences[n] and out[cut_id].custom["pseudo_label"]
    assert out["u1"].language == "el"


def test_label_shard_with_beam_search_and_an_lm_per_language(monkeypatch, tmp_path):
    """ctc-beam labels: each cut searched with its language's LM; confidence = CTC log-likelihood per token."""
    import icefall_ext.decode.search as search
    from icefall_ext.decode.ctc import ctc_label_confidence
    from icefall_ext.decode.ngram import NgramLm, train_ngram_lm

    lms = {"de": NgramLm.from_arpa(train_ngram_lm(["ab", "cab", "ab"], 2, tmp_path / "de.arpa")),
           "el": NgramLm.from_arpa(train_ngram_lm(["c", "cc", "bc"], 2, tmp_path / "el.arpa"))}
    out, log_probs, lens, tokenizer = _label_shard_with_stubs(monkeypatch, "ctc-beam", 3.0, 0.0, lms)
    search_kw = dict(beam=4, alpha=3.0, beta=0.0, token_table=tokenizer.token_table, languages=["el", "de"])
    hyps = search.decode_ctc_log_probs(log_probs, lens, "ctc-beam", lm=lms, **search_kw)
    swapped = search.decode_ctc_log_probs(log_probs, lens, "ctc-beam", lm={"de": lms["el"], "el": lms["de"]},
                                          **search_kw)
    assert hyps != swapped  # the LMs decide here, so routing matters
    confidences = ctc_label_confidence(log_probs, lens, hyps)
    for n, cut_id in enumerate(["u1", "u0"]):
        assert out[cut_id].text == "".join("_abc"[t] for t in hyps[n])
        assert out[cut_id].custom["pl_confidence"] == confidences[n]
