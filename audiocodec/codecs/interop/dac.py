"""DAC weights files (placeholder until the DAC family lands)."""
from __future__ import annotations

from typing import Mapping


def is_dac_checkpoint(obj: Mapping) -> bool:
    return False


def load_dac_checkpoint(obj: Mapping, source: str):
    raise NotImplementedError
