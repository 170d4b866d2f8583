"""Command-line options shared by the token-generation benchmarks (tts_speed.py, song_speed.py)."""
from __future__ import annotations

import argparse

from audiocodec.lm.transformer import RMSNorm


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """``--modes`` (eager / graphs), ``--norm`` (RMSNorm kernels), ``--steps-per-graph``, ``--json``."""
    p.add_argument("--modes", nargs="+", default=None, choices=["eager", "graphs"],
                   help="decoding: eager, or the whole step replayed from CUDA graphs (default: both on CUDA, "
                        "eager on CPU)")
    p.add_argument("--norm", choices=["auto", "fused", "elementwise"], default="auto",
                   help="RMSNorm kernels: PyTorch's fused rms_norm or the elementwise path (auto: fused on CUDA)")
    p.add_argument("--steps-per-graph", type=int, nargs="+", default=[1],
                   help="graphs: decoding steps per captured graph, each value its own row (divisors of 8)")
    p.add_argument("--json", default=None, help="also write the table here")


def apply_norm(args: argparse.Namespace) -> None:
    """Set :attr:`RMSNorm.fused` from ``--norm``."""
    RMSNorm.fused = {"auto": None, "fused": True, "elementwise": False}[args.norm]
