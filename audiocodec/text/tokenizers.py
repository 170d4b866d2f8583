"""Text tokenizers for TTS, all with the interface of :class:`~audiocodec.text.base.Tokenizer`:
``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, special ids pad 0 / bos 1 / eos 2 /
unk 3, and ``to_dict()`` / ``from_dict()`` through JSON.

* ``char``: one id per character; a fixed default alphabet, a given one, or one built from a corpus.
* ``byte``: one id per UTF-8 byte (256 + 4 specials); nothing is ever unknown.
* ``phoneme``: one id per IPA code point from espeak-ng (stress marks, word boundaries, punctuation).
* ``bpe``: sentencepiece BPE trained on a corpus (see :mod:`audiocodec.text.bpe`).

>>> tok = build_tokenizer({"type": "char", "normalize": "en"})
>>> tok.decode(tok.encode("Dr. Who, 3 times"))
'Doctor Who, three times'
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from ..config import Registry
from ..errors import ConfigError
from .base import NUM_SPECIAL_TOKENS, UNK_TEXT, SymbolTokenizer, Tokenizer, check_corpus
from .bpe import BPETokenizer
from .errors import PhonemeBackendError, TextError
from .phonemes import PhonemeBackend, get_phoneme_backend, phonemize, resolve_language
from .symbols import DEFAULT_CHARACTERS, DEFAULT_PHONEMES


class CharTokenizer(SymbolTokenizer):
    """One id per character.

    Args:
        symbols: the alphabet (distinct one-character str); :data:`~audiocodec.text.symbols.DEFAULT_CHARACTERS`
            when neither it nor ``corpus`` is given.
        corpus: texts (list of str) whose characters, after normalising and lower-casing, make the alphabet.
        normalize: language code of the normaliser to run first, or None.
        lowercase: lower-case text before tokenising.
    """

    type_name = "char"

    def __init__(self, symbols: Optional[Sequence[str]] = None, corpus: Optional[Iterable[str]] = None,
                 normalize: Optional[str] = None, lowercase: bool = False):
        if symbols is not None and corpus is not None:
            raise ConfigError("char tokenizer: give either 'symbols' or 'corpus', not both")
        self.lowercase = bool(lowercase)
        super().__init__(normalize)
        if corpus is not None:
            symbols = sorted({c for text in check_corpus(corpus) for c in self.prepare(text)})
        self.set_symbols(DEFAULT_CHARACTERS if symbols is None else symbols)

    def prepare(self, text: str) -> str:
        text = super().prepare(text)
        return text.lower() if self.lowercase else text

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "lowercase": self.lowercase}


class ByteTokenizer(Tokenizer):
    """One id per UTF-8 byte: id = byte + 4, ``vocab_size`` 260. Bytes that do not decode become U+FFFD.

    Args:
        normalize: language code of the normaliser to run first, or None.
    """

    type_name = "byte"

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL_TOKENS + 256

    def _encode(self, text: str) -> list[int]:
        return [NUM_SPECIAL_TOKENS + b for b in text.encode("utf-8")]

    def _decode(self, ids: list[int]) -> str:
        pieces, run = [], bytearray()
        for i in ids:
            if i == self.unk_id:
                pieces += [run.decode("utf-8", errors="replace"), UNK_TEXT]
                run = bytearray()
            else:
                run.append(i - NUM_SPECIAL_TOKENS)
        return "".join(pieces) + run.decode("utf-8", errors="replace")

    def _config(self) -> dict[str, Any]:
        return {}


class PhonemeTokenizer(SymbolTokenizer):
    """Text -> espeak-ng IPA (:func:`~audiocodec.text.phonemize`) -> one id per code point.

    Stress marks (ˈ ˌ), length (ː), the word boundary (space) and punctuation are tokens of their own, so
    ``decode`` gives back the phoneme string.

    Args:
        language: espeak-ng language ("en-us", "en-gb", "de", "fr-fr", "es", ...; "en" and "fr" work too).
        symbols: the phoneme inventory; :data:`~audiocodec.text.symbols.DEFAULT_PHONEMES` when neither it
            nor ``corpus`` is given.
        corpus: texts (list of str) whose phonemes make the inventory.
        normalize: language code of the normaliser to run before phonemising, or None.
        backend: "auto", "library" or "binary" (see :func:`~audiocodec.text.phonemes.get_phoneme_backend`).

    Raises:
        PhonemeBackendError: no espeak-ng available (the message says what to install).
        ConfigError: espeak-ng does not know ``language``, or bad symbols.
    """

    type_name = "phoneme"

    def __init__(self, language: str = "en-us", symbols: Optional[Sequence[str]] = None,
                 corpus: Optional[Iterable[str]] = None, normalize: Optional[str] = None, backend: str = "auto"):
        if symbols is not None and corpus is not None:
            raise ConfigError("phoneme tokenizer: give either 'symbols' or 'corpus', not both")
        try:
            self._backend: PhonemeBackend = get_phoneme_backend(backend)
            self.voice = resolve_language(language, self._backend.languages())
        except TextError as e:
            raise ConfigError(f"phoneme tokenizer: {e}") from e
        self.language, self.backend = language, backend
        super().__init__(normalize)
        if corpus is not None:
            symbols = sorted({c for text in check_corpus(corpus) for c in self.phonemize(text)})
        self.set_symbols(DEFAULT_PHONEMES if symbols is None else symbols)

    def phonemize(self, text: str) -> str:
        """The phoneme string (str) that ``encode`` tokenises: normalised, then through espeak-ng."""
        return phonemize(super().prepare(text), self.voice, self._backend)

    def prepare(self, text: str) -> str:
        return self.phonemize(text)

    def _config(self) -> dict[str, Any]:
        return {"language": self.language, **super()._config(), "backend": self.backend}


TOKENIZERS = Registry("tokenizer")
TOKENIZERS.register("char")(CharTokenizer)
TOKENIZERS.register("byte")(ByteTokenizer)
TOKENIZERS.register("phoneme")(PhonemeTokenizer)
TOKENIZERS.register("bpe")(BPETokenizer)


def tokenizer_types() -> list[str]:
    """The type names :func:`build_tokenizer` knows."""
    return TOKENIZERS.names()


def build_tokenizer(config: Mapping[str, Any]) -> Tokenizer:
    """A tokenizer from a dict with a ``type`` key (``char``, ``byte``, ``phoneme``, ``bpe``) and the
    class's constructor arguments, e.g. ``{"type": "phoneme", "language": "de"}`` or a ``to_dict()``.

    Raises:
        ConfigError: not a mapping, missing or unknown type, unknown keys, or bad values.
        PhonemeBackendError: a phoneme tokenizer without espeak-ng.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"tokenizer config must be a dict with a 'type' key, got {type(config).__name__}")
    return TOKENIZERS.build(config, "tokenizer")


__all__ = ["CharTokenizer", "ByteTokenizer", "PhonemeTokenizer", "BPETokenizer", "Tokenizer", "TOKENIZERS",
           "build_tokenizer", "tokenizer_types", "PhonemeBackendError"]
