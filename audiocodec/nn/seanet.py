"""SEANet encoder and decoder (EnCodec / WavTokenizer / SpeechTokenizer family).

Layer indices of ``self.model`` follow the EnCodec layout, so official checkpoints map onto these
modules by renaming only (see :mod:`audiocodec.codecs.interop`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .conv import build_conv1d, build_conv_transpose1d


def make_activation(name: str = "ELU", **params) -> nn.Module:
    """An activation module by its ``torch.nn`` name (ELU, LeakyReLU, GELU, SiLU, ReLU, Tanh)."""
    allowed = {"ELU", "LeakyReLU", "GELU", "SiLU", "ReLU", "Tanh", "Identity"}
    if name not in allowed:
        raise ValueError(f"unknown activation {name!r}: use one of {sorted(allowed)}")
    return getattr(nn, name)(**params)


class SLSTM(nn.Module):
    """LSTM over time on ``[B, C, T]`` with an optional skip connection.

    ``bidirectional=True`` halves the hidden size per direction so the output keeps ``C`` channels
    (SpeechTokenizer's BiLSTM).
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True, bidirectional: bool = False):
        super().__init__()
        self.skip = skip
        hidden = dimension // 2 if bidirectional else dimension
        self.lstm = nn.LSTM(dimension, hidden, num_layers, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, state=None):
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x, state)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class SEANetResnetBlock(nn.Module):
    """Residual unit: act -> conv(k, dilation) -> act -> conv(1), plus a 1x1-conv or identity shortcut."""

    def __init__(self, dim: int, kernel_sizes: Sequence[int] = (3, 1), dilations: Sequence[int] = (1, 1),
                 activation: str = "ELU", activation_params: dict | None = None, norm: str = "weight_norm",
                 causal: bool = False, pad_mode: str = "reflect", compress: int = 2, true_skip: bool = True):
        super().__init__()
        act = activation_params or {}
        hidden = dim // compress
        layers: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernel_sizes, dilations)):
            c_in = dim if i == 0 else hidden
            c_out = dim if i == len(kernel_sizes) - 1 else hidden
            layers += [make_activation(activation, **act),
                       build_conv1d(c_in, c_out, k, dilation=d, norm=norm, causal=causal, pad_mode=pad_mode)]
        self.block = nn.Sequential(*layers)
        self.shortcut = (nn.Identity() if true_skip else
                         build_conv1d(dim, dim, 1, norm=norm, causal=causal, pad_mode=pad_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    """Waveform ``[B, channels, L]`` -> latents ``[B, dimension, ceil(L / hop_length)]``.

    ``ratios`` are given decoder-first, as in EnCodec (``[8, 5, 4, 2]``); the encoder downsamples by
    them in reverse order. ``hop_length = prod(ratios)``.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: dict | None = None, norm: str = "weight_norm", kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, dilation_base: int = 2,
                 causal: bool = False, pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2,
                 lstm: int = 2, bidirectional_lstm: bool = False):
        super().__init__()
        self.channels, self.dimension = channels, dimension
        self.ratios = list(ratios)
        self.hop_length = int(torch.tensor(self.ratios).prod())
        act = activation_params or ({"alpha": 1.0} if activation == "ELU" else {})
        conv = dict(norm=norm, causal=causal, pad_mode=pad_mode)
        mult = 1
        model: list[nn.Module] = [build_conv1d(channels, mult * n_filters, kernel_size, **conv)]
        for ratio in reversed(self.ratios):
            for j in range(n_residual_layers):
                model.append(SEANetResnetBlock(mult * n_filters, (residual_kernel_size, 1), (dilation_base ** j, 1),
                                               activation, act, compress=compress, true_skip=true_skip, **conv))
            model += [make_activation(activation, **act),
                      build_conv1d(mult * n_filters, mult * n_filters * 2, ratio * 2, stride=ratio, **conv)]
            mult *= 2
        if lstm:
            model.append(SLSTM(mult * n_filters, num_layers=lstm, bidirectional=bidirectional_lstm))
        model += [make_activation(activation, **act),
                  build_conv1d(mult * n_filters, dimension, last_kernel_size, **conv)]
        self.model = nn.Sequential(*model)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model(wav)


class SEANetDecoder(nn.Module):
    """Latents ``[B, dimension, T]`` -> waveform ``[B, channels, T * hop_length]``."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: dict | None = None, final_activation: str | None = None,
                 norm: str = "weight_norm", kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, causal: bool = False,
                 pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2):
        super().__init__()
        self.channels, self.dimension = channels, dimension
        self.ratios = list(ratios)
        self.hop_length = int(torch.tensor(self.ratios).prod())
        act = activation_params or ({"alpha": 1.0} if activation == "ELU" else {})
        conv = dict(norm=norm, causal=causal, pad_mode=pad_mode)
        mult = 2 ** len(self.ratios)
        model: list[nn.Module] = [build_conv1d(dimension, mult * n_filters, kernel_size, **conv)]
        if lstm:
            model.append(SLSTM(mult * n_filters, num_layers=lstm))
        for ratio in self.ratios:
            model += [make_activation(activation, **act),
                      build_conv_transpose1d(mult * n_filters, mult * n_filters // 2, ratio * 2, stride=ratio,
                                             norm=norm, causal=causal)]
            for j in range(n_residual_layers):
                model.append(SEANetResnetBlock(mult * n_filters // 2, (residual_kernel_size, 1),
                                               (dilation_base ** j, 1), activation, act, compress=compress,
                                               true_skip=true_skip, **conv))
            mult //= 2
        model += [make_activation(activation, **act),
                  build_conv1d(n_filters, channels, last_kernel_size, **conv)]
        if final_activation is not None:
            model.append(make_activation(final_activation))
        self.model = nn.Sequential(*model)

    def forward(self, latents: torch.Tensor, **_) -> torch.Tensor:
        return self.model(latents)
