"""Named codec configs and ``build_codec``.

A codec config is a dict: ``name``, ``sample_rate``, ``channels``, ``num_codebooks`` (codebooks used by
default) and the ``encoder`` / ``quantizer`` / ``decoder`` components, each with a ``type`` and its
constructor arguments.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Union

from ..config import Registry, merge
from ..errors import ConfigError
from ..nn.dac import DACDecoder, DACEncoder
from ..nn.seanet import SEANetDecoder, SEANetEncoder
from ..nn.vocos import VocosDecoder
from ..quantize.factorized import factorized_rvq
from ..quantize.rvq import euclidean_rvq
from ..semantic.model import SpeechTokenizerDecoder, SpeechTokenizerEncoder, semantic_rvq
from .base import Codec

ENCODERS = Registry("encoder")
QUANTIZERS = Registry("quantizer")
DECODERS = Registry("decoder")

ENCODERS.register("seanet")(SEANetEncoder)
QUANTIZERS.register("rvq")(euclidean_rvq)
DECODERS.register("seanet")(SEANetDecoder)
DECODERS.register("vocos")(VocosDecoder)
ENCODERS.register("dac")(DACEncoder)
QUANTIZERS.register("factorized_rvq")(factorized_rvq)
DECODERS.register("dac")(DACDecoder)
ENCODERS.register("speechtokenizer_seanet")(SpeechTokenizerEncoder)
DECODERS.register("speechtokenizer_seanet")(SpeechTokenizerDecoder)
QUANTIZERS.register("semantic_rvq")(semantic_rvq)

CONFIGS: dict[str, dict] = {}


def register_config(name: str, config: dict) -> dict:
    config = dict(config, name=name)
    CONFIGS[name] = config
    return config


def list_codecs() -> list[str]:
    """Names accepted by :func:`build_codec`."""
    return sorted(CONFIGS)


def get_config(name: str) -> dict:
    if name not in CONFIGS:
        raise ConfigError(f"unknown codec {name!r}; known codecs: {', '.join(list_codecs())}")
    return copy.deepcopy(CONFIGS[name])


def build_codec(name_or_config: Union[str, Mapping[str, Any]], **overrides) -> Codec:
    """Build a codec with random weights from a named config (or a config dict).

    Keyword overrides are merged into the config; nested components take dicts, e.g.
    ``build_codec("encodec-24k", quantizer={"num_quantizers": 8})``. Unknown keys raise ConfigError.
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else copy.deepcopy(dict(name_or_config))
    if overrides:
        config = merge(config, overrides)
    return build_from_config(config)


def build_from_config(config: Mapping[str, Any]) -> Codec:
    known = {"name", "sample_rate", "channels", "num_codebooks", "encoder", "quantizer", "decoder",
             "chunk_seconds", "context_seconds", "description"}
    unknown = set(config) - known
    if unknown:
        raise ConfigError(f"unknown codec config key(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    for part in ("sample_rate", "encoder", "quantizer", "decoder"):
        if part not in config:
            raise ConfigError(f"codec config lacks '{part}'")
    codec = Codec(encoder=ENCODERS.build(config["encoder"], "encoder"),
                  quantizer=QUANTIZERS.build(config["quantizer"], "quantizer"),
                  decoder=DECODERS.build(config["decoder"], "decoder"),
                  sample_rate=config["sample_rate"], channels=config.get("channels", 1),
                  name=config.get("name", "codec"), config=copy.deepcopy(dict(config)),
                  chunk_seconds=config.get("chunk_seconds", 60.0),
                  context_seconds=config.get("context_seconds", 1.0))
    if codec.encoder.hop_length != getattr(codec.decoder, "hop_length", codec.encoder.hop_length):
        raise ConfigError(f"encoder hop {codec.encoder.hop_length} != decoder hop {codec.decoder.hop_length}")
    if config.get("num_codebooks"):
        codec.set_num_codebooks(config["num_codebooks"])
    return codec


# -- named configs ------------------------------------------------------------------------------

def _seanet(dimension: int, ratios, causal: bool) -> dict:
    return dict(type="seanet", channels=1, dimension=dimension, n_filters=32, n_residual_layers=1,
                ratios=list(ratios), causal=causal, pad_mode="reflect", true_skip=False, compress=2, lstm=2,
                norm="weight_norm")


def _wavtokenizer(ratios, n_fft: int, hop: int) -> dict:
    return dict(
        description=f"WavTokenizer single-VQ codec, 24 kHz, {24000 // hop} tokens/s, 4096 codes",
        sample_rate=24000, channels=1, num_codebooks=1,
        encoder=_seanet(512, ratios, causal=False),
        quantizer=dict(type="rvq", dim=512, num_quantizers=1, codebook_size=4096, kmeans_iters=200,
                       decay=0.99, threshold_ema_dead_code=2.0),
        decoder=dict(type="vocos",
                     backbone=dict(input_channels=512, dim=768, intermediate_dim=2304, num_layers=12,
                                   adanorm_num_embeddings=4, attention=True),
                     head=dict(dim=768, n_fft=n_fft, hop_length=hop, padding="same")),
    )


def _encodec_quantizer() -> dict:
    return dict(type="rvq", dim=128, num_quantizers=32, codebook_size=1024, kmeans_iters=50, decay=0.99,
                threshold_ema_dead_code=2.0)


register_config("wavtokenizer-75", _wavtokenizer([8, 5, 4, 2], 1280, 320))
register_config("wavtokenizer-40", _wavtokenizer([6, 5, 5, 4], 2400, 600))
register_config("encodec-24k", dict(
    description="EnCodec 24 kHz: causal SEANet, RVQ of 32 x 1024 codebooks at 75 Hz (1.5-24 kbps)",
    sample_rate=24000, channels=1, num_codebooks=8,
    encoder=_seanet(128, [8, 5, 4, 2], causal=True),
    quantizer=_encodec_quantizer(),
    decoder=dict(_seanet(128, [8, 5, 4, 2], causal=True)),
))
register_config("vocos-encodec-24k", dict(
    description="EnCodec 24 kHz tokens decoded by a Vocos decoder (as Bark uses it); 2, 4, 8 or 16 codebooks",
    sample_rate=24000, channels=1, num_codebooks=8,
    encoder=_seanet(128, [8, 5, 4, 2], causal=True),
    quantizer=_encodec_quantizer(),
    decoder=dict(type="vocos",
                 backbone=dict(input_channels=128, dim=384, intermediate_dim=1152, num_layers=8,
                               adanorm_num_embeddings=4),
                 head=dict(dim=384, n_fft=1280, hop_length=320, padding="same"),
                 bandwidth_codebooks=[2, 4, 8, 16], codebook_embedding=[16, 1024]),
))


def _dac(sample_rate: int, encoder_rates, decoder_rates, n_codebooks: int, quantizer_dropout: float,
         encoder_dim: int = 64, latent_dim: int | None = None, decoder_dim: int = 1536,
         codebook_size: int = 1024, codebook_dim=8, description: str = "") -> dict:
    """A codec config from the arguments of the official ``dac.DAC`` constructor."""
    latent_dim = int(latent_dim or encoder_dim * 2 ** len(encoder_rates))
    return dict(
        description=description, sample_rate=int(sample_rate), channels=1, num_codebooks=int(n_codebooks),
        encoder=dict(type="dac", dim=int(encoder_dim), rates=[int(r) for r in encoder_rates], latent_dim=latent_dim),
        quantizer=dict(type="factorized_rvq", dim=latent_dim, num_quantizers=int(n_codebooks),
                       codebook_size=int(codebook_size),
                       codebook_dim=codebook_dim if isinstance(codebook_dim, int) else list(codebook_dim),
                       quantizer_dropout=float(quantizer_dropout)),
        decoder=dict(type="dac", input_dim=latent_dim, dim=int(decoder_dim), rates=[int(r) for r in decoder_rates]),
    )


register_config("dac-24k", _dac(
    24000, [2, 4, 5, 8], [8, 5, 4, 2], n_codebooks=32, quantizer_dropout=0.5,
    description="DAC 24 kHz: Snake conv codec, 32 factorized (8-d, cosine) codebooks of 1024 at 75 Hz "
                "(0.75-24 kbps)"))


# -- SpeechTokenizer / DM-Codec: semantic distillation of the first RVQ layer ----------------------------


def _speechtokenizer_seanet(**extra) -> dict:
    return dict(type="speechtokenizer_seanet", channels=1, dimension=1024, n_filters=64, n_residual_layers=1,
                ratios=[8, 5, 4, 2], activation="ELU", residual_kernel_size=3, dilation_base=2, lstm=2,
                causal=False, pad_mode="reflect", true_skip=False, compress=2, norm="weight_norm", **extra)


register_config("speechtokenizer", dict(
    description="SpeechTokenizer / DM-Codec 16 kHz: SEANet with a BiLSTM encoder, RVQ of 8 x 1024 EMA codebooks "
                "at 50 Hz (4 kbps); RVQ layer 0 distilled from HuBERT / BERT through a 1024 -> 768 head",
    sample_rate=16000, channels=1, num_codebooks=8,
    encoder=_speechtokenizer_seanet(bidirectional_lstm=True),
    quantizer=dict(type="semantic_rvq", dim=1024, num_quantizers=8, codebook_size=1024, kmeans_iters=50,
                   decay=0.99, threshold_ema_dead_code=2.0, semantic_dim=768),
    decoder=_speechtokenizer_seanet(),
))
