"""``codec_gan``: train (or fine-tune) any codec of :mod:`audiocodec.codecs` as a GAN.

A training config (``recipes/codec/*.yaml``)::

    task:
      type: codec_gan
      codec: wavtokenizer-75              # a named config, or a whole codec config mapping
      codec_overrides: {decoder: {backbone: {num_layers: 8}}}   # merged into it (unknown keys are errors)
      init_from: null                     # weights to start from: anything load_codec reads, or a run
      loss: {preset: wavtokenizer}        # a preset name, or CodecLoss arguments + discriminators
      data: {train: data/train.jsonl, valid: data/valid.jsonl, crop_seconds: 3.0}
      pretrain_mel_steps: 0
    trainer: {batch_size: 40, precision: bf16, max_steps: 1000000}
    optim:
      gen:  {lr: 2.0e-4, scheduler: {type: cosine}}
      disc: {lr: 2.0e-4, scheduler: {type: cosine}}

Modules (checkpoint prefixes): ``codec`` (the generator) and ``disc`` (a
:class:`~audiocodec.discriminators.MultiDiscriminator`); optimizers ``gen`` and ``disc``.

One training step::

    fake = codec(real)                          # quantizer in fp32 (also under bf16 autocast)
    D step  (from discriminator_start):  loss.discriminator_loss(real, fake.detach(), disc)
    G step:  mel / stft / l1 + commitment (+ codebook) [+ adversarial + feature matching from
             pretrain_mel_steps], optionally through the gradient balancer

Logged: every loss term (``gen/<term>``, ``discriminator/<name>``), learning rates and gradient norms
(by the trainer), codebook utilisation / perplexity / unused codes of the step's codes and the EMA
codebooks' dead codes (on logging steps), validation mel loss and PESQ / STOI, audio and mel images.

At every checkpoint the generator (its EMA copy when ``trainer.ema`` covers ``codec``) is also written
as an audiocodec safetensors file to ``<run_dir>/codec/model.safetensors`` (atomically), so
``audiocodec reconstruct --model <run_dir>/codec`` works on a run in progress. (The trainer has no
checkpoint hook: the export happens in :meth:`CodecGAN.state_dict`, which the trainer calls once per
checkpoint, on rank 0.)

Semantic distillation (SpeechTokenizer, DM-Codec; :mod:`audiocodec.semantic`): with ``task.distillation``
the codec (its quantizer a ``semantic_rvq`` with a semantic head, e.g. ``codec: speechtokenizer``) also learns
to predict teacher features from chosen RVQ layers::

    task:
      codec: speechtokenizer
      distillation:
        preset: dm_codec                  # speechtokenizer | dm_codec_sm | dm_codec_lm | dm_codec; or teachers:
        # teachers: {speech: {layer: 0}, text: {layer: 1, weight: 0.5}}   # (DistillationLoss arguments,
        # kind: d_axis, lambda_sim: 1.0, combine: mean                     #  merged into the preset)
        features: {speech: feats/hubert_avg, text: feats/bert_avg}   # a FeatureCache folder per teacher
        # live: {speech: {path: models/hubert-base-ls960, layer: avg}}   # or run a teacher in the step
        missing: error                    # clips without features: error | drop (left out)
      loss: {weights: {distillation: 120, ...}}

Each training crop reads its frames of the cached features (its clip ``id`` and crop ``offset``; in the
data-loader workers, :meth:`CodecGAN.collate`); the step runs
:func:`~audiocodec.semantic.model.semantic_forward` and adds the
:class:`~audiocodec.losses.distillation.DistillationLoss` as the ``distillation`` model loss (logged
``gen/distillation`` and ``gen/distillation/<teacher>``; ``val/distillation`` when the validation clips have
features). Quantizer dropout never draws fewer codebooks than the deepest distilled RVQ layer needs.
A ``live`` teacher runs in the step instead (no cache; fp32, no gradient): a speech teacher on the crop itself
(a cache holds whole-clip features, cropped), a text teacher on the clip's manifest ``text``, cropped as the
cache would be.

Exact resume: crops come from the dataset's per-item RNG, gains and quantizer dropout from RNGs
seeded by (seed, step, micro-batch, rank); the balancer's averages are checkpointed. Quantizer dropout
is drawn here rather than in the quantizer (which uses the global RNG, different on each rank), so
every rank quantizes with as many codebooks and their EMA all-reduces stay paired.
"""
from __future__ import annotations

import copy
import logging
import math
import random
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..codecs import Codec, load_codec, save_codec
from ..codecs.base import CodecOutput
from ..codecs.registry import build_from_config, get_config
from ..config import call_with_config, merge
from ..errors import CheckpointError, ConfigError
from ..losses import CodecLoss, MelLoss
from ..losses.presets import get_preset
from .data import mix_seed
from .task import TASKS, Task

log = logging.getLogger("audiocodec.train")

#: ``task.data`` keys and their defaults.
DATA_DEFAULTS: dict = {
    "train": None,               # training manifest (jsonl); required
    "valid": None,               # validation manifest, or null (no validation)
    "sample_rate": None,         # default: the codec's (must equal it; files are resampled on the fly)
    "crop_seconds": 1.0,         # random training crops
    "valid_crop_seconds": None,  # validation crops from the start of each clip (default: crop_seconds)
    "valid_clips": 16,           # validation uses N clips spread over the valid manifest (null: all)
    "gain_db": None,             # [min, max]: random gain per training crop (dB)
    "peak_db": None,             # [min, max]: normalise each crop's peak to a random level (dBFS), as
                                 # WavTokenizer ([-6, -1]); validation uses the middle of the range
    "min_seconds": 0.0,          # skip shorter clips
    "reject_silence": False,     # re-draw (then skip) crops below silence_db
    "silence_db": -60.0,
    "seed": None,                # crop / gain seed (default: trainer.seed)
}

_METRICS = ("pesq", "stoi")

#: ``task.distillation`` keys: the first five are :class:`~audiocodec.losses.distillation.DistillationLoss`
#: arguments; ``features`` maps teachers to FeatureCache folders, ``live`` to teacher specs
#: (:func:`~audiocodec.semantic.teachers.build_teacher`, plus ``type: speech | text``, by default the
#: teacher's name); ``missing``: ``error`` or ``drop`` (clips without features are left out).
DISTILLATION_KEYS = ("preset", "teachers", "kind", "lambda_sim", "combine", "features", "live", "missing")


def _plain(x):
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def resolve_loss(loss: Union[str, Mapping, None], sample_rate: int) -> tuple[Optional[list], dict]:
    """``(discriminator config list or None, CodecLoss arguments)`` from ``task.loss``.

    ``loss`` is a preset name (``wavtokenizer``, ``encodec``), or a mapping of :class:`CodecLoss`
    arguments plus ``discriminators`` (a MultiDiscriminator config list) and optionally ``preset``, which
    the other keys are merged into (mappings deep-merged, lists replaced). Without ``sample_rate`` in the
    mapping the spectral losses run at the codec's rate.
    """
    if loss is None:
        raise ConfigError("task.loss is required: a preset name (wavtokenizer, encodec) or CodecLoss "
                          "arguments with a discriminators list")
    if isinstance(loss, str):
        loss = {"preset": loss}
    if not isinstance(loss, Mapping):
        raise ConfigError(f"task.loss must be a preset name or a mapping, got {loss!r}")
    loss = _plain(loss)
    preset = loss.pop("preset", None)
    base = get_preset(preset) if preset else {"discriminators": None, "loss": {}}
    discriminators = loss.pop("discriminators", base["discriminators"])
    if discriminators is not None and (isinstance(discriminators, Mapping) or not isinstance(discriminators, list)):
        raise ConfigError(f"task.loss.discriminators must be a list of {{type: ...}} mappings, got {discriminators!r}")
    explicit_rate = "sample_rate" in loss
    base_loss = copy.deepcopy(base["loss"])
    if discriminators and preset:
        # per-discriminator entries of the preset that name a discriminator no longer in the list go
        names, counts = set(), {}
        for spec in discriminators:
            if isinstance(spec, Mapping):
                kind = str(spec.get("type"))
                name = spec.get("name") or (kind if kind not in counts else f"{kind}_{counts[kind]}")
                counts[kind] = counts.get(kind, 0) + 1
                names.add(name)
        weights = base_loss.get("weights", {})
        base_loss["weights"] = {k: v for k, v in weights.items() if "/" not in k or k.split("/", 1)[1] in names}
        if isinstance(base_loss.get("adversarial"), Mapping):
            base_loss["adversarial"] = {k: v for k, v in base_loss["adversarial"].items() if k in names}
    args = merge(base_loss, loss, "task.loss", strict=False)
    if not explicit_rate:
        args["sample_rate"] = int(sample_rate)
    return (list(discriminators) if discriminators else None), args


def _spectrogram_image(spec: torch.Tensor) -> torch.Tensor:
    """``[F, T]`` log spectrogram -> ``[1, F, T]`` grey image in [0, 1], low frequencies at the bottom."""
    s = spec.float()
    lo, hi = torch.quantile(s, 0.01), s.max()
    img = ((s - lo) / (hi - lo + 1e-8)).clamp(0, 1)
    return img.flip(0)[None]


@TASKS.register("codec_gan")
class CodecGAN(Task):
    """Args:
        codec: a named codec config (``audiocodec info``) or a codec config mapping; ``None`` takes the
            config of ``init_from``.
        codec_overrides: mapping merged into the codec config (e.g. a smaller backbone, dropout 0).
        init_from: weights to start from (not applied when resuming): any file or folder
            :func:`~audiocodec.load_codec` reads (audiocodec safetensors, an official WavTokenizer ``.ckpt``,
            EnCodec / DAC weights), loaded with ``inference=False`` so weight norm stays trainable; or a
            training run / checkpoint folder (codec and discriminator weights). ``trainer.init_from``
            (``--init-from``) does the same.
        loss: a loss preset name or CodecLoss arguments + ``discriminators`` (see :func:`resolve_loss`);
            without discriminators the codec trains on reconstruction losses only.
        data: see :data:`DATA_DEFAULTS` (batch size and loader workers are ``trainer.batch_size`` /
            ``trainer.num_workers``).
        pretrain_mel_steps: steps trained on reconstruction (and quantizer) losses only: no adversarial or
            feature-matching terms, and no discriminator training unless ``discriminator_start`` is earlier.
        discriminator_start: first step that trains the discriminator (default: ``pretrain_mel_steps``);
            earlier lets it warm up before its gradient reaches the generator.
        train_codebooks: codebooks used in training (default: all the quantizer has, or the largest
            the decoder is conditioned on).
        quantizer_dropout: probability that a step uses a random number ``1..train_codebooks`` of
            codebooks (the same on every rank); ``None``: the quantizer's own setting.
        valid_metrics: validation metrics besides the mel loss: ``pesq``, ``stoi`` (on the validation
            clips; keep ``data.valid_clips`` small).
        media_clips: validation clips written to tensorboard (audio + mel images) at each media step.
        export_codec: write ``<run_dir>/codec/model.safetensors`` at each checkpoint.
        distillation: semantic distillation (see the module docstring and :data:`DISTILLATION_KEYS`);
            needs a codec with a semantic head and a ``distillation`` weight in ``loss.weights``.
    """

    def __init__(self, codec: Union[str, Mapping, None] = None, codec_overrides: Optional[Mapping] = None,
                 init_from: Optional[str] = None, loss: Union[str, Mapping, None] = None,
                 data: Optional[Mapping] = None, pretrain_mel_steps: int = 0,
                 discriminator_start: Optional[int] = None, train_codebooks: Optional[int] = None,
                 quantizer_dropout: Optional[float] = None, valid_metrics: Sequence[str] = ("pesq", "stoi"),
                 media_clips: int = 2, export_codec: bool = True, distillation: Optional[Mapping] = None):
        if codec is None and init_from is None:
            raise ConfigError("task.codec (a named config or a config mapping) or task.init_from is required")
        if codec is not None and not isinstance(codec, (str, Mapping)):
            raise ConfigError(f"task.codec must be a config name or mapping, got {codec!r}")
        if codec_overrides is not None and not isinstance(codec_overrides, Mapping):
            raise ConfigError(f"task.codec_overrides must be a mapping, got {codec_overrides!r}")
        self.codec_spec = _plain(codec) if codec is not None else None
        self.codec_overrides = _plain(codec_overrides or {})
        self.init_path = init_from
        self.loss_spec = loss
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"task.data must be a mapping, got {data!r}")
        self.data = merge(DATA_DEFAULTS, _plain(data or {}), "task.data")
        if not self.data["train"]:
            raise ConfigError("task.data.train (a training manifest) is required")
        for key in ("gain_db", "peak_db"):
            r = self.data[key]
            if r is not None and not (isinstance(r, (list, tuple)) and len(r) == 2 and float(r[0]) <= float(r[1])):
                raise ConfigError(f"task.data.{key} must be [min, max] in dB, got {r!r}")
        if self.data["gain_db"] is not None and self.data["peak_db"] is not None:
            raise ConfigError("task.data: give gain_db or peak_db, not both (peak normalisation undoes a gain)")
        for key, value in (("pretrain_mel_steps", pretrain_mel_steps), ("discriminator_start", discriminator_start),
                           ("media_clips", media_clips)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"task.{key} must be a non-negative integer, got {value!r}")
        self.pretrain_mel_steps = int(pretrain_mel_steps)
        self.discriminator_start = self.pretrain_mel_steps if discriminator_start is None else int(discriminator_start)
        if train_codebooks is not None and (not isinstance(train_codebooks, int) or train_codebooks < 1):
            raise ConfigError(f"task.train_codebooks must be a positive integer, got {train_codebooks!r}")
        self.train_codebooks_arg = train_codebooks
        if quantizer_dropout is not None and not 0.0 <= float(quantizer_dropout) <= 1.0:
            raise ConfigError(f"task.quantizer_dropout must be in [0, 1], got {quantizer_dropout!r}")
        self.quantizer_dropout_arg = quantizer_dropout
        metrics = [valid_metrics] if isinstance(valid_metrics, str) else list(valid_metrics or [])
        unknown = [m for m in metrics if m not in _METRICS]
        if unknown:
            raise ConfigError(f"task.valid_metrics: unknown {unknown}; choose from {', '.join(_METRICS)}")
        self.valid_metrics = metrics
        self.media_clips = int(media_clips)
        self.export_codec = bool(export_codec)
        self.skipped_total = 0
        self.skipped_by_reason: dict[str, int] = {}   # this rank's skipped training items, by reason
        self._ctx = None
        self._last: Optional[tuple] = None
        self._parse_distillation(distillation)

    def _parse_distillation(self, spec: Optional[Mapping]) -> None:
        """Check ``task.distillation`` (everything but the files, which :meth:`build` opens)."""
        self.distill = None
        self.distill_features: dict = {}
        self.distill_live: dict = {}
        self.distill_missing = "error"
        self._caches: dict = {}
        self._live: dict = {}
        self._texts: dict = {}
        self._val_distill = False
        if spec is None:
            return
        from ..losses.distillation import DistillationLoss
        from ..semantic.teachers import TEACHER_KINDS
        if not isinstance(spec, Mapping):
            raise ConfigError(f"task.distillation must be a mapping (preset / teachers, features or live), "
                              f"got {spec!r}")
        spec = _plain(spec)
        unknown = [k for k in spec if k not in DISTILLATION_KEYS]
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(f'task.distillation.{k}' for k in unknown)}; "
                              f"allowed: {', '.join(DISTILLATION_KEYS)}")
        if spec.get("preset") is None and spec.get("teachers") is None:
            raise ConfigError("task.distillation needs a preset (speechtokenizer, dm_codec_sm, dm_codec_lm, dm_codec) "
                              "or teachers ({speech: {layer: 0}, ...})")
        self.distill = DistillationLoss(teachers=spec.get("teachers"), kind=spec.get("kind"),
                                        lambda_sim=spec.get("lambda_sim"), combine=spec.get("combine"),
                                        preset=spec.get("preset"))
        names = list(self.distill.teachers)
        for key in ("features", "live"):
            value = spec.get(key) or {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"task.distillation.{key} must be a mapping {{teacher: ...}}, got {value!r}")
            stray = [k for k in value if k not in names]
            if stray:
                raise ConfigError(f"task.distillation.{key}: {', '.join(map(repr, stray))} is not a teacher of this "
                                  f"distillation (teachers: {', '.join(names)})")
        self.distill_features = dict(spec.get("features") or {})
        self.distill_live = dict(spec.get("live") or {})
        for name, path in self.distill_features.items():
            if not isinstance(path, (str, Path)) or not str(path):
                raise ConfigError(f"task.distillation.features.{name} must be a feature cache folder, got {path!r}")
        for name, teacher in self.distill_live.items():
            if not isinstance(teacher, Mapping):
                raise ConfigError(f"task.distillation.live.{name} must be a teacher mapping (path or config, layer, "
                                  f"...), got {teacher!r}")
            kind = teacher.get("type", name)
            if kind not in TEACHER_KINDS:
                raise ConfigError(f"task.distillation.live.{name}.type must be one of {', '.join(TEACHER_KINDS)}"
                                  + ("" if "type" in teacher else " (the teacher's name is not a kind: give type)")
                                  + f", got {kind!r}")
        both = [n for n in names if n in self.distill_features and n in self.distill_live]
        if both:
            raise ConfigError(f"task.distillation: teacher(s) {', '.join(both)} in both features and live; pick one")
        none = [n for n in names if n not in self.distill_features and n not in self.distill_live]
        if none:
            raise ConfigError(f"task.distillation: no targets for teacher(s) {', '.join(none)}: give "
                              f"features: {{{none[0]}: <feature cache folder>}} (python -m audiocodec.semantic "
                              f"features) or live: {{{none[0]}: {{path: <model folder>}}}}")
        missing = spec.get("missing", "error")
        if missing not in ("error", "drop"):
            raise ConfigError(f"task.distillation.missing must be 'error' or 'drop', got {missing!r}")
        self.distill_missing = missing

    # -- building ------------------------------------------------------------------------------------
    def _codec_config(self, loaded: Optional[Codec]) -> dict:
        if self.codec_spec is None:
            config = copy.deepcopy(loaded.config)
        elif isinstance(self.codec_spec, str):
            config = get_config(self.codec_spec)
        else:
            config = copy.deepcopy(self.codec_spec)
        if self.codec_overrides:
            config = merge(config, self.codec_overrides, "task.codec_overrides")
        return config

    @staticmethod
    def _is_run_or_checkpoint(path: Path) -> bool:
        from .checkpoint import STATE_FILE
        return (path / "checkpoints").is_dir() or (path / STATE_FILE).is_file()

    def build(self, ctx):
        self._ctx = ctx
        tcfg = ctx.config["trainer"]
        self.seed = int(tcfg["seed"])
        self.log_every = int(tcfg["log_every"])
        self.max_steps = int(tcfg["max_steps"])
        loaded = None
        from_run = self.init_path is not None and self._is_run_or_checkpoint(Path(self.init_path))
        if from_run and self.codec_spec is None:
            raise ConfigError("task.init_from is a training run / checkpoint: give task.codec too (or use its "
                              "exported codec folder <run_dir>/codec as init_from)")
        if self.init_path is not None and not from_run:
            loaded = load_codec(self.init_path, inference=False)
        self.codec = build_from_config(self._codec_config(loaded))
        if loaded is not None:
            self._load_codec_weights(loaded, self.init_path)
        sr = self.codec.sample_rate
        if self.data["sample_rate"] is not None and int(self.data["sample_rate"]) != sr:
            raise ConfigError(f"task.data.sample_rate {self.data['sample_rate']} differs from the codec's {sr} Hz "
                              "(leave it out: files are resampled to the codec's rate)")

        # codebooks used in training, and quantizer dropout drawn here so every rank agrees
        q = self.codec.quantizer
        choices = list(range(1, self.codec.max_codebooks + 1))
        conditioned = getattr(self.codec.decoder, "bandwidth_codebooks", None)
        if conditioned:
            choices = [k for k in conditioned if k <= self.codec.max_codebooks]
        k = self.train_codebooks_arg or max(choices)
        if k not in choices:
            raise ConfigError(f"task.train_codebooks={k} is not one of {choices} for this codec")
        self.train_codebooks = k
        self.nq_choices = [c for c in choices if c <= k]
        own = float(getattr(q, "quantizer_dropout", 0.0) or 0.0)
        self.q_dropout = own if self.quantizer_dropout_arg is None else float(self.quantizer_dropout_arg)
        if hasattr(q, "quantizer_dropout"):
            q.quantizer_dropout = 0.0  # the module would draw from the global RNG, differently on each rank

        discs, loss_args = resolve_loss(self.loss_spec, sr)
        self.loss = call_with_config(CodecLoss, loss_args, "task.loss").to(ctx.device)
        if self.distill is not None:
            if "distillation" not in self.loss.weights:
                raise ConfigError("task.distillation is set but task.loss.weights has no `distillation` weight "
                                  "(120 in SpeechTokenizer and DM-Codec)")
            self._build_distillation(ctx)
        elif self.loss.weights.get("distillation"):
            raise ConfigError("task.loss.weights.distillation is set but there is no task.distillation (teachers "
                              "and their features)")
        else:   # a zero weight without distillation (a recipe's distillation switched off): no such term
            self.loss.weights.pop("distillation", None)
        self.val_mel = MelLoss(sample_rate=sr).to(ctx.device)  # WavTokenizer's mel L1: comparable across recipes
        self.monitor_mel = None if self.loss.mel is not None else self.val_mel
        modules: dict[str, nn.Module] = {"codec": self.codec}
        self.disc = None
        if discs:
            from ..discriminators import MultiDiscriminator
            self.disc = MultiDiscriminator(discs)
            modules["disc"] = self.disc
        if from_run:
            self.modules = modules
            super().init_from(self.init_path)
        return modules

    def _head_dim(self, name: str) -> int:
        """Output size of the codec's semantic head for teacher ``name``."""
        semantic_dim = self.codec.quantizer.semantic_dim
        if isinstance(semantic_dim, Mapping):
            if name not in semantic_dim:
                raise ConfigError(f"task.distillation: the codec has semantic heads for {', '.join(semantic_dim)} but "
                                  f"none for teacher {name!r}; name the teachers after the heads, or give the codec "
                                  "one shared head (quantizer.semantic_dim: <int>)")
            return int(semantic_dim[name])
        return int(semantic_dim)

    def _build_distillation(self, ctx) -> None:
        """Check the codec against the distillation, open the feature caches, build the live teachers."""
        from ..semantic import FeatureCache, build_teacher
        codec, q = self.codec, self.codec.quantizer
        if not hasattr(q, "forward_layers") or getattr(q, "semantic_head", None) is None:
            raise ConfigError(f"task.distillation: the codec's quantizer ({type(q).__name__}) has no semantic head; "
                              "distillation needs a semantic_rvq quantizer with semantic_dim set "
                              "(e.g. task.codec: speechtokenizer)")
        routes = self.distill.routes
        for name, layer in routes.items():
            if layer >= codec.max_codebooks:
                raise ConfigError(f"task.distillation: teacher {name!r} is routed to RVQ layer {layer}, but the codec "
                                  f"has {codec.max_codebooks} codebooks (layers 0..{codec.max_codebooks - 1})")
        deepest = max(routes, key=routes.get)
        need = routes[deepest] + 1
        if self.train_codebooks < need:
            raise ConfigError(f"task.train_codebooks={self.train_codebooks}, but distillation reads RVQ layer "
                              f"{routes[deepest]} (teacher {deepest!r}): train with at least {need} codebooks")
        self.nq_choices = [c for c in self.nq_choices if c >= need]  # quantizer dropout keeps the routed layers
        frame_rate = codec.frame_rate
        self._head_dims = {}
        for name in self.distill.teachers:
            dim = self._head_dims[name] = self._head_dim(name)
            if name in self.distill_features:
                cache = FeatureCache(self.distill_features[name])
                where = f"task.distillation.features.{name} ({cache.root})"
                if cache.frame_rate is None or abs(cache.frame_rate - frame_rate) > 1e-6 * frame_rate:
                    raise ConfigError(f"{where}: features at {cache.frame_rate} frames/s, but the codec runs at "
                                      f"{frame_rate:g} (compute them with --frame-rate {frame_rate:g})")
                if cache.dim != dim:
                    raise ConfigError(f"{where}: features of size {cache.dim}, but the codec's semantic head for "
                                      f"{name!r} outputs {dim} (set the codec's quantizer.semantic_dim to {cache.dim})")
                self._caches[name] = cache
            else:
                spec = dict(self.distill_live[name])
                kind = spec.pop("type", name)
                where = f"task.distillation.live.{name}"
                teacher = build_teacher(kind, spec, sample_rate=codec.sample_rate, frame_rate=frame_rate, where=where)
                if teacher.dim != dim:
                    raise ConfigError(f"{where}: the teacher's features have size {teacher.dim}, but the codec's "
                                      f"semantic head for {name!r} outputs {dim}")
                self._live[name] = (kind, teacher.to(ctx.device))

    def _distillation_records(self, records: list, train: bool) -> list:
        """The clips that have targets for every teacher; the others raise (training, ``missing: error``),
        are left out (``missing: drop``) or turn validation distillation off."""
        from ..semantic import item_id
        text_teachers = [n for n, (kind, _) in self._live.items() if kind == "text"]
        lacking: dict = {}
        for r in records:
            rid = item_id(r)
            why = [n for n, cache in self._caches.items() if rid not in cache]
            has_text = isinstance(r.get("text"), str) and bool(r["text"].strip())
            why += [n for n in text_teachers if not has_text]
            if why:
                lacking[rid] = why
            elif text_teachers:
                self._texts[rid] = (r["text"], float(r["duration"]))
        if not train:
            self._val_distill = True
        if not lacking:
            return records
        rid, why = next(iter(lacking.items()))
        what = "training" if train else "validation"
        msg = (f"{len(lacking)} of {len(records)} {what} clips have no distillation targets (e.g. {rid!r}: no "
               f"{' / '.join(why)} {'transcript' if set(why) <= set(text_teachers) else 'features'})")
        if self.distill_missing == "drop":
            kept = [r for r in records if item_id(r) not in lacking]
            if not kept:
                raise ConfigError(f"task.distillation: {msg}; none left")
            log.info(f"task.distillation: {msg}; left out (missing: drop)")
            return kept
        if train:
            raise ConfigError(f"task.distillation: {msg}. Compute their features (python -m audiocodec.semantic "
                              "features), or set task.distillation.missing=drop to leave them out")
        log.warning(f"task.distillation: {msg}; no validation distillation loss")
        self._val_distill = False
        return records

    def _load_codec_weights(self, loaded: Codec, source) -> None:
        try:
            self.codec.load_state_dict(loaded.state_dict())
        except RuntimeError as e:
            raise CheckpointError(f"{source}: its weights do not fit task.codec (+ codec_overrides): {e}") from e

    def init_from(self, path: str) -> None:
        """``trainer.init_from``: codec weights from anything :func:`load_codec` reads, or the codec and
        discriminator of a training run / checkpoint."""
        if self._is_run_or_checkpoint(Path(path)):
            return super().init_from(path)
        self._load_codec_weights(load_codec(path, inference=False), path)

    def optimizers(self):
        out: dict[str, Any] = {"gen": [p for p in self.codec.parameters() if p.requires_grad]}
        if self.disc is not None:
            out["disc"] = [p for p in self.disc.parameters() if p.requires_grad]
        return out

    # -- data ----------------------------------------------------------------------------------------
    def _dataset(self, manifest, crop_seconds, train: bool, limit: Optional[int] = None):
        from ..data import AudioCropDataset, read_manifest
        d = self.data
        records = read_manifest(manifest)
        if self.distill is not None:
            records = self._distillation_records(records, train)
        if limit and len(records) > limit:  # evenly spread over the manifest (speakers, kinds of audio)
            records = [records[int(i)] for i in np.linspace(0, len(records) - 1, int(limit))]
        return AudioCropDataset(records, sample_rate=self.codec.sample_rate, crop_seconds=crop_seconds,
                                channels=self.codec.channels, gain_db=d["gain_db"] if train else None,
                                random_crop=train, pad=True, min_seconds=d["min_seconds"],
                                reject_silence=d["reject_silence"] and train, silence_db=d["silence_db"],
                                seed=self.seed if d["seed"] is None else int(d["seed"]))

    def train_dataset(self):
        self._train_ds = self._dataset(self.data["train"], self.data["crop_seconds"], True)
        return self._train_ds

    def val_dataset(self):
        if not self.data["valid"]:
            self._val_ds = None
            return None
        crop = self.data["valid_crop_seconds"] or self.data["crop_seconds"]
        self._val_ds = self._dataset(self.data["valid"], crop, False, self.data["valid_clips"])
        return self._val_ds

    def collate(self, items):
        """:class:`~audiocodec.data.CollateAudio`, plus ``batch["semantic"] = {teacher: TeacherOutput}``
        (features ``[B, T, D]``, ``T`` = the crop's codec frames, and valid ``lengths [B]``) for the
        teachers read from feature caches, when every clip of the batch has features."""
        from ..data import CollateAudio
        batch = CollateAudio(getattr(self, "_train_ds", None))(items)
        if self._caches and batch["audio"].shape[0] > 0:
            ids = batch["id"]
            if all(i in cache for cache in self._caches.values() for i in ids):
                n = self._num_frames(batch["audio"].shape[-1])
                offsets = batch["offset"].tolist()
                batch["semantic"] = {name: cache.batch(ids, offsets, n) for name, cache in self._caches.items()}
        return batch

    # -- helpers -------------------------------------------------------------------------------------
    def _forward(self, wav: torch.Tensor, n_q: Optional[int], ctx) -> CodecOutput:
        """:meth:`Codec.forward` with the quantizer in fp32 (also under bf16 autocast)."""
        codec = self.codec
        latents = codec.encoder(wav)
        with ctx.fp32():
            q = codec.quantizer(latents.float(), n_q)
        audio = codec._decode_latents(q.quantized, q.codes.shape[1])
        return CodecOutput(audio[..., : wav.shape[-1]], q.codes, q.quantized, q.losses)

    def _num_frames(self, num_samples: int) -> int:
        """Codec frames of ``num_samples`` samples."""
        return int(math.ceil(num_samples / self.codec.hop_length))

    def _teacher_targets(self, batch: Mapping, real: torch.Tensor, ctx, dummy: bool = False) -> tuple[dict, dict]:
        """``({teacher: features [B, T, D]}, {teacher: valid frames [B]})`` for the crops of ``real [B, C, L]``:
        read from the batch (feature caches) or computed by the live teachers. ``dummy``: zeros (a batch
        of unreadable files, trained with weight 0)."""
        n = self._num_frames(real.shape[-1])
        targets, lengths = {}, {}
        for name in self.distill.teachers:
            if dummy:
                targets[name] = real.new_zeros(real.shape[0], n, self._head_dims[name], dtype=torch.float32)
                lengths[name] = torch.ones(real.shape[0], dtype=torch.long, device=real.device)
                continue
            if name in self._caches:
                cached = (batch.get("semantic") or {}).get(name)
                if cached is None:
                    raise ConfigError(f"task.distillation: no cached features of teacher {name!r} for clips "
                                      f"{list(batch['id'])[:4]} (not in {self._caches[name].root})")
                out = cached
            else:
                kind, teacher = self._live[name]
                with torch.no_grad(), ctx.fp32():
                    if kind == "speech":
                        out = teacher(real.float().mean(1, keepdim=True), lengths=batch["length"])
                    else:
                        out = self._text_targets(teacher, batch["id"], batch["offset"], n, real.device)
            targets[name], lengths[name] = out.features, out.lengths.to(real.device)
        return targets, lengths

    def _text_targets(self, teacher, ids: Sequence[str], offsets: torch.Tensor, n: int, device):
        """A live language teacher's targets of crops, as :class:`~audiocodec.semantic.FeatureCache` would
        give them: the whole clip's features (one position per codec frame), then the crop's frames."""
        from ..semantic import TeacherOutput
        rows = []
        for rid, offset in zip(ids, offsets.tolist()):
            text, duration = self._texts[rid]
            res = teacher([text], teacher.frames_for(duration))
            full = res.features[0, : int(res.lengths[0])]
            start = min(int(math.floor(float(offset) * teacher.frame_rate + 1e-6)), max(0, full.shape[0] - n))
            rows.append(full[start:start + n])
        feats = torch.zeros(len(rows), n, teacher.dim, device=device)
        for i, r in enumerate(rows):
            feats[i, : r.shape[0]] = r.to(device)
        return TeacherOutput(feats, torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=device))

    def _distill_forward(self, real: torch.Tensor, n_q: Optional[int], batch: Mapping, ctx, dummy: bool = False):
        """``(CodecOutput, DistillationOutput)`` of a step with distillation (quantizer in fp32)."""
        from ..semantic.model import semantic_forward
        sem = semantic_forward(self.codec, real, n_q, routes=self.distill.routes)
        targets, lengths = self._teacher_targets(batch, real, ctx, dummy)
        return sem.output, self.distill(sem.features, targets, lengths)

    def _choose_codebooks(self, step: int, micro: int) -> int:
        if self.q_dropout <= 0:
            return self.train_codebooks
        rng = random.Random(mix_seed(self.seed, step, micro, 0x71))
        if rng.random() >= self.q_dropout:
            return self.train_codebooks
        return rng.choice(self.nq_choices)

    def _peak_normalize(self, audio: torch.Tensor, levels_db: torch.Tensor) -> torch.Tensor:
        peak = audio.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-4)   # silence is not blown up
        gain = torch.pow(10.0, levels_db.to(audio) / 20.0) / peak
        return audio * gain[:, None, None]

    def _train_levels(self, n: int, step: int, micro: int, rank: int) -> torch.Tensor:
        lo, hi = (float(v) for v in self.data["peak_db"])
        g = torch.Generator().manual_seed(mix_seed(self.seed, step, micro, rank, 0x9A))
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

    def _valid_level(self) -> Optional[float]:
        p = self.data["peak_db"]
        return None if p is None else (float(p[0]) + float(p[1])) / 2

    def _is_log_step(self, step: int) -> bool:
        return (step + 1) % self.log_every == 0 or step + 1 == self.max_steps

    @torch.no_grad()
    def _codebook_logs(self, codes: torch.Tensor) -> dict:
        from ..metrics import CodebookStats
        s = CodebookStats(self.codec.cardinality).update(codes.detach()).summary()
        out = {"codebook/utilisation": s["mean_utilisation"] or 0.0,
               "codebook/perplexity": s["mean_perplexity"] or 0.0,
               "codebook/unused_in_batch": float(np.mean(s["dead_codes"])),
               "codebook/num_codebooks": float(codes.shape[1])}
        dead = [float((layer.codebook.cluster_size < layer.codebook.threshold_ema_dead_code).sum())
                for layer in getattr(self.codec.quantizer, "layers", [])
                if hasattr(getattr(layer, "codebook", None), "cluster_size")]
        if dead:
            out["codebook/ema_dead_codes"] = float(np.mean(dead))
        return out

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch, step, ctx):
        real = batch["audio"]
        reasons = batch.get("skipped") or {}
        skipped = sum(reasons.values())
        self.skipped_total += int(skipped)
        for reason, n in reasons.items():
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + int(n)
        weight = 1.0
        if real.shape[0] == 0:  # every file of this batch was unreadable: a zero-weight step keeps ranks in step
            real = torch.zeros(1, self.codec.channels, self._train_ds.crop_length or self.codec.hop_length,
                               device=ctx.device)
            weight = 0.0
        if self.data["peak_db"] is not None:
            real = self._peak_normalize(real, self._train_levels(real.shape[0], step, ctx.micro, ctx.rank))
        n_q = self._choose_codebooks(step, ctx.micro)
        logs: dict[str, Any] = {}
        model_losses = None
        if self.distill is not None:
            out, d = self._distill_forward(real, n_q, batch, ctx, dummy=weight == 0.0)
            model_losses = {**out.losses, "distillation": d.loss}
            logs.update({f"gen/{k}": v for k, v in d.terms.items()})
        else:
            out = self._forward(real, n_q, ctx)
        fake = out.audio

        if self.disc is not None and step >= self.discriminator_start:
            d_out = self.loss.discriminator_loss(real, fake, self.disc)
            ctx.backward_and_step("disc", d_out.loss * weight)
            logs.update(d_out.terms)

        adversarial = self.disc is not None and step >= self.pretrain_mel_steps
        g_out = self.loss.generator_loss(real, fake, self.disc if adversarial else None,
                                         model_losses=out.losses if model_losses is None else model_losses)
        ctx.backward_and_step("gen", g_out.loss * weight)
        logs.update({f"gen/{k}": v for k, v in g_out.terms.items()})
        if self.loss.balancer is not None:
            logs.update({f"balancer/{k}": v for k, v in self.loss.balancer.metrics.items()})

        if self._is_log_step(step) and ctx.micro == 0:
            logs.update(self._codebook_logs(out.codes))
            if self.monitor_mel is not None:
                with torch.no_grad():
                    logs["gen/mel_monitor"] = self.monitor_mel(fake.detach(), real)
            logs["data/skipped_total"] = float(self.skipped_total)
        if ctx.micro == 0 and ctx.is_main:
            n = max(1, self.media_clips)
            self._last = (real[:n].detach(), fake[:n].detach())
        return logs

    # -- validation and media ------------------------------------------------------------------------
    def _valid_input(self, audio: torch.Tensor) -> torch.Tensor:
        level = self._valid_level()
        if level is None:
            return audio
        return self._peak_normalize(audio, torch.full((audio.shape[0],), level, dtype=torch.float64))

    def validation_step(self, batch, ctx):
        real = batch["audio"]
        distill = self.distill is not None and self._val_distill
        if real.shape[0] == 0:  # every file unreadable: the same keys as other batches and ranks, as NaN
            keys = ["mel", *self.valid_metrics]
            if distill:
                keys += ["distillation", *(f"distillation/{n}" for n in self.distill.teachers)]
            return {k: float("nan") for k in keys}
        real = self._valid_input(real)
        out: dict[str, Any] = {}
        if distill:
            result, d = self._distill_forward(real, None, batch, ctx)
            fake = result.audio
            out.update({"distillation": d.loss, **d.terms})
        else:
            fake = self._forward(real, None, ctx).audio
        out["mel"] = self.val_mel(fake, real)
        if self.valid_metrics:
            with ctx.fp32():  # resampling inside the metrics must not run under bf16 autocast
                out.update(self._signal_metrics(real, fake, batch["length"].tolist()))
        return out

    def _signal_metrics(self, real: torch.Tensor, fake: torch.Tensor, lengths: list) -> dict:
        """Mean PESQ / STOI over the items (their valid lengths; NaN items, e.g. too short, left out)."""
        from ..metrics import signal as sig
        ref, hyp = real.float().mean(1).cpu(), fake.float().mean(1).cpu()
        out = {}
        for metric in self.valid_metrics:
            fn = sig.pesq_wb if metric == "pesq" else sig.stoi
            values = [float(fn(ref[i, :n], hyp[i, :n], self.codec.sample_rate)) for i, n in enumerate(lengths)]
            finite = [v for v in values if math.isfinite(v)]
            out[metric] = float(np.mean(finite)) if finite else float("nan")
        return out

    def _mel_image(self, wav: torch.Tensor) -> torch.Tensor:
        spec = self.val_mel.specs[0](wav.float().reshape(1, -1))[0]
        return _spectrogram_image(torch.log(spec.clamp_min(1e-5)))

    def _write_pair(self, writer, tag: str, real: torch.Tensor, fake: torch.Tensor, step: int) -> None:
        sr = self.codec.sample_rate
        writer.add_audio(f"{tag}/input", real.float().mean(0).clamp(-1, 1).cpu(), step, sample_rate=sr)
        writer.add_audio(f"{tag}/reconstruction", fake.float().mean(0).clamp(-1, 1).cpu(), step, sample_rate=sr)
        for name, wav in (("input", real), ("reconstruction", fake)):
            img = self._mel_image(wav.mean(0)).cpu()
            try:
                import matplotlib
                matplotlib.use("Agg")
                import matplotlib.pyplot as plt
            except ImportError:
                writer.add_image(f"{tag}/mel_{name}", img, step, dataformats="CHW")
                continue
            fig, ax = plt.subplots(figsize=(10, 3))
            ax.imshow(img[0].numpy(), aspect="auto", cmap="magma")
            ax.set_axis_off()
            fig.tight_layout()
            writer.add_figure(f"{tag}/mel_{name}", fig, step)
            plt.close(fig)

    def log_media(self, writer, step, ctx):
        if self._last is not None:
            real, fake = self._last
            self._write_pair(writer, "train", real[0], fake[0], step)
        ds = getattr(self, "_val_ds", None)
        if ds is None or not self.media_clips:
            return
        for i in range(min(self.media_clips, len(ds))):
            item = ds[i]
            if item is None:
                continue
            real = self._valid_input(item["audio"][None].to(ctx.device))[..., : item["length"]]
            fake = self._forward(real, None, ctx).audio
            self._write_pair(writer, f"valid/{item['id']}", real[0], fake[0], step)

    # -- state and export ----------------------------------------------------------------------------
    def export(self, path: Optional[Union[str, Path]] = None) -> Optional[Path]:
        """Write the generator (its EMA copy when there is one) as an audiocodec safetensors file."""
        ctx = self._ctx
        if ctx is None:
            return None
        target = Path(path) if path is not None else ctx.run_dir / "codec"
        model = ctx.ema.get("codec", self.codec)
        return save_codec(model, target)

    def state_dict(self) -> dict:
        # The trainer asks for this once per checkpoint, on rank 0: the moment to export the generator.
        if self.export_codec and self._ctx is not None and self._ctx.is_main:
            try:
                path = self.export()
                log.info(f"exported the codec to {path}")
            except OSError as e:  # a full disk must not lose the training checkpoint
                log.warning(f"could not export the codec: {e}")
        return {"loss": self.loss.training_state(), "skipped_total": self.skipped_total,
                "skipped_by_reason": dict(self.skipped_by_reason)}

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_training_state(state.get("loss", {}))
        self.skipped_total = int(state.get("skipped_total", 0))
        self.skipped_by_reason = {str(k): int(v) for k, v in (state.get("skipped_by_reason") or {}).items()}

    def on_train_end(self, ctx) -> None:
        """Report the training items skipped for bad audio, by reason, over all ranks (every rank calls it)."""
        from ..data.dataset import format_skipped, gather_skipped
        total = gather_skipped(self.skipped_by_reason)
        if ctx.is_main:
            (log.warning if total else log.info)(f"training data: {format_skipped(total)}")
