"""Padded 1-d convolutions in the SEANet style (EnCodec, WavTokenizer, SpeechTokenizer).

A :class:`PaddedConv1d` pads its input so that an input of ``L`` samples gives ``ceil(L / stride)``
frames, causally (all padding on the left) or centred; :class:`PaddedConvTranspose1d` trims its output
so that ``T`` frames give ``T * stride`` samples. Both optionally carry weight normalisation
(``torch.nn.utils.parametrizations.weight_norm``).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from .streaming import StreamingModule, empty_like_time


def apply_norm(module: nn.Module, norm: str = "none") -> nn.Module:
    """Wrap ``module`` with ``norm``: ``"weight_norm"`` or ``"none"``."""
    if norm == "weight_norm":
        return parametrizations.weight_norm(module)
    if norm in ("none", None):
        return module
    raise ValueError(f"unknown conv norm {norm!r}: use 'weight_norm' or 'none'")


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation in ``model`` by its plain weight (in place).

    Inference gets faster (no per-call renormalisation) and the outputs do not change.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module):
            # torch keeps the parametrised properties on a class that deep copies of the module share;
            # removing them there would break every copy, so this module first gets its own class
            cls = type(module)
            members = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(cls.__name__, cls.__bases__, members)
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding so that the last window of a strided conv is full (no sample is dropped)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return max(0, ideal_length - length)


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` that also allows reflect padding of inputs shorter than the padding."""
    left, right = paddings
    if mode == "reflect":
        length = x.shape[-1]
        max_pad = max(left, right)
        extra = 0
        if length <= max_pad:
            extra = max_pad - length + 1
            x = F.pad(x, (0, extra))
        if extra or min(left, right) < 0:
            padded = F.pad(x, paddings, mode)
            return padded[..., : padded.shape[-1] - extra]
        return reflect_pad(x, left, right)
    return F.pad(x, paddings, mode, value)


def time_major_4d(x: torch.Tensor) -> torch.Tensor:
    """``x [B, C, L]`` as ``[B, C, 1, L]`` in channels-last memory (time-major: ``[B, L, C]`` in memory).

    No copy when ``x`` is already a time-major view (e.g. the output of a time-major conv). One channel: the
    same memory as ``[B, 1, L]``, viewed with explicit channels-last strides (PyTorch takes such an ambiguous
    tensor for NCHW, and a conv would then return NCHW).
    """
    if x.shape[1] == 1:
        x = x.contiguous()
        return x.as_strided((x.shape[0], 1, 1, x.shape[2]), (x.stride(0), 1, x.shape[2], 1))
    x4 = x.unsqueeze(2)
    return x4 if x4.is_contiguous(memory_format=torch.channels_last) else x4.contiguous(
        memory_format=torch.channels_last)


def conv2d_weight(weight: torch.Tensor) -> torch.Tensor:
    """A conv1d weight ``[C_out, C_in / groups, k]`` as the channels-last conv2d weight ``[C_out, C_in / groups,
    1, k]`` of the time-major convs."""
    return weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def time_major_conv_weight(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """:func:`conv2d_weight` of ``weight``, cached on ``module`` and, under autocast, already in autocast's dtype
    (autocast would otherwise cast the weight on every call: 7 of 144 ms of a bf16 WavTokenizer decode on 2 CPU
    cores)."""
    dtype, device = weight.dtype, weight.device.type
    if dtype == torch.float32 and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    return TimeMajorWeights.get(module, f"w_cl_{dtype}", weight, lambda w: conv2d_weight(w).to(dtype))


def is_time_major(x: torch.Tensor) -> bool:
    """Whether ``x [B, C, L]`` is laid out time-major (channels contiguous, ``C > 1``)."""
    return x.dim() == 3 and x.shape[1] > 1 and x.stride(1) == 1


def pad_time_major(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """:func:`pad1d` of ``x [B, C, L]`` returned as a time-major ``[B, C, 1, L + left + right]`` tensor
    (one copy, built in ``[B, L, C]`` memory)."""
    length = x.shape[-1]
    if (left == 0 and right == 0) or (mode == "reflect" and length <= max(left, right)) or min(left, right) < 0:
        return time_major_4d(pad1d(x, (left, right), mode))
    xt = x.transpose(1, 2)  # [B, L, C]
    parts = []
    if left:
        parts.append(xt[:, 1:left + 1].flip(1) if mode == "reflect" else
                     xt[:, :1].expand(-1, left, -1) if mode == "replicate" else xt.new_zeros(xt.shape[0], left, xt.shape[2]))
    parts.append(xt)
    if right:
        parts.append(xt[:, length - right - 1:length - 1].flip(1) if mode == "reflect" else
                     xt[:, -1:].expand(-1, right, -1) if mode == "replicate" else
                     xt.new_zeros(xt.shape[0], right, xt.shape[2]))
    return torch.cat(parts, dim=1).transpose(1, 2).unsqueeze(2)


class _DerivedCache(dict):
    """A cache that copies and pickles as empty (its entries are rebuilt on demand; some, like oneDNN's
    packed weights, cannot be copied at all)."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return type(self), ()


class TimeMajorWeights:
    """Per-module cache of weights in another layout (or otherwise derived from parameters), rebuilt
    when a source tensor changes (new data, in-place update, dtype or device) or ``tag`` changes."""

    @staticmethod
    def _key(sources: tuple, tag) -> Optional[tuple]:
        try:
            return (tag,) + tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) if t is not None
                                  else None for t in sources)
        except RuntimeError:  # inference tensors have no version counter: no caching
            return None

    @staticmethod
    def prune(module: nn.Module, prefix: str, sources, tag=None) -> Optional[dict]:
        """Drop the entries cached on ``module`` under names starting with ``prefix`` that were made from other
        versions of ``sources``; return the others, ``{name: value}``. ``None`` if nothing made from ``sources`` can
        be cached (inference tensors: :meth:`get` makes it anew on every call)."""
        key = TimeMajorWeights._key(sources if isinstance(sources, tuple) else (sources,), tag)
        if key is None:
            return None
        cache = module.__dict__.get("_layout_cache", {})
        for name in [name for name, hit in cache.items() if name.startswith(prefix) and hit[0] != key]:
            del cache[name]
        return {name: hit[1] for name, hit in cache.items() if name.startswith(prefix)}

    @staticmethod
    def get(module: nn.Module, name: str, sources, make, tag=None):
        """``make(*sources)``, cached on ``module`` under ``name``; ``sources``: a tensor or a tuple."""
        sources = sources if isinstance(sources, tuple) else (sources,)
        key = TimeMajorWeights._key(sources, tag)
        if key is None:
            return make(*sources)
        cache = module.__dict__.setdefault("_layout_cache", _DerivedCache())
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            hit = cache[name] = (key, make(*sources))
        return hit[1]


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding of ``x [..., L]`` (``L > max(left, right)``), equal to ``F.pad(x, ..., "reflect")``.

    It copies the body with a vectorised constant pad and writes the two small mirrored edges, which is
    several times faster on GPU than PyTorch's reflection-pad kernel on long audio.
    """
    length = x.shape[-1]
    out = F.pad(x, (left, right))
    if left:
        out[..., :left] = x[..., 1: left + 1].flip(-1)
    if right:
        out[..., left + length:] = x[..., length - right - 1: length - 1].flip(-1)
    return out


def time_major_inference(x: torch.Tensor) -> bool:
    """The time-major inference paths (convs on ``[B, L, C]`` memory, in-place SEANet activations) apply to
    ``x``: no autograd, eager (not being compiled), and the switch of its device on:
    :attr:`PaddedConv1d.cpu_time_major` (on; off: the reference paths, for tests) or
    :attr:`PaddedConv1d.cuda_time_major` (off; cuDNN's channels-last convolutions, no layout conversion per conv)."""
    switch = {"cpu": PaddedConv1d.cpu_time_major, "cuda": PaddedConv1d.cuda_time_major}.get(x.device.type, False)
    return switch and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def compiled_cuda_inference(x: torch.Tensor) -> bool:
    """``x`` is being compiled (``torch.compile``) for CUDA inference (no autograd): where the formulations
    written for inductor apply (:attr:`PaddedConv1d.compiled_channels_last`,
    :func:`depthwise_conv1d_taps`)."""
    return x.is_cuda and torch.compiler.is_compiling() and not torch.is_grad_enabled()


def reduced_precision(x: torch.Tensor) -> bool:
    """``x`` is computed on in bf16 / fp16 (its dtype, or autocast on its device)."""
    return x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled(x.device.type)


def depthwise_conv1d_taps(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          padding: int) -> torch.Tensor:
    """A depthwise, stride-1, zero-padded conv1d, ``x [B, C, T] -> [B, C, T + 2 padding - k + 1]`` with
    ``weight [C, 1, k]``, written as ``k`` shifted multiply-adds in fp32 and rounded once to the dtype the conv
    would return (autocast's when it is on). Under ``torch.compile`` inductor fuses the taps into one kernel
    with their consumer (the ConvNeXt LayerNorm) instead of calling PyTorch's generic CUDA depthwise kernel,
    which on an H100 ran at a tenth of memory bandwidth in bf16 (:attr:`ConvNeXtBlock.compiled_taps`). Equal to
    ``F.conv1d`` up to float rounding."""
    device = x.device.type
    out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    k = weight.shape[-1]
    xp = F.pad(x.float(), (padding, padding))
    n = xp.shape[-1] - k + 1
    w = weight[:, 0].float()  # [C, k]
    y = xp[..., :n] * w[:, :1]
    for i in range(1, k):
        y = y + xp[..., i:i + n] * w[:, i:i + 1]
    if bias is not None:
        y = y + bias.float()[:, None]
    return y.to(out_dtype)


def cpu_inference(x: torch.Tensor) -> bool:
    """:func:`time_major_inference` of a CPU tensor: where the CPU-only fast paths (oneDNN) apply."""
    return x.device.type == "cpu" and time_major_inference(x)


def packed_linear(x: torch.Tensor, owner: nn.Module, name: str, sources, weight_bias,
                  dtype: torch.dtype = torch.float32, gelu: bool = False,
                  add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ W.T + b`` (then exact GELU if ``gelu``, or plus ``add``, a tensor of the output's shape, in the same
    pass) in ``dtype`` through oneDNN, where ``(W [N, K], b [N] or None) = weight_bias(*sources)`` is prepacked once
    and cached on ``owner`` under ``name`` (rebuilt when a source tensor changes). Where MKL's sgemm runs well below
    peak (an AMD EPYC: 70-85%, oneDNN ~97%) this is 20-25% faster than ``F.linear``; equal to it up to float
    rounding. CPU inference only (see :func:`cpu_inference`, :func:`onednn_dtype`)."""
    def pack(*src):
        w, b = weight_bias(*src)
        return (torch.ops.mkldnn._reorder_linear_weight(w.to(dtype).contiguous(), None),
                None if b is None else b.to(dtype))
    w, b = TimeMajorWeights.get(owner, name, sources, pack, tag=dtype)
    if add is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x.to(dtype), add, w, b, "add")
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), w, b, "gelu" if gelu else "none", [],
                                              "none" if gelu else "")


def packed_layer(x: torch.Tensor, linear: nn.Linear, dtype: torch.dtype, gelu: bool = False) -> torch.Tensor:
    """``linear(x)`` (then exact GELU if ``gelu``) through :func:`packed_linear`, the layer's weight and bias
    prepacked and cached on the layer itself (CPU inference)."""
    return packed_linear(x, linear, "onednn_packed", (linear.weight, linear.bias), lambda w, b: (w, b), dtype, gelu)


#: the Winograd tiles F(m, r) of the CPU path by kernel size r: (outputs per tile m, interpolation points; a
#: point at infinity is added). Fewer multiply-adds with larger tiles, larger rounding with more and wider points:
#: F(4, 3) takes 1/2 of a k=3 conv's multiply-adds (error ~3e-6 of the largest output), F(2, 7) 4/7 of a k=7
#: conv's (~4e-6); F(4, 7) would take 5/14 but rounds to ~4e-5.
WINOGRAD_TILES = {3: (4, (0, 1, -1, 2, -2)), 7: (2, (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)))}


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int, r: int, points: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winograd's minimal filtering F(m, r) by Toom-Cook over ``points`` (``m + r - 2`` of them) and infinity:
    ``(A^T [m, a], G [a, r], B^T [a, a])`` in float64, ``a = m + r - 1``, such that the correlation ``y_i = sum_k
    g_k d_(i + k)`` of a tile ``d [a]`` is ``A^T ((G g) * (B^T d))``. Exact rational arithmetic, then rounded."""
    a = m + r - 1
    if len(points) != a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} finite points, got {len(points)}")
    pts = [Fraction(p) for p in points]

    def vandermonde(cols):   # evaluation at the points, and the leading coefficient (the point at infinity)
        return [[p ** j for j in range(cols)] for p in pts] + [[Fraction(0)] * (cols - 1) + [Fraction(1)]]

    def as_tensor(rows):
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    inv = _rational_inverse(vandermonde(a))
    return as_tensor(vandermonde(m)).t().contiguous(), as_tensor(vandermonde(r)), as_tensor(inv).t().contiguous()


def _rational_inverse(matrix: list) -> list:
    """Inverse of a square matrix of Fractions (Gauss-Jordan, exact)."""
    n = len(matrix)
    rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for i in range(n):
            if i != col and rows[i][col] != 0:
                rows[i] = [v - rows[i][col] * w for v, w in zip(rows[i], rows[col])]
    return [row[n:] for row in rows]


def _combine(terms, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum c * t`` over ``terms`` ``[(c, t), ...]`` (nonzero ``c``), into ``out`` if given: one pass each."""
    (c0, t0), rest = terms[0], terms[1:]
    acc = torch.mul(t0, c0, out=out) if out is not None else torch.mul(t0, c0)
    for c, t in rest:
        acc.add_(t, alpha=c)
    return acc


def winograd_conv(x: torch.Tensor, owner: nn.Module, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  m: int, points: tuple) -> torch.Tensor:
    """A stride-1 conv of odd kernel size ``r`` with ``r // 2`` zeros of padding on each side, ``x [B, C_in, T]
    -> [B, C_out, T]`` (a time-major view), by Winograd's minimal filtering F(m, r) (:func:`winograd_matrices`):
    each tile of ``m`` outputs from ``a = m + r - 1`` products instead of ``m r``, i.e. ``a`` GEMMs of ``T / m``
    rows (oneDNN, filters transformed and prepacked once, cached on ``owner``) where the direct conv computes the
    work of ``r`` of ``T`` rows, plus a few passes over the activations to transform them. CPU inference, fp32;
    equal to the conv up to float rounding (see :data:`WINOGRAD_TILES`)."""
    b, _, t = x.shape
    r = weight.shape[-1]
    at, g, bt = winograd_matrices(m, r, points)
    a = m + r - 1
    n = -(-t // m)   # tiles
    c_in = x.shape[1]
    xp = x.new_empty(b, n * m + r - 1, c_in)   # time-major, r // 2 zeros ahead, zeros after
    xp[:, :r // 2].zero_()
    xp[:, r // 2 + t:].zero_()
    xp[:, r // 2: r // 2 + t] = x.transpose(1, 2)
    # the tiles, overlapping: [B, n, a, C_in], tile i's inputs m i + j; all a transformed inputs in one small
    # batched matmul (2-3x faster than a pass per term): u [B, n, a, C_in], product k's input u[:, :, k]
    tiles = xp.as_strided((b, n, a, c_in), (xp.stride(0), m * c_in, c_in, 1))
    u = torch.matmul(bt.to(x.dtype), tiles)
    # the bias rides on a product that every output of a tile adds once (the point 1's), if the points have one
    rider = next((k for k in range(a) if bool((at[:, k] == 1).all())), None)

    def filters(w, bb, k):   # product k's filter [C_out, C_in] and bias
        return torch.einsum("j,oij->oi", g[k], w.double()).to(w.dtype), (bb if k == rider else None)

    products = []
    for k in range(a):
        # the cache key names the points too: another tile of the same size must not take these filters
        products.append(packed_linear(u[:, :, k], owner, f"winograd_{m}_{r}_{points}_{k}", (weight, bias),
                                      functools.partial(filters, k=k)))
    y = x.new_empty(b, n, m, products[0].shape[-1])
    for i in range(m):
        _combine([(float(c), products[k]) for k, c in enumerate(at[i].tolist()) if c != 0], out=y[:, :, i])
    y = y.view(b, n * m, -1)[:, :t]
    if bias is not None and rider is None:
        y.add_(bias)
    return y.transpose(1, 2)


def onednn_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype of :func:`packed_linear` for ``x`` on the CPU inference path (autocast's when enabled), or None
    where it does not apply (not :func:`cpu_inference`, no oneDNN, a dtype it does not run)."""
    if not cpu_inference(x) or not torch.backends.mkldnn.is_available():
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return dtype
    return None


class PackedLinear(nn.Linear):
    """``nn.Linear`` (same parameters, names and training path) that, on the CPU inference path
    (:func:`onednn_dtype`), runs through oneDNN with its weight prepacked once (:func:`packed_linear`; a cached
    copy of the weight). For the few rows of a token-by-token decoding step that is 2-5x faster than MKL's GEMM
    (2 vCPUs: 320 -> 960 outputs, 2 rows: 124 -> 37 us); layers of fewer than :attr:`min_weights` weights
    keep ``F.linear``, which is faster there."""

    min_weights = 1 << 17

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = onednn_dtype(x) if self.weight.numel() >= self.min_weights else None
        if dtype is None:
            return super().forward(x)
        return packed_layer(x, self, dtype)


class PaddedConv1d(nn.Conv1d, StreamingModule):
    """Conv1d with SEANet padding: ``[B, C_in, L] -> [B, C_out, ceil(L / stride)]``.

    Args:
        causal: put all ``(k - 1) * d + 1 - stride`` padding on the left; otherwise split it, the
            larger half on the left.
        pad_mode: ``"reflect"``, ``"constant"`` or ``"replicate"``.
        norm: ``"weight_norm"`` or ``"none"`` (applied by :func:`build_conv1d`).

    A causal conv streams (see :mod:`audiocodec.nn.streaming`): it keeps the padded input its next
    windows need, and starts emitting once it has seen more than ``max(padding_total, stride - 1)``
    samples, so that its start padding (reflect of the first samples) is exactly the offline one.
    """

    _streaming_leaf = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 pad_mode: str = "reflect"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                         groups=groups, bias=bias)
        self.causal = causal
        self.pad_mode = pad_mode

    @property
    def padding_total(self) -> int:
        return (self.kernel_size[0] - 1) * self.dilation[0] + 1 - self.stride[0]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, L]`` with the padding of :meth:`_padding` (so that the conv gives ``ceil(L / stride)``)."""
        return pad1d(x, self._padding(x.shape[-1]), self.pad_mode)

    #: inputs at least this long skip the padded copy (see :meth:`_forward_long`)
    long_input = 4096
    #: CPU inference (no autograd) runs the conv time-major (``[B, L, C]`` memory, oneDNN's native layout:
    #: no reorder of activations per call, 1.3-1.7x faster convs) and returns a time-major view; the
    #: next time-major conv takes it without a copy. In fp32 (no autocast) the convs run as oneDNN ops with
    #: their weights prepacked once (cached per module, rebuilt when a weight changes), and a residual block's
    #: last pointwise conv adds its output into the shortcut's in place (:meth:`add_into`); the VQ search
    #: takes the same switch (:class:`audiocodec.quantize.vq.EuclideanCodebook`). Outputs equal the reference
    #: up to float rounding.
    cpu_time_major = True
    #: the same time-major path for eager CUDA inference (cuDNN channels-last convolutions, no layout conversion
    #: around each conv). Off by default: it speeds a bf16 encode up 1.2x (H100, batch 64, eager or CUDA graphs),
    #: but ``Codec.compile()`` is faster still, and fp32 without TF32 is slower (benchmarks/RESULTS.md).
    cuda_time_major = False
    #: on that CPU path, zero-padded k=3 and k=7 convs of wide layers (at least :attr:`winograd_min_weights`
    #: weights per tap: WavTokenizer's pos_net, 768 x 768, and its decoder's input conv, 512 x 768) run by
    #: Winograd's minimal filtering (:func:`winograd_conv`, tiles :data:`WINOGRAD_TILES`): F(4, 3) and F(2, 7), 1/2
    #: and 4/7 of the direct conv's multiply-adds (2 vCPUs, benchmarks/RESULTS.md sessions 11 and 12)
    cpu_winograd = True
    winograd_min_weights = 256 * 256
    #: on that CPU path, a strided conv whose kernel is ``n`` strides long (EnCodec's and WavTokenizer's
    #: downsampling convs, ``k = 2 s``) over wide frames (``s * C_in`` at least :attr:`polyphase_min_width`) runs
    #: as ``n`` GEMMs over the padded input viewed as frames of ``s`` samples (:meth:`_polyphase_conv`): oneDNN's
    #: direct conv reached 126 GFLOP/s on WavTokenizer's 256 -> 512, k=16, s=8 conv, the GEMMs ~170 (2 vCPUs)
    cpu_polyphase = True
    polyphase_min_width = 1024
    #: under ``torch.compile`` for CUDA inference in bf16 / fp16, write the conv as a channels-last conv2d
    #: (``[B, C, 1, L]`` in ``[B, L, C]`` memory, the layout of cuDNN's tensor-core kernels), so that cuDNN
    #: does not transpose each input and output (8.8 of 43 ms of a compiled batch-64 bf16 encode on an H100)
    #: and inductor folds the layout into the padding and activations around it. On: a compiled batch-64 bf16
    #: encode ran 1.16x faster with it (H100, benchmarks/RESULTS.md session 10); off gives the NCL conv1d
    #: (``benchmarks/codec_speed.py --switch compiled_channels_last=False``).
    compiled_channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        if x.dim() == 3 and time_major_inference(x):
            return self._forward_time_major(x)
        if x.dim() == 3 and self.compiled_channels_last and compiled_cuda_inference(x) and reduced_precision(x):
            return self._forward_channels_last(x)
        if self.pad_mode == "constant":
            left, right = self._padding(x.shape[-1])
            if left == right:  # zero "same" padding: the conv pads, no padded copy
                return F.conv1d(x, self.weight, self.bias, self.stride, left, self.dilation, self.groups)
        if x.shape[-1] >= self.long_input and self.pad_mode in ("reflect", "replicate", "constant"):
            return self._forward_long(x)
        return super().forward(self.pad_input(x))

    def _padding(self, length: int) -> tuple[int, int]:
        """(left, right) padding of an input of ``length`` samples: causal, all ``(k - 1) * d + 1 - stride`` on the
        left; otherwise split, the larger half on the left; plus what the last window needs on the right."""
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        total = self.padding_total
        extra = extra_padding_for_conv1d(length, k_eff, self.stride[0], total)
        left = total if self.causal else total - total // 2
        return left, total + extra - left

    def _forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, L] -> [B, C_out, T]`` as a time-major view (CPU inference path)."""
        left, right = self._padding(x.shape[-1])
        s, d = self.stride[0], self.dilation[0]
        if self.in_channels == 1 and self.groups == 1 and d == 1 and x.shape[1] == 1:
            # one input channel: im2col (a strided view) and one matmul, ~5x faster than oneDNN's conv
            frames = pad1d(x, (left, right), self.pad_mode)[:, 0].unfold(-1, self.kernel_size[0], s)  # [B, T, k]
            if self._packed_applies(x):  # oneDNN, weight prepacked, bias fused
                y = packed_linear(frames.contiguous(), self, "w_onednn_tk", (self.weight, self.bias),
                                  lambda w, b: (w[:, 0], b))
                return y.transpose(1, 2)
            w = TimeMajorWeights.get(self, "w_tk", self.weight, lambda w: w[:, 0].t().contiguous())
            y = frames @ w
            if self.bias is not None:
                y = y.add_(self.bias)
            return y.transpose(1, 2)
        if self._packed_applies(x):
            conv = functools.partial(self._packed_conv, length=x.shape[-1])
        else:
            w4 = time_major_conv_weight(self, self.weight)
            conv = functools.partial(F.conv2d, weight=w4, bias=self.bias, stride=(1, s), dilation=(1, d),
                                     groups=self.groups)
        if self.pad_mode == "constant" and left == right:  # zero "same" padding: the conv pads, no padded copy
            if self._winograd_applies(x):
                return winograd_conv(x, self, self.weight, self.bias, *WINOGRAD_TILES[self.kernel_size[0]])
            return conv(time_major_4d(x), padding=(0, left)).squeeze(2)
        if self._polyphase_applies(x):  # its GEMMs gain more than the padded copy costs, on long inputs too
            return self._polyphase_conv(pad_time_major(x, left, right, self.pad_mode))
        if x.shape[-1] >= self.long_input and self.pad_mode in ("reflect", "replicate", "constant"):
            return self._forward_long(x, main=lambda x_, pad: conv(time_major_4d(x_), padding=(0, pad)).squeeze(2))
        return conv(pad_time_major(x, left, right, self.pad_mode)).squeeze(2)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, L] -> [B, C_out, T]`` as one channels-last conv2d, the output a time-major view (the
        compiled CUDA path: no weight cache, inductor computes the weight's layout once per call)."""
        left, right = self._padding(x.shape[-1])
        w4 = conv2d_weight(self.weight)
        x4 = time_major_4d(pad1d(x, (left, right), self.pad_mode))
        return F.conv2d(x4, w4, self.bias, stride=(1, self.stride[0]), dilation=(1, self.dilation[0]),
                        groups=self.groups).squeeze(2)

    def _winograd_applies(self, x: torch.Tensor) -> bool:
        """:attr:`cpu_winograd` applies: a stride-1, undilated, ungrouped conv of a kernel size in
        :data:`WINOGRAD_TILES` with zero "same" padding of wide layers (the GEMMs dominate the transforms) on the
        fp32 oneDNN path."""
        return (self.cpu_winograd and self.kernel_size[0] in WINOGRAD_TILES and self.stride[0] == 1
                and self.dilation[0] == 1 and self.groups == 1
                and self.in_channels * self.out_channels >= self.winograd_min_weights
                and x.shape[-1] >= 8 and self._packed_applies(x))

    def _polyphase_applies(self, x: torch.Tensor) -> bool:
        """:attr:`cpu_polyphase` applies: an undilated, ungrouped conv of stride ``s > 1`` and kernel ``n s``
        (``n >= 2``), ``s * C_in >= polyphase_min_width``, on the fp32 oneDNN path."""
        s, k = self.stride[0], self.kernel_size[0]
        return (self.cpu_polyphase and s > 1 and k % s == 0 and k > s and self.dilation[0] == 1
                and self.groups == 1 and s * self.in_channels >= self.polyphase_min_width and self._packed_applies(x))

    def _polyphase_conv(self, xp: torch.Tensor) -> torch.Tensor:
        """The conv of the padded time-major ``xp [B, C_in, 1, L_p]`` (``[B, L_p, C_in]`` memory) as ``n = k / s``
        GEMMs: viewed as frames ``X [B, F, s C_in]`` of ``s`` samples, output frame ``t`` is ``sum_j X[t + j] W_j``
        with ``W_j`` the taps ``j s .. j s + s - 1`` (prepacked once, cached). Returns ``[B, C_out, T]``, a
        time-major view; equal to the conv up to float rounding."""
        s, k = self.stride[0], self.kernel_size[0]
        n, (b, c, _, length) = k // s, xp.shape
        t = (length - k) // s + 1
        frames = xp.squeeze(2).transpose(1, 2)[:, :(t + n - 1) * s].reshape(b, t + n - 1, s * c)

        def tap(w, bias, j):   # W_j [C_out, s C_in]; the bias rides on the first GEMM
            return w[:, :, j * s:(j + 1) * s].transpose(1, 2).reshape(w.shape[0], s * c), bias if j == 0 else None
        y = None
        for j in range(n):
            y = packed_linear(frames[:, j:j + t], self, f"w_polyphase_{j}", (self.weight, self.bias),
                              functools.partial(tap, j=j), add=y)
        return y.transpose(1, 2)

    def _packed_applies(self, x: torch.Tensor) -> bool:
        """Whether the time-major conv runs through oneDNN with a prepacked weight (fp32, no autocast)."""
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and torch.backends.mkldnn.is_available() and not torch.is_autocast_enabled("cpu"))

    def _packed_weight(self, padding: int, length: int) -> torch.Tensor:
        """The weight reordered once into oneDNN's blocked layout for this conv (cached on the module, rebuilt
        when the weight changes; inputs of other lengths reuse it, oneDNN reorders again only if it must)."""
        s, d = self.stride[0], self.dilation[0]
        k_eff = (self.kernel_size[0] - 1) * d + 1

        def pack(w):
            w4 = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            return torch.ops.mkldnn._reorder_convolution_weight(w4, [0, padding], [1, s], [1, d], self.groups,
                                                                [1, self.in_channels, 1, max(length, k_eff)])
        return TimeMajorWeights.get(self, f"w_onednn_pad{padding}", self.weight, pack)

    def _packed_conv(self, x4: torch.Tensor, padding=(0, 0), length: int = 1) -> torch.Tensor:
        """``F.conv2d`` of the time-major ``x4 [B, C, 1, L]`` with the prepacked weight."""
        pad = padding[1]
        return torch.ops.mkldnn._convolution_pointwise(
            x4, self._packed_weight(pad, length), self.bias, [0, pad], [1, self.stride[0]],
            [1, self.dilation[0]], self.groups, "none", [], "")

    def add_into(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out.add_(self(x))``: on the CPU fast path of a pointwise conv (kernel 1, stride 1) oneDNN adds the
        conv's output into ``out`` itself (no output tensor, no extra pass; the same floats)."""
        if (self.kernel_size[0] == 1 and self.stride[0] == 1 and self._streaming_state is None
                and cpu_inference(x) and x.dim() == 3 and out.dim() == 3
                and out.unsqueeze(2).is_contiguous(memory_format=torch.channels_last)
                and out.dtype == x.dtype and out.shape == (x.shape[0], self.out_channels, x.shape[-1])
                and self._packed_applies(x)):
            torch.ops.mkldnn._convolution_pointwise_.binary(
                out.unsqueeze(2), time_major_4d(x), self._packed_weight(0, x.shape[-1]), self.bias, [0, 0],
                [1, 1], [1, self.dilation[0]], self.groups, "add", 1.0, None, [], None)
            return out
        return out.add_(self(x))

    def _forward_long(self, x: torch.Tensor, main=None) -> torch.Tensor:
        """Same result as ``conv(pad_input(x))`` without copying the whole padded input.

        ``main(x, left)`` (default: ``F.conv1d`` with zero padding ``left`` on both sides) computes the
        bulk, which may come out longer than needed. The conv runs with its own zero padding (no copy), then the few output frames whose window
        reaches into the padding are recomputed from short, properly padded slices of the edges.
        """
        length, s = x.shape[-1], self.stride[0]
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        total = self.padding_total
        extra = extra_padding_for_conv1d(length, k_eff, s, total)
        left = total if self.causal else total - total // 2
        right = total + extra - left
        n_out = (length + left + right - k_eff) // s + 1
        jl = -(-left // s)                               # frames whose window starts in the left padding
        jr = max((length + left - k_eff) // s + 1, jl)   # first frame whose window ends in the right padding
        start = jr * s - left                            # its first sample, moved back so reflect has room
        if length - start < right + 1:
            start -= s * (-(-(right + 1 - (length - start)) // s))
        if start < 0 or jr > n_out or total < 0:
            return super().forward(self.pad_input(x))
        weight = self.weight
        conv = functools.partial(F.conv1d, weight=weight, bias=self.bias, stride=s, dilation=self.dilation,
                                 groups=self.groups)
        y = conv(x, padding=left) if main is None else main(x, left)
        edge = conv if main is None else (lambda x_: main(x_, 0))  # the few edge frames, the same way
        if y.shape[-1] > n_out:
            y = y[..., :n_out]
        if jl:
            m = min(length, max((jl - 1) * s + k_eff - left, left + 1))
            y[..., :jl] = edge(pad1d(x[..., :m], (left, 0), self.pad_mode))[..., :jl]
        if jr < n_out:
            j0 = (start + left) // s
            tail = edge(pad1d(x[..., start:], (0, right), self.pad_mode))[..., jr - j0: n_out - j0]
            if y.shape[-1] < n_out:
                return torch.cat([y[..., :jr], tail], dim=-1)
            y[..., jr:] = tail
        return y.contiguous() if main is None else y

    # -- streaming -------------------------------------------------------------------------------
    def streaming_unsupported(self):
        if not self.causal:
            return "non-causal conv (its centred padding needs future samples)"
        return None

    def _init_streaming_state(self) -> dict:
        # pending: raw input before the start padding could be built; buffer: padded input not yet
        # consumed by a window; tail: last `stride` raw samples (for the end padding); length: raw count
        return dict(started=False, pending=None, buffer=None, tail=None, length=0)

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        k_eff = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        stride, total = self.stride[0], self.padding_total
        if not st["started"]:
            pending = x if st["pending"] is None else torch.cat([st["pending"], x], dim=-1)
            if pending.shape[-1] <= max(total, stride - 1):
                if not final:
                    st["pending"] = pending
                    return empty_like_time(x, self.out_channels)
                # the whole stream is this short: offline forward on all of it (same padding rules)
                self._streaming_state = self._init_streaming_state()
                if pending.shape[-1] == 0:
                    return empty_like_time(x, self.out_channels)
                return super().forward(self.pad_input(pending))
            # enough samples: the start padding is now the offline one (no short-input special case)
            st.update(started=True, pending=None, length=pending.shape[-1], tail=pending[..., -stride:],
                      buffer=pad1d(pending, (total, 0), self.pad_mode))
        else:
            st["length"] += x.shape[-1]
            st["buffer"] = torch.cat([st["buffer"], x], dim=-1)
            st["tail"] = torch.cat([st["tail"], x], dim=-1)[..., -stride:]
        buf = st["buffer"]
        if final:
            extra = extra_padding_for_conv1d(st["length"], k_eff, stride, total)
            if extra:  # right padding from the last raw samples, as pad1d makes it offline
                right = pad1d(st["tail"], (0, extra), self.pad_mode)[..., -extra:]
                buf = torch.cat([buf, right], dim=-1)
        n = (buf.shape[-1] - k_eff) // stride + 1 if buf.shape[-1] >= k_eff else 0
        y = (super().forward(buf[..., : (n - 1) * stride + k_eff]) if n > 0
             else empty_like_time(x, self.out_channels))
        if final:
            self._streaming_state = self._init_streaming_state()
        else:
            st["buffer"] = buf[..., n * stride:]
        return y


class PaddedConvTranspose1d(nn.ConvTranspose1d, StreamingModule):
    """ConvTranspose1d trimmed to ``[B, C_in, T] -> [B, C_out, T * stride]``.

    Causal models trim all ``kernel - stride`` extra samples on the right, others split them.
    A causal one streams: ``T`` frames in give ``T * stride`` samples out, the overlapping tail of
    each chunk's output being kept and added to the next one.
    """

    _streaming_leaf = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, causal: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming_state is not None:
            return self._streaming_step(x, final=False)
        y = super().forward(x)
        total = self.kernel_size[0] - self.stride[0]
        right = total if self.causal else total // 2
        left = total - right
        return y[..., left: y.shape[-1] - right]

    # -- streaming -------------------------------------------------------------------------------
    def streaming_unsupported(self):
        if not self.causal:
            return "non-causal transposed conv (its output is trimmed on the left, which needs future frames)"
        return None

    def _init_streaming_state(self) -> dict:
        return dict(tail=None)  # the last kernel - stride output samples, without the bias

    def _streaming_step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        st = self._streaming_state
        stride, overlap = self.stride[0], self.kernel_size[0] - self.stride[0]
        if x.shape[-1] == 0:
            y = empty_like_time(x, self.out_channels)
        else:
            y = super().forward(x)  # [(T - 1) * stride + kernel] samples
            if st["tail"] is not None and overlap > 0:
                y = torch.cat([y[..., :overlap] + st["tail"], y[..., overlap:]], dim=-1)
            n = x.shape[-1] * stride
            tail = y[..., n:]
            if self.bias is not None:
                tail = tail - self.bias[:, None]
            st["tail"], y = tail, y[..., :n]
        if final:  # offline trims the last `overlap` samples of a causal transposed conv
            self._streaming_state = self._init_streaming_state()
        return y


def build_conv1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConv1d:
    """A :class:`PaddedConv1d` with ``norm`` applied."""
    return apply_norm(PaddedConv1d(*args, **kwargs), norm)


def build_conv_transpose1d(*args, norm: str = "weight_norm", **kwargs) -> PaddedConvTranspose1d:
    """A :class:`PaddedConvTranspose1d` with ``norm`` applied."""
    return apply_norm(PaddedConvTranspose1d(*args, **kwargs), norm)
