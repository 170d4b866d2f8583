"""Text to speech on codec tokens: a decoder-only LM over text and speech tokens (TouchTTS / CosyVoice 2
style), voice cloning by prompt continuation, batched and streaming synthesis, and the bistream layout for
text that arrives while speaking."""
from .frontend import TextFrontend, TextStream
from .layout import SequenceLayout, TTSVocab
from .model import TTSModel, load_tts, save_tts
from .synthesize import TTS, SynthesisOptions

__all__ = ["TTS", "SynthesisOptions", "TTSModel", "TTSVocab", "SequenceLayout", "TextFrontend", "TextStream",
           "load_tts", "save_tts"]
