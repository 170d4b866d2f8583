"""fp32 matrix products on bf16 tensor cores: each fp32 operand is split into bf16 parts whose sum is the value,
and the products of the parts are summed by one GEMM with fp32 accumulation.

A GPU's fp32 GEMMs run without tensor cores (an H100: ~60 TFLOP/s fp32 against ~990 bf16), so a product of
operands split into ``P`` parts, as one bf16 GEMM ``P(P+1)/2`` times as deep, can run faster than the fp32 GEMM
while keeping its accuracy: with ``x = x0 + x1 + x2`` and ``w = w0 + w1 + w2`` (each part 8 significant bits below
the previous one), ``x w`` is the sum of the six products ``x_i w_j`` with ``i + j <= 2``; the dropped ones add up
to ~``2^-23`` of ``|x| |w|``, about fp32's own rounding of a product. Two parts (three products) give ~``2^-16``.

The parts are cut by rounding the bits of the fp32 value (not by casts, which a compiler may fuse away), so the
split is exact under ``torch.compile`` too.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .conv import TimeMajorWeights

#: the products ``(part of x, part of w)`` summed for ``parts`` = 1, 2, 3
PRODUCTS = {1: ((0, 0),), 2: ((0, 0), (0, 1), (1, 0)), 3: ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))}


def _round_to_bf16_bits(t: torch.Tensor) -> torch.Tensor:
    """fp32 ``t`` rounded to bf16's 8 significant bits (half away from zero), still fp32, by integer arithmetic
    on its bits: the low 16 bits cleared after adding half of them."""
    bits = t.view(torch.int32)
    return ((bits + 0x8000) & -0x10000).view(torch.float32)


def split_bf16(t: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """``t`` (any float dtype, computed in fp32) as ``parts`` bf16 tensors whose fp32 sum is ``t`` to
    ``2^(-8 parts)`` relative (3 parts: exactly): ``hi`` = ``t`` rounded to bf16, ``mid`` = the rest rounded, ...
    Each part is exact in bf16, so its conversion rounds nothing."""
    out, rest = [], t.float().contiguous()
    for i in range(parts):
        part = _round_to_bf16_bits(rest)
        out.append(part.to(torch.bfloat16))
        if i + 1 < parts:
            rest = rest - part
    return out


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of bf16 matrices with fp32 accumulation and output (the exact products of bf16 numbers, summed
    in fp32): one tensor-core GEMM on CUDA, an fp32 GEMM of the same values elsewhere."""
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


def split_weight_operand(weight: torch.Tensor, parts: int) -> torch.Tensor:
    """A linear layer's ``weight [N, K]`` -> ``[N, len(PRODUCTS[parts]) * K]`` bf16: its parts side by side in the
    order of :data:`PRODUCTS`, the right operand of :func:`split_bf16_linear` (build it once per weight)."""
    return parts_side_by_side(weight.detach(), parts, [j for _, j in PRODUCTS[parts]])


def split_input_operand(x: torch.Tensor, parts: int) -> torch.Tensor:
    """``x [..., K]`` -> ``[..., len(PRODUCTS[parts]) * K]`` bf16: its parts side by side in the order of
    :data:`PRODUCTS`, the left operand against :func:`split_weight_operand`."""
    return parts_side_by_side(x, parts, [i for i, _ in PRODUCTS[parts]])


def parts_side_by_side(x: torch.Tensor, parts: int, levels: list[int]) -> torch.Tensor:
    """``x [..., K]`` -> ``[..., len(levels) * K]`` bf16: slot ``j`` holds part ``levels[j]`` of ``x``'s
    :func:`split_bf16` into ``parts``.

    Written as one selection over a broadcast (``[..., len(levels), K]``, each slot's part picked by its level),
    not as a concatenation: ``torch.compile`` turns a concatenation of computed tensors into a kernel that
    evaluates every input for every element under masks (with the producer, e.g. a GELU, inlined into each), which
    made this kernel compute-bound at ~1/10 of memory speed; the selection computes each element's parts once from
    one load."""
    xs = [p.unsqueeze(-2) for p in split_bf16(x, parts)]               # each [..., 1, K] bf16
    # the slots' masks made on the device (a tensor of the levels copied from the host would break CUDA graph
    # capture of an eager caller, e.g. the codebook search)
    slot = torch.arange(len(levels), device=x.device).view(-1, 1)      # [len(levels), 1]
    out = xs[-1]
    for i in range(parts - 2, -1, -1):
        slots = [slot == j for j, level in enumerate(levels) if level == i]
        if slots:
            out = torch.where(functools.reduce(torch.logical_or, slots), xs[i], out)
    out = out.expand(*x.shape[:-1], len(levels), x.shape[-1])
    return out.reshape(*x.shape[:-1], len(levels) * x.shape[-1])


def split_bf16_linear(x: torch.Tensor, weight_operand: torch.Tensor, bias: Optional[torch.Tensor],
                      parts: int) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` in fp32 as one bf16 GEMM of split operands: ``x [..., K]``,
    ``weight_operand = split_weight_operand(weight, parts)`` ``[N, P K]`` -> ``[..., N]`` fp32."""
    a = split_input_operand(x, parts)
    out = mm_fp32(a.reshape(-1, a.shape[-1]), weight_operand.t())
    if bias is not None:
        out = out + bias.float()
    return out.view(*x.shape[:-1], weight_operand.shape[0])


def weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A linear layer's ``weight [N, K]`` as is, or a conv1d's ``[C_out, C_in, k]`` as ``[C_out, k C_in]`` (tap
    major: the order of :func:`split_bf16_conv1d`'s columns)."""
    return weight if weight.dim() == 2 else weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


def split_bf16_conv1d(x: torch.Tensor, weight_operand: torch.Tensor, bias: Optional[torch.Tensor], kernel_size: int,
                      parts: int) -> torch.Tensor:
    """A stride-1, undilated, ungrouped conv1d with zero "same" padding (odd ``kernel_size``) of ``x [B, C_in, T]``
    in fp32 as one bf16 GEMM of split operands over its im2col columns (``[B, T, k C_in]``; under ``torch.compile``
    the padding, the columns and the split are one kernel). ``weight_operand``: :func:`split_weight_operand` of
    :func:`weight_matrix` of the conv's weight. Returns ``[B, C_out, T]`` (a time-major view)."""
    pad = kernel_size // 2
    cols = F.pad(x, (pad, pad)).unfold(-1, kernel_size, 1)  # [B, C_in, T, k]
    cols = cols.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[-1], -1)
    return split_bf16_linear(cols, weight_operand, bias, parts).transpose(1, 2)


@torch.compiler.disable
def cached_weight_operands(owner: nn.Module, layers: tuple[nn.Module, ...], parts: int) -> list[torch.Tensor]:
    """:func:`split_weight_operand` of each of ``layers``' weights (linear layers and convs, see
    :func:`weight_matrix`), cached on ``owner`` and rebuilt when a weight changes. Kept out of ``torch.compile``
    graphs (a graph would recompute the split on every call): called first in a compiled forward, its break in the
    graph costs no fusion."""
    return [TimeMajorWeights.get(owner, f"split_bf16_{parts}_{i}", layer.weight,
                                 lambda w: split_weight_operand(weight_matrix(w), parts))
            for i, layer in enumerate(layers)]
