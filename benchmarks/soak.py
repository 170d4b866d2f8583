"""Soak test (issue #9): run by hand for N minutes; not part of CI (``tests/faults`` holds the short versions).

Loops over three kinds of stress until the time is up, then prints the figures as a table:

* **requests**: concurrent encode + decode requests from threads through one shared codec; every result must
  equal the single-threaded result of the same request (no mixed outputs);
* **corruptions**: a clean clip damaged at random (truncated, bytes flipped, header smashed, emptied, garbage,
  NaN samples, odd sample rate, many channels, silence, clipping) is fed to ``audiocodec encode`` and
  ``audiocodec eval --manifest``: every file must be either coded or reported as failed (counted), and
  nothing may crash;
* **kills**: toy training runs are SIGKILLed at random moments and inside checkpoint writes (see
  ``tests/faults/killer.py``), then resumed; the latest checkpoint must always load and the final weights
  must equal those of an uninterrupted run (data lost = 0).

Examples::

    python benchmarks/soak.py --minutes 2
    python benchmarks/soak.py --minutes 60 --threads 8 --json soak.json

Exit status 0 when no request mixed, nothing crashed and no data was lost; 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # killer.py: runs a command that SIGKILLs itself at a point

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

import audiocodec  # noqa: E402

SR = 24000

#: the toy run that gets killed: two optimizers, EMA, RNG noise and dropout, accumulation, validation, a
#: checkpoint after every step (so that many kills land inside a checkpoint write)
TRAIN_CONFIG = {
    "name": "soak",
    "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 16, "noise": 0.05, "dropout": 0.1,
             "two_optimizers": True},
    "trainer": {"max_steps": 16, "batch_size": 8, "grad_accum": 2, "log_every": 1, "val_every": 4,
                "ckpt_every": 1, "keep_last": 2, "ema": {"decay": 0.9}, "threads": 1, "progress": False,
                "device": "cpu"},
    "optim": {"body": {"lr": 0.01, "scheduler": {"type": "cosine", "warmup_steps": 3}},
              "head": {"lr": 0.01, "clip_grad": 0.5}},
}
HOOK_POINTS = ["ckpt_model", "ckpt_state", "ckpt_fsync", "ckpt_rename", "ckpt_renamed", "ckpt_prune"]


def tone(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    f0 = rng.uniform(100, 400)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 4)) * 0.25
    x = x + 0.02 * rng.standard_normal(n)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


# -- 1. concurrent requests -----------------------------------------------------------------------------

class Requests:
    def __init__(self, codec, threads: int, rng: random.Random):
        self.codec, self.threads, self.rng = codec, threads, rng
        self.stats = Counter()

    def round(self, n: int = 8) -> None:
        codec = self.codec
        inputs = []
        for _ in range(n):
            seconds = self.rng.uniform(0.2, 2.0)
            sr = self.rng.choice([16000, 22050, 24000, 44100])
            g = torch.Generator().manual_seed(self.rng.randrange(2 ** 31))
            wav = (torch.rand(1, int(seconds * sr), generator=g) - 0.5) * 0.5
            inputs.append((wav, sr))
        expected = []
        for wav, sr in inputs:  # single-threaded results
            codes = codec.encode(wav, sample_rate=sr)
            expected.append((codes.tokens.clone(), codec.decode(codes).clone()))

        def request(i):
            wav, sr = inputs[i]
            codes = codec.encode(wav, sample_rate=sr)
            return i, codes.tokens, codec.decode(codes)

        order = [i for i in range(n) for _ in range(2)]
        self.rng.shuffle(order)
        with ThreadPoolExecutor(self.threads) as pool:
            futures = [pool.submit(request, i) for i in order]
            for f in futures:
                try:
                    i, tokens, audio = f.result()
                except Exception:  # noqa: BLE001
                    self.stats["errors"] += 1
                    continue
                self.stats["served"] += 1
                self.stats["seconds"] += inputs[i][0].shape[-1] / inputs[i][1]
                if not (torch.equal(tokens, expected[i][0]) and torch.equal(audio, expected[i][1])):
                    self.stats["mixed"] += 1


# -- 2. corrupted files ----------------------------------------------------------------------------------

CORRUPTIONS = ["truncate", "flip_bytes", "smash_header", "empty", "garbage", "nan", "odd_rate", "many_channels",
               "silence", "clipped", "flac_truncate"]


def corrupt_file(folder: Path, index: int, kind: str, rng: random.Random) -> Path:
    """A clip damaged by ``kind``; returns its path."""
    seed = rng.randrange(2 ** 31)
    seconds = rng.uniform(0.2, 1.5)
    path = folder / f"f{index:05d}_{kind}.wav"
    if kind == "odd_rate":
        sr = rng.randrange(1000, 96001)
        sf.write(path, tone(seconds, sr, seed=seed), sr)
    elif kind == "many_channels":
        sf.write(path, tone(seconds, channels=rng.randint(2, 8), seed=seed), SR)
    elif kind == "silence":
        sf.write(path, np.zeros((int(seconds * SR), 1), np.float32), SR)
    elif kind == "clipped":
        sf.write(path, np.sign(tone(seconds, seed=seed)), SR)
    elif kind == "nan":
        x = tone(seconds, seed=seed)
        x[rng.randrange(len(x))] = rng.choice([np.nan, np.inf, -np.inf])
        sf.write(path, x, SR, subtype="FLOAT")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"RIFF" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4000))))
    elif kind == "flac_truncate":
        path = path.with_suffix(".flac")
        sf.write(path, tone(seconds, seed=seed), SR)
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(0, len(data))])
    else:
        sf.write(path, tone(seconds, seed=seed), SR, subtype=rng.choice(["PCM_16", "PCM_24", "FLOAT"]))
        data = bytearray(path.read_bytes())
        if kind == "truncate":
            data = data[: rng.randrange(0, len(data))]
        elif kind == "flip_bytes":
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        elif kind == "smash_header":
            for i in range(min(44, len(data))):
                if rng.random() < 0.3:
                    data[i] = rng.randrange(256)
        path.write_bytes(bytes(data))
    return path


class Corruptions:
    def __init__(self, model: str, workdir: Path, rng: random.Random):
        self.model, self.workdir, self.rng = model, workdir, rng
        self.stats = Counter()
        self.kinds = Counter()
        self.crashes: list = []
        self.index = 0

    def _cli(self, argv) -> tuple:
        from audiocodec.cli import main
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
        except BaseException as e:  # noqa: BLE001 - anything escaping the command is a crash
            return None, f"{type(e).__name__}: {e}"
        return rc, err.getvalue()

    def round(self, n: int = 4) -> None:
        folder = self.workdir / f"round{self.index}"
        folder.mkdir(parents=True)
        files = []
        for _ in range(n):
            kind = self.rng.choice(CORRUPTIONS)
            files.append(corrupt_file(folder, self.index, kind, self.rng))
            self.kinds[kind] += 1
            self.index += 1
        self.stats["files"] += n
        # encode: each file is coded or reported
        out = folder / "codes"
        rc, err = self._cli(["encode", *map(str, files), "-o", str(out), "--model", self.model, "--device", "cpu",
                             "-q", "--batch-size", "2"])
        if rc not in (0, 1):
            self.crashes.append(("encode", [f.name for f in files], err[-500:]))
            self.stats["crashes"] += 1
        else:
            coded = {p.stem for p in out.glob("*.npz")}
            report = err.split("failures:")[1] if "failures:" in err else ""
            reported = {f.stem for f in files if f"{f.name}:" in report}
            self.stats["encode_ok"] += len(coded)
            self.stats["encode_reported"] += len(reported)
            self.stats["encode_uncounted"] += len({f.stem for f in files} - coded - reported)
            for path in out.glob("*.npz"):  # what was written decodes
                try:
                    audiocodec.Codes.load(path)
                except Exception:  # noqa: BLE001
                    self.stats["encode_unreadable_output"] += 1
        # eval --manifest: each file is scored or reported
        manifest = folder / "m.jsonl"
        manifest.write_text("".join(json.dumps({"id": f.stem, "path": f.name}) + "\n" for f in files))
        report_json = folder / "metrics.json"
        rc, err = self._cli(["eval", "--manifest", str(manifest), "--model", self.model, "--device", "cpu",
                             "--workers", "1", "--metrics", "mel_distance,si_sdr", "--json", str(report_json), "-q"])
        if rc not in (0, 1) or not report_json.exists():
            self.crashes.append(("eval", [f.name for f in files], err[-500:]))
            self.stats["crashes"] += 1
        else:
            result = json.loads(report_json.read_text())
            scored = {r["file"] for r in result["files"]}
            failed = {f["file"] for f in result["failures"]}
            self.stats["eval_ok"] += len(scored)
            self.stats["eval_reported"] += len(failed)
            self.stats["eval_uncounted"] += len({f.stem for f in files} - scored - failed)
        shutil.rmtree(folder, ignore_errors=True)


# -- 3. killed training runs ---------------------------------------------------------------------------

class Kills:
    def __init__(self, workdir: Path, rng: random.Random):
        import yaml
        from audiocodec.train import Trainer
        self.workdir, self.rng = workdir, rng
        self.stats = Counter()
        self.problems: list = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "toy.yaml"
        self.config.write_text(yaml.safe_dump(TRAIN_CONFIG))
        ref = workdir / "reference"
        Trainer(copy.deepcopy(TRAIN_CONFIG), ref).fit()
        self.last = f"step_{TRAIN_CONFIG['trainer']['max_steps']:08d}"
        self.reference = self._weights(ref)
        self.index = 0

    def _weights(self, run: Path) -> dict:
        from safetensors.torch import load_file
        folder = run / "checkpoints" / self.last
        return {name: load_file(str(folder / name)) for name in ("model.safetensors", "ema.safetensors")}

    def _check(self, run: Path) -> bool:
        """The newest checkpoint loads and is what a resume picks."""
        from audiocodec.train import list_checkpoints, load_checkpoint
        from audiocodec.train import checkpoint as ckpt
        found = list_checkpoints(run / "checkpoints")
        if not found:
            return True  # killed before the first checkpoint: nothing to lose yet
        try:
            load_checkpoint(found[-1])
            picked = ckpt.latest_valid(run / "checkpoints")
            return picked is not None and picked[0] == found[-1]
        except Exception as e:  # noqa: BLE001
            self.problems.append(f"{run.name}: newest checkpoint {found[-1].name} unusable: {e}")
            return False

    def round(self, max_kills: int = 4) -> None:
        import killer
        from audiocodec.train import list_checkpoints
        run = self.workdir / f"run{self.index}"
        self.index += 1
        args = [str(self.config), "--run-dir", str(run)]
        ok = True
        for attempt in range(max_kills + 1):
            final = attempt == max_kills
            hook = not final and self.rng.random() < 0.5
            if hook:                                     # inside a checkpoint write, deterministically
                point = self.rng.choice(HOOK_POINTS)
                p = killer.start("audiocodec.train", args, point, self.rng.randint(1, 3), run.parent / f"{run.name}.log")
                p.join(300)
            else:                                        # at a random moment (or not at all: the last run)
                p = killer.start("audiocodec.train", args, log=run.parent / f"{run.name}.log")
                if not final:
                    deadline = time.time() + self.rng.uniform(0.02, 0.8)
                    in_write = False
                    while time.time() < deadline and p.exitcode is None:
                        time.sleep(0.002)
                    if p.exitcode is None:
                        in_write = any((run / "checkpoints").glob(".tmp_*"))
                        p.kill()
                        self.stats["kills_random"] += 1
                        self.stats["kills_in_checkpoint_write"] += int(in_write)
                p.join(300)
            if attempt:
                self.stats["resumed"] += 1
            if p.exitcode == -signal.SIGKILL:
                self.stats["killed"] += 1
                self.stats["kills_in_checkpoint_write"] += int(hook)
                ok &= self._check(run)
                continue
            if p.exitcode != 0:
                ok = False
                self.problems.append(f"{run.name}: exit code {p.exitcode}")
            break
        self.stats["runs"] += 1
        try:
            got = self._weights(run)
            same = all(torch.equal(got[n][k], v[k]) for n, v in self.reference.items() for k in v)
        except Exception as e:  # noqa: BLE001
            same = False
            self.problems.append(f"{run.name}: no final checkpoint ({e})")
        if not same:
            self.problems.append(f"{run.name}: final weights differ from the uninterrupted run")
        self.stats["identical"] += int(same and ok)
        self.stats["data_lost"] += int(not (same and ok))
        self.stats["leftover_checkpoints"] += len(list_checkpoints(run / "checkpoints"))
        shutil.rmtree(run, ignore_errors=True)


# -- main -------------------------------------------------------------------------------------------------

def table(rows) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>10}" for name, value in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    p.add_argument("--model", default=audiocodec.DEFAULT_CODEC, help="codec of the requests and corruptions "
                                                                      "(default: the embedded one)")
    p.add_argument("--threads", type=int, default=4, help="concurrent request threads (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT.json", help="also write the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)

    logging.disable(logging.WARNING)  # skipped files and resumes are expected here; the figures count them
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="audiocodec-soak-"))
    start = time.time()
    deadline = start + 60 * args.minutes
    codec = audiocodec.load_codec(args.model)
    model_path = args.model
    requests = Requests(codec, args.threads, rng)
    corruptions = Corruptions(model_path, workdir / "corrupt", rng)
    kills = Kills(workdir / "kills", rng)
    rounds = Counter()
    try:
        while time.time() < deadline:
            requests.round()
            rounds["requests"] += 1
            if time.time() >= deadline:
                break
            corruptions.round()
            rounds["corruptions"] += 1
            if time.time() >= deadline:
                break
            kills.round()
            rounds["kills"] += 1
            elapsed = (time.time() - start) / 60
            print(f"[{elapsed:5.1f} min] requests {requests.stats['served']}, files corrupted "
                  f"{corruptions.stats['files']}, runs killed {kills.stats['killed']}, "
                  f"data lost {kills.stats['data_lost']}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    r, c, k = requests.stats, corruptions.stats, kills.stats
    figures = {
        "minutes": round((time.time() - start) / 60, 2),
        "requests": {"served": r["served"], "threads": args.threads, "audio_seconds": round(r["seconds"], 1),
                     "mixed_outputs": r["mixed"], "errors": r["errors"]},
        "corruptions": {"files": c["files"], "kinds": dict(corruptions.kinds),
                        "encode_coded": c["encode_ok"], "encode_reported": c["encode_reported"],
                        "encode_uncounted": c["encode_uncounted"], "eval_scored": c["eval_ok"],
                        "eval_reported": c["eval_reported"], "eval_uncounted": c["eval_uncounted"],
                        "unreadable_outputs": c["encode_unreadable_output"], "crashes": c["crashes"],
                        "crash_details": corruptions.crashes[:10]},
        "kills": {"runs": k["runs"], "killed": k["killed"], "killed_at_random": k["kills_random"],
                  "killed_in_checkpoint_write": k["kills_in_checkpoint_write"],
                  "resumed": k["resumed"], "identical_to_uninterrupted": k["identical"], "data_lost": k["data_lost"],
                  "problems": kills.problems[:10]},
    }
    rows = [
        ("minutes", f"{figures['minutes']:.1f}"),
        ("requests held", r["served"]),
        ("  audio seconds coded", f"{r['seconds']:.0f}"),
        ("  mixed outputs", r["mixed"]),
        ("  request errors", r["errors"]),
        ("files corrupted", c["files"]),
        ("  encode: coded / reported", f"{c['encode_ok']} / {c['encode_reported']}"),
        ("  eval: scored / reported", f"{c['eval_ok']} / {c['eval_reported']}"),
        ("  uncounted", c["encode_uncounted"] + c["eval_uncounted"]),
        ("  crashes", c["crashes"]),
        ("runs killed", k["killed"]),
        ("  at a random moment", k["kills_random"]),
        ("  in a checkpoint write", figures["kills"]["killed_in_checkpoint_write"]),
        ("  resumed", k["resumed"]),
        ("  runs identical / total", f"{k['identical']} / {k['runs']}"),
        ("data lost", k["data_lost"]),
    ]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    bad = r["mixed"] + r["errors"] + c["crashes"] + c["encode_uncounted"] + c["eval_uncounted"] + k["data_lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
