"""Reading checkpoint files without executing code from them.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers. Lightning ``.ckpt`` files
may also pickle objects of training libraries (callbacks, hyper-parameter dicts, data configs); those
classes are never imported or run: classes from an allow-list of module prefixes are rebuilt as inert
:class:`OpaqueObject` stand-ins (dict and list subclasses as plain ``dict`` / ``list``), and any other
global (``os.system``, ``builtins.eval``, ...) refuses the whole file before anything is unpickled.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError

#: Modules whose pickled objects may appear beside the weights of a checkpoint; they are replaced by
#: inert stand-ins (their code is never imported, and the real objects are never called).
OPAQUE_MODULE_PREFIXES = (
    "pytorch_lightning.", "lightning.", "lightning_fabric.", "jsonargparse.", "argparse.", "omegaconf.",
    "decoder.", "encoder.", "vocos.", "encodec.", "dac.", "audiotools.", "numpy.", "pathlib.",
    "typing.", "functools.partial", "_codecs.encode", "collections.defaultdict",
)

#: Allow-listed classes known to pickle as a dict (or list) plus items; they load as a plain dict (list).
DICT_LIKE = {
    "collections.defaultdict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
}
LIST_LIKE: set = set()

#: Builtin types that may appear as data (e.g. the ``list`` factory of a pickled ``defaultdict(list)``);
#: they too are rebuilt as stand-ins, never called.
PLAIN_BUILTINS = {f"builtins.{t}" for t in ("list", "dict", "set", "frozenset", "tuple", "int", "float", "str",
                                            "bool", "complex")}

_REFUSE_HINT = ("Only if you trust its source: re-save just its weights in a separate environment, e.g. "
                "torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt'), and load that")
_CONTAINER_ERROR = re.compile(r"Can only (SETITEMS?|append to lists|extend lists)\b.*?but got <class '([^']+)'>")


class OpaqueObject:
    """Stand-in for a pickled object of a training library: it keeps its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # pickled callables (e.g. functools.partial) are rebuilt as data
        return OpaqueObject(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<opaque {type(self).__module__}.{type(self).__qualname__}>"


def _opaque_for(name: str, container: type | None = None):
    """``(stand-in, full name)`` for :func:`torch.serialization.safe_globals`. With ``container``
    (``dict`` or ``list``) the stand-in builds an empty plain container, which the unpickler then fills."""
    module, _, short = name.rpartition(".")
    body: dict = {"__module__": module, "__qualname__": short}
    if container is not None:
        body["__new__"] = staticmethod(lambda cls, *args, **kwargs: container())
    return type(short, (OpaqueObject,), body), name


def _python3_name(name: str) -> str:
    """``module.name`` with a Python 2 module name (``torch.save`` pickles with protocol 2, which writes e.g.
    ``subprocess.Popen`` as ``commands.Popen``) mapped back, so that messages name what the file imports."""
    module, _, short = name.rpartition(".")
    mapped = _compat_pickle.NAME_MAPPING.get((module, short))
    if mapped is not None:
        return ".".join(mapped)
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{short}" if module else name


def _refused(names) -> list:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except Exception:  # private torch API: without it, only the allow-list below counts
        allowed = set()
    return sorted({_python3_name(n) for n in names if n not in allowed and n not in PLAIN_BUILTINS
                   and not n.startswith(OPAQUE_MODULE_PREFIXES)})


def scan_globals(path) -> set:
    """Names of the globals (``module.name``) the pickles at the start of ``path`` reference, read with
    :mod:`pickletools` (nothing is unpickled). Covers bare pickles and legacy (non-zip) ``torch.save``
    files, which are a few pickles followed by raw tensor bytes; used to name what a file would import."""
    names: set = set()
    with open(path, "rb") as f:
        for _ in range(5):  # legacy files: magic, protocol, sys info, the object, storage keys
            strings: list = []
            memo: dict = {}
            try:
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":  # protocols 0-2 write Python 2 names (__builtin__, copy_reg)
                        module, name = arg.split(" ", 1)
                        names.add(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
                    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                        strings.append(arg)
                    elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                        memo[arg] = strings[-1]
                    elif op.name == "MEMOIZE" and strings:
                        memo[len(memo)] = strings[-1]
                    elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                        strings.append(memo[arg])
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.add(f"{strings[-2]}.{strings[-1]}")
                    if op.name == "STOP":
                        break
                else:
                    break
            except Exception:  # past the pickles (raw tensor bytes) or not a pickle at all
                break
    return names


def safe_torch_load(path, allow_opaque: bool = True) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, plus inert stand-ins for allow-listed classes.

    Raises:
        CheckpointError: unreadable file, or a global outside the allow-list (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first_error:
        if not allow_opaque:
            raise CheckpointError(f"{path} holds objects other than tensors: {first_error}") from first_error
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as e:  # not a zip checkpoint (legacy torch.save or a bare pickle), or corrupt
            refused = _refused(scan_globals(path))
            if refused:
                raise CheckpointError(f"refusing to load {path}: it pickles {', '.join(refused)}, which could run "
                                      f"code. {_REFUSE_HINT}") from None
            raise CheckpointError(f"cannot read checkpoint {path} safely (only zip checkpoints of torch.save "
                                  f"may hold objects other than tensors): {first_error}") from e
        refused = _refused(names)
        if refused:
            raise CheckpointError(f"refusing to load {path}: it pickles {', '.join(refused)}, which could run "
                                  f"code. {_REFUSE_HINT}") from None
        return _load_with_stand_ins(path, names)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}. Is it a complete PyTorch checkpoint?") from e


def _load_with_stand_ins(path: Path, names: list) -> Any:
    dict_like = {n for n in names if n in DICT_LIKE}
    list_like = {n for n in names if n in LIST_LIKE}
    # an allow-listed class that turns out to be a dict / list subclass is retried as a plain container
    for _ in range(len(names) + 1):
        stand_ins = [_opaque_for(n, dict if n in dict_like else list if n in list_like else None) for n in names]
        with torch.serialization.safe_globals(stand_ins):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                m = _CONTAINER_ERROR.search(str(e))
                name = m.group(2) if m else None
                if name in names and name not in dict_like | list_like:
                    (dict_like if m.group(1).startswith("SETITEM") else list_like).add(name)
                    continue
                raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
            except Exception as e:
                raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    raise CheckpointError(f"cannot read checkpoint {path}: its pickled objects could not be rebuilt as data")
