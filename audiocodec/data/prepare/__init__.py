"""Corpus preparers: each reads one corpus in its official layout and writes a jsonl manifest.

``python -m audiocodec.data.prepare CORPUS ROOT OUT.jsonl [--subsets ...] [--workers N] [--split speaker]``

>>> from audiocodec.data.prepare import prepare
>>> stats = prepare("libritts", "/data/LibriTTS_R", "data/libritts.jsonl", subsets=["dev-clean"])
>>> stats["written"], stats["skipped_by_reason"]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ...audio import PathLike
from ...errors import AudioCodecError
from . import folder, librispeech, libritts, ljspeech, vctk
from .common import PrepareError, probe

#: corpus name -> its ``prepare(root, out_manifest, subsets=None, ...)``.
PREPARERS = {
    "ljspeech": ljspeech.prepare,
    "libritts": libritts.prepare,
    "libritts_r": libritts.prepare,
    "vctk": vctk.prepare,
    "librispeech": librispeech.prepare,
    "folder": folder.prepare,
}


def prepare(corpus: str, root: PathLike, out_manifest: PathLike, subsets: Optional[Sequence[str]] = None,
            **kwargs) -> dict:
    """Run the preparer of ``corpus`` (a name in :data:`PREPARERS`) and return its stats."""
    key = corpus.lower().replace("-", "_")
    if key not in PREPARERS:
        raise PrepareError(f"unknown corpus {corpus!r}; known: {', '.join(sorted(PREPARERS))}")
    return PREPARERS[key](root, out_manifest, subsets=subsets, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m audiocodec.data.prepare",
        description="Write a jsonl manifest of a corpus read in its official layout. Unreadable files are "
                    "skipped and counted.")
    p.add_argument("corpus", choices=sorted(PREPARERS), help="corpus layout to read")
    p.add_argument("root", help="corpus folder (e.g. LibriTTS_R/ or its parent)")
    p.add_argument("out", help="manifest to write (.jsonl)")
    p.add_argument("--subsets", nargs="+", default=None,
                   help="subsets to include (LibriTTS/LibriSpeech: train-clean-100 ...; VCTK: speaker ids; "
                        "folder: sub-folders)")
    p.add_argument("--workers", type=int, default=4, help="threads reading headers")
    p.add_argument("--require-text", action="store_true", help="skip clips without transcript")
    p.add_argument("--min-duration", type=float, default=None, help="drop clips shorter than this (s)")
    p.add_argument("--max-duration", type=float, default=None, help="drop clips longer than this (s)")
    p.add_argument("--split", choices=["none", "speaker", "utterance"], default="none",
                   help="also write OUT's train/valid/test splits beside it (OUT.train.jsonl ...)")
    p.add_argument("--valid", type=float, default=0.02, help="valid size: fraction (<1) or count")
    p.add_argument("--test", type=float, default=0.02, help="test size: fraction (<1) or count")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any file was skipped")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main_prepare(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry. Exit status: 0 ok (skipped files are reported), 1 when files were skipped and ``--strict``,
    2 on an error that stops it (bad layout, bad arguments)."""
    from ..manifest import (filter_by_duration, manifest_stats, read_manifest, split_records,
                            write_manifest)

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    kwargs = {"workers": args.workers}
    if args.require_text and args.corpus != "ljspeech":
        kwargs["require_text"] = True
    try:
        stats = prepare(args.corpus, args.root, args.out, subsets=args.subsets, **kwargs)
        if args.min_duration is not None or args.max_duration is not None or args.split != "none":
            out = Path(args.out)
            records = read_manifest(out)
            if args.min_duration is not None or args.max_duration is not None:
                kept = filter_by_duration(records, args.min_duration, args.max_duration)
                stats["dropped_by_duration"] = len(records) - len(kept)
                records = kept
                write_manifest(out, records)
            if args.split != "none":
                def size(x):
                    return int(x) if x >= 1 else x
                splits = split_records(records, valid=size(args.valid), test=size(args.test), by=args.split,
                                       seed=args.seed)
                stats["splits"] = {}
                for name, recs in splits.items():
                    path = out.with_name(f"{out.stem}.{name}{out.suffix or '.jsonl'}")
                    write_manifest(path, recs)
                    stats["splits"][name] = {"manifest": str(path), **manifest_stats(recs)}
    except (AudioCodecError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 1 if stats["skipped"] and args.strict else 0


__all__ = ["PREPARERS", "PrepareError", "prepare", "main_prepare", "build_parser", "probe"]
