"""Padded 1-d convolutions in the SEANet style (EnCodec, WavTokenizer, SpeechTokenizer).

A :class:`PaddedConv1d` pads its input so that an input of ``L`` samples gives ``ceil(L / stride)``
frames, causally (all padding on the left) or centred; :class:`PaddedConvTranspose1d` trims its output
so that ``T`` frames give ``T * stride`` samples. Both optionally carry weight normalisation
(``torch.nn.utils.parametrizations.weight_norm``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize


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
        padded = F.pad(x, paddings, mode)
        return padded[..., : padded.shape[-1] - extra]
    return F.pad(x, paddings, mode, value)


class PaddedConv1d(nn.Conv1d):
    """Conv1d with SEANet padding: ``[B, C_in, L] -> [B, C_out, ceil(L / stride)]``.

    Args:
        causal: put all ``(k - 1) * d + 1 - stride`` padding on the left; otherwise split it, the
            larger half on the left.
        pad_mode: ``"reflect"``, ``"constant"`` or ``"replicate"``.
        norm: ``"weight_norm"`` or ``"none"`` (applied by :func:`build_conv1d`).
    """

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad_input(x))


class PaddedConvTranspose1d(nn.ConvTranspose1d):
    """ConvTranspose1d trimmed to ``[B, C_in, T] -> [B, C_out, T * stride]``.

    Causal models trim all ``kernel - stride`` extra samples on the right, others split them.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, causal: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        total = self.kernel_size[0] - self.stride[0]
        right = total if self.causal else total // 2
        left = total - right
        return y[..., left: y.shape[-1] - right]


def build_conv1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConv1d:
    """A :class:`PaddedConv1d` with ``norm`` applied."""
    return apply_norm(PaddedConv1d(*args, **kwargs), norm)


def build_conv_transpose1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConvTranspose1d:
    """A :class:`PaddedConvTranspose1d` with ``norm`` applied."""
    return apply_norm(PaddedConvTranspose1d(*args, **kwargs), norm)
