"""Codec training losses: reconstruction, adversarial, feature matching, gradient balancing.

:class:`CodecLoss` combines named, weighted terms from one config, e.g. WavTokenizer's::

    CodecLoss(weights={"mel": 45, "adversarial": 1, "feature": 1, "commitment": 1000,
                       "adversarial/dac": 8, "feature/dac": 8},
              adversarial={"mpd": "hinge", "mrd": "hinge", "dac": "lsgan"})

Term names:

* ``mel`` (:class:`~audiocodec.losses.spectral.MelLoss`, arguments in ``mel``), ``stft``
  (:class:`~audiocodec.losses.spectral.MultiScaleSTFTLoss`, arguments in ``stft``), ``l1`` (waveform);
* ``adversarial/<name>`` and ``feature/<name>`` for each discriminator of a
  :class:`~audiocodec.discriminators.MultiDiscriminator` (weights ``adversarial`` / ``feature`` apply
  to every discriminator unless ``adversarial/<name>`` / ``feature/<name>`` is given); the loss type of
  each comes from ``adversarial`` (one type, or one per name);
* any loss the model returns (``CodecOutput.losses``: ``commitment``, ``codebook``, ``distillation``, ...):
  each needs a weight (0 to ignore), and each weighted name must be produced;
* ``discriminator/<name>`` (default 1) scales that discriminator's loss in :meth:`CodecLoss.discriminator_loss`.

With ``balancer`` the terms computed from the generated audio (mel, stft, l1, adversarial, feature)
are combined by an EnCodec :class:`~audiocodec.losses.balancer.Balancer` (their weights become
shares of the gradient); model losses are added with their plain weights.

Training step (in a :class:`~audiocodec.train.task.Task`)::

    out = codec(real)                                           # CodecOutput
    d_out = loss.discriminator_loss(real, out.audio, disc)      # fake is detached inside
    ctx.backward_and_step("disc", d_out.loss)
    g_out = loss.generator_loss(real, out.audio, disc, model_losses=out.losses)
    ctx.backward_and_step("gen", g_out.loss)
    return g_out.terms | d_out.terms

``generator_loss`` runs the discriminator's underlying module (a DDP wrapper is bypassed) with its
parameters frozen, so no discriminator gradient is computed; ``discriminator_loss`` calls the
discriminator once on ``cat([real, fake])``. With a balancer, ``g_out.loss`` is a surrogate whose
gradient w.r.t. the audio is the balanced one (its value is the effective loss), so it back-propagates
like any loss (gradient accumulation scaling included); every rank must call ``generator_loss`` equally
often (the balancer all-reduces its norms). Checkpoint :meth:`CodecLoss.training_state` with the task.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import torch
from torch import nn

from ..config import call_with_config
from ..errors import ConfigError
from .adversarial import (ADVERSARIAL_LOSSES, check_kind, discriminator_loss, feature_matching_loss,
                          generator_loss)
from .balancer import Balancer
from .distillation import DistillationLoss, d_axis_loss, t_axis_loss
from .spectral import MelLoss, MultiScaleSTFTLoss, SpectralLoss, Spectrogram, waveform_l1

_OUTPUT_TERMS = ("mel", "stft", "l1")
#: terms a quantizer returns only in training mode: absent when it is frozen (``trainer.freeze``)
_QUANTIZER_TERMS = ("commitment", "codebook")
_GROUP_PREFIXES = ("adversarial", "feature", "discriminator")


class LossOutput(NamedTuple):
    """``loss``: the scalar to back-propagate; ``terms``: every unweighted term (detached) and the
    effective weighted loss (``total`` for the generator, ``discriminator/total``), for logging."""
    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


@contextlib.contextmanager
def _frozen(module: nn.Module):
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _named_outputs(disc: nn.Module, wav: torch.Tensor) -> dict:
    """``{name: (logits, fmaps)}`` from a MultiDiscriminator (``named=True``) or a single one."""
    inner = _unwrap(disc)
    if hasattr(inner, "forward_named"):
        return disc(wav, named=True)
    return {"discriminator": disc(wav)}


class CodecLoss(nn.Module):
    """Weighted sum of codec training losses (see the module docstring for the term names).

    Args:
        weights: ``{term: weight}``.
        adversarial: loss type for every discriminator (``"hinge"``, ``"hinge_linear"``, ``"lsgan"``)
            or ``{discriminator name: type}``.
        feature_layers: ``"sum"`` (WavTokenizer, DAC, HiFi-GAN) or ``"mean"`` (EnCodec) over one
            sub-discriminator's feature maps.
        mel: arguments of :class:`MelLoss` (default: WavTokenizer's 1024 / 256 / 100 mels).
        stft: arguments of :class:`MultiScaleSTFTLoss`.
        balancer: arguments of :class:`Balancer` to balance the audio terms, or ``None``.
        sample_rate: default sample rate of the spectral losses.
    """

    def __init__(self, weights: Mapping[str, float], adversarial: Union[str, Mapping[str, str]] = "hinge",
                 feature_layers: str = "sum", mel: Optional[Mapping[str, Any]] = None,
                 stft: Optional[Mapping[str, Any]] = None, balancer: Optional[Mapping[str, Any]] = None,
                 sample_rate: int = 24000):
        super().__init__()
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError("loss.weights: expected a non-empty mapping {term: weight}")
        self.weights: Dict[str, float] = {}
        for key, value in weights.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"loss.weights.{key}: expected a number, got {value!r}")
            if "/" in key and key.split("/", 1)[0] not in _GROUP_PREFIXES:
                raise ConfigError(f"loss.weights.{key}: per-discriminator weights start with "
                                  f"{', '.join(p + '/' for p in _GROUP_PREFIXES)}")
            self.weights[key] = float(value)
        if isinstance(adversarial, str):
            check_kind(adversarial)
        elif isinstance(adversarial, Mapping):
            for name, kind in adversarial.items():
                check_kind(kind)
        else:
            raise ConfigError(f"loss.adversarial: expected a loss type or {{name: type}}, got {adversarial!r}")
        self.adversarial = adversarial if isinstance(adversarial, str) else dict(adversarial)
        if feature_layers not in ("sum", "mean"):
            raise ConfigError(f"loss.feature_layers must be 'sum' or 'mean', got {feature_layers!r}")
        self.feature_layers = feature_layers
        if mel is not None and "mel" not in self.weights:
            raise ConfigError("loss.mel is configured but loss.weights has no 'mel'")
        if stft is not None and "stft" not in self.weights:
            raise ConfigError("loss.stft is configured but loss.weights has no 'stft'")
        self.mel = (call_with_config(MelLoss, {"sample_rate": sample_rate, **(mel or {})}, "loss.mel")
                    if self.weights.get("mel") else None)
        self.stft = (call_with_config(MultiScaleSTFTLoss, {"sample_rate": sample_rate, **(stft or {})}, "loss.stft")
                     if self.weights.get("stft") else None)
        self.balancer = call_with_config(Balancer, dict(balancer), "loss.balancer") if balancer is not None else None

    # -- state ---------------------------------------------------------------------------------
    def training_state(self) -> dict:
        """What to checkpoint to resume exactly (the balancer's norm averages): plain floats."""
        return {"balancer": self.balancer.training_state()} if self.balancer is not None else {}

    def load_training_state(self, state: Mapping) -> None:
        if self.balancer is not None and "balancer" in state:
            self.balancer.load_training_state(state["balancer"])

    # -- weights ------------------------------------------------------------------------------
    def weight(self, term: str) -> float:
        """Weight of ``term``; ``adversarial/<name>`` falls back to ``adversarial`` (likewise ``feature``),
        ``discriminator/<name>`` to 1, anything else to 0."""
        if term in self.weights:
            return self.weights[term]
        prefix = term.split("/", 1)[0]
        if "/" in term and prefix in ("adversarial", "feature"):
            return self.weights.get(prefix, 0.0)
        return 1.0 if prefix == "discriminator" and "/" in term else 0.0

    def kind(self, name: str) -> str:
        """Adversarial loss type of discriminator ``name``."""
        if isinstance(self.adversarial, str):
            return self.adversarial
        if name not in self.adversarial:
            raise ConfigError(f"loss.adversarial has no loss type for discriminator {name!r}; "
                              f"given: {', '.join(self.adversarial)}")
        return self.adversarial[name]

    # -- discriminator step ---------------------------------------------------------------------
    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, discriminator: nn.Module) -> LossOutput:
        """Loss of ``discriminator`` on ``real`` and ``fake`` audio ``[B, 1, L]`` (``fake`` is detached)."""
        n = real.shape[0]
        outs = _named_outputs(discriminator, torch.cat([real.detach(), fake.detach().to(real.dtype)], dim=0))
        self._check_names(list(outs))
        terms, total = {}, None
        for name, (logits, _) in outs.items():
            value = discriminator_loss([lg[:n] for lg in logits], [lg[n:] for lg in logits], self.kind(name))
            terms[f"discriminator/{name}"] = value
            contrib = self.weight(f"discriminator/{name}") * value
            total = contrib if total is None else total + contrib
        terms = {k: v.detach() for k, v in terms.items()}
        terms["discriminator/total"] = total.detach()
        return LossOutput(total, terms)

    # -- generator step -------------------------------------------------------------------------
    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor, discriminator: Optional[nn.Module] = None,
                       model_losses: Optional[Mapping[str, torch.Tensor]] = None) -> LossOutput:
        """Generator loss of ``fake [B, 1, L]`` (the codec output) against ``real``.

        Args:
            discriminator: a :class:`~audiocodec.discriminators.MultiDiscriminator` (or one
                discriminator, named ``discriminator``); ``None`` skips the adversarial terms (e.g. a
                reconstruction-only warm-up).
            model_losses: ``CodecOutput.losses`` (commitment, codebook, ...).
        """
        if fake.shape != real.shape:
            raise ValueError(f"generator_loss: fake {tuple(fake.shape)} and real {tuple(real.shape)} differ")
        audio_terms: Dict[str, torch.Tensor] = {}
        if self.mel is not None:
            audio_terms["mel"] = self.mel(fake, real)
        if self.stft is not None:
            audio_terms["stft"] = self.stft(fake, real)
        if self.weights.get("l1"):
            audio_terms["l1"] = waveform_l1(fake, real)
        if discriminator is not None:
            audio_terms.update(self._adversarial_terms(real, fake, _unwrap(discriminator)))
        other = dict(model_losses or {})
        known = set(audio_terms) | set(other) | set(_OUTPUT_TERMS) | set(_QUANTIZER_TERMS) | {"adversarial", "feature"}
        unmatched = [k for k in self.weights if k not in known and k.split("/", 1)[0] not in _GROUP_PREFIXES]
        if unmatched:
            raise ConfigError(f"loss.weights.{unmatched[0]} matches no loss term; terms here: "
                              f"{', '.join(sorted(set(audio_terms) | set(other)))}")
        for name in other:
            if name not in self.weights:
                raise ConfigError(f"the model returns a loss {name!r} that loss.weights does not weigh; "
                                  "give it a weight (0 to ignore it)")

        weights = {k: self.weight(k) for k in list(audio_terms) + list(other)}
        if self.balancer is not None:
            balanced = {k: v for k, v in audio_terms.items() if weights[k] != 0}
            total = (self.balancer.surrogate(balanced, fake, weights) if balanced
                     else fake.new_zeros((), dtype=torch.float32))
        else:
            total = fake.new_zeros((), dtype=torch.float32)
            for k, v in audio_terms.items():
                if weights[k]:
                    total = total + weights[k] * v
        for k, v in other.items():
            if weights[k]:
                total = total + weights[k] * v.float()
        terms = {k: v.detach().float() for k, v in {**audio_terms, **other}.items()}
        terms["total"] = total.detach()
        return LossOutput(total, terms)

    def _check_names(self, names) -> None:
        for key in self.weights:
            prefix, _, name = key.partition("/")
            if name and name not in names:
                raise ConfigError(f"loss.weights.{key}: no discriminator named {name!r}; "
                                  f"discriminators: {', '.join(names)}")

    def _adversarial_terms(self, real: torch.Tensor, fake: torch.Tensor, disc: nn.Module) -> Dict[str, torch.Tensor]:
        with _frozen(disc):
            fake_out = _named_outputs(disc, fake)
            self._check_names(list(fake_out))
            need_real = any(self.weight(f"feature/{name}") for name in fake_out)
            if need_real:
                with torch.no_grad():
                    real_out = _named_outputs(disc, real.to(fake.dtype))
        out = {}
        for name, (logits, fmaps) in fake_out.items():
            adv_w, feat_w = self.weight(f"adversarial/{name}"), self.weight(f"feature/{name}")
            if adv_w:
                out[f"adversarial/{name}"] = generator_loss(logits, self.kind(name))
            if feat_w:
                out[f"feature/{name}"] = feature_matching_loss(real_out[name][1], fmaps, self.feature_layers)
        return out


__all__ = [
    "DistillationLoss", "d_axis_loss", "t_axis_loss",
    "CodecLoss", "GeneratorLoss", "LossOutput", "Balancer", "MelLoss", "MultiScaleSTFTLoss", "SpectralLoss",
    "Spectrogram", "waveform_l1", "discriminator_loss", "generator_loss", "feature_matching_loss",
    "ADVERSARIAL_LOSSES",
]

#: alias: the generator-side config object is the same class
GeneratorLoss = CodecLoss
