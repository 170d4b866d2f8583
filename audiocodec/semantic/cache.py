"""Teacher features computed once, stored in shards, read back by item id (no teacher in the training loop).

The stage::

    teacher = SpeechTeacher.from_pretrained("models/hubert-base-ls960", layer="avg", sample_rate=16000)
    precompute_features("data/train.jsonl", teacher, "feats/hubert_avg", shard_size=512)

writes ``feats/hubert_avg/meta.json`` (the teacher's description, feature size, frame rate, dtype) and
``shard-r<rank>-<n>.safetensors`` files (named like the token shards of :mod:`audiocodec.data.tokens`;
safetensors so that a crop reads only its frames), each holding ``{item id: features [T, D]}`` for up
to ``shard_size`` manifest items. A shard is written to a temporary file and renamed, so a shard on disk
is always complete: an interrupted stage, run again with the same arguments, skips the items already
in shards and continues. Items whose audio cannot be read are listed in ``failed.jsonl`` (retried on
the next run). With ``rank`` / ``world_size`` each process takes every ``world_size``-th item.

The reader::

    cache = FeatureCache("feats/hubert_avg")
    cache["spk1_utt3"]                             # [T, D] float32
    cache.crop("spk1_utt3", offset=1.25, num_frames=150)  # the frames of a random training crop
    cache.batch(batch["id"], batch["offset"], num_frames=150)  # TeacherOutput [B, 150, D] + lengths

opens shards lazily (memory-mapped, a few kept open) and reads only the frames asked for. Item ids are
the manifest's ``id``, else the file name without extension, as :class:`~audiocodec.data.AudioCropDataset`
names its items.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from safetensors import safe_open

from ..errors import AudioCodecError, ConfigError
from ..weights import write_safetensors
from .teachers import TeacherOutput

log = logging.getLogger("audiocodec.semantic")

FORMAT = "audiocodec-features"
META_NAME = "meta.json"
FAILED_NAME = "failed.jsonl"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def item_id(record: Mapping) -> str:
    """The id of a manifest record: its ``id``, else its file name without extension."""
    return str(record.get("id", Path(record["path"]).stem))


def _describe(extractor) -> dict:
    """What the features are: kept in meta.json and checked on resume."""
    out: dict = {"teacher": type(extractor).__name__}
    for key in ("dim", "frame_rate", "layer", "sample_rate", "model_sample_rate", "normalize"):
        value = getattr(extractor, key, None)
        if value is not None:
            out[key] = list(value) if isinstance(value, (list, tuple)) else value
    model = getattr(extractor, "model", None)
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if name:  # the folder name (e.g. hubert-base-ls960), so that a moved model folder still matches
        out["model"] = Path(str(name)).name
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _shard_files(root: Path) -> list:
    return sorted(root.glob("shard-*.safetensors"))


def _shard_keys(path: Path) -> list:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def precompute_features(manifest: Union[str, os.PathLike, Sequence[Mapping]], extractor, out_dir: Union[str, os.PathLike],
                        shard_size: int = 256, dtype: str = "float16", rank: int = 0, world_size: int = 1,
                        max_items: Optional[int] = None, info: Optional[Mapping] = None,
                        progress: bool = False) -> "FeatureCache":
    """Compute ``extractor``'s features for every item of ``manifest`` into sharded files in ``out_dir``.

    Args:
        manifest: a jsonl manifest path or a list of records (``path``, ``duration``, ``sample_rate``,
            and ``text`` for a language teacher).
        extractor: a :class:`~audiocodec.semantic.teachers.SpeechTeacher` or
            :class:`~audiocodec.semantic.teachers.LanguageTeacher` (anything with ``extract(records) ->
            [T_i, D] tensors``, ``dim`` and ``frame_rate``).
        out_dir: the cache folder (created); a folder made for different features is refused.
        shard_size: items per shard file.
        dtype: storage precision (``float16`` halves the disk; the reader returns float32).
        rank, world_size: this process's share of the items (``rank::world_size``).
        max_items: stop after this many new items (a bounded run; the next run continues).
        info: extra description stored in ``meta.json`` (e.g. the teacher's name); checked on resume.

    Returns the :class:`FeatureCache` of ``out_dir``.
    """
    from ..data.manifest import read_manifest, validate_records
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ConfigError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    if not callable(getattr(extractor, "extract", None)):
        raise ConfigError(f"{type(extractor).__name__} has no extract(records) method")
    records = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else validate_records(manifest, "records")
    seen: dict = {}
    for i, rec in enumerate(records):
        rid = item_id(rec)
        if rid in seen:
            raise ConfigError(f"two manifest items share the id {rid!r} (entries {seen[rid] + 1} and {i + 1}): "
                              "give them distinct 'id' fields")
        seen[rid] = i
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": 1, "dtype": dtype, **_describe(extractor), **dict(info or {})}
    meta_path = root / META_NAME
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(meta)).items() if old.get(k) != v}
        if diff:
            raise ConfigError(f"{root} holds other features ({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                              "use another folder, or delete it to start over")
    else:
        _write_json_atomic(meta_path, meta)

    shards = _shard_files(root)
    done = {k for s in shards for k in _shard_keys(s)}
    mine = [r for r in records[rank::world_size] if item_id(r) not in done]
    prefix = f"shard-r{rank:03d}-"
    numbers = [int(p.stem[len(prefix):]) for p in shards if p.stem.startswith(prefix) and p.stem[len(prefix):].isdigit()]
    next_shard = max(numbers, default=-1) + 1
    if max_items is not None:
        mine = mine[: max(0, int(max_items))]
    failed = []
    iterator: Iterable = range(0, len(mine), shard_size)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, total=math.ceil(len(mine) / shard_size), desc=f"features -> {root.name}", unit="shard")
    for start in iterator:
        tensors = {}
        for rec in mine[start: start + shard_size]:
            rid = item_id(rec)
            try:
                feats = extractor.extract([rec])[0]
            except (AudioCodecError, OSError) as e:  # a bad file must not stop a long run
                failed.append({"id": rid, "path": rec.get("path"), "error": f"{type(e).__name__}: {e}"})
                log.warning("features of %s failed: %s", rid, e)
                continue
            if feats.dim() != 2 or feats.shape[0] == 0:
                raise ValueError(f"{type(extractor).__name__}.extract gave {tuple(feats.shape)} for {rid!r}; "
                                 "expected [T, D] with T > 0")
            tensors[rid] = feats.detach().to("cpu", _DTYPES[dtype]).contiguous()
        if not tensors:
            continue
        path = root / f"{prefix}{next_shard:06d}.safetensors"
        write_safetensors(tensors, path, {"format": FORMAT})
        next_shard += 1
    failed_path = root / (FAILED_NAME if world_size == 1 else f"failed-{rank:03d}.jsonl")
    if failed:
        failed_path.write_text("".join(json.dumps(f) + "\n" for f in failed))
    elif failed_path.exists():
        failed_path.unlink()
    return FeatureCache(root)


class FeatureCache:
    """Read features written by :func:`precompute_features`, by item id.

    Args:
        root: the cache folder.
        max_open: shard files kept open at once (memory-mapped).

    Attributes: ``meta`` (``meta.json``), ``dim``, ``frame_rate``. Safe to pass to data-loader workers
    (open files are not pickled).
    """

    def __init__(self, root: Union[str, os.PathLike], max_open: int = 32):
        self.root = Path(root)
        meta_path = self.root / META_NAME
        if not meta_path.is_file():
            raise ConfigError(f"{self.root} is not a feature cache (no {META_NAME}); make one with precompute_features")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ConfigError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.dim = int(self.meta["dim"]) if "dim" in self.meta else None
        self.frame_rate = float(self.meta["frame_rate"]) if "frame_rate" in self.meta else None
        self.max_open = int(max_open)
        self._index: dict = {}
        for shard in _shard_files(self.root):
            for key in _shard_keys(shard):
                self._index.setdefault(key, shard.name)
        self._open: OrderedDict = OrderedDict()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._index

    def ids(self) -> list:
        return list(self._index)

    def _handle(self, name: str):
        f = self._open.get(name)
        if f is None:
            f = safe_open(str(self.root / name), framework="pt")
            self._open[name] = f
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return f

    def _lookup(self, item_id: str) -> str:
        try:
            return self._index[item_id]
        except KeyError:
            raise KeyError(f"no features for item {item_id!r} in {self.root} ({len(self)} items); "
                           "was it in the manifest given to precompute_features?") from None

    def num_frames(self, item_id: str) -> int:
        """Frames stored for ``item_id``."""
        return int(self._handle(self._lookup(item_id)).get_slice(item_id).get_shape()[0])

    def get(self, item_id: str, start: int = 0, num_frames: Optional[int] = None) -> torch.Tensor:
        """Frames ``start .. start + num_frames`` of ``item_id`` as float32 ``[n, D]`` (fewer at the end)."""
        f = self._handle(self._lookup(item_id))
        sl = f.get_slice(item_id)
        total = int(sl.get_shape()[0])
        start = max(0, int(start))
        stop = total if num_frames is None else min(total, start + max(0, int(num_frames)))
        return sl[start:stop].float()

    def __getitem__(self, item_id: str) -> torch.Tensor:
        return self.get(item_id)

    def crop(self, item_id: str, offset: float, num_frames: int) -> torch.Tensor:
        """The frames of a crop starting ``offset`` seconds into the clip, ``[<= num_frames, D]``.

        As the official SpeechTokenizer dataset: the first frame is ``floor(offset * frame_rate)``, moved
        back so that ``num_frames`` fit when the clip has them (the teacher's last frame may be short).
        """
        if self.frame_rate is None:
            raise ConfigError(f"{self.root}: meta.json has no frame_rate; use get(item_id, start, num_frames)")
        total = self.num_frames(item_id)
        start = min(int(math.floor(float(offset) * self.frame_rate + 1e-6)), max(0, total - int(num_frames)))
        return self.get(item_id, start, num_frames)

    def batch(self, item_ids: Sequence[str], offsets: Optional[Union[Sequence[float], torch.Tensor]] = None,
              num_frames: Optional[int] = None) -> TeacherOutput:
        """Features of several items (whole, or crops at ``offsets`` seconds) zero-padded to ``[B, T, D]``,
        with each item's frame count in ``lengths``; ``T = num_frames`` when given."""
        if offsets is not None and num_frames is None:
            raise ConfigError("batch(): offsets need num_frames (the crop length in frames)")
        rows = []
        for i, rid in enumerate(item_ids):
            if offsets is None:
                rows.append(self.get(rid, 0, num_frames))
            else:
                rows.append(self.crop(rid, float(offsets[i]), num_frames))
        if not rows:
            raise ConfigError("batch(): no item ids")
        t = num_frames or max(r.shape[0] for r in rows)
        out = torch.zeros(len(rows), t, rows[0].shape[1])
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return TeacherOutput(out, torch.tensor([r.shape[0] for r in rows], dtype=torch.long))
