"""EnCodec multi-scale STFT (MS-STFT) discriminator on complex spectrograms.

Each scale takes the complex STFT (periodic Hann window, no centring, scaled by
``1 / sqrt(sum(window ** 2))``, computed in fp32) as a 2-channel image ``[B, 2, T, F]`` (real, imag;
time first), then: Conv2d ``(3, 9)``; three Conv2d ``(3, 9)`` with stride ``(1, 2)`` and time dilation
1, 2, 4; Conv2d ``(3, 3)``; post Conv2d ``(3, 3)`` to 1 channel. LeakyReLU after each conv but the
post. As in the official code the first conv has no weight norm.

Parameter names follow ``encodec.msstftd`` without its ``.conv`` wrapper:
``discriminators.{i}.convs.{j}.*``, ``discriminators.{i}.conv_post.*`` (official:
``discriminators.{i}.convs.{j}.conv.weight_g``, ...).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .common import DiscriminatorOutput, check_input, collect, conv2d_same, stft_fp32


class STFTDiscriminator(nn.Module):
    """One scale: ``[B, 1, L] -> (logits [B, 1, T, F / 8] (rounded up), 5 feature maps)``.

    ``T = (L - win) // hop + 1`` frames, ``F = n_fft // 2 + 1`` bins. The feature maps are the five
    activations (not the logits), as in EnCodec.

    Args:
        filters: base width (32). ``filters_scale`` multiplies it per layer, capped at ``max_filters``.
        n_fft, hop_length, win_length: STFT of this scale.
        kernel_size, stride: of the inner convs, ``(time, freq)``.
        dilations: time dilations of the strided convs.
        normalized: scale the STFT by the window norm.
        lrelu_slope: 0.2 (EnCodec default; audiocraft's config uses 0.3).
        norm: of every conv but the first.
    """

    def __init__(self, filters: int = 32, n_fft: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 max_filters: int = 1024, filters_scale: int = 1, kernel_size: Sequence[int] = (3, 9),
                 dilations: Sequence[int] = (1, 2, 4), stride: Sequence[int] = (1, 2), normalized: bool = True,
                 lrelu_slope: float = 0.2, norm: str = "weight_norm"):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.normalized, self.lrelu_slope = normalized, lrelu_slope
        k = tuple(kernel_size)
        slope = lrelu_slope
        convs = [conv2d_same(2, filters, k, norm="none", leaky_relu=slope)]
        c_in = min(filters_scale * filters, max_filters)
        for i, d in enumerate(dilations):
            c_out = min(filters_scale ** (i + 1) * filters, max_filters)
            convs.append(conv2d_same(c_in, c_out, k, stride, dilation=(d, 1), norm=norm, leaky_relu=slope))
            c_in = c_out
        c_out = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        convs.append(conv2d_same(c_in, c_out, (k[0], k[0]), norm=norm, leaky_relu=slope))
        self.convs = nn.ModuleList(convs)
        self.conv_post = conv2d_same(c_out, 1, (k[0], k[0]), norm=norm)

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L] -> [B, 2, T, F]`` (real, imag) in fp32."""
        z = stft_fp32(check_input(wav), self.n_fft, self.hop_length, self.win_length, window="hann", center=False,
                      normalized=self.normalized)
        return torch.stack([z.real, z.imag], dim=1).transpose(2, 3)

    def forward(self, wav: torch.Tensor):
        z = self.spectrogram(wav).to(wav.dtype)
        fmap = []
        for conv in self.convs:
            z = conv(z)                          # conv + LeakyReLU
            fmap.append(z)
        return self.conv_post(z), fmap


class MultiScaleSTFTDiscriminator(nn.Module):
    """:class:`STFTDiscriminator` at several scales (default ``n_fft`` 1024, 2048, 512, 256, 128,
    hop ``n_fft // 4``, window ``n_fft``; ~0.47M parameters with 32 filters).

    ``hop_lengths`` / ``win_lengths`` default to ``n_fft // 4`` / ``n_fft``; other keyword arguments
    go to every :class:`STFTDiscriminator`. ``forward(wav [B, 1, L]) -> (logits, fmaps)``.
    """

    def __init__(self, filters: int = 32, n_ffts: Sequence[int] = (1024, 2048, 512, 256, 128),
                 hop_lengths: Optional[Sequence[int]] = None, win_lengths: Optional[Sequence[int]] = None,
                 max_filters: int = 1024, filters_scale: int = 1, kernel_size: Sequence[int] = (3, 9),
                 dilations: Sequence[int] = (1, 2, 4), stride: Sequence[int] = (1, 2), normalized: bool = True,
                 lrelu_slope: float = 0.2, norm: str = "weight_norm"):
        super().__init__()
        hop_lengths = list(hop_lengths) if hop_lengths is not None else [n // 4 for n in n_ffts]
        win_lengths = list(win_lengths) if win_lengths is not None else list(n_ffts)
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("MultiScaleSTFTDiscriminator: n_ffts, hop_lengths and win_lengths differ in length")
        self.discriminators = nn.ModuleList([
            STFTDiscriminator(filters, n, h, w, max_filters, filters_scale, kernel_size, dilations, stride,
                              normalized, lrelu_slope, norm)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths)])

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        return collect(self.discriminators, wav)
