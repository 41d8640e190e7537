"""WER/CER against hand-computed values, per-language breakdown, and the errs file."""

import pytest

from icefall_ext.data.scoring import score, units, write_errs, write_recogs


def test_wer_hand_computed():
    # ref: the cat sat | hyp: the bat sat on  -> 1 substitution + 1 insertion over 3 words
    r = score(["the cat sat"], ["the bat sat on"], unit="word")
    assert (r.total.subs, r.total.ins, r.total.dels, r.total.ref_len) == (1, 1, 0, 3)
    assert r.total.rate == pytest.approx(200 / 3)


def test_cer_counts_spaces_once():
    # chars of "ab  cd" -> a b ␣ c d (5); hyp "abcd" deletes the space
    assert units("ab  cd", "char") == ["a", "b", " ", "c", "d"]
    r = score(["ab  cd"], ["abcd"], unit="char")
    assert (r.total.dels, r.total.ref_len) == (1, 5)
    assert r.total.rate == pytest.approx(20.0)


def test_per_language_and_macro_average():
    refs = ["abcd", "abcd", "xy"]
    hyps = ["abcd", "abce", ""]
    r = score(refs, hyps, ["en", "en", "el"], unit="char")
    assert r.per_language["en"].rate == pytest.approx(100 * 1 / 8)
    assert r.per_language["el"].rate == pytest.approx(100.0)
    assert r.total.rate == pytest.approx(100 * 3 / 10)
    assert r.macro_average == pytest.approx((12.5 + 100.0) / 2)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        score(["a"], [])


def test_errs_and_recogs_files(tmp_path):
    results = [("u2", "the cat sat", "the bat sat on"), ("u1", "hello", "hello")]
    rep = score([r for _, r, _ in results], [h for _, _, h in results], ["en", "de"], unit="word")
    write_errs(tmp_path / "errs.txt", results, rep)
    write_recogs(tmp_path / "recogs.txt", results)
    errs = (tmp_path / "errs.txt").read_text()
    assert errs.startswith("%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ]")
    assert "u2:\tthe (cat->bat) sat (*->on)" in errs
    assert "de\t1\t1\t0\t0\t0\t0.00" in errs
    recogs = (tmp_path / "recogs.txt").read_text().splitlines()
    assert recogs[0] == "u1:\tref=['hello']"  # sorted by id


def test_recogs_round_trip(tmp_path):
    from icefall_ext.data.scoring import read_recogs, write_recogs

    results = [("b-2", "two words", "two word"), ("a-1", "it's ok", ""), ("c:3", "x", "y z")]
    write_recogs(tmp_path / "recogs.txt", results)
    assert read_recogs(tmp_path / "recogs.txt") == {c: (r.split(), h.split()) for c, r, h in results}


def test_collapsed_models_are_marked_not_scored(tmp_path):
    from icefall_ext.decode.results import NOT_CONVERGED, collapse_reason, rate_cell, write_results

    refs = [f"sentence number {i} is here" for i in range(20)]
    assert collapse_reason(refs, 0.0) is None  # a model that learned
    assert collapse_reason([f"number {i}" for i in range(20)], 70.0) is None  # poor but not collapsed
    assert "empty" in collapse_reason([""] * 15 + refs[:5], 80.0)  # CTC that emits only blanks
    assert "distinct" in collapse_reason(["the the"] * 20, 90.0)  # one string for every utterance
    assert "CER" in collapse_reason([f"xq {i}" for i in range(20)], 97.0)  # output unrelated to the audio
    assert "WER" in collapse_reason([f"xq {i}" for i in range(20)], 100.0, "wer")  # no word right
    results = [(f"u{i}", r, "") for i, r in enumerate(refs)]
    summary = write_results(tmp_path, "set-m", results, [None] * 20, metric="wer", source="e", set_name="set",
                            method="m")
    assert summary["collapsed"] and rate_cell(summary) == NOT_CONVERGED
    good = write_results(tmp_path, "set-g", [(f"u{i}", r, r) for i, r in enumerate(refs)], [None] * 20,
                         metric="wer", source="e", set_name="set", method="g")
    assert good["collapsed"] is None and rate_cell(good) == "0.00" and rate_cell(None) == "-"


def test_summary_and_errs_count_insertions_deletions_substitutions(tmp_path):
    """Hand-aligned: "one (two->*) three four (five->fiver) six (*->seven)" is 1 del, 1 sub, 1 ins over 6 words
    (any other alignment costs more); "ab (cd->ce)" is 1 sub over 2 words and, in characters, 1 sub over 5."""
    import json

    from icefall_ext.decode.results import write_results

    results = [("u1", "one two three four five six", "one three four fiver six seven"), ("u2", "ab cd", "ab ce")]
    summary = write_results(tmp_path, "set-m", results, ["en", "de"], metric="wer", source="e", set_name="set",
                            method="m")
    assert summary == json.loads((tmp_path / "summary-set-m.json").read_text())
    assert summary["wer_counts"] == {"ref_len": 8, "errors": 4, "ins": 1, "del": 1, "sub": 2}
    assert summary["per_language_wer_counts"]["en"] == {"ref_len": 6, "errors": 3, "ins": 1, "del": 1, "sub": 1}
    assert summary["per_language_cer_counts"]["de"] == {"ref_len": 5, "errors": 1, "ins": 0, "del": 0, "sub": 1}
    assert summary["wer"] == pytest.approx(50.0)
    cer = summary["cer_counts"]
    assert cer["errors"] == cer["ins"] + cer["del"] + cer["sub"] and cer["ref_len"] == 27 + 5
    errs = (tmp_path / "errs-set-m.txt").read_text()
    assert errs.startswith("%WER 50.00 [ 4 / 8, 1 ins, 1 del, 2 sub ]")
    assert "en\t1\t6\t1\t1\t1\t50.00" in errs and "de\t1\t2\t0\t0\t1\t50.00" in errs
    assert "u1:\tone (two->*) three four (five->fiver) six (*->seven)" in errs
