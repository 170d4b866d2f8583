"""Command-line options and helpers shared by the benchmarks: decoding options (tts_speed.py, song_speed.py),
``KEY=VALUE`` parsing, inductor settings, speed switches, timing and profiles."""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import time
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
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                   help="set a torch._inductor.config value before compiling (repeatable), e.g. combo_kernels=True")
    p.add_argument("--sdpa", choices=["auto", "cudnn", "flash", "efficient", "math"], default="auto",
                   help="CUDA: the only scaled-dot-product-attention backend allowed (auto: PyTorch's choice); flash "
                        "runs no masked attention, so a model with masks (the song LM's conditioners and "
                        "cross-attention) stops with 'Invalid backend'")
    p.add_argument("--profile", action="store_true",
                   help="CUDA: after the timed calls, profile one more call of each row and print its top kernels")


def apply_decoding_args(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """Set :attr:`RMSNorm.fused` from ``--norm``, the attention backend from ``--sdpa`` and the ``--inductor``
    values; returns ``(device, dtype)`` of ``--device`` / ``--dtype``."""
    RMSNorm.fused = {"auto": None, "fused": True, "elementwise": False}[args.norm]
    if args.sdpa != "auto":
        switches = {"cudnn": torch.backends.cuda.enable_cudnn_sdp, "flash": torch.backends.cuda.enable_flash_sdp,
                    "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
                    "math": torch.backends.cuda.enable_math_sdp}
        for name, enable in switches.items():
            enable(name == args.sdpa)
    set_inductor_config(args.inductor)
    return torch.device(args.device), getattr(torch, args.dtype)


def key_values(items: list[str], option: str) -> dict:
    """``KEY=VALUE`` command-line items -> ``{key: value}`` (values as Python literals); a malformed item is a
    clear error naming ``option``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not (sep and key):
                raise ValueError("expected KEY=VALUE")
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            raise SystemExit(f"{option} {item}: {e} (values are Python literals, e.g. 1024, True, 'text')") from None
    return out


def set_inductor_config(items: list[str]) -> None:
    """Apply ``--inductor KEY=VALUE`` items to ``torch._inductor.config``."""
    import torch._inductor.config as inductor_config
    for key, value in key_values(items, "--inductor").items():
        if not hasattr(inductor_config, key):
            raise SystemExit(f"--inductor {key}=...: torch._inductor.config has no {key!r}")
        setattr(inductor_config, key, value)


#: the speed switches of our modules (class attributes) that ``--switch NAME=VALUE`` sets
SWITCHES = {
    "cuda_time_major": ("audiocodec.nn.conv", "PaddedConv1d"),         # eager CUDA inference, time-major convs
    "compiled_channels_last": ("audiocodec.nn.conv", "PaddedConv1d"),  # compiled bf16 convs as channels-last conv2d
    "compiled_taps": ("audiocodec.nn.vocos", "ConvNeXtBlock"),         # compiled depthwise conv as shifted taps
    "cuda_split_bf16_search": ("audiocodec.quantize.vq", "EuclideanCodebook"),  # VQ search as split-bf16 GEMM
    "cuda_matmul_attention": ("audiocodec.nn.vocos", "AttnBlock"),     # pos_net attention as two bf16 matmuls
    "cuda_split_bf16_gemms": ("audiocodec.nn.vocos", "VocosBackbone"),  # compiled fp32 MLP GEMMs as split bf16
    "cuda_split_bf16_convs": ("audiocodec.nn.vocos", "VocosBackbone"),  # and the backbone's convs (im2col)
    "split_bf16_parts": ("audiocodec.nn.vocos", "VocosBackbone"),       # their parts: 3 (fp32-grade) or 2 (~2^-16)
    "cpu_code_tables": ("audiocodec.codecs.base", "Codec"),             # CPU decode: the input conv by table lookup
}


def _switch_owner(name: str) -> type:
    """The class that holds speed switch ``name`` (:data:`SWITCHES`)."""
    import importlib
    module, cls = SWITCHES[name]
    return getattr(importlib.import_module(module), cls)


def add_switch_arg(p: argparse.ArgumentParser) -> None:
    """``--switch NAME=VALUE`` (repeatable; apply with :func:`set_switches`)."""
    p.add_argument("--switch", action="append", default=[], metavar="NAME=VALUE",
                   help=f"set a speed switch of our modules, e.g. compiled_taps=False ({', '.join(SWITCHES)})")


def set_switches(items: list[str]) -> None:
    """Apply ``--switch NAME=VALUE`` items (:data:`SWITCHES`) for this process: on / off switches take a truth
    value, settings (an int such as ``split_bf16_parts``) a value of their type."""
    for name, value in key_values(items, "--switch").items():
        if name not in SWITCHES:
            raise SystemExit(f"--switch {name}=...: no such switch (known: {', '.join(SWITCHES)})")
        owner = _switch_owner(name)
        current = getattr(owner, name)
        if isinstance(current, bool):
            value = bool(value)
        elif type(value) is not type(current):
            raise SystemExit(f"--switch {name}={value!r}: expected an {type(current).__name__} like {current!r}")
        setattr(owner, name, value)


@contextlib.contextmanager
def switches_off():
    """Every on / off speed switch of :data:`SWITCHES` off inside (the reference paths), restored after."""
    classes = {name: _switch_owner(name) for name in SWITCHES}
    classes = {name: c for name, c in classes.items() if isinstance(getattr(c, name), bool)}
    saved = {name: getattr(c, name) for name, c in classes.items()}
    try:
        for name, c in classes.items():
            setattr(c, name, False)
        yield
    finally:
        for name, c in classes.items():
            setattr(c, name, saved[name])


def sync(device) -> None:
    """Wait for ``device`` (a CUDA device's queued work; nothing elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_of(fn: Callable, device, repeats: int):
    """``(result of the last call, seconds of the fastest call)`` over ``repeats`` calls of ``fn()``, each timed
    from a synchronised device to a synchronised device (warm up before)."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, min(times)


def decoding_runs(args: argparse.Namespace, on_cuda: bool) -> list[tuple[str, Optional[int]]]:
    """``(mode, steps_per_graph)`` of every row to measure (steps None for eager)."""
    modes = args.modes or (["eager", "graphs"] if on_cuda else ["eager"])
    return [(m, s) for m in modes for s in (args.steps_per_graph if m != "eager" else [None])]


def mode_generate(plain: Callable, mode: str, steps: Optional[int]) -> Callable:
    """``generate`` with ``steps`` decoding steps per captured graph (swapped into the module that calls it);
    the compiled mode is the generator's own switch (``TTS(compile=True)``, ``SongGenerator(compile=True)``)."""
    if mode == "eager":
        return plain
    return functools.partial(plain, steps_per_graph=steps)


def print_profile(fn: Callable, label: str, steps: int, rows: int = 30, by_op: bool = False) -> None:
    """Run ``fn()`` once under torch.profiler and print the CUDA kernels that took the most time, with their
    counts per decoding step (``steps`` steps in the call); kernels replayed from CUDA graphs are included.
    ``by_op``: also the aten operators (with their input shapes) whose kernels took the most time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if by_op else [])
    with profile(activities=activities, record_shapes=by_op) as prof:
        fn()
        torch.cuda.synchronize()
    events = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CUDA),
                    key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events)
    kernels = sum(e.count for e in events if e.self_device_time_total > 0)
    per = max(steps, 1)
    print(f"== profile {label}: {total / 1e3:.2f} ms of CUDA time, {steps} steps: {total / per:.1f} us and "
          f"{kernels / per:.1f} kernels per step")
    for e in events[:rows]:
        print(f"{e.self_device_time_total / 1e3:9.3f} ms {e.count / per:7.2f}/step  {e.key[:100]}")
    if by_op:
        ops = sorted((e for e in prof.key_averages(group_by_input_shape=True)
                      if e.device_type == DeviceType.CPU and e.self_device_time_total > 0),
                     key=lambda e: e.self_device_time_total, reverse=True)
        print(f"== operators of {label} by the CUDA time of their own kernels")
        for e in ops[:rows]:
            print(f"{e.self_device_time_total / 1e3:9.3f} ms {e.count / per:7.2f}/step  {e.key[:40]:40} "
                  f"{str(e.input_shapes)[:110]}")
