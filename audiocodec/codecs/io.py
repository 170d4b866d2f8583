"""Saving codecs in our format (safetensors + config) and loading any supported checkpoint."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..config import load_yaml
from ..errors import CheckpointError
from ..weights import write_safetensors
from .base import Codec
from .interop import official
from .interop.keys import load_state_strict
from .registry import build_from_config
from .vocoder import MelVocoder

FORMAT = "audiocodec"
WEIGHTS_NAME = "model.safetensors"


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


#: state-dict key endings of the code vectors (EMA codebooks, learned codebooks): what the fingerprint hashes
CODEBOOK_KEYS = ("codebook.embed", "codebook.weight")


def _is_codebook(key: str) -> bool:
    return key.startswith("quantizer.") and key.endswith(CODEBOOK_KEYS)


def save_codec(model: Union[Codec, MelVocoder], path: Union[str, os.PathLike], dtype: Optional[str] = None) -> Path:
    """Write ``model`` as one safetensors file whose metadata holds its config.

    ``path`` may be a ``.safetensors`` file or a folder (``model.safetensors`` inside). The write is
    atomic (temporary file + rename). ``dtype`` (``float16`` / ``bfloat16`` / ``float32``) stores the
    floating-point tensors in that precision (half the size in 16 bits); loading casts them back to the
    model's fp32, so a file saved in fp16 holds exactly the fp16-rounded model -- except the code vectors
    (the quantizer's codebooks, :data:`CODEBOOK_KEYS`), which stay fp32: the codes, and the codebook
    fingerprint that token files and LMs record, do not change with the storage precision.
    """
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "vocoder" if isinstance(model, MelVocoder) else "codec"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(_DTYPES[dtype]) if v.is_floating_point() and not _is_codebook(k) else v
                 for k, v in state.items()}
    meta = {"format": FORMAT, "kind": kind, "config": json.dumps(model.config)}
    return write_safetensors(state, path, meta)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e


def _read_state(path: Path) -> tuple[dict, dict]:
    """``official.read_state``, with any failure of the unpickler on a corrupt file as a CheckpointError."""
    try:
        return official.read_state(path)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's weights-only unpickler raises IndexError, KeyError, ... on junk
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}. "
                              "Is it a complete PyTorch checkpoint?") from e


def _resolve(source) -> Path:
    path = Path(source)
    if not path.exists():
        from .embedded import embedded_path
        embedded = embedded_path(str(source))
        if embedded is not None:
            return embedded
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return path / WEIGHTS_NAME
        candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"))
        if len(candidates) != 1:
            raise CheckpointError(f"{path} is a folder without {WEIGHTS_NAME}; found {[c.name for c in candidates]}")
        return candidates[0]
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_codec(source: Union[str, os.PathLike, Codec], config: Optional[Union[str, Mapping]] = None,
               device: Union[str, torch.device] = "cpu", inference: bool = True) -> Codec:
    """Load a codec from any supported checkpoint.

    Accepts the name of a codec embedded in the package (:mod:`audiocodec.codecs.embedded`, e.g.
    ``"wavtokenizer-75-small-mini"``), our safetensors files (or folders holding ``model.safetensors``), an official WavTokenizer
    Lightning ``.ckpt`` (``config`` may name its training YAML; otherwise the variant is inferred), an
    ``encodec`` state dict, a ``vocos`` EnCodec-features state dict, and a DAC weights file.
    ``config`` may also be one of our config dicts / YAML files for a bare state dict.

    Pickled files are read with ``torch.load(weights_only=True)``; nothing in them is executed.
    With ``inference=True`` the codec is put in eval mode with weight norm folded.
    """
    if isinstance(source, Codec):
        codec = source
    else:
        path = _resolve(source)
        codec = _load_path(path, config)
    codec = codec.to(device)
    return codec.prepare_for_inference() if inference else codec


def _load_path(path: Path, config) -> Codec:
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        if meta.get("format") == FORMAT:
            if meta.get("kind") == "vocoder":
                raise CheckpointError(f"{path} is a vocoder: load it with audiocodec.load_vocoder")
            cfg = _meta_config(meta, path)
        elif config is not None:
            cfg = _config_arg(config)
        else:
            raise CheckpointError(f"{path} has no audiocodec config in its metadata: pass config=")
        codec = build_from_config(cfg)
        load_state_strict(codec, state, str(path))
        return codec
    state, whole = _read_state(path)
    from .interop import speechtokenizer as st_interop  # before EnCodec: SpeechTokenizer shares its key names
    if st_interop.is_speechtokenizer_state(state, config, whole, str(path)):
        return st_interop.load_speechtokenizer_state(state, config, str(path), whole)
    if official.is_wavtokenizer_state(state):
        return official.load_wavtokenizer_state(state, config, str(path))
    if official.is_vocos_state(state):
        return official.load_vocos_encodec_state(state, str(path))
    if official.is_encodec_state(state):
        return official.load_encodec_state(state, str(path))
    from .interop import dac as dac_interop  # noqa: WPS433 (DAC support is optional)
    if dac_interop.is_dac_checkpoint(whole):
        return dac_interop.load_dac_checkpoint(whole, str(path))
    if config is not None:
        codec = build_from_config(_config_arg(config))
        load_state_strict(codec, state, str(path))
        return codec
    sample = ", ".join(list(state)[:5])
    raise CheckpointError(f"cannot tell which model {path} holds (first keys: {sample}); supported: audiocodec "
                          "safetensors, WavTokenizer .ckpt, encodec, vocos and DAC weights; or pass config=")


def _meta_config(meta: Mapping, path) -> dict:
    """The config dict stored in a safetensors file's metadata (CheckpointError when absent or malformed)."""
    try:
        cfg = json.loads(meta["config"])
    except KeyError:
        raise CheckpointError(f"{path}: its metadata holds no 'config'") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the config in its metadata is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: the config in its metadata is a {type(cfg).__name__}, not a mapping")
    return cfg


def _config_arg(config) -> dict:
    if isinstance(config, Mapping):
        return dict(config)
    return load_yaml(config)


def load_vocoder(source: Union[str, os.PathLike], device="cpu") -> MelVocoder:
    """Load a Vocos mel vocoder: our safetensors, or the official ``vocos`` mel ``pytorch_model.bin``."""
    from .vocoder import VOCODER_CONFIGS, build_vocoder
    path = _resolve(source)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        if meta.get("kind") != "vocoder":
            raise CheckpointError(f"{path} is not a vocoder checkpoint")
        cfg = _meta_config(meta, path)
        name = cfg.pop("name", "vocoder")
        model = MelVocoder(**cfg, name=name, config=dict(cfg, name=name))
    else:
        state, _ = _read_state(path)
        if "feature_extractor.mel_spec.mel_scale.fb" not in state:
            raise CheckpointError(f"{path} is not a Vocos mel vocoder state dict")
        n_mels = state["feature_extractor.mel_spec.mel_scale.fb"].shape[1]
        dim = state["backbone.embed.weight"].shape[0]
        layers = len({k.split(".")[2] for k in state if k.startswith("backbone.convnext.")})
        model = build_vocoder("vocos-mel-24k")
        if (n_mels, dim, layers) != (100, 512, 8):
            cfg = VOCODER_CONFIGS["vocos-mel-24k"]
            raise CheckpointError(f"{path}: vocoder of {n_mels} mels / dim {dim} / {layers} layers; supported is "
                                  f"{cfg['features']['n_mels']} / {cfg['backbone']['dim']} / {cfg['backbone']['num_layers']}")
    load_state_strict(model, state, str(path))
    from ..nn.conv import fold_weight_norm
    return fold_weight_norm(model).to(device).eval()
