"""The file format of the models we train besides codecs (TTS, song): one safetensors file whose
metadata holds ``format`` (what model it is) and ``config`` (JSON: the constructor arguments), written
atomically, and read back without unpickling anything."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"


def file_mode() -> int:
    """The permission bits a new file gets from the process umask (``0o666 & ~umask``): what files written by
    libraries that create owner-only files (safetensors, some of transformers') are set to."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_safetensors(tensors: dict, path: Union[str, os.PathLike], metadata: Optional[dict] = None) -> Path:
    """``safetensors`` ``save_file`` made atomic (a temporary sibling renamed over ``path``) and readable as
    any file the process writes (``save_file`` creates owner-only files; here the mode follows the umask,
    so that saved models can be shared and installed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    return path


def save_model(model: torch.nn.Module, path: Union[str, os.PathLike], format: str,
               dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``model`` (its ``state_dict`` and its ``config`` attribute) to ``path``: a ``.safetensors`` file
    or a folder (``model.safetensors`` inside). ``dtype`` stores floating-point tensors in that precision."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return write_safetensors(state, path, {"format": format, "config": json.dumps(model.config)})


def load_model(path: Union[str, os.PathLike], format: str, build: Callable[..., torch.nn.Module],
               device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """Read a file written by :func:`save_model` with ``format``: ``build(**config)`` makes the model, whose
    state must fit the file exactly (names and shapes); weights are cast to the model's precision."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if meta.get("format") != format:
        raise CheckpointError(f"{path} is not an {format} model (its format: {meta.get('format')!r})")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: no readable config in its metadata ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the config in its metadata is a {type(config).__name__}, not a mapping")
    try:
        model = build(**config)
    except TypeError as e:   # a key the model does not take
        raise CheckpointError(f"{path}: its config does not fit {getattr(build, '__name__', 'the model')}: {e}") from e
    try:   # strict; the modules' load hooks first bring weights of earlier layouts up to date
        model.load_state_dict(state)
    except RuntimeError as e:   # missing / unexpected keys, shapes that do not fit
        raise CheckpointError(f"{path} does not fit its own config: {str(e)[:2000]}") from None
    return model.to(device).eval()
