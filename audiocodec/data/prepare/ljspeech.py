"""LJSpeech-1.1: ``metadata.csv`` (``id|text|normalized text``, no header, no quoting) and ``wavs/{id}.wav``
(22.05 kHz mono, one speaker)."""
from __future__ import annotations

from typing import Optional, Sequence

from ...audio import PathLike
from .common import Collector, PrepareError, check_root, find_child

NAME = "ljspeech"


def prepare(root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            workers: int = 1, speaker: str = "LJ") -> dict:
    """Manifest of LJSpeech-1.1 at ``root`` (the ``LJSpeech-1.1`` folder or its parent).

    Each record: ``id``, ``text`` (the normalised column), ``text_original``, ``speaker``, ``language``.
    Lines of metadata.csv whose wav is missing or unreadable are skipped and counted.
    """
    if subsets:
        raise PrepareError(f"{NAME}: LJSpeech has no subsets, got {list(subsets)}")
    root = find_child(check_root(root, NAME), ["LJSpeech-1.1"], lambda p: (p / "metadata.csv").is_file())
    meta_path = root / "metadata.csv"
    if not meta_path.is_file():
        raise PrepareError(f"{NAME}: {meta_path} not found: is {root} the LJSpeech-1.1 folder?")
    col = Collector(NAME, workers)
    items = []
    with open(meta_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) < 2 or not parts[0].strip():
                col.skip("bad_metadata", f"{meta_path} line {lineno}: expected 'id|text|normalized'")
                continue
            uid = parts[0].strip()
            original = parts[1].strip()
            normalized = parts[2].strip() if len(parts) > 2 and parts[2].strip() else original
            items.append((root / "wavs" / f"{uid}.wav",
                          {"id": uid, "text": normalized, "text_original": original, "speaker": speaker,
                           "language": "en"}))
    col.add_all(items)
    return col.finish(out_manifest)
