"""Codec encode / decode speed (x realtime) of our codecs against reference implementations, measured
in one process on the same inputs.

Peers: the ``encodec`` package, the ``vocos`` package (EnCodec-features model), and the official
WavTokenizer code when ``--wavtokenizer-repo PATH`` points at a local copy (it is not on PyPI).
All models have random weights (speed does not depend on them).

On a shared machine use ``--rounds N``: the candidates then take turns (N rounds of ``--repeats`` calls
each, interleaved) so that background load hits them alike, and ``--stat best`` reports the best call.

Examples:
    python benchmarks/codec_speed.py --device cpu --batch-sizes 1 --seconds 5 --threads 2
    python benchmarks/codec_speed.py --device cpu --seconds 5 --threads 2 --models wavtokenizer-75 --peers none \
        --wavtokenizer-repo .peers/WavTokenizer --rounds 8 --repeats 3 --stat best
    python benchmarks/codec_speed.py --device cuda --batch-sizes 1 16 64 --dtypes fp32 bf16 --seconds 10 \
        --wavtokenizer-repo /path/to/WavTokenizer --json results.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audiocodec  # noqa: E402
from audiocodec.quantize.vq import seed_codebooks_from_latents  # noqa: E402
from decoding_args import add_switch_arg, set_switches, switches_off  # noqa: E402

# GFLOP of the WavTokenizer-75 decoder per second of audio (issue #8), for the roofline fraction.
WAVTOKENIZER_DECODER_GFLOP_PER_S = 9.6
H200_BF16_TFLOPS = 790.0


def call_times(fn, device: str, repeats: int) -> list:
    """Wall times of ``repeats`` calls of ``fn()`` in seconds (CUDA-synchronised)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def timeit(fn, device: str, repeats: int, warmup: int = 2, stat: str = "median") -> float:
    """Median (or best) wall time of ``fn()`` in seconds (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = call_times(fn, device, repeats)
    return min(times) if stat == "best" else statistics.median(times)


def seed_codebooks(codec, wav: torch.Tensor) -> None:
    """Draw each codebook's entries from the residual latents of ``wav`` (untrained codecs: codes then vary)."""
    with torch.no_grad():
        frames = codec.encoder(wav).transpose(1, 2).reshape(-1, codec.encoder.dimension)
    seed_codebooks_from_latents(codec.quantizer.layers, frames)


def report(label: str, bs: int, dtype: str, t_enc: float, t_dec: float, args) -> dict:
    """Print and return one result row."""
    audio_s = bs * args.seconds
    row = dict(model=label, batch=bs, dtype=dtype, encode_xrt=audio_s / t_enc, decode_xrt=audio_s / t_dec)
    if label.startswith("ours/wavtokenizer-75") and args.device == "cuda":
        limit = H200_BF16_TFLOPS * 1e3 / WAVTOKENIZER_DECODER_GFLOP_PER_S
        row["decode_fraction_of_roofline"] = row["decode_xrt"] / limit
    extra = f" ({row['decode_fraction_of_roofline']:.1%} of roofline)" if "decode_fraction_of_roofline" in row else ""
    xrt = lambda v: f"{v:,.1f}" if v < 100 else f"{v:,.0f}"  # noqa: E731 (CPU figures are small)
    print(f"| {label} | {bs} | {dtype} | {xrt(row['encode_xrt'])} | {xrt(row['decode_xrt'])}{extra} |", flush=True)
    return row


def interleaved(candidates: dict, args) -> list:
    """All candidates built first, then measured in turns: ``args.rounds`` rounds, each calling every
    candidate's encode and decode ``args.repeats`` times. Fair under background load."""
    built = {}
    for label, make in candidates.items():
        try:
            built[label] = make()
        except Exception as e:  # a peer that is not installed is reported, not fatal
            print(f"| {label} | - | - | unavailable: {type(e).__name__}: {e} | |")
    rows = []
    for bs in args.batch_sizes:
        wav = (0.1 * torch.randn(bs, 1, int(args.seconds * 24000))).to(args.device)
        for dtype in args.dtypes:
            with autocast(args.device, dtype):
                jobs = {}
                for label, (enc, dec) in built.items():
                    codes = enc(wav)
                    jobs[label] = (lambda enc=enc: enc(wav), lambda dec=dec, codes=codes: dec(codes))
                    for fn in jobs[label]:  # warm-up
                        fn()
                times = {label: ([], []) for label in jobs}
                for _ in range(args.rounds):
                    for label, fns in jobs.items():
                        for fn, acc in zip(fns, times[label]):
                            acc.extend(call_times(fn, args.device, args.repeats))
            pick = min if args.stat == "best" else statistics.median
            for label, (t_enc, t_dec) in times.items():
                rows.append(report(label, bs, dtype, pick(t_enc), pick(t_dec), args))
    return rows


def autocast(device: str, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- candidates: each returns (encode_fn(wav [B,1,L]) -> codes, decode_fn(codes) -> audio) ------------------

def compile_codec(codec, mode: str) -> None:
    """``--compile [MODE]`` on our codec (``default``: torch.compile's default mode), static shapes."""
    torch._dynamo.config.recompile_limit = 64  # one graph per (batch, dtype) measured
    if codec.device.type == "cpu":
        # no pool of compile workers: on a small CPU its processes would still be busy while the peers are timed
        # (an official encode 17.5x realtime instead of 27x in one such run)
        import torch._inductor.config as inductor_config
        inductor_config.compile_threads = 1
    codec.compile(mode=mode if mode != "default" else None, dynamic=False)


def ours(name: str, device: str, compile_: str | None, graphs: bool = False):
    codec = audiocodec.build_codec(name).prepare_for_inference().to(device)
    if graphs and device == "cuda":
        codec.use_cuda_graphs()
    if compile_:
        compile_codec(codec, compile_)
    sr = codec.sample_rate

    def enc(wav):
        return codec.encode(wav, sr)

    def dec(codes):
        return codec.decode(codes)
    return enc, dec


def peer_encodec(device: str, n_q: int = 8):
    import encodec
    model = encodec.EncodecModel._get_model([1.5, 3.0, 6.0, 12.0, 24.0], 24000, 1, True, "weight_norm", False,
                                            None, "encodec_24khz").to(device).eval()
    model.set_target_bandwidth(0.75 * n_q)

    def enc(wav):
        with torch.no_grad():
            return model.encode(wav)

    def dec(frames):
        with torch.no_grad():
            return model.decode(frames)
    return enc, dec


def peer_vocos_encodec(device: str, n_q: int = 8):
    import encodec
    import vocos
    from vocos.feature_extractors import EncodecFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    def untrained(pretrained=True, repository=None):
        return encodec.EncodecModel._get_model([1.5, 3.0, 6.0, 12.0, 24.0], 24000, 1, True, "weight_norm", False,
                                               None, "encodec_24khz")
    encodec.EncodecModel.encodec_model_24khz = staticmethod(untrained)
    fe = EncodecFeatures("encodec_24khz", bandwidths=[1.5, 3.0, 6.0, 12.0])
    model = vocos.Vocos(fe, VocosBackbone(128, 384, 1152, 8, adanorm_num_embeddings=4),
                        ISTFTHead(384, 1280, 320, "same")).to(device).eval()
    bid = [1.5, 3.0, 6.0, 12.0].index(0.75 * n_q)
    bandwidth_id = torch.tensor([bid], device=device)

    def enc(wav):
        with torch.no_grad():
            fe.encodec.set_target_bandwidth(fe.bandwidths[bid])
            return fe.get_encodec_codes(wav.squeeze(1))

    def dec(codes):
        with torch.no_grad():
            return model.decode(model.codes_to_features(codes), bandwidth_id=bandwidth_id)
    return enc, dec


def peer_wavtokenizer(repo: str, device: str, variant: int = 75):
    sys.path.insert(0, repo)
    from decoder.pretrained import WavTokenizer  # the official code, given by path
    name = {75: "frame75", 40: "frame40"}[variant]
    cfg = next(Path(repo, "configs").glob(f"*{name}*.yaml"))
    model = WavTokenizer.from_hparams0802(str(cfg)).to(device).eval()
    for name, buf in model.named_buffers():  # skip the k-means initialisation on the first call
        if name.endswith("_codebook.inited"):
            buf.fill_(1)
    for name, buf in model.named_buffers():
        if name.endswith("_codebook.embed"):
            buf.normal_()
    bandwidth_id = torch.tensor([0], device=device)

    def enc(wav):
        with torch.no_grad():
            return model.encode_infer(wav.squeeze(1), bandwidth_id=bandwidth_id)[1]

    def dec(codes):
        with torch.no_grad():
            return model.decode(model.codes_to_features(codes), bandwidth_id=bandwidth_id)
    return enc, dec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", nargs="*", default=["wavtokenizer-75", "encodec-24k", "vocos-encodec-24k"],
                   help="our codecs to measure (none: only the peers)")
    p.add_argument("--peers", nargs="+", default=["encodec", "vocos"], help="encodec, vocos (and wavtokenizer via --wavtokenizer-repo)")
    p.add_argument("--wavtokenizer-repo", default=None, help="local copy of the official WavTokenizer code")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   help="torch.compile our encoder and decoder (optionally with a mode, e.g. reduce-overhead)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay our encode/decode through CUDA graphs")
    p.add_argument("--rounds", type=int, default=1,
                   help="interleave the candidates over this many rounds of --repeats calls (CPU under load)")
    p.add_argument("--stat", default="median", choices=["median", "best"], help="time per call reported")
    p.add_argument("--json", default=None, help="also write the results here")
    add_switch_arg(p)
    args = p.parse_args(argv)
    set_switches(args.switch)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    candidates = {f"ours/{m}": (lambda m=m: ours(m, args.device, args.compile, args.cuda_graphs)) for m in args.models}
    if "encodec" in args.peers:
        candidates["encodec (pip)"] = lambda: peer_encodec(args.device)
    if "vocos" in args.peers:
        candidates["vocos-encodec (pip)"] = lambda: peer_vocos_encodec(args.device)
    if args.wavtokenizer_repo:
        candidates["wavtokenizer-75 (official)"] = lambda: peer_wavtokenizer(args.wavtokenizer_repo, args.device)

    rows = []
    print(f"device={args.device} seconds={args.seconds} threads={torch.get_num_threads()} torch={torch.__version__}"
          f" rounds={args.rounds} repeats={args.repeats} stat={args.stat}")
    print(f"| model | batch | dtype | encode x RT | decode x RT |")
    print(f"|---|---|---|---|---|")
    if args.rounds > 1:
        rows += interleaved(candidates, args)
    for label, make in (candidates.items() if args.rounds <= 1 else ()):
        try:
            enc, dec = make()
        except Exception as e:  # a peer that is not installed is reported, not fatal
            print(f"| {label} | - | - | unavailable: {type(e).__name__}: {e} | |")
            continue
        for bs in args.batch_sizes:
            wav = (0.1 * torch.randn(bs, 1, int(args.seconds * 24000))).to(args.device)
            for dtype in args.dtypes:
                try:
                    with autocast(args.device, dtype):
                        codes = enc(wav)
                        t_enc = timeit(lambda: enc(wav), args.device, args.repeats, stat=args.stat)
                        t_dec = timeit(lambda: dec(codes), args.device, args.repeats, stat=args.stat)
                except torch.OutOfMemoryError:
                    print(f"| {label} | {bs} | {dtype} | OOM | OOM |")
                    torch.cuda.empty_cache()
                    continue
                rows.append(report(label, bs, dtype, t_enc, t_dec, args))
        del enc, dec
        if args.device == "cuda":
            torch.cuda.empty_cache()

    if "bf16" in args.dtypes and any(m.startswith("wavtokenizer") for m in args.models):
        # the reference: eager fp32 with every speed switch off; then bf16 as measured (switches, --compile)
        codec = audiocodec.build_codec("wavtokenizer-75").prepare_for_inference().to(args.device)
        wav = (0.1 * torch.randn(8, 1, int(args.seconds * 24000))).to(args.device)
        seed_codebooks(codec, wav)   # so that codes vary
        with switches_off():
            c32 = codec.encode(wav).tokens
        if args.compile:
            compile_codec(codec, args.compile)
        with torch.autocast(args.device, dtype=torch.bfloat16):
            c16 = codec.encode(wav).tokens
        same = (c32 == c16).float().mean().item()
        print(f"wavtokenizer-75 codes identical fp32 (eager, no switches) vs bf16 (as measured): {same:.2%} of frames "
              f"({c32.unique().numel()} distinct codes)")
        rows.append(dict(model="ours/wavtokenizer-75", check="bf16_codes_identical", value=same))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))


if __name__ == "__main__":
    main()
