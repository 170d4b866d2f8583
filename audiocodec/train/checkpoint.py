"""Training checkpoints: atomic folders of safetensors weights plus a ``weights_only`` state file.

Layout of one checkpoint (``<run>/checkpoints/step_00001000/``)::

    model.safetensors   every module's state dict, keys "<module>.<param>"
    ema.safetensors     the EMA copies, same keys (only when EMA is on)
    state.pt            torch.save of plain tensors / dicts / lists / numbers / strings: step, epoch,
                        sampler position, optimizer and scheduler states, every rank's RNG states,
                        the task's extra state; loadable with ``torch.load(weights_only=True)``

A checkpoint is written into a hidden temporary folder beside the others, each file is fsynced, and the
folder is renamed into place with ``os.replace`` (then the parent folder is fsynced), so a crash at
any moment leaves either the complete new checkpoint or none of it; leftovers are removed on the next
save. Loading validates everything, and :func:`latest_valid` falls back to older checkpoints when the
newest is unreadable.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..weights import write_safetensors

FORMAT = "audiocodec-train"
VERSION = 1
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some filesystems / platforms do not allow opening folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_checkpoint(directory: Union[str, os.PathLike], step: int, model: Mapping[str, torch.Tensor],
                    state: dict, ema: Optional[Mapping[str, torch.Tensor]] = None) -> Path:
    """Write checkpoint ``step`` into ``directory`` atomically; returns its folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".tmp_*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / checkpoint_name(step)
    tmp = directory / f".tmp_{checkpoint_name(step)}_{os.getpid()}"
    tmp.mkdir()
    files = [MODEL_FILE]
    write_safetensors(_cpu_state(model), tmp / MODEL_FILE, {"format": FORMAT, "step": str(step)})
    if ema is not None:
        write_safetensors(_cpu_state(ema), tmp / EMA_FILE, {"format": FORMAT, "step": str(step)})
        files.append(EMA_FILE)
    full = dict(state, format=FORMAT, version=VERSION, step=step,
                files={name: (tmp / name).stat().st_size for name in files})
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(full, f)
        f.flush()
        os.fsync(f.fileno())
    for name in files:
        _fsync_file(tmp / name)
    _fsync_dir(tmp)
    old = None
    if final.exists():  # the same step saved again (e.g. after a resume): swap, then drop the old one
        old = directory / f".tmp_old_{checkpoint_name(step)}_{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Union[str, os.PathLike]) -> list[Path]:
    """Complete-looking checkpoint folders in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: Union[str, os.PathLike]) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise CheckpointError(f"{path} is not a training checkpoint folder (step_NNNNNNNN)")
    return int(m.group(1))


def load_checkpoint(path: Union[str, os.PathLike]) -> tuple[dict, dict, Optional[dict]]:
    """``(model_state, state, ema_state)`` of one checkpoint folder; any problem is a CheckpointError."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: no {STATE_FILE}; not a (complete) training checkpoint")
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated / corrupt pickles raise many kinds of errors
        raise CheckpointError(f"{path / STATE_FILE} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path / STATE_FILE} is not an audiocodec training state")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer audiocodec (state version {state['version']})")
    for name, size in state.get("files", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CheckpointError(f"{f} is missing or has the wrong size (expected {size} bytes)")
    try:
        model = load_file(str(path / MODEL_FILE))
        ema = load_file(str(path / EMA_FILE)) if EMA_FILE in state.get("files", {}) else None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable weights ({type(e).__name__}: {e})") from e
    return model, state, ema


def latest_valid(directory: Union[str, os.PathLike], warn: Callable[[str], None] = lambda m: None
                 ) -> Optional[tuple[Path, tuple[dict, dict, Optional[dict]]]]:
    """The newest checkpoint in ``directory`` that loads, with its contents; ``None`` when none does."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            warn(f"skipping checkpoint {path.name}: {e}")
    return None


def prune(directory: Union[str, os.PathLike], keep_last: Optional[int], keep_every: Optional[int] = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (those at multiples of ``keep_every`` stay)."""
    if not keep_last or keep_last <= 0:
        return []
    removed = []
    for path in list_checkpoints(directory)[:-keep_last]:
        if keep_every and checkpoint_step(path) % keep_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def resolve_weights(path: Union[str, os.PathLike], ema: bool = False) -> Path:
    """The weights file of ``path``: a checkpoint folder (its model or EMA file), a run folder (its
    newest checkpoint) or a ``.safetensors`` file."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "checkpoints").is_dir():
        found = list_checkpoints(path / "checkpoints")
        if not found:
            raise CheckpointError(f"{path} has no checkpoints")
        path = found[-1]
    name = EMA_FILE if ema else MODEL_FILE
    if (path / name).is_file():
        return path / name
    raise CheckpointError(f"no {name} in {path}")
