"""Print the top CUDA kernels of one codec's encode and decode (torch.profiler), to find waste, and with
``--timeline`` where a call's wall time goes: host time before the first kernel, the kernels' busy time, the idle
gaps between them (the largest named by their neighbours) and the time after the last one.

    python benchmarks/profile_codec.py --model wavtokenizer-75 --batch 64 --dtype bf16 --seconds 10 [--compile]
        [--cuda-graphs] [--timeline]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

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
    p.add_argument("--cuda-graphs", action="store_true", help="replay encode / decode through CUDA graphs")
    p.add_argument("--timeline", action="store_true",
                   help="also print where one call's wall time goes (host lead, kernels, gaps, tail)")
    add_switch_arg(p)
    args = p.parse_args(argv)
    set_switches(args.switch)
    torch.backends.cudnn.benchmark = True
    codec = audiocodec.build_codec(args.model).prepare_for_inference().cuda()
    if args.cuda_graphs:
        codec.use_cuda_graphs()
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
            walls = []
            for _ in range(20):
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - t0)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            print(f"== {name} {args.model} batch {args.batch} {args.dtype}")
            events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
            total = sum(e.self_device_time_total for e in events)
            print(f"total CUDA time {total / 1e3:.2f} ms")
            for e in events[: args.rows]:
                print(f"{e.self_device_time_total / 1e3:8.2f} ms {e.count:6d}x  {e.key[:90]}")
            print(f"wall time (median of 20 unprofiled calls) {statistics.median(walls) * 1e3:.3f} ms")
            if args.cuda_graphs:  # the captured graph alone: the rest of the wall time is the host's
                graph = next(iter(getattr(codec, f"_graph_{name}").graphs.values()))[0]
                replays = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    graph.replay()
                    torch.cuda.synchronize()
                    replays.append(time.perf_counter() - t0)
                print(f"graph replay alone (median of 20) {statistics.median(replays) * 1e3:.3f} ms")
            if args.timeline:
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    with record_function("profiled_call"):
                        fn()
                        torch.cuda.synchronize()
                print_timeline(prof)


def print_timeline(prof, gaps: int = 12) -> None:
    """Split the profiled call (its ``profiled_call`` range, synchronised) into host lead (call start to the
    first kernel), kernel busy time, idle gaps between kernels, and tail (last kernel end to call end)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.loads(Path(f.name).read_text())["traceEvents"]
    call = next(e for e in events if e.get("name") == "profiled_call" and e.get("cat") == "user_annotation")
    kernels = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy",
                                                                                   "gpu_memset")),
                     key=lambda e: e["ts"])
    if not kernels:
        print("timeline: no kernels recorded")
        return
    t0, t1 = call["ts"], call["ts"] + call["dur"]
    busy, idle, end, holes = 0.0, 0.0, kernels[0]["ts"], []
    for prev, k in zip([None] + kernels[:-1], kernels):
        start, stop = k["ts"], k["ts"] + k["dur"]
        if start > end:
            idle += start - end
            if prev is not None:
                holes.append((start - end, prev["name"], k["name"]))
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    print(f"timeline (us): call {call['dur']:.0f} = host lead {kernels[0]['ts'] - t0:.0f} + kernels busy "
          f"{busy:.0f} + idle between kernels {idle:.0f} ({len(kernels)} kernels, {len(holes)} gaps) + tail "
          f"{t1 - end:.0f}")
    for dur, before, after in sorted(holes, reverse=True)[:gaps]:
        print(f"   gap {dur:7.1f} us after {before[:60]!r} before {after[:60]!r}")


if __name__ == "__main__":
    main()
