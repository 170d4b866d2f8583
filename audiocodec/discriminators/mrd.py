"""UnivNet multi-resolution discriminator (MRD) on linear STFT magnitudes, as in WavTokenizer / Vocos.

Each resolution ``(n_fft, hop, win)`` turns ``[B, 1, L]`` into a magnitude image ``[B, 1, F, T]``
(``F = n_fft // 2 + 1``, ``T = L // hop + 1``; computed in fp32) and runs five Conv2d layers
(kernels ``(7, 5)``, ``(5, 3)``, ``(5, 3)``, 3, 3 with strides ``(2, 2)``, ``(2, 1)``, ``(2, 2)``, ``(2, 1)``,
``(2, 2)``, frequency first) and a ``(3, 3)`` post conv.

Parameter names follow WavTokenizer's ``decoder/discriminators.py``:
``discriminators.{i}.convs.{j}.*``, ``discriminators.{i}.conv_post.*``, ``discriminators.{i}.emb.weight``.
WavTokenizer's STFT has no window (``window=None``: rectangular), kept here as the default.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .common import Conv2dLeakyReLU, DiscriminatorOutput, collect, condition, make_embedding, normed, stft_fp32

_LAYERS = (((7, 5), (2, 2)), ((5, 3), (2, 1)), ((5, 3), (2, 2)), ((3, 3), (2, 1)), ((3, 3), (2, 2)))


class ResolutionDiscriminator(nn.Module):
    """One resolution: ``[B, 1, L] -> (logits [B, 1, F / 32, T / 8] (rounded up), 6 feature maps)``.

    Args:
        resolution: ``(n_fft, hop_length, win_length)``.
        channels: width of every conv (64).
        window: ``"rect"`` (WavTokenizer / Vocos) or ``"hann"``.
        lrelu_slope, norm, num_embeddings: as in :class:`~audiocodec.discriminators.mpd.PeriodDiscriminator`.
    """

    def __init__(self, resolution: Sequence[int], channels: int = 64, window: str = "rect", lrelu_slope: float = 0.1,
                 norm: str = "weight_norm", num_embeddings: Optional[int] = None):
        super().__init__()
        self.resolution = tuple(int(r) for r in resolution)
        self.window, self.lrelu_slope = window, lrelu_slope
        convs, c_in = [], 1
        for kernel, stride in _LAYERS:
            convs.append(normed(Conv2dLeakyReLU(c_in, channels, kernel, stride,
                                                padding=(kernel[0] // 2, kernel[1] // 2), negative_slope=lrelu_slope),
                                norm))
            c_in = channels
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)), norm)
        self.emb = make_embedding(num_embeddings, channels)

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L] -> |STFT| [B, 1, n_fft // 2 + 1, L // hop + 1]`` in fp32."""
        n_fft, hop, win = self.resolution
        return stft_fp32(wav, n_fft, hop, win, window=self.window, center=True).abs()[:, None]

    def forward(self, wav: torch.Tensor, cond_id: Optional[torch.Tensor] = None):
        x = self.spectrogram(wav).to(wav.dtype)
        fmap = []
        for conv in self.convs:
            x = conv(x)                          # conv + LeakyReLU
            fmap.append(x)
        logits = self.conv_post(x)
        h = condition(self.emb, x, cond_id)
        if h is not None:
            logits = logits + h
        fmap.append(logits)
        return logits, fmap


class MultiResolutionDiscriminator(nn.Module):
    """Several :class:`ResolutionDiscriminator`: default ``(1024, 256, 1024)``, ``(2048, 512, 2048)``,
    ``(512, 128, 512)``, 64 channels (~0.60M parameters with weight norm).

    ``forward(wav [B, 1, L], cond_id=None) -> (logits, fmaps)``, one entry per resolution.
    """

    def __init__(self, resolutions: Sequence[Sequence[int]] = ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)),
                 channels: int = 64, window: str = "rect", lrelu_slope: float = 0.1, norm: str = "weight_norm",
                 num_embeddings: Optional[int] = None):
        super().__init__()
        self.discriminators = nn.ModuleList([
            ResolutionDiscriminator(r, channels, window, lrelu_slope, norm, num_embeddings) for r in resolutions])

    def forward(self, wav: torch.Tensor, cond_id: Optional[torch.Tensor] = None) -> DiscriminatorOutput:
        return collect(self.discriminators, wav, cond_id=cond_id)
