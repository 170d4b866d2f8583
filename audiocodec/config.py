"""Configs are plain nested dicts whose keys are constructor arguments.

Components are chosen by a ``type`` key resolved in registries inside audiocodec only, so a config
can never import arbitrary code. Unknown keys are errors that name the key.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError


class Registry:
    """Named constructors of one kind of component (e.g. encoders)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str):
        def deco(fn):
            self._items[name] = fn
            return fn
        return deco

    def __contains__(self, name) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)

    def build(self, spec: Mapping[str, Any], path: str = ""):
        """Build ``spec["type"]`` with the other keys as keyword arguments."""
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(f"{path or self.kind}: expected a mapping with a 'type' key, got {spec!r}")
        kwargs = dict(spec)
        name = kwargs.pop("type")
        if not isinstance(name, str) or name not in self._items:  # a name, never a path or an object
            raise ConfigError(f"{path or self.kind}: unknown {self.kind} type {name!r}; "
                              f"known: {', '.join(self.names())}")
        return call_with_config(self._items[name], kwargs, f"{path or self.kind}")


def call_with_config(fn: Callable, kwargs: Mapping[str, Any], path: str = ""):
    """``fn(**kwargs)``, but an argument ``fn`` does not take is a :class:`ConfigError` naming it."""
    params = inspect.signature(fn).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            allowed = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            raise ConfigError(f"unknown config key(s) {', '.join(f'{path}.{k}' if path else k for k in unknown)}; "
                              f"allowed: {', '.join(allowed)}")
    try:
        return fn(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


def merge(base: Mapping, overrides: Mapping, path: str = "", strict: bool = True) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base``; a key not in ``base`` is an error when ``strict``.

    Changing a component's ``type`` replaces that component's whole mapping.
    """
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else key
        if strict and key not in out:
            raise ConfigError(f"unknown config key '{where}'; known keys here: {', '.join(sorted(out))}")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            if "type" in value and value["type"] != out[key].get("type"):
                out[key] = copy.deepcopy(dict(value))
            else:
                out[key] = merge(out[key], value, where, strict=False if "type" in out[key] else strict)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """``"a.b.c=value"`` -> ``{"a": {"b": {"c": value}}}`` with ``value`` parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override must look like key.sub=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML (tags such as !!python/... are "
                          f"refused): {e}") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path) -> dict:
    """A YAML config file as a dict (``yaml.safe_load``: tags such as ``!!python/object`` are refused)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not a valid YAML config (tags such as !!python/... are refused): {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
