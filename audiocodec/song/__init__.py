"""Text to song on codec tokens (SongGen): a codebook LM cross-attending to lyrics, a description and an
optional reference voice; mixed, mixed-pro and dual-track (parallel / interleaving) modes; classifier-free
guidance and window-by-window continuation of long songs."""
from .conditioners import Conditions, SongConditioner, TextEncoder, VoiceEncoder, fit_text_config
from .generate import Song, SongGenerator, SongOptions
from .layout import MODES, SongLayout, pad_sequences
from .model import SongModel, load_song, save_song

__all__ = ["MODES", "Conditions", "Song", "SongConditioner", "SongGenerator", "SongLayout", "SongModel",
           "SongOptions", "TextEncoder", "VoiceEncoder", "fit_text_config", "load_song", "pad_sequences",
           "save_song"]
