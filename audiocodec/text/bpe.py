"""BPE tokenizer: a sentencepiece model trained on a list of strings, kept in memory and serialised as base64.

Training keeps text as is (no sentencepiece normalisation, spaces kept), so text whose characters were
in the corpus decodes back exactly. Characters never seen become unk (or UTF-8 byte pieces with
``byte_fallback``).

>>> tok = BPETokenizer(corpus=["the cat sat on the mat", "the dog sat on the log"], vocab_size=40)
>>> tok.decode(tok.encode("the cat sat on the log"))
'the cat sat on the log'
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
from typing import Any, Iterable, Optional

from ..errors import ConfigError
from .base import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, UNK_TEXT, Tokenizer, check_corpus

MODEL_TYPES = ("bpe", "unigram")


@functools.lru_cache(maxsize=None)
def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("the bpe tokenizer needs the sentencepiece package: pip install sentencepiece") from e
    return sentencepiece


def train_sentencepiece(corpus: list[str], vocab_size: int, model_type: str = "bpe",
                        character_coverage: float = 1.0, byte_fallback: bool = False) -> bytes:
    """Train a sentencepiece model on ``corpus`` (list of str); returns the serialised model (bytes).

    ``vocab_size`` is an upper bound: a small corpus yields fewer pieces. Ids 0-3 are pad/bos/eos/unk.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"bpe vocab_size must be an int of at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size!r}")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"bpe model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    model = io.BytesIO()
    pad, bos, eos, unk = SPECIAL_TOKENS
    try:
        _sentencepiece().SentencePieceTrainer.train(
            sentence_iterator=iter([t for t in corpus if t.strip()]), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage, byte_fallback=byte_fallback,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            pad_piece=pad, bos_piece=bos, eos_piece=eos, unk_piece=unk,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            split_digits=True, hard_vocab_limit=False, max_sentence_length=1 << 20, num_threads=1,
            minloglevel=2)
    except RuntimeError as e:
        raise ConfigError(f"sentencepiece could not train on this corpus: {e}") from e
    return model.getvalue()


class BPETokenizer(Tokenizer):
    """Subword tokenizer on a sentencepiece model.

    Args:
        model: the trained model as base64 text (what ``to_dict()["model"]`` holds).
        corpus: texts (list of str) to train a new model on instead (normalised first when ``normalize``).
        vocab_size, model_type, character_coverage, byte_fallback: training settings (only with ``corpus``).
        normalize: language code of the normaliser to run first, or None.

    Raises:
        ConfigError: neither or both of model/corpus, a model that does not load, bad training settings.
    """

    type_name = "bpe"

    def __init__(self, model: Optional[str] = None, corpus: Optional[Iterable[str]] = None, vocab_size: int = 1000,
                 model_type: str = "bpe", character_coverage: float = 1.0, byte_fallback: bool = False,
                 normalize: Optional[str] = None):
        super().__init__(normalize)
        if (model is None) == (corpus is None):
            raise ConfigError("bpe tokenizer: give either 'model' (base64, from to_dict) or 'corpus' to train on")
        if corpus is not None:
            texts = [self.prepare(t) for t in check_corpus(corpus)]
            proto = train_sentencepiece(texts, vocab_size, model_type, character_coverage, byte_fallback)
        else:
            proto = self._decode_model(model)
        try:
            self._processor = _sentencepiece().SentencePieceProcessor(model_proto=proto)
        except RuntimeError as e:
            raise ConfigError(f"bpe tokenizer: the model does not load: {e}") from e
        if (self._processor.pad_id(), self._processor.bos_id(), self._processor.eos_id(),
                self._processor.unk_id()) != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
            raise ConfigError("bpe tokenizer: the model's special ids are not pad 0, bos 1, eos 2, unk 3")
        self._model_proto = proto

    @classmethod
    def train(cls, corpus: Iterable[str], vocab_size: int = 1000, **options) -> "BPETokenizer":
        """Train on ``corpus`` (list of str); ``options`` as in the constructor."""
        return cls(corpus=corpus, vocab_size=vocab_size, **options)

    @staticmethod
    def _decode_model(model) -> bytes:
        if not isinstance(model, str):
            raise ConfigError(f"bpe tokenizer: 'model' must be base64 text, got {type(model).__name__}")
        try:
            return base64.b64decode(model.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as e:
            raise ConfigError(f"bpe tokenizer: 'model' is not valid base64: {e}") from e

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def pieces(self, text: str) -> list[str]:
        """The subword pieces (list of str) ``text`` is split into; spaces show as "▁"."""
        return self._processor.encode(self.prepare(text), out_type=str)

    def _encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def _decode(self, ids: list[int]) -> str:
        runs, run = [], []
        for i in ids:
            if i == UNK_ID:
                runs += [self._processor.decode(run), UNK_TEXT]
                run = []
            else:
                run.append(i)
        return "".join(runs) + self._processor.decode(run)

    def _config(self) -> dict[str, Any]:
        return {"model": base64.b64encode(self._model_proto).decode("ascii")}
