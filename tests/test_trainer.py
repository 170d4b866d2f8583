"""The trainer on the toy task: learning, checkpoints, exact resume (also after SIGKILL), DDP, accumulation."""
from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from audiocodec.errors import CheckpointError, ConfigError
from audiocodec.train import Trainer, list_checkpoints, load_checkpoint
from audiocodec.train import checkpoint as ckpt
from audiocodec.train.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]

# 64 samples / batch 8 = 8 batches per epoch; grad_accum 2 -> 4 steps per epoch, so step 5 is mid-epoch.
# Noise and dropout draw from the global RNG, two optimizers step in turn, EMA and a warmup-cosine schedule.
BASE = {
    "name": "toy",
    "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 16, "noise": 0.05, "dropout": 0.1,
             "two_optimizers": True},
    "trainer": {"max_steps": 13, "batch_size": 8, "grad_accum": 2, "log_every": 1, "val_every": 4,
                "ckpt_every": 100, "ema": {"decay": 0.9}, "threads": 1, "progress": False, "device": "cpu"},
    "optim": {"body": {"lr": 0.01, "scheduler": {"type": "cosine", "warmup_steps": 3}},
              "head": {"lr": 0.01, "clip_grad": 0.5}},
}
PLAIN = {  # deterministic data: for comparisons across batch layouts
    "task": {"type": "toy_regression", "num_samples": 64, "val_samples": 0},
    "trainer": {"max_steps": 5, "batch_size": 8, "log_every": 1, "val_every": 0, "ckpt_every": 100,
                "threads": 1, "progress": False, "device": "cpu"},
    "optim": {"main": {"lr": 0.02, "clip_grad": 1.0}},
}


def cfg(base=BASE, **trainer):
    c = copy.deepcopy(base)
    c["trainer"].update(trainer)
    return c


def weights(run: Path, step: int, name: str = ckpt.MODEL_FILE) -> dict:
    return load_file(str(run / "checkpoints" / ckpt.checkpoint_name(step) / name))


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """BASE trained for 13 steps without interruption."""
    run = tmp_path_factory.mktemp("ref")
    Trainer(BASE, run).fit()
    return run


def test_toy_task_learns_and_writes_the_run_layout(tmp_path):
    c = cfg(PLAIN, max_steps=40, val_every=20, log_every=5)
    c["task"]["val_samples"] = 16
    trainer = Trainer(c, tmp_path, overrides=["trainer.media_every=40"])
    trainer.fit()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert losses[-1] < 0.3 * losses[0]
    val = [h["val/loss"] for h in trainer.history if "val/loss" in h]
    assert len(val) == 2 and val[-1] < val[0]
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "train.log").is_file()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["trainer"]["media_every"] == 40 and saved["optim"]["main"]["lr"] == 0.02
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    data = events[0].read_bytes()
    assert all(tag in data for tag in (b"train/loss", b"val/loss", b"lr/main", b"grad_norm/main",
                                       b"toy/response", b"toy/tone"))  # scalars, an image, audio
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000040"]
    assert "step 40/40" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_is_bit_identical(reference, tmp_path, workers):
    c = cfg(num_workers=workers)  # the reference ran without workers: the data order does not depend on them
    Trainer(c, tmp_path).fit(until_step=5)
    _, state, _ = load_checkpoint(tmp_path / "checkpoints" / "step_00000005")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 2)  # stopped in the middle of an epoch
    resumed = Trainer(c, tmp_path)  # a new trainer: resume: auto
    assert resumed.step == 5
    resumed.fit()
    assert_identical(weights(reference, 13), weights(tmp_path, 13))
    assert_identical(weights(reference, 13, ckpt.EMA_FILE), weights(tmp_path, 13, ckpt.EMA_FILE))
    _, ref_state, _ = load_checkpoint(reference / "checkpoints" / "step_00000013")
    _, state, _ = load_checkpoint(tmp_path / "checkpoints" / "step_00000013")
    for name in ("body", "head"):
        for i, s in ref_state["optimizers"][name]["state"].items():
            assert torch.equal(s["exp_avg_sq"], state["optimizers"][name]["state"][i]["exp_avg_sq"])
    assert state["task"] == ref_state["task"] == {"steps_seen": 26}


def test_sigkill_then_resume_matches_uninterrupted_run(reference, tmp_path):
    c = cfg(ckpt_every=2, keep_last=2)
    c["task"]["step_delay"] = 0.05
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(c))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "audiocodec.train", str(config), "--run-dir", str(run)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list_checkpoints(run / "checkpoints"):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint before the process ended"
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 1.0))  # after the first checkpoint (>= 1.1 s remain), perhaps mid-save
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.checkpoint_step(list_checkpoints(run / "checkpoints")[-1])
    assert killed_at < 13
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from" in (run / "train.log").read_text()
    assert_identical(weights(reference, 13), weights(run, 13))


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    Trainer(cfg(ckpt_every=2), tmp_path).fit(until_step=2)
    trainer = Trainer(cfg(ckpt_every=2), tmp_path)
    assert trainer.step == 2

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        trainer.fit(until_step=4)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000002"]
    assert list((tmp_path / "checkpoints").glob(".tmp_*"))  # the half-written one, never renamed into place
    load_checkpoint(tmp_path / "checkpoints" / "step_00000002")
    again = Trainer(cfg(ckpt_every=2), tmp_path)
    assert again.step == 2
    again.fit(until_step=4)
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))  # cleaned on the next save


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    Trainer(cfg(ckpt_every=2), tmp_path).fit(until_step=4)
    latest = tmp_path / "checkpoints" / "step_00000004"
    data = (latest / ckpt.STATE_FILE).read_bytes()
    (latest / ckpt.STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(latest)
    assert Trainer(cfg(ckpt_every=2), tmp_path).step == 2
    (latest / ckpt.MODEL_FILE).write_bytes(b"\0" * 10)  # weights truncated too: still skipped
    assert Trainer(cfg(ckpt_every=2), tmp_path).step == 2


def test_keep_last_k_and_keep_every(tmp_path):
    Trainer(cfg(PLAIN, max_steps=10, ckpt_every=2, keep_last=2, keep_every=4), tmp_path).fit()
    assert [ckpt.checkpoint_step(p) for p in list_checkpoints(tmp_path / "checkpoints")] == [4, 8, 10]


def test_grad_accumulation_matches_larger_batch(tmp_path):
    a = tmp_path / "accum"
    b = tmp_path / "big"
    # a large eps makes Adam's update depend on the gradient scale, so a wrong 1 / grad_accum shows
    ta = Trainer(cfg(PLAIN, batch_size=4, grad_accum=2), a, overrides=["optim.main.eps=1.0"])
    ta.fit()
    tb = Trainer(cfg(PLAIN, batch_size=8, grad_accum=1), b, overrides=["optim.main.eps=1.0"])
    tb.fit()
    norms = [[h["grad_norm/main"] for h in t.history] for t in (ta, tb)]
    torch.testing.assert_close(torch.tensor(norms[0]), torch.tensor(norms[1]), rtol=1e-5, atol=0)
    wa, wb = weights(a, 5), weights(b, 5)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = Trainer(cfg(BASE, precision="bf16", max_steps=3, val_every=3), tmp_path)
    trainer.fit()
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any("val/loss" in h for h in trainer.history)


def test_init_from_weights_for_fine_tuning(tmp_path):
    Trainer(cfg(PLAIN, max_steps=3), tmp_path / "a").fit()
    t = Trainer(cfg(PLAIN, max_steps=3, init_from=str(tmp_path / "a"), seed=7), tmp_path / "b")
    assert t.step == 0
    trained = weights(tmp_path / "a", 3)
    for name, module in t.task.modules.items():
        for k, v in module.state_dict().items():
            assert torch.equal(v, trained[f"{name}.{k}"])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="trainer.bacth_size"):
        Trainer(PLAIN, tmp_path, overrides=["trainer.bacth_size=4"])
    with pytest.raises(ConfigError, match="optim.gen"):
        Trainer(PLAIN, tmp_path, overrides=["optim.gen.lr=1"])
    with pytest.raises(ConfigError, match="optim.main.lrr"):
        Trainer(PLAIN, tmp_path, overrides=["optim.main.lrr=1"])
    with pytest.raises(ConfigError, match="task.hiden"):
        Trainer(PLAIN, tmp_path, overrides=["task.hiden=4"])
    with pytest.raises(ConfigError, match="unknown task type"):
        Trainer(PLAIN, tmp_path, overrides=["task.type=nope"])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(PLAIN))
    assert cli_main([str(config), "--run-dir", str(tmp_path / "r"), "--set", "trainer.nope=1"]) == 2


def test_torchrun_two_processes_on_cpu(tmp_path):
    c = cfg(PLAIN, batch_size=4, max_steps=6, ckpt_every=3)
    c["task"]["dump_final"] = True
    c["optim"]["main"]["eps"] = 1.0  # updates depend on the gradient scale: averaging is checked too
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(c))
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "audiocodec.train", str(config), "--run-dir", str(run)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = load_file(str(run / "final_rank0.safetensors")), load_file(str(run / "final_rank1.safetensors"))
    assert_identical(r0, r1)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000003", "step_00000006"]
    _, state, _ = load_checkpoint(run / "checkpoints" / "step_00000006")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert len(list((run / "tensorboard").glob("events.*"))) == 1  # rank 0 only
    # 2 ranks x batch 4 averages to the same gradients as 1 process x batch 8
    single = tmp_path / "single"
    Trainer(cfg(PLAIN, batch_size=8, max_steps=6), single, overrides=["optim.main.eps=1.0"]).fit()
    ws = weights(single, 6)
    for k in ws:
        torch.testing.assert_close(r0[k], ws[k], rtol=1e-5, atol=1e-6)


def test_backward_and_step_touches_only_its_optimizer(tmp_path):
    from audiocodec.train.toy import ToyRegression

    class Checked(ToyRegression):
        def training_step(self, batch, step, ctx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.head(self.body(x)), y)
            ctx.backward("body", loss)  # like a generator loss through the discriminator
            assert all(p.grad is None for p in self.head.parameters())
            assert all(p.grad is not None for p in self.body.parameters())
            ctx.optimizer_step("body")
            assert all(p.grad is None for p in self.body.parameters())
            if step == 1:  # an optimizer may sit out some steps
                return {"loss": loss}
            ctx.backward_and_step("head", torch.nn.functional.mse_loss(self.head(self.body(x).detach()), y))
            if step == 2:
                ctx.backward_and_step("head", loss.detach().requires_grad_())
            return {"loss": loss}

    with pytest.raises(RuntimeError, match="stepped twice"):
        Trainer({"trainer": PLAIN["trainer"]}, tmp_path, task=Checked(two_optimizers=True)).fit()


def test_max_epochs_stops_and_ends_the_task(tmp_path):
    c = cfg(PLAIN, max_steps=100, max_epochs=1)
    c["task"]["dump_final"] = True
    Trainer(c, tmp_path).fit()  # 64 samples / batch 8: one epoch is 8 steps
    assert [ckpt.checkpoint_step(p) for p in list_checkpoints(tmp_path / "checkpoints")] == [8]
    assert (tmp_path / "final_rank0.safetensors").is_file()


def test_max_minutes_stops_with_a_checkpoint(tmp_path):
    c = cfg(PLAIN, max_steps=1000, max_minutes=1e-9)  # the clock is checked every 10 steps
    Trainer(c, tmp_path).fit()
    assert [ckpt.checkpoint_step(p) for p in list_checkpoints(tmp_path / "checkpoints")] == [10]


def test_time_schedule_follows_training_time_and_survives_resume(tmp_path):
    """schedule_by=time: the cosine runs over max_minutes of training time (a fake clock: one second per
    step), rates are set every 10 steps, the run ends when the time is spent, and a run stopped at step 20
    and resumed follows the same rates and ends with the same weights."""
    c = cfg(PLAIN, max_steps=1000, max_minutes=0.5, schedule_by="time", log_every=1)
    c["optim"]["main"]["scheduler"] = {"type": "cosine", "warmup_steps": 0}

    def run(folder, until=None):
        trainer = Trainer(c, folder)
        trainer._clock = lambda: float(trainer.step)
        trainer.fit(until_step=until)
        return trainer

    whole = run(tmp_path / "whole")
    lrs = {h["step"]: h["lr/main"] for h in whole.history if "lr/main" in h}
    assert whole.step == 40 and max(lrs) == 40                      # 40 s > 30 s at the check of step 40
    assert lrs[5] == pytest.approx(0.02)                              # position 0
    assert lrs[15] == pytest.approx(0.02 * 0.75, rel=1e-3)            # set at step 10: a third of the time
    assert lrs[25] == pytest.approx(0.02 * 0.25, rel=1e-2)            # two thirds
    assert lrs[35] == pytest.approx(0.0, abs=1e-12)                   # all of it
    run(tmp_path / "split", until=20)
    resumed = run(tmp_path / "split")
    assert resumed.step == 40 and resumed.train_seconds == pytest.approx(40.0)
    assert_identical(weights(tmp_path / "whole", 40), weights(tmp_path / "split", 40))
    with pytest.raises(ConfigError, match="needs trainer.max_minutes"):
        Trainer(cfg(PLAIN, schedule_by="time"), tmp_path / "bad")


def test_best_metric_is_tracked_exported_and_resumed(tmp_path, monkeypatch):
    """trainer.best_metric: best.json follows the lowest val/loss of the run (also across a resume), the task's
    export is called for each improvement, and a metric the task does not log is refused by name."""
    import json
    from audiocodec.train.toy import ToyRegression
    exported = []
    monkeypatch.setattr(ToyRegression, "export", lambda self, path=None: exported.append(path) or None,
                        raising=False)
    c = cfg(BASE, max_steps=12, val_every=2, best_metric="val/loss")
    whole = Trainer(c, tmp_path / "whole")
    whole.fit()
    losses = {h["step"]: h["val/loss"] for h in whole.history if "val/loss" in h}
    step = min(losses, key=losses.get)
    best = json.loads((tmp_path / "whole" / "best" / "best.json").read_text())
    assert (best["step"], best["value"]) == (step, pytest.approx(losses[step])) and best["metric"] == "val/loss"
    improvements = [s for s in sorted(losses) if losses[s] == min(v for t, v in losses.items() if t <= s)]
    assert len(exported) == len(improvements) and all(str(p).endswith("best") for p in exported)
    Trainer(c, tmp_path / "split").fit(until_step=6)
    resumed = Trainer(c, tmp_path / "split")
    assert resumed.best is not None and resumed.best["step"] <= 6
    resumed.fit()
    assert json.loads((tmp_path / "split" / "best" / "best.json").read_text())["step"] == step
    with pytest.raises(ConfigError, match="val/accuracy.*not a validation scalar"):
        Trainer(cfg(BASE, max_steps=2, val_every=2, best_metric="val/accuracy"), tmp_path / "bad").fit()
    with pytest.raises(ConfigError, match="best_mode"):
        Trainer(cfg(BASE, best_mode="lowest"), tmp_path / "bad2")


def test_epoch_stream_runs_through_epochs_and_resumes_mid_epoch():
    from audiocodec.train.data import EpochStream, ResumableBatchSampler
    base = ResumableBatchSampler(10, 4, shuffle=True, seed=3, drop_last=True)   # 2 batches per epoch
    stream = EpochStream(base, max_epochs=3, epoch_keys=True)
    batches = list(stream)
    assert len(batches) == 6
    assert list(stream.positions) == [(e, b, b == 2) for e in range(3) for b in (1, 2)]
    assert all(e == i // 2 for i, b in enumerate(batches) for _, e in b)
    assert [idx for idx, _ in batches[2]] != [idx for idx, _ in batches[0]]  # a new order each epoch
    # starting at epoch 1 after its first batch gives the tail of the same sequence
    resumed = list(EpochStream(ResumableBatchSampler(10, 4, shuffle=True, seed=3), 1, 1, 3, True))
    assert resumed == batches[3:]


class _PidDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):
        return torch.tensor([os.getpid()])

    def set_epoch(self, epoch):
        pass


def test_trainer_loader_workers_start_once_across_epochs(tmp_path):
    """One DataLoader serves all epochs: the same worker processes load every batch (no per-epoch restart)."""
    trainer = Trainer(cfg(PLAIN, max_steps=1, batch_size=2, num_workers=2), run_dir=tmp_path / "run")
    trainer.train_ds = _PidDataset()
    trainer.sampler.num_samples = 8
    trainer.task.collate = lambda items: torch.cat(items)
    stream = trainer._stream()
    pids, epochs = set(), []
    for _ in range(12):                      # 4 batches per epoch: 3 epochs
        pids.update(next(stream).tolist())
        epochs.append((trainer.epoch, trainer.batch_in_epoch))
    stream.close()
    assert len(pids) == 2 and os.getpid() not in pids
    assert epochs[3] == (1, 0) and epochs[4] == (1, 1) and epochs[-1] == (3, 0)


def test_bucket_batch_sampler_limits_padding_and_splits_ranks_evenly():
    from audiocodec.train.data import BucketBatchSampler
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (500,), generator=g).tolist() + [900]   # one item longer than max_tokens
    samplers = [BucketBatchSampler(lengths, max_tokens=1000, rank=r, world_size=3, seed=1, bucket_size=100)
                for r in range(3)]
    for s in samplers:
        s.set_epoch(2)
    batches = [list(s) for s in samplers]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(samplers[0])
    seen = [i for rank in batches for b in rank for i in b]
    assert len(seen) == len(set(seen)) and len(seen) > 0.9 * len(lengths)     # at most 2 batches dropped to even out ranks
    padded = sum(len(b) * max(lengths[i] for i in b) for rank in batches for b in rank)
    assert padded < 1.15 * sum(lengths[i] for i in seen)                      # buckets keep padding small
    for rank in batches:
        for b in rank:
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000
    # deterministic per (seed, epoch), different across epochs, resumable mid-epoch
    again = BucketBatchSampler(lengths, 1000, 1, 3, seed=1, bucket_size=100)
    again.set_epoch(2, start_batch=3)
    assert list(again) == batches[1][3:]
    again.set_epoch(3)
    assert list(again) != batches[1]


def test_compile_runs_the_named_modules_compiled_with_the_same_training(tmp_path):
    """trainer.compile: the named modules run through torch.compile in place (parameter names unchanged); the
    run trains as the eager one does (same data, seed and steps: weights equal up to float rounding)."""
    eager = Trainer(cfg(PLAIN), tmp_path / "eager")
    eager.fit()
    compiled = Trainer(cfg(PLAIN, compile=["body", "head"]), tmp_path / "compiled")
    assert all(compiled.task.modules[n]._compiled_call_impl is not None for n in ("body", "head"))
    compiled.fit()
    a, b = weights(tmp_path / "eager", 5), weights(tmp_path / "compiled", 5)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    for bad in ("nothing", "body.9"):
        with pytest.raises(ConfigError, match="trainer.compile"):
            Trainer(cfg(PLAIN, compile=[bad]), tmp_path / f"bad_{bad}")


def test_resume_with_an_optimizer_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    """An optimizer state whose parameter groups do not match the task's (e.g. a checkpoint of an earlier model
    layout) is refused with a CheckpointError that names the optimizer, not a bare ValueError."""
    Trainer(cfg(PLAIN, max_steps=2), tmp_path / "run").fit()
    path = tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(2)
    model, state, ema = ckpt.load_checkpoint(path)
    state["optimizers"]["main"]["param_groups"][0]["params"].append(10_000)
    other = Trainer(cfg(PLAIN, max_steps=2, resume="never"), tmp_path / "other")
    with pytest.raises(CheckpointError, match="optimizer 'main' does not fit"):
        other._load_states(str(path), model, state, ema)
