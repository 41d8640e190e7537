"""Token tables: round trips, the tokens.txt format sherpa-onnx reads, and rejection of malformed tables."""

import pytest

from icefall_ext.data.tokenizer import (
    BpeTokenizer,
    CharTokenizer,
    load_tokenizer,
    read_tokens_txt,
    write_tokens_txt,
)

TEXTS = [
    "Hello, World! It's fine.",
    "Καλημέρα σας, τι κάνετε;",
    "Ça va très bien, merci.",
    "¿Dónde está la estación?",
    "Привет, как дела?",
]


def test_char_round_trip_keeps_case_and_punctuation(tmp_path):
    tok = CharTokenizer.build(TEXTS)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer)
    for text in TEXTS:
        ids = again.encode(text)
        assert 0 not in ids
        assert again.decode(ids) == text
    assert again.encode("  Hello   World ") == tok.encode("Hello World")  # whitespace normalised


def test_tokens_txt_format(tmp_path):
    tok = CharTokenizer.build(["ab a"])
    tok.save(tmp_path)
    lines = (tmp_path / "tokens.txt").read_text(encoding="utf-8").splitlines()
    # counts: a=2, b=1, space=1 -> a first, then by code point: 'b' (98) < '▁' (9601)
    assert lines == ["<blk> 0", "a 1", "b 2", "▁ 3"]
    assert read_tokens_txt(tmp_path / "tokens.txt") == ["<blk>", "a", "b", "▁"]


def test_unknown_characters_are_detected():
    tok = CharTokenizer.build(["abc"])
    assert tok.can_encode("cab") and not tok.can_encode("abd")
    assert tok.unknown_chars("abdx") == ["d", "x"]
    with pytest.raises(KeyError):
        tok.encode("abd")


@pytest.mark.parametrize("content,err", [
    ("a 0\n<blk> 1\n", "id 0 must be <blk>"),
    ("<blk> 0\na 2\n", "ids are not"),
    ("<blk> 0\nnoid\n", "expected 'symbol id'"),
])
def test_malformed_tokens_txt(tmp_path, content, err):
    (tmp_path / "tokens.txt").write_text(content)
    with pytest.raises(ValueError, match=err):
        read_tokens_txt(tmp_path / "tokens.txt")


def test_write_rejects_bad_tables(tmp_path):
    with pytest.raises(ValueError):
        write_tokens_txt(["a", "<blk>"], tmp_path / "t.txt")
    with pytest.raises(ValueError):
        write_tokens_txt(["<blk>", "a b"], tmp_path / "t.txt")


def test_bpe_round_trip(tmp_path):
    words = "the cat sat on a mat while the dog ran to the park and the bird sang in the tree".split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 5
    tok = BpeTokenizer.train(texts, tmp_path, vocab_size=40)
    assert tok.token_table[0] == "<blk>" and tok.token_table[1] == "<unk>"
    assert read_tokens_txt(tmp_path / "tokens.txt") == tok.token_table
    again = load_tokenizer(tmp_path)
    assert isinstance(again, BpeTokenizer)
    for text in texts[:5]:
        ids = again.encode(text)
        assert 0 not in ids and again.decode(ids) == text
    assert not again.can_encode("the cat ΩΩ")


def test_missing_lang_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither bpe.model nor tokens.txt"):
        load_tokenizer(tmp_path)


def test_skip_unknown_for_held_out_text(tmp_path):
    tok = CharTokenizer.build(["abc"])
    assert tok.encode("abxc", skip_unknown=True) == tok.encode("abc")
    words = "the cat sat on a mat".split()
    bpe = BpeTokenizer.train([" ".join(words)] * 20, tmp_path, vocab_size=20)
    assert 1 in bpe.encode("the Ω cat") and 1 not in bpe.encode("the Ω cat", skip_unknown=True)
