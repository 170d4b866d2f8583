"""The song language model (SongGen): a codebook LM that cross-attends to lyrics, a description and a
reference voice, and its file format.

:class:`SongModel` owns the conditioners (:class:`~audiocodec.song.conditioners.SongConditioner`), the
decoder (:class:`~audiocodec.lm.TransformerLM` with one embedding table and one head per row, and
cross-attention), the mode's token layout (:class:`~audiocodec.song.layout.SongLayout`), the loss
settings, and the record of its codec (name, fingerprint, rates), so a model is never paired with the
wrong codec. In ``mixed_pro`` mode it also has auxiliary vocal heads reading the decoder's final hidden
states (trained with weight ``vocal_weight``, unused at inference).

Saved as one safetensors file whose metadata holds the config (:func:`save_song` / :func:`load_song`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..lm import TransformerLM
from ..weights import load_model, save_model
from ..lm.patterns import codebook_cross_entropy
from .conditioners import Conditions, SongConditioner
from .layout import SongLayout, check_mode

FORMAT = "audiocodec-song"
_CODEC_KEYS = ("num_codebooks", "cardinality", "frame_rate", "sample_rate")
_LM_RESERVED = ("vocab_size", "num_codebooks", "cross_attention", "memory_dim")


class SongModel(nn.Module):
    """Args:
        mode: one of :data:`~audiocodec.song.layout.MODES`.
        codec: the codec of the tokens: ``{"num_codebooks", "cardinality", "frame_rate", "sample_rate"}`` and
            optionally ``"model_id"``, ``"fingerprint"``, ``"source"`` (where to load it from).
        lm: :class:`~audiocodec.lm.TransformerLM` arguments except ``vocab_size``, ``num_codebooks``,
            ``cross_attention``, ``memory_dim`` (set here).
        conditioners: ``{"dim", "lyrics", "description", "voice", "dropout"}``
            (:class:`~audiocodec.song.conditioners.SongConditioner`; ``dim`` defaults to ``lm.dim``).
        loss: ``{"codebook_weights": [R or K floats] or null, "vocal_weight": 0.1}``.
        window_frames: the longest sequence (in frames) the model was trained on; generation of longer
            songs continues window by window.
    """

    def __init__(self, mode: str, codec: Mapping, lm: Mapping, conditioners: Mapping,
                 loss: Optional[Mapping] = None, window_frames: int = 1500):
        super().__init__()
        check_mode(mode)
        missing = [k for k in _CODEC_KEYS if k not in codec]
        if missing:
            raise ConfigError(f"song model: codec info lacks {missing}")
        self.codec_info = dict(codec)
        self.layout = SongLayout(mode, int(codec["num_codebooks"]), int(codec["cardinality"]))
        lm = dict(lm)
        for key in _LM_RESERVED:
            if key in lm:
                raise ConfigError(f"song model: lm.{key} is set by the model, leave it out")
        if "dim" not in lm:
            raise ConfigError("song model: lm.dim is required")
        cond = dict(conditioners)
        unknown = sorted(set(cond) - {"dim", "lyrics", "description", "voice", "dropout"})
        if unknown:
            raise ConfigError(f"song model: unknown conditioners key(s) {unknown}")
        if "lyrics" not in cond:
            raise ConfigError("song model: conditioners.lyrics is required")
        cond_dim = int(cond.get("dim", lm["dim"]))
        self.conditioner = SongConditioner(cond_dim, cond["lyrics"], cond.get("description"), cond.get("voice"),
                                           self.layout.num_codebooks, self.layout.cardinality, cond.get("dropout"))
        self.lm = TransformerLM(vocab_size=self.layout.vocab_size, num_codebooks=self.layout.rows,
                                cross_attention=True, memory_dim=cond_dim, **lm)
        self.vocal_heads = None
        if mode == "mixed_pro":
            self.vocal_heads = nn.ModuleList(nn.Linear(self.lm.dim, self.layout.vocab_size, bias=False)
                                             for _ in range(self.layout.num_codebooks))
            for head in self.vocal_heads:
                nn.init.normal_(head.weight, std=lm.get("init_std", 0.02))
        self.loss_config = self._check_loss(loss)
        if not isinstance(window_frames, int) or isinstance(window_frames, bool) or window_frames < 2:
            raise ConfigError(f"song model: window_frames must be an int >= 2, got {window_frames!r}")
        self.window_frames = window_frames
        self.lm_config = lm
        frontends = self.conditioner.frontends_config()
        self.cond_config = {**cond, "dim": cond_dim, "dropout": self.conditioner.dropout_probs,
                            "lyrics": {**dict(cond["lyrics"]), **frontends["lyrics"]}}
        if "description" in frontends:
            self.cond_config["description"] = {**dict(cond.get("description") or {}), **frontends["description"]}

    def _check_loss(self, loss: Optional[Mapping]) -> dict:
        loss = dict(loss or {})
        unknown = sorted(set(loss) - {"codebook_weights", "vocal_weight"})
        if unknown:
            raise ConfigError(f"song model: unknown loss key(s) {unknown}; known: codebook_weights, vocal_weight")
        weights = loss.get("codebook_weights")
        if weights is not None:
            k, r = self.layout.num_codebooks, self.layout.rows
            if not isinstance(weights, Sequence) or len(weights) not in (k, r) or \
                    any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights) or \
                    sum(weights) <= 0:
                raise ConfigError(f"loss.codebook_weights must be {k} (one per codebook) or {r} (one per row) "
                                  f"non-negative numbers with a positive sum, got {weights!r}")
            weights = [float(w) for w in weights]
        vocal_weight = loss.get("vocal_weight", 0.1)
        if isinstance(vocal_weight, bool) or not isinstance(vocal_weight, (int, float)) or vocal_weight < 0:
            raise ConfigError(f"loss.vocal_weight must be a number >= 0, got {vocal_weight!r}")
        return {"codebook_weights": weights, "vocal_weight": float(vocal_weight)}

    # -- properties ------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.layout.mode

    @property
    def frame_rate(self) -> float:
        return float(self.codec_info["frame_rate"])

    @property
    def config(self) -> dict:
        return {"mode": self.mode, "codec": self.codec_info, "lm": self.lm_config, "conditioners": self.cond_config,
                "loss": self.loss_config, "window_frames": self.window_frames}

    def row_weights(self, device=None) -> torch.Tensor:
        """``[R]``: the weight of each row's cross-entropy (codebook weights repeat for both tracks)."""
        weights = self.loss_config["codebook_weights"]
        if weights is None:
            return torch.ones(self.layout.rows, device=device)
        w = torch.tensor(weights, device=device)
        return w.repeat(self.layout.rows // len(w)) if len(w) != self.layout.rows else w

    # -- forward / loss --------------------------------------------------------------------------------
    def condition(self, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
        """``(memory [B, M, D_c], memory_mask [B, M])`` of ``cond``."""
        return self.conditioner(cond)

    def forward(self, inputs: torch.Tensor, cond: Conditions, padding_mask: Optional[torch.Tensor] = None,
                return_hidden: bool = False):
        """``inputs [B, R, L]`` (decoder inputs) -> ``logits [B, R, L, V]`` (and the final-normed hidden
        states ``[B, L, D]`` with ``return_hidden``)."""
        memory, memory_mask = self.condition(cond)
        return self.lm(inputs, padding_mask=padding_mask, memory=memory, memory_mask=memory_mask,
                       return_hidden=return_hidden)

    def vocal_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``mixed_pro``: final hidden states ``[B, L, D]`` -> auxiliary vocal logits ``[B, K, L, V]``."""
        if self.vocal_heads is None:
            raise ConfigError(f"mode {self.mode!r} has no auxiliary vocal heads (only mixed_pro)")
        return torch.stack([head(hidden) for head in self.vocal_heads], dim=1)

    def loss(self, batch: Mapping[str, torch.Tensor], cond: Conditions) -> tuple[torch.Tensor, dict]:
        """The weighted per-row cross-entropy of SongGen's layout.

        ``batch``: ``inputs``, ``labels``, ``loss_mask`` ``[B, R, L]`` (and in ``mixed_pro`` mode
        ``vocal_labels``, ``vocal_mask`` ``[B, K, L]``), as made by
        :meth:`~audiocodec.song.layout.SongLayout.training_sequences` and padded with EOS. In training
        mode the conditions are dropped first (condition dropout). Returns ``(loss, stats)`` with
        ``accuracy`` (top-1 on the scored cells), ``tokens`` and, in ``mixed_pro``, ``vocal_loss``.
        """
        inputs, labels, mask = batch["inputs"], batch["labels"], batch["loss_mask"]
        if not (inputs.shape == labels.shape == mask.shape) or inputs.dim() != 3 or inputs.shape[1] != self.layout.rows:
            raise ValueError(f"expected inputs, labels, loss_mask [B, R={self.layout.rows}, L] of one shape, got "
                             f"{tuple(inputs.shape)}, {tuple(labels.shape)}, {tuple(mask.shape)}")
        if cond.batch_size != inputs.shape[0]:
            raise ValueError(f"{cond.batch_size} conditions for a batch of {inputs.shape[0]}")
        if self.training:
            cond = self.conditioner.drop(cond)
        pro = self.vocal_heads is not None
        out = self(inputs, cond, return_hidden=pro)
        logits, hidden = out if pro else (out, None)
        _, per_row = codebook_cross_entropy(logits.permute(0, 3, 1, 2), labels, mask)
        weights = self.row_weights(per_row.device)
        loss = (per_row * weights).sum() / weights.sum()
        stats = {"per_row": per_row.detach()}
        if pro:
            if "vocal_labels" not in batch:
                raise ConfigError("mode 'mixed_pro' needs vocal_labels / vocal_mask in the batch")
            vocal = self.vocal_logits(hidden)
            vocal_loss, _ = codebook_cross_entropy(vocal.permute(0, 3, 1, 2), batch["vocal_labels"],
                                                   batch["vocal_mask"])
            loss = loss + self.loss_config["vocal_weight"] * vocal_loss
            stats["vocal_loss"] = vocal_loss.detach()
        with torch.no_grad():
            correct = (logits.argmax(-1) == labels) & mask
            stats["accuracy"] = correct.sum().float() / mask.sum().clamp(min=1)
            stats["tokens"] = mask.sum().float()
        return loss, stats


def save_song(model: SongModel, path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``model`` (weights + config) to ``path`` (a ``.safetensors`` file or a folder), atomically."""
    return save_model(model, path, FORMAT, dtype)


def load_song(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> SongModel:
    """Load a model written by :func:`save_song` (a file, or a folder holding ``model.safetensors``)."""
    return load_model(path, FORMAT, SongModel, device)
