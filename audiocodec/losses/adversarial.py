"""Adversarial and feature-matching losses, each averaged over sub-discriminators; the values are fp32.

Loss types (``kind``), for logits ``r`` (real) and ``f`` (fake):

============== ===================================== ==================================
kind           discriminator                         generator
============== ===================================== ==================================
hinge          mean(relu(1 - r)) + mean(relu(1 + f)) mean(relu(1 - f))  (WavTokenizer, MelGAN)
hinge_linear   same as hinge                         -mean(f)  (EnCodec / audiocraft "hinge")
lsgan          mean((1 - r)^2) + mean(f^2)           mean((1 - f)^2)  (HiFi-GAN, DAC)
============== ===================================== ==================================

Feature matching: ``mean(|real - fake|)`` per feature map (the real maps detached), summed
(WavTokenizer, DAC, HiFi-GAN) or averaged (EnCodec) over a sub-discriminator's maps, then averaged over
sub-discriminators.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

ADVERSARIAL_LOSSES = ("hinge", "hinge_linear", "lsgan")


def check_kind(kind: str) -> str:
    if kind not in ADVERSARIAL_LOSSES:
        raise ConfigError(f"unknown adversarial loss {kind!r}; known: {', '.join(ADVERSARIAL_LOSSES)}")
    return kind


def _mean(values: list) -> torch.Tensor:
    return torch.stack(values).mean()


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor],
                       kind: str = "hinge") -> torch.Tensor:
    """Discriminator loss, averaged over sub-discriminators (lists of logits of any shape)."""
    check_kind(kind)
    if len(real_logits) != len(fake_logits) or not len(real_logits):
        raise ValueError("discriminator_loss: need as many (>= 1) real as fake logits")
    out = []
    for r, f in zip(real_logits, fake_logits):
        r, f = r.float(), f.float()
        if kind == "lsgan":
            out.append((1 - r).pow(2).mean() + f.pow(2).mean())
        else:
            out.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
    return _mean(out)


def generator_loss(fake_logits: Sequence[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Generator (adversarial) loss, averaged over sub-discriminators."""
    check_kind(kind)
    if not len(fake_logits):
        raise ValueError("generator_loss: no logits")
    out = []
    for f in fake_logits:
        f = f.float()
        if kind == "lsgan":
            out.append((1 - f).pow(2).mean())
        elif kind == "hinge":
            out.append(F.relu(1 - f).mean())
        else:
            out.append(-f.mean())
    return _mean(out)


def _mean_abs_difference(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``mean(|fake - real|)`` as an fp32 scalar, in four passes over the maps (difference, L1 norm; backward:
    sign, scale) in their own dtype: no fp32 copy of a map (under bf16 autocast the sum is accumulated in fp32
    and rounded to bf16, as the official codes compute the whole term in bf16; the gradient is exact)."""
    return torch.linalg.vector_norm(fake - real, 1).float() / fake.numel()


def feature_matching_loss(real_fmaps: Sequence[Sequence[torch.Tensor]], fake_fmaps: Sequence[Sequence[torch.Tensor]],
                          layers: str = "sum") -> torch.Tensor:
    """Mean L1 between real (detached) and fake feature maps.

    Args:
        real_fmaps, fake_fmaps: one list of maps per sub-discriminator.
        layers: ``"sum"`` or ``"mean"`` over one sub-discriminator's maps; sub-discriminators are
            always averaged.
    """
    if layers not in ("sum", "mean"):
        raise ConfigError(f"feature matching layers must be 'sum' or 'mean', got {layers!r}")
    if len(real_fmaps) != len(fake_fmaps) or not len(real_fmaps):
        raise ValueError("feature_matching_loss: need as many (>= 1) real as fake feature-map lists")
    out = []
    for rs, fs in zip(real_fmaps, fake_fmaps):
        if len(rs) != len(fs) or not len(rs):
            raise ValueError("feature_matching_loss: sub-discriminator with mismatched or no feature maps")
        per = torch.stack([_mean_abs_difference(f, r.detach()) for r, f in zip(rs, fs)])
        out.append(per.sum() if layers == "sum" else per.mean())
    return _mean(out)
