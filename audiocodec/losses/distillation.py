"""Semantic distillation losses (SpeechTokenizer, DM-Codec).

The student is an RVQ layer's output through the codec's semantic head, ``[B, T, D]`` (see
:func:`audiocodec.semantic.model.semantic_forward`); the target is a teacher's frame features
``[B, T', D]``: HuBERT / wav2vec2 hidden states (speech model, "SM-guided"), or BERT hidden states of
the transcript (language model, "LM-guided"; token ``i`` is matched to frame ``i``). Both sequences are
cut to the shorter one, ``n = min(T, T')``, as the official code does. The official formulas:

* ``d_axis`` (SpeechTokenizer's default, DM-Codec's): cosine similarity *along time*, one value per
  feature channel and item, ``-mean(log sigmoid(cos))``::

      -log(sigmoid(cosine_similarity(student[:, :n], target[:, :n], dim=1))).mean()

* ``t_axis``: per frame, L1 plus ``lambda_sim`` times the cosine over channels::

      l1_loss(student[:, :n], target[:, :n]) + lambda_sim * -log(sigmoid(cosine_similarity(..., dim=-1))).mean()

  (The official ``t_axis_distill_loss`` calls ``torch.functional.l1_loss``, which does not exist, so
  the official t_axis path fails when run; DM-Codec's copy uses ``torch.nn.functional.l1_loss`` and that
  is what is computed here.)

Length handling of the LM-guided targets (DM-Codec): the transcript is tokenized with
``padding="max_length", max_length=<number of speech frames>, truncation=True`` and every position's
hidden state, padding tokens included, is a target frame; there is no alignment. That padding happens
in the teacher (:class:`audiocodec.semantic.teachers.LanguageTeacher`), so here an LM target is cut to
``min(T, T')`` like any other.

Optional ``lengths [B]`` (valid frames of each item of a padded batch) mask the frames past each
item's end; without them every frame counts, as in the official code.

:class:`DistillationLoss` combines teachers: each is routed to an RVQ layer (DM-Codec's ``--layer`` /
``--lock``) and weighted; ``combine="mean"`` divides by the sum of the weights (DM-Codec's default
``(L_sm + L_lm) / 2``), ``"sum"`` does not (DM-Codec's ``combined_<w_sm>_<w_lm>``). The total is the
``distillation`` model loss that :class:`~audiocodec.losses.CodecLoss` weighs (120 in both papers).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: Distillation loss kinds.
KINDS = ("d_axis", "t_axis")

#: Named setups: the teachers of each paper's model (pass ``preset=`` to :class:`DistillationLoss`).
PRESETS: dict = {
    # SpeechTokenizer: HuBERT-base (mean of all layers) -> RVQ layer 0
    "speechtokenizer": {"teachers": {"speech": {"layer": 0}}, "kind": "d_axis"},
    # DM-Codec, speech-model guided (HuBERT / wav2vec2)
    "dm_codec_sm": {"teachers": {"speech": {"layer": 0}}, "kind": "d_axis"},
    # DM-Codec, language-model guided (BERT of the transcript)
    "dm_codec_lm": {"teachers": {"text": {"layer": 0}}, "kind": "d_axis"},
    # DM-Codec, both: the average of the two losses on RVQ layer 0
    "dm_codec": {"teachers": {"speech": {"layer": 0}, "text": {"layer": 0}}, "kind": "d_axis", "combine": "mean"},
}


class DistillationOutput(NamedTuple):
    """``loss``: the combined scalar; ``terms``: ``{"distillation/<teacher>": value}`` (detached)."""
    loss: torch.Tensor
    terms: dict


def _check_pair(student: torch.Tensor, target: torch.Tensor, name: str = "distillation") -> None:
    if not isinstance(student, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: expected tensors, got {type(student).__name__} and {type(target).__name__}")
    if student.dim() != 3 or target.dim() != 3:
        raise ValueError(f"{name}: expected student and target shaped [B, T, D], got {tuple(student.shape)} "
                         f"and {tuple(target.shape)}")
    if student.shape[0] != target.shape[0]:
        raise ValueError(f"{name}: batch sizes differ: student {student.shape[0]}, target {target.shape[0]}")
    if student.shape[2] != target.shape[2]:
        raise ValueError(f"{name}: feature sizes differ: student {student.shape[2]}, target {target.shape[2]} "
                         "(the codec's semantic head must output the teacher's dimension)")
    if min(student.shape[1], target.shape[1]) == 0:
        raise ValueError(f"{name}: no frames to compare (student {student.shape[1]}, target {target.shape[1]})")


def _crop(student: torch.Tensor, target: torch.Tensor, lengths: Optional[torch.Tensor]):
    """Both cut to ``n = min(T, T')`` frames in fp32, target detached; with ``lengths`` also
    a mask ``[B, n]`` of the valid frames (None without)."""
    n = min(student.shape[1], target.shape[1])  # in fp32, also under autocast
    s, t = student[:, :n].float(), target[:, :n].detach().to(device=student.device, dtype=torch.float32)
    if lengths is None:
        return s, t, None
    lengths = torch.as_tensor(lengths, device=student.device).long().flatten()
    if lengths.shape[0] != student.shape[0]:
        raise ValueError(f"distillation: got {lengths.shape[0]} lengths for a batch of {student.shape[0]}")
    if bool((lengths < 1).any()):
        raise ValueError(f"distillation: lengths must be >= 1 frame, got {lengths.tolist()}")
    mask = torch.arange(n, device=student.device)[None] < lengths[:, None]
    return s, t, mask


def d_axis_loss(student: torch.Tensor, target: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SpeechTokenizer's ``d_axis`` loss: ``-mean(log sigmoid(cos_t(student[..., d], target[..., d])))``.

    Args:
        student: ``[B, T, D]`` (an RVQ layer through the semantic head).
        target: ``[B, T', D]`` teacher features (detached here).
        lengths: optional valid frames per item ``[B]``; frames past them are left out of the cosines.

    Returns a scalar in ``(0, ~1.31]``; its minimum, ``log(1 + e^-1) ~ 0.3133``, is reached when every
    channel's time series of the student is a positive multiple of the teacher's.
    """
    _check_pair(student, target, "d_axis_loss")
    s, t, mask = _crop(student, target, lengths)
    if mask is not None:  # zero frames add nothing to the dot products and norms along time
        m = mask[..., None].to(s.dtype)
        s, t = s * m, t * m
    cos = F.cosine_similarity(s, t, dim=1)  # [B, D]
    return -F.logsigmoid(cos).mean()


def t_axis_loss(student: torch.Tensor, target: torch.Tensor, lambda_sim: float = 1.0,
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SpeechTokenizer's ``t_axis`` loss: ``L1(student, target) + lambda_sim * -mean(log sigmoid(cos_d))``,
    the cosine taken over channels for each frame.

    Shapes as :func:`d_axis_loss`. Minimum ``lambda_sim * log(1 + e^-1)`` when student equals target.
    """
    _check_pair(student, target, "t_axis_loss")
    s, t, mask = _crop(student, target, lengths)
    l1 = (s - t).abs()                                      # [B, n, D]
    sim = -F.logsigmoid(F.cosine_similarity(s, t, dim=-1))  # [B, n]
    if mask is None:
        return l1.mean() + lambda_sim * sim.mean()
    m = mask.to(s.dtype)
    frames = m.sum()
    return (l1 * m[..., None]).sum() / (frames * s.shape[-1]) + lambda_sim * (sim * m).sum() / frames


def distillation_loss(student: torch.Tensor, target: torch.Tensor, kind: str = "d_axis", lambda_sim: float = 1.0,
                      lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`d_axis_loss` or :func:`t_axis_loss` by name."""
    if kind == "d_axis":
        return d_axis_loss(student, target, lengths)
    if kind == "t_axis":
        return t_axis_loss(student, target, lambda_sim, lengths)
    raise ConfigError(f"unknown distillation loss {kind!r}; known: {', '.join(KINDS)}")


_TEACHER_KEYS = ("layer", "kind", "weight", "lambda_sim")


class DistillationLoss(nn.Module):
    """Distillation from one or more teachers, each routed to an RVQ layer.

    Args:
        teachers: ``{name: {layer, kind, weight, lambda_sim}}`` (every key optional: layer 0, the
            default ``kind`` / ``lambda_sim``, weight 1), or a list of names (all on layer 0), or one name.
            Names are free; :mod:`audiocodec.semantic` uses ``speech`` (HuBERT / wav2vec2) and ``text``
            (BERT). DM-Codec's ``--lock hubert --layer k``: ``{speech: {layer: 0}, text: {layer: k}}``.
        kind: default loss, ``d_axis`` or ``t_axis``.
        lambda_sim: default weight of the cosine term of ``t_axis``.
        combine: ``mean`` (sum of weighted losses / sum of weights) or ``sum``.
        preset: a name from :data:`PRESETS`; the other arguments given override it.

    ``forward(student, targets, lengths=None)``: ``student`` and ``targets`` map each teacher name to
    ``[B, T, D]`` / ``[B, T', D]`` (see :func:`~audiocodec.semantic.model.semantic_forward`, whose
    ``routes`` are :attr:`routes`); ``lengths`` optionally maps names to valid target frames ``[B]``.
    Returns :class:`DistillationOutput`.
    """

    def __init__(self, teachers: Union[Mapping[str, Any], Sequence[str], str, None] = None, kind: Optional[str] = None,
                 lambda_sim: Optional[float] = None, combine: Optional[str] = None, preset: Optional[str] = None):
        super().__init__()
        base: dict = {"teachers": {"speech": {}}, "kind": "d_axis", "lambda_sim": 1.0, "combine": "mean"}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown distillation preset {preset!r}; known: {', '.join(PRESETS)}")
            base.update(copy.deepcopy(PRESETS[preset]))
        for key, value in (("teachers", teachers), ("kind", kind), ("lambda_sim", lambda_sim), ("combine", combine)):
            if value is not None:
                base[key] = value
        if base["kind"] not in KINDS:
            raise ConfigError(f"distillation.kind: unknown {base['kind']!r}; known: {', '.join(KINDS)}")
        if base["combine"] not in ("mean", "sum"):
            raise ConfigError(f"distillation.combine must be 'mean' or 'sum', got {base['combine']!r}")
        self.kind, self.lambda_sim, self.combine = base["kind"], float(base["lambda_sim"]), base["combine"]
        self.teachers = self._parse(base["teachers"])

    def _parse(self, spec) -> dict:
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, Sequence):
            items = [(name, {}) for name in spec]
        else:
            raise ConfigError(f"distillation.teachers: expected a mapping or a list of names, got {spec!r}")
        if not items:
            raise ConfigError("distillation.teachers is empty: name at least one teacher (e.g. speech)")
        out = {}
        for name, cfg in items:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"distillation.teachers: a teacher name must be a non-empty string, got {name!r}")
            cfg = dict(cfg or {})
            unknown = [k for k in cfg if k not in _TEACHER_KEYS]
            if unknown:
                raise ConfigError(f"distillation.teachers.{name}: unknown key(s) {', '.join(unknown)}; "
                                  f"allowed: {', '.join(_TEACHER_KEYS)}")
            layer = cfg.get("layer", 0)
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ConfigError(f"distillation.teachers.{name}.layer must be an RVQ layer index >= 0, got {layer!r}")
            kind = cfg.get("kind", self.kind)
            if kind not in KINDS:
                raise ConfigError(f"distillation.teachers.{name}.kind: unknown {kind!r}; known: {', '.join(KINDS)}")
            weight = cfg.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"distillation.teachers.{name}.weight must be a number >= 0, got {weight!r}")
            out[name] = {"layer": int(layer), "kind": kind, "weight": float(weight),
                         "lambda_sim": float(cfg.get("lambda_sim", self.lambda_sim))}
        if self.combine == "mean" and sum(t["weight"] for t in out.values()) <= 0:
            raise ConfigError("distillation: the teacher weights sum to 0")
        return out

    @property
    def routes(self) -> dict:
        """``{teacher: RVQ layer}``, for :func:`~audiocodec.semantic.model.semantic_forward`."""
        return {name: t["layer"] for name, t in self.teachers.items()}

    def forward(self, student: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                lengths: Optional[Mapping[str, torch.Tensor]] = None) -> DistillationOutput:
        missing = [n for n in self.teachers if n not in targets]
        if missing:
            raise KeyError(f"distillation: no target features for teacher(s) {', '.join(missing)}; "
                           f"got {', '.join(targets) or 'none'}")
        missing = [n for n in self.teachers if n not in student]
        if missing:
            raise KeyError(f"distillation: no student features for teacher(s) {', '.join(missing)} "
                           "(pass routes=loss.routes to semantic_forward)")
        total, weights, terms = None, 0.0, {}
        for name, t in self.teachers.items():
            target = targets[name]
            target = getattr(target, "features", target)  # a TeacherOutput
            value = distillation_loss(student[name], target, t["kind"], t["lambda_sim"],
                                      None if lengths is None else lengths.get(name))
            terms[f"distillation/{name}"] = value.detach()
            contrib = t["weight"] * value
            total = contrib if total is None else total + contrib
            weights += t["weight"]
        if self.combine == "mean":
            total = total / weights
        return DistillationOutput(total, terms)

    def extra_repr(self) -> str:
        return f"teachers={self.teachers}, combine={self.combine!r}"
