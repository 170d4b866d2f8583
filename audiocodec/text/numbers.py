"""Numbers to words, through the ``num2words`` package, for any language it supports.

Every function takes digits as a string (so ``"007"`` or ``"3.50"`` keep their zeros) or an int, and
returns words without the commas num2words puts between groups ("one million two hundred ...").
"""
from __future__ import annotations

import functools
import re
from typing import Optional, Union

from .errors import TextError

Digits = Union[str, int]

#: Longer digit runs are read one digit at a time (phone numbers, ids), as are runs with a leading zero.
MAX_CARDINAL_DIGITS = 15

@functools.lru_cache(maxsize=None)
def _num2words():
    try:
        from num2words import num2words
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TextError("reading numbers needs the num2words package: pip install num2words") from e
    return num2words


@functools.lru_cache(maxsize=None)
def num2words_language(language: str) -> Optional[str]:
    """The num2words code for ``language`` ("en-us" -> "en", "pt-br" -> "pt_BR"), or None if unsupported."""
    from num2words import CONVERTER_CLASSES

    _num2words()
    parts = language.replace("_", "-").split("-")
    candidates = [parts[0].lower() + ("_" + parts[1].upper() if len(parts) > 1 else ""), parts[0].lower()]
    return next((c for c in candidates if c in CONVERTER_CLASSES), None)


def _language_code(language: str) -> str:
    code = num2words_language(language)
    if code is None:
        raise TextError(f"num2words cannot read numbers in language {language!r}")
    return code


def _to_int(value: Digits) -> int:
    text = str(value).replace(",", "")
    if not re.fullmatch(r"-?\d+", text):
        raise TextError(f"expected an integer written in digits, got {value!r}")
    return int(text)


def _clean(words: str) -> str:
    return re.sub(r"\s+", " ", words.replace(",", " ")).strip()


def cardinal(value: Digits, language: str = "en") -> str:
    """``"1234"`` -> "one thousand two hundred and thirty-four"; long runs and leading zeros go digit by digit."""
    text = str(value).replace(",", "")
    digits = text.lstrip("-")
    if len(digits) > MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        words = digit_by_digit(digits, language)
        return f"{minus_word(language)} {words}" if text.startswith("-") else words
    return _clean(_num2words()(_to_int(text), lang=_language_code(language)))


def minus_word(language: str = "en") -> str:
    """The word num2words puts before negative numbers ("minus" in English)."""
    return _clean(_num2words()(-1, lang=_language_code(language))).rsplit(" ", 1)[0]


def ordinal(value: Digits, language: str = "en") -> str:
    """``"21"`` -> "twenty-first"."""
    return _clean(_num2words()(_to_int(value), lang=_language_code(language), to="ordinal"))


def year(value: Digits, language: str = "en") -> str:
    """``"1999"`` -> "nineteen ninety-nine", ``"2005"`` -> "two thousand and five"."""
    return _clean(_num2words()(_to_int(value), lang=_language_code(language), to="year"))


def digit_by_digit(digits: str, language: str = "en") -> str:
    """``"0451"`` -> "zero four five one"."""
    if not re.fullmatch(r"\d+", digits):
        raise TextError(f"expected digits only, got {digits!r}")
    code = _language_code(language)
    return " ".join(_clean(_num2words()(int(d), lang=code)) for d in digits)


def decimal(integer_part: str, fraction_digits: str, language: str = "en", point: str = "point") -> str:
    """``("3", "14")`` -> "three point one four"; an empty integer part reads as "point one four"."""
    head = cardinal(integer_part, language) + " " if integer_part else ""
    return f"{head}{point} {digit_by_digit(fraction_digits, language)}"
