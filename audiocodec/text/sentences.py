"""Sentence splitting and length-limited chunking of long text, for long-form synthesis.

Works on raw or normalised text. A period ends a sentence unless it belongs to a known abbreviation
("Mr. Smith", "e.g. this", "No. 5"), an initial ("J. R. R. Tolkien") or a number ("3.5" has no space
after its period, so it is never a candidate). ``! ?`` always end one; an ellipsis only before a
capital. Blank lines always end one; single line breaks are spaces.

>>> split_sentences("Mr. Smith paid $3.50. Is it 3.5 kg? Yes!")
['Mr. Smith paid $3.50.', 'Is it 3.5 kg?', 'Yes!']
>>> chunk_text("One. Two, three. Four.", max_chars=12)
['One.', 'Two, three.', 'Four.']
"""
from __future__ import annotations

import re

from .abbreviations import SENTENCE_ABBREVIATIONS
from .errors import TextError
from .normalize import check_text, collapse_whitespace, primary_language

_CANDIDATE_RE = re.compile(
    r"(?P<marks>[.!?…]+)[\"'”’»)\]]*(?=\s|$)"     # Latin marks must be followed by space or the end
    r"|(?P<cjk>[。！？]+)[」』”’)]*"                 # CJK marks need no space after them
)
_PARAGRAPH_RE = re.compile(r"\n\s*\n")
_SENTENCE_OPENERS = "\"'“‘(¿¡«"
_CLAUSE_BREAK_RE = re.compile(r"(?<=[,;:—])\s+")
_SPACE_RE = re.compile(r"\s+")


def _abbreviations(language: str) -> tuple[frozenset, frozenset, frozenset]:
    return SENTENCE_ABBREVIATIONS.get(primary_language(language), SENTENCE_ABBREVIATIONS["en"])


def _ends_sentence(paragraph: str, m: re.Match, language: str) -> bool:
    """Whether the candidate mark ``m`` ends a sentence, judged from the word before and the text after."""
    if m["cjk"]:
        return True
    following = paragraph[m.end():].lstrip()
    if not following:
        return True
    marks = m["marks"]
    next_is_capital = following[0].isupper() or following[0] in _SENTENCE_OPENERS
    if "!" in marks or "?" in marks:
        return True
    if marks != ".":                                  # an ellipsis: a pause unless a new sentence starts
        return next_is_capital
    previous = re.search(r"(\S+)$", paragraph[:m.start()])
    word = previous.group(1).lstrip(_SENTENCE_OPENERS + "[") if previous else ""
    never_final, maybe_final, before_numbers = _abbreviations(language)
    key = word.lower()
    if key in before_numbers and following[0].isdigit():
        return False
    if key in never_final:
        return False
    if re.fullmatch(r"[A-Z]", word):                  # an initial: "J. R. R. Tolkien"
        return not next_is_capital
    if key in maybe_final or re.fullmatch(r"(?:[a-z]\.)+[a-z]", key):
        return next_is_capital
    return True


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Split ``text`` (str) into sentences (list of str, whitespace collapsed, none empty).

    ``language`` picks the abbreviation list (English for languages without one).
    """
    check_text(text)
    sentences = []
    for paragraph in _PARAGRAPH_RE.split(text):
        paragraph = collapse_whitespace(paragraph)
        start = 0
        for m in _CANDIDATE_RE.finditer(paragraph):
            if _ends_sentence(paragraph, m, language):
                sentences.append(paragraph[start:m.end()].strip())
                start = m.end()
        sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def _check_max_chars(max_chars) -> int:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise TextError(f"max_chars must be a positive int, got {max_chars!r}")
    return max_chars


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Join consecutive pieces with spaces, greedily, while each chunk stays within ``max_chars``."""
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] += " " + piece
        else:
            chunks.append(piece)
    return chunks


def split_long_sentence(sentence: str, max_chars: int) -> list[str]:
    """Pieces of at most ``max_chars`` characters: cut after ``, ; : —`` first, then at spaces; a single
    word longer than ``max_chars`` is cut into slices (the only case where a word is broken)."""
    _check_max_chars(max_chars)
    sentence = collapse_whitespace(check_text(sentence, "sentence"))
    if len(sentence) <= max_chars:
        return [sentence] if sentence else []
    for separator in (_CLAUSE_BREAK_RE, _SPACE_RE):
        parts = separator.split(sentence)
        if len(parts) > 1:
            return _pack([p for part in parts for p in split_long_sentence(part, max_chars)], max_chars)
    return [sentence[i:i + max_chars] for i in range(0, len(sentence), max_chars)]


def chunk_text(text: str, max_chars: int, language: str = "en") -> list[str]:
    """Pack the sentences of ``text`` into chunks of at most ``max_chars`` characters each.

    Sentences are never merged past the limit; a sentence longer than the limit is split with
    :func:`split_long_sentence`. Joining the chunks with spaces gives back every word in order.

    Args:
        text: any length of text (str).
        max_chars: the most characters in one chunk (positive int).
        language: for the abbreviation list of :func:`split_sentences`.

    Returns:
        list of str, each non-empty and at most ``max_chars`` long; empty for blank text.
    """
    _check_max_chars(max_chars)
    pieces = [p for s in split_sentences(text, language) for p in split_long_sentence(s, max_chars)]
    return _pack(pieces, max_chars)
