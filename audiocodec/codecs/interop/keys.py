"""Mapping checkpoint keys onto our modules, and loading them strictly with readable errors."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import torch
from torch import nn

from ...errors import CheckpointError

_WN_ORIG = ".parametrizations.weight.original"


def rename_keys(state: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str | None]]) -> dict:
    """Apply regex ``(pattern, replacement)`` rules to each key, all of them in order; a rule whose
    replacement is ``None`` drops the keys it matches."""
    rules = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if pattern.search(key):
                if repl is None:
                    key = None
                    break
                key = pattern.sub(repl, key)
        if key is not None:
            out[key] = value
    return out


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def adapt_weight_norm(state: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> dict:
    """Make weight-norm tensors fit the model's form.

    Handles the old names (``weight_g`` / ``weight_v``), the parametrisation names
    (``parametrizations.weight.original0/1``) and plain folded ``weight`` in any direction.
    """
    target = set(target_keys)
    out: dict = {}
    groups: dict[str, dict] = {}
    for key, value in state.items():
        if key.endswith((".weight_g", ".weight_v")):
            groups.setdefault(key[:-9], {})["g" if key.endswith("g") else "v"] = value
        elif _WN_ORIG in key:
            base, idx = key.split(_WN_ORIG)
            groups.setdefault(base, {})["g" if idx == "0" else "v"] = value
        elif key.endswith(".weight") and key not in target and f"{key[:-7]}{_WN_ORIG}0" in target:
            w = value
            out[f"{key[:-7]}{_WN_ORIG}0"] = _norm_except_dim0(w)
            out[f"{key[:-7]}{_WN_ORIG}1"] = w
        else:
            out[key] = value
    for base, gv in groups.items():
        if f"{base}{_WN_ORIG}0" in target or f"{base}.weight" not in target or set(gv) != {"g", "v"}:
            for tag, idx in (("g", "0"), ("v", "1")):
                if tag in gv:
                    out[f"{base}{_WN_ORIG}{idx}"] = gv[tag]
        else:  # the model has plain weights: fold
            out[f"{base}.weight"] = gv["g"] * gv["v"] / _norm_except_dim0(gv["v"])
    return out


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                      ignore_missing: Iterable[str] = ()) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key raises
    :class:`CheckpointError` naming the keys (at most 10 of each kind)."""
    own = model.state_dict()
    state = adapt_weight_norm(state, own.keys())
    ignore = [re.compile(p) for p in ignore_missing]
    missing = [k for k in own if k not in state and not any(p.search(k) for p in ignore)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def fmt(items):
            return ", ".join(items[:10]) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {fmt(shapes)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s): {fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {fmt(unexpected)}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
