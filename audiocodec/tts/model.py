"""The TTS language model: a decoder-only transformer over text and speech tokens, and its file format.

:class:`TTSModel` owns everything needed to turn text into codec tokens: the LM
(:class:`~audiocodec.lm.TransformerLM`, one token stream per codebook), the vocabulary layout
(:class:`~audiocodec.tts.layout.TTSVocab`), the sequence layout (plain or bistream,
:class:`~audiocodec.tts.layout.SequenceLayout`), the text frontend settings (tokenizer state and language),
and which codec its speech tokens belong to (name, fingerprint, rates), so a model is never paired
with the wrong codec.

Saved as one safetensors file whose metadata holds that config (``save_tts`` / ``load_tts``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..lm import TransformerLM
from ..weights import load_model, save_model
from .layout import IGNORE, SequenceLayout, TTSVocab

FORMAT = "audiocodec-tts"


class TTSModel(nn.Module):
    """Args:
        vocab: ``{"text_size", "speech_size", "num_codebooks"}`` (a :class:`TTSVocab`).
        lm: :class:`~audiocodec.lm.TransformerLM` arguments except ``vocab_size`` / ``num_codebooks``.
        text: the text frontend: ``{"tokenizer": <tokenizer dict>, "language": "en", "normalize": true}``.
        codec: the codec of the speech tokens: ``{"model_id", "fingerprint", "sample_rate", "frame_rate",
            "cardinality"}`` and optionally ``"source"`` (where to load it from, e.g. an embedded codec name).
        layout: ``{"type": "plain"}`` (default) or ``{"type": "bistream", "text_chunk": 5, "speech_chunk": 15}``
            (single-codebook codecs only); stored in the config only when not plain, so plain models are
            saved as before.
    """

    def __init__(self, vocab: Mapping, lm: Mapping, text: Mapping, codec: Mapping, layout: Optional[Mapping] = None):
        super().__init__()
        self.vocab = TTSVocab(**vocab)
        self.layout = layout
        if int(codec.get("cardinality", self.vocab.speech_size)) != self.vocab.speech_size:
            raise ConfigError(f"codec cardinality {codec.get('cardinality')} != vocab speech_size {self.vocab.speech_size}")
        lm = dict(lm)
        for key in ("vocab_size", "num_codebooks"):
            if key in lm:
                raise ConfigError(f"tts model: lm.{key} is set from the vocabulary, leave it out")
        self.lm = TransformerLM(vocab_size=self.vocab.size, num_codebooks=self.vocab.num_codebooks, **lm)
        self.lm_config, self.text_config, self.codec_info = lm, dict(text), dict(codec)

    @property
    def layout(self) -> SequenceLayout:
        return self._layout

    @layout.setter
    def layout(self, value: Optional[Mapping]) -> None:
        """Set from a mapping (or a :class:`SequenceLayout`); ConfigError for a bad one, or bistream with
        several codebooks."""
        layout = SequenceLayout.from_config(value)
        layout.check_codebooks(self.vocab.num_codebooks)
        self._layout = layout

    @property
    def config(self) -> dict:
        config = {"vocab": self.vocab.to_dict(), "lm": self.lm_config, "text": self.text_config,
                  "codec": self.codec_info}
        if self.layout.bistream:
            config["layout"] = self.layout.to_dict()
        return config

    def forward(self, inputs: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``inputs [B, K, L]`` ids (right-padded; ``padding_mask [B, L]`` True = real) -> logits ``[B, K, L, V]``."""
        return self.lm(inputs, padding_mask=padding_mask)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor,
             padding_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        """Cross-entropy on the speech tokens and EOS (``targets`` hold :data:`IGNORE` elsewhere).

        Returns ``(loss, {"accuracy": top-1 accuracy on the scored positions, "tokens": their count})``."""
        logits = self(inputs, padding_mask)
        scored = targets != IGNORE
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE)
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets) & scored
            acc = correct.sum().float() / scored.sum().clamp(min=1)
        return loss, {"accuracy": acc, "tokens": scored.sum().float()}


def save_tts(model: TTSModel, path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``model`` (weights + config) to ``path`` (a ``.safetensors`` file or a folder), atomically."""
    return save_model(model, path, FORMAT, dtype)


def load_tts(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> TTSModel:
    """Load a model written by :func:`save_tts` (a file, or a folder holding ``model.safetensors``)."""
    return load_model(path, FORMAT, TTSModel, device)
