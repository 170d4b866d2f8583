"""Intelligibility of reconstructions with a local speech recogniser: WER / CER of what an ASR model
hears in the reconstruction against what it hears in the reference (so no transcript is needed, and the
figures measure what the codec changed, not the recogniser's own errors on the reference).

The model is any ``transformers`` speech-recognition checkpoint *folder* (wav2vec2-CTC, Whisper, ...);
nothing is downloaded. Needs ``transformers`` and ``jiwer`` (``pip install audiocodec[semantic] jiwer``).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

from ..audio import resample
from ..errors import ConfigError


def normalize_words(text: str) -> str:
    """Lower case, letters / digits / apostrophes only, single spaces."""
    return " ".join("".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split())


class ASRScorer:
    """``score_pair(ref, ref_sr, hyp, hyp_sr) -> {"wer", "cer"}`` with a local ASR model."""

    names = ("wer", "cer")
    name = "asr"

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 sample_rate: int = 16000):
        if not os.path.isdir(path):
            raise ConfigError(f"--asr-model {path}: expected a local transformers model folder")
        try:
            from transformers import pipeline
            import jiwer  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"WER/CER need 'transformers' and 'jiwer' ({e}); pip install transformers jiwer") from e
        self.pipe = pipeline("automatic-speech-recognition", model=str(path), device=torch.device(device))
        self.sample_rate = sample_rate

    def transcribe(self, wav, sample_rate: int) -> str:
        x = torch.as_tensor(np.asarray(wav), dtype=torch.float32).reshape(-1)
        if sample_rate != self.sample_rate:
            x = resample(x[None], sample_rate, self.sample_rate)[0]
        return self.pipe({"raw": x.numpy(), "sampling_rate": self.sample_rate})["text"]

    def score_pair(self, ref, ref_sr: int, hyp, hyp_sr: int) -> dict:
        import jiwer
        truth = normalize_words(self.transcribe(ref, ref_sr)) or "<silence>"
        heard = normalize_words(self.transcribe(hyp, hyp_sr)) or "<silence>"
        return {"wer": float(jiwer.wer(truth, heard)), "cer": float(jiwer.cer(truth, heard))}
