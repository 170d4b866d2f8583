"""DAC's combined discriminator: periods + multi-band STFTs on DC-free, peak-normalised audio.

This is what WavTokenizer trains as its ``dac`` discriminator (with LSGAN losses): five DAC-style
period discriminators (every conv output is a feature map, the logits are not; the input is padded
by a full period even when the period divides its length) followed by three
:class:`~audiocodec.discriminators.multiband.BandDiscriminator`, all in one flat list, so parameter
names line up with the official ``dac.discriminators.{i}.*`` (``i`` < 5: periods, whose official keys
carry an extra ``.0``: ``convs.{j}.0.weight_g``; then the STFT sizes).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import DiscriminatorOutput, check_input, collect
from .mpd import PeriodDiscriminator
from .multiband import BANDS, BandDiscriminator


class DACDiscriminator(nn.Module):
    """``forward(wav [B, 1, L]) -> (logits, fmaps)``: ``len(periods) + len(fft_sizes)`` entries.

    Args:
        periods: of the period discriminators (2, 3, 5, 7, 11); empty for none.
        fft_sizes: of the band discriminators (2048, 1024, 512).
        bands, hop_factor, channels, window: of the band discriminators (``window="rect"`` matches
            WavTokenizer's port, ``"hann"`` DAC's own STFT).
        preprocess: remove the DC offset and peak-normalise to 0.8 before discriminating (DAC).
        period_channels: conv widths of the period discriminators.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), fft_sizes: Sequence[int] = (2048, 1024, 512),
                 bands: Sequence[Sequence[float]] = BANDS, hop_factor: float = 0.25, channels: int = 32,
                 window: str = "hann", preprocess: bool = True,
                 period_channels: Sequence[int] = (32, 128, 512, 1024, 1024)):
        super().__init__()
        self.preprocess = preprocess
        subs: list[nn.Module] = [PeriodDiscriminator(p, period_channels, fmap_first=True, fmap_logits=False,
                                                     pad_full_period=True)
                                 for p in periods]
        subs += [BandDiscriminator(n, hop_factor, bands, channels, window) for n in fft_sizes]
        self.discriminators = nn.ModuleList(subs)

    @staticmethod
    def normalize(wav: torch.Tensor) -> torch.Tensor:
        """DAC's preprocessing: ``0.8 * (x - mean) / (max|x - mean| + 1e-9)`` per item and channel."""
        wav = wav - wav.mean(dim=-1, keepdim=True)
        return 0.8 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        wav = check_input(wav)
        if self.preprocess:
            wav = self.normalize(wav)
        return collect(self.discriminators, wav)
