"""Text normalisation for TTS: written text -> the words a speaker would say.

Every normaliser runs the same three steps: :func:`clean_unicode` (NFKC, straight quotes, one dash
style, no control characters), the language's own :meth:`Normalizer.expand` (numbers, abbreviations,
symbols), and :func:`clean_punctuation` (keeps the punctuation that carries prosody, ``, . ? ! ; :``,
and one space between words).

English has full rules (:mod:`audiocodec.text.english`). Any other language gets
:class:`BasicNormalizer`, which cleans up and reads plain integers when num2words knows the language.
Plug a language in with :func:`register_normalizer`.

>>> normalize_text("Dr. Smith paid $3.50 on Jan. 21st, 1999.")
'Doctor Smith paid three dollars and fifty cents on January twenty-first, nineteen ninety-nine.'
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

from . import numbers
from .errors import TextError
from .symbols import PROSODY_PUNCTUATION

_QUOTES = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "`": "'", "´": "'",
    "“": '"', "”": '"', "„": '"', "‟": '"', "″": '"', "«": '"', "»": '"', "‹": '"', "›": '"',
    "‐": "-", "‑": "-", "‒": "-", "−": "-", "―": "—", "⁄": "/", "。": ".", "、": ",", "､": ",",
})
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2028\u2029\u2060\ufeff]")
#: Kept by :func:`clean_punctuation` besides letters, digits and white space.
KEPT_PUNCTUATION = PROSODY_PUNCTUATION + "'-¡¿"


def check_text(text, what: str = "text") -> str:
    """Return ``text`` if it is a str, else raise TextError naming its type."""
    if not isinstance(text, str):
        raise TextError(f"{what} must be a str, got {type(text).__name__}")
    return text


def collapse_whitespace(text: str) -> str:
    """Every run of white space (new lines included) -> one space; no space at either end."""
    return " ".join(text.split())


def clean_unicode(text: str) -> str:
    """NFKC, typographic quotes -> ``'`` and ``"``, hyphen variants -> ``-``, no control/zero-width characters.

    En dashes (``–``) and em dashes (``—``) are kept for the language step (a range "5–10" reads "5 to 10").
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _INVISIBLE.sub("", text)
    return "".join(c if unicodedata.category(c)[0] != "C" or c in "\t\n\r" else " " for c in text)


def clean_punctuation(text: str, drop_symbols: bool = True) -> str:
    """Keep prosody punctuation in a canonical form; drop or replace the rest.

    Dashes, brackets and ellipses become commas or periods; double quotes and quote-like apostrophes go;
    runs like ``"?!"`` or ``", ."`` keep their strongest mark; no space before a mark and one after it.
    With ``drop_symbols`` every other symbol or punctuation mark (``* _ # ~`` emoji ...) becomes a space;
    without it they are left for a later stage (e.g. espeak-ng reads ``%`` in any language).
    """
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"\s+-+\s+|[–—]+", ", ", text)
    text = re.sub(r"^\s*-+\s+", "", text, flags=re.M)
    text = re.sub(r"[(\[{]", ", ", text)
    text = re.sub(r"[)\]}]", ", ", text)
    text = text.replace('"', " ")
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    if drop_symbols:
        text = "".join(" " if unicodedata.category(c)[0] in "PS" and c not in KEPT_PUNCTUATION else c
                       for c in text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?])", "", text)
    text = re.sub(r"([.!?])[.!?,;:]+", r"\1", text)
    text = re.sub(r"([,;:])[,;:]+", r"\1", text)
    text = re.sub(r"([,;:!?])(?=[^\W\d_])", r"\1 ", text)
    text = re.sub(r"^[\s,.;:!?]+", "", text)
    text = re.sub(r"[\s,;:]+$", "", text)
    return text


class Normalizer:
    """Language-independent clean-up around a language's own :meth:`expand` step.

    Args:
        language: the language code the normaliser was asked for ("en-us", "de", ...).
        drop_symbols: replace symbols and punctuation that carry no prosody by spaces (see
            :func:`clean_punctuation`).

    Call it with a str; it returns the normalised str (one line, single spaces).
    """

    def __init__(self, language: str, drop_symbols: bool = True):
        self.language = language
        self.drop_symbols = drop_symbols

    def __call__(self, text: str) -> str:
        text = clean_unicode(check_text(text))
        text = self.expand(text)
        return collapse_whitespace(clean_punctuation(text, drop_symbols=self.drop_symbols))

    def expand(self, text: str) -> str:
        """Language rules: numbers, abbreviations, symbols to words. The base class changes nothing."""
        return text


class BasicNormalizer(Normalizer):
    """For languages without their own rules: clean-up, and plain integers read by num2words when it
    knows the language. Decimals, currency and other symbols are left for espeak-ng to read."""

    def __init__(self, language: str, drop_symbols: bool = False):
        super().__init__(language, drop_symbols)
        self.reads_numbers = numbers.num2words_language(language) is not None

    def expand(self, text: str) -> str:
        if not self.reads_numbers:
            return text
        return re.sub(r"(?<![\d.,])\d+(?![\d]|[.,]\d)", lambda m: numbers.cardinal(m.group(), self.language), text)


def _english(**options) -> Normalizer:
    from .english import EnglishNormalizer

    return EnglishNormalizer(**options)


_NORMALIZERS: dict[str, Callable[..., Normalizer]] = {"en": _english}


def primary_language(language: str) -> str:
    """``"en-US"`` / ``"en_gb"`` -> ``"en"``; raise TextError for anything that is not a language code."""
    if not isinstance(language, str) or not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*", language):
        raise TextError(f"expected a language code such as 'en', 'en-us' or 'de', got {language!r}")
    return re.split(r"[-_]", language)[0].lower()


def register_normalizer(language: str, factory: Callable[..., Normalizer]) -> None:
    """Use ``factory(**options)`` for ``language`` (a primary code such as "de") from now on."""
    _NORMALIZERS[primary_language(language)] = factory


def normalizer_languages() -> list[str]:
    """Languages with their own rules (every other language gets :class:`BasicNormalizer`)."""
    return sorted(_NORMALIZERS)


def get_normalizer(language: str = "en", **options) -> Normalizer:
    """The normaliser of ``language`` ("en", "en-us", "de", ...); ``options`` go to its constructor.

    Raises:
        TextError: not a language code, or an option the normaliser does not take.
    """
    factory = _NORMALIZERS.get(primary_language(language))
    try:
        return factory(**options) if factory else BasicNormalizer(language, **options)
    except TypeError as e:
        raise TextError(f"bad option for the {language!r} normaliser: {e}") from e


def normalize_text(text: str, language: str = "en", **options) -> str:
    """Normalise ``text`` (str) for ``language``; returns one line of words and prosody punctuation."""
    return get_normalizer(language, **options)(text)
