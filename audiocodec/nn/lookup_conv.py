"""A convolution of looked-up vectors as one table lookup.

A codec decoder reads features that are sums of code vectors, ``f[t] = sum_k E_k[c_k[t]]`` (one table ``E_k [C,
D_in]`` per codebook), and its first layer is often a convolution of ``r`` taps. The conv of such features is a sum
of rows of precomputed tables: ``out[t] = b + sum_j sum_k (W_j E_k)[c_k[t + j - p]]``. Computing it so takes ``r K``
row additions per output instead of ``r D_in`` multiply-adds per output channel (WavTokenizer's decoder: 7 rows of
768 instead of a 512 -> 768, k=7 conv, 2.1 GFLOP per 5 s), at the price of a table of ``r K C D_out`` floats
(88 MB for WavTokenizer's 4096 codes). Each output is then a sum of ``r K`` rows, each row a ``D_in``-term dot
product, where the conv sums ``r D_in`` products: no less exact than the conv.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def conv_tables(vectors: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The rows that :func:`lookup_conv` sums: ``vectors [K, C, D_in]`` (codebook ``k``'s vector of code ``c``)
    through each tap of ``weight [D_out, D_in, r]``, ``(W_j E_k)[c]`` at row ``(j K + k) C + c``, then a row of
    zeros (padding) and the ``bias`` (zeros without one): ``[r K C + 2, D_out]`` in ``weight``'s dtype, one GEMM
    per tap (WavTokenizer's 88 MB: 0.2 s on 2 vCPUs)."""
    k, c, d_in = vectors.shape
    d_out, w_in, r = weight.shape
    if w_in != d_in:
        raise ValueError(f"code vectors of {d_in} channels do not fit a conv of {w_in} input channels")
    out = weight.new_empty(r * k * c + 2, d_out)
    flat = vectors.reshape(k * c, d_in).to(weight.dtype)
    for j, rows in enumerate(out[:r * k * c].view(r, k * c, d_out)):
        torch.mm(flat, weight[:, :, j].t(), out=rows)
    out[-2:].zero_()
    if bias is not None:
        out[-1] = bias
    return out


def lookup_conv(tokens: torch.Tensor, tables: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The zero-padded "same" conv (odd ``kernel_size`` r, stride 1) of the features of ``tokens [B, K, T]`` as sums
    of rows of ``tables`` (:func:`conv_tables`, built for ``K`` codebooks of ``C`` codes): ``[B, D_out, T]``, a
    time-major view (``[B, T, D_out]`` memory). Equal to the conv of the features up to float rounding."""
    b, k, t = tokens.shape
    r = kernel_size
    c = (tables.shape[0] - 2) // (r * k)
    zero_row, bias_row = r * k * c, r * k * c + 1
    pad = (r - 1) // 2
    flat = tokens + torch.arange(k, device=tokens.device)[:, None] * c                # [B, K, T]
    windows = F.pad(flat, (pad, pad), value=-1).unfold(-1, r, 1)                     # [B, K, T, r]: t + j - pad
    rows = windows + torch.arange(r, device=tokens.device) * (k * c)
    rows = torch.where(windows < 0, zero_row, rows).permute(0, 2, 3, 1).reshape(b * t, r * k)
    rows = torch.cat([rows, rows.new_full((b * t, 1), bias_row)], dim=1)
    return F.embedding_bag(rows, tables, mode="sum").view(b, t, -1).transpose(1, 2)
