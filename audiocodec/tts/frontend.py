"""The TTS text frontend: a tokenizer of :mod:`audiocodec.text` (which normalises first) and sentence
chunking for long text, in one object saved inside the TTS model; :class:`TextStream` tokenises text that
arrives in pieces (the bistream layout's input)."""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from ..text.sentences import chunk_text, split_sentences
from ..text.tokenizers import build_tokenizer

log = logging.getLogger("audiocodec.tts")

#: Tokenizer types that learn their vocabulary from the training transcripts when none is given.
_FITTED = ("char", "phoneme", "bpe")


class TextFrontend:
    """Args:
        tokenizer: a :class:`~audiocodec.text.Tokenizer`.
        language: language of the text (sentence splitting; and the normaliser, when the tokenizer
            config does not name one).
    """

    def __init__(self, tokenizer, language: str = "en"):
        self.tokenizer, self.language = tokenizer, language

    @classmethod
    def from_config(cls, config: Mapping, texts: Optional[Sequence[str]] = None) -> "TextFrontend":
        """``{"tokenizer": {...}, "language": "en"}``. A ``char`` / ``phoneme`` tokenizer without
        ``symbols``, or a ``bpe`` one without ``model``, is fitted on ``texts``."""
        unknown = set(config) - {"tokenizer", "language"}
        if unknown:
            raise ConfigError(f"task.text: unknown key(s) {sorted(unknown)}; known: tokenizer, language")
        language = str(config.get("language", "en"))
        tok = dict(config.get("tokenizer") or {"type": "char"})
        tok.setdefault("normalize", language.split("-")[0])
        kind = tok.get("type")
        if kind in _FITTED and not any(k in tok for k in ("symbols", "model", "corpus")):
            corpus = [t for t in (texts or []) if t]
            if not corpus:
                raise ConfigError(f"a {kind} tokenizer needs transcripts to learn its vocabulary from")
            tok["corpus"] = corpus
        return cls(build_tokenizer(tok), language)

    @classmethod
    def from_dict(cls, state: Mapping) -> "TextFrontend":
        """The frontend saved by :meth:`to_dict`."""
        return cls(build_tokenizer(state["tokenizer"]), str(state.get("language", "en")))

    def to_dict(self) -> dict:
        return {"tokenizer": self.tokenizer.to_dict(), "language": self.language}

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def encode(self, text: str) -> list[int]:
        """Normalised text -> token ids (without bos / eos: the TTS layout adds its own)."""
        return list(self.tokenizer.encode(text))

    def split(self, text: str, max_chars: int = 300) -> list[str]:
        """Long text -> chunks of whole sentences of at most ``max_chars`` characters."""
        return chunk_text(text, max_chars, self.language.split("-")[0])

    def stream(self, pieces: Union[str, Iterable[str]], max_tokens: int = 300) -> "TextStream":
        """A :class:`TextStream` of ``pieces`` (a str, or str pieces arriving over time)."""
        return TextStream(self, pieces, max_tokens)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class StreamedUtterance:
    """The text tokens of one utterance of a :class:`TextStream`, as they are released.

    ``tokens``: released so far (list of int); ``closed``: the utterance's text has ended."""

    def __init__(self, stream: "TextStream"):
        self._stream, self.tokens, self.closed, self._read = stream, [], False, 0

    def take(self, n: int) -> list[int]:
        """The next ``n`` tokens (list of int), reading more pieces until there are ``n`` or the utterance
        has closed (then fewer: its last tokens, possibly none)."""
        while len(self.tokens) - self._read < n and not self.closed:
            self._stream._read_piece()
        out = self.tokens[self._read:self._read + n]
        self._read += len(out)
        return out

    def read_all(self) -> list[int]:
        """Every token of the utterance (reads pieces until it has closed)."""
        while not self.closed:
            self._stream._read_piece()
        return list(self.tokens)


class TextStream:
    """Text arriving in pieces (an LLM's output, char by char or word by word) -> the text tokens of each
    utterance (sentence), released while the text is still arriving.

    Normalisation and tokenisation need context (a number and its unit, an abbreviation and the next word,
    the end of a sentence), so pieces are buffered and read at *word boundaries*: white space followed by
    the first character of the next word. At each one, the utterance's text so far is encoded
    (:meth:`TextFrontend.encode`), and:

    * when that encoding holds more than ``max_tokens`` tokens, the utterance closes at the previous
      boundary (a sentence too long for one generation; the next utterance starts with the last word);
    * else when a sentence ends there (the rules of :mod:`audiocodec.text.sentences`), the utterance closes;
    * else the tokens this encoding shares with the previous boundary's are released (one word of
      look-ahead: a word's tokens are released once the next word is complete).

    A closed utterance's tokens are ``encode(its text)``: what is left is released then. The end of the
    pieces closes the last utterance. Boundaries are read in order whatever the pieces were, so the tokens
    depend only on the joined text: a str and the same text char by char give the same utterances and
    tokens. If the normaliser needed more than one word of look-ahead (an early release disagrees with the
    closed utterance's encoding), a warning is logged and the rest follows from where they agree. Text
    written without spaces (Chinese, Japanese) has no word boundaries: it is read when the pieces end.
    """

    def __init__(self, frontend: TextFrontend, pieces: Union[str, Iterable[str]], max_tokens: int = 300):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"TextStream: max_tokens must be a positive int, got {max_tokens!r}")
        self.frontend, self.max_tokens = frontend, max_tokens
        self.language = frontend.language.split("-")[0]
        if not isinstance(pieces, (str, Iterable)):
            raise ConfigError(f"text must be a str or an iterable of str pieces, got {type(pieces).__name__}")
        self._pieces = iter([pieces] if isinstance(pieces, str) else pieces)
        self._text = ""            # the open utterance's text, from its first character
        self._scanned = 0          # characters of _text looked at for boundaries
        self._boundary_at = 0      # the open utterance's last boundary (0: none yet)
        self._encoded: list[int] = []   # encode(_text[:_boundary_at])
        self._open: Optional[StreamedUtterance] = None
        self._all: list[StreamedUtterance] = []
        self._ended = False

    def utterances(self) -> Iterator[StreamedUtterance]:
        """Each utterance in turn, once its first token is released (those without any token are
        skipped). Read it (:meth:`StreamedUtterance.take`) before asking for the next."""
        index = 0
        while True:
            while index >= len(self._all) and not self._ended:
                self._read_piece()
            if index >= len(self._all):
                return
            utterance = self._all[index]
            index += 1
            while not utterance.tokens and not utterance.closed:
                self._read_piece()
            if utterance.tokens:
                yield utterance

    def token_lists(self) -> list[list[int]]:
        """Every utterance's tokens (reads all the pieces)."""
        return [u.read_all() for u in self.utterances()]

    # -- reading ---------------------------------------------------------------------------------------
    def _read_piece(self) -> None:
        """Read one more piece and the boundaries it completes; after the last piece, close the open
        utterance."""
        if self._ended:
            return
        piece = next(self._pieces, None)
        if piece is None:
            self._ended = True
            self._finish()
            return
        if not isinstance(piece, str):
            raise ConfigError(f"text pieces must be str, got {type(piece).__name__}")
        self._text += piece.lstrip() if not self._text else piece
        self._ensure_open()
        self._scan()

    def _ensure_open(self) -> None:
        if self._text and self._open is None:
            self._open = StreamedUtterance(self)
            self._all.append(self._open)

    def _scan(self) -> None:
        """Handle each new word boundary of ``_text`` (a cut restarts the indices in the next utterance)."""
        i = max(self._scanned, 1)
        while i < len(self._text):
            if self._text[i - 1].isspace() and not self._text[i].isspace():
                cut = self._boundary(i)
                if cut:                # the same position in the next utterance (a boundary again after a
                    i = max(i - cut, 1)   # length cut: its previous boundary became its start)
                    continue
            i += 1
        self._scanned = len(self._text)

    def _boundary(self, b: int) -> int:
        """Word boundary at ``_text[b]``: release, or close the utterance; returns where ``_text`` was cut
        (0: not cut)."""
        text = self._text
        tokens = self.frontend.encode(text[:b].strip())
        if len(tokens) > self.max_tokens and self._boundary_at:
            cut = self._boundary_at
            self._close(cut, self._encoded)
            return cut
        if len(split_sentences(text[:b + 1], self.language)) > 1:
            self._close(b, tokens)
            return b
        self._release(self._encoded[:_common_prefix(self._encoded, tokens)])
        self._encoded, self._boundary_at = tokens, b
        return 0

    def _release(self, settled: list[int]) -> None:
        """Release the tokens of ``settled`` (the open utterance's settled encoding) not yet released."""
        released = self._open.tokens
        if settled[:len(released)] == released:
            released.extend(settled[len(released):])

    def _close(self, cut: int, tokens: list[int]) -> None:
        """Close the open utterance with text ``_text[:cut]`` encoded as ``tokens``; the rest of the text
        opens the next one."""
        released = self._open.tokens
        agree = _common_prefix(released, tokens)
        if agree < len(released):
            log.warning(f"streamed text: the tokens released early for {self._text[:cut].strip()!r} differ from "
                        f"its encoding after token {agree}; continuing from there (the normaliser needed more "
                        f"than one word of look-ahead)")
        released.extend(tokens[agree:])
        self._open.closed = True
        self._open, self._text, self._boundary_at, self._encoded = None, self._text[cut:], 0, []
        self._scanned = 0
        self._ensure_open()

    def _finish(self) -> None:
        """The pieces have ended: close the open utterance (after a cut if it is too long)."""
        while self._open is not None:
            tokens = self.frontend.encode(self._text.strip())
            if len(tokens) > self.max_tokens and self._boundary_at:
                self._close(self._boundary_at, self._encoded)
            else:
                self._close(len(self._text), tokens)
