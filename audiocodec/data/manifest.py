"""Manifests: jsonl files listing audio clips, one JSON object per line.

Each line holds at least::

    {"path": "wavs/a.wav", "duration": 3.52, "sample_rate": 24000}

``path`` is relative to the manifest's own folder (or absolute); ``duration`` is in seconds. Optional keys
``id``, ``text``, ``speaker``, ``language`` have fixed meanings; any other key is kept as it is.

>>> records = read_manifest("data/train.jsonl")          # paths made absolute
>>> records = filter_by_duration(records, min_duration=1.0, max_duration=20.0)
>>> splits = split_records(records, valid=0.02, test=0.02, by="speaker", seed=0)
>>> write_splits(splits, "data/")                         # data/train.jsonl, data/valid.jsonl, ...
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ..audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, PathLike
from ..errors import AudioCodecError

Record = dict

#: Keys whose values must be strings when present (``speaker`` may also be given as an int).
STRING_KEYS = ("id", "text", "language")


class ManifestError(AudioCodecError, ValueError):
    """A manifest line that is not valid JSON, lacks a required key, or holds a value of the wrong kind."""


# -- validation ----------------------------------------------------------------------------------------

def validate_record(record: Any, where: str = "record") -> Record:
    """Check one manifest entry and return a normalised copy (``speaker`` as str, numbers as numbers).

    ``where`` names the entry in error messages, e.g. ``"train.jsonl line 12"``.
    """
    if not isinstance(record, Mapping):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rec = dict(record)
    path = rec.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(f"{where}: 'path' is required and must be a non-empty string, got {path!r}")
    dur = rec.get("duration")
    if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not math.isfinite(dur) or dur <= 0:
        raise ManifestError(f"{where}: 'duration' is required and must be a positive number of seconds, "
                            f"got {dur!r}")
    sr = rec.get("sample_rate")
    if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not math.isfinite(sr) or sr != int(sr) \
            or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ManifestError(f"{where}: 'sample_rate' is required and must be a whole number of Hz between "
                            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}, got {sr!r}")
    rec["sample_rate"] = int(sr)
    rec["duration"] = float(dur)
    for key in STRING_KEYS:
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            raise ManifestError(f"{where}: '{key}' must be a string, got {rec[key]!r}")
    spk = rec.get("speaker")
    if spk is not None:
        if isinstance(spk, bool) or not isinstance(spk, (str, int)):
            raise ManifestError(f"{where}: 'speaker' must be a string, got {spk!r}")
        rec["speaker"] = str(spk)
    if "channels" in rec and (isinstance(rec["channels"], bool) or not isinstance(rec["channels"], int)
                              or rec["channels"] < 1):
        raise ManifestError(f"{where}: 'channels' must be a positive integer, got {rec['channels']!r}")
    return rec


def validate_records(records: Iterable[Any], source: str = "manifest") -> list[Record]:
    """Validate every entry; duplicate ids are an error naming both entries."""
    out, seen = [], {}
    for i, rec in enumerate(records):
        rec = validate_record(rec, f"{source} entry {i + 1}")
        rid = rec.get("id")
        if rid is not None:
            if rid in seen:
                raise ManifestError(f"{source}: duplicate id {rid!r} in entries {seen[rid]} and {i + 1}")
            seen[rid] = i + 1
        out.append(rec)
    return out


# -- read / write --------------------------------------------------------------------------------------

def read_manifest(path: PathLike, resolve_paths: bool = True, validate: bool = True) -> list[Record]:
    """Read a jsonl manifest.

    Args:
        path: the manifest file.
        resolve_paths: make each ``path`` absolute (relative paths are relative to the manifest's folder).
        validate: check each line (see :func:`validate_record`) and that ids are unique.

    Raises:
        ManifestError: missing file, bad JSON, or an invalid entry; the message names the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.resolve().parent
    records, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if validate:
                rec = validate_record(rec, where)
                rid = rec.get("id")
                if rid is not None:
                    if rid in seen:
                        raise ManifestError(f"{where}: duplicate id {rid!r} (first on line {seen[rid]})")
                    seen[rid] = lineno
            elif not isinstance(rec, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if resolve_paths and isinstance(rec.get("path"), str):
                rec["path"] = resolve_path(rec["path"], base)
            records.append(rec)
    return records


def resolve_path(p: str, base: PathLike) -> str:
    """``p`` made absolute against ``base`` (the manifest's folder) unless it already is."""
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else Path(base) / q)


def write_manifest(path: PathLike, records: Iterable[Mapping], relative: bool = True,
                   validate: bool = True) -> Path:
    """Write ``records`` as jsonl, atomically (temp file + rename: a crash never leaves half a manifest).

    Args:
        relative: store paths under the manifest's folder relative to it, so the folder can be moved.
        validate: check each record first (see :func:`validate_records`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    if validate:
        records = validate_records(records, str(path))
    base = path.resolve().parent
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                rec = dict(rec)
                if relative and isinstance(rec.get("path"), str):
                    rec["path"] = relative_path(rec["path"], base)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def relative_path(p: str, base: PathLike) -> str:
    """``p`` relative to ``base`` when it lies under it (posix separators), else absolute."""
    q = Path(p)
    if not q.is_absolute():
        return q.as_posix()
    try:
        return q.resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(q)


# -- selection -----------------------------------------------------------------------------------------

def filter_by_duration(records: Iterable[Record], min_duration: Optional[float] = None,
                       max_duration: Optional[float] = None) -> list[Record]:
    """Keep records with ``min_duration <= duration <= max_duration`` (either bound may be ``None``)."""
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise ManifestError(f"min_duration {min_duration} is larger than max_duration {max_duration}")
    out = []
    for r in records:
        d = r["duration"]
        if min_duration is not None and d < min_duration:
            continue
        if max_duration is not None and d > max_duration:
            continue
        out.append(r)
    return out


def total_duration(records: Iterable[Record]) -> float:
    return float(sum(r["duration"] for r in records))


def manifest_stats(records: Sequence[Record]) -> dict:
    """Counts for a report: clips, hours, speakers, shortest/longest clip, sample rates."""
    durs = [r["duration"] for r in records]
    return {
        "clips": len(records),
        "hours": round(sum(durs) / 3600, 4),
        "speakers": len({r["speaker"] for r in records if r.get("speaker") is not None}),
        "min_duration": min(durs) if durs else 0.0,
        "max_duration": max(durs) if durs else 0.0,
        "sample_rates": sorted({r["sample_rate"] for r in records}),
    }


def _count(fraction: Union[int, float], total: int, name: str) -> int:
    """A split size given as a fraction (0 <= f < 1) or an absolute count (int >= 1)."""
    if isinstance(fraction, bool) or fraction < 0:
        raise ManifestError(f"{name} must be a fraction in [0, 1) or a count >= 0, got {fraction!r}")
    if isinstance(fraction, int) or fraction >= 1:
        if fraction != int(fraction):
            raise ManifestError(f"{name} must be a fraction in [0, 1) or a whole count, got {fraction!r}")
        return int(fraction)
    return int(round(fraction * total)) if fraction > 0 else 0


def split_records(records: Sequence[Record], valid: Union[int, float] = 0.05, test: Union[int, float] = 0.05,
                  by: str = "utterance", seed: int = 0) -> dict[str, list[Record]]:
    """Split into ``{"train", "valid", "test"}``.

    Args:
        valid, test: sizes as fractions of the clips (``0.05``) or counts (``100``). With ``by="speaker"``
            a fraction is of the clips and whole speakers are taken until it is reached (at least one
            speaker when the fraction is > 0); a count is a number of speakers.
        by: ``"utterance"`` (clips drawn at random) or ``"speaker"`` (no speaker in two splits; every record
            needs a ``speaker``).
        seed: the same seed and records give the same split.

    The order of records within each split follows the input order.
    """
    records = list(records)
    rng = random.Random(seed)
    if by == "utterance":
        n = len(records)
        n_test, n_valid = _count(test, n, "test"), _count(valid, n, "valid")
        if n_test + n_valid > n:
            raise ManifestError(f"cannot take {n_valid} valid + {n_test} test clips from {n} clips")
        order = list(range(n))
        rng.shuffle(order)
        test_idx, valid_idx = set(order[:n_test]), set(order[n_test:n_test + n_valid])
        out: dict[str, list[Record]] = {"train": [], "valid": [], "test": []}
        for i, r in enumerate(records):
            out["test" if i in test_idx else "valid" if i in valid_idx else "train"].append(r)
        return out
    if by != "speaker":
        raise ManifestError(f"split by must be 'utterance' or 'speaker', got {by!r}")
    missing = [i for i, r in enumerate(records) if r.get("speaker") is None]
    if missing:
        raise ManifestError(f"split by speaker needs a 'speaker' in every record; {len(missing)} record(s) "
                            f"lack one (first: entry {missing[0] + 1})")
    by_spk: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_spk[str(r["speaker"])].append(i)
    speakers = sorted(by_spk)
    rng.shuffle(speakers)
    assign: dict[str, str] = {}
    pool = list(speakers)
    for name, size in (("test", test), ("valid", valid)):
        if isinstance(size, bool) or size < 0:
            raise ManifestError(f"{name} must be a fraction in [0, 1) or a count >= 0, got {size!r}")
        if isinstance(size, int) or size >= 1:
            take = _count(size, len(speakers), name)
            if take > len(pool):
                raise ManifestError(f"cannot take {take} {name} speakers: only {len(pool)} left of "
                                    f"{len(speakers)}")
            chosen, pool = pool[:take], pool[take:]
        else:
            target = size * len(records)
            chosen, got = [], 0
            while pool and size > 0 and (not chosen or got < target) and len(pool) > 1:
                spk = pool.pop(0)
                chosen.append(spk)
                got += len(by_spk[spk])
        for spk in chosen:
            assign[spk] = name
    out = {"train": [], "valid": [], "test": []}
    for r in records:
        out[assign.get(str(r["speaker"]), "train")].append(r)
    return out


def write_splits(splits: Mapping[str, Sequence[Record]], out_dir: PathLike, prefix: str = "") -> dict[str, Path]:
    """Write each split to ``out_dir/{prefix}{name}.jsonl``; returns the paths."""
    out_dir = Path(out_dir)
    return {name: write_manifest(out_dir / f"{prefix}{name}.jsonl", recs) for name, recs in splits.items()}
