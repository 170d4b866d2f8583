"""DAC-style factorized vector quantisation (Improved VQGAN tricks).

Each layer projects its input to a few dimensions (``codebook_dim``, weight-normed 1x1 conv), picks
the nearest codebook vector by cosine (code and codebook L2-normalised), and projects the raw
(unnormalised) codebook vector back. The codebook is a learned ``nn.Embedding`` trained by gradient:
no EMA, no k-means. Parameter names (``in_proj``, ``out_proj``, ``codebook.weight``) are DAC's.

The layer (projections and nearest-code search, a tiny share of the model's compute) runs in fp32, also
under autocast, so codes and the residual passed to the next layer do not flip.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.conv import apply_norm
from .rvq import ResidualVQ


def nearest_cosine(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the codebook row ``[N, d]`` closest in cosine to each row of ``z [M, d]`` (fp32).

    Uses DAC's arithmetic (squared distance of L2-normalised vectors) so ties break identically.
    """
    with torch.autocast(z.device.type, enabled=False):
        e = F.normalize(z.float())
        c = F.normalize(codebook.float())
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1]


class FactorizedVectorQuantizer(nn.Module):
    """One factorized VQ layer on ``[B, dim, T]``.

    Args:
        dim: input channels.
        codebook_size: number of codes.
        codebook_dim: dimension of the lookup space.
        commitment_weight, codebook_weight: scale of the two training losses (DAC weighs them in the
            trainer; 1.0 here).
    """

    def __init__(self, dim: int, codebook_size: int = 1024, codebook_dim: int = 8,
                 commitment_weight: float = 1.0, codebook_weight: float = 1.0):
        super().__init__()
        self.dim, self.codebook_size, self.codebook_dim = dim, codebook_size, codebook_dim
        self.in_proj = apply_norm(nn.Conv1d(dim, codebook_dim, kernel_size=1), "weight_norm")
        self.out_proj = apply_norm(nn.Conv1d(codebook_dim, dim, kernel_size=1), "weight_norm")
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.commitment_weight, self.codebook_weight = commitment_weight, codebook_weight

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, T] -> [B, codebook_dim, T]`` in fp32."""
        with torch.autocast(x.device.type, enabled=False):
            return self.in_proj(x.float())

    def lookup(self, z_e: torch.Tensor) -> torch.Tensor:
        """Projected latents ``[B, codebook_dim, T] -> codes [B, T]``."""
        flat = z_e.transpose(1, 2).reshape(-1, self.codebook_dim)
        return nearest_cosine(flat, self.codebook.weight).view(z_e.shape[0], z_e.shape[2])

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T] -> raw codebook vectors [B, codebook_dim, T]``."""
        return F.embedding(codes, self.codebook.weight).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, T] -> codes [B, T]``."""
        return self.lookup(self.project(x))

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: ``[B, D, T] -> (codes [B, T], quantized [B, D, T])``, the quantized output computed
        as DAC computes it (``out_proj(z_e + (z_q - z_e))``, which differs from ``out_proj(z_q)`` by
        rounding: with the plain form about one code in a few hundred of the last codebooks of an RVQ
        differs from the official model)."""
        z_e = self.project(x)
        codes = self.lookup(z_e)
        return codes, self.out_proj(z_e + (self.embed(codes) - z_e))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T] -> [B, dim, T]``."""
        return self.out_proj(self.embed(codes))

    def forward(self, x: torch.Tensor):
        """``[B, dim, T] -> (quantized [B, dim, T], codes [B, T], losses)``; straight-through gradient.

        Training losses (DAC): ``commitment = mse(z_e, sg(z_q))``, ``codebook = mse(z_q, sg(z_e))``.
        """
        z_e = self.project(x)
        codes = self.lookup(z_e)
        z_q = self.embed(codes)
        losses = {}
        if self.training:
            losses["commitment"] = F.mse_loss(z_e, z_q.detach().float()) * self.commitment_weight
            losses["codebook"] = F.mse_loss(z_q.float(), z_e.detach()) * self.codebook_weight
        # straight-through; in the forward pass this is z_q up to rounding, and it is DAC's arithmetic
        z_q = z_e + (z_q - z_e).detach()
        with torch.autocast(x.device.type, enabled=False):  # fp32 residual: later codes do not flip
            return self.out_proj(z_q.float()), codes, losses


def factorized_rvq(dim: int, num_quantizers: int = 9, codebook_size: int = 1024,
                   codebook_dim: Union[int, Sequence[int]] = 8, quantizer_dropout: float = 0.0,
                   commitment_weight: float = 1.0, codebook_weight: float = 1.0) -> ResidualVQ:
    """An RVQ of :class:`FactorizedVectorQuantizer` layers (DAC). ``codebook_dim`` may be one int or
    one per layer."""
    dims = [int(codebook_dim)] * num_quantizers if isinstance(codebook_dim, int) else [int(d) for d in codebook_dim]
    if len(dims) != num_quantizers:
        raise ValueError(f"got {len(dims)} codebook dims for {num_quantizers} quantizers")
    layers = [FactorizedVectorQuantizer(dim, codebook_size, d, commitment_weight, codebook_weight) for d in dims]
    return ResidualVQ(layers, float(quantizer_dropout))
