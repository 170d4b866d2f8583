"""MelGAN / HiFi-GAN multi-scale discriminator (MSD): the same 1-d conv stack on the waveform at
full rate and after one and two ``AvgPool1d(4, 2, padding=2)`` (SpeechTokenizer / DM-Codec use it).

Layers (HiFi-GAN): Conv1d 1->128 k15, 128->128 k41 s2 g4, 128->256 k41 s2 g16, 256->512 k41 s4 g16,
512->1024 k41 s4 g16, 1024->1024 k41 g16, 1024->1024 k5, post 1024->1 k3; LeakyReLU 0.1. The first
scale uses spectral norm, the others weight norm. Names: ``discriminators.{i}.convs.{j}.*``,
``discriminators.{i}.conv_post.*`` (as HiFi-GAN's ``DiscriminatorS``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import DiscriminatorOutput, check_input, normed

#: HiFi-GAN's scale discriminator: output channels, groups, kernels and strides of its convs
CHANNELS = (128, 128, 256, 512, 1024, 1024, 1024)
GROUPS = (1, 4, 16, 16, 16, 16, 1)
_KERNELS = (15, 41, 41, 41, 41, 41, 5)
_STRIDES = (1, 2, 2, 4, 4, 1, 1)


class ScaleDiscriminator(nn.Module):
    """``[B, 1, L] -> (logits [B, 1, ~L / 64], 8 feature maps incl. the logits)``.

    ``channels`` / ``groups``: of the seven convs (HiFi-GAN's by default; kernels and strides fixed).
    """

    def __init__(self, norm: str = "weight_norm", lrelu_slope: float = 0.1, channels: Sequence[int] = CHANNELS,
                 groups: Sequence[int] = GROUPS):
        super().__init__()
        if not len(channels) == len(groups) == len(_KERNELS):
            raise ValueError(f"ScaleDiscriminator: need {len(_KERNELS)} channels and groups")
        self.lrelu_slope = lrelu_slope
        convs, c_in = [], 1
        for c_out, g, k, s in zip(channels, groups, _KERNELS, _STRIDES):
            convs.append(normed(nn.Conv1d(c_in, c_out, k, s, groups=g, padding=k // 2), norm))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed(nn.Conv1d(c_in, 1, 3, 1, padding=1), norm)

    def forward(self, wav: torch.Tensor):
        x, fmap = wav, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            fmap.append(x)
        logits = self.conv_post(x)
        fmap.append(logits)
        return logits, fmap


class MultiScaleDiscriminator(nn.Module):
    """``scales`` :class:`ScaleDiscriminator`; scale ``i`` sees the input average-pooled ``i`` times.

    Args:
        scales: number of scales (3).
        norms: one per scale (``"spectral_norm"``, ``"weight_norm"``, ...); default spectral norm for
            the first, weight norm for the rest.
        lrelu_slope: LeakyReLU slope.
        channels, groups: of each scale's convs (see :class:`ScaleDiscriminator`).

    ``forward(wav [B, 1, L]) -> (logits, fmaps)``, one entry per scale (~29.6M parameters for 3).
    """

    def __init__(self, scales: int = 3, norms: Sequence[str] | None = None, lrelu_slope: float = 0.1,
                 channels: Sequence[int] = CHANNELS, groups: Sequence[int] = GROUPS):
        super().__init__()
        norms = list(norms) if norms is not None else ["spectral_norm"] + ["weight_norm"] * (scales - 1)
        if len(norms) != scales:
            raise ValueError(f"MultiScaleDiscriminator: {scales} scales but {len(norms)} norms")
        self.discriminators = nn.ModuleList([ScaleDiscriminator(n, lrelu_slope, channels, groups) for n in norms])
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = check_input(wav)
        logits, fmaps = [], []
        for i, disc in enumerate(self.discriminators):
            if i:
                x = self.pool(x)
            logit, fmap = disc(x)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps
