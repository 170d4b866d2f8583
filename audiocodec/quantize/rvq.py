"""Residual vector quantisation over any quantizer layer type, with quantizer dropout."""
from __future__ import annotations

import random
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from .vq import QuantizerOutput, VectorQuantizer


class ResidualVQ(nn.Module):
    """``num_quantizers`` layers, each quantizing the residual left by the previous ones.

    Args:
        layers: the quantizer layers (each with ``forward / encode / quantize / decode`` on ``[B, D, T]``).
        quantizer_dropout: probability that a training batch uses a random number ``1..K`` of layers
            (EnCodec / DAC bitrate scalability).

    ``codes`` are ``[B, K, T]`` long; ``K`` defaults to ``num_codebooks`` (see :meth:`set_num_codebooks`).
    """

    def __init__(self, layers: list[nn.Module], quantizer_dropout: float = 0.0):
        super().__init__()
        if not layers:
            raise ValueError("ResidualVQ needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.quantizer_dropout = quantizer_dropout
        self.num_codebooks = len(layers)
        self.cardinality = int(layers[0].codebook_size)

    @property
    def max_codebooks(self) -> int:
        return len(self.layers)

    def set_num_codebooks(self, n: int):
        """Use the first ``n`` codebooks for encoding (bitrate control)."""
        if not 1 <= n <= self.max_codebooks:
            raise ValueError(f"number of codebooks must be in 1..{self.max_codebooks}, got {n}")
        self.num_codebooks = n

    def forward(self, x: torch.Tensor, n_q: Optional[int] = None) -> QuantizerOutput:
        n_q = n_q or self.num_codebooks
        if self.training and self.quantizer_dropout > 0:
            n_q = self._dropout_codebooks(n_q, x.device)
        residual = x
        quantized = torch.zeros_like(x)
        codes, losses = [], {}
        for layer in self.layers[:n_q]:
            q, c, layer_losses = layer(residual)
            residual = residual - q
            quantized = quantized + q
            codes.append(c)
            for name, value in layer_losses.items():
                losses[name] = losses.get(name, 0.0) + value / n_q
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), losses)

    def _dropout_codebooks(self, n_q: int, device) -> int:
        """Quantizer dropout: a random number 1..n_q of codebooks with probability ``quantizer_dropout``.
        Under torch.distributed every rank uses rank 0's draw, so their codebook updates stay in step."""
        draw = random.randint(1, n_q) if random.random() < self.quantizer_dropout else n_q
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([draw], device=device if dist.get_backend() == "nccl" else "cpu")
            dist.broadcast(t, 0)
            draw = int(t.item())
        return draw

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: Optional[int] = None) -> torch.Tensor:
        """``[B, D, T] -> codes [B, n_q, T]``; the residual is carried in fp32."""
        n_q = n_q or self.num_codebooks
        with torch.autocast(x.device.type, enabled=False):
            residual = x.float()
            codes = []
            layers = self.layers[:n_q]
            for layer in layers[:-1]:
                c, q = layer.quantize(residual)
                residual = residual - q
                codes.append(c)
            codes.append(layers[-1].encode(residual))   # the last layer's residual is not needed
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T] -> [B, D, T]`` (sum over the first K layers)."""
        out = self.layers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out


def euclidean_rvq(dim: int, num_quantizers: int = 8, codebook_size: int = 1024, codebook_dim: int | None = None,
                  decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 10,
                  threshold_ema_dead_code: float = 2.0, commitment_weight: float = 1.0,
                  quantizer_dropout: float = 0.0) -> ResidualVQ:
    """An RVQ of EMA Euclidean codebooks (EnCodec / WavTokenizer / SpeechTokenizer)."""
    layers = [VectorQuantizer(dim, codebook_size, codebook_dim, decay, 1e-5, kmeans_init, kmeans_iters,
                              threshold_ema_dead_code, commitment_weight) for _ in range(num_quantizers)]
    return ResidualVQ(layers, quantizer_dropout)
