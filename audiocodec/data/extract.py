"""Encode a manifest with a codec into sharded token files (:mod:`audiocodec.data.tokens`).

    audiocodec extract-tokens data/train.jsonl -o tokens/train --model wavtokenizer-75-small-mini
    torchrun --nproc_per_node 8 -m audiocodec extract-tokens data/train.jsonl -o tokens/train --model ckpt/

* Batched: items are sorted by duration and batched so that little padding is coded; each item's tokens
  are cut to its own length. (A non-causal codec sees zeros after a padded item's end instead of its own
  reflection, so its last few frames can differ from coding the file alone: the last 2 of a 2 s clip, up
  to 4 of very short ones, with the default codec. ``--batch-size 1`` gives exactly the per-file tokens.)
* Resumable: shards are written whole and atomically; a rerun skips the ids already in the folder, so a
  killed extraction loses at most the shard in progress and never duplicates an item.
* Distributed: under ``torchrun`` rank ``r`` takes every ``world_size``-th item of the manifest (those not
  done yet) and writes its own shards (``shard-r<r>-*``); nothing is merged afterwards.
* Bad files (missing, corrupt, empty, NaN) are skipped and counted; the run never stops for one.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import load_audio
from ..errors import AudioCodecError
from .manifest import read_manifest
from .tokens import codec_meta, list_shards, read_shard, shard_ids, shard_name, write_shard

log = logging.getLogger("audiocodec.extract")


def item_id(record: dict) -> str:
    """A record's id: its ``id``, else its file name without extension."""
    return str(record["id"]) if record.get("id") is not None else Path(record["path"]).stem


class _WholeFiles(Dataset):
    """Whole files at the codec's rate and channel count; a bad file gives ``(index, None, reason)``."""

    def __init__(self, records: Sequence[dict], sample_rate: int, channels: int):
        self.records, self.sample_rate, self.channels = records, sample_rate, channels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        try:
            wav, _ = load_audio(self.records[i]["path"], sample_rate=self.sample_rate, channels=self.channels)
        except AudioCodecError as e:
            return i, None, str(e)
        return i, wav, None


def _collate(items):
    good = [(i, w) for i, w, _ in items if w is not None]
    bad = [(i, reason) for i, w, reason in items if w is None]
    if not good:
        return [], None, None, bad
    lengths = torch.tensor([w.shape[-1] for _, w in good])
    batch = torch.zeros(len(good), good[0][1].shape[0], int(lengths.max()))
    for j, (_, w) in enumerate(good):
        batch[j, :, : w.shape[-1]] = w
    return [i for i, _ in good], batch, lengths, bad


def _batches(durations: Sequence[float], batch_size: int, max_batch_seconds: Optional[float]) -> list[list[int]]:
    """Indices sorted by decreasing duration, cut into batches of ``batch_size`` items and (optionally) at
    most ``max_batch_seconds`` of padded audio."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) == batch_size or (
                max_batch_seconds and durations[current[0]] * (len(current) + 1) > max_batch_seconds)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def extract_tokens(manifest: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], codec,
                   batch_size: int = 16, max_batch_seconds: Optional[float] = None, shard_size: int = 1000,
                   num_workers: int = 2, rank: int = 0, world_size: int = 1, progress: bool = False) -> dict:
    """Encode every item of ``manifest`` not yet in ``out_dir`` and write this rank's shards.

    Args:
        codec: a ready :class:`~audiocodec.codecs.Codec` (eval mode, on its device).
        batch_size / max_batch_seconds: items per batch, and a cap on padded seconds per batch.
        shard_size: items per shard (the most an interruption can lose).
        rank / world_size: this process's share (``torchrun``).

    Returns:
        ``{"encoded": n, "skipped_existing": n, "failed": {id: reason}, "shards": [paths written]}``.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_manifest(manifest)
    ids = [item_id(r) for r in records]
    dupes = [k for k, n in Counter(ids).items() if n > 1]
    if dupes:
        raise AudioCodecError(f"{manifest}: item ids must be unique (give records an 'id'); repeated: {dupes[:5]}")
    meta = codec_meta(codec)
    for stray in out_dir.glob(f".shard-r{rank:03d}-*.tmp*"):   # left by a killed run of this rank
        stray.unlink(missing_ok=True)
    existing = list_shards(out_dir)
    if existing:
        old = read_shard(existing[0])[0]
        diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if diff:
            raise AudioCodecError(f"{out_dir} holds tokens of another codec ({diff}); use a new folder")
    done = shard_ids(out_dir)
    # ranks split the manifest by position, not the remaining items: every rank agrees on the split even
    # when another rank has already written shards, and a resumed run keeps it
    todo = [r for n, (r, i) in enumerate(zip(records, ids)) if n % world_size == rank and i not in done]
    next_index = 1 + max((int(p.stem.split("-")[2]) for p in existing if p.stem.startswith(f"shard-r{rank:03d}-")),
                         default=-1)
    durations = [float(r.get("duration") or 0.0) for r in todo]
    batches = _batches(durations, batch_size, max_batch_seconds)
    loader = DataLoader(_WholeFiles(todo, codec.sample_rate, codec.channels), batch_sampler=batches,
                        num_workers=num_workers, collate_fn=_collate)
    mine = sum(1 for n, i in enumerate(ids) if n % world_size == rank)
    stats = {"encoded": 0, "skipped_existing": mine - len(todo), "failed": {}, "shards": []}
    pending_tokens, pending_records = [], []

    def flush():
        nonlocal next_index
        if pending_records:
            path = write_shard(out_dir / shard_name(rank, next_index), pending_tokens, pending_records, meta)
            stats["shards"].append(str(path))
            next_index += 1
            pending_tokens.clear()
            pending_records.clear()

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="file", desc=f"extract r{rank}" if world_size > 1 else "extract")
    with torch.inference_mode():
        for idx, wav, lengths, bad in loader:
            for i, reason in bad:
                stats["failed"][item_id(todo[i])] = reason
                log.warning(f"skipped {todo[i]['path']}: {reason}")
            if idx:
                codes = codec.encode(wav.to(codec.device), lengths=lengths)
                for j, (i, tokens) in enumerate(zip(idx, codes.unbatch())):
                    record = {**todo[i], "id": item_id(todo[i])}
                    pending_tokens.append(tokens.cpu())
                    pending_records.append(record)
                    stats["encoded"] += 1
                    if len(pending_records) >= shard_size:
                        flush()
            if bar is not None:
                bar.update(len(idx) + len(bad))
    flush()
    if bar is not None:
        bar.close()
    return stats
