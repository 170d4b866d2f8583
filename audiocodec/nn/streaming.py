"""Streaming (chunk-by-chunk) inference for causal convolutional models.

A :class:`StreamingModule` can run on a signal cut into chunks of any length and give exactly (up to
float rounding) the output it gives on the whole signal at once. Each streaming module holds its own
per-stream state while :func:`streaming` is active:

* a causal :class:`~audiocodec.nn.conv.PaddedConv1d` keeps the input its next windows still need
  (its left context) and builds the start padding (reflect, as offline) from the first samples;
* a causal :class:`~audiocodec.nn.conv.PaddedConvTranspose1d` keeps the overlapping tail of its output;
* an :class:`~audiocodec.nn.seanet.SLSTM` keeps its ``(h, c)``;
* containers (residual blocks, SEANet encoder / decoder) align and forward their children.

Modules emit what is ready: the output of a chunk can be shorter than usual at the start of a stream
(reflect padding of the very first samples needs a few samples *after* them) and the last samples are
emitted by the final call, ``stream_step(module, x, final=True)``, which also pads the end exactly as
the offline forward does (so a last partial frame is coded like offline).

>>> with streaming(encoder):                                   # a causal SEANetEncoder, an nn.Sequential ...
...     ys = [encoder(chunk) for chunk in chunks]              # same as stream_step(encoder, chunk)
...     ys.append(stream_step(encoder, chunks[0][..., :0], final=True))
>>> torch.cat(ys, -1)                                          # == encoder(torch.cat(chunks, -1))

:class:`~audiocodec.codecs.Codec` wraps this as ``codec.streaming()``, ``encode_chunk`` and
``decode_chunk``.

Parameter-free leaf modules (activations) are taken to act on each time step independently and
stream as they are; any other module that is not a :class:`StreamingModule` makes its parent
unstreamable (see :func:`streaming_unsupported_reason`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from ..errors import AudioCodecError


class StreamingError(AudioCodecError, RuntimeError):
    """A model that cannot stream, or a streaming call made out of order."""


class StreamingModule:
    """Mixin for ``nn.Module`` subclasses that can process a signal ``[B, C, T]`` chunk by chunk.

    Subclasses implement :meth:`_streaming_step` (and :meth:`_init_streaming_state` when they keep
    state); leaf modules that own their children (a conv and its parametrisation, an LSTM) set
    ``_streaming_leaf = True`` and report their own limits in :meth:`streaming_unsupported`.
    In ``forward``, a subclass calls ``self._streaming_step(x, final=False)`` when
    :attr:`is_streaming`.
    """

    _streaming_state: Optional[dict] = None
    _streaming_leaf: bool = False

    @property
    def is_streaming(self) -> bool:
        return self._streaming_state is not None

    def _init_streaming_state(self) -> dict:
        return {}

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        raise NotImplementedError

    def streaming_unsupported(self) -> Optional[str]:
        """Why this module cannot stream, or ``None`` when it can (containers check their children)."""
        if self._streaming_leaf:
            return None
        for name, child in self.named_children():  # type: ignore[attr-defined]
            reason = streaming_unsupported_reason(child, name)
            if reason:
                return reason
        return None


def streaming_unsupported_reason(module: nn.Module, name: str = "") -> Optional[str]:
    """Why ``module`` cannot stream (e.g. a non-causal conv needs future samples), or ``None``.

    ``module`` is a :class:`StreamingModule`, an ``nn.Sequential`` / ``nn.ModuleList`` of streamable
    modules, or a parameter-free leaf (an activation). ``name`` prefixes the path in the reason.
    """
    where = f"{name}: " if name else ""
    if isinstance(module, StreamingModule):
        reason = module.streaming_unsupported()
        if reason is None:
            return None
        return f"{where}{reason}" if module._streaming_leaf or not name else f"{name}.{reason}"
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        for child_name, child in module.named_children():
            reason = streaming_unsupported_reason(child, f"{name}.{child_name}" if name else child_name)
            if reason:
                return reason
        return None
    if next(module.parameters(), None) is None and next(module.children(), None) is None:
        return None  # parameter-free leaf: an activation, pointwise in time
    return f"{where}{type(module).__name__} has no streaming support"


def _streaming_modules(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, StreamingModule)]


def start_streaming(module: nn.Module) -> None:
    """Put ``module`` and its streaming submodules in streaming mode with a fresh state."""
    reason = streaming_unsupported_reason(module)
    if reason:
        raise StreamingError(f"{type(module).__name__} cannot stream: {reason}")
    modules = _streaming_modules(module)
    if any(m.is_streaming for m in modules):
        raise StreamingError(f"{type(module).__name__} is already streaming; finish that stream first")
    for m in modules:
        m._streaming_state = m._init_streaming_state()


def stop_streaming(module: nn.Module) -> None:
    """Leave streaming mode (drops every state)."""
    for m in _streaming_modules(module):
        m._streaming_state = None


def reset_streaming(module: nn.Module) -> None:
    """Start a new stream: fresh state in every streaming submodule (they must be streaming)."""
    for m in _streaming_modules(module):
        if not m.is_streaming:
            raise StreamingError(f"{type(m).__name__} is not streaming: use streaming() first")
        m._streaming_state = m._init_streaming_state()


@contextlib.contextmanager
def streaming(module: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``module(chunk)`` processes consecutive chunks of one stream.

    Raises :class:`StreamingError` when some part of ``module`` cannot stream.
    """
    start_streaming(module)
    try:
        yield module
    finally:
        stop_streaming(module)


def stream_step(module: nn.Module, x: torch.Tensor, final: bool = False) -> torch.Tensor:
    """Feed chunk ``x [B, C, T]`` (``T`` may be 0) to a streaming ``module`` and return what is ready.

    With ``final=True`` the stream ends: everything still held back is emitted, the end padded as the
    offline forward pads it. The state is then spent: call :func:`reset_streaming` for a new stream.
    """
    if isinstance(module, StreamingModule):
        if not module.is_streaming:
            raise StreamingError(f"{type(module).__name__} is not streaming: use streaming() first")
        return module._streaming_step(x, final)
    if isinstance(module, nn.Sequential):
        for child in module:
            x = stream_step(child, x, final)
        return x
    return module(x)


def empty_like_time(x: torch.Tensor, channels: int) -> torch.Tensor:
    """An empty ``[B, channels, 0]`` tensor with the batch, dtype and device of ``x``."""
    return x.new_zeros(x.shape[0], channels, 0)
