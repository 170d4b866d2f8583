"""Shared parts of the corpus preparers: probing headers, counting skips, writing the manifest."""
from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import soundfile as sf

from ...audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, PathLike
from ...errors import AudioCodecError
from ..manifest import manifest_stats, write_manifest

log = logging.getLogger("audiocodec.data.prepare")

#: Skipped files logged one by one before the log goes quiet (all are still counted).
MAX_LOGGED_SKIPS = 20


class PrepareError(AudioCodecError, ValueError):
    """A corpus folder that does not have the layout its preparer expects."""


def probe(path: PathLike) -> tuple[float, int, int]:
    """``(duration s, sample_rate, channels)`` from the file header (fast: no samples are decoded).

    Raises:
        PrepareError: with ``reason`` in {"missing", "empty", "unreadable", "bad_rate"}.
    """
    path = Path(path)
    if not path.is_file():
        raise _Skip("missing", f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise _Skip("empty", f"audio file is empty (0 bytes): {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several kinds for corrupt files
        raise _Skip("unreadable", f"cannot read header of {path}: {e}") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise _Skip("bad_rate", f"impossible sample rate {info.samplerate} Hz in {path}")
    if info.frames <= 0:
        raise _Skip("empty", f"audio file holds no samples: {path}")
    return info.frames / info.samplerate, int(info.samplerate), int(info.channels)


class _Skip(PrepareError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Collector:
    """Gathers records, probes their audio, counts and logs what is skipped, writes the manifest."""

    def __init__(self, corpus: str, workers: int = 1):
        self.corpus = corpus
        self.workers = max(1, int(workers))
        self.records: list[dict] = []
        self.skipped: Counter = Counter()
        self.notes: Counter = Counter()
        self._logged = 0
        self._t0 = time.time()

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if self._logged < MAX_LOGGED_SKIPS:
            log.warning("%s: skipped (%s): %s", self.corpus, reason, message)
        elif self._logged == MAX_LOGGED_SKIPS:
            log.warning("%s: more files skipped; only the counts are reported from now on", self.corpus)
        self._logged += 1

    def note(self, what: str, n: int = 1) -> None:
        """Count something worth reporting that does not drop a file (e.g. a clip without transcript)."""
        self.notes[what] += n

    def add_all(self, items: Iterable[tuple[Path, dict]]) -> None:
        """Probe each ``(audio path, metadata)`` and keep the readable ones; order is preserved."""
        items = list(items)

        def one(item):
            path, meta = item
            try:
                return item, probe(path), None
            except _Skip as e:
                return item, None, e

        if self.workers == 1 or len(items) < 64:
            results = [one(it) for it in items]
        else:  # libsndfile releases the GIL, so threads overlap the header reads
            with ThreadPoolExecutor(self.workers) as ex:
                results = list(ex.map(one, items))
        for (path, meta), probed, err in results:
            if err is not None:
                self.skip(err.reason, str(err))
                continue
            duration, sr, channels = probed
            rec = {"id": meta.pop("id", Path(path).stem), "path": str(Path(path).resolve()),
                   "duration": round(duration, 6), "sample_rate": sr}
            if channels != 1:
                rec["channels"] = channels
            rec.update({k: v for k, v in meta.items() if v is not None})
            self.records.append(rec)

    def finish(self, out_manifest: PathLike) -> dict:
        """Write the manifest (sorted by id) and return the stats."""
        self.records.sort(key=lambda r: r["id"])
        path = write_manifest(out_manifest, self.records)
        stats = {"corpus": self.corpus, "manifest": str(path), "written": len(self.records),
                 "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(sorted(self.skipped.items())),
                 "notes": dict(sorted(self.notes.items())), "seconds": round(time.time() - self._t0, 2)}
        stats.update(manifest_stats(self.records))
        log.info("%s: wrote %d clips (%.2f h, %d speakers) to %s; skipped %d %s", self.corpus,
                 stats["written"], stats["hours"], stats["speakers"], path, stats["skipped"],
                 stats["skipped_by_reason"] or "")
        return stats


def read_text(path: Path) -> Optional[str]:
    """A transcript file's text (whitespace collapsed), or None when missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    text = " ".join(text.split())
    return text or None


def check_root(root: PathLike, corpus: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PrepareError(f"{corpus}: corpus folder not found: {root}")
    return root


def find_child(root: Path, names: Sequence[str], test: Callable[[Path], bool]) -> Path:
    """``root`` itself if it passes ``test``, else the first of ``root/name`` that does."""
    if test(root):
        return root
    for name in names:
        if test(root / name):
            return root / name
    return root


def pick_subsets(base: Path, subsets: Optional[Sequence[str]], pattern, corpus: str) -> list[Path]:
    """The subset folders under ``base`` (``base`` itself when it is one), all or those named."""
    if pattern.fullmatch(base.name):
        found = {base.name: base}
    else:
        found = {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and pattern.fullmatch(p.name)}
    if not found:
        raise PrepareError(f"{corpus}: no subset folders (e.g. train-clean-100, dev-clean) in {base}")
    if subsets is None:
        return list(found.values())
    missing = [s for s in subsets if s not in found]
    if missing:
        raise PrepareError(f"{corpus}: subset(s) {', '.join(missing)} not found in {base}; "
                           f"found: {', '.join(found)}")
    return [found[s] for s in subsets]
