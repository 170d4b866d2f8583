"""The TTS text frontend: a tokenizer of :mod:`audiocodec.text` (which normalises first) and sentence
chunking for long text, in one object saved inside the TTS model."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ..errors import ConfigError
from ..text.sentences import chunk_text
from ..text.tokenizers import build_tokenizer

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
