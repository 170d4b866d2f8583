"""The token layout of the TTS language model (TouchTTS / CosyVoice 2 style, decoder-only).

One vocabulary holds four special tokens, the text tokens and the codec's speech tokens::

    0 pad | 1 bos | 2 eos | 3 audio_bos | 4 .. 4+V_text-1 text | 4+V_text .. 4+V_text+C-1 speech

A training sequence is ``[bos, text..., audio_bos, speech..., eos]``; the loss covers the speech tokens and
the final EOS (the model is never asked to predict text). Voice cloning puts the reference transcript in
front of the target text and the reference speech after ``audio_bos``, then lets the model continue:
``[bos, ref_text + text, audio_bos, ref_speech...]``.

Single-codebook codecs (WavTokenizer) use one token stream. Multi-codebook (RVQ) codecs need a codebook
pattern (:mod:`audiocodec.lm.patterns`); :class:`TTSVocab` refuses them with a clear error until then.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from ..errors import ConfigError

PAD, BOS, EOS, AUDIO_BOS = 0, 1, 2, 3
NUM_SPECIAL = 4
IGNORE = -100  # cross-entropy ignore index


@dataclass(frozen=True)
class TTSVocab:
    """Offsets of the text and speech token ranges in the LM vocabulary."""
    text_size: int
    speech_size: int

    def __post_init__(self):
        if self.text_size < 1 or self.speech_size < 1:
            raise ConfigError(f"TTSVocab needs positive sizes, got text {self.text_size}, speech {self.speech_size}")

    @property
    def text_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def speech_offset(self) -> int:
        return NUM_SPECIAL + self.text_size

    @property
    def size(self) -> int:
        return NUM_SPECIAL + self.text_size + self.speech_size

    def text_ids(self, text_tokens: Sequence[int]) -> torch.Tensor:
        t = torch.as_tensor(list(text_tokens), dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.text_size):
            raise ValueError(f"text token out of range [0, {self.text_size}): {t.tolist()[:10]}")
        return t + self.text_offset

    def speech_ids(self, speech_tokens: torch.Tensor) -> torch.Tensor:
        """Codec tokens ``[T]`` (or ``[1, T]``) -> LM ids ``[T]``."""
        s = torch.as_tensor(speech_tokens, dtype=torch.long)
        if s.dim() == 2:
            if s.shape[0] != 1:
                raise ConfigError(f"the TTS LM takes single-codebook tokens; got {s.shape[0]} codebooks "
                                  "(RVQ codecs need a codebook pattern, not supported yet)")
            s = s[0]
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.speech_size):
            raise ValueError(f"speech token out of range [0, {self.speech_size})")
        return s + self.speech_offset

    def to_speech(self, ids: torch.Tensor) -> torch.Tensor:
        """LM ids -> codec tokens; ids outside the speech range raise ValueError."""
        s = ids.long() - self.speech_offset
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.speech_size):
            raise ValueError("generated ids outside the speech range: the model emitted a text or special token")
        return s

    def speech_logit_mask(self, device=None) -> torch.Tensor:
        """``[size]`` bool: the ids the model may emit after ``audio_bos`` (speech tokens and EOS)."""
        allowed = torch.zeros(self.size, dtype=torch.bool, device=device)
        allowed[self.speech_offset:] = True
        allowed[EOS] = True
        return allowed

    def to_dict(self) -> dict:
        return asdict(self)


def training_sequence(vocab: TTSVocab, text_tokens: Sequence[int], speech_tokens: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [L-1], targets [L-1])`` for ``[bos, text, audio_bos, speech, eos]`` of length L: the model
    reads ``inputs`` and predicts ``targets`` (the sequence shifted by one), which are :data:`IGNORE`
    except for the speech tokens and the final EOS."""
    text = vocab.text_ids(text_tokens)
    speech = vocab.speech_ids(speech_tokens)
    seq = torch.cat([torch.tensor([BOS]), text, torch.tensor([AUDIO_BOS]), speech, torch.tensor([EOS])])
    targets = seq[1:].clone()
    targets[: len(text) + 1] = IGNORE    # the text and audio_bos are given, not predicted
    return seq[:-1], targets


def prompt_sequence(vocab: TTSVocab, text_tokens: Sequence[int],
                    speech_prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[bos, text, audio_bos, speech_prefix...]`` (ids ``[L]``): the model continues with speech."""
    parts = [torch.tensor([BOS]), vocab.text_ids(text_tokens), torch.tensor([AUDIO_BOS])]
    if speech_prefix is not None and speech_prefix.numel():
        parts.append(vocab.speech_ids(speech_prefix))
    return torch.cat(parts)


def pad_batch(sequences: Sequence[torch.Tensor], value: int, left: bool = False) -> torch.Tensor:
    """Stack 1-d sequences into ``[B, max_len]``, padded with ``value`` on the right (or left)."""
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        if left:
            out[i, longest - len(s):] = s
        else:
            out[i, : len(s)] = s
    return out
