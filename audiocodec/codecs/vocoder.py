"""The Vocos mel vocoder: log-mel spectrogram -> waveform, from the same backbone and ISTFT head."""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torchaudio
from torch import nn

from ..config import merge
from ..errors import ConfigError
from ..nn.vocos import ISTFTHead, VocosBackbone


class MelFeatures(nn.Module):
    """``wav [B, L] -> log-mel [B, n_mels, T]`` (torchaudio, magnitude mel, ``log(clip(x, 1e-7))``)."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100,
                 padding: str = "center"):
        super().__init__()
        if padding not in ("center", "same"):
            raise ConfigError(f"mel padding must be 'center' or 'same', got {padding!r}")
        self.padding = padding
        self.mel_spec = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                                                             hop_length=hop_length, n_mels=n_mels,
                                                             center=padding == "center", power=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            pad = self.mel_spec.win_length - self.mel_spec.hop_length
            wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2), mode="reflect")
        with torch.autocast(wav.device.type, enabled=False):
            return torch.log(self.mel_spec(wav.float()).clip(min=1e-7))


class MelVocoder(nn.Module):
    """Vocos: ``mel [B, n_mels, T] -> wav [B, 1, L]``; :meth:`mel` computes the matching features."""

    def __init__(self, features: dict, backbone: dict, head: dict, name: str = "vocoder",
                 config: Optional[dict] = None):
        super().__init__()
        self.feature_extractor = MelFeatures(**features)
        self.backbone = VocosBackbone(**backbone)
        self.head = ISTFTHead(**head)
        self.sample_rate = self.feature_extractor.mel_spec.sample_rate
        self.name, self.config = name, config or {}

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, L]`` or ``[B, 1, L]`` at ``sample_rate`` -> ``[B, n_mels, T]``."""
        if wav.dim() == 3:
            wav = wav.squeeze(1)
        return self.feature_extractor(wav)

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(mel))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Resynthesise ``wav`` through its mel spectrogram."""
        return self.decode(self.mel(wav))


VOCODER_CONFIGS = {
    "vocos-mel-24k": dict(
        features=dict(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center"),
        backbone=dict(input_channels=100, dim=512, intermediate_dim=1536, num_layers=8),
        head=dict(dim=512, n_fft=1024, hop_length=256, padding="center"),
    ),
}


def build_vocoder(name: str = "vocos-mel-24k", **overrides) -> MelVocoder:
    """A mel vocoder with random weights from a named config (``vocos-mel-24k``)."""
    if name not in VOCODER_CONFIGS:
        raise ConfigError(f"unknown vocoder {name!r}; known: {', '.join(sorted(VOCODER_CONFIGS))}")
    config = merge(VOCODER_CONFIGS[name], overrides) if overrides else copy.deepcopy(VOCODER_CONFIGS[name])
    return MelVocoder(**config, name=name, config=dict(config, name=name))
