"""Learnable parallel sentences (source language -> English) for a synthesised mini CoVoST 2.

A small hand-written parallel grammar: 11 templates (:data:`TEMPLATES`), each with an
English pattern and one pattern per language in that language's own word order (German
V2 and participle-final clauses, Romance adjectives after the noun, Turkish and Persian
verb-final, Russian in Cyrillic, Persian in Arabic script). Slots are filled with

* numbers 2..99 in words from ``num2words(n, lang=...)`` (as a label, "bus number 21",
  or counting a noun, with the number/noun agreement of :data:`_NUMBER_AGREEMENT` and
  :func:`_plural_form`: Russian один/два/пять classes, Slovenian dual, gendered Romance
  "un/una", Swedish "en/ett");
* weekday and month names from Babel (``get_day_names``/``get_month_names``), with the
  few case forms the patterns need (Russian and Slovenian accusative, Russian
  prepositional, Slovenian genitive) made by regular rules;
* 30 country names, English from pycountry (``common_name`` or ``name``), the others from
  pycountry's ``iso3166-1`` gettext catalogues; the countries are chosen so that "to
  <country>" is regular in every language (no article in German or Catalan, French
  au/en by gender, Portuguese o/a, Turkish dative by vowel harmony, Slovenian v/na);
* a few nouns, adjectives and phrases per template from :data:`LEXICONS` and
  :data:`COUNT_NOUNS`. A lexicon entry is a string, a ``(text, gender)`` noun, or a
  :class:`G` adjective whose form follows the gender of the sentence's noun.

The same meaning always gets the same words. Every slot combination of every template
belongs to one split by a SHA-1 of its canonical key (``template|value|value...``):
train 80 %, dev 5 %, test 5 %, text 10 % (extra text-only parallel data for MT), so dev
and test hold unseen combinations of parts that train also contains. The sample of a
split is language-independent: for one seed the n-th pair of every language has the same
slot values and hence the same English sentence.

All twelve languages of :data:`LANGUAGES` are supported (num2words, Babel and pycountry
have them all); none was dropped. Portuguese is European Portuguese, like pycountry's
``pt`` names. Turkish numbers are spelled as num2words writes them ("yirmibir").
"""
from __future__ import annotations

import functools
import gettext
import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

import pycountry
from babel.dates import get_day_names, get_month_names
from num2words import num2words

LANGUAGES: Tuple[str, ...] = ("de", "fr", "es", "ca", "it", "ru", "pt", "fa", "nl", "tr", "sv", "sl")
SPLITS: Tuple[str, ...] = ("train", "dev", "test", "text")
_SPLIT_PERCENT: Tuple[Tuple[str, int], ...] = (("train", 80), ("dev", 5), ("test", 5), ("text", 10))

NUMBERS: Tuple[int, ...] = tuple(range(2, 100))
# ISO 3166 alpha-2 codes whose name pycountry translates into every language of LANGUAGES.
COUNTRIES: Tuple[str, ...] = (
    "DE", "FR", "IT", "ES", "SE", "NO", "GR", "AT", "BE", "DK", "FI", "HU", "PL", "IE", "IS",
    "HR", "RO", "BG", "RS", "AU", "EG", "CL", "CO", "ID", "TH", "NG", "ET", "EE", "LT", "LU",
)
_Z = "\u200c"  # zero-width non-joiner of Persian spelling (می‌رویم)


class G(dict):
    """Adjective forms keyed by the gender of the sentence's noun: m, f, n or c (Swedish common)."""


Entry = Union[str, Tuple[str, str], G]

# Per lexicon, per language, one entry per concept in the order of the English tuple
# (whose strings are the concepts' keys). Each lexicon is the phrase one template needs.
LEXICONS: Dict[str, Dict[str, Tuple[Entry, ...]]] = {
    "transport": {
        "en": ("by train", "by bus", "by car", "by plane", "by ship"),
        "de": ("mit dem Zug", "mit dem Bus", "mit dem Auto", "mit dem Flugzeug", "mit dem Schiff"),
        "fr": ("en train", "en bus", "en voiture", "en avion", "en bateau"),
        "es": ("en tren", "en autobús", "en coche", "en avión", "en barco"),
        "ca": ("amb tren", "amb autobús", "amb cotxe", "amb avió", "amb vaixell"),
        "it": ("in treno", "in autobus", "in macchina", "in aereo", "in nave"),
        "ru": ("на поезде", "на автобусе", "на машине", "на самолёте", "на корабле"),
        "pt": ("de comboio", "de autocarro", "de carro", "de avião", "de barco"),
        "fa": ("با قطار", "با اتوبوس", "با ماشین", "با هواپیما", "با کشتی"),
        "nl": ("met de trein", "met de bus", "met de auto", "met het vliegtuig", "met de boot"),
        "tr": ("trenle", "otobüsle", "arabayla", "uçakla", "gemiyle"),
        "sv": ("med tåg", "med buss", "med bil", "med flyg", "med båt"),
        "sl": ("z vlakom", "z avtobusom", "z avtom", "z letalom", "z ladjo"),
    },
    "event": {
        "en": ("for the concert", "for the match", "for the play"),
        "de": ("für das Konzert", "für das Spiel", "für das Theaterstück"),
        "fr": ("pour le concert", "pour le match", "pour la pièce"),
        "es": ("para el concierto", "para el partido", "para la obra"),
        "ca": ("per al concert", "per al partit", "per a l'obra"),
        "it": ("per il concerto", "per la partita", "per lo spettacolo"),
        "ru": ("на концерт", "на матч", "на спектакль"),
        "pt": ("para o concerto", "para o jogo", "para a peça"),
        "fa": ("برای کنسرت", "برای مسابقه", "برای نمایش"),
        "nl": ("voor het concert", "voor de wedstrijd", "voor het toneelstuk"),
        "tr": ("konser", "maç", "tiyatro oyunu"),
        "sv": ("till konserten", "till matchen", "till pjäsen"),
        "sl": ("za koncert", "za tekmo", "za predstavo"),
    },
    "relative": {  # subject of "... is N years old" (Russian: dative)
        "en": ("my sister", "my brother", "my mother", "my father", "my son", "my daughter"),
        "de": ("meine Schwester", "mein Bruder", "meine Mutter", "mein Vater", "mein Sohn", "meine Tochter"),
        "fr": ("ma sœur", "mon frère", "ma mère", "mon père", "mon fils", "ma fille"),
        "es": ("mi hermana", "mi hermano", "mi madre", "mi padre", "mi hijo", "mi hija"),
        "ca": ("la meva germana", "el meu germà", "la meva mare", "el meu pare", "el meu fill", "la meva filla"),
        "it": ("mia sorella", "mio fratello", "mia madre", "mio padre", "mio figlio", "mia figlia"),
        "ru": ("моей сестре", "моему брату", "моей матери", "моему отцу", "моему сыну", "моей дочери"),
        "pt": ("a minha irmã", "o meu irmão", "a minha mãe", "o meu pai", "o meu filho", "a minha filha"),
        "fa": ("خواهرم", "برادرم", "مادرم", "پدرم", "پسرم", "دخترم"),
        "nl": ("mijn zus", "mijn broer", "mijn moeder", "mijn vader", "mijn zoon", "mijn dochter"),
        "tr": ("kız kardeşim", "erkek kardeşim", "annem", "babam", "oğlum", "kızım"),
        "sv": ("min syster", "min bror", "min mor", "min far", "min son", "min dotter"),
        "sl": ("moja sestra", "moj brat", "moja mama", "moj oče", "moj sin", "moja hči"),
    },
    "relative_of": {  # whose birthday it is
        "en": ("my sister's", "my brother's", "my mother's", "my father's", "my son's", "my daughter's"),
        "de": ("meine Schwester", "mein Bruder", "meine Mutter", "mein Vater", "mein Sohn", "meine Tochter"),
        "fr": ("de ma sœur", "de mon frère", "de ma mère", "de mon père", "de mon fils", "de ma fille"),
        "es": ("de mi hermana", "de mi hermano", "de mi madre", "de mi padre", "de mi hijo", "de mi hija"),
        "ca": ("de la meva germana", "del meu germà", "de la meva mare", "del meu pare", "del meu fill",
               "de la meva filla"),
        "it": ("di mia sorella", "di mio fratello", "di mia madre", "di mio padre", "di mio figlio", "di mia figlia"),
        "ru": ("моей сестры", "моего брата", "моей матери", "моего отца", "моего сына", "моей дочери"),
        "pt": ("da minha irmã", "do meu irmão", "da minha mãe", "do meu pai", "do meu filho", "da minha filha"),
        "fa": ("خواهرم", "برادرم", "مادرم", "پدرم", "پسرم", "دخترم"),
        "nl": ("mijn zus", "mijn broer", "mijn moeder", "mijn vader", "mijn zoon", "mijn dochter"),
        "tr": ("kız kardeşimin", "erkek kardeşimin", "annemin", "babamın", "oğlumun", "kızımın"),
        "sv": ("min syster", "min bror", "min mor", "min far", "min son", "min dotter"),
        "sl": ("moja sestra", "moj brat", "moja mama", "moj oče", "moj sin", "moja hči"),
    },
    "vehicle": {  # object of "take ... number N" (Turkish: dative)
        "en": ("bus", "train", "tram"),
        "de": ("den Bus", "den Zug", "die Straßenbahn"),
        "fr": ("le bus", "le train", "le tram"),
        "es": ("el autobús", "el tren", "el tranvía"),
        "ca": ("l'autobús", "el tren", "el tramvia"),
        "it": ("l'autobus", "il treno", "il tram"),
        "ru": ("автобус", "поезд", "трамвай"),
        "pt": ("o autocarro", "o comboio", "o elétrico"),
        "fa": ("اتوبوس", "قطار", "تراموا"),
        "nl": ("bus", "trein", "tram"),
        "tr": ("otobüse", "trene", "tramvaya"),
        "sv": ("buss", "tåg", "spårvagn"),
        "sl": ("avtobus", "vlak", "tramvaj"),
    },
    "color": {  # plural, agreeing with "thing"
        "en": ("red", "black", "white", "green", "blue", "yellow"),
        "de": ("rote", "schwarze", "weiße", "grüne", "blaue", "gelbe"),
        "fr": ("rouges", G(m="noirs", f="noires"), G(m="blancs", f="blanches"), G(m="verts", f="vertes"),
               G(m="bleus", f="bleues"), "jaunes"),
        "es": (G(m="rojos", f="rojas"), G(m="negros", f="negras"), G(m="blancos", f="blancas"), "verdes", "azules",
               G(m="amarillos", f="amarillas")),
        "ca": (G(m="vermells", f="vermelles"), "negres", G(m="blancs", f="blanques"), G(m="verds", f="verdes"),
               G(m="blaus", f="blaves"), G(m="grocs", f="grogues")),
        "it": (G(m="rossi", f="rosse"), G(m="neri", f="nere"), G(m="bianchi", f="bianche"), "verdi", "blu",
               G(m="gialli", f="gialle")),
        "ru": ("красные", "чёрные", "белые", "зелёные", "синие", "жёлтые"),
        "pt": (G(m="vermelhos", f="vermelhas"), G(m="pretos", f="pretas"), G(m="brancos", f="brancas"), "verdes",
               "azuis", G(m="amarelos", f="amarelas")),
        "fa": ("قرمز", "سیاه", "سفید", "سبز", "آبی", "زرد"),
        "nl": ("rode", "zwarte", "witte", "groene", "blauwe", "gele"),
        "tr": ("kırmızı", "siyah", "beyaz", "yeşil", "mavi", "sarı"),
        "sv": ("röda", "svarta", "vita", "gröna", "blå", "gula"),
        "sl": (G(m="rdeče", f="rdeče", n="rdeča"), G(m="črne", f="črne", n="črna"), G(m="bele", f="bele", n="bela"),
               G(m="zelene", f="zelene", n="zelena"), G(m="modre", f="modre", n="modra"),
               G(m="rumene", f="rumene", n="rumena")),
    },
    "thing": {  # plural object of "sells" (Persian: with the ezafe of the following adjective)
        "en": ("bicycles", "cars", "shoes", "hats", "bags"),
        "de": ("Fahrräder", "Autos", "Schuhe", "Hüte", "Taschen"),
        "fr": (("vélos", "m"), ("voitures", "f"), ("chaussures", "f"), ("chapeaux", "m"), ("sacs", "m")),
        "es": (("bicicletas", "f"), ("coches", "m"), ("zapatos", "m"), ("sombreros", "m"), ("bolsos", "m")),
        "ca": (("bicicletes", "f"), ("cotxes", "m"), ("sabates", "f"), ("barrets", "m"), ("bosses", "f")),
        "it": (("biciclette", "f"), ("macchine", "f"), ("scarpe", "f"), ("cappelli", "m"), ("borse", "f")),
        "ru": ("велосипеды", "машины", "туфли", "шляпы", "сумки"),
        "pt": (("bicicletas", "f"), ("carros", "m"), ("sapatos", "m"), ("chapéus", "m"), ("malas", "f")),
        "fa": (f"دوچرخه{_Z}های", f"ماشین{_Z}های", f"کفش{_Z}های", f"کلاه{_Z}های", f"کیف{_Z}های"),
        "nl": ("fietsen", "auto's", "schoenen", "hoeden", "tassen"),
        "tr": ("bisikletler", "arabalar", "ayakkabılar", "şapkalar", "çantalar"),
        "sv": ("cyklar", "bilar", "skor", "hattar", "väskor"),
        "sl": (("kolesa", "n"), ("avtomobile", "m"), ("čevlje", "m"), ("klobuke", "m"), ("torbe", "f")),
    },
    "place": {
        "en": ("the museum", "the library", "the bank", "the pharmacy", "the post office", "the school"),
        "de": ("das Museum", "die Bibliothek", "die Bank", "die Apotheke", "die Post", "die Schule"),
        "fr": (("le musée", "m"), ("la bibliothèque", "f"), ("la banque", "f"), ("la pharmacie", "f"),
               ("la poste", "f"), ("l'école", "f")),
        "es": (("el museo", "m"), ("la biblioteca", "f"), ("el banco", "m"), ("la farmacia", "f"),
               ("la oficina de correos", "f"), ("la escuela", "f")),
        "ca": (("el museu", "m"), ("la biblioteca", "f"), ("el banc", "m"), ("la farmàcia", "f"),
               ("l'oficina de correus", "f"), ("l'escola", "f")),
        "it": (("il museo", "m"), ("la biblioteca", "f"), ("la banca", "f"), ("la farmacia", "f"),
               ("l'ufficio postale", "m"), ("la scuola", "f")),
        "ru": (("музей", "m"), ("библиотека", "f"), ("банк", "m"), ("аптека", "f"), ("почта", "f"), ("школа", "f")),
        "pt": (("o museu", "m"), ("a biblioteca", "f"), ("o banco", "m"), ("a farmácia", "f"),
               ("a estação de correios", "f"), ("a escola", "f")),
        "fa": ("موزه", "کتابخانه", "بانک", "داروخانه", "اداره پست", "مدرسه"),
        "nl": ("het museum", "de bibliotheek", "de bank", "de apotheek", "het postkantoor", "de school"),
        "tr": ("müze", "kütüphane", "banka", "eczane", "postane", "okul"),
        "sv": (("museet", "n"), ("biblioteket", "n"), ("banken", "c"), ("apoteket", "n"), ("posten", "c"),
               ("skolan", "c")),
        "sl": (("muzej", "m"), ("knjižnica", "f"), ("banka", "f"), ("lekarna", "f"), ("pošta", "f"), ("šola", "f")),
    },
    "state": {  # predicative, agreeing with "place"
        "en": ("open", "closed"),
        "de": ("geöffnet", "geschlossen"),
        "fr": (G(m="ouvert", f="ouverte"), G(m="fermé", f="fermée")),
        "es": (G(m="abierto", f="abierta"), G(m="cerrado", f="cerrada")),
        "ca": (G(m="obert", f="oberta"), G(m="tancat", f="tancada")),
        "it": (G(m="aperto", f="aperta"), G(m="chiuso", f="chiusa")),
        "ru": (G(m="открыт", f="открыта", n="открыто"), G(m="закрыт", f="закрыта", n="закрыто")),
        "pt": (G(m="aberto", f="aberta"), G(m="fechado", f="fechada")),
        "fa": ("باز", "بسته"),
        "nl": ("open", "gesloten"),
        "tr": ("açık", "kapalı"),
        "sv": (G(c="öppen", n="öppet"), G(c="stängd", n="stängt")),
        "sl": (G(m="odprt", f="odprta", n="odprto"), G(m="zaprt", f="zaprta", n="zaprto")),
    },
}

# Counted nouns, in the case their template needs: the plural (a string, or (plural, gender)
# where the number word agrees), or for ru and sl (form for 1/2/2+, form for 2-4/3-4, form for
# 5+, gender): Russian "один билет, два билета, пять билетов", Slovenian dual "dve vstopnici",
# "tri vstopnice", "pet vstopnic" (compound numerals such as 21 count like 5).
CountNoun = Union[str, Tuple[str, ...]]
COUNT_NOUNS: Dict[str, Dict[str, CountNoun]] = {
    "ticket": {
        "en": "tickets", "de": "Karten", "fr": ("billets", "m"), "es": ("entradas", "f"), "ca": ("entrades", "f"),
        "it": "biglietti", "ru": ("билет", "билета", "билетов", "m"), "pt": ("bilhetes", "m"), "fa": "بلیت",
        "nl": "kaartjes", "tr": "bilet", "sv": ("biljetter", "c"), "sl": ("vstopnici", "vstopnice", "vstopnic", "f"),
    },
    "year": {
        "en": "years", "de": "Jahre", "fr": ("ans", "m"), "es": ("años", "m"), "ca": ("anys", "m"), "it": "anni",
        "ru": ("год", "года", "лет", "m"), "pt": ("anos", "m"), "fa": "سال", "nl": "jaar", "tr": "yaşında",
        "sv": ("år", "n"), "sl": ("leti", "leta", "let", "n"),
    },
    "letter": {
        "en": "letters", "de": "Briefe", "fr": ("lettres", "f"), "es": ("cartas", "f"), "ca": ("cartes", "f"),
        "it": "lettere", "ru": ("письмо", "письма", "писем", "n"), "pt": ("cartas", "f"), "fa": "نامه",
        "nl": "brieven", "tr": "mektup", "sv": ("brev", "n"), "sl": ("pismi", "pisma", "pisem", "n"),
    },
    "day": {  # duration, accusative
        "en": "days", "de": "Tage", "fr": ("jours", "m"), "es": ("días", "m"), "ca": ("dies", "m"), "it": "giorni",
        "ru": ("день", "дня", "дней", "m"), "pt": ("dias", "m"), "fa": "روز", "nl": "dagen", "tr": "gün",
        "sv": ("dagar", "c"), "sl": ("dneva", "dni", "dni", "m"),
    },
    "chair": {  # object, accusative
        "en": "chairs", "de": "Stühle", "fr": ("chaises", "f"), "es": ("sillas", "f"), "ca": ("cadires", "f"),
        "it": "sedie", "ru": ("стул", "стула", "стульев", "m"), "pt": ("cadeiras", "f"), "fa": "صندلی",
        "nl": "stoelen", "tr": "sandalye", "sv": ("stolar", "c"), "sl": ("stola", "stole", "stolov", "m"),
    },
}

# num2words writes the masculine (ru, es, ca, pt, fr), neuter (sv) or feminine (sl "dve")
# form; before a counted noun of another gender its ending changes: (ending, replacement).
_NUMBER_AGREEMENT: Dict[Tuple[str, str], Tuple[Tuple[str, str], ...]] = {
    ("es", "m"): (("iuno", "iún"), (" uno", " un")),
    ("es", "f"): (("uno", "una"),),
    ("ca", "f"): (("un", "una"), ("dos", "dues")),
    ("pt", "f"): (("um", "uma"), ("dois", "duas")),
    ("fr", "f"): (("un", "une"),),
    ("ru", "f"): (("один", "одна"), ("два", "две")),
    ("ru", "n"): (("один", "одно"),),
    ("sv", "c"): (("ett", "en"),),
    ("sl", "m"): (("dve", "dva"),),  # masculine inanimate accusative: dva dneva, tri dni
}


@dataclass(frozen=True)
class Template:
    """One sentence pattern: slot kinds and a format string per language ("en" included).

    Slot kinds: ``num`` (a number as a label), ``count:<noun>`` (a number counting a
    noun of :data:`COUNT_NOUNS`; field ``count``), ``day``, ``month``, ``country`` (dicts
    of forms: ``name``, ``on``/``acc``, ``in``, ``to``) or a lexicon of :data:`LEXICONS`.
    """

    name: str
    slots: Tuple[str, ...]
    text: Dict[str, str]


TEMPLATES: Tuple[Template, ...] = (
    Template("travel", ("country", "transport", "day"), {
        "en": "We travel {country[to]} {transport} {day[on]}.",
        "de": "{day[on]} reisen wir {transport} {country[to]}.",
        "fr": "{day[on]}, nous allons {country[to]} {transport}.",
        "es": "{day[on]} viajamos {country[to]} {transport}.",
        "ca": "{day[on]} viatgem {country[to]} {transport}.",
        "it": "{day[on]} andiamo {country[to]} {transport}.",
        "ru": "{day[on]} мы отправляемся {country[to]} {transport}.",
        "pt": "{day[on]} vamos {country[to]} {transport}.",
        "fa": f"ما {{day[on]}} {{transport}} {{country[to]}} می{_Z}رویم.",
        "nl": "{day[on]} reizen we {transport} {country[to]}.",
        "tr": "{day[on]} {transport} {country[to]} gidiyoruz.",
        "sv": "{day[on]} reser vi {transport} {country[to]}.",
        "sl": "{day[on]} potujemo {transport} {country[to]}.",
    }),
    Template("tickets", ("count:ticket", "event", "day"), {
        "en": "I bought {count} {event} {day[on]}.",
        "de": "Ich habe {count} {event} {day[on]} gekauft.",
        "fr": "J'ai acheté {count} {event} de {day[name]}.",
        "es": "Compré {count} {event} del {day[name]}.",
        "ca": "He comprat {count} {event} de {day[name]}.",
        "it": "Ho comprato {count} {event} di {day[name]}.",
        "ru": "Я купил {count} {event} {day[on]}.",
        "pt": "Comprei {count} {event} de {day[name]}.",
        "fa": "{count} {event} {day[name]} خریدم.",
        "nl": "Ik heb {count} gekocht {event} van {day[name]}.",
        "tr": "{day[name]} günkü {event} için {count} aldım.",
        "sv": "Jag köpte {count} {event} {day[on]}.",
        "sl": "Kupil sem {count} {event} {day[on]}.",
    }),
    Template("birthday", ("relative_of", "month"), {
        "en": "{relative_of} birthday is {month[in]}.",
        "de": "{relative_of} hat {month[in]} Geburtstag.",
        "fr": "L'anniversaire {relative_of} est {month[in]}.",
        "es": "El cumpleaños {relative_of} es {month[in]}.",
        "ca": "L'aniversari {relative_of} és {month[in]}.",
        "it": "Il compleanno {relative_of} è {month[in]}.",
        "ru": "День рождения {relative_of} {month[in]}.",
        "pt": "O aniversário {relative_of} é {month[in]}.",
        "fa": "تولد {relative_of} {month[in]} است.",
        "nl": "{relative_of} is {month[in]} jarig.",
        "tr": "{relative_of} doğum günü {month[in]}.",
        "sv": "{relative_of} fyller år {month[in]}.",
        "sl": "{relative_of} ima rojstni dan {month[in]}.",
    }),
    Template("line", ("vehicle", "num"), {
        "en": "Please take {vehicle} number {num}.",
        "de": "Bitte nehmen Sie {vehicle} Nummer {num}.",
        "fr": "Prenez {vehicle} numéro {num}, s'il vous plaît.",
        "es": "Por favor, tome {vehicle} número {num}.",
        "ca": "Si us plau, agafi {vehicle} número {num}.",
        "it": "Per favore, prenda {vehicle} numero {num}.",
        "ru": "Пожалуйста, садитесь на {vehicle} номер {num}.",
        "pt": "Por favor, apanhe {vehicle} número {num}.",
        "fa": "لطفاً سوار {vehicle} شماره {num} شوید.",
        "nl": "Neem alstublieft {vehicle} nummer {num}.",
        "tr": "Lütfen {num} numaralı {vehicle} binin.",
        "sv": "Ta {vehicle} nummer {num}, tack.",
        "sl": "Prosim, vstopite v {vehicle} številka {num}.",
    }),
    Template("shop", ("color", "thing", "day"), {
        "en": "This shop sells {color} {thing} {day[on]}.",
        "de": "{day[on]} verkauft dieser Laden {color} {thing}.",
        "fr": "{day[on]}, ce magasin vend des {thing} {color}.",
        "es": "{day[on]} esta tienda vende {thing} {color}.",
        "ca": "{day[on]} aquesta botiga ven {thing} {color}.",
        "it": "{day[on]} questo negozio vende {thing} {color}.",
        "ru": "{day[on]} этот магазин продаёт {color} {thing}.",
        "pt": "{day[on]} esta loja vende {thing} {color}.",
        "fa": f"این مغازه {{day[on]}} {{thing}} {{color}} می{_Z}فروشد.",
        "nl": "{day[on]} verkoopt deze winkel {color} {thing}.",
        "tr": "Bu dükkan {day[on]} {color} {thing} satıyor.",
        "sv": "{day[on]} säljer den här affären {color} {thing}.",
        "sl": "{day[on]} ta trgovina prodaja {color} {thing}.",
    }),
    Template("age", ("relative", "count:year"), {
        "en": "{relative} is {count} old.",
        "de": "{relative} ist {count} alt.",
        "fr": "{relative} a {count}.",
        "es": "{relative} tiene {count}.",
        "ca": "{relative} té {count}.",
        "it": "{relative} ha {count}.",
        "ru": "{relative} {count}.",
        "pt": "{relative} tem {count}.",
        "fa": "{relative} {count} دارد.",
        "nl": "{relative} is {count} oud.",
        "tr": "{relative} {count}.",
        "sv": "{relative} är {count} gammal.",
        "sl": "{relative} ima {count}.",
    }),
    Template("trip", ("country", "month"), {
        "en": "We want to go {country[to]} {month[in]}.",
        "de": "Wir wollen {month[in]} {country[to]} fahren.",
        "fr": "Nous voulons aller {country[to]} {month[in]}.",
        "es": "Queremos ir {country[to]} {month[in]}.",
        "ca": "Volem anar {country[to]} {month[in]}.",
        "it": "Vogliamo andare {country[to]} {month[in]}.",
        "ru": "Мы хотим поехать {country[to]} {month[in]}.",
        "pt": "Queremos ir {country[to]} {month[in]}.",
        "fa": f"می{_Z}خواهیم {{month[in]}} {{country[to]}} برویم.",
        "nl": "We willen {month[in]} {country[to]} gaan.",
        "tr": "{month[in]} {country[to]} gitmek istiyoruz.",
        "sv": "Vi vill åka {country[to]} {month[in]}.",
        "sl": "{month[in]} želimo iti {country[to]}.",
    }),
    Template("letters", ("count:letter", "country", "month"), {
        "en": "I sent {count} {country[to]} {month[in]}.",
        "de": "{month[in]} habe ich {count} {country[to]} geschickt.",
        "fr": "{month[in]}, j'ai envoyé {count} {country[to]}.",
        "es": "{month[in]} envié {count} {country[to]}.",
        "ca": "{month[in]} vaig enviar {count} {country[to]}.",
        "it": "{month[in]} ho spedito {count} {country[to]}.",
        "ru": "{month[in]} я отправил {count} {country[to]}.",
        "pt": "{month[in]} enviei {count} {country[to]}.",
        "fa": "{month[in]} {count} {country[to]} فرستادم.",
        "nl": "{month[in]} heb ik {count} {country[to]} gestuurd.",
        "tr": "{month[in]} {country[to]} {count} gönderdim.",
        "sv": "{month[in]} skickade jag {count} {country[to]}.",
        "sl": "{month[in]} sem poslal {count} {country[to]}.",
    }),
    Template("hours", ("place", "state", "day"), {
        "en": "{place} is {state} {day[on]}.",
        "de": "{day[on]} ist {place} {state}.",
        "fr": "{place} est {state} {day[on]}.",
        "es": "{place} está {state} {day[on]}.",
        "ca": "{place} està {state} {day[on]}.",
        "it": "{place} è {state} {day[on]}.",
        "ru": "{day[on]} {place} {state}.",
        "pt": "{place} está {state} {day[on]}.",
        "fa": "{place} {day[on]} {state} است.",
        "nl": "{day[on]} is {place} {state}.",
        "tr": "{place} {day[on]} {state}.",
        "sv": "{day[on]} är {place} {state}.",
        "sl": "{day[on]} je {place} {state}.",
    }),
    Template("course", ("month", "count:day"), {
        "en": "The course starts {month[in]} and lasts {count}.",
        "de": "Der Kurs beginnt {month[in]} und dauert {count}.",
        "fr": "Le cours commence {month[in]} et dure {count}.",
        "es": "El curso empieza {month[in]} y dura {count}.",
        "ca": "El curs comença {month[in]} i dura {count}.",
        "it": "Il corso inizia {month[in]} e dura {count}.",
        "ru": "Курс начинается {month[in]} и длится {count}.",
        "pt": "O curso começa {month[in]} e dura {count}.",
        "fa": f"دوره {{month[in]}} شروع می{_Z}شود و {{count}} طول می{_Z}کشد.",
        "nl": "De cursus begint {month[in]} en duurt {count}.",
        "tr": "Kurs {month[in]} başlıyor ve {count} sürüyor.",
        "sv": "Kursen börjar {month[in]} och pågår i {count}.",
        "sl": "Tečaj se začne {month[in]} in traja {count}.",
    }),
    Template("chairs", ("count:chair", "day"), {
        "en": "We will order {count} for {day[name]}.",
        "de": "Wir bestellen {count} für {day[name]}.",
        "fr": "Nous commanderons {count} pour {day[name]}.",
        "es": "Pediremos {count} para el {day[name]}.",
        "ca": "Demanarem {count} per a {day[name]}.",
        "it": "Ordineremo {count} per {day[name]}.",
        "ru": "Мы закажем {count} на {day[acc]}.",
        "pt": "Vamos encomendar {count} para {day[name]}.",
        "fa": f"برای {{day[name]}} {{count}} سفارش می{_Z}دهیم.",
        "nl": "We bestellen {count} voor {day[name]}.",
        "tr": "{day[name]} için {count} sipariş edeceğiz.",
        "sv": "Vi beställer {count} till {day[name]}.",
        "sl": "Za {day[acc]} bomo naročili {count}.",
    }),
)


# ---------------------------------------------------------------- morphology of the slots

_RU_VOWELS = "аеёиоуыэюя"
_TR_BACK, _TR_FRONT = "aıou", "eiöü"


def _fem_acc(lang: str, word: str) -> str:
    """Accusative of a feminine name in -а/-я (ru) or -a (sl); other names are unchanged."""
    if lang == "ru" and word[-1] in "ая":
        return word[:-1] + {"а": "у", "я": "ю"}[word[-1]]
    if lang == "sl" and word.endswith("a"):
        return word[:-1] + "o"
    return word


def _ru_v(word: str) -> str:
    """Russian "в" (into/on), "во" before в/ф plus a consonant: во вторник, во Францию."""
    return ("во " if word[0].lower() in "вф" and word[1] not in _RU_VOWELS else "в ") + word


def _tr_dative(name: str) -> str:
    """Turkish dative of a proper name by vowel harmony: Almanya'ya, İsveç'e, Mısır'a."""
    last = [c for c in name.lower() if c in _TR_BACK + _TR_FRONT][-1]
    return f"{name}'{'y' if name[-1].lower() in _TR_BACK + _TR_FRONT else ''}{'a' if last in _TR_BACK else 'e'}"


@functools.lru_cache(maxsize=None)
def _number(lang: str, n: int, gender: str = "") -> str:
    """``num2words(n, lang)``, with its ending agreeing with a counted noun of ``gender``."""
    words = num2words(n, lang=lang)
    for ending, replacement in _NUMBER_AGREEMENT.get((lang, gender), ()):
        if words.endswith(ending):
            return words[: -len(ending)] + replacement
    return words


def _plural_form(lang: str, n: int) -> int:
    """Index of the ru/sl noun form after the number ``n`` (see :data:`COUNT_NOUNS`)."""
    if lang == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return 0
        return 1 if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else 2
    return 0 if n == 2 else 1 if n in (3, 4) else 2


def _count(lang: str, n: int, noun: CountNoun) -> str:
    """The number ``n`` counting ``noun``: "<number> <noun>", the two agreeing."""
    forms, gender = ((noun,), "") if isinstance(noun, str) else (noun[:-1], noun[-1])
    return f"{_number(lang, n, gender)} {forms[_plural_form(lang, n)] if len(forms) == 3 else forms[0]}"


@functools.lru_cache(maxsize=None)
def _day(lang: str, index: int) -> Dict[str, str]:
    """Weekday ``index`` (0 = Monday): bare ``name``, ``on`` <day>, accusative ``acc``."""
    name = get_day_names("wide", locale=lang)[index]
    acc = _fem_acc(lang, name)
    on = {
        "en": f"on {name}", "de": f"am {name}", "es": f"el {name}", "ru": _ru_v(acc),
        "pt": ("na " if name.endswith("feira") else "no ") + name, "nl": f"op {name}", "sv": f"på {name}",
        "sl": f"v {acc}",
    }.get(lang, name)
    return {"name": name, "on": on, "acc": acc}


@functools.lru_cache(maxsize=None)
def _month(lang: str, month: int) -> Dict[str, str]:
    """Month 1..12: bare ``name`` and ``in`` <month>."""
    name = get_month_names("wide", locale=lang, context="stand-alone")[month]
    if lang == "ru":  # prepositional: январь -> в январе, май -> в мае, март -> в марте
        in_month = "в " + (name[:-1] if name[-1] in "ьй" else name) + "е"
    elif lang == "sl":  # genitive of time: januarja, marca, aprila, septembra
        in_month = ("marca" if name == "marec" else name[:-3] + "bra" if name.endswith("ber")
                    else name + ("ja" if name.endswith("ar") else "a"))
    elif lang == "ca":  # Babel's format form is "de gener", "d’abril"
        in_month = "al mes " + get_month_names("wide", locale=lang, context="format")[month].replace("’", "'")
    elif lang == "it":
        in_month = ("ad " if name[0] == "a" else "a ") + name
    else:
        in_month = {"en": "in {}", "de": "im {}", "fr": "en {}", "es": "en {}", "pt": "em {}", "fa": "در {}",
                    "nl": "in {}", "tr": "{} ayında", "sv": "i {}"}[lang].format(name)
    return {"name": name, "in": in_month}


@functools.lru_cache(maxsize=None)
def _country(lang: str, code: str) -> Dict[str, str]:
    """Country ``code``: its ``name`` (pycountry) and "to" <country> (``to``)."""
    country = pycountry.countries.get(alpha_2=code)
    if lang == "en":
        name = getattr(country, "common_name", None) or country.name
    else:
        name = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang]).gettext(country.name)
    if lang == "fr":  # feminine names end in -e; au only before a masculine consonant-initial name
        to = ("en " if name.endswith("e") or name[0] in "AEIOUÉ" else "au ") + name
    elif lang == "pt":
        to = "para " + ("a " if name.endswith("a") else "o ") + name
    elif lang == "ru":
        to = _ru_v(_fem_acc(lang, name))
    elif lang == "sl":  # adjectival names (Švedska, Hrvaška) take na
        to = ("na " if name.endswith(("ska", "ška")) else "v ") + _fem_acc(lang, name)
    elif lang == "tr":
        to = _tr_dative(name)
    else:
        to = {"en": "to {}", "de": "nach {}", "es": "a {}", "ca": "a {}", "it": "in {}", "fa": "به {}",
              "nl": "naar {}", "sv": "till {}"}[lang].format(name)
    return {"name": name, "to": to}


# ---------------------------------------------------------------- templates and splits

_NAMED_SLOTS = {"day": _day, "month": _month, "country": _country}
_NAMED_VALUES = {"day": tuple(range(7)), "month": tuple(range(1, 13)), "country": COUNTRIES}


def _values(kind: str) -> Tuple:
    """The language-independent values of a slot kind (numbers, day/month indices, codes, English keys)."""
    if kind == "num" or kind.startswith("count:"):
        return NUMBERS
    return _NAMED_VALUES[kind] if kind in _NAMED_VALUES else LEXICONS[kind]["en"]


def _render(lang: str, template: Template, values: Tuple) -> str:
    """Fill ``template`` for ``lang``; adjectives (:class:`G`) agree with the sentence's gendered noun."""
    fields: Dict[str, object] = {}
    gender = ""
    for kind, value in zip(template.slots, values):
        if kind == "num":
            fields[kind] = _number(lang, value)
        elif kind.startswith("count:"):
            fields["count"] = _count(lang, value, COUNT_NOUNS[kind[6:]][lang])
        elif kind in _NAMED_SLOTS:
            fields[kind] = _NAMED_SLOTS[kind](lang, value)
        else:
            entry = LEXICONS[kind][lang][LEXICONS[kind]["en"].index(value)]
            if isinstance(entry, tuple):
                entry, gender = entry
            fields[kind] = entry
    text = template.text[lang].format(**{k: v[gender] if isinstance(v, G) else v for k, v in fields.items()})
    first = "İ" if lang == "tr" and text[0] == "i" else text[0].upper()
    return first + text[1:]


def _split_of(template: Template, values: Tuple) -> str:
    """The split of a slot combination, by a SHA-1 of its canonical key."""
    key = "|".join([template.name, *map(str, values)])
    bucket = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % 100
    for split, percent in _SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("split percentages must add up to 100")


@functools.lru_cache(maxsize=None)
def _combinations() -> Dict[str, Tuple[Tuple[Tuple, ...], ...]]:
    """Per split, per template, every slot combination (in enumeration order)."""
    out: Dict[str, List[List[Tuple]]] = {split: [[] for _ in TEMPLATES] for split in SPLITS}
    for index, template in enumerate(TEMPLATES):
        for values in itertools.product(*(_values(kind) for kind in template.slots)):
            out[_split_of(template, values)][index].append(values)
    return {split: tuple(map(tuple, per_template)) for split, per_template in out.items()}


@functools.lru_cache(maxsize=16)
def _sample_order(split: str, seed: int) -> Tuple[Tuple[int, Tuple], ...]:
    """All (template index, values) of ``split`` in sampling order (language-independent).

    Each template's combinations are shuffled, then those that bring a slot value not yet
    seen in that template come first (so a small sample already holds every number, day,
    month, country and lexicon entry); the templates then take turns.
    """
    rng = random.Random(f"mini_translation_text:{split}:{seed}")
    queues = []
    for combos in _combinations()[split]:
        combos = list(combos)
        rng.shuffle(combos)
        seen, first, rest = set(), [], []
        for values in combos:
            new = set(enumerate(values)) - seen
            (first if new else rest).append(values)
            seen |= new
        queues.append(first + rest)
    return tuple((index, values) for turn in itertools.zip_longest(*queues)
                 for index, values in enumerate(turn) if values is not None)


def split_capacity(split: str) -> int:
    """How many distinct sentence pairs ``split`` holds (the most :func:`parallel_pairs` can return)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return sum(len(combos) for combos in _combinations()[split])


def parallel_pairs(lang: str, split: str, count: int, seed: int = 0) -> List[Tuple[str, str]]:
    """``count`` distinct (source sentence, English translation) pairs of ``split``.

    Deterministic for a given ``seed``; a smaller ``count`` gives a prefix of a larger one,
    and every language gets the same slot combinations (the same English side).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGUAGES}")
    capacity = split_capacity(split)
    if not 0 <= count <= capacity:
        raise ValueError(f"split {split!r} holds {capacity} distinct sentence pairs; {count} were asked for")
    return [(_render(lang, TEMPLATES[index], values), _render("en", TEMPLATES[index], values))
            for index, values in _sample_order(split, seed)[:count]]
