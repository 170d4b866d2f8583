"""The interface every text tokenizer shares, and the per-symbol tokenizer the char and phoneme ones build on.

Ids 0-3 are the same special tokens in every tokenizer: pad, bos, eos, unk. ``to_dict()`` gives a
JSON-safe dict (with a ``type`` key) that :func:`~audiocodec.text.tokenizers.build_tokenizer` turns back
into an identical tokenizer, so a trained model can ship its tokenizer in its config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional, Sequence, Union

from ..errors import ConfigError
from .errors import TextError
from .normalize import Normalizer, check_text, get_normalizer

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
#: What ``decode`` writes for the unk id.
UNK_TEXT = "\ufffd"


def check_corpus(corpus, what: str = "corpus") -> list[str]:
    """``corpus`` as a list of str; ConfigError for a bare str or anything that is not strings."""
    if isinstance(corpus, (str, bytes)) or not isinstance(corpus, Iterable):
        raise ConfigError(f"{what} must be a list of str, got {type(corpus).__name__}")
    corpus = list(corpus)
    bad = next((t for t in corpus if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"{what} must hold only str, got a {type(bad).__name__}")
    if not any(t.strip() for t in corpus):
        raise ConfigError(f"{what} is empty: give at least one non-blank text")
    return corpus


class Tokenizer:
    """Text <-> token ids.

    Args:
        normalize: a language code ("en", "de", ...) whose normaliser (:func:`~audiocodec.text.get_normalizer`)
            runs on every text before it is tokenised, or None to tokenise text as given.

    Subclasses set ``type_name`` and implement ``vocab_size``, ``_encode``, ``_decode`` and ``_config``.
    """

    type_name: ClassVar[str] = ""
    pad_id: ClassVar[int] = PAD_ID
    bos_id: ClassVar[int] = BOS_ID
    eos_id: ClassVar[int] = EOS_ID
    unk_id: ClassVar[int] = UNK_ID
    special_tokens: ClassVar[tuple[str, ...]] = SPECIAL_TOKENS

    def __init__(self, normalize: Optional[str] = None):
        self.normalize = normalize
        self._normalizer: Optional[Normalizer] = None
        if normalize is not None:
            try:
                self._normalizer = get_normalizer(normalize)
            except TextError as e:
                raise ConfigError(f"{self.type_name} tokenizer: bad 'normalize' value: {e}") from e

    # -- what subclasses provide -----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included: every id is in ``range(vocab_size)``."""
        raise NotImplementedError

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this tokenizer (JSON-safe)."""
        raise NotImplementedError

    # -- the shared interface -------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        """The text exactly as it gets tokenised (normalised when ``normalize`` is set)."""
        text = check_text(text)
        return self._normalizer(text) if self._normalizer else text

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids (list of int) of ``text`` (str); unknown symbols become ``unk_id``.

        Raises:
            TextError: ``text`` is not a str.
        """
        ids = self._encode(self.prepare(text))
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Union[Sequence[int], Any]) -> str:
        """Text of ``ids`` (a sequence of int, or a 1-D numpy array / torch tensor); pad, bos and eos are
        skipped, unk becomes U+FFFD.

        Raises:
            TextError: not a 1-D sequence of ints, or an id outside ``range(vocab_size)``.
        """
        ids = self.check_ids(ids)
        return self._decode([i for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id)])

    def check_ids(self, ids) -> list[int]:
        """``ids`` as a list of int, or TextError naming the first bad one."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TextError(f"token ids must be a sequence of int, got {type(ids).__name__}")
        ids = list(ids)
        for position, i in enumerate(ids):
            if isinstance(i, bool) or not isinstance(i, int):
                raise TextError(f"token id at position {position} is {i!r}, not an int")
            if not 0 <= i < self.vocab_size:
                raise TextError(f"token id {i} at position {position} is outside this tokenizer's "
                                f"vocabulary (0..{self.vocab_size - 1})")
        return ids

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an identical tokenizer."""
        return {"type": self.type_name, **self._config(), "normalize": self.normalize}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "Tokenizer":
        """The tokenizer described by ``config`` (from :meth:`to_dict`); on a subclass its type must match.

        Raises:
            ConfigError: unknown type or keys, or a type other than this class's.
        """
        from .tokenizers import build_tokenizer

        tokenizer = build_tokenizer(config)
        if cls is not Tokenizer and not isinstance(tokenizer, cls):
            raise ConfigError(f"expected a {cls.type_name!r} tokenizer config, got type {config.get('type')!r}")
        return tokenizer

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"tokenizer JSON is not valid JSON: {e}") from e
        return cls.from_dict(config)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_dict` as JSON to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        return cls.from_json(path.read_text(encoding="utf-8"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.type_name, self.vocab_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, normalize={self.normalize!r})"


def check_symbols(symbols, what: str = "symbols") -> tuple[str, ...]:
    """``symbols`` as a tuple of distinct one-character strings, or ConfigError naming the problem."""
    if isinstance(symbols, (str, bytes)) or not isinstance(symbols, Iterable):
        raise ConfigError(f"{what} must be a list of one-character str, got {type(symbols).__name__}")
    symbols = tuple(symbols)
    if not symbols:
        raise ConfigError(f"{what} is empty")
    bad = next((s for s in symbols if not isinstance(s, str) or len(s) != 1), None)
    if bad is not None:
        raise ConfigError(f"{what} must be one-character str, got {bad!r}")
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise ConfigError(f"{what} lists {duplicates!r} more than once")
    return symbols


class SymbolTokenizer(Tokenizer):
    """One id per character of the prepared text: ids 4.. are ``symbols`` in order; others are unk.

    Subclasses call :meth:`set_symbols` once in their constructor (after ``Tokenizer.__init__``, so a
    vocabulary built from a corpus can use :meth:`prepare`).
    """

    symbols: tuple[str, ...] = ()

    def set_symbols(self, symbols: Sequence[str]) -> None:
        """Use ``symbols`` (distinct one-character str) as the vocabulary; ConfigError if they are not."""
        self.symbols = check_symbols(symbols, f"{self.type_name} tokenizer symbols")
        self._ids = {s: NUM_SPECIAL_TOKENS + i for i, s in enumerate(self.symbols)}

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL_TOKENS + len(self.symbols)

    def _encode(self, text: str) -> list[int]:
        return [self._ids.get(c, self.unk_id) for c in text]

    def _decode(self, ids: list[int]) -> str:
        return "".join(UNK_TEXT if i == self.unk_id else self.symbols[i - NUM_SPECIAL_TOKENS] for i in ids)

    def _config(self) -> dict[str, Any]:
        return {"symbols": list(self.symbols)}
