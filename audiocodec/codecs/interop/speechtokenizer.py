"""Official SpeechTokenizer (and DM-Codec, same layout) checkpoints -> our ``speechtokenizer`` codec.

A release is a folder with ``SpeechTokenizer.pt`` (the generator's state dict; DM-Codec: any ``.pt`` of
its trainer) and ``config.json`` (the official model config: ``n_filters``, ``strides``, ``dimension``,
``semantic_dimension``, ``bidirectional``, ``lstm_layers``, ``activation``, ``codebook_size``, ``n_q``,
``sample_rate``, ... plus training settings, which are ignored)::

    codec = load_codec("SpeechTokenizer_hubert_avg/SpeechTokenizer.pt", config="SpeechTokenizer_hubert_avg/config.json")
    codec = load_codec("SpeechTokenizer_hubert_avg")          # the folder: config.json is found beside

Without a config the sizes are read off the weights (the sample rate then defaults to 16 kHz).
Full training checkpoints of the official trainers (``{"generator": state dict, "discriminators": ...}``)
load too. Files are read with the safe unpickler (:mod:`.safe_load`). Key mapping: SEANet and RVQ as
EnCodec (:data:`~audiocodec.codecs.interop.official.SEANET_RULES`), ``transform.`` ->
``quantizer.semantic_head.``. Nothing from the official package is imported.

Codes are laid out ``[B, K, T]`` (official ``encode`` returns ``[K, B, T]``); the official
``decode(codes, st)`` with ``st > 0`` (decoding from a later layer) corresponds to summing our
``quantizer.layers[st:]`` decodes and is not part of the Codec interface.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ...errors import CheckpointError
from .keys import load_state_strict, rename_keys
from .official import SEANET_RULES

SPEECHTOKENIZER_RULES = [(r"^transform\.", "quantizer.semantic_head.")] + SEANET_RULES

#: Keys of the official model config that describe the network (the rest are training settings).
MODEL_KEYS = ("n_filters", "strides", "dimension", "semantic_dimension", "bidirectional", "dilation_base",
              "residual_kernel_size", "n_residual_layers", "lstm_layers", "activation", "codebook_size", "n_q",
              "sample_rate")

#: Official defaults (``config/spt_base_cfg.json`` of the SpeechTokenizer repository).
DEFAULTS = {"n_filters": 64, "strides": [8, 5, 4, 2], "dimension": 1024, "semantic_dimension": 768,
            "bidirectional": True, "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1,
            "lstm_layers": 2, "activation": "ELU", "codebook_size": 1024, "n_q": 8, "sample_rate": 16000}

_ENC = "encoder.model."
_VQ = "quantizer.vq.layers."


def _tensors(state: Mapping) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def generator_state(state: Mapping, whole: Optional[Mapping] = None) -> Mapping:
    """The generator's state dict: ``state`` itself, or the ``generator`` entry of a training checkpoint."""
    for candidate in (state, whole or {}):
        gen = candidate.get("generator") if isinstance(candidate, Mapping) else None
        if isinstance(gen, Mapping):
            return gen
    return state


def _read_config(config: Any) -> Optional[dict]:
    """``config`` as a dict: a mapping, or a JSON / YAML file (``None`` for other paths)."""
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if path.suffix.lower() not in (".json", ".yaml", ".yml") or not path.is_file():
        return None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        else:
            from ...config import load_yaml
            data = load_yaml(path)
    except Exception as e:  # noqa: BLE001 - any parse error names the file
        raise CheckpointError(f"cannot read the config {path}: {e}") from e
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a mapping of config keys")
    return dict(data)


def _is_official(data: Mapping) -> bool:
    return "encoder" not in data and bool({"strides", "semantic_dimension", "n_q"} & set(data))


def official_config(config: Any) -> Optional[dict]:
    """The official model config as a dict when ``config`` is one (a mapping, or a path to its JSON), else
    ``None`` (e.g. one of our codec configs, which has ``encoder`` / ``quantizer`` / ``decoder``)."""
    if config is None:
        return None
    data = _read_config(config)
    return data if data is not None and _is_official(data) else None


def _sidecar_config(source: Optional[str]) -> Optional[dict]:
    """``config.json`` beside a checkpoint file, when it is an official SpeechTokenizer config."""
    if not source:
        return None
    path = Path(source).parent / "config.json"
    try:
        return official_config(path) if path.is_file() else None
    except CheckpointError:
        return None


def is_speechtokenizer_state(state: Mapping, config: Any = None, whole: Optional[Mapping] = None,
                             source: Optional[str] = None) -> bool:
    """Whether ``state`` is an official SpeechTokenizer / DM-Codec generator: its semantic head
    (``transform.weight``), or its encoder's bidirectional LSTM, or an official config given / beside it,
    with the EnCodec-style SEANet + RVQ keys."""
    gen = generator_state(state, whole)
    if not isinstance(gen, Mapping) or not any(str(k).startswith(_ENC) for k in gen) \
            or not any(str(k).startswith(_VQ) for k in gen):
        return False
    if "transform.weight" in gen:
        return True
    if any(str(k).startswith(_ENC) and str(k).endswith("_reverse") for k in gen):
        return True
    try:
        return official_config(config) is not None or _sidecar_config(source) is not None
    except CheckpointError:
        return False


def _conv_weight(state: Mapping, prefix: str) -> Optional[torch.Tensor]:
    for suffix in (".conv.conv.weight_v", ".conv.conv.weight", ".conv.conv.parametrizations.weight.original1"):
        if prefix + suffix in state:
            return state[prefix + suffix]
    return None


def config_from_weights(state: Mapping) -> dict:
    """The official model config (:data:`MODEL_KEYS`) read off a generator state dict; sizes that cannot be
    read keep :data:`DEFAULTS` (the strict load then names what does not fit)."""
    cfg = dict(DEFAULTS)
    idx = sorted({int(k[len(_ENC):].split(".")[0]) for k in state
                  if k.startswith(_ENC) and re.match(r"\d+\.conv\.conv\.", k[len(_ENC):])})
    convs = [_conv_weight(state, f"{_ENC}{i}") for i in idx]
    if len(convs) >= 3 and all(c is not None for c in convs):
        cfg["n_filters"] = int(convs[0].shape[0])
        cfg["dimension"] = int(convs[-1].shape[0])
        cfg["strides"] = [int(w.shape[-1]) // 2 for w in convs[1:-1]][::-1]  # kernel = 2 * stride
    lstm = {int(m.group(1)) for k in state for m in [re.search(r"\.lstm\.weight_ih_l(\d+)", k)]
            if m and k.startswith(_ENC)}
    if lstm:
        cfg["lstm_layers"] = max(lstm) + 1
    else:
        cfg["lstm_layers"] = 0
    cfg["bidirectional"] = any(k.startswith(_ENC) and k.endswith("_reverse") for k in state)
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"encoder\.model\.(\d+)\.block\.", k)] if m}
    if blocks and len(cfg["strides"]):
        cfg["n_residual_layers"] = max(1, len(blocks) // len(cfg["strides"]))
    book = state.get(f"{_VQ}0._codebook.embed")
    if book is not None:
        cfg["codebook_size"] = int(book.shape[0])
    cfg["n_q"] = len({k[len(_VQ):].split(".")[0] for k in state if k.startswith(_VQ)}) or cfg["n_q"]
    head = state.get("transform.weight")
    cfg["semantic_dimension"] = int(head.shape[0]) if head is not None else cfg["dimension"]
    cfg["activation"] = "Snake" if any(k.endswith(".alpha") for k in state) else "ELU"
    res = state.get(f"{_ENC}1.block.1.conv.conv.weight_v", state.get(f"{_ENC}1.block.1.conv.conv.weight"))
    if res is not None:
        cfg["residual_kernel_size"] = int(res.shape[-1])
    return cfg


def codec_config(official: Mapping, name: str = "speechtokenizer") -> dict:
    """Our codec config for an official SpeechTokenizer model config (missing keys: :data:`DEFAULTS`)."""
    cfg = {**DEFAULTS, **{k: official[k] for k in MODEL_KEYS if official.get(k) is not None}}
    try:
        strides = [int(s) for s in cfg["strides"]]
        seanet = dict(channels=1, dimension=int(cfg["dimension"]), n_filters=int(cfg["n_filters"]),
                      n_residual_layers=int(cfg["n_residual_layers"]), ratios=strides,
                      activation=str(cfg["activation"]), residual_kernel_size=int(cfg["residual_kernel_size"]),
                      dilation_base=int(cfg["dilation_base"]), lstm=int(cfg["lstm_layers"]),
                      causal=False, pad_mode="reflect", true_skip=False, compress=2, norm="weight_norm")
        sr, n_q = int(cfg["sample_rate"]), int(cfg["n_q"])
        semantic = int(cfg["semantic_dimension"])
        codebook = int(cfg["codebook_size"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"bad SpeechTokenizer config value: {e}") from e
    hop = math.prod(strides)
    return dict(
        name=name,
        description=f"SpeechTokenizer {sr // 1000 if sr % 1000 == 0 else sr / 1000} kHz: SEANet (BiLSTM encoder), "
                    f"RVQ of {n_q} x {codebook} codes at {sr / hop:g} Hz; RVQ layer 0 distilled from a "
                    f"{semantic}-d teacher",
        sample_rate=sr, channels=1, num_codebooks=n_q,
        encoder=dict(type="speechtokenizer_seanet", **seanet, bidirectional_lstm=bool(cfg["bidirectional"])),
        quantizer=dict(type="semantic_rvq", dim=int(cfg["dimension"]), num_quantizers=n_q, codebook_size=codebook,
                       kmeans_iters=50, decay=0.99, threshold_ema_dead_code=2.0, semantic_dim=semantic),
        decoder=dict(type="speechtokenizer_seanet", **seanet),
    )


def load_speechtokenizer_state(state: Mapping, config: Any = None, source: str = "SpeechTokenizer checkpoint",
                               whole: Optional[Mapping] = None):
    """An official SpeechTokenizer / DM-Codec generator state dict -> our codec.

    ``config``: the official ``config.json`` (path or dict), or one of our codec configs; default: the
    ``config.json`` beside ``source``, else the sizes read off the weights.
    """
    from ..registry import build_from_config
    gen = _tensors(generator_state(state, whole))
    if config is None:
        ours = codec_config(_sidecar_config(source) or config_from_weights(gen))
    else:
        data = _read_config(config)
        if data is None:
            raise CheckpointError(f"config {config!r}: expected the official config.json (a path or a dict) or one "
                                  "of our codec configs")
        if _is_official(data):
            ours = codec_config(data)
        elif "encoder" in data:
            ours = data
        else:
            raise CheckpointError(f"config {config!r} is neither a SpeechTokenizer config.json (strides, dimension, "
                                  "n_q, ...) nor one of our codec configs (encoder, quantizer, decoder)")
    codec = build_from_config(ours)
    load_state_strict(codec, rename_keys(gen, SPEECHTOKENIZER_RULES), source)
    return codec
