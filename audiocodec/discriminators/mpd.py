"""HiFi-GAN multi-period discriminator (MPD), as used by WavTokenizer, Vocos and DAC.

Each period ``p`` folds ``[B, 1, L]`` into ``[B, 1, L / p, p]`` (reflect-padding ``L`` up to a multiple
of ``p``) and runs Conv2d (kernel ``(5, 1)``) layers over the folded time axis.

Parameter names follow WavTokenizer's ``decoder/discriminators.py``:
``discriminators.{i}.convs.{j}.parametrizations.weight.original{0,1}`` (official ``weight_g`` /
``weight_v``), ``.bias``, ``discriminators.{i}.conv_post.*`` and ``discriminators.{i}.emb.weight``
(``num_embeddings``). DAC's MPD puts each conv in a ``Sequential(conv, LeakyReLU)``: its keys carry an
extra ``.0`` (``convs.{j}.0.weight_g``); see :func:`audiocodec.discriminators.official_key_rules`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2dLeakyReLU, DiscriminatorOutput, check_input, collect, condition, make_embedding, normed


class PeriodDiscriminator(nn.Module):
    """One period: ``[B, 1, L] -> (logits [B, 1, ceil(L / p) / 3**4, p], feature maps)``.

    Args:
        period: fold length ``p``.
        channels: output channels of the convs; all but the last use ``stride`` on time.
        kernel_size, stride: along the folded time axis.
        lrelu_slope: LeakyReLU slope after every conv but the last.
        norm: ``"weight_norm"``, ``"spectral_norm"`` or ``"none"``.
        num_embeddings: size of a conditioning table (WavTokenizer: 4); ``None`` for none.
        fmap_first: include the first conv's output in the feature maps (HiFi-GAN, DAC) or not
            (WavTokenizer).
        fmap_logits: include the logits as the last feature map (HiFi-GAN, WavTokenizer) or not (DAC).
        pad_full_period: pad ``p - L % p`` samples even when ``p`` divides ``L`` (DAC's quirk).
    """

    def __init__(self, period: int, channels: Sequence[int] = (32, 128, 512, 1024, 1024), kernel_size: int = 5,
                 stride: int = 3, lrelu_slope: float = 0.1, norm: str = "weight_norm",
                 num_embeddings: Optional[int] = None, fmap_first: bool = False, fmap_logits: bool = True,
                 pad_full_period: bool = False):
        super().__init__()
        self.period, self.lrelu_slope, self.pad_full_period = int(period), lrelu_slope, pad_full_period
        self.fmap_first, self.fmap_logits = fmap_first, fmap_logits
        convs, c_in = [], 1
        for j, c_out in enumerate(channels):
            s = stride if j < len(channels) - 1 else 1
            convs.append(normed(Conv2dLeakyReLU(c_in, c_out, (kernel_size, 1), (s, 1), padding=(kernel_size // 2, 0),
                                                negative_slope=lrelu_slope), norm))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed(nn.Conv2d(c_in, 1, (3, 1), 1, padding=(1, 0)), norm)
        self.emb = make_embedding(num_embeddings, c_in)

    def forward(self, wav: torch.Tensor, cond_id: Optional[torch.Tensor] = None):
        x = check_input(wav)
        b, c, t = x.shape
        if t % self.period or self.pad_full_period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect" if t > n_pad else "constant")
            t += n_pad
        x = x.view(b, c, t // self.period, self.period)
        fmap = []
        for j, conv in enumerate(self.convs):
            x = conv(x)                          # conv + LeakyReLU
            if j > 0 or self.fmap_first:
                fmap.append(x)
        logits = self.conv_post(x)
        h = condition(self.emb, x, cond_id)
        if h is not None:
            logits = logits + h
        if self.fmap_logits:
            fmap.append(logits)
        return logits, fmap


class MultiPeriodDiscriminator(nn.Module):
    """Several :class:`PeriodDiscriminator` (default periods 2, 3, 5, 7, 11; ~41.1M parameters).

    ``forward(wav [B, 1, L], cond_id=None) -> (logits, fmaps)``, one entry per period; the other
    arguments are those of :class:`PeriodDiscriminator`.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = (32, 128, 512, 1024, 1024),
                 kernel_size: int = 5, stride: int = 3, lrelu_slope: float = 0.1, norm: str = "weight_norm",
                 num_embeddings: Optional[int] = None, fmap_first: bool = False, fmap_logits: bool = True):
        super().__init__()
        self.discriminators = nn.ModuleList([
            PeriodDiscriminator(p, channels, kernel_size, stride, lrelu_slope, norm, num_embeddings,
                                fmap_first, fmap_logits)
            for p in periods])

    def forward(self, wav: torch.Tensor, cond_id: Optional[torch.Tensor] = None) -> DiscriminatorOutput:
        return collect(self.discriminators, wav, cond_id=cond_id)
