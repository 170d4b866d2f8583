"""Padded 1-d convolutions in the SEANet style (EnCodec, WavTokenizer, SpeechTokenizer).

A :class:`PaddedConv1d` pads its input so that an input of ``L`` samples gives ``ceil(L / stride)``
frames, causally (all padding on the left) or centred; :class:`PaddedConvTranspose1d` trims its output
so that ``T`` frames give ``T * stride`` samples. Both optionally carry weight normalisation
(``torch.nn.utils.parametrizations.weight_norm``).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from .streaming import StreamingModule, empty_like_time


def apply_norm(module: nn.Module, norm: str = "none") -> nn.Module:
    """Wrap ``module`` with ``norm``: ``"weight_norm"`` or ``"none"``."""
    if norm == "weight_norm":
        return parametrizations.weight_norm(module)
    if norm in ("none", None):
        return module
    raise ValueError(f"unknown conv norm {norm!r}: use 'weight_norm' or 'none'")


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation in ``model`` by its plain weight (in place).

    Inference gets faster (no per-call renormalisation) and the outputs do not change.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module):
            # torch keeps the parametrised properties on a class that deep copies of the module share;
            # removing them there would break every copy, so this module first gets its own class
            cls = type(module)
            members = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(cls.__name__, cls.__bases__, members)
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding so that the last window of a strided conv is full (no sample is dropped)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return max(0, ideal_length - length)


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` that also allows reflect padding of inputs shorter than the padding."""
    left, right = paddings
    if mode == "reflect":
        length = x.shape[-1]
        max_pad = max(left, right)
        extra = 0
        if length <= max_pad:
            extra = max_pad - length + 1
            x = F.pad(x, (0, extra))
        if extra or min(left, right) < 0:
            padded = F.pad(x, paddings, mode)
            return padded[..., : padded.shape[-1] - extra]
        return reflect_pad(x, left, right)
    return F.pad(x, paddings, mode, value)


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding of ``x [..., L]`` (``L > max(left, right)``), equal to ``F.pad(x, ..., "reflect")``.

    It copies the body with a vectorised constant pad and writes the two small mirrored edges, which is
    several times faster on GPU than PyTorch's reflection-pad kernel on long audio.
    """
    length = x.shape[-1]
    out = F.pad(x, (left, right))
    if left:
        out[..., :left] = x[..., 1: left + 1].flip(-1)
    if right:
        out[..., left + length:] = x[..., length - right - 1: length - 1].flip(-1)
    return out


class PaddedConv1d(nn.Conv1d, StreamingModule):
    """Conv1d with SEANet padding: ``[B, C_in, L] -> [B, C_out, ceil(L / stride)]``.

    Args:
        causal: put all ``(k - 1) * d + 1 - stride`` padding on the left; otherwise split it, the
            larger half on the left.
        pad_mode: ``"reflect"``, ``"constant"`` or ``"replicate"``.
        norm: ``"weight_norm"`` or ``"none"`` (applied by :func:`build_conv1d`).

    A causal conv streams (see :mod:`audiocodec.nn.streaming`): it keeps the padded input its next
    windows need, and starts emitting once it has seen more than ``max(padding_total, stride - 1)``
    samples, so that its start padding (reflect of the first samples) is exactly the offline one.
    """

    _streaming_leaf = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 pad_mode: str = "reflect"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                         groups=groups, bias=bias)
        self.causal = causal
        self.pad_mode = pad_mode

    @property
    def padding_total(self) -> int:
        return (self.kernel_size[0] - 1) * self.dilation[0] + 1 - self.stride[0]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        total = self.padding_total
        extra = extra_padding_for_conv1d(x.shape[-1], k_eff, self.stride[0], total)
        if self.causal:
            return pad1d(x, (total, extra), self.pad_mode)
        right = total // 2
        return pad1d(x, (total - right, right + extra), self.pad_mode)

    #: inputs at least this long skip the padded copy (see :meth:`_forward_long`)
    long_input = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        if x.shape[-1] >= self.long_input and self.pad_mode in ("reflect", "replicate", "constant"):
            return self._forward_long(x)
        return super().forward(self.pad_input(x))

    def _forward_long(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as ``conv(pad_input(x))`` without copying the whole padded input.

        The conv runs with its own zero padding (no copy), then the few output frames whose window
        reaches into the padding are recomputed from short, properly padded slices of the edges.
        """
        length, s = x.shape[-1], self.stride[0]
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        total = self.padding_total
        extra = extra_padding_for_conv1d(length, k_eff, s, total)
        left = total if self.causal else total - total // 2
        right = total + extra - left
        n_out = (length + left + right - k_eff) // s + 1
        jl = -(-left // s)                               # frames whose window starts in the left padding
        jr = max((length + left - k_eff) // s + 1, jl)   # first frame whose window ends in the right padding
        start = jr * s - left                            # its first sample, moved back so reflect has room
        if length - start < right + 1:
            start -= s * (-(-(right + 1 - (length - start)) // s))
        if start < 0 or jr > n_out or total < 0:
            return super().forward(self.pad_input(x))
        weight = self.weight
        conv = functools.partial(F.conv1d, weight=weight, bias=self.bias, stride=s, dilation=self.dilation,
                                 groups=self.groups)
        y = conv(x, padding=left)
        if y.shape[-1] > n_out:
            y = y[..., :n_out]
        if jl:
            m = min(length, max((jl - 1) * s + k_eff - left, left + 1))
            y[..., :jl] = conv(pad1d(x[..., :m], (left, 0), self.pad_mode))[..., :jl]
        if jr < n_out:
            j0 = (start + left) // s
            tail = conv(pad1d(x[..., start:], (0, right), self.pad_mode))[..., jr - j0: n_out - j0]
            if y.shape[-1] < n_out:
                return torch.cat([y[..., :jr], tail], dim=-1)
            y[..., jr:] = tail
        return y.contiguous()

    # -- streaming -------------------------------------------------------------------------------
    def streaming_unsupported(self):
        if not self.causal:
            return "non-causal conv (its centred padding needs future samples)"
        return None

    def _init_streaming_state(self) -> dict:
        # pending: raw input before the start padding could be built; buffer: padded input not yet
        # consumed by a window; tail: last `stride` raw samples (for the end padding); length: raw count
        return dict(started=False, pending=None, buffer=None, tail=None, length=0)

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        stride, total = self.stride[0], self.padding_total
        if not st["started"]:
            pending = x if st["pending"] is None else torch.cat([st["pending"], x], dim=-1)
            if pending.shape[-1] <= max(total, stride - 1):
                if not final:
                    st["pending"] = pending
                    return empty_like_time(x, self.out_channels)
                # the whole stream is this short: offline forward on all of it (same padding rules)
                self._streaming_state = self._init_streaming_state()
                if pending.shape[-1] == 0:
                    return empty_like_time(x, self.out_channels)
                return super().forward(self.pad_input(pending))
            # enough samples: the start padding is now the offline one (no short-input special case)
            st.update(started=True, pending=None, length=pending.shape[-1], tail=pending[..., -stride:],
                      buffer=pad1d(pending, (total, 0), self.pad_mode))
        else:
            st["length"] += x.shape[-1]
            st["buffer"] = torch.cat([st["buffer"], x], dim=-1)
            st["tail"] = torch.cat([st["tail"], x], dim=-1)[..., -stride:]
        buf = st["buffer"]
        if final:
            extra = extra_padding_for_conv1d(st["length"], k_eff, stride, total)
            if extra:  # right padding from the last raw samples, as pad1d makes it offline
                right = pad1d(st["tail"], (0, extra), self.pad_mode)[..., -extra:]
                buf = torch.cat([buf, right], dim=-1)
        n = (buf.shape[-1] - k_eff) // stride + 1 if buf.shape[-1] >= k_eff else 0
        y = (super().forward(buf[..., : (n - 1) * stride + k_eff]) if n > 0
             else empty_like_time(x, self.out_channels))
        if final:
            self._streaming_state = self._init_streaming_state()
        else:
            st["buffer"] = buf[..., n * stride:]
        return y


class PaddedConvTranspose1d(nn.ConvTranspose1d, StreamingModule):
    """ConvTranspose1d trimmed to ``[B, C_in, T] -> [B, C_out, T * stride]``.

    Causal models trim all ``kernel - stride`` extra samples on the right, others split them.
    A causal one streams: ``T`` frames in give ``T * stride`` samples out, the overlapping tail of
    each chunk's output being kept and added to the next one.
    """

    _streaming_leaf = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, causal: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        y = super().forward(x)
        total = self.kernel_size[0] - self.stride[0]
        right = total if self.causal else total // 2
        left = total - right
        return y[..., left: y.shape[-1] - right]

    # -- streaming -------------------------------------------------------------------------------
    def streaming_unsupported(self):
        if not self.causal:
            return "non-causal transposed conv (its output is trimmed on the left, which needs future frames)"
        return None

    def _init_streaming_state(self) -> dict:
        return dict(tail=None)  # the last kernel - stride output samples, without the bias

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        stride, overlap = self.stride[0], self.kernel_size[0] - self.stride[0]
        if x.shape[-1] == 0:
            y = empty_like_time(x, self.out_channels)
        else:
            y = super().forward(x)  # [(T - 1) * stride + kernel] samples
            if st["tail"] is not None and overlap > 0:
                y = torch.cat([y[..., :overlap] + st["tail"], y[..., overlap:]], dim=-1)
            n = x.shape[-1] * stride
            tail = y[..., n:]
            if self.bias is not None:
                tail = tail - self.bias[:, None]
            st["tail"], y = tail, y[..., :n]
        if final:  # offline trims the last `overlap` samples of a causal transposed conv
            self._streaming_state = self._init_streaming_state()
        return y


def build_conv1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConv1d:
    """A :class:`PaddedConv1d` with ``norm`` applied."""
    return apply_norm(PaddedConv1d(*args, **kwargs), norm)


def build_conv_transpose1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConvTranspose1d:
    """A :class:`PaddedConvTranspose1d` with ``norm`` applied."""
    return apply_norm(PaddedConvTranspose1d(*args, **kwargs), norm)
