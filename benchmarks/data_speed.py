"""Training data loading speed: batches per second that the trainer's own loader (``Trainer._stream``: the
recipe's dataset, random crops, gains, silence rejection, resampling, collation, worker processes) delivers,
against the rate a GPU step consumes them (``--step-rate``, default 2.307 steps/s: our WavTokenizer-75 step on an
H100, benchmarks/RESULTS.md). No model step runs: this is the loader alone, as it runs beside the step.

The corpus is a directory of generated clips (``--files`` of ``--file-seconds`` at ``--rate`` Hz as ``--format``;
a rate other than the codec's is resampled per crop, as LibriSpeech's 16 kHz FLAC is for a 24 kHz codec), or a
manifest of your own (``--manifest``).

    python benchmarks/data_speed.py --workers 0 1 2 --batches 20
    python benchmarks/data_speed.py --rate 16000 --workers 2 --batches 20
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from audiocodec.data import write_manifest  # noqa: E402
from train_speed import bench_trainer  # noqa: E402


def make_corpus(directory: Path, files: int, seconds: float, rate: int, fmt: str) -> Path:
    """``files`` clips of noise-modulated tones (speech-like level changes) and their jsonl manifest."""
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    records = []
    for i in range(files):
        f0 = rng.uniform(80, 300)
        envelope = np.abs(np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        wav = 0.3 * envelope * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(n)
        path = directory / f"{i:05d}.{fmt}"
        sf.write(path, wav.astype(np.float32), rate)
        records.append({"id": f"{i:05d}", "path": str(path), "duration": seconds, "sample_rate": rate})
    return write_manifest(directory / "train.jsonl", records)


def loader_rate(recipe: str, manifest: Path, workers: int, batch: int, crop: float, batches: int,
                overrides: list, workdir: Path) -> tuple[float, float]:
    """``(seconds to the first batch, batches per second after it)`` of the trainer's loader."""
    trainer = bench_trainer(recipe, manifest, workdir / f"run{workers}", batch, crop, "cpu",
                            [f"trainer.num_workers={workers}", *overrides])
    stream = trainer._stream()
    try:
        t0 = time.perf_counter()
        next(stream)  # worker start-up and the first batch
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            b = next(stream)
            if b["audio"].shape[0] != batch:
                raise SystemExit(f"a batch of {b['audio'].shape[0]} clips, not {batch}: unreadable files? "
                                 f"({b.get('skipped')})")
        rate = batches / (time.perf_counter() - t0)
    finally:
        stream.close()
        trainer._teardown()
    return first, rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes/codec/wavtokenizer_75.yaml"))
    p.add_argument("--manifest", default=None, help="a jsonl manifest of your own instead of generated clips")
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--file-seconds", type=float, default=12.0)
    p.add_argument("--rate", type=int, default=24000, help="generated clips' sample rate")
    p.add_argument("--format", default="flac", choices=["flac", "wav"])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--crop", type=float, default=3.0, help="crop seconds")
    p.add_argument("--batches", type=int, default=20, help="timed batches (after the first)")
    p.add_argument("--step-rate", type=float, default=2.307, help="GPU optimizer steps per second to keep fed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = Path(args.manifest) if args.manifest else make_corpus(tmp, args.files, args.file_seconds,
                                                                        args.rate, args.format)
        source = args.manifest or f"{args.files} generated {args.format} clips of {args.file_seconds:g} s at {args.rate} Hz"
        print(f"loader of {Path(args.recipe).name}: batch {args.batch} x {args.crop:g} s crops from {source}")
        print("| workers | first batch (s) | batches / s | s of audio / s | x the step's demand "
              f"({args.step_rate:g} steps/s) |")
        print("|---|---|---|---|---|")
        for w in args.workers:
            first, rate = loader_rate(args.recipe, manifest, w, args.batch, args.crop, args.batches,
                                      args.overrides, tmp)
            print(f"| {w} | {first:.2f} | {rate:.2f} | {rate * args.batch * args.crop:.0f} | "
                  f"{rate / args.step_rate:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
