"""Optimizers, learning-rate schedules and the EMA of weights, all built from config.

One config section per named optimizer of the task (``optim.<name>``)::

    optim:
      gen:  {lr: 2.0e-4, betas: [0.8, 0.99], weight_decay: 0.0, clip_grad: 1000.0,
             scheduler: {type: cosine, warmup_steps: 1000, min_lr_ratio: 0.1}}
      disc: {lr: 2.0e-4, betas: [0.8, 0.99], scheduler: {type: exponential, gamma: 0.999996}}

Schedules are multipliers of ``lr`` per optimizer step: ``constant`` (after an optional linear warmup),
``cosine`` (warmup, then cosine decay to ``min_lr_ratio`` at ``total_steps``, which defaults to
``trainer.max_steps``), ``linear`` (likewise, linear decay) and ``exponential`` (``gamma ** step``).
"""
from __future__ import annotations

import copy
import math
from typing import Mapping, Optional

import torch
from torch import nn

from ..config import Registry, merge
from ..errors import ConfigError

OPTIM_DEFAULTS: dict = {
    "lr": 1.0e-3,
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "weight_decay": 0.0,
    "clip_grad": None,      # max total grad norm (per optimizer); None: no clipping (norm still logged)
    "fused": None,          # None: fused AdamW on CUDA
    "scheduler": {"type": "constant"},
}

SCHEDULES = Registry("scheduler")


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@SCHEDULES.register("constant")
def constant(warmup_steps: int = 0, total_steps: Optional[int] = None):
    return lambda step: _warmup(step, warmup_steps)


@SCHEDULES.register("cosine")
def cosine(warmup_steps: int = 0, total_steps: Optional[int] = None, min_lr_ratio: float = 0.0):
    def f(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


@SCHEDULES.register("linear")
def linear(warmup_steps: int = 0, total_steps: Optional[int] = None, min_lr_ratio: float = 0.0):
    def f(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - min_lr_ratio) * t
    return f


@SCHEDULES.register("exponential")
def exponential(gamma: float = 0.999996, warmup_steps: int = 0, total_steps: Optional[int] = None):
    return lambda step: _warmup(step, warmup_steps) * gamma ** max(0, step - warmup_steps)


def optim_config(name: str, section: Optional[Mapping]) -> dict:
    """``optim.<name>`` merged over :data:`OPTIM_DEFAULTS` (unknown keys are a ConfigError)."""
    section = dict(section or {})
    sched = section.pop("scheduler", None)
    cfg = merge(OPTIM_DEFAULTS, section, f"optim.{name}")
    if sched is not None:
        if not isinstance(sched, Mapping):
            raise ConfigError(f"optim.{name}.scheduler must be a mapping with a 'type', got {sched!r}")
        cfg["scheduler"] = dict(sched) if "type" in sched else merge(cfg["scheduler"], sched, f"optim.{name}.scheduler")
    return cfg


def build_optimizer(name: str, params, cfg: Mapping, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over ``params`` (parameters, param groups or a module) from an :func:`optim_config`."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = list(params)
    if not params:
        raise ConfigError(f"optimizer {name!r} got no parameters")
    fused = cfg["fused"] if cfg["fused"] is not None else device.type == "cuda"
    try:
        return torch.optim.AdamW(params, lr=float(cfg["lr"]), betas=tuple(cfg["betas"]), eps=float(cfg["eps"]),
                                 weight_decay=float(cfg["weight_decay"]), fused=bool(fused) or None)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optim.{name}: {e}") from e


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, cfg: Mapping, max_steps: int):
    spec = dict(cfg["scheduler"])
    if spec.get("total_steps") is None and spec.get("type") != "constant":
        spec["total_steps"] = max_steps
    fn = SCHEDULES.build(spec, f"optim.{name}.scheduler")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


class EMA:
    """Exponential moving average of some modules' weights (buffers are copied).

    ``shadow[name]`` is an eval-mode copy of module ``name`` holding the averaged weights; a task may
    validate or export it (``ctx.ema["gen"]``). Before ``start_step`` the copy follows the weights.
    """

    def __init__(self, modules: Mapping[str, nn.Module], decay: float = 0.999, start_step: int = 0, every: int = 1):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"trainer.ema.decay must be in [0, 1), got {decay}")
        self.decay, self.start_step, self.every = float(decay), int(start_step), max(1, int(every))
        self.shadow = {n: copy.deepcopy(m).eval().requires_grad_(False) for n, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: Mapping[str, nn.Module], step: int) -> None:
        """Fold the current weights in after optimizer step ``step`` (1-based count of steps done)."""
        if step % self.every:
            return
        for name, shadow in self.shadow.items():
            src, dst = list(modules[name].parameters()), list(shadow.parameters())
            if step <= self.start_step:
                torch._foreach_copy_(dst, src)
            else:
                torch._foreach_lerp_(dst, src, 1.0 - self.decay)
            for b_dst, b_src in zip(shadow.buffers(), modules[name].buffers()):
                b_dst.copy_(b_src)

    @torch.no_grad()
    def reset(self, modules: Mapping[str, nn.Module]) -> None:
        """Make the averages equal to the current weights."""
        for name, shadow in self.shadow.items():
            shadow.load_state_dict(modules[name].state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v for n, m in self.shadow.items() for k, v in m.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name, shadow in self.shadow.items():
            prefix = f"{name}."
            shadow.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

