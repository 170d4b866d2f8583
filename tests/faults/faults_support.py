"""Shared helpers of the fault-injection tests (``tests/faults``): tiny codecs, a corpus of broken audio
files with what each tool should do with them, and the environment of the subprocesses that get killed."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[2]
SR = 24000

#: encodec-24k shrunk to ~30k parameters, without LSTM: causal (chunking / streaming are exact), fast on CPU.
TINY_SEANET = {"n_filters": 4, "dimension": 16, "lstm": 0}
TINY_CODEC = {"num_codebooks": 2, "encoder": dict(TINY_SEANET), "decoder": dict(TINY_SEANET),
              "quantizer": {"dim": 16, "num_quantizers": 2, "codebook_size": 16, "kmeans_init": False}}


def tiny_codec(seed: int = 0, **overrides):
    """A ready (eval, weight norm folded) tiny causal codec; ``seed`` picks its random weights."""
    import audiocodec
    from audiocodec.config import merge
    torch.manual_seed(seed)
    return audiocodec.build_codec("encodec-24k", **merge(TINY_CODEC, overrides, strict=False)).prepare_for_inference()


def subprocess_env(**extra) -> dict:
    """The environment of a child Python: one thread, this checkout importable, not a torchrun rank."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable


def tone(seconds: float, sr: int = SR, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise, ``[n, channels]`` float32 in about [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * k * freq * t + rng.uniform(0, 6)) / k for k in range(1, 4))
    x = 0.25 * x + 0.02 * rng.standard_normal(n)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


# -- a corpus of broken files ------------------------------------------------------------------------------

#: name -> (skip reason of the training dataset (``None``: used for training), whether ``encode`` / ``eval``
#: / ``extract-tokens`` must report the file as failed). Every file is listed in the manifest as a 1 s clip at
#: 24 kHz (``odd_rate.wav``: 22051 Hz), mono.
FAULTS = {
    "truncated.wav": ("truncated", False),     # header claims 1 s, half the bytes: readers see 0.5 s
    "cut.flac": ("corrupt", True),             # a FLAC cut at 10 %: the decoder loses sync
    "corrupt.wav": ("corrupt", True),          # RIFF magic then random bytes
    "empty.wav": ("empty", True),              # 0 bytes
    "silent.wav": ("silent", False),           # digital silence (skipped only with reject_silence)
    "clipped.wav": (None, False),              # a square wave at full scale: valid audio
    "nan.wav": ("nan", True),                  # float wav with a NaN every 100 samples
    "wrong_rate.wav": ("rate_mismatch", False),  # 16 kHz file, the manifest says 24 kHz (coders resample)
    "wrong_channels.wav": (None, False),       # 3 channels: mixed down to the mono codec
    "odd_rate.wav": (None, False),             # 22051 Hz (as the manifest says): resampled, in bounded memory
    "missing.wav": ("missing", True),          # listed, not on disk
}
GOOD = [f"good_{i}.wav" for i in range(4)]


def write_fault_corpus(folder: Path, good: int = 4) -> Path:
    """``good`` clean clips and one file of each kind of :data:`FAULTS` in ``folder``, and a manifest
    ``manifest.jsonl`` (ids = file names) listing them all; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"good_{i}.wav" for i in range(good)]
    for i, name in enumerate(names):
        sf.write(folder / name, tone(1.0, freq=150 + 60 * i, seed=i), SR)
    clean = tone(1.0, seed=99)
    sf.write(folder / "full.wav", clean, SR)
    data = (folder / "full.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "full.wav").unlink()
    sf.write(folder / "full.flac", clean, SR)
    data = (folder / "full.flac").read_bytes()
    (folder / "cut.flac").write_bytes(data[: len(data) // 10])
    (folder / "full.flac").unlink()
    rng = np.random.default_rng(7)
    (folder / "corrupt.wav").write_bytes(b"RIFF" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "silent.wav", np.zeros((SR, 1), np.float32), SR)
    sf.write(folder / "clipped.wav", np.sign(tone(1.0, seed=3)), SR)
    nan = tone(1.0, seed=4)
    nan[::100] = np.nan
    sf.write(folder / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(folder / "wrong_rate.wav", tone(1.0, sr=16000, seed=5), 16000)
    sf.write(folder / "wrong_channels.wav", tone(1.0, channels=3, seed=6), SR)
    sf.write(folder / "odd_rate.wav", tone(1.0, sr=22051, seed=8), 22051)
    lines = [{"id": Path(n).stem, "path": n, "duration": 1.0, "sample_rate": 22051 if n == "odd_rate.wav" else SR}
             for n in names + list(FAULTS)]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return manifest


def failing_ids() -> set:
    """Ids that encode / eval / extract-tokens must report as failed."""
    return {Path(n).stem for n, (_, fails) in FAULTS.items() if fails}
