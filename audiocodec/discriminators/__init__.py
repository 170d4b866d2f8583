"""GAN discriminators for codec training.

Every discriminator maps ``wav [B, 1, L]`` to ``(logits, fmaps)``: a list with one logits tensor per
sub-discriminator and a list with one list of feature maps per sub-discriminator.

* ``mpd``: :class:`MultiPeriodDiscriminator` (HiFi-GAN), periods 2, 3, 5, 7, 11: 41.1M parameters
* ``mrd``: :class:`MultiResolutionDiscriminator` (UnivNet), 3 STFT magnitudes: 0.60M
* ``msd``: :class:`MultiScaleDiscriminator` (MelGAN / HiFi-GAN), 3 waveform scales: 29.6M
* ``msstft``: :class:`MultiScaleSTFTDiscriminator` (EnCodec), 5 complex STFTs: 0.47M
* ``multiband``: :class:`MultiBandDiscriminator` (DAC's MRD), 3 complex STFTs x 5 bands: 1.41M
* ``dac``: :class:`DACDiscriminator` (DAC, WavTokenizer), 5 periods + 3 band STFTs: 42.5M

(Parameter counts with weight norm, equal to the official modules' constructor arithmetic;
``num_embeddings=4`` adds 20,480 to ``mpd`` and 768 to ``mrd``.)

A :class:`MultiDiscriminator` combines several from a config list, each entry named by its
``name`` key (default: its type)::

    MultiDiscriminator([{"type": "mpd"}, {"type": "mrd"}, {"type": "dac", "window": "rect"}])

Official WavTokenizer checkpoints store their discriminators as ``multiperioddisc.*``,
``multiresddisc.*`` and ``dac.*``; :func:`official_key_rules` / :func:`load_official_discriminators`
map them onto a MultiDiscriminator with entries named ``mpd``, ``mrd`` and ``dac``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..config import Registry
from ..errors import ConfigError
from .common import DiscriminatorOutput
from .dac import DACDiscriminator
from .mpd import MultiPeriodDiscriminator, PeriodDiscriminator
from .mrd import MultiResolutionDiscriminator, ResolutionDiscriminator
from .msd import MultiScaleDiscriminator, ScaleDiscriminator
from .msstft import MultiScaleSTFTDiscriminator, STFTDiscriminator
from .multiband import BANDS, BandDiscriminator, MultiBandDiscriminator

DISCRIMINATORS = Registry("discriminator")
DISCRIMINATORS.register("mpd")(MultiPeriodDiscriminator)
DISCRIMINATORS.register("mrd")(MultiResolutionDiscriminator)
DISCRIMINATORS.register("msd")(MultiScaleDiscriminator)
DISCRIMINATORS.register("msstft")(MultiScaleSTFTDiscriminator)
DISCRIMINATORS.register("multiband")(MultiBandDiscriminator)
DISCRIMINATORS.register("dac")(DACDiscriminator)


def build_discriminator(spec: Mapping[str, Any], path: str = "discriminator") -> nn.Module:
    """Build one discriminator from ``{"type": ..., **constructor arguments}``."""
    return DISCRIMINATORS.build(spec, path)


class MultiDiscriminator(nn.Module):
    """Several discriminators trained together, each under a name.

    Args:
        discriminators: config list; each entry is ``{"type": ..., "name": optional, **arguments}``.
            Names default to the type (``mpd``, ``mpd_1``, ... when repeated) and choose the loss type
            and weights in :class:`~audiocodec.losses.CodecLoss`.

    ``forward(wav [B, 1, L]) -> (logits, fmaps)`` concatenates all sub-discriminators;
    :meth:`forward_named` keeps them per name. Parameters live under ``discriminators.<name>.``.
    """

    def __init__(self, discriminators: Sequence[Mapping[str, Any]]):
        super().__init__()
        if isinstance(discriminators, Mapping) or not len(discriminators):
            raise ConfigError("discriminators: expected a non-empty list of {'type': ...} mappings")
        modules: Dict[str, nn.Module] = {}
        for i, spec in enumerate(discriminators):
            if not isinstance(spec, Mapping):
                raise ConfigError(f"discriminators[{i}]: expected a mapping with a 'type' key, got {spec!r}")
            spec = dict(spec)
            name = spec.pop("name", None)
            if name is None:
                name, k = str(spec.get("type")), 1
                while name in modules:
                    name, k = f"{spec.get('type')}_{k}", k + 1
            elif name in modules:
                raise ConfigError(f"discriminators[{i}]: duplicate name {name!r}")
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"discriminators[{i}]: name must be an identifier, got {name!r}")
            modules[name] = build_discriminator(spec, f"discriminators[{i}]")
        self.discriminators = nn.ModuleDict(modules)

    @property
    def names(self) -> list[str]:
        return list(self.discriminators.keys())

    def forward_named(self, wav: torch.Tensor) -> Dict[str, DiscriminatorOutput]:
        """``wav [B, 1, L]`` -> ``{name: (logits, fmaps)}``."""
        return {name: disc(wav) for name, disc in self.discriminators.items()}

    def forward(self, wav: torch.Tensor, named: bool = False):
        """``(logits, fmaps)`` over all sub-discriminators, or with ``named`` the
        :meth:`forward_named` dict (so a DDP wrapper can return per-name outputs)."""
        if named:
            return self.forward_named(wav)
        logits, fmaps = [], []
        for lg, fm in self.forward_named(wav).values():
            logits += lg
            fmaps += fm
        return logits, fmaps


#: regex rules (for :func:`audiocodec.codecs.interop.keys.rename_keys`) from a WavTokenizer Lightning
#: ``state_dict`` to a :class:`MultiDiscriminator` named ``mpd`` / ``mrd`` / ``dac``. Weight-norm
#: ``weight_g`` / ``weight_v`` are converted afterwards by ``adapt_weight_norm``.
_WAVTOKENIZER_RULES = (
    (r"^(?!multiperioddisc\.|multiresddisc\.|dac\.).*", None),      # generator, mel filterbank, ...
    (r"^dac\.discriminators\.([0-4])\.convs\.(\d+)\.0\.", r"dac.discriminators.\1.convs.\2."),
    (r"^multiperioddisc\.", "discriminators.mpd."),
    (r"^multiresddisc\.", "discriminators.mrd."),
    (r"^dac\.", "discriminators.dac."),
)


def official_key_rules(drop_embeddings: bool = False) -> list:
    """Key-renaming rules for WavTokenizer's discriminators (see :data:`_WAVTOKENIZER_RULES`).

    With ``drop_embeddings`` the ``emb.weight`` conditioning tables are dropped (for discriminators
    built without ``num_embeddings``).
    """
    rules = list(_WAVTOKENIZER_RULES)
    if drop_embeddings:
        rules.insert(0, (r"\.emb\.weight$", None))
    return rules


def load_official_discriminators(model: MultiDiscriminator, state_dict: Mapping[str, torch.Tensor],
                                 drop_embeddings: Optional[bool] = None) -> MultiDiscriminator:
    """Load WavTokenizer's ``multiperioddisc`` / ``multiresddisc`` / ``dac`` weights (from the
    Lightning ``state_dict``) into ``model`` (entries named ``mpd``, ``mrd``, ``dac``; build ``mpd`` and
    ``mrd`` with ``num_embeddings: 4`` to keep the conditioning tables). Strict: missing, unexpected
    or mis-shaped keys raise :class:`~audiocodec.errors.CheckpointError`.

    The DAC weights come from ``dac.*``. The official training code holds two DAC discriminators: its losses
    read ``dacdiscriminator.discriminator.*``, its optimizer updates ``dac.*`` (which no loss reads), so neither
    learns and both keep their random initialisation: a fine-tuning run starts its DAC discriminator from
    scratch either way (benchmarks/RESULTS.md, session 9)."""
    from ..codecs.interop.keys import load_state_strict, rename_keys
    if drop_embeddings is None:
        drop_embeddings = not any(k.endswith(".emb.weight") for k in model.state_dict())
    load_state_strict(model, rename_keys(state_dict, official_key_rules(drop_embeddings)),
                      source="WavTokenizer discriminators")
    return model


__all__ = [
    "DISCRIMINATORS", "DiscriminatorOutput", "MultiDiscriminator", "build_discriminator",
    "MultiPeriodDiscriminator", "PeriodDiscriminator", "MultiResolutionDiscriminator", "ResolutionDiscriminator",
    "MultiScaleDiscriminator", "ScaleDiscriminator", "MultiScaleSTFTDiscriminator", "STFTDiscriminator",
    "MultiBandDiscriminator", "BandDiscriminator", "BANDS", "DACDiscriminator",
    "official_key_rules", "load_official_discriminators",
]
