"""Time the split-bf16 operand kernels and GEMMs (audiocodec.nn.split_bf16) on CUDA, compiled, for the shapes of a
batch-1 WavTokenizer decode (750 frames): the left operand's split (as the codec runs it: one kernel writing the
parts side by side, 6 K columns for 3 parts) against leaner layouts, and the GEMM against the fp32 one. Times are
CUDA-graph replays (session 14's first run timed single calls, which the host's launch time bounded).

    python benchmarks/split_bf16_speed.py [--rows 750]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audiocodec.nn.split_bf16 import (PRODUCTS, mm_fp32, parts_side_by_side, split_bf16,  # noqa: E402
                                      split_input_operand, split_weight_operand)


def concatenated(t: torch.Tensor, parts: int) -> torch.Tensor:
    """The left operand as first written: a concatenation of the parts (inductor evaluates every input for
    every element under masks)."""
    xs = split_bf16(t, parts)
    return torch.cat([xs[i] for i, _ in PRODUCTS[parts]], dim=-1)


def cuda_time(fn, calls: int = 20, repeats: int = 20) -> float:
    """Median GPU time of ``fn()`` in microseconds: ``calls`` calls captured in one CUDA graph and replayed, so
    that the host's launch and dispatch time (~50 us a compiled call, more than these kernels take) is not
    counted."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=750)
    args = p.parse_args(argv)
    m = args.rows
    print(f"| shape (M x K -> N) | what | us | GB/s written |")
    print("|---|---|---|---|")
    for k, n in [(768, 2304), (2304, 768)]:
        x = torch.randn(m, k, device="cuda")
        w = torch.randn(n, k, device="cuda") * 0.02
        b = torch.randn(k, device="cuda")
        variants = {
            "split, 3 parts x6, selection over a broadcast (as run)": lambda t: split_input_operand(t, 3),
            "split, 3 parts x6, concatenation (before)": lambda t: concatenated(t, 3),
            "GELU(x + b), then split as run (the MLP's kernel)": lambda t: split_input_operand(F.gelu(t + b), 3),
            "GELU(x + b), then split by concatenation (before)": lambda t: concatenated(F.gelu(t + b), 3),
            "split, 3 distinct parts side by side (x3), selection": lambda t: parts_side_by_side(t, 3, [0, 1, 2]),
            "GELU(x + b), then 3 distinct parts (x3), selection": lambda t: parts_side_by_side(F.gelu(t + b), 3,
                                                                                                [0, 1, 2]),
            "split, 3 distinct parts as separate tensors": lambda t: tuple(split_bf16(t, 3)),
            "split, 2 parts x3 (as run)": lambda t: split_input_operand(t, 2),
            "cast to bf16 (a floor)": lambda t: t.to(torch.bfloat16),
        }
        for name, fn in variants.items():
            compiled = torch.compile(fn, dynamic=False)
            out = compiled(x)
            us = cuda_time(lambda: compiled(x))
            outs = out if isinstance(out, tuple) else (out,)
            written = sum(o.numel() * o.element_size() for o in outs)
            print(f"| {m} x {k} -> {n} | {name} | {us:.1f} | {written / us / 1e3:.0f} |")
        a6 = split_input_operand(x, 3)
        w6 = split_weight_operand(w, 3)
        print(f"| {m} x {k} -> {n} | bf16 GEMM, K' = 6 K | {cuda_time(lambda: mm_fp32(a6, w6.t())):.1f} | |")
        a3 = parts_side_by_side(x, 3, [0, 1, 2])
        ws = split_bf16(w, 3)
        b0, b1, b2 = (torch.cat([ws[j]] * (3 - j), dim=1).t().contiguous() for j in range(3))

        def three():
            out = mm_fp32(a3, b0)
            out += mm_fp32(a3[:, :2 * k], b1)
            out += mm_fp32(a3[:, :k], b2)
            return out

        def three_addmm():
            out = mm_fp32(a3, b0)
            out = torch.addmm(out, a3[:, :2 * k], b1, out_dtype=torch.float32)
            return torch.addmm(out, a3[:, :k], b2, out_dtype=torch.float32)
        ref = x.double() @ w.double().t()
        for name, fn in (("three bf16 GEMMs on views of x3, summed by adds", three),
                         ("three bf16 GEMMs on views of x3, summed by addmm", three_addmm)):
            err = ((fn().double() - ref).abs().max() / ref.abs().max()).item()
            print(f"| {m} x {k} -> {n} | {name} (error {err:.1e}) | {cuda_time(fn):.1f} | |")
        print(f"| {m} x {k} -> {n} | fp32 GEMM | {cuda_time(lambda: x @ w.t()):.1f} | |")


if __name__ == "__main__":
    main()
