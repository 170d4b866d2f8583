"""Pieces every discriminator shares: normalised convs, fp32 STFTs, the output type, conditioning.

Every discriminator maps ``wav [B, 1, L]`` to ``(logits, fmaps)``: one logits tensor ``[B, 1, ...]`` and
one list of feature maps per sub-discriminator (the shape of :mod:`audiocraft`'s adversaries).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from ..errors import ConfigError
from ..nn.conv import apply_norm

#: ``(logits per sub-discriminator, feature maps per sub-discriminator)``
DiscriminatorOutput = Tuple[List[torch.Tensor], List[List[torch.Tensor]]]


def normed(module: nn.Module, norm: str = "weight_norm") -> nn.Module:
    """``module`` with ``"weight_norm"``, ``"spectral_norm"`` or ``"none"`` (torch parametrisations).

    Weight norm is stored as ``<name>.parametrizations.weight.original0`` (g, ``[out, 1, ...]``) and
    ``original1`` (v); official checkpoints name them ``weight_g`` / ``weight_v``
    (:func:`audiocodec.codecs.interop.keys.adapt_weight_norm` converts).
    """
    if norm == "spectral_norm":
        return parametrizations.spectral_norm(module)
    try:
        return apply_norm(module, norm)
    except ValueError as e:
        raise ConfigError(f"{e} (or 'spectral_norm')") from None


def check_input(wav: torch.Tensor) -> torch.Tensor:
    """Accept ``[B, 1, L]`` (or ``[B, L]``) and return ``[B, 1, L]``."""
    if wav.dim() == 2:
        wav = wav[:, None]
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"discriminators take mono audio [B, 1, L], got shape {tuple(wav.shape)}")
    return wav


def stft_fp32(wav: torch.Tensor, n_fft: int, hop_length: int, win_length: Optional[int] = None,
              window: str = "hann", center: bool = True, normalized: bool = False) -> torch.Tensor:
    """Complex STFT computed in fp32 (autocast off): ``[B, 1, L]`` or ``[B, L]`` -> ``[B, n_fft // 2 + 1, T]``.

    Args:
        window: ``"hann"`` (periodic) or ``"rect"`` (no window, as WavTokenizer's MRD / DAC port).
        center: reflect-pad ``n_fft // 2`` each side (``T = L // hop + 1``); otherwise no padding.
        normalized: divide by ``sqrt(sum(window ** 2))`` (torchaudio's ``normalized=True``).
    """
    x = wav.reshape(-1, wav.shape[-1]) if wav.dim() == 3 else wav
    win_length = win_length or n_fft
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        if window == "hann":
            w = torch.hann_window(win_length, device=x.device, dtype=torch.float32)
        elif window == "rect":
            w = torch.ones(win_length, device=x.device, dtype=torch.float32)
        else:
            raise ConfigError(f"unknown STFT window {window!r}: use 'hann' or 'rect'")
        spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=win_length, window=w, center=center,
                          pad_mode="reflect", return_complex=True)
        if normalized:
            spec = spec / w.pow(2).sum().sqrt()
    return spec


def make_embedding(num_embeddings: Optional[int], channels: int) -> Optional[nn.Embedding]:
    """WavTokenizer's optional ``bandwidth_id`` conditioning table ``[num_embeddings, channels]``
    (official key ``emb.weight``), zero-initialised so an untrained table changes nothing."""
    if not num_embeddings:
        return None
    emb = nn.Embedding(num_embeddings, channels)
    nn.init.zeros_(emb.weight)
    return emb


def condition(emb: Optional[nn.Embedding], hidden: torch.Tensor,
              cond_id: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The conditioning term added to the logits: ``sum_c emb[id][c] * hidden[:, c]``.

    ``hidden [B, C, H, W]``, ``cond_id`` scalar or ``[B]`` -> ``[B, 1, H, W]``, or ``None`` without a
    table or an id.
    """
    if emb is None or cond_id is None:
        return None
    cond_id = torch.as_tensor(cond_id, device=hidden.device).long()
    e = emb(cond_id.reshape(-1)).to(hidden.dtype)
    e = e.view(e.shape[0], -1, *([1] * (hidden.dim() - 2)))
    return (e * hidden).sum(dim=1, keepdim=True)


def bias_leaky_relu(y: torch.Tensor, bias: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """``leaky_relu(y + bias)`` for ``y [B, C, ...]`` and ``bias [C]`` (cast to ``y``'s dtype)."""
    return F.leaky_relu(y + bias.to(y.dtype).view(-1, *([1] * (y.dim() - 2))), negative_slope)


@functools.cache
def compiled_bias_leaky_relu():
    """:func:`bias_leaky_relu` through ``torch.compile`` (dynamic shapes: one kernel for every size of a layout
    and dtype): one fused pass forward, one fused pass (with the bias gradient's reduction) backward."""
    return torch.compile(bias_leaky_relu, dynamic=True)


class Conv2dLeakyReLU(nn.Conv2d):
    """``leaky_relu(conv2d(x), negative_slope)``: an ``nn.Conv2d`` (same parameters, names and
    normalisations) that applies its LeakyReLU itself. ``[B, C_in, H, W] -> [B, C_out, H', W']``.

    :attr:`fused_cuda` (class switch, off by default until measured): on CUDA, the bias add and the
    activation run as one fused kernel (:func:`compiled_bias_leaky_relu`) after a bias-free cuDNN conv,
    instead of PyTorch's in-place broadcast bias add over the conv output (a non-vectorised pass) and a
    separate activation pass. Elsewhere, and with the switch off, the plain conv and ``F.leaky_relu``.
    """

    fused_cuda: bool = False

    def __init__(self, *args, negative_slope: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_cuda and x.is_cuda and self.bias is not None:
            # inside a compiled module (trainer.compile) its own graph fuses the plain function
            fuse = bias_leaky_relu if torch.compiler.is_compiling() else compiled_bias_leaky_relu()
            return fuse(self._conv_forward(x, self.weight, None), self.bias, self.negative_slope)
        return F.leaky_relu(self._conv_forward(x, self.weight, self.bias), self.negative_slope)


def conv2d_same(in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1),
                dilation: Sequence[int] = (1, 1), norm: str = "weight_norm",
                leaky_relu: Optional[float] = None) -> nn.Module:
    """Conv2d with ``((k - 1) * d) // 2`` padding per axis, normalised by ``norm``; with ``leaky_relu`` (a
    slope) a :class:`Conv2dLeakyReLU`."""
    kernel, stride, dilation = tuple(kernel), tuple(stride), tuple(dilation)
    padding = tuple(((k - 1) * d) // 2 for k, d in zip(kernel, dilation))
    if leaky_relu is None:
        return normed(nn.Conv2d(in_ch, out_ch, kernel, stride, padding=padding, dilation=dilation), norm)
    return normed(Conv2dLeakyReLU(in_ch, out_ch, kernel, stride, padding=padding, dilation=dilation,
                                  negative_slope=leaky_relu), norm)


def collect(subs, wav: torch.Tensor, **kwargs) -> DiscriminatorOutput:
    """Run each sub-discriminator ``(logits, fmap) = sub(wav)`` and gather the two lists."""
    logits, fmaps = [], []
    for sub in subs:
        logit, fmap = sub(wav, **kwargs)
        logits.append(logit)
        fmaps.append(fmap)
    return logits, fmaps
