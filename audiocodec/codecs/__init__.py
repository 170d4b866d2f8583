"""Codecs: the shared interface, named configs, and loaders for official checkpoints."""
from .base import Codec, CodecOutput
from .codes import Codes
from .embedded import DEFAULT_CODEC, list_embedded, model_card
from .io import load_codec, load_vocoder, save_codec
from .registry import build_codec, get_config, list_codecs
from .vocoder import MelVocoder, build_vocoder

__all__ = ["DEFAULT_CODEC", "list_embedded", "model_card", "Codec", "CodecOutput", "Codes", "MelVocoder", "build_codec", "build_vocoder", "get_config",
           "list_codecs", "load_codec", "load_vocoder", "save_codec"]
