"""DAC multi-band multi-scale complex STFT discriminator (DAC's ``MRD``).

Each scale takes the complex STFT at ``window_length`` (hop ``window_length * hop_factor``, centred,
computed in fp32) as ``[B, 2, T, F]`` (real, imag; time first), cuts the frequency axis into bands
(fractions of the ``F = window_length // 2 + 1`` bins; default (0, .1), (.1, .25), (.25, .5), (.5, .75),
(.75, 1)), runs one conv stack per band (Conv2d ``(3, 9)`` 2->32; three ``(3, 9)`` with frequency
stride 2; ``(3, 3)``; LeakyReLU 0.1), concatenates the bands along frequency and applies a
``(3, 3)`` post conv to 1 channel.

Parameter names follow DAC (and WavTokenizer's port): ``band_convs.{b}.{j}.0.*`` (each conv sits in
a ``Sequential(conv, LeakyReLU)``) and ``conv_post.*``. DAC computes its STFT with audiotools
(Hann window, ``match_stride``); WavTokenizer's port uses ``torch.stft`` without a window
(``window="rect"``) and centred frames, which is what this module does.

Keep every band at least 6 bins wide under bf16 on CPU: PyTorch's oneDNN bf16 Conv2d gives wrong
values for a ``(3, 9)`` conv with frequency stride 2 on an input 1 or 2 bins wide (torch 2.11; the
native kernels are right; the default sizes, 512 and up, are far from it).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import DiscriminatorOutput, check_input, collect, conv2d_same, stft_fp32

BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


class BandDiscriminator(nn.Module):
    """One STFT scale: ``[B, 1, L] -> (logits [B, 1, T, F'], 5 * len(bands) feature maps)``.

    ``T = L // hop + 1`` frames; ``F'`` is the sum over bands of ``ceil(band_bins / 8)``. The feature
    maps are the band activations (not the logits), as DAC's feature-matching loss uses them.

    Args:
        window_length: STFT size (``n_fft = win``).
        hop_factor: hop as a fraction of ``window_length``.
        bands: ``(start, end)`` fractions of the frequency bins.
        channels: width of the convs (32).
        window: ``"hann"`` or ``"rect"`` (WavTokenizer's port).
        lrelu_slope, norm: activation slope and conv normalisation.
    """

    def __init__(self, window_length: int, hop_factor: float = 0.25, bands: Sequence[Sequence[float]] = BANDS,
                 channels: int = 32, window: str = "hann", lrelu_slope: float = 0.1, norm: str = "weight_norm"):
        super().__init__()
        self.window_length, self.hop_length = int(window_length), int(window_length * hop_factor)
        self.window = window
        n_bins = self.window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]

        def layer(c_in, kernel, stride):   # DAC's Sequential(conv, LeakyReLU); the conv applies the activation
            return nn.Sequential(conv2d_same(c_in, channels, kernel, stride, norm=norm, leaky_relu=lrelu_slope),
                                 nn.Identity())

        self.band_convs = nn.ModuleList([
            nn.ModuleList([layer(2, (3, 9), (1, 1)), layer(channels, (3, 9), (1, 2)), layer(channels, (3, 9), (1, 2)),
                           layer(channels, (3, 9), (1, 2)), layer(channels, (3, 3), (1, 1))])
            for _ in self.bands])
        self.conv_post = conv2d_same(channels, 1, (3, 3), norm=norm)

    def spectrogram(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 1, L]`` -> one ``[B, 2, T, band_bins]`` tensor per band (fp32)."""
        z = stft_fp32(check_input(wav), self.window_length, self.hop_length, window=self.window, center=True)
        z = torch.stack([z.real, z.imag], dim=1).transpose(2, 3)
        return [z[..., lo:hi] for lo, hi in self.bands]

    def forward(self, wav: torch.Tensor):
        fmap, outs = [], []
        for x, stack in zip(self.spectrogram(wav), self.band_convs):
            x = x.to(wav.dtype)
            for layer in stack:
                x = layer(x)
                fmap.append(x)
            outs.append(x)
        return self.conv_post(torch.cat(outs, dim=-1)), fmap


class MultiBandDiscriminator(nn.Module):
    """:class:`BandDiscriminator` at several STFT sizes (default 2048, 1024, 512; ~1.41M parameters).

    ``forward(wav [B, 1, L]) -> (logits, fmaps)``, one entry per STFT size; the other arguments are
    those of :class:`BandDiscriminator`.
    """

    def __init__(self, fft_sizes: Sequence[int] = (2048, 1024, 512), hop_factor: float = 0.25,
                 bands: Sequence[Sequence[float]] = BANDS, channels: int = 32, window: str = "hann",
                 lrelu_slope: float = 0.1, norm: str = "weight_norm"):
        super().__init__()
        self.discriminators = nn.ModuleList([
            BandDiscriminator(n, hop_factor, bands, channels, window, lrelu_slope, norm) for n in fft_sizes])

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        return collect(self.discriminators, wav)
