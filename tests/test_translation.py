"""Speech translation: the attention decoder's searches against brute force and teacher forcing, BLEU from
sacrebleu against the sacrebleu CLI, and the CoVoST 2 preparation against hand-made tables."""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from icefall_ext.decode.attention import beam_search, greedy_search
from icefall_ext.decode.translate import bleu_report
from icefall_ext.models.attention_decoder import AttentionDecoder

ROOT = Path(__file__).resolve().parents[1]

REFS = ["We travel to Canada on Monday.", "I bought three tickets for the play.",
        "My sister has a birthday in May.", "Please take bus number ten."]
HYPS = ["We travel to Canada on Monday.", "I bought the tickets for a play.", "My sister birthday is in May.",
        "Take the bus number eleven please."]


def test_bleu_is_sacrebleus():
    """Pinned to `sacrebleu ref.txt -i hyp.txt -m bleu chrf -b -w 4` (sacrebleu 2.6.0) on these lines."""
    report = bleu_report(REFS, HYPS, ["fr", "fr", "de", "de"])
    assert report["bleu"] == pytest.approx(40.8055, abs=1e-3)
    assert report["chrf"] == pytest.approx(70.9951, abs=1e-3)
    assert report["per_language_bleu"]["fr"] > report["per_language_bleu"]["de"]


def tiny_decoder(vocab: int = 6, seed: int = 0) -> AttentionDecoder:
    torch.manual_seed(seed)
    return AttentionDecoder(vocab, memory_dim=8, d_model=16, num_layers=2, num_heads=2, feedforward_dim=32).eval()


def test_beam_one_is_greedy_and_scores_match_teacher_forcing():
    decoder = tiny_decoder(vocab=12)
    memory, lens = torch.randn(4, 10, 8), torch.tensor([10, 7, 4, 9])
    greedy = greedy_search(decoder, memory, lens)
    beam_one = beam_search(decoder, memory, lens, beam=1, length_penalty=0.0)
    assert [t for t, _ in beam_one] == [t for t, _ in greedy]
    assert [s for _, s in beam_one] == pytest.approx([s for _, s in greedy], abs=1e-4)
    for beam, penalty in ((1, 0.0), (4, 1.0), (3, 0.5)):
        found = beam_search(decoder, memory, lens, beam=beam, length_penalty=penalty)
        rescored = decoder.log_probs(memory, lens, [t for t, _ in found])
        assert torch.allclose(rescored, torch.tensor([s for _, s in found]), atol=1e-4)
    tokens = [t for t, _ in greedy]
    rescored = decoder.log_probs(memory, lens, tokens)
    assert torch.allclose(rescored, torch.tensor([s for _, s in greedy]), atol=1e-4)


def brute_force_best(decoder, memory, lens, max_len: int, length_penalty: float):
    """Every token sequence up to ``max_len`` tokens, scored by teacher forcing; the best normalised one."""
    best = []
    for i in range(memory.shape[0]):
        candidates = [list(seq) for n in range(max_len + 1)
                      for seq in itertools.product(range(decoder.vocab_size), repeat=n)]
        scores = []
        for start in range(0, len(candidates), 256):
            chunk = candidates[start: start + 256]
            scores += decoder.log_probs(memory[i: i + 1].expand(len(chunk), -1, -1), lens[i: i + 1].expand(len(chunk)),
                                        chunk).tolist()
        normalised = [s / (len(c) + 1) ** length_penalty for c, s in zip(candidates, scores)]
        k = int(np.argmax(normalised))
        best.append((candidates[k], scores[k]))
    return best


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_wide_beam_finds_the_brute_force_optimum(penalty):
    """With a beam as wide as all prefixes, beam search is exhaustive: it must return the best hypothesis of
    length <= cap that a brute-force enumeration finds."""
    decoder = tiny_decoder(vocab=3, seed=1)
    memory, lens = torch.randn(2, 4, 8), torch.tensor([4, 3])
    cap = 3  # every utterance's length cap, patched in so that the enumeration stays small
    import icefall_ext.decode.attention as attention

    original = attention.length_caps
    attention.length_caps = lambda memory_lens, ratio, min_len=5: [cap] * len(memory_lens)
    try:
        found = beam_search(decoder, memory, lens, beam=3 ** cap + 1, length_penalty=penalty, early_stop=False)
    finally:
        attention.length_caps = original
    want = brute_force_best(decoder, memory, lens, cap, penalty)
    for (tokens, score), (best_tokens, best_score) in zip(found, want):
        assert tokens == best_tokens
        assert score == pytest.approx(best_score, abs=1e-4)


def write_mp3(path: Path, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(48000 * seconds)) / 48000
    sf.write(path, (0.1 * np.sin(2 * math.pi * 220 * t)).astype(np.float32), 48000, format="MP3")


def test_prepare_covost2_joins_by_path_and_reports_bad_rows(tmp_path):
    """A hand-made Common Voice 4 validated.tsv and CoVoST table: the join is by path (not row order); rows
    without audio, without a translation or without a transcript are reported by id and left out."""
    sys.path.insert(0, str(ROOT / "local"))
    from prepare_covost2 import prepare_language

    from lhotse import load_manifest

    cv = tmp_path / "cv" / "fr"
    for name in ("a.mp3", "b.mp3", "c.mp3", "e.mp3"):
        write_mp3(cv / "clips" / name)
    (cv / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\n"
        "s2\tb.mp3\tBonjour \"toi\".\t2\t0\t\t\t\n"
        "s1\ta.mp3\tLundi, nous partons.\t2\t0\tthirties\tmale\t\n"
        "s3\tc.mp3\tSans traduction.\t2\t0\t\t\t\n", encoding="utf-8")
    covost = tmp_path / "covost"
    covost.mkdir()
    (covost / "covost_v2.fr_en.tsv").write_text(
        "path\tsentence\ttranslation\tclient_id\tsplit\n"
        "a.mp3\tLundi, nous partons.\tWe leave on Monday.\ts1\ttrain\n"
        "b.mp3\tBonjour \"toi\".\tHello \"you\".\ts2\ttest\n"
        "c.mp3\tSans traduction.\t\ts3\ttrain_covost\n"
        "d.mp3\tPas de son.\tNo sound.\ts4\ttrain\n"
        "e.mp3\t\tNo transcript anywhere.\ts5\tdev\n", encoding="utf-8")
    bad = prepare_language(tmp_path / "cv", covost, tmp_path / "out", "fr", num_jobs=1)
    assert sorted((i, reason) for i, _, reason in bad.bad) == [
        ("c", "no translation"), ("d", "missing file"), ("e", "no transcript")]
    train = load_manifest(tmp_path / "out" / "covost2-fr_supervisions_train.jsonl.gz")
    test = load_manifest(tmp_path / "out" / "covost2-fr_supervisions_test.jsonl.gz")
    (a,), (b,) = list(train), list(test)
    assert (a.id, a.text, a.language, a.speaker) == ("a", "Lundi, nous partons.", "fr", "s1")
    assert a.custom["translated_text"] == {"en": "We leave on Monday."}
    assert (b.text, b.custom["translated_text"]["en"]) == ('Bonjour "toi".', 'Hello "you".')
    assert a.duration == pytest.approx(0.5, abs=0.06)
    report = (tmp_path / "out" / "bad_items_covost2-fr.tsv").read_text()
    assert "d\t" in report and "no translation" in report
