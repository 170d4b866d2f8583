"""Print the top CUDA kernels of one codec's encode and decode (torch.profiler), to find waste.

    python benchmarks/profile_codec.py --model wavtokenizer-75 --batch 64 --dtype bf16 --seconds 10 [--compile]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audiocodec  # noqa: E402
from decoding_args import add_switch_arg, set_switches  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="wavtokenizer-75")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder first")
    add_switch_arg(p)
    args = p.parse_args(argv)
    set_switches(args.switch)
    torch.backends.cudnn.benchmark = True
    codec = audiocodec.build_codec(args.model).prepare_for_inference().cuda()
    if args.compile:
        codec.compile(dynamic=False)
    wav = 0.1 * torch.randn(args.batch, 1, int(args.seconds * codec.sample_rate), device="cuda")
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    with ctx:
        codes = codec.encode(wav)
        for name, fn in (("encode", lambda: codec.encode(wav)), ("decode", lambda: codec.decode(codes))):
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            print(f"== {name} {args.model} batch {args.batch} {args.dtype}")
            events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
            total = sum(e.self_device_time_total for e in events)
            print(f"total CUDA time {total / 1e3:.2f} ms")
            for e in events[: args.rows]:
                print(f"{e.self_device_time_total / 1e3:8.2f} ms {e.count:6d}x  {e.key[:90]}")


if __name__ == "__main__":
    main()
