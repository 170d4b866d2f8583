"""LibriSpeech: ``{subset}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac`` (16 kHz) with one
``{speaker}-{chapter}.trans.txt`` per chapter (``ID TEXT IN CAPITALS`` per line)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from ...audio import PathLike
from .common import Collector, check_root, find_child, pick_subsets

NAME = "librispeech"
SUBSET = re.compile(r"(train|dev|test)-(clean|other)(-\d+)?")


def _read_trans(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split(" ", 1)
            if parts and parts[0]:
                out[parts[0]] = " ".join(parts[1].split()) if len(parts) > 1 else ""
    return out


def prepare(root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            workers: int = 1, require_text: bool = False) -> dict:
    """Manifest of LibriSpeech at ``root`` (the ``LibriSpeech`` folder, its parent, or one subset folder).

    Each record: ``id``, ``text`` (as in the transcripts: upper case), ``speaker``, ``chapter``, ``subset``,
    ``language``. A flac without transcript line is kept (counted in ``notes``) unless ``require_text``.
    """
    root = find_child(check_root(root, NAME), ["LibriSpeech"],
                      lambda p: p.is_dir() and (SUBSET.fullmatch(p.name) is not None
                                                or any(SUBSET.fullmatch(c.name) for c in p.iterdir())))
    col = Collector(NAME, workers)
    items = []
    for sub in pick_subsets(root, subsets, SUBSET, NAME):
        for spk in sorted(p for p in sub.iterdir() if p.is_dir()):
            for chap in sorted(p for p in spk.iterdir() if p.is_dir()):
                trans = _read_trans(chap / f"{spk.name}-{chap.name}.trans.txt")
                for flac in sorted(chap.glob("*.flac")):
                    text = trans.get(flac.stem) or None
                    if text is None:
                        if require_text:
                            col.skip("missing_text", f"no transcript line for {flac}")
                            continue
                        col.note("missing_text")
                    items.append((flac, {"id": flac.stem, "text": text, "speaker": spk.name,
                                         "chapter": chap.name, "subset": sub.name, "language": "en"}))
    col.add_all(items)
    return col.finish(out_manifest)
