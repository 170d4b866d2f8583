"""Reconstruction losses on spectrograms and waveforms, always computed in fp32 (autocast off).

* :class:`MelLoss`: multi-resolution log-mel L1; the default is WavTokenizer's / Vocos'
  (``n_fft`` 1024, hop 256, 100 mels at 24 kHz, ``ln(clamp(mel, 1e-7))``, centred periodic Hann STFT,
  magnitude (power 1), HTK mel scale without filter normalisation, as ``torchaudio.MelSpectrogram``).
* :class:`MultiScaleSTFTLoss`: L1 of magnitudes plus an L1 / L2 distance of log magnitudes at several
  STFT sizes, linear or mel (DAC's ``MultiScaleSTFTLoss`` by default; EnCodec's multi-scale mel
  "msspec" with ``n_mels=64, log_distance="l2", eps_mode="add", normalize=True``).
* :func:`waveform_l1`: mean absolute difference of the waveforms.

Each resolution ``i`` contributes ``weight_i * (mag_weight * L1(S_fake, S_real) +
log_weight * D(log S_fake, log S_real))``; with ``normalize`` the sum is divided by
``sum_i weight_i * (mag_weight + log_weight)``.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import call_with_config
from ..errors import ConfigError


class Spectrogram(nn.Module):
    """fp32 magnitude spectrogram, optionally on a mel scale: ``[B, C, L]`` / ``[B, L]`` ->
    ``[B * C, n_mels or n_fft // 2 + 1, T]``.

    Args:
        n_fft, hop_length, win_length: STFT (``hop`` defaults to ``n_fft // 4``, ``win`` to ``n_fft``).
        n_mels: mel bins, or ``None`` for linear frequencies.
        sample_rate, f_min, f_max: of the mel filterbank (``f_max`` defaults to ``sample_rate / 2``).
        power: exponent of the magnitude (1: magnitude, 2: power).
        center: reflect-pad ``n_fft // 2`` each side (``T = L // hop + 1``).
        normalized: divide the STFT by ``sqrt(sum(window ** 2))``.
        mel_norm, mel_scale: of ``torchaudio.functional.melscale_fbanks`` (``None`` / ``"slaney"``;
            ``"htk"`` / ``"slaney"``).
    """

    def __init__(self, n_fft: int, hop_length: Optional[int] = None, win_length: Optional[int] = None,
                 n_mels: Optional[int] = None, sample_rate: int = 24000, f_min: float = 0.0,
                 f_max: Optional[float] = None, power: float = 1.0, center: bool = True, normalized: bool = False,
                 mel_norm: Optional[str] = None, mel_scale: str = "htk"):
        super().__init__()
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length or self.n_fft // 4)
        self.win_length = int(win_length or self.n_fft)
        self.power, self.center, self.normalized = power, center, normalized
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        fb = None
        if n_mels:
            import torchaudio
            with warnings.catch_warnings():  # small FFTs leave some mel filters empty; that is expected
                warnings.simplefilter("ignore")
                fb = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, float(f_min),
                                                           float(f_max if f_max is not None else sample_rate / 2),
                                                           int(n_mels), int(sample_rate), mel_norm, mel_scale)
        self.register_buffer("mel_fb", fb, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.reshape(-1, wav.shape[-1])
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            window = self.window.to(device=x.device, dtype=torch.float32)
            spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, window, center=self.center,
                              pad_mode="reflect", return_complex=True)
            if self.normalized:
                spec = spec / window.pow(2).sum().sqrt()
            spec = spec.abs()
            if self.power != 1:
                spec = spec.pow(self.power)
            if self.mel_fb is not None:
                spec = torch.matmul(spec.transpose(-1, -2), self.mel_fb.to(spec)).transpose(-1, -2)
        return spec


class SpectralLoss(nn.Module):
    """Distance between the spectrograms of two waveforms at several resolutions.

    Args:
        resolutions: one mapping per resolution, the arguments of :class:`Spectrogram` plus an
            optional ``weight`` (default 1).
        sample_rate: default ``sample_rate`` of the resolutions.
        mag_weight: weight of ``L1(S_fake, S_real)`` on linear magnitudes.
        log_weight: weight of ``D(log S_fake, log S_real)``.
        log_distance: ``"l1"`` or ``"l2"`` (mean squared error).
        eps, eps_mode: ``log(clamp(S, eps))`` (``"clamp"``) or ``log(S + eps)`` (``"add"``).
        pow: the log term is ``log(f(S, eps) ** pow)`` (DAC: 2).
        log10: base-10 logarithm instead of natural.
        normalize: divide by the sum of the weights.

    ``forward(fake [B, C, L], real [B, C, L]) -> scalar`` (fp32; no gradient flows into ``real``).
    """

    def __init__(self, resolutions: Sequence[Mapping[str, Any]], sample_rate: int = 24000, mag_weight: float = 0.0,
                 log_weight: float = 1.0, log_distance: str = "l1", eps: float = 1e-7, eps_mode: str = "clamp",
                 pow: float = 1.0, log10: bool = False, normalize: bool = False):
        super().__init__()
        if not len(resolutions):
            raise ConfigError("spectral loss: at least one resolution is needed")
        if log_distance not in ("l1", "l2"):
            raise ConfigError(f"spectral loss: log_distance must be 'l1' or 'l2', got {log_distance!r}")
        if eps_mode not in ("clamp", "add"):
            raise ConfigError(f"spectral loss: eps_mode must be 'clamp' or 'add', got {eps_mode!r}")
        specs, weights = [], []
        for i, res in enumerate(resolutions):
            res = dict(res)
            weights.append(float(res.pop("weight", 1.0)))
            res.setdefault("sample_rate", sample_rate)
            specs.append(call_with_config(Spectrogram, res, f"resolutions[{i}]"))
        self.specs = nn.ModuleList(specs)
        self.weights = weights
        self.mag_weight, self.log_weight, self.log_distance = float(mag_weight), float(log_weight), log_distance
        self.eps, self.eps_mode, self.pow, self.log10, self.normalize = eps, eps_mode, pow, log10, normalize

    def _log(self, s: torch.Tensor) -> torch.Tensor:
        s = s.clamp(min=self.eps) if self.eps_mode == "clamp" else s + self.eps
        out = torch.log10(s) if self.log10 else torch.log(s)
        return out * self.pow if self.pow != 1 else out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.shape != real.shape:
            raise ValueError(f"spectral loss: fake {tuple(fake.shape)} and real {tuple(real.shape)} differ")
        with torch.autocast(device_type=fake.device.type, enabled=False):
            both = torch.cat([fake.float(), real.detach().float()], dim=0)
            total = fake.new_zeros((), dtype=torch.float32)
            for spec, w in zip(self.specs, self.weights):
                s = spec(both)
                s = s.reshape(2, -1, *s.shape[1:])
                s_fake, s_real = s[0], s[1]
                term = s_fake.new_zeros(())
                if self.mag_weight:
                    term = term + self.mag_weight * F.l1_loss(s_fake, s_real)
                if self.log_weight:
                    lf, lr = self._log(s_fake), self._log(s_real)
                    d = F.l1_loss(lf, lr) if self.log_distance == "l1" else F.mse_loss(lf, lr)
                    term = term + self.log_weight * d
                total = total + w * term
            if self.normalize:
                total = total / (sum(self.weights) * (self.mag_weight + self.log_weight))
        return total


class MelLoss(SpectralLoss):
    """Multi-resolution log-mel L1 (default: WavTokenizer's single resolution).

    Args:
        resolutions: mappings with ``n_fft``, ``hop_length``, ``n_mels`` (and optionally
            ``win_length``, ``f_min``, ``f_max``, ``weight``, ...); default
            ``[{"n_fft": 1024, "hop_length": 256, "n_mels": 100}]``.
        sample_rate: 24000.
        other arguments: as :class:`SpectralLoss` (defaults: ``ln(clamp(mel, 1e-7))``, L1, no
            magnitude term).
    """

    def __init__(self, resolutions: Optional[Sequence[Mapping[str, Any]]] = None, sample_rate: int = 24000,
                 mag_weight: float = 0.0, log_weight: float = 1.0, log_distance: str = "l1", eps: float = 1e-7,
                 eps_mode: str = "clamp", pow: float = 1.0, log10: bool = False, normalize: bool = False):
        if resolutions is None:
            resolutions = [{"n_fft": 1024, "hop_length": 256, "n_mels": 100}]
        for i, r in enumerate(resolutions):
            if not isinstance(r, Mapping) or not r.get("n_mels"):
                raise ConfigError(f"mel loss: resolutions[{i}] needs n_mels, got {r!r}")
        super().__init__(resolutions, sample_rate, mag_weight, log_weight, log_distance, eps, eps_mode, pow, log10,
                         normalize)


class MultiScaleSTFTLoss(SpectralLoss):
    """Multi-scale STFT loss: one resolution per ``n_fft`` with hop ``n_fft * hop_ratio``.

    Defaults are DAC's (``n_ffts`` 2048, 512; ``L1(|S|) + L1(log10(clamp(|S|, 1e-5) ** 2))``).
    With ``n_mels`` every scale is a mel spectrogram (EnCodec's msspec: ``n_ffts`` 64..1024,
    ``n_mels=64``, ``f_min=64``, ``log_distance="l2"``, ``eps=1e-5``, ``eps_mode="add"``, ``pow=1``,
    ``normalize=True``, ``normalized=True``).
    """

    def __init__(self, n_ffts: Sequence[int] = (2048, 512), hop_ratio: float = 0.25, n_mels: Optional[int] = None,
                 sample_rate: int = 24000, f_min: float = 0.0, f_max: Optional[float] = None,
                 normalized: bool = False, mag_weight: float = 1.0, log_weight: float = 1.0,
                 log_distance: str = "l1", eps: float = 1e-5, eps_mode: str = "clamp", pow: float = 2.0,
                 log10: bool = True, normalize: bool = False):
        resolutions = [dict(n_fft=n, hop_length=max(1, int(n * hop_ratio)), n_mels=n_mels, f_min=f_min, f_max=f_max,
                            normalized=normalized) for n in n_ffts]
        super().__init__(resolutions, sample_rate, mag_weight, log_weight, log_distance, eps, eps_mode, pow, log10,
                         normalize)


def waveform_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``mean(|fake - real|)`` in fp32 (no gradient into ``real``)."""
    with torch.autocast(device_type=fake.device.type, enabled=False):
        return F.l1_loss(fake.float(), real.detach().float())


__all__ = ["Spectrogram", "SpectralLoss", "MelLoss", "MultiScaleSTFTLoss", "waveform_l1"]
