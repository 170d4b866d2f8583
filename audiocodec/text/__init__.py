"""The TTS text frontend: normalisation, sentence splitting and chunking, phonemes, and tokenizers.

>>> from audiocodec.text import normalize_text, chunk_text, build_tokenizer
>>> normalize_text("Dr. Smith paid $3.50 at 10:30.")
'Doctor Smith paid three dollars and fifty cents at ten thirty.'
>>> tok = build_tokenizer({"type": "phoneme", "language": "en-us", "normalize": "en"})
>>> tok.decode(tok.encode("Hello, world!"))
'həlˈoʊ, wˈɜːld!'
>>> restored = build_tokenizer(tok.to_dict())       # ships inside a model's JSON config
"""
from .base import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, UNK_TEXT, SymbolTokenizer, Tokenizer
from .bpe import BPETokenizer
from .english import EnglishNormalizer
from .errors import PhonemeBackendError, TextError
from .normalize import (BasicNormalizer, Normalizer, clean_punctuation, clean_unicode, get_normalizer,
                        normalize_text, normalizer_languages, register_normalizer)
from .phonemes import (EspeakBinaryBackend, EspeakLibraryBackend, PhonemeBackend, get_phoneme_backend, phonemize,
                       resolve_language)
from .sentences import chunk_text, split_long_sentence, split_sentences
from .symbols import DEFAULT_CHARACTERS, DEFAULT_PHONEMES
from .tokenizers import ByteTokenizer, CharTokenizer, PhonemeTokenizer, build_tokenizer, tokenizer_types

__all__ = [
    "normalize_text", "get_normalizer", "register_normalizer", "normalizer_languages", "Normalizer",
    "BasicNormalizer", "EnglishNormalizer", "clean_unicode", "clean_punctuation",
    "split_sentences", "split_long_sentence", "chunk_text",
    "phonemize", "get_phoneme_backend", "resolve_language", "PhonemeBackend", "EspeakLibraryBackend",
    "EspeakBinaryBackend",
    "Tokenizer", "SymbolTokenizer", "CharTokenizer", "ByteTokenizer", "PhonemeTokenizer", "BPETokenizer",
    "build_tokenizer", "tokenizer_types", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "SPECIAL_TOKENS", "UNK_TEXT",
    "DEFAULT_CHARACTERS", "DEFAULT_PHONEMES", "TextError", "PhonemeBackendError",
]
