"""Sharded codec-token files: what ``audiocodec extract-tokens`` writes and token-LM datasets read.

A token folder holds shards ``shard-r<rank>-<n>.npz`` (numpy archives without pickles), each with:

* ``tokens``  ``[K, sum(T_i)]`` int16 (int32 when the codebook has more than 32767 codes): the items'
  codes concatenated along time;
* ``lengths`` ``[N]`` int64: frames of each item;
* ``records`` UTF-8 JSON: one manifest record per item (``id``, ``text``, ``speaker``, ``duration``, ...);
* ``meta``    UTF-8 JSON: the codec (``model_id``, ``fingerprint``, ``sample_rate``, ``frame_rate``,
  ``num_codebooks``, ``cardinality``) and the format version.

Shards are written whole (temporary file + rename), so a folder only ever holds complete shards: an
interrupted extraction resumes by skipping the ids already present. :class:`TokenShards` reads a folder,
checks that every shard comes from the same codec, and serves items by index or id.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import AudioCodecError

FORMAT = "audiocodec-tokens/1"
SHARD_GLOB = "shard-*.npz"
#: Meta keys that must agree between the shards of one folder.
CODEC_KEYS = ("model_id", "fingerprint", "sample_rate", "frame_rate", "num_codebooks", "cardinality")


class TokenShardError(AudioCodecError, ValueError):
    """A token shard that is unreadable, malformed, or from another codec than its folder."""


def shard_name(rank: int, index: int) -> str:
    return f"shard-r{int(rank):03d}-{int(index):06d}.npz"


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def write_shard(path: Union[str, os.PathLike], tokens: Sequence[Union[np.ndarray, torch.Tensor]],
                records: Sequence[Mapping], meta: Mapping) -> Path:
    """Write one shard atomically. ``tokens[i]``: ``[K, T_i]`` codes of ``records[i]``."""
    if len(tokens) != len(records) or not tokens:
        raise ValueError(f"a shard needs as many token arrays as records (got {len(tokens)} and {len(records)})")
    arrays = [t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in tokens]
    k = {a.shape[0] for a in arrays if a.ndim == 2}
    if len(k) != 1 or any(a.ndim != 2 for a in arrays):
        raise ValueError(f"every token array must be [K, T] with the same K, got shapes {[a.shape for a in arrays][:5]}")
    dtype = np.int16 if int(meta.get("cardinality", 0)) <= np.iinfo(np.int16).max else np.int32
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, tokens=np.concatenate(arrays, axis=1).astype(dtype),
                 lengths=np.array([a.shape[1] for a in arrays], dtype=np.int64),
                 records=_json_bytes([dict(r) for r in records]), meta=_json_bytes({**dict(meta), "format": FORMAT}))
    os.replace(tmp, path)
    return path


def read_shard(path: Union[str, os.PathLike]) -> tuple[dict, list[dict], list[torch.Tensor]]:
    """``(meta, records, tokens)`` of one shard; ``tokens[i]`` is a LongTensor ``[K, T_i]``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            tokens, lengths = z["tokens"], z["lengths"]
            records = json.loads(z["records"].tobytes().decode("utf-8"))
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise TokenShardError(f"cannot read token shard {path}: {e}") from e
    if meta.get("format") != FORMAT:
        raise TokenShardError(f"{path} is not an audiocodec token shard (format {meta.get('format')!r})")
    if tokens.ndim != 2 or len(records) != len(lengths) or int(lengths.sum()) != tokens.shape[1]:
        raise TokenShardError(f"{path} is malformed: tokens {tokens.shape}, {len(records)} records, "
                              f"lengths summing to {int(lengths.sum())}")
    pieces = np.split(tokens, np.cumsum(lengths)[:-1], axis=1)
    return meta, records, [torch.from_numpy(p.astype(np.int64)) for p in pieces]


def list_shards(folder: Union[str, os.PathLike]) -> list[Path]:
    return sorted(Path(folder).glob(SHARD_GLOB))


def shard_ids(folder: Union[str, os.PathLike]) -> set:
    """Ids of the items already in ``folder``'s shards (empty for a new folder)."""
    ids = set()
    for path in list_shards(folder):
        ids.update(r["id"] for r in read_shard(path)[1])
    return ids


def codec_meta(codec) -> dict:
    """The shard ``meta`` describing ``codec``."""
    return {"model_id": codec.name, "fingerprint": codec.fingerprint(), "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "num_codebooks": codec.num_codebooks, "cardinality": codec.cardinality}


class TokenShards(torch.utils.data.Dataset):
    """All items of a token folder, in shard order: ``ds[i]`` -> ``{"tokens": LongTensor [K, T], "id", ...}``
    (the item's manifest record plus its tokens). Everything is read into memory once (tokens are small:
    an hour of 75 Hz single-codebook tokens is 540 KB).

    Raises:
        TokenShardError: no shards, an unreadable shard, shards from different codecs, or duplicate ids.
    """

    def __init__(self, folder: Union[str, os.PathLike], ids: Optional[Iterable[str]] = None):
        self.folder = Path(folder)
        paths = list_shards(self.folder)
        if not paths:
            raise TokenShardError(f"no token shards ({SHARD_GLOB}) in {self.folder}")
        keep = set(ids) if ids is not None else None
        self.meta: dict = {}
        self.records: list[dict] = []
        self.tokens: list[torch.Tensor] = []
        self._index: dict = {}
        for path in paths:
            meta, records, tokens = read_shard(path)
            codec = {k: meta.get(k) for k in CODEC_KEYS}
            if not self.meta:
                self.meta = codec
            elif codec != self.meta:
                diff = {k: (self.meta[k], codec[k]) for k in CODEC_KEYS if self.meta[k] != codec[k]}
                raise TokenShardError(f"{path} comes from another codec than {paths[0].name}: {diff}")
            for rec, tok in zip(records, tokens):
                if keep is not None and rec["id"] not in keep:
                    continue
                if rec["id"] in self._index:
                    raise TokenShardError(f"id {rec['id']!r} appears twice in {self.folder}")
                self._index[rec["id"]] = len(self.records)
                self.records.append(rec)
                self.tokens.append(tok)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return {**self.records[i], "tokens": self.tokens[i]}

    def by_id(self, item_id: str) -> dict:
        if item_id not in self._index:
            raise KeyError(f"no item {item_id!r} in {self.folder}")
        return self[self._index[item_id]]

    @property
    def frames(self) -> list[int]:
        """Frames of each item (for length-bucketed batching)."""
        return [int(t.shape[-1]) for t in self.tokens]
