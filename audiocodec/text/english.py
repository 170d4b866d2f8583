"""English normalisation rules: abbreviations, money, percentages, times, ordinals, decades, decimals,
years, cardinals and a few symbols, each turned into the words a reader says.

>>> EnglishNormalizer()("At 10:30 a.m. the 3rd of 3 vans cost $3.50 (50% off).")
'At ten thirty a.m. the third of three vans cost three dollars and fifty cents, fifty percent off.'
"""
from __future__ import annotations

import re
from typing import Callable

from . import numbers
from .abbreviations import (ENGLISH_ABBREVIATIONS, ENGLISH_AFTER_NAMES, ENGLISH_BEFORE_NUMBERS, ENGLISH_DOTTED,
                            ENGLISH_TITLES)
from .normalize import Normalizer, primary_language
from .errors import TextError

#: An integer in digits, with or without thousands commas: 1,234,567 or 1234567.
_INT = r"\d{1,3}(?:,\d{3})+|\d+"
_SIGN = r"(?P<sign>(?<![\w-])-)?"

#: symbol: (one, many, one of the hundredth unit, many of it); None where there is no such unit.
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", None, None),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}
_SCALE_SHORTHANDS = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion"}

_ABBREVIATION_KEYS = sorted({**ENGLISH_TITLES, **ENGLISH_ABBREVIATIONS, **ENGLISH_BEFORE_NUMBERS, **ENGLISH_DOTTED},
                            key=len, reverse=True)
_ABBREVIATION_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in _ABBREVIATION_KEYS) + r")\.",
                              re.IGNORECASE)
_CURRENCY_RE = re.compile(
    rf"{_SIGN}(?P<symbol>[$£€¥₹])\s?(?P<int>{_INT})(?:\.(?P<frac>\d+))?"
    r"(?:\s?(?P<scale>thousand|million|billion|trillion)\b|(?P<short>k|mn|m|bn|b)\b)?", re.IGNORECASE)
_PERCENT_RE = re.compile(rf"{_SIGN}(?P<int>{_INT})(?:\.(?P<frac>\d+))?\s?%")
_AMPM = r"(?:\s?(?P<ampm>[ap])\.?m\b\.?)"
_TIME_RE = re.compile(rf"(?<![\d:])(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:]){_AMPM}?",
                      re.IGNORECASE)
_HOUR_AMPM_RE = re.compile(rf"(?<![\d:.,])(?P<h>1[0-2]|0?[1-9]){_AMPM}", re.IGNORECASE)
_ORDINAL_RE = re.compile(rf"(?<![\d.,])(?P<int>{_INT})(?:st|nd|rd|th)\b", re.IGNORECASE)
_DECADE_RE = re.compile(r"(?<![\w'])'?(?P<int>\d{1,3}0)'?s\b")
_DECIMAL_RE = re.compile(rf"{_SIGN}(?:(?<![\d.])(?P<int>{_INT})|(?<![\w.]))\.(?P<frac>\d+)(?!\.?\d)")
_YEAR_RE = re.compile(r"(?<![\d,.$£€¥₹])(?P<year>1[1-9]\d\d|20\d\d)(?!\d|[.,]\d)")
_CARDINAL_RE = re.compile(rf"{_SIGN}(?<!\d)(?P<int>{_INT})(?!\d)")
_RANGE_RE = re.compile(r"(?<=\d)\s?–\s?(?=[$£€¥₹-]?\d)|(?<=\b1[1-9]\d\d|\b20\d\d)-(?=(?:1[1-9]|20)\d\d\b)")
_DOTTED_ACRONYM_RE = re.compile(r"(?<![\w.])(?![ap]\.m\.)((?:[A-Za-z]\.){2,})", re.IGNORECASE)
_CAPS_ACRONYM_RE = re.compile(r"\b[A-Z]{2,6}\b")
_NUMBER_SIGN_RE = re.compile(r"#\s?(?=\d)")
_VERSION_RE = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?!\.?\d)")
_SYMBOLS = [
    (re.compile(r"\s?°\s?C\b"), " degrees Celsius "), (re.compile(r"\s?°\s?F\b"), " degrees Fahrenheit "),
    (re.compile(r"\s?°"), " degrees "), (re.compile(r"%"), " percent "),
    (re.compile(r"&"), " and "), (re.compile(r"\+"), " plus "), (re.compile(r"="), " equals "),
    (re.compile(r"@"), " at "), (re.compile(r"×"), " times "),
]


def _substitute(pattern: re.Pattern, words_for: Callable[[re.Match], str], text: str) -> str:
    """``pattern.sub`` with the words spaced off any letter or digit they would otherwise touch ("MP3")."""
    def replace(m: re.Match) -> str:
        before = " " if m.start() > 0 and text[m.start() - 1].isalnum() else ""
        after = " " if m.end() < len(text) and text[m.end()].isalnum() else ""
        return before + words_for(m) + after
    return pattern.sub(replace, text)


def _capitalised_like(word: str, source: str) -> str:
    return word[:1].upper() + word[1:] if source[:1].isupper() else word


def _pluralise(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}" if head else last


class EnglishNormalizer(Normalizer):
    """English text -> spoken words (see the module doc for the rules).

    Args:
        language: an English code ("en", "en-us", "en-gb", ...).
        spell_out_acronyms: read all-capital words of 2-6 letters and dotted initialisms letter by letter
            ("FBI", "U.S.A." -> "F B I", "U S A"). Off by default: "NASA" is a word, "FBI" is not, and
            only a dictionary knows which is which.
        drop_symbols: replace symbols that are still there after the rules by spaces.
    """

    def __init__(self, language: str = "en", spell_out_acronyms: bool = False, drop_symbols: bool = True):
        if primary_language(language) != "en":
            raise TextError(f"EnglishNormalizer is for English, got language {language!r}")
        super().__init__(language, drop_symbols)
        self.spell_out_acronyms = spell_out_acronyms

    def expand(self, text: str) -> str:
        text = _RANGE_RE.sub(" to ", text)
        text = _ABBREVIATION_RE.sub(self._abbreviation, text)
        text = _NUMBER_SIGN_RE.sub(" number ", text)
        text = _substitute(_VERSION_RE, lambda m: " point ".join(map(numbers.cardinal, m.group().split("."))), text)
        text = _substitute(_CURRENCY_RE, self._money, text)
        text = _substitute(_PERCENT_RE, lambda m: f"{self._number(m)} percent", text)
        text = _substitute(_TIME_RE, self._time, text)
        text = _substitute(_HOUR_AMPM_RE, lambda m: f"{numbers.cardinal(m['h'])} {m['ampm'].lower()}.m.", text)
        text = _substitute(_ORDINAL_RE, lambda m: numbers.ordinal(m["int"]), text)
        text = _substitute(_DECADE_RE, self._decade, text)
        text = _substitute(_DECIMAL_RE, self._number, text)
        text = _substitute(_YEAR_RE, lambda m: numbers.year(m["year"]), text)
        text = _substitute(_CARDINAL_RE, self._number, text)
        for pattern, words in _SYMBOLS:
            text = pattern.sub(words, text)
        if self.spell_out_acronyms:
            text = _DOTTED_ACRONYM_RE.sub(self._dotted_acronym, text)
            text = _CAPS_ACRONYM_RE.sub(lambda m: " ".join(m.group()), text)
        return text

    @staticmethod
    def _number(m: re.Match) -> str:
        """Words for a match with groups sign, int (may be None) and frac (may be None)."""
        integer, frac = m["int"] or "", m.groupdict().get("frac")
        words = numbers.decimal(integer, frac) if frac else numbers.cardinal(integer)
        return f"{numbers.minus_word()} {words}" if m["sign"] else words

    @staticmethod
    def _abbreviation(m: re.Match) -> str:
        source, key = m.group(1), m.group(1).lower()
        before, after = m.string[:m.start()], m.string[m.end():]
        next_is_name = re.match(r"\s+[A-Z]", after) is not None
        # A capitalised word right before, that does not itself start the sentence: "on Main St."
        prev_is_name = re.search(r"(?:^|[^.!?\s])\s+[A-Z][\w']*\s+$", before) is not None
        if key in ENGLISH_BEFORE_NUMBERS:
            if not re.match(r"\s*\d", after):
                return m.group()
            return f"{_capitalised_like(ENGLISH_BEFORE_NUMBERS[key], source)} "
        if key in ENGLISH_AFTER_NAMES and prev_is_name:
            word, may_end_sentence = ENGLISH_AFTER_NAMES[key], True
        elif key in ENGLISH_TITLES:
            word, may_end_sentence = ENGLISH_TITLES[key], False
        else:
            word = ENGLISH_ABBREVIATIONS.get(key) or ENGLISH_DOTTED[key]
            may_end_sentence = key in ENGLISH_ABBREVIATIONS
        ends_sentence = may_end_sentence and (not after.strip() or next_is_name)
        return _capitalised_like(word, source) + ("." if ends_sentence else "")

    @staticmethod
    def _money(m: re.Match) -> str:
        one, many, one_minor, many_minor = CURRENCIES[m["symbol"]]
        integer, frac = m["int"], m["frac"]
        scale = (m["scale"] or _SCALE_SHORTHANDS.get((m["short"] or "").lower(), "")).lower()
        minus = f"{numbers.minus_word()} " if m["sign"] else ""
        if scale:
            amount = numbers.decimal(integer, frac) if frac else numbers.cardinal(integer)
            return f"{minus}{amount} {scale} {many}"
        if frac and (one_minor is None or len(frac) > 2):
            return f"{minus}{numbers.decimal(integer, frac)} {many}"
        units = int(integer.replace(",", ""))
        hundredths = int(frac.ljust(2, "0")) if frac else 0
        parts = []
        if units or not hundredths:
            parts.append(f"{numbers.cardinal(integer)} {one if units == 1 else many}")
        if hundredths:
            parts.append(f"{numbers.cardinal(hundredths)} {one_minor if hundredths == 1 else many_minor}")
        return f"{minus}{' and '.join(parts)}"

    @staticmethod
    def _time(m: re.Match) -> str:
        hours, minutes = int(m["h"]), int(m["m"])
        ampm = f"{m['ampm'].lower()}.m." if m["ampm"] else ""
        if ampm and hours == 0:
            hours = 12
        spoken = [numbers.cardinal(hours)]
        if minutes:
            spoken.append(("oh " if minutes < 10 else "") + numbers.cardinal(minutes))
        elif not ampm:
            spoken.append("o'clock" if 0 < hours <= 12 else "hundred")
        if m["s"] and int(m["s"]):
            seconds = int(m["s"])
            spoken.append(f"and {numbers.cardinal(seconds)} second{'s' if seconds != 1 else ''}")
        if ampm:
            spoken.append(ampm)
        return " ".join(spoken)

    @staticmethod
    def _decade(m: re.Match) -> str:
        digits = m["int"]
        words = numbers.year(digits) if len(digits) == 4 else numbers.cardinal(digits)
        return _pluralise(words)

    @staticmethod
    def _dotted_acronym(m: re.Match) -> str:
        letters = " ".join(m.group(1).replace(".", "").upper())
        return letters + ("." if not m.string[m.end():].strip() else "")
