"""Crash safety: training and token extraction killed with SIGKILL at every kind of moment (in the middle of
each file of a checkpoint or shard write, between its steps, while pruning, at random times) always leave a
loadable latest checkpoint / only complete shards, and resuming gives exactly the uninterrupted result.

The kills are real ``SIGKILL`` s of child processes: ``killer.py`` kills its own process at a chosen point
(deterministic coverage of every window of the write protocol), and the parent kills children at random times.
Children are forked from a server that imported torch once (``killer.start``); the last run of each chain is
a plain ``python -m`` command.
"""
from __future__ import annotations

import copy
import hashlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from audiocodec.errors import CheckpointError
from audiocodec.train import Trainer, list_checkpoints, load_checkpoint
from audiocodec.train import checkpoint as ckpt
import killer
from faults_support import PYTHON, ROOT, SR, subprocess_env, tone

# Toy run with everything that must survive a resume: two optimizers with a warmup-cosine schedule and
# clipping, EMA, noise and dropout from the global RNGs, gradient accumulation, validation between steps,
# epochs of 4 steps; a checkpoint after every step so that most moments of the run are inside a checkpoint write.
CONFIG = {
    "name": "crash",
    "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 16, "noise": 0.05, "dropout": 0.1,
             "two_optimizers": True},
    "trainer": {"max_steps": 24, "batch_size": 8, "grad_accum": 2, "log_every": 1, "val_every": 4,
                "ckpt_every": 1, "keep_last": 2, "ema": {"decay": 0.9}, "threads": 1, "progress": False,
                "device": "cpu"},
    "optim": {"body": {"lr": 0.01, "scheduler": {"type": "cosine", "warmup_steps": 3}},
              "head": {"lr": 0.01, "clip_grad": 0.5}},
}

#: (kill point, occurrence): each of these kills one process of the chain (see killer.py).
TRAIN_KILLS = [("ckpt_model", 2), ("ckpt_state", 1), ("ckpt_fsync", 3), ("ckpt_rename", 1), ("ckpt_renamed", 1),
               ("ckpt_prune", 1), ("ckpt_swap", 1)]
MID_WRITE = {"ckpt_model", "ckpt_state", "ckpt_fsync", "ckpt_rename"}


def _assert_same(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


def _run_killed(module, args, point, nth, log: Path):
    """Run ``module`` in a child that kills itself at ``point``; return its exit code and output."""
    p = killer.start(module, args, point, nth, log)
    p.join(120)
    if p.exitcode is None:  # hung: not the kill we are testing
        p.kill()
        p.join()
        pytest.fail(f"{module} {point}: still running after 120 s")
    return p.exitcode, log.read_text() if log.exists() else ""


def _kill_after(module, args, progressed, delay: float, log: Path):
    """Start ``module``, wait until ``progressed()`` holds (or it ends), wait ``delay`` s and SIGKILL it."""
    p = killer.start(module, args, log=log)
    deadline = time.time() + 60
    while not progressed() and p.exitcode is None:
        assert time.time() < deadline, "no progress"
        time.sleep(0.005)
    time.sleep(delay)
    p.kill()
    p.join(60)
    return p.exitcode


def _check_after_kill(ckpt_dir: Path, point: str) -> int:
    """Invariants after any kill: the newest checkpoint folder loads and is what a resume picks; partial
    writes are only in hidden temporary folders. Returns the newest step."""
    found = list_checkpoints(ckpt_dir)
    assert found, f"{point}: no checkpoint left"
    newest = found[-1]
    load_checkpoint(newest)  # raises CheckpointError if the kill left it incomplete
    picked = ckpt.latest_valid(ckpt_dir)
    assert picked is not None and picked[0] == newest, point
    if point in MID_WRITE:
        partial = sorted(ckpt_dir.glob(".tmp_step_*"))
        assert partial, f"{point}: the kill should have left the half-written checkpoint beside the others"
        if point in ("ckpt_model", "ckpt_state"):
            with pytest.raises(CheckpointError):   # it would have been refused, had it been visible
                load_checkpoint(partial[-1])
    if point == "ckpt_swap":  # killed between moving the old folder of the step aside and renaming the new one
        assert list(ckpt_dir.glob(".tmp_old_*")) and list(ckpt_dir.glob(".tmp_step_*"))
    if point == "ckpt_prune":  # the old checkpoint being deleted is half gone; nothing newer is affected
        assert any(not (p / ckpt.MODEL_FILE).exists() for p in found[:-1])
    return ckpt.checkpoint_step(newest)


def test_training_killed_at_every_stage_of_a_checkpoint_and_at_random_resumes_identically(tmp_path):
    reference = tmp_path / "reference"
    Trainer(copy.deepcopy(CONFIG), reference).fit()
    last = ckpt.checkpoint_name(CONFIG["trainer"]["max_steps"])

    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    ckpt_dir = run / "checkpoints"
    args = [str(config), "--run-dir", str(run)]
    step, processes = 0, 0
    for point, nth in TRAIN_KILLS:
        extra = []
        if point == "ckpt_swap":  # a re-save of an existing step: resume from the one before the newest
            extra = ["--resume", str(list_checkpoints(ckpt_dir)[-2])]
        rc, out = _run_killed("audiocodec.train", args + extra, point, nth, tmp_path / f"{point}.log")
        processes += 1
        assert rc == -signal.SIGKILL, f"{point}: not killed (exit code {rc}):\n{out[-3000:]}"
        new_step = _check_after_kill(ckpt_dir, point)
        # a kill never loses a completed checkpoint (the swap re-saves a step it resumed before: at most that one)
        assert new_step >= step - (1 if point == "ckpt_swap" else 0), point
        step = new_step

    rng = random.Random(1234)
    killed_random = 0
    for i in range(3):  # kills at random moments (after the process has made some progress)
        before = step
        rc = _kill_after("audiocodec.train", args,
                         lambda: ckpt.checkpoint_step(list_checkpoints(ckpt_dir)[-1]) > before,
                         rng.uniform(0.0, 0.1), tmp_path / f"random{i}.log")
        processes += 1
        if rc == 0:  # it finished first
            break
        assert rc == -signal.SIGKILL
        killed_random += 1
        step = _check_after_kill(ckpt_dir, "random")
    assert killed_random >= 1

    final = subprocess.run([PYTHON, "-m", "audiocodec.train", *args], cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    assert (run / "train.log").read_text().count("resuming from") == processes

    # the same run: weights, EMA, optimizer moments, schedules and task state equal the uninterrupted ones
    _assert_same(load_file(str(reference / "checkpoints" / last / ckpt.MODEL_FILE)),
                 load_file(str(ckpt_dir / last / ckpt.MODEL_FILE)), "weights")
    _assert_same(load_file(str(reference / "checkpoints" / last / ckpt.EMA_FILE)),
                 load_file(str(ckpt_dir / last / ckpt.EMA_FILE)), "ema")
    _, ref_state, _ = load_checkpoint(reference / "checkpoints" / last)
    _, state, _ = load_checkpoint(ckpt_dir / last)
    for name in ("body", "head"):
        for i, s in ref_state["optimizers"][name]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(s[key], state["optimizers"][name]["state"][i][key]), (name, key)
    assert state["schedulers"] == ref_state["schedulers"] and state["task"] == ref_state["task"]
    # and the debris of the kills is gone: only complete checkpoints, keep_last of them
    assert not list(ckpt_dir.glob(".tmp_*"))
    kept = list_checkpoints(ckpt_dir)
    assert len(kept) == CONFIG["trainer"]["keep_last"]
    for p in kept:
        load_checkpoint(p)


# -- token extraction ----------------------------------------------------------------------------------

N_CLIPS = 10
SHARD_KILLS = [("shard_write", 2), ("shard_rename", 1), ("shard_renamed", 2)]


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    lines = []
    for i in range(N_CLIPS):
        seconds = 0.3 + 0.05 * (i % 3)
        sf.write(root / f"u{i}.wav", tone(seconds, freq=120 + 30 * i, seed=i), SR)
        lines.append(f'{{"id": "u{i}", "path": "u{i}.wav", "duration": {seconds}, "sample_rate": {SR}, '
                     f'"text": "clip {i}"}}\n')
    (root / "m.jsonl").write_text("".join(lines))
    return root


def test_extract_tokens_killed_mid_shard_resumes_without_redoing_or_losing_shards(clips, tmp_path):
    import audiocodec
    from audiocodec.data.extract import extract_tokens
    from audiocodec.data.tokens import TokenShards, list_shards

    out = tmp_path / "tok"
    args = ["extract-tokens", str(clips / "m.jsonl"), "-o", str(out), "--device", "cpu", "--workers", "0", "-q",
            "--batch-size", "1", "--shard-size", "2"]
    kept: dict[str, str] = {}      # shard name -> digest: once visible, a shard is never rewritten
    done: set = set()
    for point, nth in SHARD_KILLS + [("random", 0)]:
        if point == "random":  # (if it finishes before the kill, the last run has nothing left to do)
            n = len(kept)
            rc = _kill_after("audiocodec", args, lambda: len(list_shards(out)) > n, random.Random(5).uniform(0, 0.3),
                             tmp_path / "random.log")
            assert rc in (0, -signal.SIGKILL)
        else:
            rc, output = _run_killed("audiocodec", args, point, nth, tmp_path / f"{point}.log")
            assert rc == -signal.SIGKILL, f"{point}: not killed (exit code {rc}):\n{output[-3000:]}"
        shards = list_shards(out)
        for name, digest in kept.items():
            assert (out / name).is_file() and _digest(out / name) == digest, f"{point}: shard {name} was redone"
        ds = TokenShards(out)                      # every visible shard is complete; no id twice
        ids = {r["id"] for r in ds.records}
        assert ids >= done, f"{point}: items lost"
        done = ids
        kept = {p.name: _digest(p) for p in shards}
        if point in ("shard_write", "shard_rename"):  # the shard in progress is a hidden temporary file nobody reads
            assert list(out.glob(".shard-*.tmp*"))

    final = subprocess.run([PYTHON, "-m", "audiocodec", *args], cwd=ROOT, env=subprocess_env(), capture_output=True,
                           text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"{len(done)} already there, 0 failed" in final.stderr
    assert f"encoded {N_CLIPS - len(done)} clip(s)" in final.stderr
    for name, digest in kept.items():
        assert _digest(out / name) == digest
    ds = TokenShards(out)
    assert sorted(r["id"] for r in ds.records) == sorted(f"u{i}" for i in range(N_CLIPS))
    # the tokens are those of an uninterrupted extraction
    ref = tmp_path / "ref"
    extract_tokens(clips / "m.jsonl", ref, audiocodec.load_codec(audiocodec.DEFAULT_CODEC), batch_size=1,
                   shard_size=2, num_workers=0)
    ref_ds = TokenShards(ref)
    for i in range(N_CLIPS):
        a, b = ds.by_id(f"u{i}"), ref_ds.by_id(f"u{i}")
        assert torch.equal(a["tokens"], b["tokens"]) and a["text"] == b["text"] == f"clip {i}"
