"""Exceptions raised by audiocodec. Each names what was wrong and what to do about it."""


class AudioCodecError(Exception):
    """Base class of every error this package raises on purpose."""


class AudioError(AudioCodecError, ValueError):
    """Audio that cannot be read, is empty, holds NaN/inf, or has an impossible sample rate."""


class CheckpointError(AudioCodecError, ValueError):
    """A checkpoint that cannot be read safely, or whose keys or shapes do not fit the model."""


class CodesError(AudioCodecError, ValueError):
    """Codes that are malformed, out of range, or made by another model."""


class ConfigError(AudioCodecError, ValueError):
    """An unknown model name, an unknown config key, or a value of the wrong kind."""
