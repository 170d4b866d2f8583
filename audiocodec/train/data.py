"""Deterministic, resumable, rank-sharded batches.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, padded to a multiple of the
world size and dealt out ``rank::world_size`` (as ``DistributedSampler``). A resumed run starts the
sampler at the batch where the checkpoint was taken, so already-seen batches are skipped without being
loaded, and the data order is the one of an uninterrupted run.

Randomness inside a dataset (random crops, gains) stays reproducible across resumes and worker counts
when it is drawn from :func:`item_rng` (seeded by the item index and the epoch) rather than from
global generators; datasets with a ``set_epoch(epoch)`` method are told the epoch before each one.
"""
from __future__ import annotations

import collections
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler

_MIX = 0x9E3779B1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (order matters)."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


def item_rng(index: int, epoch: int = 0, seed: int = 0) -> np.random.Generator:
    """A numpy generator for the random choices of dataset item ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


class ResumableBatchSampler(Sampler[list]):
    """Batches of dataset indices for one rank, resumable at any batch of an epoch.

    Args:
        num_samples: dataset length.
        batch_size: items per batch on this rank.
        rank, world_size: this process's share.
        shuffle: a new permutation each epoch (from ``seed`` and the epoch), else the dataset order.
        drop_last: drop a last short batch (keeps shapes and per-step work constant).
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True):
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    @property
    def per_rank(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __len__(self) -> int:
        """Batches per epoch (independent of ``start_batch``)."""
        n = self.per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        total = self.per_rank * self.world_size
        if total > self.num_samples:  # pad by repeating from the start so every rank has as many items
            order = torch.cat([order, order.repeat(-(-total // self.num_samples))[: total - self.num_samples]])
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list]:
        order = self.indices()
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class BucketBatchSampler(Sampler[list]):
    """Length-bucketed dynamic batches for one rank, resumable at any batch of an epoch.

    Items of similar length are batched together so that padding stays small, and each batch holds as
    many items as fit in ``max_tokens`` padded tokens (``len(batch) * longest <= max_tokens``, at most
    ``max_items``). Epoch ``e``: shuffle from ``(seed, e)``, sort chunks of ``bucket_size`` items by length,
    cut them into batches, shuffle the batches, then deal them round-robin to the ranks (every rank gets
    the same number; the few left over are dropped this epoch). Same interface as
    :class:`ResumableBatchSampler` (``set_epoch(epoch, start_batch)``, ``len``, iteration).

    Args:
        lengths: tokens (or frames, or samples) of each item.
        max_tokens: padded tokens per batch; an item longer than this gets a batch of its own.
        bucket_size: items sorted together (larger: less padding, less randomness).
    """

    def __init__(self, lengths, max_tokens: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, max_items: Optional[int] = None, bucket_size: int = 1000):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        if self.lengths.numel() == 0:
            raise ValueError("the dataset is empty")
        self.max_tokens, self.max_items, self.bucket_size = int(max_tokens), max_items, int(bucket_size)
        self.rank, self.world_size, self.shuffle, self.seed = int(rank), int(world_size), shuffle, int(seed)
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple = (None, [])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _all_batches(self) -> list[list[int]]:
        if self._cache[0] == self.epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 11))
        order = torch.randperm(len(self.lengths), generator=g) if self.shuffle else torch.arange(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            chunk = order[start:start + self.bucket_size]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)].tolist()
            current, longest = [], 0
            for i in chunk:
                n = int(self.lengths[i])
                full = self.max_items is not None and len(current) >= self.max_items
                if current and (full or max(longest, n) * (len(current) + 1) > self.max_tokens):
                    batches.append(current)
                    current, longest = [], 0
                current.append(i)
                longest = max(longest, n)
            if current:
                batches.append(current)
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[j] for j in perm]
        usable = len(batches) - len(batches) % self.world_size
        self._cache = (self.epoch, batches[:usable])
        return self._cache[1]

    def __len__(self) -> int:
        """Batches of this rank in the current epoch."""
        return len(self._all_batches()) // self.world_size

    def __iter__(self) -> Iterator[list]:
        mine = self._all_batches()[self.rank::self.world_size]
        yield from mine[self.start_batch:]


class EpochStream(Sampler[list]):
    """The batches of a :class:`ResumableBatchSampler`, epoch after epoch, for *one* DataLoader.

    A DataLoader per epoch restarts its worker processes at every epoch (seconds of a stalled GPU on a
    small corpus, where an epoch is a few steps, and more often the more ranks share it). This sampler
    runs through all epochs in one iterator instead, so workers start once and keep prefetching across
    epoch boundaries.

    Each batch's position is queued in :attr:`positions` as ``(epoch, batches of that epoch done, last of
    the epoch)`` when the DataLoader draws it; batches arrive in order, so the consumer pops one position per batch it
    receives. With ``epoch_keys`` the batches hold ``(index, epoch)`` pairs, for datasets whose items
    depend on the epoch (``AudioCropDataset``'s crops) and that run in worker processes which never see a
    ``set_epoch`` call.
    """

    def __init__(self, sampler: ResumableBatchSampler, epoch: int = 0, start_batch: int = 0,
                 max_epochs: Optional[int] = None, epoch_keys: bool = False):
        self.sampler, self.epoch, self.start_batch = sampler, int(epoch), int(start_batch)
        self.max_epochs, self.epoch_keys = max_epochs, epoch_keys
        self.positions: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[list]:
        epoch, start = self.epoch, self.start_batch
        while self.max_epochs is None or epoch < self.max_epochs:
            self.sampler.set_epoch(epoch, start)
            n = len(self.sampler)
            for b, batch in enumerate(self.sampler, start=start + 1):
                self.positions.append((epoch, b, b == n))
                yield [(i, epoch) for i in batch] if self.epoch_keys else batch
            epoch, start = epoch + 1, 0


def move_to(batch, device: torch.device, non_blocking: bool = True):
    """``batch`` (tensors in nested dicts / lists / tuples) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


def samples_position(batch_in_epoch: int, batch_size: int, world_size: int) -> int:
    return batch_in_epoch * batch_size * world_size


def batch_position(samples: int, batch_size: int, world_size: int) -> tuple[int, bool]:
    """``(batch index, exact)`` for a position saved as a count of samples seen in the epoch."""
    per_step = batch_size * world_size
    return samples // per_step, samples % per_step == 0


def worker_seed(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The DataLoader's generator for ``epoch`` on ``rank``: worker seeds come from it, not from the
    global RNG, which the data pipeline therefore never advances."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, rank, 7))
