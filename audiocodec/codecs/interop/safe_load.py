"""Reading checkpoint files without executing code from them.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers. Lightning ``.ckpt`` files
also pickle objects of training libraries (callbacks, hyper-parameter namespaces); those classes are
never imported or run: classes from an allow-list of module prefixes are rebuilt as inert
:class:`OpaqueObject` stand-ins, and any other class refuses the file.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError

#: Modules whose pickled objects may appear beside the weights of a checkpoint; they are replaced by
#: inert stand-ins (their code is never imported).
OPAQUE_MODULE_PREFIXES = (
    "pytorch_lightning.", "lightning.", "lightning_fabric.", "jsonargparse.", "argparse.", "omegaconf.",
    "decoder.", "encoder.", "vocos.", "encodec.", "dac.", "audiotools.", "numpy.", "pathlib.",
    "typing.", "functools.partial", "_codecs.encode", "collections.defaultdict",
)


class OpaqueObject:
    """Stand-in for a pickled object of a training library: it keeps its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # pickled callables (e.g. functools.partial) are rebuilt as data
        return OpaqueObject(*args, **kwargs)


def _opaque_for(name: str):
    stub = type(name.rsplit(".", 1)[-1], (OpaqueObject,), {"__module__": name.rsplit(".", 1)[0]})
    return stub, name


def safe_torch_load(path, allow_opaque: bool = True) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, plus inert stand-ins for allow-listed classes.

    Raises:
        CheckpointError: unreadable file, or a class outside the allow-list (named in the message).
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
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as e:  # not a zip checkpoint, or corrupt
            raise CheckpointError(f"cannot read checkpoint {path}: {first_error}") from e
        refused = [n for n in names if not n.startswith(OPAQUE_MODULE_PREFIXES)]
        if refused:
            raise CheckpointError(
                f"refusing to load {path}: it pickles {', '.join(sorted(refused))}, which could run code. "
                "Convert the checkpoint in a trusted environment (audiocodec convert) or load only the "
                "weights as safetensors") from first_error
        with torch.serialization.safe_globals([_opaque_for(n) for n in names]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}. Is it a complete PyTorch checkpoint?") from e
