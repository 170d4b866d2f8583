"""Readers for the official checkpoint formats: WavTokenizer (Lightning ``.ckpt``), ``encodec`` and
``vocos`` state dicts. Each maps the official keys onto our modules; nothing from those projects is
imported.
"""
from __future__ import annotations

import math
import re
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
    codec = build_codec("encodec-24k", quantizer={"num_quantizers": max(n_q, 1)}, num_codebooks=min(8, max(n_q, 1)))
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
    return (any(k.startswith("feature_extractor.encodec.encoder.") for k in state) and "head.out.weight" in state
            and "feature_extractor.codebook_weights" not in state)  # that one is Vocos on EnCodec tokens


_WT_ENC = "feature_extractor.encodec.encoder.model."
_WT_VQ = "feature_extractor.encodec.quantizer.vq.layers."


def _conv_kernel(state: Mapping, prefix: str) -> Optional[torch.Tensor]:
    """The weight (or weight_v) of an official SEANet conv ``prefix`` (``...model.N``), in any weight-norm form."""
    for suffix in (".conv.conv.weight_v", ".conv.conv.weight", ".conv.conv.parametrizations.weight.original1"):
        if prefix + suffix in state:
            return state[prefix + suffix]
    return None


def _wavtokenizer_from_weights(state: Mapping) -> dict:
    """The sizes of an official WavTokenizer read off its tensors (no YAML needed). A tensor that is missing
    leaves the size of the nearest named config, so that the strict load names the missing key."""
    out = state["head.out.weight"]
    n_fft = int(out.shape[0]) - 2
    cfg = get_config("wavtokenizer-40" if n_fft == 2400 else "wavtokenizer-75")
    enc, bb = cfg["encoder"], cfg["decoder"]["backbone"]
    idx = sorted({int(k[len(_WT_ENC):].split(".")[0]) for k in state
                  if k.startswith(_WT_ENC) and re.match(r"\d+\.conv\.conv\.", k[len(_WT_ENC):])})
    convs = [_conv_kernel(state, f"{_WT_ENC}{i}") for i in idx]
    if len(convs) >= 3 and all(c is not None for c in convs):
        enc.update(ratios=[int(w.shape[-1]) // 2 for w in convs[1:-1]][::-1],  # kernel = 2 * stride, decoder-first
                   n_filters=int(convs[0].shape[0]), dimension=int(convs[-1].shape[0]))
    enc["lstm"] = len({k for k in state if k.startswith(_WT_ENC) and ".lstm.weight_ih_l" in k}) or enc["lstm"]
    book = state.get(f"{_WT_VQ}0._codebook.embed")
    if book is not None:
        cfg["quantizer"].update(dim=int(book.shape[1]), codebook_size=int(book.shape[0]))
    n_q = len({k[len(_WT_VQ):].split(".")[0] for k in state if k.startswith(_WT_VQ)})
    # the official inference uses the first VQ layer only (LanguageVectorQuantization.infer: n_q = 1)
    cfg["quantizer"]["num_quantizers"], cfg["num_codebooks"] = max(n_q, 1), 1
    if "backbone.embed.weight" in state:
        bb.update(input_channels=int(state["backbone.embed.weight"].shape[1]),
                  dim=int(state["backbone.embed.weight"].shape[0]))
    if "backbone.convnext.0.pwconv1.weight" in state:
        bb["intermediate_dim"] = int(state["backbone.convnext.0.pwconv1.weight"].shape[0])
    bb["num_layers"] = len({k.split(".")[2] for k in state if k.startswith("backbone.convnext.")}) or bb["num_layers"]
    if "backbone.norm.weight" in state and "backbone.norm.scale.weight" not in state:
        bb["adanorm_num_embeddings"] = None
    elif "backbone.norm.scale.weight" in state:
        bb["adanorm_num_embeddings"] = int(state["backbone.norm.scale.weight"].shape[0])
    hop = math.prod(enc["ratios"])
    cfg["decoder"]["head"].update(dim=int(out.shape[1]), n_fft=n_fft, hop_length=hop)
    name = {(320, 1280): "wavtokenizer-75", (600, 2400): "wavtokenizer-40"}.get((hop, n_fft))
    if name is None:
        cfg.update(name=f"wavtokenizer-hop{hop}",
                   description=f"WavTokenizer single-VQ codec, {cfg['sample_rate']} Hz, hop {hop}, n_fft {n_fft}")
    return cfg


def wavtokenizer_config(state: Mapping, yaml_path=None) -> dict:
    """Our codec config for an official WavTokenizer, from its training YAML when given, else from the
    shapes of its weights. Sizes the YAML leaves out take the official code's defaults.

    ``yaml_path`` may also be the parsed YAML (a mapping with ``model``) or one of our codec configs
    (a mapping with ``encoder`` / ``quantizer`` / ``decoder``), which is used as it is.
    """
    base = _wavtokenizer_from_weights(state)
    if yaml_path is None:
        return base
    y = dict(yaml_path) if isinstance(yaml_path, Mapping) else load_yaml(yaml_path)
    if "model" not in y and "encoder" in y:  # one of our configs
        return y
    try:
        init = y["model"]["init_args"]
        fe, bb, hd = (init[k].get("init_args", {}) for k in ("feature_extractor", "backbone", "head"))
        # defaults of the official EncodecFeatures / VocosBackbone / ISTFTHead
        ratios = [int(r) for r in fe.get("dowmsamples", [6, 5, 5, 4])]
        base["sample_rate"] = int(init.get("sample_rate", 24000))
        # the official EncodecFeatures hard-codes the SEANet sizes; only the strides come from the YAML
        base["encoder"].update(ratios=ratios, n_filters=32, dimension=512, lstm=2)
        base["quantizer"].update(dim=512, codebook_size=int(fe.get("vq_bins", 16384)),
                                 num_quantizers=int(fe.get("num_quantizers", 1)),
                                 kmeans_iters=int(fe.get("vq_kmeans", 800)))
        base["decoder"]["backbone"].update(input_channels=int(bb["input_channels"]), dim=int(bb["dim"]),
                                           intermediate_dim=int(bb["intermediate_dim"]),
                                           num_layers=int(bb["num_layers"]),
                                           adanorm_num_embeddings=bb.get("adanorm_num_embeddings"), attention=True)
        base["decoder"]["head"].update(dim=int(hd["dim"]), n_fft=int(hd["n_fft"]), hop_length=int(hd["hop_length"]),
                                       padding=hd.get("padding", "same"))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{yaml_path} is not a WavTokenizer training YAML (bad or missing {e})") from e
    hop = math.prod(ratios)
    if base["decoder"]["head"]["hop_length"] != hop:
        raise CheckpointError(f"{yaml_path}: head hop_length {base['decoder']['head']['hop_length']} differs from "
                              f"the encoder hop {hop} (dowmsamples {ratios})")
    name = {(320, 1280): "wavtokenizer-75", (600, 2400): "wavtokenizer-40"}.get((hop, base["decoder"]["head"]["n_fft"]))
    base["name"] = name or f"wavtokenizer-hop{hop}"
    return base


#: Prefixes of the generator in the training module's state dict; a Lightning checkpoint also holds the
#: discriminators and loss buffers (``multiperioddisc.``, ``multiresddisc.``, ``dac.``, ``dacdiscriminator.``,
#: ``melspec_loss.``), which inference drops, as the official ``from_pretrained0802`` does.
WAVTOKENIZER_PREFIXES = ("feature_extractor.", "backbone.", "head.")


def load_wavtokenizer_state(state: Mapping, yaml_path=None, source: str = "WavTokenizer checkpoint"):
    """Official WavTokenizer weights (the ``state_dict`` of its Lightning checkpoint) -> our codec.
    ``yaml_path``: its training YAML (path or parsed), or our config dict; default: read off the weights."""
    state = {k: v for k, v in _tensors(state).items() if k.startswith(WAVTOKENIZER_PREFIXES)}
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
