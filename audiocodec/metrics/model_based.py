"""Model-based quality scores (UTMOS and the like), only from a model file the user has on disk.

Nothing is downloaded: without a path these scores are simply not computed. What loads here is a
**TorchScript** module (``torch.jit.save`` archive) or a **torch.export** program (``torch.export.save``,
``.pt2``, exported with a dynamic length) mapping a batch of mono waveforms to one score per item; its
``forward`` takes ``(wav [B, L])`` or ``(wav [B, L], sample_rate: int)`` and returns ``[B]`` (or
``[B, 1]``). UTMOS (the UTMOS22 "strong" learner) can be exported to such a file where it is available,
for example with the ``SpeechMOS`` port (not tested here, audiocodec does not depend on it)::

    predictor = torch.hub.load("tarepan/SpeechMOS:v1.2.0", "utmos22_strong", trust_repo=True).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__(); self.m = m
        def forward(self, wav):               # [B, L] at 16 kHz
            return self.m(wav, 16000)

    torch.jit.trace(Wrapped(predictor), torch.randn(1, 32000)).save("utmos22_strong.pt")
    # or: torch.export.save(torch.export.export(Wrapped(predictor), (torch.randn(1, 32000),),
    #         dynamic_shapes={"wav": {1: torch.export.Dim("L", min=1600)}}), "utmos22_strong.pt2")

A plain state dict / Lightning ``.ckpt`` / safetensors file is refused with an explanation: scoring it
would need the model's code (UTMOS: a wav2vec 2.0 SSL model plus its heads), which audiocodec does not
ship. Loading a TorchScript file runs the TorchScript code stored in it (not arbitrary Python): load only
files you trust. This module is a thin interface; it makes no claim about the scores' calibration.
"""
from __future__ import annotations

import inspect
import os
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import audio as audio_utils
from ..errors import CheckpointError, ConfigError


class ModelScorer:
    """A loaded scoring model.

    Args:
        module: TorchScript (or any ``torch.nn.Module``) scoring ``[B, L]`` waveforms.
        name: the score's name in reports (e.g. ``"utmos"``).
        sample_rate: rate the model expects (inputs are resampled to it).
        pass_sample_rate: call ``module(wav, sample_rate)`` instead of ``module(wav)``; ``None`` decides from
            the TorchScript signature.
    """

    def __init__(self, module: torch.nn.Module, name: str = "utmos", sample_rate: int = 16000,
                 device: Union[str, torch.device] = "cpu", pass_sample_rate: Optional[bool] = None):
        self.module = module
        try:
            module.eval()
        except (AttributeError, NotImplementedError):  # torch.export modules refuse eval(): nothing to switch
            pass
        self.name, self.sample_rate = name, audio_utils.check_sample_rate(sample_rate)
        self.device = torch.device(device)
        self.pass_sample_rate = _takes_sample_rate(module) if pass_sample_rate is None else pass_sample_rate

    @torch.no_grad()
    def score(self, wavs: Sequence[Union[torch.Tensor, np.ndarray]], sample_rate: int) -> np.ndarray:
        """Score mono signals (a list of ``[L_i]``, or an array ``[B, L]``) at ``sample_rate`` Hz; returns
        float64 ``[B]``. Items are scored one at a time, so padding cannot change a score."""
        out = []
        for wav in wavs:
            x = torch.as_tensor(np.asarray(wav) if isinstance(wav, np.ndarray) else wav).float().reshape(1, -1)
            audio_utils.check_finite(x, f"audio scored by {self.name}")
            x = audio_utils.resample(x, sample_rate, self.sample_rate).to(self.device)
            y = self.module(x, self.sample_rate) if self.pass_sample_rate else self.module(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            y = torch.as_tensor(y).detach().float().cpu().reshape(-1)
            if y.numel() != 1:
                raise ConfigError(f"{self.name} model returned {y.numel()} values for one item; expected one score")
            out.append(float(y[0]))
        return np.asarray(out, dtype=np.float64)

    def __repr__(self) -> str:
        return f"ModelScorer(name={self.name!r}, sample_rate={self.sample_rate})"


def _takes_sample_rate(module) -> bool:
    forward = getattr(module, "forward", None)
    schema = getattr(forward, "schema", None)
    if schema is not None:                                   # TorchScript
        return len([a for a in schema.arguments if a.name != "self"]) >= 2
    try:
        return len(inspect.signature(forward).parameters) >= 2
    except (TypeError, ValueError):
        return False


def _archive_kind(path: Path) -> Optional[str]:
    """``"torchscript"``, ``"export"`` (torch.export program) or ``None`` (anything else)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names):
        return "export"
    return None


def load_model_scorer(path: Union[str, os.PathLike], name: str = "utmos", sample_rate: int = 16000,
                      device: Union[str, torch.device] = "cpu") -> ModelScorer:
    """Load a scoring model from a LOCAL TorchScript or torch.export file (see the module docs); never
    downloads.

    Raises:
        ConfigError: the path does not exist.
        CheckpointError: the file is neither (e.g. a state dict), with what to do.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name} model not found: {path} (model-based scores are computed only from a local "
                          "model file; nothing is downloaded)")
    kind = None if path.suffix == ".safetensors" else _archive_kind(path)
    if kind is None:
        raise CheckpointError(
            f"{path} is not a TorchScript module or torch.export program. audiocodec scores {name} only with "
            "such an export (torch.jit.save / torch.export.save) taking wav [B, L] (and optionally the sample "
            "rate) and returning [B] scores; a "
            "state dict or training checkpoint would need the model's own code (for UTMOS: a wav2vec 2.0 SSL "
            "model and its heads), which audiocodec does not ship. Export the model (TorchScript or "
            "torch.export) where its code lives (see audiocodec.metrics.model_based) and pass that file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)      # torch.jit is deprecated in torch 2.11
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location=device)
            else:
                module = torch.export.load(str(path)).module()
                if torch.device(device).type != "cpu":
                    module = module.to(device)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError and others on corrupt archives
        raise CheckpointError(f"cannot load {name} model {path}: {type(e).__name__}: {e}") from e
    return ModelScorer(module, name=name, sample_rate=sample_rate, device=device)
