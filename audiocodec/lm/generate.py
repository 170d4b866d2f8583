"""Autoregressive generation with a KV cache: prefill left-padded prompts, then decode step by step.

Per step: logits of the last position -> (classifier-free guidance) -> ``sample_fn`` -> ``force_fn``
-> rows that already ended get ``pad_id`` -> the tokens are fed back through the cache. Whether
every row has ended is checked on the host only every ``check_every`` steps, so decoding runs without
host synchronisations in between; at those checks finished rows can be dropped from the cache.

On CUDA the model's decoding step can be captured once in a CUDA graph and replayed (:class:`DecodeStep`,
``cuda_graph=True``): a small model at batch 1 otherwise spends most of each step launching kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

from .kv_cache import CacheOverflowError, KVCache
from .sampling import classifier_free_guidance, greedy
from .transformer import TransformerLM


@dataclass
class StepState:
    """What the hooks see at one decoding step.

    step: number of tokens generated so far (the index of the token being chosen).
    generated: ``[B_active, K, step]`` the tokens generated so far by the rows still decoded.
    rows: ``[B_active]`` long, their indices in the original batch (rows may be dropped when finished).
    """
    step: int
    generated: torch.Tensor
    rows: torch.Tensor


#: ``(logits [B_active, K, V], state) -> tokens [B_active, K]``
SampleFn = Callable[[torch.Tensor, StepState], torch.Tensor]
#: ``(tokens [B_active, K], state) -> tokens [B_active, K]``, e.g. a delay pattern forcing special tokens
ForceFn = Callable[[torch.Tensor, StepState], torch.Tensor]


def greedy_sample_fn(logits: torch.Tensor, state: StepState) -> torch.Tensor:
    """The default ``sample_fn``: ``argmax`` per stream, ``[B, K, V] -> [B, K]``."""
    return greedy(logits)


class Generation(NamedTuple):
    """What :func:`generate` returns.

    tokens: ``[B, K, N]`` long, N = steps run (<= max_new_tokens); a row that ended has its EOS at
        ``lengths[b]`` and ``pad_id`` after it.
    lengths: ``[B]`` long, tokens generated before EOS (N if the row never ended).
    finished: ``[B]`` bool, whether the row produced EOS.
    """
    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor


class DecodeStep:
    """One decoding step of ``model`` through ``cache``: ``step(tokens [B, K, 1]) -> logits [B, K, V]``.

    Eager by default. With ``cuda_graph`` (a CUDA model and a ``static_shapes`` cache, whose rows must
    then stay as they are: no ``select_rows``), the first call captures the step in a CUDA graph and
    every call replays it: the same kernels on the same buffers, launched at once. The logits returned
    then live in a buffer the next call overwrites: use them (sample) before stepping again.
    """

    def __init__(self, model: TransformerLM, cache: KVCache, cuda_graph: bool = False):
        self.model, self.cache = model, cache
        self.cuda_graph = bool(cuda_graph)
        if self.cuda_graph and not cache.static_shapes:
            raise ValueError("DecodeStep(cuda_graph=True) needs a cache made with static_shapes=True")
        if self.cuda_graph and cache.key_valid.device.type != "cuda":
            raise ValueError("DecodeStep(cuda_graph=True) needs the model and cache on a CUDA device")
        self.graph = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graph:
            return self.model(tokens, cache=self.cache)[:, :, -1]
        cache = self.cache
        if cache.length + 1 > cache.max_len:
            raise CacheOverflowError(f"KV cache full: {cache.length} slots used + 1 new > max_len={cache.max_len}")
        if self.graph is None:
            self._capture(tokens)
        self.tokens.copy_(tokens)
        self.graph.replay()
        cache.length += 1   # the replay advanced the device-side state; keep the host count in step
        return self.logits

    def _capture(self, tokens: torch.Tensor) -> None:
        cache = self.cache
        saved = (cache.slot.clone(), cache.next_position.clone(), cache.key_valid.clone(), cache.length)

        def restore():   # warm-up and capture must leave the cache as it was
            cache.slot.copy_(saved[0])
            cache.next_position.copy_(saved[1])
            cache.key_valid.copy_(saved[2])
            cache.length = saved[3]

        self.tokens = tokens.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up (lazy initialisation, kernel selection) off the graph
            for _ in range(2):
                self.model(self.tokens, cache=cache)
                restore()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.model(self.tokens, cache=cache)[:, :, -1]
        restore()


def _checked(tokens: torch.Tensor, logits: torch.Tensor, hook: str) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.shape != logits.shape[:2] or tokens.is_floating_point():
        raise ValueError(f"{hook} must return integer tokens [B={logits.shape[0]}, K={logits.shape[1]}], got "
                         f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    return tokens


def left_padding_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """``lengths [B]`` of prompts right-aligned in ``total`` slots -> ``[B, total]`` bool, True = real."""
    return torch.arange(total, device=lengths.device)[None, :] >= (total - lengths)[:, None]


@torch.no_grad()
def generate(model: TransformerLM, prompt: torch.Tensor, max_new_tokens: int, *,
             prompt_lengths: Optional[torch.Tensor] = None, sample_fn: SampleFn = greedy_sample_fn,
             force_fn: Optional[ForceFn] = None, eos_id: Optional[int] = None, eos_stream: Optional[int] = 0,
             pad_id: int = 0, memory: Optional[torch.Tensor] = None, memory_mask: Optional[torch.Tensor] = None,
             cfg_scale: Optional[float] = None, check_every: int = 8, drop_finished: bool = True,
             static_shapes: bool = False, cache_dtype: Optional[torch.dtype] = None,
             cuda_graph: bool = False) -> Generation:
    """Continue ``prompt [B, K, T]`` by up to ``max_new_tokens`` tokens per stream.

    prompt_lengths: ``[B]`` real tokens of each prompt, which sit at the *end* of its row (left
        padding); default all ``T``. Each prompt needs at least one token.
    sample_fn / force_fn: see :data:`SampleFn`, :data:`ForceFn`.
    eos_id: a row ends when stream ``eos_stream`` emits it (``eos_stream=None``: any stream); None
        never ends early.
    memory, memory_mask: cross-attention condition ``[B', M, memory_dim]``, ``[B', M]`` (B' = B, or 2B
        with CFG).
    cfg_scale: classifier-free guidance. The batch then holds 2B rows: rows ``[0, B)`` conditional,
        ``[B, 2B)`` their unconditional twins (own prompts and memory); both halves are fed the
        guided token, and only B rows are returned.
    check_every: steps between host-side checks for finished rows (stop when all ended, drop ended
        rows from the cache when ``drop_finished``).
    static_shapes, cache_dtype: passed to :meth:`TransformerLM.new_cache` (default: the model's dtype).
    cuda_graph: replay the decoding step from a CUDA graph (:class:`DecodeStep`) when the model is on a
        CUDA device (ignored otherwise); implies ``static_shapes`` and keeps finished rows in the batch.
    """
    if prompt.dim() != 3 or prompt.shape[1] != model.num_codebooks:
        raise ValueError(f"expected prompt [B, K={model.num_codebooks}, T], got {tuple(prompt.shape)}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    rows_in, streams, prompt_len = prompt.shape
    if eos_stream is not None and not 0 <= eos_stream < streams:
        raise ValueError(f"eos_stream={eos_stream} is not one of the {streams} streams")
    guided = cfg_scale is not None
    if guided and rows_in % 2:
        raise ValueError(f"with cfg_scale the prompt holds conditional then unconditional rows (2B), got B={rows_in}")
    batch = rows_in // 2 if guided else rows_in
    device = prompt.device

    padding_mask = None
    if prompt_lengths is not None:
        prompt_lengths = torch.as_tensor(prompt_lengths, device=device)
        if prompt_lengths.shape != (rows_in,):
            raise ValueError(f"expected prompt_lengths [B={rows_in}], got {tuple(prompt_lengths.shape)}")
        if bool((prompt_lengths < 1).any()) or bool((prompt_lengths > prompt_len).any()):
            raise ValueError(f"prompt_lengths must be in [1, T={prompt_len}], got {prompt_lengths.tolist()}")
        padding_mask = left_padding_mask(prompt_lengths, prompt_len)

    cuda_graph = cuda_graph and device.type == "cuda"
    if cuda_graph:
        static_shapes, drop_finished = True, False
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(rows_in, prompt_len + max_new_tokens, dtype=cache_dtype,
                                static_shapes=static_shapes)
        step_fn = DecodeStep(model, cache, cuda_graph)
        logits = model(prompt, padding_mask=padding_mask, memory=memory, memory_mask=memory_mask,
                       cache=cache)[:, :, -1]
        out = torch.full((batch, streams, max_new_tokens), pad_id, dtype=torch.long, device=device)
        lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        active = torch.arange(batch, device=device)
        steps_run = max_new_tokens
        for step in range(max_new_tokens):
            if guided:
                half = logits.shape[0] // 2
                logits = classifier_free_guidance(logits[:half], logits[half:], cfg_scale)
            state = StepState(step, out[:, :, :step] if active.shape[0] == batch else out[active, :, :step], active)
            tokens = _checked(sample_fn(logits, state), logits, "sample_fn")
            if force_fn is not None:
                tokens = _checked(force_fn(tokens, state), logits, "force_fn")
            ended = finished[active]
            tokens = tokens.masked_fill(ended[:, None], pad_id)
            out[active, :, step] = tokens
            if eos_id is not None:
                hit = tokens[:, eos_stream] == eos_id if eos_stream is not None else (tokens == eos_id).any(-1)
                lengths[active] = torch.where(hit & ~ended, step, lengths[active])
                finished[active] = ended | hit
            if step == max_new_tokens - 1:
                break
            if eos_id is not None and (step + 1) % check_every == 0:
                ended = finished[active]
                if bool(ended.all()):
                    steps_run = step + 1
                    break
                if drop_finished and bool(ended.any()):
                    keep = (~ended).nonzero().squeeze(1)
                    active, tokens = active[keep], tokens[keep]
                    cache.select_rows(torch.cat([keep, keep + len(ended)]) if guided else keep)
            feed = torch.cat([tokens, tokens]) if guided else tokens
            logits = step_fn(feed[:, :, None])
    finally:
        model.train(was_training)
    return Generation(out[:, :, :steps_run], lengths.clamp(max=steps_run), finished)
