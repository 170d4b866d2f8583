"""A decoder-only transformer over one or several parallel token streams (LLaMA-style blocks).

Each block: RMSNorm -> causal self-attention (rotary positions, optional grouped-query heads) ->
[RMSNorm -> cross-attention over a condition memory] -> RMSNorm -> SwiGLU MLP, each sub-layer residual.

Streams: ``num_codebooks`` K parallel token streams share the trunk. Each has its own embedding table
(the input of a step is the sum of the K embeddings) and its own output head, so one class serves a
TTS LM (K=1, one vocabulary holding text and speech tokens) and a codebook LM for songs (K codebooks,
usually with a delay pattern and cross-attention to the lyrics/style memory).

Padding and positions: a padding mask ``[B, T]`` (True = real token) gives each row its own rotary
positions (0 at its first real token), so left-padded prompts behave as if each were alone; padded
slots are never attended to. Incremental decoding goes through :class:`~audiocodec.lm.kv_cache.KVCache`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CodesError, ConfigError
from ..nn.conv import PackedLinear
from .kv_cache import KVCache, LayerKVCache


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last axis, computed in fp32: ``[..., D] -> [..., D]``.

    :attr:`fused` (a class-wide switch; None, the default: on CUDA devices): use PyTorch's fused ``rms_norm``
    kernel instead of the 7-8 elementwise kernels, when ``x`` and the weight share a dtype. Decoding one
    token at batch 1 is bound by the number of kernels and a transformer step runs three norms per layer
    (on an H200 the fused kernel takes song generation from 18x to 23x realtime); it reduces in another
    order, so its results may differ from the elementwise path in the last bit. CPU runs keep the
    elementwise path unless ``fused = True``.
    """

    fused: Optional[bool] = None

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fused if self.fused is not None else x.is_cuda
        if fused and x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        # a low-precision weight is promoted to fp32 inside the product: the values of xf * weight.float()
        # without the extra cast kernel (decoding at batch 1 is bound by the number of kernels)
        return (xf * self.weight).type_as(x)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (rotate-half layout) with frequencies ``theta ** (-2i / head_dim)``."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary embeddings need an even head dim, got {head_dim}")
        self.theta = float(theta)
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [B, T]`` (long) -> ``(cos, sin)`` each ``[B, 1, T, head_dim / 2]`` fp32."""
        angles = positions.float()[:, None, :, None] * self.inv_freq
        return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotate-half rotation of ``x [..., Dh]`` by ``cos``, ``sin`` ``[..., Dh / 2]`` (in the promoted dtype)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, Dh]`` by the angles of ``cos``, ``sin`` ``[B, 1, T, Dh / 2]`` (in fp32)."""
    return _rotate(x.float(), cos, sin).type_as(x)


def _rotate_queries_keys(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_rotary` of ``q`` and ``k`` in one go, for cached decoding: the same values with fewer
    kernels (one step at batch 1 is bound by their number): one rotation of the heads side by side, and no
    explicit ``float()`` (the fp32 ``cos`` / ``sin`` promote each product, which computes exactly
    ``x.float() * cos``). Not for training: a low-precision gradient would be accumulated differently."""
    out = _rotate(torch.cat([q, k], dim=1), cos, sin).type_as(q)
    return out.split([q.shape[1], k.shape[1]], dim=1)


def fuse_legacy_projections(parts: tuple[str, ...], fused: str):
    """A ``load_state_dict`` pre-hook: the weights of the separate Linears ``parts`` (an earlier layout, e.g.
    ``q_proj`` / ``k_proj`` / ``v_proj``) are stacked into the fused Linear ``fused`` (the same outputs, in the
    same order), so weights saved before the fusion still load."""
    def hook(module, state_dict, prefix, *args):
        keys = [f"{prefix}{part}.weight" for part in parts]
        if f"{prefix}{fused}.weight" not in state_dict and all(k in state_dict for k in keys):
            state_dict[f"{prefix}{fused}.weight"] = torch.cat([state_dict.pop(k) for k in keys], dim=0)
    return hook


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions and ``num_kv_heads`` key/value heads
    (grouped-query attention when fewer than ``num_heads``). ``[B, T, D] -> [B, T, D]``.

    Queries, keys and values come from one fused projection ``qkv_proj`` (one GEMM; rows: the query heads,
    then the key heads, then the value heads); weights saved with separate ``q_proj`` / ``k_proj`` / ``v_proj``
    load into it."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.sizes = (num_heads * self.head_dim, num_kv_heads * self.head_dim, num_kv_heads * self.head_dim)
        self.qkv_proj = PackedLinear(dim, sum(self.sizes), bias=False)
        self.out_proj = PackedLinear(num_heads * self.head_dim, dim, bias=False)
        self.register_load_state_dict_pre_hook(fuse_legacy_projections(("q_proj", "k_proj", "v_proj"), "qkv_proj"))

    def _heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        return x.unflatten(-1, (num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                cache: Optional[LayerKVCache] = None, slots: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [B, T, D]``; ``mask [B, 1, T, S]`` bool (True = may attend) or None for plain causal
        attention over ``x`` itself. With ``cache``, the new keys/values go to ``slots [T]`` and
        attention spans the first ``S`` cached slots."""
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q, k, v = self._heads(q, self.num_heads), self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)
        if cache is not None:   # incremental decoding: fewer kernels, the same values
            q, k = _rotate_queries_keys(q, k, cos, sin)
        else:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            keys, values = cache.write(k, v, slots)
            span = mask.shape[-1]
            k, v = keys[:, :, :span].to(q.dtype), values[:, :, :span].to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    """Multi-head attention from the sequence to a condition memory (no positions, no causality).

    ``[B, T, D]`` attends to keys/values projected from ``memory [B, M, memory_dim]``.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, memory_dim: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = PackedLinear(dim, num_heads * self.head_dim, bias=False)
        self.k_proj = PackedLinear(memory_dim, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = PackedLinear(memory_dim, num_kv_heads * self.head_dim, bias=False)
        self.out_proj = PackedLinear(num_heads * self.head_dim, dim, bias=False)

    def memory_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``memory [B, M, memory_dim] -> (keys, values)`` each ``[B, H_kv, M, Dh]``."""
        k = self.k_proj(memory).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(memory).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                memory_mask: tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = (None, None)) -> torch.Tensor:
        """``x [B, T, D]``, ``keys``/``values [B, H_kv, M, Dh]`` -> ``[B, T, D]``. ``memory_mask``: the
        :func:`cross_attention_mask` of the memory's padding mask (computed once for all layers); a row whose
        memory is all padding gets a zero update (zeroed after the bias-free output projection, the same
        values as before it: compiled, the zeroing fuses into the residual add that follows)."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        keys, values = keys.to(q.dtype), values.to(q.dtype)
        mask, empty_rows = memory_mask
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if empty_rows is not None:
            out = out.masked_fill(empty_rows[:, None, None], 0.0)
        return out


def cross_attention_mask(memory_mask: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``memory_mask [B, M]`` (True = real frame, or None) -> ``(attention mask [B, 1, 1, M], empty rows [B])``
    of :class:`CrossAttention`: an all-masked softmax is undefined, so a row without any real frame attends
    everywhere and its output is zeroed afterwards (``(None, None)`` without a mask)."""
    if memory_mask is None:
        return None, None
    empty_rows = ~memory_mask.any(-1)  # [B]
    return (memory_mask | empty_rows[:, None])[:, None, None, :], empty_rows


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: ``[..., D] -> [..., D]`` through ``hidden_dim``.

    ``gate`` and ``up`` are one fused projection ``gate_up_proj`` (one GEMM; rows: gate, then up); weights saved
    with separate ``gate_proj`` / ``up_proj`` load into it."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_up_proj = PackedLinear(dim, 2 * hidden_dim, bias=False)
        self.down_proj = PackedLinear(hidden_dim, dim, bias=False)
        self.register_load_state_dict_pre_hook(fuse_legacy_projections(("gate_proj", "up_proj"), "gate_up_proj"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention -> optional cross-attention -> SwiGLU, each residual.
    ``[B, T, D] -> [B, T, D]``."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, ffn_dim: int,
                 memory_dim: Optional[int] = None, dropout: float = 0.0, attention_dropout: float = 0.0,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.attn_norm = RMSNorm(dim, norm_eps)
        self.attn = SelfAttention(dim, num_heads, num_kv_heads, attention_dropout)
        self.cross_norm = self.cross_attn = None
        if memory_dim is not None:
            self.cross_norm = RMSNorm(dim, norm_eps)
            self.cross_attn = CrossAttention(dim, num_heads, num_kv_heads, memory_dim, attention_dropout)
        self.mlp_norm = RMSNorm(dim, norm_eps)
        self.mlp = SwiGLU(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)

    def residual_projections(self) -> list[nn.Linear]:
        """The layers that write into the residual stream (scaled down at init)."""
        out = [self.attn.out_proj, self.mlp.down_proj]
        return out + ([self.cross_attn.out_proj] if self.cross_attn is not None else [])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                cache: Optional[LayerKVCache] = None, slots: Optional[torch.Tensor] = None,
                memory_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                memory_mask: tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = (None, None)) -> torch.Tensor:
        """``memory_kv``: this layer's cross-attention keys / values; ``memory_mask``: their
        :func:`cross_attention_mask`."""
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, cache, slots))
        if self.cross_attn is not None:
            x = x + self.dropout(self.cross_attn(self.cross_norm(x), *memory_kv, memory_mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def swiglu_hidden_dim(dim: int, multiple_of: int = 64) -> int:
    """LLaMA's SwiGLU width: ``8/3 * dim`` rounded up to a multiple of ``multiple_of``."""
    return multiple_of * math.ceil(8 * dim / 3 / multiple_of)


class TransformerLM(nn.Module):
    """Decoder-only LM over ``num_codebooks`` parallel token streams.

    ``tokens [B, K, T]`` (long, ``0 <= token < vocab_size``) -> ``logits [B, K, T, vocab_size]``,
    where ``logits[:, k, t]`` predicts stream ``k`` at step ``t + 1``.

    Args:
        vocab_size: entries of each stream's embedding table and output head.
        dim: model width D; ``num_heads`` must divide it.
        num_layers, num_heads: depth and attention heads.
        num_kv_heads: key/value heads (grouped-query attention); default ``num_heads``.
        num_codebooks: parallel token streams K.
        ffn_dim: SwiGLU hidden width; default :func:`swiglu_hidden_dim` of ``dim``.
        cross_attention: add a cross-attention sub-layer over a condition memory to every block.
        memory_dim: width of the memory; default ``dim``.
        dropout: on every residual branch; attention_dropout: on attention weights.
        tie_embeddings: output head ``k`` reuses embedding table ``k``.
        rope_theta: rotary base; norm_eps: RMSNorm epsilon.
        init_std: std of the normal init of every linear and embedding; projections into the residual
            stream get ``init_std / sqrt(number of residual branches)`` (GPT-2 / LLaMA).
    """

    def __init__(self, vocab_size: int, dim: int, num_layers: int, num_heads: int,
                 num_kv_heads: Optional[int] = None, num_codebooks: int = 1, ffn_dim: Optional[int] = None,
                 cross_attention: bool = False, memory_dim: Optional[int] = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0, tie_embeddings: bool = False, rope_theta: float = 10000.0,
                 norm_eps: float = 1e-5, init_std: float = 0.02):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("num_kv_heads", num_kv_heads),
                            ("num_codebooks", num_codebooks)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"TransformerLM: {name} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ConfigError(f"TransformerLM: num_heads={num_heads} must divide dim={dim}")
        if num_heads % num_kv_heads:
            raise ConfigError(f"TransformerLM: num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        if memory_dim is not None and not cross_attention:
            raise ConfigError("TransformerLM: memory_dim is set but cross_attention is False")
        for name, p in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"TransformerLM: {name} must be in [0, 1), got {p}")
        self.vocab_size, self.dim, self.num_codebooks = vocab_size, dim, num_codebooks
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
        self.memory_dim = (memory_dim or dim) if cross_attention else None
        self.tie_embeddings = tie_embeddings
        self.embeddings = nn.ModuleList(nn.Embedding(vocab_size, dim) for _ in range(num_codebooks))
        self.rotary = RotaryEmbedding(self.head_dim, rope_theta)
        self.layers = nn.ModuleList(
            TransformerBlock(dim, num_heads, num_kv_heads, ffn_dim or swiglu_hidden_dim(dim), self.memory_dim,
                             dropout, attention_dropout, norm_eps) for _ in range(num_layers))
        self.norm = RMSNorm(dim, norm_eps)
        # the K streams' output heads as one Linear (one GEMM; rows: stream 0's vocabulary, then stream 1's, ...);
        # weights saved with K separate heads (``heads.k``) still load
        self.head = None if tie_embeddings else PackedLinear(dim, num_codebooks * vocab_size, bias=False)
        self.register_load_state_dict_pre_hook(
            fuse_legacy_projections(tuple(f"heads.{k}" for k in range(num_codebooks)), "head"))
        self._init_weights(init_std)

    @torch.no_grad()
    def _init_weights(self, std: float):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
        residuals = [p for layer in self.layers for p in layer.residual_projections()]
        for proj in residuals:
            nn.init.normal_(proj.weight, mean=0.0, std=std / math.sqrt(len(residuals)))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def new_cache(self, batch_size: int, max_len: int, device: Optional[torch.device] = None,
                  dtype: Optional[torch.dtype] = None, static_shapes: bool = False) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` rows of at most ``max_len`` tokens (prompt
        included), on the model's device and dtype unless given."""
        p = next(self.parameters())
        return KVCache(self.num_layers, batch_size, self.num_kv_heads, self.head_dim, max_len,
                       device=device or p.device, dtype=dtype or p.dtype, static_shapes=static_shapes)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, K, T] -> [B, T, D]``: the sum of the K streams' embeddings."""
        x = self.embeddings[0](tokens[:, 0])
        for k in range(1, self.num_codebooks):
            x = x + self.embeddings[k](tokens[:, k])
        return x

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, T, D]`` (final-normed) -> ``logits [B, K, T, V]`` (with untied heads a view of one GEMM's
        ``[B, T, K, V]`` output)."""
        if self.head is None:
            logits = [F.linear(hidden, table.weight) for table in self.embeddings]
            return logits[0].unsqueeze(1) if len(logits) == 1 else torch.stack(logits, dim=1)
        return self.head(hidden).unflatten(-1, (self.num_codebooks, self.vocab_size)).movedim(-2, 1)

    def forward(self, tokens: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                memory: Optional[torch.Tensor] = None, memory_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, return_hidden: bool = False):
        """``tokens [B, K, T]`` -> ``logits [B, K, T, V]``.

        padding_mask: ``[B, T]`` bool, True = real token, False = padding (never attended to, gets no
            position). Default: all real. Rotary positions count the real tokens of each row from 0 (or
            from where the row's cached tokens stopped).
        memory: ``[B, M, memory_dim]`` condition for cross-attention, with ``memory_mask [B, M]`` bool
            (True = real frame). With a cache, the memory is read on the first call and kept in the
            cache; later calls may leave it out (if given again it is ignored).
        cache: a :class:`KVCache` from :meth:`new_cache`; the tokens are appended to it and attend to
            everything cached before them.
        return_hidden: also return the final-normed hidden states ``[B, T, D]`` (``(logits, hidden)``),
            e.g. for auxiliary heads.
        """
        batch, num_tokens = self._check_inputs(tokens, padding_mask, memory, memory_mask, cache)
        device = tokens.device
        valid = (padding_mask if padding_mask is not None
                 else torch.ones(batch, num_tokens, dtype=torch.bool, device=device))

        if cache is None:
            slots = None
            positions = (valid.long().cumsum(-1) - 1).masked_fill(~valid, -1)
            if padding_mask is None:
                mask = None  # plain causal attention: the fast kernels
            else:
                mask = attention_mask(torch.arange(num_tokens, device=device), valid)
        else:
            slots, positions = cache.append(valid)
            mask = attention_mask(slots, cache.key_valid[:, :cache.attend_len])

        memory_kv, memory_mask = self._memory_keys_values(memory, memory_mask, cache)
        cross_mask = self._cross_mask(memory_mask, cache) if self.memory_dim is not None else (None, None)
        cos, sin = self.rotary(positions)
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache.layers[i] if cache is not None else None, slots,
                      memory_kv[i], cross_mask)
        hidden = self.norm(x)
        logits = self.output_logits(hidden)
        return (logits, hidden) if return_hidden else logits

    def _memory_keys_values(self, memory, memory_mask, cache) -> tuple[list, Optional[torch.Tensor]]:
        """Per-layer cross-attention ``(keys, values)`` (``None`` entries without cross-attention) and the
        memory mask: from the cache when it has them, else projected from ``memory`` (and cached)."""
        if self.memory_dim is None:
            return [None] * self.num_layers, None
        if cache is not None and cache.has_memory:
            return cache.memory, cache.memory_mask
        memory_kv = [layer.cross_attn.memory_keys_values(memory) for layer in self.layers]
        if cache is not None:
            cache.set_memory(memory_kv, memory_mask)
        return memory_kv, memory_mask

    @staticmethod
    def _cross_mask(memory_mask: Optional[torch.Tensor], cache: Optional[KVCache]) -> tuple:
        """:func:`cross_attention_mask` of ``memory_mask``, once per forward, and with a cache once per
        memory (kept beside it until the cache's memory mask changes)."""
        if cache is None or memory_mask is None:
            return cross_attention_mask(memory_mask)
        kept = getattr(cache, "_cross_mask", None)
        if kept is None or kept[0] is not memory_mask:
            kept = cache._cross_mask = (memory_mask, cross_attention_mask(memory_mask))
        return kept[1]

    def _check_inputs(self, tokens, padding_mask, memory, memory_mask, cache) -> tuple[int, int]:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[1] != self.num_codebooks:
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"expected tokens [B, K={self.num_codebooks}, T], got {got}"
                             + ("; add the stream axis with tokens[:, None]"
                                if isinstance(tokens, torch.Tensor) and tokens.dim() == 2 else ""))
        if tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"expected integer tokens, got {tokens.dtype}")
        batch, _, num_tokens = tokens.shape
        if num_tokens == 0:
            raise ValueError("expected at least one token (T >= 1)")
        # a range check costs a host sync: do it on full sequences (training, prefill), not per decode step
        if cache is None or num_tokens > 1:
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.vocab_size:
                raise CodesError(f"tokens must be in [0, {self.vocab_size}), got values in [{low}, {high}]")
        if padding_mask is not None and (padding_mask.shape != (batch, num_tokens) or padding_mask.dtype != torch.bool):
            raise ValueError(f"expected padding_mask bool [B={batch}, T={num_tokens}], "
                             f"got {padding_mask.dtype} {tuple(padding_mask.shape)}")
        if cache is not None:
            if cache.batch_size != batch or cache.num_layers != self.num_layers or \
                    cache.num_kv_heads != self.num_kv_heads or cache.head_dim != self.head_dim:
                raise ValueError(f"cache does not fit: batch {cache.batch_size}, {cache.num_layers} layers, "
                                 f"{cache.num_kv_heads} kv heads of {cache.head_dim}; tokens have batch {batch} "
                                 f"and the model {self.num_layers} layers, {self.num_kv_heads} kv heads of "
                                 f"{self.head_dim}")
        if self.memory_dim is None:
            if memory is not None or memory_mask is not None:
                raise ValueError("memory given but the model has no cross-attention (cross_attention=False)")
            return batch, num_tokens
        if cache is not None and cache.has_memory:
            return batch, num_tokens
        if memory is None:
            raise ValueError(f"this model cross-attends: pass memory [B, M, {self.memory_dim}]")
        if memory.dim() != 3 or memory.shape[0] != batch or memory.shape[2] != self.memory_dim:
            raise ValueError(f"expected memory [B={batch}, M, {self.memory_dim}], got {tuple(memory.shape)}")
        if memory_mask is not None and (memory_mask.shape != memory.shape[:2] or memory_mask.dtype != torch.bool):
            raise ValueError(f"expected memory_mask bool [B={batch}, M={memory.shape[1]}], "
                             f"got {memory_mask.dtype} {tuple(memory_mask.shape)}")
        return batch, num_tokens


def attention_mask(query_slots: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Causal mask with padding: ``[B, 1, Tq, S]`` bool, True where a query may attend.

    ``query_slots [Tq]`` are the slots of the queries among ``S`` key slots; ``key_valid [B, S]`` marks
    real tokens. A query sees the valid keys at or before its slot, and always its own slot, so a padded
    query has one finite (ignored) output instead of an undefined all-masked softmax.
    """
    key_slots = torch.arange(key_valid.shape[1], device=key_valid.device)
    causal = key_slots[None, :] <= query_slots[:, None]  # [Tq, S]
    own = key_slots[None, :] == query_slots[:, None]
    return ((causal[None] & key_valid[:, None, :]) | own[None])[:, None]
