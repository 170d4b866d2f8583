"""Exceptions of the text frontend. Each names what was wrong and what to do about it."""
from __future__ import annotations

from ..errors import AudioCodecError


class TextError(AudioCodecError, ValueError):
    """Text or token ids that cannot be processed: not a string, an id out of range, an unknown language."""


class PhonemeBackendError(AudioCodecError, RuntimeError):
    """No working espeak-ng phonemizer: names the packages (or system package) to install."""
