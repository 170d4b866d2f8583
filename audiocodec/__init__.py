"""audiocodec: neural audio tokenizers and the generative models built on them.

>>> import audiocodec
>>> codec = audiocodec.load_codec("wavtokenizer-75-small-mini") # the embedded default (no download)
>>> codec = audiocodec.load_codec("wavtokenizer_75.ckpt")      # or an official checkpoint, or our own
>>> codes = codec.encode(wav, sample_rate=16000)                # Codes.tokens: LongTensor [B, K, T]
>>> audio = codec.decode(codes)                                  # [B, 1, L] at codec.sample_rate
"""
from .codecs import (DEFAULT_CODEC, Codec, Codes, MelVocoder, build_codec, build_vocoder, get_config, list_codecs,
                     list_embedded, load_codec, load_vocoder, model_card, save_codec)
from .errors import AudioCodecError, AudioError, CheckpointError, CodesError, ConfigError
from .nn.streaming import StreamingError
from .song import SongGenerator
from .tts import TTS

__version__ = "0.1.0"

__all__ = ["DEFAULT_CODEC", "Codec", "Codes", "MelVocoder", "build_codec", "build_vocoder", "get_config",
           "list_codecs", "list_embedded", "model_card", "load_codec", "load_vocoder", "save_codec", "AudioCodecError", "AudioError",
           "CheckpointError", "CodesError", "ConfigError", "StreamingError", "SongGenerator", "TTS", "__version__"]
