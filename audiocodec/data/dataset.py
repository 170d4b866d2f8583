"""Random fixed-length crops of the clips of a manifest, for codec training.

>>> ds = AudioCropDataset("data/train.jsonl", sample_rate=24000, crop_seconds=1.0, gain_db=(-6, 0), seed=0)
>>> loader = make_dataloader(ds, batch_size=16, num_workers=4, seed=0)
>>> for epoch in range(10):
...     loader.set_epoch(epoch)                      # new shuffle + new crops; exact on resume
...     for batch in loader:                         # batch["audio"]: [B, C, L], batch["length"]: [B]
...         ...
...     print(loader.skip_report())                  # files skipped, by reason, over all workers

Every crop is a function of ``(seed, epoch, index)`` only, so a resumed run (same seed, ``set_epoch(epoch,
start=samples_done)``) sees exactly the crops the interrupted run would have seen, whatever the number of
workers. A bad file (missing, empty, corrupt, truncated, NaN, wrong sample rate, silent when asked to reject
silence, channels that cannot be converted) never stops the run: its item is ``None``, :class:`CollateAudio`
drops it, and the reason is counted and passed along with the batch (``batch["skipped"]``), so the loader
totals the counts over all worker processes (:attr:`AudioLoader.skipped`).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from ..audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_sample_rate, convert_channels, resample
from ..errors import AudioError, ConfigError
from .manifest import read_manifest, validate_records

log = logging.getLogger("audiocodec.data")

#: Reasons an item can be skipped for.
SKIP_REASONS = ("missing", "empty", "corrupt", "truncated", "nan", "bad_rate", "rate_mismatch", "channels",
                "too_short", "silent", "error")

#: Skipped files logged one by one (per process) before only counting.
MAX_LOGGED_SKIPS = 20


class _Skip(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item: a function of ``(seed, epoch, index)`` only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF])


class _Strings:
    """Many strings in two numpy arrays (utf-8 bytes + offsets): no per-string Python objects, so DataLoader
    workers forked from the main process do not copy the manifest page by page as they touch refcounts."""

    def __init__(self, items: Sequence[str]):
        encoded = [s.encode("utf-8") for s in items]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")


class AudioCropDataset(Dataset):
    """Crops of ``crop_seconds`` from the clips of a manifest, at ``sample_rate`` with ``channels`` channels.

    Args:
        manifest: a jsonl manifest path, or a list of records (``path``, ``duration``, ``sample_rate``).
        sample_rate: output rate; other rates are resampled on the fly (torchaudio sinc).
        crop_seconds: crop length; ``None`` returns whole clips (collate then pads to the longest).
        channels: output channels; multi-channel files are mixed down to mono, mono is repeated.
        gain_db: ``(min, max)``: a gain drawn uniformly in this range is applied to each crop; ``None``: no gain.
        random_crop: a random offset in each clip; ``False``: crops start at 0 (for validation).
        pad: clips shorter than the crop are zero-padded (``length`` says how much is real); ``False``: skipped.
        min_seconds: clips shorter than this are skipped as ``too_short``.
        reject_silence: skip crops whose RMS is below ``silence_db`` dBFS (after ``silence_retries`` other
            offsets were tried) as ``silent``.
        check_rate: a file whose rate differs from the manifest's ``sample_rate`` is skipped as
            ``rate_mismatch`` (the manifest is stale).
        truncation_tolerance: a file shorter than the manifest's duration by more than this many seconds
            (plus 1 %) is skipped as ``truncated``.
        seed: with the epoch and the index, fixes the crop offset and the gain.

    An item is a dict ``{"audio": [C, L] float32, "length": int, "index": int, "id": str, "gain_db": float,
    "offset": float (s)}``, or ``None`` for a bad file.
    """

    def __init__(self, manifest: Union[str, Path, Sequence[Mapping]], sample_rate: int,
                 crop_seconds: Optional[float] = 1.0, channels: int = 1,
                 gain_db: Optional[tuple[float, float]] = None, random_crop: bool = True, pad: bool = True,
                 min_seconds: float = 0.0, reject_silence: bool = False, silence_db: float = -60.0,
                 silence_retries: int = 2, check_rate: bool = True, truncation_tolerance: float = 0.1,
                 seed: int = 0):
        if isinstance(manifest, (str, Path)):
            records = read_manifest(manifest)
            self.source = str(manifest)
        else:
            records = validate_records(manifest, "records")
            self.source = "records"
        self._paths = _Strings([r["path"] for r in records])
        self._ids = _Strings([str(r.get("id", Path(r["path"]).stem)) for r in records])
        self._durations = np.array([r["duration"] for r in records], dtype=np.float64)
        self._rates = np.array([r["sample_rate"] for r in records], dtype=np.int64)
        self.sample_rate = check_sample_rate(sample_rate)
        if crop_seconds is not None and not crop_seconds > 0:
            raise ConfigError(f"crop_seconds must be > 0 (or None for whole clips), got {crop_seconds!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"channels must be a positive integer, got {channels!r}")
        if gain_db is not None:
            if len(gain_db) != 2 or not gain_db[0] <= gain_db[1]:
                raise ConfigError(f"gain_db must be (min, max) with min <= max, got {gain_db!r}")
            gain_db = (float(gain_db[0]), float(gain_db[1]))
        self.crop_seconds = crop_seconds
        self.crop_length = None if crop_seconds is None else int(round(crop_seconds * self.sample_rate))
        self.channels = channels
        self.gain_db = gain_db
        self.random_crop = random_crop
        self.pad = pad
        self.min_seconds = float(min_seconds)
        self.reject_silence = reject_silence
        self.silence_db = float(silence_db)
        self.silence_retries = int(silence_retries)
        self.check_rate = check_rate
        self.truncation_tolerance = float(truncation_tolerance)
        self.seed = int(seed)
        self.epoch = 0
        self.skipped: Counter = Counter()     # all skips seen by this process
        self._pending: Counter = Counter()    # skips not yet handed to a batch
        self._bad: dict[int, str] = {}        # index -> reason, for files that can never be read
        self._logged = 0

    def __len__(self) -> int:
        return len(self._paths)

    def record(self, index: int) -> dict:
        """The manifest fields the dataset keeps for ``index``: id, path, duration, sample_rate."""
        return {"id": self._ids[index], "path": self._paths[index], "duration": float(self._durations[index]),
                "sample_rate": int(self._rates[index])}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pop_skipped(self) -> Counter:
        """The skips since the last call (used by :class:`CollateAudio` to pass them along with a batch)."""
        out, self._pending = self._pending, Counter()
        return out

    def __getitem__(self, key) -> Optional[dict]:
        """``ds[index]`` (at :attr:`epoch`) or ``ds[(index, epoch)]`` (as yielded by :class:`EpochSampler`)."""
        index, epoch = (key if isinstance(key, tuple) else (key, self.epoch))
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        index %= len(self)
        rec = self.record(index)
        try:
            if index in self._bad:
                raise _Skip(self._bad[index], "known bad file")
            return self._load(index, rec, item_rng(self.seed, epoch, index))
        except _Skip as e:
            self._record_skip(index, rec, e.reason, str(e))
        except Exception as e:  # never let one file stop the run
            self._record_skip(index, rec, "error", f"{type(e).__name__}: {e}")
        return None

    def _record_skip(self, index: int, rec: Mapping, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self._pending[reason] += 1
        if index in self._bad:          # already logged when first seen
            return
        if reason not in ("silent", "error"):   # a silent crop or an odd error may not recur
            self._bad[index] = reason
        if self._logged < MAX_LOGGED_SKIPS:
            log.warning("skipped %s (%s): %s", rec.get("path"), reason, message)
        elif self._logged == MAX_LOGGED_SKIPS:
            log.warning("more files skipped; only counted from now on (see the loader's skip report)")
        self._logged += 1

    # -- reading ---------------------------------------------------------------------------------------

    def _load(self, index: int, rec: Mapping, rng: np.random.Generator) -> dict:
        path = Path(rec["path"])
        if not path.is_file():
            raise _Skip("missing", f"audio file not found: {path}")
        if path.stat().st_size == 0:
            raise _Skip("empty", f"audio file is empty (0 bytes): {path}")
        try:
            f = sf.SoundFile(str(path))
        except Exception as e:
            raise _Skip("corrupt", f"cannot open: {e}") from None
        with f:
            sr, frames, file_channels = f.samplerate, f.frames, f.channels
            if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
                raise _Skip("bad_rate", f"impossible sample rate {sr} Hz")
            if self.check_rate and int(rec["sample_rate"]) != sr:
                raise _Skip("rate_mismatch", f"file is at {sr} Hz but the manifest says {rec['sample_rate']} Hz")
            if frames <= 0:
                raise _Skip("empty", "no samples")
            file_seconds = frames / sr
            if file_seconds < rec["duration"] * 0.99 - self.truncation_tolerance:
                raise _Skip("truncated", f"file holds {file_seconds:.3f} s but the manifest says "
                                         f"{rec['duration']:.3f} s")
            if file_channels != self.channels and self.channels != 1 and file_channels != 1:
                raise _Skip("channels", f"cannot convert {file_channels} channels to {self.channels}")
            if file_seconds < self.min_seconds:
                raise _Skip("too_short", f"{file_seconds:.3f} s < min_seconds {self.min_seconds}")
            if self.crop_length is None:
                native = frames
            else:
                native = int(math.ceil(self.crop_length * sr / self.sample_rate))
                if frames < native and not self.pad:
                    raise _Skip("too_short", f"{file_seconds:.3f} s < crop {self.crop_seconds} s")
            tries = 1 + (self.silence_retries if self.reject_silence else 0)
            for attempt in range(tries):
                start = 0
                if self.random_crop and frames > native:
                    start = int(rng.integers(0, frames - native + 1))
                want = min(native, frames - start)
                try:
                    f.seek(start)
                    data = f.read(frames=want, dtype="float32", always_2d=True)
                except Exception as e:
                    raise _Skip("corrupt", f"cannot decode: {e}") from None
                if data.shape[0] == 0:
                    raise _Skip("empty", "no samples could be read")
                if data.shape[0] < want:
                    raise _Skip("truncated", f"read {data.shape[0]} of {want} frames")
                if not np.isfinite(data).all():
                    raise _Skip("nan", "NaN or infinite samples")
                if not self.reject_silence:
                    break
                rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
                if 20 * math.log10(max(rms, 1e-12)) >= self.silence_db:
                    break
                if attempt == tries - 1 or not (self.random_crop and frames > native):
                    raise _Skip("silent", f"RMS {20 * math.log10(max(rms, 1e-12)):.1f} dBFS < {self.silence_db}")
        wav = torch.from_numpy(np.ascontiguousarray(data.T))
        try:
            wav = convert_channels(wav, self.channels)
        except AudioError as e:
            raise _Skip("channels", str(e)) from None
        if sr != self.sample_rate:
            wav = resample(wav, sr, self.sample_rate)
        gain = 0.0
        if self.gain_db is not None:
            gain = float(rng.uniform(self.gain_db[0], self.gain_db[1]))
            wav = wav * (10.0 ** (gain / 20.0))
        if self.crop_length is not None:
            length = min(wav.shape[-1], self.crop_length)
            if wav.shape[-1] > self.crop_length:
                wav = wav[..., :self.crop_length]
            elif wav.shape[-1] < self.crop_length:
                wav = torch.nn.functional.pad(wav, (0, self.crop_length - wav.shape[-1]))
        else:
            length = wav.shape[-1]
        return {"audio": wav.contiguous().float(), "length": int(length), "index": index,
                "id": rec["id"], "gain_db": gain, "offset": start / sr}


class CollateAudio:
    """Batches items of :class:`AudioCropDataset`, dropping ``None`` (bad files).

    Returns ``{"audio": [B, C, L], "length": LongTensor [B], "index": LongTensor [B], "id": [str],
    "gain_db": FloatTensor [B], "offset": float64 tensor [B] (where each crop starts in its clip, seconds),
    "skipped": {reason: count}}``; clips of different lengths are zero-padded to the longest. ``id`` and
    ``offset`` locate each crop, e.g. to read its frames of precomputed teacher features
    (:meth:`audiocodec.semantic.FeatureCache.batch`). ``B`` may be 0 when every item was bad. ``skipped`` holds
    the skips of this batch's worker since its previous batch, so summing it over batches totals the skips of
    all workers.
    """

    def __init__(self, dataset: Optional[AudioCropDataset] = None):
        self.dataset = dataset

    def __call__(self, items: Sequence[Optional[dict]]) -> dict:
        info = get_worker_info()
        ds = info.dataset if info is not None else self.dataset
        skipped = dict(ds.pop_skipped()) if isinstance(ds, AudioCropDataset) else {}
        good = [it for it in items if it is not None]
        if not good:
            c = ds.channels if isinstance(ds, AudioCropDataset) else 1
            n = (ds.crop_length or 0) if isinstance(ds, AudioCropDataset) else 0
            return {"audio": torch.zeros(0, c, n), "length": torch.zeros(0, dtype=torch.long),
                    "index": torch.zeros(0, dtype=torch.long), "id": [], "gain_db": torch.zeros(0),
                    "offset": torch.zeros(0, dtype=torch.float64), "skipped": skipped}
        longest = max(it["audio"].shape[-1] for it in good)
        audio = torch.stack([torch.nn.functional.pad(it["audio"], (0, longest - it["audio"].shape[-1]))
                             for it in good])
        return {"audio": audio,
                "length": torch.tensor([it["length"] for it in good], dtype=torch.long),
                "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
                "id": [it["id"] for it in good],
                "gain_db": torch.tensor([it["gain_db"] for it in good], dtype=torch.float32),
                "offset": torch.tensor([float(it.get("offset", 0.0)) for it in good], dtype=torch.float64),
                "skipped": skipped}


def collate_audio(items: Sequence[Optional[dict]]) -> dict:
    """:class:`CollateAudio` without a bound dataset (skip counts come only from worker processes)."""
    return CollateAudio()(items)


class EpochSampler(DistributedSampler):
    """A :class:`~torch.utils.data.DistributedSampler` (one shard per rank; a single shard when not
    distributed) that yields ``(index, epoch)`` so each item knows its epoch even in persistent workers, and
    that can start part-way through an epoch for an exact resume.

    The order is a function of ``(seed, epoch)`` only.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
                rank = torch.distributed.get_rank() if rank is None else rank
            else:
                num_replicas, rank = num_replicas or 1, rank or 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use ``epoch``'s order and skip its first ``start`` samples of this rank (already consumed)."""
        super().set_epoch(int(epoch))
        if start < 0:
            raise ConfigError(f"start must be >= 0, got {start}")
        self.start = int(start)

    def __iter__(self):
        for i, idx in enumerate(super().__iter__()):
            if i >= self.start:
                yield (idx, self.epoch)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class AudioLoader(DataLoader):
    """A DataLoader that totals the skipped files reported with each batch (:attr:`skipped`), drops batches
    left empty by bad files, and sets the epoch of its sampler and dataset together (:meth:`set_epoch`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped: Counter = Counter()

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Start ``epoch`` (new order, new crops); ``start``: samples of this rank already consumed."""
        if isinstance(self.sampler, EpochSampler):
            self.sampler.set_epoch(epoch, start)
        elif hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, dict):
                self.skipped.update(batch.pop("skipped", {}) or {})
                if batch["audio"].shape[0] == 0:
                    continue
            yield batch

    def total_skipped(self) -> Counter:
        """:attr:`skipped` summed over all ranks when torch.distributed is initialized (collective call)."""
        return gather_skipped(self.skipped)

    def skip_report(self) -> str:
        """One line: how many items were skipped, by reason (this rank)."""
        return format_skipped(self.skipped)


def gather_skipped(counts: Mapping[str, int]) -> Counter:
    """Sum skip counts over all ranks (every rank must call it); the counts themselves when not distributed."""
    total = Counter(counts)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, dict(counts))
        total = Counter()
        for p in parts:
            total.update(p or {})
    return total


def format_skipped(counts: Mapping[str, int]) -> str:
    n = sum(counts.values())
    if not n:
        return "no files skipped"
    return f"{n} item(s) skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def make_dataloader(dataset: Dataset, batch_size: int, num_workers: int = 0, distributed: Optional[bool] = None,
                    seed: int = 0, shuffle: bool = True, drop_last: bool = False, pin_memory: bool = False,
                    persistent_workers: bool = False, prefetch_factor: Optional[int] = None,
                    num_replicas: Optional[int] = None, rank: Optional[int] = None) -> AudioLoader:
    """A loader over ``dataset`` with an :class:`EpochSampler` (a DistributedSampler; sharded by rank when
    ``distributed``, which defaults to whether torch.distributed is initialized).

    Call ``loader.set_epoch(epoch)`` before each epoch (``set_epoch(epoch, start=n)`` to resume after ``n``
    samples of this rank). ``drop_last`` drops the last incomplete batch (and, distributed, the samples
    that do not divide evenly between ranks).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed:
        num_replicas, rank = 1, 0
    sampler = EpochSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                           drop_last=drop_last)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=_worker_init, persistent_workers=persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    collate = CollateAudio(dataset if isinstance(dataset, AudioCropDataset) else None)
    return AudioLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                       collate_fn=collate, drop_last=drop_last, pin_memory=pin_memory, **kwargs)
