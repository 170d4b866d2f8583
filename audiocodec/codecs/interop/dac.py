"""DAC (descript-audio-codec) weights files.

The official files (``weights_24khz.pth`` etc., written by ``DAC.save(path, package=False)``) hold
``{"state_dict": ..., "metadata": {"kwargs": {...the dac.DAC constructor arguments...}, ...}}``.
The state dict uses old-style weight norm (``weight_g`` / ``weight_v``). Our DAC modules carry the
official names, so only the quantizer list is renamed (``quantizer.quantizers.N`` ->
``quantizer.layers.N``). Nothing from the ``dac`` package is imported.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

from ...errors import CheckpointError
from ..registry import _dac, build_from_config, get_config
from .keys import load_state_strict, rename_keys

#: official key -> ours (a bijection on the quantizer prefix; every other key is identical)
DAC_RULES = [(r"^quantizer\.quantizers\.(\d+)\.", r"quantizer.layers.\1.")]
#: ours -> official (the inverse of DAC_RULES)
DAC_RULES_INVERSE = [(r"^quantizer\.layers\.(\d+)\.", r"quantizer.quantizers.\1.")]

#: the ``dac.DAC`` constructor arguments and their defaults (dac 1.0.0)
DAC_DEFAULTS: dict[str, Any] = dict(
    encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=None, decoder_dim=1536, decoder_rates=[8, 8, 4, 2],
    n_codebooks=9, codebook_size=1024, codebook_dim=8, quantizer_dropout=False, sample_rate=44100,
)


def is_dac_checkpoint(obj: Mapping) -> bool:
    """A DAC weights file: ``state_dict`` with DAC's key layout and ``metadata.kwargs``."""
    if not isinstance(obj, Mapping):
        return False
    state, meta = obj.get("state_dict"), obj.get("metadata")
    if not isinstance(state, Mapping) or not isinstance(meta, Mapping) or not isinstance(meta.get("kwargs"), Mapping):
        return False
    return any(k.startswith("quantizer.quantizers.") for k in state) and any(
        k.startswith("encoder.block.") for k in state)


def _int_list(name: str, value) -> list[int]:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and v > 0 for v in value):
        return [int(v) for v in value]
    raise CheckpointError(f"DAC metadata kwargs.{name} should be a list of positive ints, got {value!r}")


def _pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"DAC metadata kwargs.{name} should be a positive int, got {value!r}")
    return int(value)


def dac_config(kwargs: Mapping[str, Any], source: str = "DAC checkpoint") -> dict:
    """Our codec config from the ``dac.DAC`` constructor arguments (missing ones take DAC's defaults).

    Raises:
        CheckpointError: an argument this DAC version does not have (a modified architecture) or a
            value of the wrong kind.
    """
    unknown = sorted(set(kwargs) - set(DAC_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{source}: unsupported DAC constructor argument(s) {', '.join(unknown)} in "
                              f"metadata.kwargs; supported: {', '.join(DAC_DEFAULTS)}")
    kw = dict(copy.deepcopy(DAC_DEFAULTS), **kwargs)
    codebook_dim = kw["codebook_dim"]
    if isinstance(codebook_dim, (list, tuple)):
        codebook_dim = _int_list("codebook_dim", codebook_dim)
        if len(codebook_dim) != kw["n_codebooks"]:
            raise CheckpointError(f"{source}: {len(codebook_dim)} codebook dims for {kw['n_codebooks']} codebooks")
    else:
        codebook_dim = _pos_int("codebook_dim", codebook_dim)
    enc, dec = _int_list("encoder_rates", kw["encoder_rates"]), _int_list("decoder_rates", kw["decoder_rates"])
    if torch.tensor(enc).prod() != torch.tensor(dec).prod():
        raise CheckpointError(f"{source}: encoder rates {enc} and decoder rates {dec} have different hops")
    latent = None if kw["latent_dim"] is None else _pos_int("latent_dim", kw["latent_dim"])
    dropout = kw["quantizer_dropout"]
    if not isinstance(dropout, (bool, int, float)):
        raise CheckpointError(f"{source}: kwargs.quantizer_dropout should be a number, got {dropout!r}")
    sr = _pos_int("sample_rate", kw["sample_rate"])
    config = _dac(sr, enc, dec, n_codebooks=_pos_int("n_codebooks", kw["n_codebooks"]),
                  quantizer_dropout=float(dropout), encoder_dim=_pos_int("encoder_dim", kw["encoder_dim"]),
                  latent_dim=latent, decoder_dim=_pos_int("decoder_dim", kw["decoder_dim"]),
                  codebook_size=_pos_int("codebook_size", kw["codebook_size"]), codebook_dim=codebook_dim)
    known = get_config("dac-24k")
    strip = lambda c: {k: v for k, v in c.items() if k not in ("name", "description", "quantizer")}  # noqa: E731
    same_quantizer = {k: v for k, v in config["quantizer"].items() if k != "quantizer_dropout"} == \
        {k: v for k, v in known["quantizer"].items() if k != "quantizer_dropout"}
    if strip(config) == strip(known) and same_quantizer:
        config.update(name="dac-24k", description=known["description"])
    else:
        config.update(name=f"dac-{sr / 1000:g}k", description=f"DAC {sr / 1000:g} kHz (from official weights)")
    return config


def load_dac_checkpoint(obj: Mapping, source: str = "DAC checkpoint"):
    """An official DAC weights file (loaded as a dict) -> our codec, loaded strictly."""
    if not is_dac_checkpoint(obj):
        raise CheckpointError(f"{source} is not a DAC weights file (expected state_dict and metadata.kwargs)")
    config = dac_config(obj["metadata"]["kwargs"], source)
    codec = build_from_config(config)
    state = {k: v for k, v in obj["state_dict"].items() if isinstance(v, torch.Tensor)}
    load_state_strict(codec, rename_keys(state, DAC_RULES), source)
    return codec


def to_dac_state(codec) -> dict:
    """Our DAC codec's state dict under the official key names (old-style ``weight_g`` / ``weight_v``)."""
    out = {}
    for key, value in rename_keys(codec.state_dict(), DAC_RULES_INVERSE).items():
        for idx, tag in (("0", "g"), ("1", "v")):
            suffix = f".parametrizations.weight.original{idx}"
            if key.endswith(suffix):
                key = key[: -len(suffix)] + f".weight_{tag}"
        out[key] = value
    return out
