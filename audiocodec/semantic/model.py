"""SpeechTokenizer / DM-Codec model parts: the BiLSTM SEANet encoder, an RVQ with a semantic head, and
the training forward pass that exposes each RVQ layer's output for distillation.

SpeechTokenizer (Zhang et al. 2023) and DM-Codec (Ahasan et al. 2024) share one architecture: a SEANet
encoder whose LSTM is bidirectional, an RVQ of EMA codebooks, and a SEANet decoder with a unidirectional
LSTM that reads the sum of the quantized layers. In training, the output of one RVQ layer (the first,
by default) goes through a linear "semantic head" ``Linear(dim -> teacher_dim)`` and is pulled towards
a teacher's frame features (:mod:`audiocodec.losses.distillation`).

Two details differ from :mod:`audiocodec.nn.seanet` and are built here:

* The official encoder's BiLSTM keeps ``C`` hidden units per direction, so it outputs ``2C`` channels
  (its skip connection adds ``[x; x]``), and the last encoder conv reads ``2C`` channels.
  (:class:`audiocodec.nn.seanet.SLSTM` with ``bidirectional=True`` halves the hidden size instead and is
  not checkpoint-compatible.)
* The ``speechtokenizer_snake`` release uses Snake activations with one learned ``alpha`` per channel.

Module names follow the official layout, so official checkpoints load by renaming
(:mod:`audiocodec.codecs.interop.speechtokenizer`); the head is ``quantizer.semantic_head`` (official:
``transform``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import AudioError, ConfigError
from ..nn.dac import Snake1d
from ..nn.init import init_weights_
from ..nn.seanet import SEANetDecoder, SEANetEncoder, SLSTM
from ..nn.conv import build_conv1d
from ..nn.streaming import StreamingModule
from ..quantize.rvq import ResidualVQ
from ..quantize.vq import QuantizerOutput, VectorQuantizer

if TYPE_CHECKING:  # imported lazily at run time: audiocodec.codecs imports this module
    from ..codecs.base import Codec, CodecOutput

#: Activations the SpeechTokenizer SEANet accepts (torch.nn names, plus the official ``Snake``).
ACTIVATIONS = ("ELU", "LeakyReLU", "GELU", "SiLU", "ReLU", "Tanh", "Snake")


class WideBiLSTM(nn.Module, StreamingModule):
    """SpeechTokenizer's encoder BiLSTM: ``[B, C, T] -> [B, 2C, T]``, ``BiLSTM(x) + [x; x]``.

    ``C`` hidden units per direction (``nn.LSTM(C, C, num_layers, bidirectional=True)``), so the output
    has both directions' features side by side. Reads the future, so it cannot stream.
    """

    _streaming_leaf = True

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(t)
        if self.skip:
            y = y + t.repeat(1, 1, 2)
        return y.permute(1, 2, 0)

    def streaming_unsupported(self) -> Optional[str]:
        return "a bidirectional LSTM reads the future"


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")


def _use_snake(module: nn.Module) -> None:
    """Replace every placeholder activation (``nn.Identity`` followed by a conv inside an ``nn.Sequential``)
    by a :class:`Snake1d` of that conv's input channels, as the official SEANet places them."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        for i, child in enumerate(children[:-1]):
            nxt = children[i + 1]
            if type(child) is nn.Identity and hasattr(nxt, "in_channels"):
                seq[i] = Snake1d(int(nxt.in_channels))


class SpeechTokenizerEncoder(SEANetEncoder):
    """SpeechTokenizer's SEANet encoder: waveform ``[B, channels, L]`` -> ``[B, dimension, ceil(L / hop)]``.

    As :class:`~audiocodec.nn.seanet.SEANetEncoder` (same arguments, ``ratios`` decoder-first), except
    that with ``bidirectional_lstm=True`` the LSTM is :class:`WideBiLSTM` (``2 * C`` output channels, read
    by the last conv), and ``activation="Snake"`` gives per-channel Snake activations.
    """

    def __init__(self, channels: int = 1, dimension: int = 1024, n_filters: int = 64,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: Optional[dict] = None, norm: str = "weight_norm", kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, dilation_base: int = 2,
                 causal: bool = False, pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2,
                 lstm: int = 2, bidirectional_lstm: bool = True, init: str = "lecun"):
        _check_activation(activation)
        snake = activation == "Snake"
        super().__init__(channels=channels, dimension=dimension, n_filters=n_filters,
                         n_residual_layers=n_residual_layers, ratios=ratios,
                         activation="Identity" if snake else activation,
                         activation_params={} if snake else activation_params, norm=norm,
                         kernel_size=kernel_size, last_kernel_size=last_kernel_size,
                         residual_kernel_size=residual_kernel_size, dilation_base=dilation_base, causal=causal,
                         pad_mode=pad_mode, true_skip=true_skip, compress=compress, lstm=lstm,
                         bidirectional_lstm=False, init=init)
        self.bidirectional_lstm = bool(bidirectional_lstm and lstm)
        if self.bidirectional_lstm:
            if causal:
                raise ConfigError("a causal encoder cannot have a bidirectional LSTM (it reads the future)")
            index = next(i for i, m in enumerate(self.model) if isinstance(m, SLSTM))
            width = self.model[index].lstm.input_size
            self.model[index] = WideBiLSTM(width, num_layers=lstm)
            self.model[-1] = build_conv1d(2 * width, dimension, last_kernel_size, norm=norm, causal=causal,
                                          pad_mode=pad_mode)
            init_weights_(self.model[-1], init)
        if snake:
            _use_snake(self.model)


class SpeechTokenizerDecoder(SEANetDecoder):
    """SpeechTokenizer's SEANet decoder: ``[B, dimension, T] -> [B, channels, T * hop]``.

    The official decoder is :class:`~audiocodec.nn.seanet.SEANetDecoder` (unidirectional LSTM, reading
    the sum of the quantized RVQ layers); this subclass only adds ``activation="Snake"``.
    """

    def __init__(self, channels: int = 1, dimension: int = 1024, n_filters: int = 64,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: Optional[dict] = None, final_activation: Optional[str] = None,
                 norm: str = "weight_norm", kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, causal: bool = False,
                 pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
                 init: str = "lecun"):
        _check_activation(activation)
        snake = activation == "Snake"
        super().__init__(channels=channels, dimension=dimension, n_filters=n_filters,
                         n_residual_layers=n_residual_layers, ratios=ratios,
                         activation="Identity" if snake else activation,
                         activation_params={} if snake else activation_params, final_activation=final_activation,
                         norm=norm, kernel_size=kernel_size, last_kernel_size=last_kernel_size,
                         residual_kernel_size=residual_kernel_size, dilation_base=dilation_base, causal=causal,
                         pad_mode=pad_mode, true_skip=true_skip, compress=compress, lstm=lstm, init=init)
        if snake:
            _use_snake(self.model)


# -- quantizer with a semantic head ------------------------------------------------------------------

class SemanticRVQ(ResidualVQ):
    """A :class:`~audiocodec.quantize.ResidualVQ` whose layer outputs can be projected into a teacher's
    feature space for distillation.

    Args:
        layers, quantizer_dropout: as :class:`ResidualVQ`.
        dim: the quantizer's input dimension ``D``.
        semantic_dim: ``int``: one head ``semantic_head = Linear(D, semantic_dim)`` shared by all teachers
            (SpeechTokenizer / DM-Codec; ``nn.Identity`` when ``semantic_dim == D``, as the official
            code); a mapping ``{teacher: dim}``: one head per teacher (``semantic_head[teacher]``);
            ``None``: no head.

    The head is only used in training (:func:`semantic_forward`); encode / decode ignore it.
    """

    def __init__(self, layers: list, quantizer_dropout: float = 0.0, dim: Optional[int] = None,
                 semantic_dim: Union[int, Mapping[str, int], None] = None):
        super().__init__(layers, quantizer_dropout)
        if semantic_dim is not None and dim is None:
            raise ConfigError("SemanticRVQ: a semantic head needs the quantizer dimension `dim`")
        self.semantic_dim = semantic_dim
        if semantic_dim is None:
            self.semantic_head = None
        elif isinstance(semantic_dim, Mapping):
            if not semantic_dim:
                raise ConfigError("semantic_dim: an empty mapping; give {teacher: dim} or one int")
            heads = {}
            for name, d in semantic_dim.items():
                heads[str(name)] = nn.Linear(dim, _positive_int(d, f"semantic_dim.{name}"))
            self.semantic_head = nn.ModuleDict(heads)
        else:
            d = _positive_int(semantic_dim, "semantic_dim")
            self.semantic_head = nn.Identity() if d == dim else nn.Linear(dim, d)

    @property
    def head_names(self) -> Optional[list]:
        """Names of the per-teacher heads, or ``None`` for one shared head (or none)."""
        return list(self.semantic_head.keys()) if isinstance(self.semantic_head, nn.ModuleDict) else None

    def forward(self, x: torch.Tensor, n_q: Optional[int] = None) -> QuantizerOutput:
        return self.forward_layers(x, n_q)[0]

    def forward_layers(self, x: torch.Tensor, n_q: Optional[int] = None) -> tuple[QuantizerOutput, list]:
        """Training forward of ``x [B, D, T]``: ``(QuantizerOutput, [quantized output of each layer used,
        [B, D, T] with straight-through gradient])``. The sum of the layer outputs is ``quantized``."""
        n_q = n_q or self.num_codebooks
        if self.training and self.quantizer_dropout > 0:
            n_q = self._dropout_codebooks(n_q, x.device)
        residual = x
        quantized = torch.zeros_like(x)
        codes, losses, outputs = [], {}, []
        for layer in self.layers[:n_q]:
            q, c, layer_losses = layer(residual)
            residual = residual - q
            quantized = quantized + q
            codes.append(c)
            outputs.append(q)
            for name, value in layer_losses.items():
                losses[name] = losses.get(name, 0.0) + value / n_q
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), losses), outputs

    def project(self, layer_output: torch.Tensor, teacher: Optional[str] = None) -> torch.Tensor:
        """A layer output ``[B, D, T]`` through the semantic head -> ``[B, T, semantic_dim]``.

        ``teacher`` picks the head when there is one per teacher (ignored for a shared head).
        """
        if self.semantic_head is None:
            raise ConfigError("this quantizer has no semantic head: build it with semantic_dim=<teacher dim>")
        x = layer_output.transpose(1, 2)
        if isinstance(self.semantic_head, nn.ModuleDict):
            if teacher not in self.semantic_head:
                raise ConfigError(f"no semantic head for teacher {teacher!r}; heads: {', '.join(self.semantic_head)}")
            return self.semantic_head[teacher](x)
        return self.semantic_head(x)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def semantic_rvq(dim: int, num_quantizers: int = 8, codebook_size: int = 1024, codebook_dim: Optional[int] = None,
                 decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 50,
                 threshold_ema_dead_code: float = 2.0, commitment_weight: float = 1.0,
                 quantizer_dropout: float = 0.0,
                 semantic_dim: Union[int, Mapping[str, int], None] = 768) -> SemanticRVQ:
    """An RVQ of EMA Euclidean codebooks with a semantic head (SpeechTokenizer: 8 x 1024, dim 1024,
    head 1024 -> 768, k-means init of 50 iterations, decay 0.99, dead-code threshold 2)."""
    layers = [VectorQuantizer(dim, codebook_size, codebook_dim, decay, 1e-5, kmeans_init, kmeans_iters,
                              threshold_ema_dead_code, commitment_weight) for _ in range(num_quantizers)]
    return SemanticRVQ(layers, quantizer_dropout, dim=dim, semantic_dim=semantic_dim)


# -- training forward -------------------------------------------------------------------------------

class SemanticOutput(NamedTuple):
    """``output``: the :class:`~audiocodec.codecs.CodecOutput` of the step; ``features``: ``{teacher:
    [B, T, teacher_dim]}``, each routed RVQ layer's output through the semantic head; ``layers``: the
    quantized output of each RVQ layer used, ``[B, D, T]``."""
    output: "CodecOutput"
    features: dict
    layers: list


def semantic_forward(codec: "Codec", wav: torch.Tensor, n_q: Optional[int] = None,
                     routes: Optional[Mapping[str, int]] = None) -> SemanticOutput:
    """Training forward pass of a distilled codec: :meth:`Codec.forward` plus the student features.

    Args:
        codec: a codec whose quantizer is a :class:`SemanticRVQ` (e.g. ``build_codec("speechtokenizer")``).
        wav: ``[B, C, L]`` at the codec's rate.
        n_q: codebooks to use (default: the codec's); must exceed every routed layer.
        routes: ``{teacher: RVQ layer}`` (:attr:`DistillationLoss.routes`); default ``{"speech": 0}``.

    The quantizer runs in fp32 (also under autocast), as in :class:`~audiocodec.train.codec_task.CodecGAN`.
    """
    from ..codecs.base import CodecOutput
    q_module = codec.quantizer
    if not hasattr(q_module, "forward_layers"):
        raise ConfigError(f"codec '{codec.name}' has a {type(q_module).__name__} quantizer; distillation needs "
                          "a semantic_rvq quantizer (e.g. build_codec('speechtokenizer'))")
    if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != codec.channels or wav.shape[-1] == 0:
        raise AudioError(f"semantic_forward: expected audio [B, {codec.channels}, L] at {codec.sample_rate} Hz, got "
                          f"{tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__}")
    routes = {"speech": 0} if routes is None else dict(routes)
    n_used = int(n_q or codec.num_codebooks)
    for teacher, layer in routes.items():
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < codec.max_codebooks:
            raise ConfigError(f"distillation route {teacher!r}: RVQ layer must be in 0..{codec.max_codebooks - 1}, "
                              f"got {layer!r}")
        if layer >= n_used:
            raise ConfigError(f"distillation route {teacher!r} reads RVQ layer {layer}, but this step uses only "
                              f"{n_used} codebooks: keep the number of training codebooks above {layer}")
    latents = codec.encoder(wav)
    with torch.autocast(latents.device.type, enabled=False):
        q, layer_outputs = q_module.forward_layers(latents.float(), n_used)
    if q_module.training and len(layer_outputs) < n_used:  # quantizer dropout drew fewer codebooks
        missing = [t for t, k in routes.items() if k >= len(layer_outputs)]
        if missing:
            raise ConfigError(f"quantizer dropout left {len(layer_outputs)} codebooks, fewer than distillation "
                              f"routes {missing} need; draw the number of codebooks outside the quantizer")
    features = {t: q_module.project(layer_outputs[k], t) for t, k in routes.items()}
    audio = codec.decoder(q.quantized, num_codebooks=q.codes.shape[1])
    out = CodecOutput(audio[..., : wav.shape[-1]], q.codes, q.quantized, q.losses)
    return SemanticOutput(out, features, layer_outputs)
