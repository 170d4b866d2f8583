"""Readers for the official checkpoint formats: WavTokenizer (Lightning ``.ckpt``), ``encodec`` and
``vocos`` state dicts. Each maps the official keys onto our modules; nothing from those projects is
imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import torch

from ...config import load_yaml
from ...errors import CheckpointError
from ..registry import build_codec, get_config
from .keys import load_state_strict, rename_keys

# official SEANet / RVQ names -> ours
SEANET_RULES = [
    (r"\.conv\.conv\.", "."),
    (r"\.convtr\.convtr\.", "."),
    (r"quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook."),
]


def _tensors(state: Mapping) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


# -- EnCodec --------------------------------------------------------------------------------------

def is_encodec_state(state: Mapping) -> bool:
    return "encoder.model.0.conv.conv.weight_v" in state or "encoder.model.0.conv.conv.weight" in state


def load_encodec_state(state: Mapping, source: str = "encodec state dict"):
    """An ``encodec`` package state dict (``EncodecModel.state_dict()``) -> our ``encodec-24k`` codec."""
    state = _tensors(state)
    n_q = len({k.split(".")[3] for k in state if k.startswith("quantizer.vq.layers.")})
    first = state.get("encoder.model.0.conv.conv.weight_v", state.get("encoder.model.0.conv.conv.weight"))
    if first is not None and first.shape[1] != 1:
        raise CheckpointError(f"{source}: a {first.shape[1]}-channel EnCodec (the 48 kHz stereo model) is "
                              "not supported yet; use the 24 kHz mono model")
    codec = build_codec("encodec-24k", quantizer={"num_quantizers": max(n_q, 1)})
    codec.set_num_codebooks(min(8, n_q))
    load_state_strict(codec, rename_keys(state, SEANET_RULES), source)
    return codec


# -- WavTokenizer -----------------------------------------------------------------------------------

WAVTOKENIZER_RULES = [
    (r"^feature_extractor\.encodec\.decoder\.", None),  # an unused SEANet decoder in every official file
    (r"^feature_extractor\.encodec\.", ""),
    (r"^backbone\.", "decoder.backbone."),
    (r"^head\.", "decoder.head."),
] + SEANET_RULES


def is_wavtokenizer_state(state: Mapping) -> bool:
    return any(k.startswith("feature_extractor.encodec.encoder.") for k in state) and "head.out.weight" in state


def wavtokenizer_config(state: Mapping, yaml_path: Optional[str] = None) -> dict:
    """Our codec config for an official WavTokenizer, from its YAML when given, else from the weights."""
    out_dim = int(state["head.out.weight"].shape[0])
    n_fft = out_dim - 2
    base = get_config("wavtokenizer-75" if n_fft == 1280 else "wavtokenizer-40")
    if yaml_path is not None:
        y = load_yaml(yaml_path)
        try:
            init = y["model"]["init_args"]
            fe, bb, hd = (init[k]["init_args"] for k in ("feature_extractor", "backbone", "head"))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{yaml_path} is not a WavTokenizer training YAML (missing {e})") from e
        base["sample_rate"] = int(init.get("sample_rate", 24000))
        base["encoder"]["ratios"] = list(fe.get("dowmsamples", base["encoder"]["ratios"]))
        base["quantizer"].update(codebook_size=int(fe.get("vq_bins", 4096)),
                                 num_quantizers=int(fe.get("num_quantizers", 1)),
                                 kmeans_iters=int(fe.get("vq_kmeans", 200)))
        base["decoder"]["backbone"].update(input_channels=bb["input_channels"], dim=bb["dim"],
                                           intermediate_dim=bb["intermediate_dim"], num_layers=bb["num_layers"],
                                           adanorm_num_embeddings=bb.get("adanorm_num_embeddings"))
        base["decoder"]["head"].update(dim=hd["dim"], n_fft=hd["n_fft"], hop_length=hd["hop_length"],
                                       padding=hd.get("padding", "same"))
    else:
        hop = {1280: 320, 2400: 600}.get(n_fft)
        if hop is None:
            raise CheckpointError(f"cannot tell the WavTokenizer variant from head.out ({out_dim} outputs); "
                                  "pass its training YAML as config=")
        base["quantizer"]["codebook_size"] = int(state["feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed"].shape[0])
    return base


def load_wavtokenizer_state(state: Mapping, yaml_path: Optional[str] = None, source: str = "WavTokenizer checkpoint"):
    """Official WavTokenizer weights (the ``state_dict`` of its Lightning checkpoint) -> our codec."""
    state = _tensors(state)
    config = wavtokenizer_config(state, yaml_path)
    from ..registry import build_from_config
    codec = build_from_config(config)
    load_state_strict(codec, rename_keys(state, WAVTOKENIZER_RULES), source)
    return codec


# -- Vocos ----------------------------------------------------------------------------------------------

VOCOS_ENCODEC_RULES = [
    (r"^feature_extractor\.encodec\.decoder\.", None),
    (r"^feature_extractor\.encodec\.", ""),
    (r"^feature_extractor\.codebook_weights$", "decoder.codebook_weights"),
    (r"^backbone\.", "decoder.backbone."),
    (r"^head\.", "decoder.head."),
] + SEANET_RULES


def is_vocos_state(state: Mapping) -> bool:
    return "backbone.embed.weight" in state and "head.out.weight" in state and not is_wavtokenizer_state(state)


def load_vocos_encodec_state(state: Mapping, source: str = "vocos state dict"):
    """The ``vocos`` EnCodec-features model (``charactr/vocos-encodec-24khz`` layout) -> our codec."""
    state = _tensors(state)
    if "feature_extractor.codebook_weights" not in state:
        raise CheckpointError(f"{source} is a Vocos mel vocoder, not a codec: load it with "
                              "audiocodec.load_vocoder")
    n_q = len({k.split(".")[5] for k in state if k.startswith("feature_extractor.encodec.quantizer.vq.layers.")})
    emb = state["feature_extractor.codebook_weights"]
    n_emb = emb.shape[0] // 1024
    codec = build_codec("vocos-encodec-24k", quantizer={"num_quantizers": n_q},
                        decoder={"codebook_embedding": [n_emb, 1024]})
    load_state_strict(codec, rename_keys(state, VOCOS_ENCODEC_RULES), source)
    return codec


def read_state(path: Path) -> tuple[dict, dict]:
    """Read a ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` file safely: ``(state_dict, whole object)``."""
    from .safe_load import safe_torch_load
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a mapping")
    return dict(state), dict(obj)
