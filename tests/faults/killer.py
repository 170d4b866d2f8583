"""Run ``python -m MODULE ARGS...`` in a process that SIGKILLs itself at a chosen point (fault injection).

    FAULT_POINT=ckpt_model FAULT_NTH=2 python killer.py MODULE [ARGS...]   # die the 2nd time the point is reached

or, from Python, :func:`start` runs it in a child forked from a server that has imported torch and audiocodec
once (a fresh interpreter spends seconds importing torch; the tests kill a dozen processes).

Points (each a real ``SIGKILL`` of this process, so nothing is flushed, closed or cleaned up):

* training checkpoints (:mod:`audiocodec.train.checkpoint`): ``ckpt_model`` (weights file half written),
  ``ckpt_state`` (state file half written), ``ckpt_fsync`` (all files written, before the fsyncs),
  ``ckpt_rename`` (before the temporary folder is renamed into place), ``ckpt_renamed`` (just after it),
  ``ckpt_swap`` (re-saving an existing step: after the old folder was moved aside, before the new one
  takes its place), ``ckpt_prune`` (an old checkpoint half deleted);
* token shards (:mod:`audiocodec.data.tokens`): ``shard_write`` (half written), ``shard_rename`` (complete,
  before the rename), ``shard_renamed`` (just after it).

Used by the tests of ``tests/faults`` and by ``benchmarks/soak.py``.
"""
from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import sys
from pathlib import Path

POINT = os.environ.get("FAULT_POINT", "")
NTH = int(os.environ.get("FAULT_NTH", "1"))
_seen = [0]

#: modules the fork server imports once, so that forked children start at once
PRELOAD = ["killer", "audiocodec.train", "audiocodec.train.cli", "audiocodec.cli", "audiocodec.data.extract"]


def _reached() -> bool:
    _seen[0] += 1
    return _seen[0] == NTH


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _halve(path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _install() -> None:
    if not POINT:
        return
    orig_replace = os.replace
    if POINT.startswith("ckpt_"):
        import torch
        from audiocodec.train import checkpoint as ckpt
        if POINT == "ckpt_model":
            orig_write = ckpt.write_safetensors

            def write_safetensors(state, filename, metadata=None):
                path = orig_write(state, filename, metadata)
                if Path(filename).name == ckpt.MODEL_FILE and _reached():
                    _halve(filename)
                    _die()
                return path
            ckpt.write_safetensors = write_safetensors
        elif POINT == "ckpt_state":
            orig_save = torch.save

            def save(obj, f, *args, **kwargs):
                orig_save(obj, f, *args, **kwargs)
                if isinstance(obj, dict) and obj.get("format") == ckpt.FORMAT and _reached():
                    f.flush()
                    f.truncate(f.tell() // 2)
                    _die()
            torch.save = save
        elif POINT == "ckpt_fsync":
            orig_fsync = ckpt._fsync_file

            def fsync_file(path):
                if _reached():
                    _die()
                orig_fsync(path)
            ckpt._fsync_file = fsync_file
        elif POINT in ("ckpt_rename", "ckpt_renamed", "ckpt_swap"):
            def replace(src, dst, *args, **kwargs):
                if POINT == "ckpt_swap":
                    mine = Path(dst).name.startswith(".tmp_old_")
                else:
                    mine = Path(src).name.startswith(".tmp_step_")
                if mine and POINT == "ckpt_rename" and _reached():
                    _die()
                orig_replace(src, dst, *args, **kwargs)
                if mine and POINT != "ckpt_rename" and _reached():
                    _die()
            os.replace = replace
        elif POINT == "ckpt_prune":
            orig_rmtree = shutil.rmtree

            def rmtree(path, *args, **kwargs):
                p = Path(path)
                if re.fullmatch(r"step_\d+", p.name) and _reached():
                    (p / ckpt.MODEL_FILE).unlink()
                    _die()
                orig_rmtree(path, *args, **kwargs)
            shutil.rmtree = rmtree
        else:
            raise SystemExit(f"unknown FAULT_POINT {POINT}")
    elif POINT.startswith("shard_"):
        import numpy as np
        if POINT == "shard_write":
            orig_savez = np.savez

            def savez(file, *args, **kwargs):
                orig_savez(file, *args, **kwargs)
                if hasattr(file, "truncate") and _reached():
                    file.flush()
                    file.truncate(file.tell() // 2)
                    _die()
            np.savez = savez
        elif POINT in ("shard_rename", "shard_renamed"):
            def replace(src, dst, *args, **kwargs):
                mine = Path(src).name.startswith(".shard-")
                if mine and POINT == "shard_rename" and _reached():
                    _die()
                orig_replace(src, dst, *args, **kwargs)
                if mine and POINT == "shard_renamed" and _reached():
                    _die()
            os.replace = replace
        else:
            raise SystemExit(f"unknown FAULT_POINT {POINT}")
    else:
        raise SystemExit(f"unknown FAULT_POINT {POINT}")


def _child(module: str, args: list, point: str, nth: int, log: str, env: dict) -> None:
    global POINT, NTH
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    POINT, NTH = point or "", int(nth)
    _install()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def start(module: str, args, point: str = "", nth: int = 1, log="/dev/null", env=None):
    """Start ``python -m module *args`` in a child process that kills itself at ``point`` (``""``: never);
    its output goes to ``log``. Returns the started :class:`multiprocessing.Process` (``exitcode`` is
    ``-signal.SIGKILL`` after a kill)."""
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    p = ctx.Process(target=_child, args=(module, [str(a) for a in args], point, nth, str(log), dict(env or {})),
                    daemon=False)
    p.start()
    return p


if __name__ == "__main__":
    module, *args = sys.argv[1:]
    _install()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
