"""Any folder of audio files (searched recursively), with optional transcripts in sidecar files of the same
name ending in ``.txt`` or ``.lab`` (``a.wav`` + ``a.txt``)."""
from __future__ import annotations

from typing import Optional, Sequence

from ...audio import AUDIO_EXTENSIONS, PathLike
from .common import Collector, PrepareError, check_root, read_text

NAME = "folder"
TEXT_EXTENSIONS = (".txt", ".lab", ".normalized.txt")


def prepare(root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            workers: int = 1, speaker_from_folder: bool = True, language: Optional[str] = None,
            require_text: bool = False) -> dict:
    """Manifest of every audio file under ``root``.

    Args:
        subsets: first-level sub-folders of ``root`` to include; all when ``None``.
        speaker_from_folder: a file in a sub-folder gets the first-level folder's name as ``speaker``;
            files directly in ``root`` get none.
        language: stored in every record when given.

    ``id`` is the path below ``root`` without extension, ``/`` replaced by ``__`` (unique by construction).
    """
    root = check_root(root, NAME)
    dirs = [root]
    if subsets is not None:
        dirs = [root / s for s in subsets]
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise PrepareError(f"{NAME}: sub-folder(s) not found: {', '.join(missing)}")
    col = Collector(NAME, workers)
    items = []
    for d in dirs:
        for f in sorted(p for p in d.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir()):
            rel = f.relative_to(root)
            text = None
            for ext in TEXT_EXTENSIONS:
                text = read_text(f.with_name(f.stem + ext))
                if text is not None:
                    break
            if text is None:
                if require_text:
                    col.skip("missing_text", f"no .txt/.lab transcript beside {f}")
                    continue
                col.note("missing_text")
            meta = {"id": rel.with_suffix("").as_posix().replace("/", "__"), "text": text,
                    "speaker": rel.parts[0] if speaker_from_folder and len(rel.parts) > 1 else None,
                    "language": language}
            items.append((f, meta))
    if not items and not col.skipped:
        raise PrepareError(f"{NAME}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    col.add_all(items)
    return col.finish(out_manifest)
