"""Text to speech on codec tokens: a decoder-only LM over text and speech tokens (TouchTTS / CosyVoice 2
style), voice cloning by prompt continuation, batched and streaming synthesis."""
from .frontend import TextFrontend
from .layout import TTSVocab
from .model import TTSModel, load_tts, save_tts
from .synthesize import TTS, SynthesisOptions

__all__ = ["TTS", "SynthesisOptions", "TTSModel", "TTSVocab", "TextFrontend", "load_tts", "save_tts"]
