"""LibriTTS and LibriTTS-R: ``{subset}/{speaker}/{chapter}/{id}.wav`` (24 kHz) with ``{id}.normalized.txt`` and
``{id}.original.txt`` beside each wav (and ``{speaker}_{chapter}.trans.tsv`` per chapter)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from ...audio import PathLike
from .common import Collector, check_root, find_child, pick_subsets, read_text

NAME = "libritts"
SUBSET = re.compile(r"(train|dev|test)-(clean|other)(-\d+)?")


def _read_trans_tsv(path: Path) -> dict[str, tuple[str, str]]:
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else parts[1])
    return out


def prepare(root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            workers: int = 1, require_text: bool = False) -> dict:
    """Manifest of LibriTTS / LibriTTS-R at ``root`` (the ``LibriTTS`` or ``LibriTTS_R`` folder, its parent, or
    one subset folder). ``subsets``: e.g. ``["train-clean-100", "dev-clean"]``; all found when ``None``.

    Each record: ``id``, ``text`` (normalised), ``text_original``, ``speaker``, ``chapter``, ``subset``,
    ``language``. A wav without transcript is kept (counted in ``notes``) unless ``require_text``.
    """
    root = find_child(check_root(root, NAME), ["LibriTTS_R", "LibriTTS-R", "LibriTTS"],
                      lambda p: p.is_dir() and (SUBSET.fullmatch(p.name) is not None
                                                or any(SUBSET.fullmatch(c.name) for c in p.iterdir())))
    col = Collector(NAME, workers)
    items = []
    for sub in pick_subsets(root, subsets, SUBSET, NAME):
        for spk in sorted(p for p in sub.iterdir() if p.is_dir()):
            for chap in sorted(p for p in spk.iterdir() if p.is_dir()):
                tsv = None
                for wav in sorted(chap.glob("*.wav")):
                    uid = wav.stem
                    text = read_text(chap / f"{uid}.normalized.txt")
                    original = read_text(chap / f"{uid}.original.txt")
                    if text is None or original is None:
                        if tsv is None:
                            tsv = _read_trans_tsv(chap / f"{spk.name}_{chap.name}.trans.tsv")
                        if uid in tsv:
                            original = original or tsv[uid][0]
                            text = text or tsv[uid][1]
                    if text is None:
                        if require_text:
                            col.skip("missing_text", f"no transcript for {wav}")
                            continue
                        col.note("missing_text")
                    items.append((wav, {"id": uid, "text": text, "text_original": original or text,
                                        "speaker": spk.name, "chapter": chap.name, "subset": sub.name,
                                        "language": "en"}))
    col.add_all(items)
    return col.finish(out_manifest)
