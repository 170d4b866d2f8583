"""How often a codec's codes under bf16 autocast equal its fp32 codes, with optional fp32 islands.

Encodes the same audio in fp32 and under bf16 autocast and prints the fraction of identical frames (and the
batch-64 encode speed of each variant), first with the whole encoder in bf16, then with some of its layers
run in fp32 (``--islands``: each value a comma-separated list of indices into the encoder's layer list, e.g.
``13`` for a WavTokenizer encoder's LSTM, ``0`` for its first conv). The codec is a trained model (a path or
embedded name) or, with ``--random NAME``, an untrained one whose codebooks are drawn from the input's own
latents (so that codes vary).

    python3 benchmarks/bf16_codes.py --model wavtokenizer-75-small-mini --audio a.wav b.flac --islands 13 15 0 13,14,15
    python3 benchmarks/bf16_codes.py --random wavtokenizer-75 --audio a.wav --device cuda
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audiocodec  # noqa: E402
from audiocodec.audio import load_audio  # noqa: E402
from codec_speed import seed_codebooks, timeit  # noqa: E402


class InFP32(nn.Module):
    """Runs ``module`` with autocast off, its input cast to fp32."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def clips(paths, sample_rate: int, seconds: float) -> torch.Tensor:
    """``[N, 1, seconds * sample_rate]``: the files cut into whole clips (mono, resampled)."""
    n = int(seconds * sample_rate)
    out = []
    for path in paths:
        wav, _ = load_audio(path, sample_rate=sample_rate, channels=1)   # [1, L]
        out += [wav[:, i:i + n] for i in range(0, wav.shape[-1] - n + 1, n)]
    if not out:
        raise SystemExit(f"no {seconds} s clip in {len(paths)} file(s): give longer audio or lower --seconds")
    return torch.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a trained codec: path or embedded name")
    source.add_argument("--random", help="an untrained codec of this config, codebooks from the input")
    p.add_argument("--audio", nargs="+", required=True, help="audio files, cut into --seconds clips")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-clips", type=int, default=8)
    p.add_argument("--islands", nargs="*", default=[], help="encoder layer indices run in fp32 (comma-separated)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--speed-batch", type=int, default=64, help="batch of the speed measurement (0: none)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    codec = (audiocodec.load_codec(args.model) if args.model else audiocodec.build_codec(args.random))
    codec = codec.prepare_for_inference().to(args.device)
    wav = clips(args.audio, codec.sample_rate, args.seconds)[: args.max_clips].to(args.device)
    if args.random:
        seed_codebooks(codec, wav)
    layers = codec.encoder.model
    print(f"{args.model or args.random}: {wav.shape[0]} clips of {args.seconds} s on {args.device}; encoder layers: "
          + ", ".join(f"{i} {type(m).__name__}" for i, m in enumerate(layers)))
    with torch.no_grad():
        reference = codec.encode(wav).tokens
        big = wav.repeat(-(-args.speed_batch // wav.shape[0]), 1, 1)[: args.speed_batch] if args.speed_batch else None
        for islands in [""] + list(args.islands):
            idx = [int(i) for i in islands.split(",") if i]
            saved = {i: layers[i] for i in idx}
            for i in idx:
                layers[i] = InFP32(layers[i])
            try:
                with torch.autocast(args.device, dtype=torch.bfloat16):
                    same = (codec.encode(wav).tokens == reference).float().mean().item()
                    speed = ""
                    if big is not None:
                        seconds = timeit(lambda: codec.encode(big), args.device, repeats=5)
                        speed = f", batch-{big.shape[0]} encode {big.shape[0] * args.seconds / seconds:,.0f}x realtime"
            finally:
                for i, m in saved.items():
                    layers[i] = m
            label = f"fp32 layers {idx}" if idx else "all bf16"
            print(f"{label:>28}: codes identical to fp32 on {same:.2%} of frames{speed}", flush=True)


if __name__ == "__main__":
    main()
