"""Models shipped inside the package (``audiocodec/assets``): trained weights that need no download.

Each embedded codec is an audiocodec safetensors file (fp16 weights, config in its metadata) with a model
card beside it (``<name>.md``: training data, duration, held-out metrics). :func:`load_codec` accepts
their names, and the command line uses :data:`DEFAULT_CODEC` when ``--model`` is not given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

#: Embedded codec names -> file names in :data:`ASSETS_DIR`.
EMBEDDED_CODECS = {
    "wavtokenizer-75-small-mini": "wavtokenizer-75-small-mini.safetensors",
    "music-rvq-40-small-mini": "music-rvq-40-small-mini.safetensors",   # the song model's codec
}

#: The codec used when none is named (command line, demo).
DEFAULT_CODEC = "wavtokenizer-75-small-mini"

#: Embedded TTS models (names -> file names in :data:`ASSETS_DIR`); :meth:`audiocodec.TTS.load` accepts the
#: names, and the demo and ``audiocodec tts`` speak with :data:`DEFAULT_TTS` when no model is given.
EMBEDDED_TTS: dict = {
    "tts-mini": "tts-mini.safetensors",
}
DEFAULT_TTS = "tts-mini"

#: Embedded song models (names -> file names in :data:`ASSETS_DIR`); :meth:`audiocodec.SongGenerator.load`
#: accepts the names, and the demo and ``audiocodec sing`` use :data:`DEFAULT_SONG` when no model is given.
EMBEDDED_SONGS: dict = {
    "song-mini": "song-mini.safetensors",
}
DEFAULT_SONG = "song-mini"


def _asset(table: dict, name) -> Optional[Path]:
    file = table.get(str(name))
    if file is None or not (ASSETS_DIR / file).is_file():
        return None
    return ASSETS_DIR / file


def list_embedded() -> list[str]:
    """Names of the embedded codecs whose weights are present in this installation."""
    return sorted(n for n, f in EMBEDDED_CODECS.items() if (ASSETS_DIR / f).is_file())


def embedded_path(name: str) -> Optional[Path]:
    """The weights file of embedded codec ``name``, or None when ``name`` is not one (or is missing)."""
    return _asset(EMBEDDED_CODECS, name)


def embedded_tts_path(name) -> Optional[Path]:
    """The weights file of embedded TTS model ``name``, or None when it is not one (or is missing)."""
    return _asset(EMBEDDED_TTS, name)


def default_tts_path() -> Optional[Path]:
    """The embedded default TTS model's file, when one is installed."""
    return embedded_tts_path(DEFAULT_TTS) if DEFAULT_TTS else None


def embedded_song_path(name) -> Optional[Path]:
    """The weights file of embedded song model ``name``, or None when it is not one (or is missing)."""
    return _asset(EMBEDDED_SONGS, name)


def default_song_path() -> Optional[Path]:
    """The embedded default song model's file, when one is installed."""
    return embedded_song_path(DEFAULT_SONG) if DEFAULT_SONG else None


def embedded_name(path) -> Optional[str]:
    """The name of the embedded codec, TTS or song model whose weights file is ``path``, or None."""
    target = Path(path).resolve()
    for name, file in {**EMBEDDED_CODECS, **EMBEDDED_TTS, **EMBEDDED_SONGS}.items():
        if (ASSETS_DIR / file).resolve() == target:
            return name
    return None


def model_card(name: str) -> Optional[str]:
    """The model card (Markdown) of embedded codec, TTS or song model ``name``, or None."""
    file = EMBEDDED_CODECS.get(str(name)) or EMBEDDED_TTS.get(str(name)) or EMBEDDED_SONGS.get(str(name))
    card = ASSETS_DIR / Path(file).with_suffix(".md").name if file else None
    return card.read_text() if card is not None and card.is_file() else None
