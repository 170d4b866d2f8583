"""Command-line options shared by the token-generation benchmarks (tts_speed.py, song_speed.py)."""
from __future__ import annotations

import argparse
import functools
from typing import Callable, Optional

import torch

from audiocodec.lm.transformer import RMSNorm


def add_decoding_args(p: argparse.ArgumentParser, dtype_help: Optional[str] = None) -> None:
    """``--device``, ``--dtype`` (of the decoding LM), ``--repeats``, ``--modes`` (eager / graphs / compiled),
    ``--norm`` (RMSNorm kernels), ``--steps-per-graph``, ``--json``."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"], help=dtype_help)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=None, choices=["eager", "graphs", "compiled"],
                   help="decoding: eager, the whole step replayed from CUDA graphs, or compiled (graphs of the "
                        "step's torch.compile'd halves: generate(compile_step=True)) (default: eager and graphs on "
                        "CUDA, eager on CPU)")
    p.add_argument("--norm", choices=["auto", "fused", "elementwise"], default="auto",
                   help="RMSNorm kernels: PyTorch's fused rms_norm or the elementwise path (auto: fused on CUDA)")
    p.add_argument("--steps-per-graph", type=int, nargs="+", default=[1],
                   help="graphs: decoding steps per captured graph, each value its own row (divisors of 8)")
    p.add_argument("--json", default=None, help="also write the table here")


def apply_decoding_args(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """Set :attr:`RMSNorm.fused` from ``--norm``; returns ``(device, dtype)`` of ``--device`` / ``--dtype``."""
    RMSNorm.fused = {"auto": None, "fused": True, "elementwise": False}[args.norm]
    return torch.device(args.device), getattr(torch, args.dtype)


def decoding_runs(args: argparse.Namespace, on_cuda: bool) -> list[tuple[str, Optional[int]]]:
    """``(mode, steps_per_graph)`` of every row to measure (steps None for eager)."""
    modes = args.modes or (["eager", "graphs"] if on_cuda else ["eager"])
    return [(m, s) for m in modes for s in (args.steps_per_graph if m != "eager" else [None])]


def mode_generate(plain: Callable, mode: str, steps: Optional[int]) -> Callable:
    """``generate`` as ``mode`` runs it (swapped into the module that calls it)."""
    if mode == "eager":
        return plain
    return functools.partial(plain, steps_per_graph=steps, compile_step=mode == "compiled")
