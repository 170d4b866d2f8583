"""Preallocated key/value caches for incremental decoding of :class:`~audiocodec.lm.transformer.TransformerLM`.

Layout. Every layer owns two buffers ``[B, H_kv, max_len, Dh]`` allocated once; a forward call writes
its new keys and values into the next free *slots* (``index_copy_``), so nothing is reallocated per
step and the shapes stay fixed, which is what CUDA graphs need. Rows share slots: a left-padded batch
stays aligned, slot ``s`` holds the ``s``-th token of every row's padded sequence. What differs per row
lives beside the buffers:

- ``key_valid [B, max_len]``: which slots hold a real token (padding and unwritten slots are never
  attended to);
- ``next_position [B]``: the rotary position the next real token of each row gets, so a row with a
  short, left-padded prompt continues at its own position, not at the slot index.

With ``static_shapes`` the next free slot is also kept on the device (``slot``) and every update is an
in-place device operation, so a decoding step can be captured once in a CUDA graph and replayed
(:class:`~audiocodec.lm.generate.DecodeStep`).

Cross-attention keys and values of the condition memory are computed once, on the first call, and
kept in :attr:`KVCache.memory` (one ``(keys, values)`` pair ``[B, H_kv, M, Dh]`` per layer).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import AudioCodecError


class CacheOverflowError(AudioCodecError, RuntimeError):
    """More tokens were written to a :class:`KVCache` than its ``max_len`` holds."""


class LayerKVCache:
    """Self-attention keys and values of one layer: ``keys``, ``values`` ``[B, H_kv, max_len, Dh]``."""

    def __init__(self, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int,
                 device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32):
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)

    def write(self, keys: torch.Tensor, values: torch.Tensor,
              slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``, ``values`` ``[B, H_kv, T, Dh]`` at ``slots [T]`` (in place).

        Returns the whole buffers ``[B, H_kv, max_len, Dh]``; the caller slices what it attends to.
        """
        if keys.shape != values.shape or keys.shape[:2] != self.keys.shape[:2] or keys.shape[3] != self.keys.shape[3]:
            raise ValueError(f"cache expects keys and values [B={self.keys.shape[0]}, H_kv={self.keys.shape[1]}, "
                             f"T, Dh={self.keys.shape[3]}], got {tuple(keys.shape)} and {tuple(values.shape)}")
        self.keys.index_copy_(2, slots, keys.to(self.keys.dtype))
        self.values.index_copy_(2, slots, values.to(self.values.dtype))
        return self.keys, self.values

    def select_rows(self, rows: torch.Tensor):
        """Keep (and reorder to) batch rows ``rows [B']``."""
        self.keys = self.keys.index_select(0, rows)
        self.values = self.values.index_select(0, rows)

    def reset(self):
        self.keys.zero_()
        self.values.zero_()


class KVCache:
    """The decoding state of a whole model: one :class:`LayerKVCache` per layer, the per-row slot
    validity and positions, and the cross-attention memory keys/values.

    ``length`` (a Python int) counts the slots written so far; writing past ``max_len`` raises
    :class:`CacheOverflowError` before anything is changed. With ``static_shapes`` attention always
    spans all ``max_len`` slots (unwritten ones masked), so every decode step has the same shapes;
    otherwise it spans the ``length`` slots written so far, which is cheaper in eager mode.
    """

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int, max_len: int,
                 device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
                 static_shapes: bool = False):
        for name, value in (("num_layers", num_layers), ("batch_size", batch_size),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim), ("max_len", max_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}")
        self.max_len, self.num_kv_heads, self.head_dim = max_len, num_kv_heads, head_dim
        self.static_shapes = static_shapes
        self.layers = [LayerKVCache(batch_size, num_kv_heads, max_len, head_dim, device, dtype)
                       for _ in range(num_layers)]
        self.key_valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.length = 0
        self.slot = torch.zeros((), dtype=torch.long, device=device)  # == length, on the device (static_shapes)
        self.memory: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None
        self.memory_mask: Optional[torch.Tensor] = None
        self._cross_mask = None   # the model's cross-attention mask of memory_mask (TransformerLM._cross_mask)

    @property
    def batch_size(self) -> int:
        return self.key_valid.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def attend_len(self) -> int:
        """Number of slots attention spans: ``max_len`` with ``static_shapes``, else ``length``."""
        return self.max_len if self.static_shapes else self.length

    def append(self, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve the next ``T`` slots for tokens whose ``valid [B, T]`` marks the real (non-pad) ones.

        Returns ``(slots [T], positions [B, T])``: the slot indices to write and the rotary position of
        each token (``-1`` for padding). Raises :class:`CacheOverflowError` when ``max_len`` would be
        exceeded.
        """
        if valid.dim() != 2 or valid.shape[0] != self.batch_size or valid.dtype != torch.bool:
            raise ValueError(f"KVCache.append: expected a bool mask [B={self.batch_size}, T], "
                             f"got {valid.dtype} {tuple(valid.shape)}")
        num_tokens = valid.shape[1]
        start = self._reserve(num_tokens)
        counts = valid.long().cumsum(-1) if num_tokens > 1 else valid.long()   # a decoding step: no scan kernel
        positions = torch.where(valid, self.next_position[:, None] + counts - 1, -1)
        if self.static_shapes:   # device-side slot: no Python number reaches the kernels (CUDA graphs)
            slots = self.slot + torch.arange(num_tokens, device=self.key_valid.device)
            self.key_valid.index_copy_(1, slots, valid)
            self.slot += num_tokens
        else:
            slots = torch.arange(start, start + num_tokens, device=self.key_valid.device)
            self.key_valid[:, start:start + num_tokens] = valid
        self.next_position += counts[:, -1]
        return slots, positions

    @torch.compiler.disable
    def _reserve(self, num_tokens: int) -> int:
        """The host side of :meth:`append`: check that ``num_tokens`` more slots fit, count them in ``length``
        and return the first one. Never compiled: a Python number that changes every step would make
        ``torch.compile`` specialise on it and recompile each step."""
        if self.length + num_tokens > self.max_len:
            raise CacheOverflowError(
                f"KV cache full: {self.length} slots used + {num_tokens} new > max_len={self.max_len}; "
                f"allocate the cache with a larger max_len (prompt length + max new tokens)")
        start = self.length
        self.length += num_tokens
        return start

    @property
    def has_memory(self) -> bool:
        return self.memory is not None

    def set_memory(self, keys_values: list[tuple[torch.Tensor, torch.Tensor]],
                   memory_mask: Optional[torch.Tensor]):
        """Keep the cross-attention ``(keys, values)`` ``[B, H_kv, M, Dh]`` of every layer and the
        memory mask ``[B, M]`` (True = real memory frame, None = all real)."""
        if len(keys_values) != self.num_layers:
            raise ValueError(f"KVCache.set_memory: expected {self.num_layers} layers, got {len(keys_values)}")
        self.memory, self.memory_mask = list(keys_values), memory_mask

    def select_rows(self, rows: torch.Tensor):
        """Keep (and reorder to) batch rows ``rows [B']`` (long), e.g. to drop finished sequences or
        reorder beams. Allocates new buffers of the new batch size."""
        if rows.dim() != 1 or rows.dtype != torch.long:
            raise ValueError(f"KVCache.select_rows: expected long row indices [B'], got {rows.dtype} "
                             f"{tuple(rows.shape)}")
        rows = rows.to(self.key_valid.device)
        for layer in self.layers:
            layer.select_rows(rows)
        self.key_valid = self.key_valid.index_select(0, rows)
        self.next_position = self.next_position.index_select(0, rows)
        if self.memory is not None:
            self.memory = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.memory]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, rows)

    def reset(self):
        """Forget everything (tokens and memory); the buffers are kept for reuse."""
        for layer in self.layers:
            layer.reset()
        self.key_valid.zero_()
        self.next_position.zero_()
        self.slot.zero_()
        self.length = 0
        self.memory = self.memory_mask = self._cross_mask = None
