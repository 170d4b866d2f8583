"""One trainer for every model: a :class:`Trainer` runs any :class:`~audiocodec.train.task.Task`.

The trainer owns everything that is not the model: processes and devices (plain ``torchrun``, one node
or many; one process without it), data order, optimizers and schedules, bf16 autocast, gradient
accumulation, clipping and averaging across ranks, EMA, atomic checkpoints with exact resume,
validation, tensorboard and the progress bar. A task owns the modules, the data set and the losses.

Run directory (``run_dir``)::

    config.yaml        the resolved config (written at start)
    train.log          the log of rank 0
    tensorboard/       scalars (train/*, val/*, lr/*, grad_norm/*) and the task's media
    checkpoints/step_00001000/{model.safetensors, ema.safetensors, state.pt}

The task contract
-----------------
``build(ctx) -> {name: module}``
    create the modules (the trainer moves them, syncs ranks, checkpoints them as ``task.modules``).
``train_dataset()`` / ``val_dataset()`` / ``collate(items)``
    map-style data sets; the trainer batches and shards them (``trainer.batch_size`` per rank).
``optimizers() -> {name: module | params | param groups | Optimizer}``
    each name gets AdamW + a schedule from ``optim.<name>`` (clip norm too); default ``{"main": all}``.
``training_step(batch, step, ctx) -> {key: scalar}``
    one micro-batch: compute losses and call ``ctx.backward_and_step(name, loss)`` once per optimizer,
    in any order and as often as there are optimizers (alternating D and G is two calls). The call
    back-propagates ``loss`` into that optimizer's parameters only (a generator loss leaves no
    gradient on the discriminator), scales it for gradient accumulation and, on the last micro-batch
    of the step, averages gradients over ranks, clips them, logs the norm, steps the optimizer and its
    schedule. It returns the gradient norm (``None`` on earlier micro-batches). Every rank must make
    the same calls in the same order; skipping an optimizer for some steps is fine.
``validation_step(batch, ctx)``, ``log_media(writer, step, ctx)``, ``init_from(path)``,
``state_dict()`` / ``load_state_dict(state)``, ``on_train_end(ctx)``: optional.

Forward passes run under ``torch.autocast`` when ``trainer.precision: bf16`` (weights, gradients and
optimizer states stay fp32); wrap numerically delicate parts (STFT losses, quantizer distances) in
``with ctx.fp32():`` and cast their inputs with ``.float()``.

A GAN task with two optimizers::

    @TASKS.register("my_gan")
    class MyGAN(Task):
        def build(self, ctx):
            self.gen, self.disc = Generator(), Discriminator()
            return {"gen": self.gen, "disc": self.disc}
        def optimizers(self):
            return {"gen": self.gen, "disc": self.disc}       # optim.gen / optim.disc in the config
        def training_step(self, batch, step, ctx):
            fake = self.gen(batch)
            d_loss = hinge_d(self.disc(batch), self.disc(fake.detach()))
            ctx.backward_and_step("disc", d_loss)
            with ctx.fp32():
                g_loss = hinge_g(self.disc(fake)) + 45 * mel_loss(fake.float(), batch.float())
            ctx.backward_and_step("gen", g_loss)
            return {"d_loss": d_loss, "g_loss": g_loss}

Exact resume: a checkpoint holds weights, EMA, optimizer and schedule states, the step, the epoch and
the position in it, every rank's RNG states (python, numpy, torch, CUDA) and the task's extra state. The
data order of an epoch depends on the seed and the epoch only, the data pipeline never touches the
global RNGs, and validation / media run with the RNGs saved and restored, so a run killed and resumed
gives (on CPU) bit-identical weights to one that was never stopped. Several nodes need a file system
they all see for the run folder (rank 0 writes checkpoints, every rank reads the one it resumes from).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ..config import merge, parse_override
from ..errors import CheckpointError, ConfigError
from . import checkpoint as ckpt
from . import distributed as dist_utils
from .data import EpochStream, ResumableBatchSampler, batch_position, mix_seed, move_to, samples_position, worker_seed
from .optim import EMA, build_optimizer, build_scheduler, optim_config
from .task import TASKS, Task

log = logging.getLogger("audiocodec.train")

TOP_KEYS = ("name", "task", "trainer", "optim")

TRAINER_DEFAULTS: dict = {
    "max_steps": 100000,       # optimizer steps (each of grad_accum micro-batches)
    "max_epochs": None,        # stop earlier after this many passes over the data
    "max_minutes": None,       # stop earlier after this much wall time (checkpointed; resume continues)
    "best_metric": None,       # e.g. val/loss: at each validation that improves it, export the model to
                               # <run_dir>/best (with best.json: metric, value, step)
    "best_mode": "min",        # min | max: which direction of best_metric is better
    "schedule_by": "steps",    # steps | time: LR schedules run over max_minutes of training (all resumes
                               # together) instead of max_steps; for time-boxed jobs (not bit-reproducible)
    "seed": 0,
    "precision": "fp32",       # fp32 | bf16 (autocast; weights and optimizer states stay fp32)
    "grad_accum": 1,           # micro-batches per optimizer step
    "batch_size": 16,          # per rank and micro-batch
    "val_batch_size": None,    # default: batch_size
    "num_workers": 0,          # DataLoader worker processes per rank
    "shuffle": True,
    "drop_last": True,
    "log_every": 50,           # steps between scalar logs
    "val_every": 1000,         # steps between validations (0 / null: never)
    "val_batches": None,       # cap on validation batches per rank (null: the whole set)
    "media_every": None,       # steps between task.log_media calls (null: val_every; 0: never)
    "ckpt_every": 1000,        # steps between checkpoints (a last one is always written)
    "keep_last": 3,            # checkpoints kept (0 / null: all)
    "keep_every": None,        # also keep every checkpoint at a multiple of this step
    "resume": "auto",          # auto: newest valid checkpoint of the run, if any | never | a checkpoint path
    "init_from": None,         # weights to start from (task.init_from), when not resuming
    "freeze": [],              # "<module>.<submodule or parameter>" names kept fixed: no gradient, eval mode
    "compile": [],             # "<module>[.<submodule>]" names run through torch.compile (e.g. codec.decoder,
                               # disc): fused kernels; the first steps compile (minutes)
    "channels_last": [],       # "<module>[.<submodule>]" names whose Conv2d layers run channels-last (NHWC, the
                               # layout of cuDNN's tensor-core kernels: no layout transposes), e.g. disc
    "cudnn_benchmark": False,  # let cuDNN time its algorithms per input shape (pays when crops are fixed)
    "ema": None,               # e.g. {decay: 0.999, modules: [gen], start_step: 0, every: 1}
    "device": "auto",          # auto | cpu | cuda
    "threads": None,           # torch CPU threads (set 1 for bit-exact runs across processes)
    "deterministic": False,    # torch.use_deterministic_algorithms
    "tf32": True,              # TF32 matmuls / convolutions on CUDA
    "progress": True,          # tqdm bar on rank 0
    "skip_nonfinite": True,    # skip an optimizer step whose gradient norm is inf / nan
    "sync_buffers": True,      # broadcast buffers from rank 0 after each step (as DDP does)
    "dist_timeout_minutes": 30,
}

EMA_DEFAULTS: dict = {"decay": 0.999, "modules": None, "start_step": 0, "every": 1}


# -- config ------------------------------------------------------------------------------------------

def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def apply_override(cfg: Mapping, override: Union[str, Mapping]) -> dict:
    """``cfg`` with one ``--set`` override (``"a.b=c"`` or a nested mapping); unknown keys are errors
    (``optim.<name>`` and ``task`` keys are checked when the task and its optimizers are built)."""
    if isinstance(override, str):
        override = parse_override(override)
    out = copy.deepcopy(dict(cfg))
    for key, value in _plain(override).items():
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown config key '{key}'; known top-level keys: {', '.join(TOP_KEYS)}")
        if key == "optim":
            if not isinstance(value, Mapping):
                raise ConfigError(f"optim must map optimizer names to settings, got {value!r}")
            out["optim"] = merge(out.get("optim") or {}, value, "optim", strict=False)
        elif key == "task" and isinstance(value, str):
            out["task"] = {"type": value} if value != out["task"].get("type") else out["task"]
        else:
            out = merge(out, {key: value})
    return out


def resolve_config(config: Mapping, overrides: Iterable[Union[str, Mapping]] = (), task_given: bool = False) -> dict:
    """A full training config: ``config`` over the defaults, then ``overrides`` in order.
    (``task_given``: the task object is passed directly, so ``task`` may be missing.)"""
    config = _plain(config)
    if task_given and "task" not in config:
        config["task"] = {"type": "<given>"}
    unknown = [k for k in config if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known top-level keys: {', '.join(TOP_KEYS)}")
    task = config.get("task")
    if isinstance(task, str):
        task = {"type": task}
    if not isinstance(task, Mapping) or "type" not in task:
        raise ConfigError(f"the config needs `task: {{type: NAME, ...}}` with NAME one of {', '.join(TASKS.names())}")
    trainer = config.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        raise ConfigError(f"trainer must be a mapping, got {trainer!r}")
    cfg = {"name": config.get("name"), "task": dict(task),
           "trainer": merge(TRAINER_DEFAULTS, trainer, "trainer"), "optim": dict(config.get("optim") or {})}
    for ov in overrides:
        cfg = apply_override(cfg, ov)
    _check_trainer(cfg["trainer"])
    return cfg


def _check_trainer(t: dict) -> None:
    if t["precision"] not in ("fp32", "bf16"):
        raise ConfigError(f"trainer.precision must be fp32 or bf16, got {t['precision']!r}")
    for key in ("max_steps", "grad_accum", "batch_size", "log_every"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"trainer.{key} must be a positive integer, got {t[key]!r}")
    if t["ema"] is not None:
        ema = {"decay": t["ema"]} if isinstance(t["ema"], (int, float)) else t["ema"]
        if not isinstance(ema, Mapping):
            raise ConfigError(f"trainer.ema must be null, a decay or a mapping, got {t['ema']!r}")
        t["ema"] = merge(EMA_DEFAULTS, ema, "trainer.ema")
    if t["best_mode"] not in ("min", "max"):
        raise ConfigError(f"trainer.best_mode must be min or max, got {t['best_mode']!r}")
    if t["best_metric"] is not None and not str(t["best_metric"]).startswith("val/"):
        raise ConfigError(f"trainer.best_metric must be a validation scalar (val/<key>), got {t['best_metric']!r}")
    if t["schedule_by"] not in ("steps", "time"):
        raise ConfigError(f"trainer.schedule_by must be steps or time, got {t['schedule_by']!r}")
    if t["schedule_by"] == "time" and not t["max_minutes"]:
        raise ConfigError("trainer.schedule_by=time needs trainer.max_minutes (the length of the schedule)")
    if not (t["resume"] in ("auto", "never", None) or isinstance(t["resume"], str)):
        raise ConfigError(f"trainer.resume must be auto, never or a checkpoint path, got {t['resume']!r}")


# -- RNG ----------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> dict:
    """Every RNG state of this process as plain, ``weights_only``-loadable values."""
    npst = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": npst["bit_generator"],
                  "key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
                  "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]), "gauss": float(npst["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping, device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def isolated_rng(device: torch.device):
    """Run a block without advancing any RNG of the training (validation, media)."""
    state = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(state, device)


# -- logging ------------------------------------------------------------------------------------------

class _TqdmHandler(logging.Handler):
    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class _NullWriter:
    """Stands in for the tensorboard writer where there is none (other ranks, tensorboard missing)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _submodule_names(top: str, module: nn.Module) -> str:
    """``"top.a, top.b"``: the direct submodules of task module ``top``, for config error messages."""
    return ", ".join(f"{top}.{n}" for n, _ in module.named_children())


def _config_names(key: str, names, what: str) -> list:
    """The list of names of config entry ``trainer.<key>`` (a single name may be given as a string)."""
    if isinstance(names, str):
        return [names]
    if not isinstance(names, (list, tuple)):
        raise ConfigError(f"trainer.{key} must be a list of {what}, got {names!r}")
    return list(names)


def _input_channels_last(conv: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of ``trainer.channels_last``: a 4-D input in channels-last memory order. A one-channel
    input ``[B, 1, H, W]`` counts as channels-last already but convs read its strides as NCHW: it is copied
    into explicit channels-last strides (one channel: a small copy) so the first conv's output is NHWC too."""
    x, *rest = args
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        if x.shape[1] == 1 and x.stride(1) != 1:
            x = x.clone(memory_format=torch.channels_last)
        else:
            x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


def _scalar(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float().mean()
    return torch.tensor(float(value))


# -- the context a task sees -------------------------------------------------------------------------

def _skips_on_device(opt: torch.optim.Optimizer, norm: torch.Tensor) -> bool:
    """Whether ``opt`` can skip a step given a device flag (fused Adam / AdamW on the GPU)."""
    return norm.is_cuda and isinstance(opt, torch.optim.Adam) and bool(opt.defaults.get("fused"))


class TrainContext:
    """The trainer as a task sees it: where it runs, which step it is, and the optimizer helper."""

    def __init__(self, trainer: "Trainer"):
        self._t = trainer
        self.step = 0      # index of the optimizer step being computed (0-based)
        self.micro = 0     # index of the micro-batch within it (0 .. grad_accum - 1)
        self._logs: dict[str, torch.Tensor] = {}

    # where and what
    @property
    def device(self) -> torch.device:
        return self._t.dist.device

    @property
    def rank(self) -> int:
        return self._t.dist.rank

    @property
    def world_size(self) -> int:
        return self._t.dist.world_size

    @property
    def is_main(self) -> bool:
        return self._t.dist.is_main

    @property
    def config(self) -> dict:
        return self._t.config

    @property
    def run_dir(self) -> Path:
        return self._t.run_dir

    @property
    def grad_accum(self) -> int:
        return self._t.tcfg["grad_accum"]

    @property
    def is_last_micro(self) -> bool:
        return self.micro == self.grad_accum - 1

    @property
    def modules(self) -> dict[str, nn.Module]:
        return self._t.task.modules

    @property
    def ema(self) -> dict[str, nn.Module]:
        """EMA copies of the modules by name (empty without ``trainer.ema``)."""
        return self._t.ema.shadow if self._t.ema is not None else {}

    @property
    def writer(self):
        return self._t.writer

    def lr(self, name: str) -> float:
        return self._t.optimizers[name].param_groups[0]["lr"]

    # precision
    def autocast(self, enabled: bool = True):
        """The training autocast (bf16 when ``trainer.precision: bf16``), e.g. for validation code."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=enabled and self._t.tcfg["precision"] == "bf16")

    def fp32(self):
        """A block computed in fp32 even under bf16 autocast (cast its inputs with ``.float()``)."""
        return torch.autocast(self.device.type, enabled=False)

    # logging
    def log(self, **values) -> None:
        """Scalars to log at this step (as if returned by ``training_step``)."""
        for k, v in values.items():
            self._logs[k] = _scalar(v)

    # optimization
    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        try:
            return self._t.optimizers[name]
        except KeyError:
            raise KeyError(f"no optimizer {name!r}; this task has {sorted(self._t.optimizers)}") from None

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Back-propagate ``loss`` (scaled by ``1 / grad_accum``) into optimizer ``name``'s parameters only
        (``autograd.backward(inputs=...)``; activation checkpointing must be the non-reentrant kind)."""
        self._optimizer(name)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise RuntimeError(f"the loss given for optimizer {name!r} does not require grad")
        params = [p for p in self._t.opt_params[name] if p.requires_grad]
        if not params:
            return
        with torch.autocast(self.device.type, enabled=False):
            torch.autograd.backward(loss / self.grad_accum, inputs=params, retain_graph=retain_graph)
        self._t.pending.add(name)

    def optimizer_step(self, name: str) -> Optional[torch.Tensor]:
        """On the last micro-batch: average gradients over ranks, clip, step optimizer ``name`` and its
        schedule, zero its gradients. Returns the gradient norm before clipping (``None`` before the
        last micro-batch)."""
        if not self.is_last_micro:
            return None
        return self._t._optimizer_step(name)

    def backward_and_step(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> Optional[torch.Tensor]:
        """:meth:`backward` then :meth:`optimizer_step`: the one call a training step makes per optimizer."""
        self.backward(name, loss, retain_graph=retain_graph)
        return self.optimizer_step(name)


# -- the trainer --------------------------------------------------------------------------------------

class Trainer:
    """Train ``task`` (or the one ``config["task"]`` names) with the ``trainer`` / ``optim`` config.

    Args:
        config: ``{name, task, trainer, optim}`` (see :data:`TRAINER_DEFAULTS` and
            :mod:`audiocodec.train.optim`); ``overrides`` (``"a.b=c"`` strings) are applied on top.
        run_dir: where config, log, tensorboard events and checkpoints go.
        task: a ready :class:`Task` instead of building ``config["task"]``.

    ``Trainer(...).fit()`` trains until ``trainer.max_steps`` (or ``max_epochs``), resuming first as
    ``trainer.resume`` says.
    """

    def __init__(self, config: Mapping, run_dir: Union[str, os.PathLike], task: Optional[Task] = None,
                 overrides: Iterable[Union[str, Mapping]] = ()):
        self.config = resolve_config(config, overrides, task_given=task is not None)
        self.tcfg = t = self.config["trainer"]
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._saved_threads = torch.get_num_threads()
        self._saved_deterministic = torch.are_deterministic_algorithms_enabled()
        self._saved_cudnn_benchmark = torch.backends.cudnn.benchmark
        if t["threads"]:
            torch.set_num_threads(int(t["threads"]))
        if t["deterministic"]:
            torch.use_deterministic_algorithms(True)
        self.dist = dist_utils.init_distributed(t["device"], t["dist_timeout_minutes"])
        if self.dist.device.type == "cuda" and t["tf32"]:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.dist.device.type == "cuda" and t["cudnn_benchmark"]:
            torch.backends.cudnn.benchmark = True
        self._handlers: list[logging.Handler] = []
        self._setup_logging()
        try:
            self._setup(task)
        except BaseException:
            self._teardown()
            raise

    # -- setup ------------------------------------------------------------------------------------
    def _setup_logging(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(self.run_dir / "train.log")
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            th = _TqdmHandler()
            th.setFormatter(logging.Formatter("%(message)s"))
            self._handlers = [fh, th]
        else:
            sh = logging.StreamHandler(sys.stderr)
            sh.setLevel(logging.WARNING)
            sh.setFormatter(logging.Formatter(f"[rank {self.dist.rank}] %(levelname)s %(message)s"))
            self._handlers = [sh]
        for h in self._handlers:
            log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False

    def _setup(self, task: Optional[Task]) -> None:
        t, d = self.tcfg, self.dist
        self.ctx = TrainContext(self)
        self.task = task if task is not None else TASKS.build(self.config["task"], "task")
        if not isinstance(self.task, Task):
            raise ConfigError(f"task {self.config['task']['type']!r} did not build a Task")
        self.writer: Any = _NullWriter()
        self.pending: set[str] = set()
        self._stepped: set[str] = set()
        self.history: list[dict] = []
        self.skipped: dict[str, int] = {}  # optimizer steps skipped for non-finite gradients, by optimizer
        self._skipped_on_device: dict[str, torch.Tensor] = {}  # the same, not yet read back (fused optimizers)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self._saved_step = -1  # the step of the newest checkpoint on disk (of this run)
        self._train_seconds = 0.0  # wall time spent in fit() by this run, over all resumes (rank 0's clock)
        self._fit_start: Optional[float] = None
        self.best: Optional[dict] = None  # {"metric", "value", "step"} of the best validation (trainer.best_metric)

        # modules: identical initial weights on every rank
        seed_everything(t["seed"])
        modules = dict(self.task.build(self.ctx) or {})
        if not modules:
            raise ConfigError("the task's build() returned no modules")
        for name, m in modules.items():
            if "." in name or not isinstance(m, nn.Module):
                raise ConfigError(f"task module {name!r}: names must have no dots and values must be nn.Modules")
            m.to(d.device)
        self.task.modules = modules

        resume = self._find_resume()
        if resume is None and t["init_from"]:
            log.info(f"initialising weights from {t['init_from']}")
            self.task.init_from(str(t["init_from"]))
        dist_utils.broadcast_tensors([x.data for m in modules.values() for x in (*m.parameters(), *m.buffers())])
        self._frozen = self._freeze(t["freeze"])

        # optimizers and schedules
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.opt_params: dict[str, list] = {}
        self.clip: dict[str, Optional[float]] = {}
        targets = dict(self.task.optimizers())
        unknown = [n for n in self.config["optim"] if n not in targets]
        if unknown:
            raise ConfigError(f"optim.{unknown[0]}: this task has no optimizer {unknown[0]!r}; "
                              f"it has {sorted(targets)}")
        for name, target in targets.items():
            ocfg = optim_config(name, self.config["optim"].get(name))
            self.config["optim"][name] = ocfg
            opt = target if isinstance(target, torch.optim.Optimizer) else build_optimizer(name, target, ocfg, d.device)
            self.optimizers[name] = opt
            self.schedulers[name] = build_scheduler(name, opt, ocfg, t["max_steps"])
            self.opt_params[name] = [p for g in opt.param_groups for p in g["params"]]
            self.clip[name] = ocfg["clip_grad"]
        seen: set[int] = set()
        for name, params in self.opt_params.items():
            for p in params:
                if id(p) in seen:
                    raise ConfigError(f"a parameter is in two optimizers (second: {name!r}); give each one its own")
                seen.add(id(p))

        self.ema = None
        if t["ema"] is not None:
            names = t["ema"]["modules"] or list(modules)
            missing = [n for n in names if n not in modules]
            if missing:
                raise ConfigError(f"trainer.ema.modules: no module {missing[0]!r}; modules are {sorted(modules)}")
            self.ema = EMA({n: modules[n] for n in names}, t["ema"]["decay"], t["ema"]["start_step"], t["ema"]["every"])

        # data
        self.train_ds = self.task.train_dataset()
        self.sampler = self.task.batch_sampler(self.train_ds, d.rank, d.world_size, t["seed"], t["shuffle"])
        if self.sampler is None:
            self.sampler = ResumableBatchSampler(len(self.train_ds), t["batch_size"], d.rank, d.world_size,
                                                 shuffle=t["shuffle"], seed=t["seed"], drop_last=t["drop_last"])
        if len(self.sampler) == 0:
            raise ConfigError(f"the training set ({len(self.train_ds)} items over {d.world_size} ranks) is smaller "
                              f"than one batch (trainer.batch_size={t['batch_size']}); lower the batch size")
        self.val_ds = self.task.val_dataset()

        if resume is not None:
            self._load(*resume)
        else:
            seed_everything(mix_seed(t["seed"], d.rank, 1) % 2**63)
        self._channels_last(t["channels_last"])
        self._compile(t["compile"])
        self._save_config()
        log.info(f"run {self.run_dir}: task {self.config['task']['type']}, {d.world_size} process(es) on "
                 f"{d.device.type}, {sum(p.numel() for m in modules.values() for p in m.parameters()):,} parameters, "
                 f"starting at step {self.step}")

    def _find_resume(self):
        """``(path, contents)`` of the checkpoint to resume from (every rank agrees), or ``None``."""
        mode = self.tcfg["resume"]
        if mode in (None, "never"):
            return None
        chosen, loaded, error = None, None, None
        if self.dist.is_main:
            try:
                if mode == "auto":
                    found = ckpt.latest_valid(self.ckpt_dir, warn=log.warning)
                    chosen, loaded = (str(found[0]), found[1]) if found else (None, None)
                else:
                    path = Path(mode)
                    if (path / "checkpoints").is_dir():
                        found = ckpt.latest_valid(path / "checkpoints", warn=log.warning)
                        if not found:
                            raise CheckpointError(f"trainer.resume: no valid checkpoint in {path}")
                        chosen, loaded = str(found[0]), found[1]
                    else:
                        chosen, loaded = str(path), ckpt.load_checkpoint(path)
            except CheckpointError as e:
                error = str(e)
        chosen, error = dist_utils.broadcast_object((chosen, error))  # every rank fails or resumes alike
        if error is not None:
            raise CheckpointError(error)
        if chosen is None:
            return None
        if not self.dist.is_main:
            loaded = ckpt.load_checkpoint(chosen)  # needs a file system shared by the nodes
        return chosen, loaded

    def _load(self, path: str, contents) -> None:
        try:
            self._load_states(path, *contents)
        except CheckpointError:
            raise
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"cannot resume from {path}: {type(e).__name__}: {e}") from e

    def _load_states(self, path: str, model: dict, state: dict, ema: Optional[dict]) -> None:
        log.info(f"resuming from {path} (step {state['step']})")
        for name, module in self.task.modules.items():
            prefix = name + "."
            sub = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub)
            except RuntimeError as e:
                raise CheckpointError(f"{path}: weights of module {name!r} do not fit: {e}") from e
        if set(state["optimizers"]) != set(self.optimizers):
            raise CheckpointError(f"{path} has optimizers {sorted(state['optimizers'])}, "
                                  f"the task {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            try:
                opt.load_state_dict(state["optimizers"][name])
            except (ValueError, KeyError) as e:   # parameter groups of other sizes: another model layout
                raise CheckpointError(f"{path}: the state of optimizer {name!r} does not fit this task's parameters "
                                      f"({e}); start a new run from its weights with --init-from") from e
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        if self.ema is not None:
            if ema is not None:
                self.ema.load_state_dict(ema)
            else:
                log.warning(f"{path} has no EMA weights: the EMA starts from the current weights")
                self.ema.reset(self.task.modules)
        self.task.load_state_dict(state.get("task", {}))
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self._train_seconds = float(state.get("train_seconds", 0.0))
        self.best = state.get("best")
        self._saved_step = self.step
        d, bs = self.dist, self.tcfg["batch_size"]
        if state["world_size"] == d.world_size and state["batch_size"] == bs:
            self.batch_in_epoch = int(state["batch_in_epoch"])
        else:
            self.batch_in_epoch, exact = batch_position(int(state["samples_in_epoch"]), bs, d.world_size)
            log.warning(f"resuming with {d.world_size} process(es) x batch {bs} instead of {state['world_size']} x "
                        f"{state['batch_size']}: the data position in the epoch is "
                        f"{'kept' if exact else 'approximate'}, "
                        "the random streams are new")
        rngs = state["rng"]
        if len(rngs) == d.world_size:
            restore_rng(rngs[d.rank], d.device)
        else:
            seed_everything(mix_seed(self.tcfg["seed"], d.rank, self.step) % 2**63)

    def _save_config(self) -> None:
        if not self.dist.is_main:
            return
        path = self.run_dir / "config.yaml"
        text = yaml.safe_dump(self.config, sort_keys=False)
        if path.exists() and path.read_text() != text:
            log.warning(f"{path} differs from this run's config; it is replaced (the old one is config.prev.yaml)")
            os.replace(path, self.run_dir / "config.prev.yaml")
        tmp = path.with_name(".config.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # -- the loop ---------------------------------------------------------------------------------
    def _stream(self):
        """Batches forever (or up to ``max_epochs``), keeping ``epoch`` / ``batch_in_epoch`` current.

        One DataLoader serves every epoch (:class:`~audiocodec.train.data.EpochStream`), so its workers
        start once. Datasets with a ``set_epoch`` method get ``(index, epoch)`` keys instead of calls.
        """
        t, d = self.tcfg, self.dist
        epoch_keys = hasattr(self.train_ds, "set_epoch")
        if epoch_keys:
            self.train_ds.set_epoch(self.epoch)
        batches = EpochStream(self.sampler, self.epoch, self.batch_in_epoch, t["max_epochs"], epoch_keys)
        extra = {"prefetch_factor": 4, "persistent_workers": False} if t["num_workers"] > 0 else {}
        loader = DataLoader(self.train_ds, batch_sampler=batches, num_workers=t["num_workers"],
                            collate_fn=self.task.collate, pin_memory=d.device.type == "cuda",
                            generator=worker_seed(t["seed"], self.epoch, d.rank), **extra)
        for batch in loader:
            self.epoch, self.batch_in_epoch, last = batches.positions.popleft()
            if last:  # the epoch's last batch: the next one starts a new epoch
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            yield batch
        if t["max_epochs"] is not None:
            self.epoch, self.batch_in_epoch = max(self.epoch, t["max_epochs"]), 0

    def _optimizer_step(self, name: str) -> torch.Tensor:
        if name in self._stepped:
            raise RuntimeError(f"optimizer {name!r} stepped twice in step {self.ctx.step}: call backward_and_step "
                               "once per optimizer and step (sum the losses first), "
                               "or use ctx.backward + ctx.optimizer_step")
        self._stepped.add(name)
        self.pending.discard(name)
        opt, params = self.optimizers[name], self.opt_params[name]
        dist_utils.average_gradients([p for p in params if p.requires_grad])
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.dist.device)
        if self.tcfg["skip_nonfinite"] and grads and _skips_on_device(opt, norm):
            # fused AdamW skips the update itself when ``found_inf`` is set (as under GradScaler): no host
            # sync per step; the skips are counted on the device and read when logging
            bad = (~torch.isfinite(norm)).float()
            opt.found_inf = bad
            if self.clip[name] is not None:
                torch.nn.utils.clip_grads_with_norm_(grads, float(self.clip[name]), norm)
            opt.step()
            self._skipped_on_device[name] = self._skipped_on_device.get(name, 0) + bad
        else:
            finite = True
            if self.tcfg["skip_nonfinite"] and grads:
                finite = bool(torch.isfinite(norm))
            if not finite:
                log.warning(f"step {self.ctx.step}: gradient norm of {name!r} is {norm.item()}; optimizer step skipped")
                self.skipped[name] = self.skipped.get(name, 0) + 1
            else:
                if self.clip[name] is not None and grads:
                    torch.nn.utils.clip_grads_with_norm_(grads, float(self.clip[name]), norm)
                opt.step()
        if self.tcfg["schedule_by"] == "steps":
            self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)
        torch.clear_autocast_cache()  # weights changed: later forwards in this step must not reuse bf16 copies
        self.ctx._logs[f"grad_norm/{name}"] = norm.detach().float()
        return norm

    def _train_step(self, stream) -> bool:
        """One optimizer step (``grad_accum`` micro-batches); ``False`` when the data ran out."""
        ctx, accum = self.ctx, self.tcfg["grad_accum"]
        ctx.step = self.step
        self._stepped.clear()
        logs: dict[str, list] = {}
        for micro in range(accum):
            try:
                batch = next(stream)
            except StopIteration:
                for opt in self.optimizers.values():
                    opt.zero_grad(set_to_none=True)
                return False
            ctx.micro = micro
            ctx._logs = {}
            batch = move_to(batch, self.dist.device)
            with ctx.autocast():
                out = self.task.training_step(batch, self.step, ctx) or {}
            for k, v in {**{k: _scalar(v) for k, v in out.items()}, **ctx._logs}.items():
                logs.setdefault(k, []).append(v)
        if self.pending:
            raise RuntimeError(f"step {self.step}: gradients of {sorted(self.pending)} were computed but never "
                               "stepped; use ctx.backward_and_step (or ctx.backward + ctx.optimizer_step)")
        self.step += 1
        if self.tcfg["sync_buffers"] and self.dist.distributed:
            dist_utils.broadcast_tensors([b for m in self.task.modules.values() for b in m.buffers()])
        if self.ema is not None:
            self.ema.update(self.task.modules, self.step)
        for k, vs in logs.items():
            v = torch.stack([x.to(self.dist.device) for x in vs]).mean()
            s, n = self._acc.get(k, (0.0, 0))
            self._acc[k] = (s + v, n + 1)
        return True

    def fit(self, until_step: Optional[int] = None) -> dict:
        """Train to ``trainer.max_steps`` (or ``until_step``, which leaves the schedule as it is: for
        time-boxed jobs). Writes a checkpoint at the end. Returns the last logged scalars."""
        t, d = self.tcfg, self.dist
        end = t["max_steps"] if until_step is None else min(until_step, t["max_steps"])
        self._acc: dict[str, tuple] = {}
        self._t_log, self._steps_since_log = time.time(), 0
        if d.is_main:
            self.writer = self._make_writer()
        from tqdm import tqdm
        bar = tqdm(total=t["max_steps"], initial=self.step, disable=not (d.is_main and t["progress"]),
                   unit="step", dynamic_ncols=True, file=sys.stderr)
        last: dict = {}
        finished = False
        stream = None
        self._fit_start = self._clock()
        by_time = t["schedule_by"] == "time"
        try:
            for m in self.task.modules.values():
                m.train()
            self._frozen_to_eval()
            if by_time and self._time_is_up(t["max_minutes"]):   # also sets the rates of the time spent
                log.info(f"the run has already trained trainer.max_minutes={t['max_minutes']}")
                end, finished = self.step, True
            stream = self._stream()
            while self.step < end:
                if not self._train_step(stream):
                    log.info(f"reached trainer.max_epochs={t['max_epochs']} at step {self.step}")
                    finished = True
                    break
                self._steps_since_log += 1
                bar.update(1)
                s = self.step
                if s % t["log_every"] == 0 or s == end:
                    last = self._log_train()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in [kv for kv in last.items() if "/" not in kv[0]][:4]})
                if t["val_every"] and s % t["val_every"] == 0:
                    scores = self.validate()
                    last.update(scores)
                    self._keep_best(scores)
                media_every = t["val_every"] if t["media_every"] is None else t["media_every"]
                if media_every and s % media_every == 0:
                    self.log_media()
                if t["ckpt_every"] and s % t["ckpt_every"] == 0:
                    self.save_checkpoint()
                if t["max_minutes"] and s % 10 == 0 and self._time_is_up(t["max_minutes"]):
                    log.info(f"reached trainer.max_minutes={t['max_minutes']} at step {s}"
                             + (" (training time of the run)" if by_time else ""))
                    finished = by_time   # the time schedule is complete: the run's end
                    break
            if self._saved_step != self.step and self.step > 0:
                self.save_checkpoint()
            if finished or self.step >= t["max_steps"]:
                self.task.on_train_end(self.ctx)
        finally:
            if self._fit_start is not None:
                self._train_seconds += self._clock() - self._fit_start
                self._fit_start = None
            if stream is not None:
                stream.close()  # stops DataLoader workers
            bar.close()
            self._teardown()
        return last

    def _keep_best(self, scores: Mapping[str, float]) -> None:
        """``trainer.best_metric``: when this validation improves it, export the model to ``<run_dir>/best``
        (rank 0, the task's own format) and record the value; every rank sees the same all-reduced scores."""
        metric, mode = self.tcfg["best_metric"], self.tcfg["best_mode"]
        if not metric or not scores:
            return
        if metric not in scores:
            raise ConfigError(f"trainer.best_metric {metric!r} is not a validation scalar of this task "
                              f"(it has {', '.join(sorted(scores))})")
        value = float(scores[metric])
        if value != value:   # NaN
            return
        if self.best is not None and not (value < self.best["value"] if mode == "min" else value > self.best["value"]):
            return
        self.best = {"metric": metric, "value": value, "step": self.step}
        if self.dist.is_main:
            folder = self.run_dir / "best"
            path = self.task.export(folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "best.json").write_text(json.dumps({**self.best, "model": str(path) if path else None}, indent=1))
            log.info(f"best {metric} {value:.4g} at step {self.step}" + (f": exported to {path}" if path else ""))

    def _freeze(self, names) -> list[nn.Module]:
        """Apply ``trainer.freeze``: each name is ``"<module>"``, ``"<module>.<submodule>"`` or
        ``"<module>.<parameter>"`` (e.g. ``codec.encoder``, ``codec.quantizer``). Its parameters get no
        gradient (so no optimizer holds them); a frozen (sub)module also stays in eval mode while training,
        so its dropout, batch-norm statistics and EMA codebooks do not change either. Returns the frozen
        submodules (for :meth:`_frozen_to_eval`)."""
        names = _config_names("freeze", names, "module or parameter names")
        frozen: list[nn.Module] = []
        for name in names:
            top, _, rest = str(name).partition(".")
            root, target = self._find_module("trainer.freeze", name)
            if isinstance(target, nn.Module):
                target.requires_grad_(False)
                frozen.append(target)
                continue
            try:
                root.get_parameter(rest).requires_grad_(False)
            except AttributeError:
                raise ConfigError(f"trainer.freeze: {name!r} is neither a submodule nor a parameter of {top!r} "
                                  f"(its submodules: {_submodule_names(top, root)})") from None
        if names:
            n_frozen = sum(p.numel() for m in self.task.modules.values() for p in m.parameters() if not p.requires_grad)
            log.info(f"trainer.freeze: {n_frozen:,} parameters frozen ({', '.join(map(str, names))})")
        return frozen

    def _find_module(self, key: str, name) -> tuple[nn.Module, Optional[nn.Module]]:
        """``(task module, its submodule or None)`` named by ``"<module>[.<submodule>]"`` (config ``key``)."""
        top, _, rest = str(name).partition(".")
        if top not in self.task.modules:
            raise ConfigError(f"{key}: {name!r} names no module of this task "
                              f"(modules: {', '.join(sorted(self.task.modules))})")
        root = self.task.modules[top]
        try:
            target = root.get_submodule(rest) if rest else root
        except AttributeError:
            target = None
        return root, target

    def _named_submodules(self, key: str, names) -> dict[str, nn.Module]:
        """``{name: (sub)module}`` for the names of config list ``trainer.<key>`` (``"<module>[.<submodule>]"``
        each; a single name may be given as a string)."""
        out = {}
        for name in _config_names(key, names, "module names"):
            root, target = self._find_module(f"trainer.{key}", name)
            if not isinstance(target, nn.Module):
                top = str(name).partition(".")[0]
                raise ConfigError(f"trainer.{key}: {name!r} is not a submodule of {top!r} "
                                  f"(its submodules: {_submodule_names(top, root)})")
            out[str(name)] = target
        return out

    def _channels_last(self, names) -> None:
        """Apply ``trainer.channels_last``: every Conv2d inside the named (sub)modules gets its input in
        channels-last memory order (a forward pre-hook; a no-op for an input already in that order), so its
        output, and the activations and gradients after it, stay channels-last: cuDNN's bf16 / TF32 kernels
        work in that layout, and NCHW tensors cost a transpose before and after each conv. Values, parameter
        names and checkpoints are unchanged."""
        modules = self._named_submodules("channels_last", names)
        convs = {id(m): m for module in modules.values() for m in module.modules() if isinstance(m, nn.Conv2d)}
        for conv in convs.values():
            conv.register_forward_pre_hook(_input_channels_last)
        if modules:
            log.info(f"trainer.channels_last: {len(convs)} Conv2d layers in {', '.join(modules)} run channels-last")

    def _compile(self, names) -> None:
        """Apply ``trainer.compile``: each named (sub)module's calls run through ``torch.compile``
        (:meth:`nn.Module.compile`, in place: parameter names, checkpoints and exports are unchanged).
        Done last in setup, after the EMA copies are made (a copy would share the compiled call)."""
        modules = self._named_submodules("compile", names)
        for target in modules.values():
            target.compile()
        if modules:
            log.info(f"trainer.compile: {', '.join(modules)} run through torch.compile")

    def _frozen_to_eval(self) -> None:
        for m in self._frozen:
            m.eval()

    _clock = staticmethod(time.monotonic)

    @property
    def train_seconds(self) -> float:
        """Wall time this run has spent in :meth:`fit`, over all resumes."""
        running = self._clock() - self._fit_start if self._fit_start is not None else 0.0
        return self._train_seconds + running

    def _time_is_up(self, minutes: float) -> bool:
        """Whether ``trainer.max_minutes`` is reached: of this ``fit`` call, or with ``schedule_by: time``
        of the whole run, whose learning rates this also sets. Rank 0's clock decides, so that every rank
        stops at the same step and uses the same rates."""
        by_time = self.tcfg["schedule_by"] == "time"
        seconds = torch.tensor([self.train_seconds if by_time else self._clock() - self._fit_start],
                               dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "nccl":
                seconds = seconds.cuda()
            torch.distributed.broadcast(seconds, 0)
        seconds = float(seconds.item())
        if by_time:
            self._set_schedule_position(seconds / (60 * minutes))
        return seconds > 60 * minutes

    def _set_schedule_position(self, fraction: float) -> None:
        """Learning rates of the point ``fraction`` (0..1) of each schedule, whose length is ``max_steps``."""
        position = int(round(min(1.0, max(0.0, fraction)) * self.tcfg["max_steps"]))
        for sched in self.schedulers.values():
            sched.last_epoch = position
            for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * fn(position)

    def _make_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed (pip install tensorboard): no event files are written")
            return _NullWriter()
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def _collect_skipped(self) -> None:
        """Fold the skip counts kept on the device into :attr:`skipped` (one host sync)."""
        for name, count in self._skipped_on_device.items():
            n = int(count.item())
            if n:
                log.warning(f"{n} optimizer step(s) of {name!r} skipped since the last log: non-finite gradients")
                self.skipped[name] = self.skipped.get(name, 0) + n
        self._skipped_on_device = {}

    def _log_train(self) -> dict:
        scalars = {k: float((s / n).item()) for k, (s, n) in sorted(self._acc.items())}
        self._acc = {}
        for name, opt in self.optimizers.items():
            scalars[f"lr/{name}"] = opt.param_groups[0]["lr"]
        self._collect_skipped()
        for name, count in self.skipped.items():
            scalars[f"skipped_steps/{name}"] = float(count)
        now = time.time()
        scalars["perf/steps_per_s"] = self._steps_since_log / max(now - self._t_log, 1e-9)
        self._t_log, self._steps_since_log = now, 0
        for k, v in scalars.items():
            tag = k if "/" in k else f"train/{k}"
            self.writer.add_scalar(tag, v, self.step)
        self.history.append({"step": self.step, **scalars})
        if self.dist.is_main:
            shown = " | ".join(f"{k} {v:.4g}" for k, v in scalars.items())
            log.info(f"step {self.step}/{self.tcfg['max_steps']} | epoch {self.epoch} | {shown}")
        return scalars

    @contextlib.contextmanager
    def _eval_mode(self):
        modes = {n: m.training for n, m in self.task.modules.items()}
        for m in self.task.modules.values():
            m.eval()
        try:
            with isolated_rng(self.dist.device), torch.no_grad():
                yield
        finally:
            for n, m in self.task.modules.items():
                m.train(modes[n])
            self._frozen_to_eval()

    def validate(self) -> dict:
        """Run the validation set (sharded over ranks); returns and logs ``val/<key>`` means."""
        if self.val_ds is None:
            return {}
        t, d = self.tcfg, self.dist
        sampler = ResumableBatchSampler(len(self.val_ds), t["val_batch_size"] or t["batch_size"], d.rank, d.world_size,
                                        shuffle=False, drop_last=False)
        loader = DataLoader(self.val_ds, batch_sampler=sampler, num_workers=t["num_workers"],
                            collate_fn=self.task.collate, generator=worker_seed(t["seed"], -1, d.rank))
        sums: dict[str, list] = {}
        with self._eval_mode(), self.ctx.autocast():
            for i, batch in enumerate(loader):
                if t["val_batches"] and i >= t["val_batches"]:
                    break
                out = self.task.validation_step(move_to(batch, d.device), self.ctx) or {}
                for k, v in out.items():
                    sums.setdefault(k, []).append(_scalar(v).to(d.device))
        keys = sorted(sums)
        if not keys:
            return {}
        # NaN-aware: a batch that held only unreadable files scores NaN and must not spoil the mean
        values = [torch.stack(sums[k]).float() for k in keys]
        totals = torch.stack([torch.nan_to_num(v, nan=0.0).sum() for v in values])
        counts = torch.stack([(~torch.isnan(v)).sum().float() for v in values])
        totals, counts = dist_utils.all_reduce_sum(totals), dist_utils.all_reduce_sum(counts)
        means = torch.where(counts > 0, totals / counts.clamp(min=1), torch.full_like(totals, float("nan")))
        out = {f"val/{k}": float(v) for k, v in zip(keys, means.tolist())}
        for k, v in out.items():
            self.writer.add_scalar(k, v, self.step)
        if d.is_main:
            log.info(f"step {self.step} validation | " + " | ".join(f"{k} {v:.4g}" for k, v in out.items()))
        self.history.append({"step": self.step, **out})
        return out

    def log_media(self) -> None:
        if not self.dist.is_main:
            return
        with self._eval_mode():
            self.task.log_media(self.writer, self.step, self.ctx)
        self.writer.flush()

    def state(self) -> dict:
        """Everything but the weights, as plain values (see :mod:`audiocodec.train.checkpoint`)."""
        t, d = self.tcfg, self.dist
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "train_seconds": self.train_seconds, "best": self.best,
            "samples_in_epoch": samples_position(self.batch_in_epoch, t["batch_size"], d.world_size),
            "batch_size": t["batch_size"], "world_size": d.world_size,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "task": self.task.state_dict(),
            "config": yaml.safe_dump(self.config, sort_keys=False),
        }

    def save_checkpoint(self) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0; every rank must call this)."""
        rngs = dist_utils.all_gather_object(capture_rng(self.dist.device))
        path = None
        if self.dist.is_main:
            model = {f"{n}.{k}": v for n, m in self.task.modules.items() for k, v in m.state_dict().items()}
            ema = self.ema.state_dict() if self.ema is not None else None
            path = ckpt.save_checkpoint(self.ckpt_dir, self.step, model, dict(self.state(), rng=rngs), ema)
            removed = ckpt.prune(self.ckpt_dir, self.tcfg["keep_last"], self.tcfg["keep_every"])
            log.info(f"saved {path}" + (f" (removed {', '.join(p.name for p in removed)})" if removed else ""))
        self._saved_step = self.step
        dist_utils.barrier()
        return path

    def _teardown(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass
        self.writer = _NullWriter()
        for h in self._handlers:
            log.removeHandler(h)
            h.close()
        self._handlers = []
        dist_utils.shutdown(self.dist)
        torch.set_num_threads(self._saved_threads)
        torch.use_deterministic_algorithms(self._saved_deterministic)
        torch.backends.cudnn.benchmark = self._saved_cudnn_benchmark
