"""Weight initialisation schemes for convolutional stacks, aware of weight normalisation.

Why it matters for codecs: with PyTorch's default convolution init (uniform, gain ``1/sqrt(3)``, random
biases) a deep SEANet encoder shrinks its input at every layer until the biases dominate. On speech
crops the latents of the EnCodec / WavTokenizer encoder at init vary by about 2% of their norm from
frame to frame (mean pairwise cosine 0.999): k-means then seeds the codebook on that tiny spread, the
first optimizer steps move every latent together by more than the spread, and all frames fall onto a
handful of codes (measured: perplexity 1-5 of 4096 after 10 steps, with an EMA codebook and with a
DAC-style factorized one). The ``lecun`` scheme (normal, std ``1/sqrt(fan_in)``, zero biases) keeps
the latents' scale about constant through the stack (frame norm ~2 for 256 dims on speech at -6 dBFS
peak) and makes frames nearly orthogonal at init (mean cosine 0.06).

Loading a checkpoint overwrites whatever the scheme chose, so it only matters for training from scratch.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Known schemes: ``torch`` leaves PyTorch's defaults, ``lecun`` is described in the module docstring.
INIT_SCHEMES = ("torch", "lecun")


def _fan_in(module: nn.Module, weight: torch.Tensor) -> float:
    if isinstance(module, nn.ConvTranspose1d):
        # each output sample sees in_channels * kernel_size / stride inputs
        return weight.shape[0] * weight.shape[2] / module.stride[0]
    return weight[0].numel()


@torch.no_grad()
def init_weights_(module: nn.Module, scheme: str = "lecun") -> nn.Module:
    """Re-initialise every ``Conv1d`` / ``ConvTranspose1d`` / ``Linear`` inside ``module`` (in place).

    Weight-normed layers (``parametrizations.weight_norm``) get the new weight through the
    parametrisation, so magnitude and direction stay consistent. Returns ``module``.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return module
    for m in module.modules():
        if not isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            continue
        weight = m.weight
        new = torch.randn_like(weight) / math.sqrt(_fan_in(m, weight))
        if parametrize.is_parametrized(m, "weight"):
            m.weight = new  # weight_norm's right_inverse sets magnitude and direction
        else:
            weight.copy_(new)
        if m.bias is not None:
            m.bias.zero_()
    return module
