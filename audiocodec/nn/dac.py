"""DAC (descript-audio-codec) encoder and decoder: Snake activations, dilated residual units.

Module and parameter names are those of the official ``dac.model.dac`` modules (``encoder.block.N``,
``decoder.model.N``, ``block.K``, ``alpha``), so an official state dict loads without renaming
(weight norm in either form, see :func:`audiocodec.codecs.interop.keys.adapt_weight_norm`).

Length arithmetic (checked against the official model):

* Every non-strided conv is "same" (zero padding ``(k - 1) * d // 2``). A strided encoder conv
  (kernel ``2s``, padding ``ceil(s / 2)``) maps ``n * s`` samples to exactly ``n`` frames, for even
  and odd ``s``. DAC pads the input on the right to a multiple of the hop in ``preprocess``;
  :class:`DACEncoder` does that itself, so ``L`` samples give ``ceil(L / hop)`` frames and the frames
  equal DAC's.
* A decoder transposed conv (kernel ``2s``, padding ``ceil(s / 2)``) maps ``T`` frames to
  ``T * s + s - 2 * ceil(s / 2)`` samples: ``T * s`` for even ``s`` but ``T * s - 1`` for odd ``s``.
  With DAC 24 kHz rates ``[8, 5, 4, 2]`` the official decoder thus returns ``320 T - 8`` samples.
  :class:`DACDecoder` computes exactly those samples and then pads the right edge (replicating the
  last sample) to ``T * hop``, so its first ``320 T - 8`` samples are DAC's output.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import apply_norm


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Snake activation ``x + sin(alpha x)^2 / alpha`` (``alpha`` broadcast over ``[1, C, 1]``)."""
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake1d(nn.Module):
    """Snake with one learned frequency ``alpha [1, C, 1]`` per channel (checkpoint name ``alpha``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return snake(x.reshape(shape[0], shape[1], -1), self.alpha).reshape(shape)


def wn_conv1d(*args, **kwargs) -> nn.Conv1d:
    """A weight-normed ``nn.Conv1d`` (zero padding as given)."""
    return apply_norm(nn.Conv1d(*args, **kwargs), "weight_norm")


def wn_conv_transpose1d(*args, **kwargs) -> nn.ConvTranspose1d:
    """A weight-normed ``nn.ConvTranspose1d``."""
    return apply_norm(nn.ConvTranspose1d(*args, **kwargs), "weight_norm")


class DACResidualUnit(nn.Module):
    """Snake -> conv(k7, dilation) -> Snake -> conv(k1), plus identity (length preserved)."""

    def __init__(self, dim: int, dilation: int = 1, kernel_size: int = 7):
        super().__init__()
        pad = ((kernel_size - 1) * dilation) // 2
        self.block = nn.Sequential(
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=kernel_size, dilation=dilation, padding=pad),
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class DACEncoderBlock(nn.Module):
    """Three residual units (dilations 1, 3, 9) at ``dim // 2`` channels, then a strided conv to ``dim``."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            DACResidualUnit(dim // 2, dilation=1),
            DACResidualUnit(dim // 2, dilation=3),
            DACResidualUnit(dim // 2, dilation=9),
            Snake1d(dim // 2),
            wn_conv1d(dim // 2, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DACDecoderBlock(nn.Module):
    """Snake, a transposed conv upsampling by ``stride``, three residual units (dilations 1, 3, 9)."""

    def __init__(self, input_dim: int, output_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            wn_conv_transpose1d(input_dim, output_dim, kernel_size=2 * stride, stride=stride,
                                padding=math.ceil(stride / 2)),
            DACResidualUnit(output_dim, dilation=1),
            DACResidualUnit(output_dim, dilation=3),
            DACResidualUnit(output_dim, dilation=9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _zero_conv_biases(module: nn.Module) -> None:
    # DAC initialises conv biases to zero (its weight init does not survive weight norm).
    for m in module.modules():
        if isinstance(m, nn.Conv1d) and m.bias is not None:
            nn.init.zeros_(m.bias)


class DACEncoder(nn.Module):
    """DAC encoder ``[B, channels, L] -> [B, latent_dim, ceil(L / hop)]``.

    Args:
        dim: channels of the first conv (``encoder_dim``); doubled by each block.
        rates: strides of the blocks (``encoder_rates``); ``hop_length`` is their product.
        latent_dim: output channels (default ``dim * 2 ** len(rates)``, as DAC).
        channels: audio channels (DAC: 1).
    """

    def __init__(self, dim: int = 64, rates: Sequence[int] = (2, 4, 8, 8), latent_dim: Optional[int] = None,
                 channels: int = 1):
        super().__init__()
        self.rates = [int(r) for r in rates]
        self.hop_length = int(math.prod(self.rates))
        self.latent_dim = int(latent_dim or dim * 2 ** len(self.rates))
        blocks: list[nn.Module] = [wn_conv1d(channels, dim, kernel_size=7, padding=3)]
        d = dim
        for stride in self.rates:
            d *= 2
            blocks.append(DACEncoderBlock(d, stride))
        blocks += [Snake1d(d), wn_conv1d(d, self.latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*blocks)
        self.enc_dim = d
        _zero_conv_biases(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = (-x.shape[-1]) % self.hop_length
        if right:
            x = F.pad(x, (0, right))
        return self.block(x)


class DACDecoder(nn.Module):
    """DAC decoder ``[B, input_dim, T] -> [B, channels, T * hop]`` (tanh output).

    Args:
        input_dim: latent channels.
        dim: channels after the first conv (``decoder_dim``); halved by each block.
        rates: upsampling strides (``decoder_rates``).
        channels: audio channels (DAC: 1).

    Odd strides make DAC's own output ``hop - sum`` samples short of ``T * hop`` (8 for the 24 kHz
    model); those last samples are filled with the last computed sample (see the module docstring).
    """

    def __init__(self, input_dim: int = 1024, dim: int = 1536, rates: Sequence[int] = (8, 8, 4, 2),
                 channels: int = 1):
        super().__init__()
        self.rates = [int(r) for r in rates]
        self.hop_length = int(math.prod(self.rates))
        layers: list[nn.Module] = [wn_conv1d(input_dim, dim, kernel_size=7, padding=3)]
        out_dim = dim
        for i, stride in enumerate(self.rates):
            in_dim, out_dim = dim // 2 ** i, dim // 2 ** (i + 1)
            layers.append(DACDecoderBlock(in_dim, out_dim, stride))
        layers += [Snake1d(out_dim), wn_conv1d(out_dim, channels, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        _zero_conv_biases(self)

    def native_length(self, frames: int) -> int:
        """Samples the official decoder returns for ``frames`` latent frames."""
        n = frames
        for s in self.rates:
            n = n * s + s - 2 * math.ceil(s / 2)
        return n

    def forward(self, latents: torch.Tensor, num_codebooks: Optional[int] = None) -> torch.Tensor:
        y = self.model(latents)
        target = latents.shape[-1] * self.hop_length
        if y.shape[-1] < target:
            y = F.pad(y, (0, target - y.shape[-1]), mode="replicate" if y.shape[-1] else "constant")
        return y[..., :target]
