"""The parallel sentences of the synthesised mini CoVoST 2 (local/mini_translation_text.py).

Numbers, weekdays, months and countries are checked against num2words, Babel and
pycountry themselves; number/noun agreement against the grammar of each language; the
identity baseline with sacrebleu.
"""
from __future__ import annotations

import gettext
import re
import sys
import unicodedata
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pycountry
import pytest
import sacrebleu
from babel.dates import get_day_names, get_month_names
from num2words import num2words

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "local"))
import mini_translation_text as mtt  # noqa: E402

LANGS = mtt.LANGUAGES
IDENTITY_BLEU_MAX = 2.0  # measured 0.08-0.22 over 200 test pairs


def words(sentence: str) -> Set[str]:
    """Lower-cased whitespace tokens without sentence punctuation (the recipe normalises case)."""
    return {w.strip(".,!?").lower() for w in sentence.split()} - {""}


def vocab(pairs: List[Tuple[str, str]], side: int = 0) -> Set[str]:
    return set().union(*(words(p[side]) for p in pairs))


@pytest.fixture(scope="module")
def full() -> Dict[str, Dict[str, List[Tuple[str, str]]]]:
    """Every pair of every split, per language."""
    return {lang: {split: mtt.parallel_pairs(lang, split, mtt.split_capacity(split)) for split in mtt.SPLITS}
            for lang in LANGS}


def sources_for(pairs: List[Tuple[str, str]], english: str) -> List[str]:
    """Source sentences whose English side contains the whole words ``english``."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(english)}(?![\w-])")
    return [src for src, en in pairs if english in en and pattern.search(en)]


def test_languages():
    assert set(LANGS) == {"de", "fr", "es", "ca", "it", "ru", "pt", "fa", "nl", "tr", "sv", "sl"}
    assert len(LANGS) >= 9


def test_deterministic_prefix_and_seed():
    for lang in ("de", "fa"):
        a = mtt.parallel_pairs(lang, "train", 500)
        assert a == mtt.parallel_pairs(lang, "train", 500)
        assert a[:100] == mtt.parallel_pairs(lang, "train", 100)
        assert a != mtt.parallel_pairs(lang, "train", 500, seed=1)
        assert set(a) != set(mtt.parallel_pairs(lang, "train", 500, seed=1))


@pytest.mark.parametrize("lang", LANGS)
def test_counts_and_distinct(lang):
    for split, count in (("train", 2000), ("dev", 200), ("test", 200), ("text", 1000)):
        pairs = mtt.parallel_pairs(lang, split, count)
        assert len(pairs) == count
        assert len(set(pairs)) == count
        assert len({src for src, _ in pairs}) == count  # one sentence per meaning on the source side too
        assert len({en for _, en in pairs}) == count
        for src, en in pairs:
            assert src != en
            assert src.endswith(".") and en.endswith(".")
            assert en[0].isupper() and (lang == "fa" or src[0].isupper())


def test_capacity_and_errors():
    sizes = {split: mtt.split_capacity(split) for split in mtt.SPLITS}
    total = sum(sizes.values())
    for split, share in (("train", 0.80), ("dev", 0.05), ("test", 0.05), ("text", 0.10)):
        assert abs(sizes[split] / total - share) < 0.01, (split, sizes)
    assert sizes["test"] >= 1000
    with pytest.raises(ValueError, match="holds"):
        mtt.parallel_pairs("de", "test", sizes["test"] + 1)
    with pytest.raises(ValueError):
        mtt.parallel_pairs("de", "test", -1)
    with pytest.raises(ValueError, match="split"):
        mtt.parallel_pairs("de", "validation", 10)
    with pytest.raises(ValueError, match="language"):
        mtt.parallel_pairs("en", "train", 10)
    assert mtt.parallel_pairs("de", "test", 0) == []


def test_splits_disjoint(full):
    for lang in LANGS:
        english = {split: {en for _, en in pairs} for split, pairs in full[lang].items()}
        sources = {split: {src for src, _ in pairs} for split, pairs in full[lang].items()}
        for a in mtt.SPLITS:
            for b in mtt.SPLITS:
                if a < b:
                    assert not english[a] & english[b], (lang, a, b)
                    assert not sources[a] & sources[b], (lang, a, b)


def test_english_side_identical_across_languages():
    for split, count in (("train", 1000), ("test", 200), ("text", 300)):
        reference = [en for _, en in mtt.parallel_pairs(LANGS[0], split, count)]
        for lang in LANGS[1:]:
            assert [en for _, en in mtt.parallel_pairs(lang, split, count)] == reference, (lang, split)


@pytest.mark.parametrize("lang", LANGS)
def test_identity_baseline_near_zero(lang):
    pairs = mtt.parallel_pairs(lang, "test", 200)
    sources, english = [src for src, _ in pairs], [en for _, en in pairs]
    assert sacrebleu.corpus_bleu(english, [english]).score == pytest.approx(100.0)
    assert sacrebleu.corpus_bleu(sources, [english]).score < IDENTITY_BLEU_MAX


@pytest.mark.parametrize("lang", LANGS)
def test_test_words_covered_by_2000_train_pairs(lang):
    train = vocab(mtt.parallel_pairs(lang, "train", 2000))
    for split in ("dev", "test"):
        pairs = mtt.parallel_pairs(lang, split, 200)
        assert not vocab(pairs) - train, (split, sorted(vocab(pairs) - train))
        assert not vocab(pairs, 1) - vocab(mtt.parallel_pairs(lang, "train", 2000), 1)


def test_all_held_out_words_occur_in_full_train(full):
    for lang in LANGS:
        train = vocab(full[lang]["train"])
        for split in ("dev", "test", "text"):
            assert not vocab(full[lang][split]) - train, (lang, split, sorted(vocab(full[lang][split]) - train))


def test_num2words_numbers(full):
    pairs = full["de"]["train"]
    assert len(sources_for(pairs, "twenty-one")) > 100
    assert all("einundzwanzig" in src for src in sources_for(pairs, "twenty-one"))
    for lang in LANGS:
        for n in (7, 35, 47, 58, 99):  # forms without gender or case agreement
            found = sources_for(full[lang]["train"], num2words(n, lang="en"))
            assert found and all(num2words(n, lang=lang) in src for src in found), (lang, n)


@pytest.mark.parametrize("lang, english, expected", [
    # number/noun agreement, facts of each language's grammar
    ("ru", "is twenty-one years old", "двадцать один год"),
    ("ru", "is twenty-two years old", "двадцать два года"),
    ("ru", "is twenty-five years old", "двадцать пять лет"),
    ("ru", "is eleven years old", "одиннадцать лет"),
    ("ru", "I sent twenty-one letters", "двадцать одно письмо"),
    ("sl", "is two years old", "dve leti"),
    ("sl", "is three years old", "tri leta"),
    ("sl", "is twenty-two years old", "dvaindvajset let"),
    ("sl", "lasts two days", "dva dneva"),
    ("es", "is twenty-one years old", "veintiún años"),
    ("es", "I sent thirty-one letters", "treinta y una cartas"),
    ("ca", "I sent two letters", "dues cartes"),
    ("pt", "I sent twenty-two letters", "vinte e duas cartas"),
    ("fr", "I sent twenty-one letters", "vingt et une lettres"),
    ("sv", "I bought twenty-one tickets", "tjugoen biljetter"),
    ("sv", "I sent twenty-one letters", "tjugoett brev"),
    # case and prepositions with names
    ("ru", "on Wednesday", "в среду"),
    ("ru", "on Tuesday", "во вторник"),
    ("ru", "to France", "во Францию"),
    ("ru", "in May", "в мае"),
    ("sl", "to Sweden", "na Švedsko"),
    ("sl", "to Germany", "v Nemčijo"),
    ("sl", "in March", "marca"),
    ("tr", "to Sweden", "İsveç'e"),
    ("tr", "to Chile", "Şili'ye"),
    ("fr", "to Denmark", "au Danemark"),
    ("fr", "to Egypt", "en Égypte"),
    ("pt", "to Chile", "para o Chile"),
    ("de", "to Germany", "nach Deutschland"),
    # gender agreement of adjectives
    ("fr", "white cars", "voitures blanches"),
    ("it", "white hats", "cappelli bianchi"),
    ("sl", "red bicycles", "rdeča kolesa"),
    ("sv", "The museum is closed", "museet stängt"),
    ("es", "The library is open", "biblioteca está abierta"),
])
def test_grammar_facts(full, lang, english, expected):
    found = [src for split in mtt.SPLITS for src in sources_for(full[lang][split], english)]
    assert found
    assert all(expected.lower() in src.lower() for src in found), (english, expected, found[:3])


@pytest.mark.parametrize("lang", LANGS)
def test_babel_weekdays_and_months(full, lang):
    pairs = full[lang]["train"]
    days, en_days = get_day_names("wide", locale=lang), get_day_names("wide", locale="en")
    months = get_month_names("wide", locale=lang, context="stand-alone")
    en_months = get_month_names("wide", locale="en", context="stand-alone")
    for day in (0, 1, 3):  # Monday, Tuesday, Thursday: masculine in ru and sl, no case ending
        found = sources_for(pairs, en_days[day])
        assert found and all(days[day].lower() in src.lower() for src in found), (lang, en_days[day])
    for month in (6, 8):  # June, August: stems unchanged by ru/sl case endings
        found = sources_for(pairs, en_months[month])
        stem = months[month][:-1] if lang == "ru" else months[month]
        assert found and all(stem.lower() in src.lower() for src in found), (lang, en_months[month])


@pytest.mark.parametrize("lang", LANGS)
def test_pycountry_country_names(full, lang):
    catalog = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang])
    pairs = full[lang]["train"]
    for code in mtt.COUNTRIES:
        country = pycountry.countries.get(alpha_2=code)
        english = getattr(country, "common_name", None) or country.name
        name = catalog.gettext(country.name)
        assert name and (lang in ("de", "nl", "sv", "fr", "es", "it", "ca", "pt") or name != english)  # translated
        stem = name[:-1] if lang in ("ru", "sl") else name  # Германия -> в Германию, Nemčija -> v Nemčijo
        found = sources_for(pairs, "to " + english)
        assert found and all(stem in src for src in found), (lang, english)


@pytest.mark.parametrize("lang", LANGS)
def test_scripts(lang):
    script = {"ru": "CYRILLIC", "fa": "ARABIC"}.get(lang, "LATIN")
    for src, en in mtt.parallel_pairs(lang, "test", 200):
        letters = [c for c in src if c.isalpha()]
        assert letters and all(script in unicodedata.name(c) for c in letters), src
        assert all("LATIN" in unicodedata.name(c) for c in en if c.isalpha())
