"""SEANet encoder and decoder (EnCodec / WavTokenizer / SpeechTokenizer family).

Layer indices of ``self.model`` follow the EnCodec layout, so official checkpoints map onto these
modules by renaming only (see :mod:`audiocodec.codecs.interop`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import PaddedConv1d, build_conv1d, build_conv_transpose1d, time_major_inference
from .init import init_weights_
from .streaming import StreamingModule, empty_like_time, stream_step


def make_activation(name: str = "ELU", **params) -> nn.Module:
    """An activation module by its ``torch.nn`` name (ELU, LeakyReLU, GELU, SiLU, ReLU, Tanh)."""
    allowed = {"ELU", "LeakyReLU", "GELU", "SiLU", "ReLU", "Tanh", "Identity"}
    if name not in allowed:
        raise ValueError(f"unknown activation {name!r}: use one of {sorted(allowed)}")
    return getattr(nn, name)(**params)


@functools.lru_cache(maxsize=None)
def _compiled_elu():
    """ELU through ``torch.compile`` (one kernel for any shape): inductor's CPU loop runs 2.2-2.6x faster than
    PyTorch's ELU kernel (2 vCPUs of an AMD EPYC: 1.5 against 3.4 ms for a [32, 120000] activation in place)."""
    def elu(x: torch.Tensor, alpha: float, inplace: bool) -> torch.Tensor:
        return x.copy_(F.elu(x, alpha)) if inplace else F.elu(x, alpha)
    return torch.compile(elu, dynamic=True)


def _activation(act: nn.Module, x: torch.Tensor, inplace: bool, compiled: bool = False) -> torch.Tensor:
    """``act(x)``, in place when allowed and ``act`` is an ELU (ELU is the SEANet default); with ``compiled`` an
    ELU of a CPU tensor runs through :func:`_compiled_elu`."""
    if type(act) is nn.ELU:
        if compiled and x.device.type == "cpu":
            return _compiled_elu()(x, act.alpha, inplace)
        if inplace:
            return F.elu(x, act.alpha, inplace=True)
    return act(x)


def run_sequential(model: nn.Sequential, x: torch.Tensor, compiled_activations: bool = False) -> torch.Tensor:
    """``model(x)`` for CPU inference: activations run in place on the intermediate tensors (never on
    ``x``), compiled if ``compiled_activations``, and fusable residual blocks take their fused path (fewer passes
    over memory, fewer allocations). Same result as ``model(x)`` up to float rounding."""
    y = x
    for module in model:
        owned = y is not x
        if isinstance(module, SEANetResnetBlock) and module.fusable():
            y = module.forward_fused(y, owned, compiled_activations)
        elif isinstance(module, nn.ELU):
            y = _activation(module, y, owned, compiled_activations)
        else:
            y = module(y)
    return y


class SLSTM(nn.Module, StreamingModule):
    """LSTM over time on ``[B, C, T]`` with an optional skip connection.

    ``bidirectional=True`` halves the hidden size per direction so the output keeps ``C`` channels
    (SpeechTokenizer's BiLSTM). A unidirectional one streams, carrying ``(h, c)`` across chunks.
    """

    _streaming_leaf = True

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True, bidirectional: bool = False):
        super().__init__()
        self.skip = skip
        hidden = dimension // 2 if bidirectional else dimension
        self.lstm = nn.LSTM(dimension, hidden, num_layers, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, state=None):
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x, state)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)

    def streaming_unsupported(self):
        return "a bidirectional LSTM reads the future" if self.lstm.bidirectional else None

    def _init_streaming_state(self) -> dict:
        return dict(hc=None)

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        if x.shape[-1] == 0:
            y = empty_like_time(x, self.lstm.hidden_size)
        else:
            t = x.permute(2, 0, 1)
            y, hc = self.lstm(t, st["hc"])
            st["hc"] = hc
            y = (y + t if self.skip else y).permute(1, 2, 0)
        if final:
            self._streaming_state = self._init_streaming_state()
        return y


class SEANetResnetBlock(nn.Module, StreamingModule):
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
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        if time_major_inference(x) and self.fusable():
            return self.forward_fused(x, owned=False)
        return self.shortcut(x) + self.block(x)

    def fusable(self) -> bool:
        """Whether :meth:`forward_fused` applies: the block is act -> conv -> act -> conv."""
        layers = list(self.block)
        return len(layers) == 4 and isinstance(layers[1], PaddedConv1d) and isinstance(layers[3], PaddedConv1d)

    def forward_fused(self, x: torch.Tensor, owned: bool = False, compiled_activations: bool = False) -> torch.Tensor:
        """Inference: ``shortcut(x) + block(x)`` with fewer passes over memory and fewer allocations:
        the block's output is added in place into the shortcut's, its inner activation runs in place,
        and so does its first one when ``owned`` (the caller gives ``x`` up); activations compiled if
        ``compiled_activations``. Same operations in the same order as :meth:`forward`, so the same floats."""
        act0, conv1, act1, conv2 = self.block
        out = self.shortcut(x)
        if out is x:  # identity shortcut
            out = x.clone()
        h = conv1(_activation(act0, x, owned, compiled_activations))
        return conv2.add_into(out, _activation(act1, h, True, compiled_activations))

    def _init_streaming_state(self) -> dict:
        return dict(skip=None)  # shortcut output the (delayed) block has not caught up with yet

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        skip = stream_step(self.shortcut, x, final)
        y = stream_step(self.block, x, final)
        if st["skip"] is not None:
            skip = torch.cat([st["skip"], skip], dim=-1)
        n = y.shape[-1]
        out = skip[..., :n] + y
        if final:
            self._streaming_state = self._init_streaming_state()
        else:
            st["skip"] = skip[..., n:]
        return out


class SEANetEncoder(nn.Module, StreamingModule):
    """Waveform ``[B, channels, L]`` -> latents ``[B, dimension, ceil(L / hop_length)]``.

    ``ratios`` are given decoder-first, as in EnCodec (``[8, 5, 4, 2]``); the encoder downsamples by
    them in reverse order. ``hop_length = prod(ratios)``.

    A causal encoder streams (:mod:`audiocodec.nn.streaming`): chunks of any length in, the frames
    they complete out.

    ``init``: ``lecun`` (default; keeps the latents' frame-to-frame variation at init, without which
    the quantizer collapses in training, see :mod:`audiocodec.nn.init`) or ``torch`` (PyTorch's defaults,
    as EnCodec). Irrelevant when weights are loaded.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: dict | None = None, norm: str = "weight_norm", kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, dilation_base: int = 2,
                 causal: bool = False, pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2,
                 lstm: int = 2, bidirectional_lstm: bool = False, init: str = "lecun"):
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
        self.model = init_weights_(nn.Sequential(*model), init)

    #: its CPU inference path (time-major oneDNN convs, fused residual blocks) is faster than inductor's code for
    #: the same module, so ``Codec.compile()`` on the CPU keeps it and compiles only its activations
    #: (:attr:`compiled_activations`)
    cpu_fast_paths = True
    #: on the CPU inference path, the ELUs through ``torch.compile`` (set by ``Codec.compile()`` on the CPU)
    compiled_activations = False

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if time_major_inference(wav):
            return run_sequential(self.model, wav, self.compiled_activations)
        return self.model(wav)

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        return stream_step(self.model, x, final)


class SEANetDecoder(nn.Module, StreamingModule):
    """Latents ``[B, dimension, T]`` -> waveform ``[B, channels, T * hop_length]``.

    A causal decoder streams: ``T`` frames in, ``T * hop_length`` samples out, except at the start
    of a stream, where the first conv's reflect padding holds output back until it has
    ``kernel_size`` frames.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: dict | None = None, final_activation: str | None = None,
                 norm: str = "weight_norm", kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, causal: bool = False,
                 pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
                 init: str = "lecun"):
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
        self.model = init_weights_(nn.Sequential(*model), init)

    cpu_fast_paths = True            # as the encoder's
    compiled_activations = False

    def forward(self, latents: torch.Tensor, **_) -> torch.Tensor:
        if time_major_inference(latents):
            return run_sequential(self.model, latents, self.compiled_activations)
        return self.model(latents)

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        return stream_step(self.model, x, final)
