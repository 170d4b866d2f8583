"""Autoregressive generation with a KV cache: prefill left-padded prompts, then decode step by step.

Per step: logits of the last position -> (classifier-free guidance) -> ``sample_fn`` -> ``force_fn``
-> rows that already ended get ``pad_id`` -> the tokens are fed back through the cache. Whether
every row has ended is checked on the host only every ``check_every`` steps, so decoding runs without
host synchronisations in between; at those checks finished rows can be dropped from the cache.

On CUDA the decoding can be replayed from CUDA graphs (``cuda_graph=True``): a small model at batch 1
otherwise spends most of each step launching kernels. When the hooks are *graph-safe* (see
:func:`is_graph_safe`; :class:`~audiocodec.lm.sampling.TokenSampler` and :func:`greedy_sample_fn` are) the
whole step is captured -- guidance, ``sample_fn``, ``force_fn``, the EOS bookkeeping, the model step --
and replayed step after step without the host waiting, except every ``check_every`` steps to check whether
every row has ended. Other hooks run eagerly around a captured model step (:class:`DecodeStep`). Either way
the tokens are those of the eager loop.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Union

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

    In the graph-safe decoding loop (graph-safe hooks, ``generate(cuda_graph=True)`` on CUDA) ``step`` is a
    0-dim long tensor on the device, ``generated`` the whole fixed-size buffer ``[B, K, max_new_tokens]``
    whose columns ``>= step`` are not generated yet (they hold ``pad_id``), and ``rows`` all ``B`` rows
    (none is dropped): see :attr:`fixed` and :meth:`valid_columns`.
    """
    step: Union[int, torch.Tensor]
    generated: torch.Tensor
    rows: torch.Tensor

    @property
    def fixed(self) -> bool:
        """Whether ``generated`` is a fixed-size buffer whose first ``step`` (a tensor) columns are valid."""
        return isinstance(self.step, torch.Tensor)

    def valid_columns(self) -> torch.Tensor:
        """``[N]`` bool: which columns of ``generated`` hold generated tokens (all, outside the graph-safe loop)."""
        n = self.generated.shape[-1]
        return torch.arange(n, device=self.generated.device) < self.step


#: ``(logits [B_active, K, V], state) -> tokens [B_active, K]``
SampleFn = Callable[[torch.Tensor, StepState], torch.Tensor]
#: ``(tokens [B_active, K], state) -> tokens [B_active, K]``, e.g. a delay pattern forcing special tokens
ForceFn = Callable[[torch.Tensor, StepState], torch.Tensor]


def greedy_sample_fn(logits: torch.Tensor, state: StepState) -> torch.Tensor:
    """The default ``sample_fn``: ``argmax`` per stream, ``[B, K, V] -> [B, K]``."""
    return greedy(logits)


greedy_sample_fn.graph_safe = True


def use_cuda_graphs(setting: Optional[bool], device: torch.device) -> bool:
    """Whether to decode with CUDA graphs: ``setting`` None (auto) = on a CUDA device; True only there."""
    on_cuda = torch.device(device).type == "cuda"
    return on_cuda if setting is None else bool(setting) and on_cuda


def is_graph_safe(hook) -> bool:
    """Whether a ``sample_fn`` / ``force_fn`` declares itself graph-safe (an attribute ``graph_safe = True``).

    A graph-safe hook accepts the :class:`StepState` of the graph-safe loop (``step`` a 0-dim device
    tensor, ``generated`` the fixed-size buffer), runs without host synchronisations (no ``.item()``,
    ``bool(tensor)``, boolean indexing, ``nonzero``, slicing by a tensor value, host-to-device copies),
    returns tensors whose shapes depend only on its inputs' shapes, and keeps no Python-side state from
    step to step (a captured step is replayed without running Python). Random draws must come from the
    default CUDA generator or from generators it lists in an attribute ``generators`` (or ``generator``),
    which the capture registers so that every replay advances them as eager steps would.
    """
    return hook is None or getattr(hook, "graph_safe", False) is True


def hook_generators(*hooks) -> list:
    """The ``torch.Generator`` objects the hooks declare (attributes ``generators`` or ``generator``)."""
    found = []
    for hook in hooks:
        if hook is None:
            continue
        gens = getattr(hook, "generators", None)
        if gens is None:
            gens = (getattr(hook, "generator", None),)
        for g in gens:
            if isinstance(g, torch.Generator) and not any(g is f for f in found):
                found.append(g)
    return found


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
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = self.model(self.tokens, cache=cache)[:, :, -1]
        restore()


def _checked(tokens: torch.Tensor, logits: torch.Tensor, hook: str) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.shape != logits.shape[:2] or tokens.is_floating_point():
        raise ValueError(f"{hook} must return integer tokens [B={logits.shape[0]}, K={logits.shape[1]}], got "
                         f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    return tokens


class _FixedDecoder:
    """The graph-safe decoding loop of :func:`generate`: fixed-size buffers (``out [B, K, N]``, ``lengths``,
    ``finished``, the logits), the step count on the device, no row ever dropped. One step: guidance ->
    ``sample_fn`` -> ``force_fn`` -> pad for ended rows -> write ``out[:, :, step]`` -> EOS bookkeeping ->
    ``step += 1`` -> the model reads the tokens and writes the next logits. Steps run eagerly, or on CUDA
    ``steps_per_graph`` steps at a time replayed from one captured CUDA graph (:meth:`run`)."""

    def __init__(self, model: TransformerLM, cache: KVCache, logits: torch.Tensor, *, batch: int,
                 max_new_tokens: int, sample_fn: SampleFn, force_fn: Optional[ForceFn], eos_id: Optional[int],
                 eos_stream: Optional[int], pad_id: int, cfg_scale: Optional[float], compile_step: bool = False):
        device = logits.device
        streams = logits.shape[1]
        self.model, self.cache = model, cache
        self.sample_fn, self.force_fn = sample_fn, force_fn
        self.eos_id, self.eos_stream, self.pad_id, self.cfg_scale = eos_id, eos_stream, pad_id, cfg_scale
        self.logits = logits.clone(memory_format=torch.contiguous_format)   # the static buffer a graph reads
        self.out = torch.full((batch, streams, max_new_tokens), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.rows = torch.arange(batch, device=device)
        self.graph = None
        self.graph_steps = 0
        self.pick, self.feed = self._pick, self._feed
        if compile_step:   # fused kernels; compiled at the first step (or the warm-up before a capture)
            self.pick = torch.compile(self._pick)
            self.feed = torch.compile(self._feed)

    def _step(self, logits: torch.Tensor, feed: bool) -> Optional[torch.Tensor]:
        """One step from ``logits [B', K, V]``; returns the next logits (None without ``feed``)."""
        tokens = self.pick(logits)
        return self.feed(tokens) if feed else None

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The tokens ``[B, K]`` of this step from ``logits [B', K, V]``, written to ``out`` with the EOS
        bookkeeping; advances ``step``."""
        if self.cfg_scale is not None:
            half = logits.shape[0] // 2
            logits = classifier_free_guidance(logits[:half], logits[half:], self.cfg_scale)
        state = StepState(self.step, self.out, self.rows)
        tokens = _checked(self.sample_fn(logits, state), logits, "sample_fn")
        if self.force_fn is not None:
            tokens = _checked(self.force_fn(tokens, state), logits, "force_fn")
        ended = self.finished
        tokens = tokens.to(torch.long).masked_fill(ended[:, None], self.pad_id)
        self.out.index_copy_(2, self.step.view(1), tokens[:, :, None])
        if self.eos_id is not None:
            eos = self.eos_id
            hit = tokens[:, self.eos_stream] == eos if self.eos_stream is not None else (tokens == eos).any(-1)
            self.lengths.copy_(torch.where(hit & ~ended, self.step, self.lengths))
            self.finished.copy_(ended | hit)
        self.step += 1
        return tokens

    def _feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model reads this step's ``tokens [B, K]`` (both halves with CFG) -> the next logits."""
        tokens = torch.cat([tokens, tokens]) if self.cfg_scale is not None else tokens
        return self.model(tokens[:, :, None], cache=self.cache)[:, :, -1]

    def _run_steps(self, n: int, feed_last: bool = True):
        """``n`` steps from the logits buffer; the last one feeds the model (and refills the buffer) only
        with ``feed_last``."""
        logits = self.logits
        for i in range(n):
            feed = feed_last or i < n - 1
            nxt = self._step(logits, feed)
            logits = nxt if feed else logits
        if feed_last:
            self.logits.copy_(logits)

    # -- CUDA graph ------------------------------------------------------------------------------------
    def _snapshot(self, generators: list):
        cache = self.cache
        tensors = [self.logits, self.out, self.lengths, self.finished, self.step, cache.slot, cache.next_position,
                   cache.key_valid]
        saved = [t.clone() for t in tensors]
        length = cache.length
        states = [(g, g.get_state()) for g in generators]

        def restore():
            for t, v in zip(tensors, saved):
                t.copy_(v)
            cache.length = length
            for g, state in states:
                g.set_state(state)
        return restore

    def _capture(self, n: int):
        """Capture ``n`` steps (each feeding the model) in one CUDA graph. A warm-up step runs first on
        a side stream (lazy initialisations stay out of the graph) and is undone, random generators
        included; capturing itself runs nothing, so the state is left as it was."""
        device = self.logits.device
        index = device.index if device.index is not None else torch.cuda.current_device()
        generators = [g for g in hook_generators(self.sample_fn, self.force_fn) if g.device.type == "cuda"]
        default = torch.cuda.default_generators[index]
        restore = self._snapshot(generators + ([] if any(g is default for g in generators) else [default]))
        cache = self.cache
        length = cache.length
        main = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(main)
        try:
            with torch.cuda.stream(side):
                self._run_steps(1)
            main.wait_stream(side)
            restore()
            side.wait_stream(main)
            graph = torch.cuda.CUDAGraph()
            for g in generators:
                graph.register_generator_state(g)
            torch.cuda.synchronize(device)
            with torch.cuda.stream(side):
                graph.capture_begin(capture_error_mode="thread_local")   # other threads (compile workers) may call CUDA meanwhile
                try:
                    self._run_steps(n)
                except BaseException:
                    try:
                        graph.capture_end()
                    except Exception:
                        pass
                    raise
                graph.capture_end()
            main.wait_stream(side)
        except BaseException:
            main.wait_stream(side)
            _end_capture_mode(generators + [default])
            restore()
            raise
        finally:
            cache.length = length   # the capture ran the Python of n steps but wrote nothing
        self.graph, self.graph_steps = graph, n

    def _replay(self):
        cache = self.cache
        if cache.length + self.graph_steps > cache.max_len:
            raise CacheOverflowError(f"KV cache full: {cache.length} slots used + {self.graph_steps} new > "
                                     f"max_len={cache.max_len}")
        self.graph.replay()
        cache.length += self.graph_steps   # the replay advanced the device-side state; keep the host count in step

    def run(self, check_every: int, cuda_graph: bool, steps_per_graph: int = 1) -> Iterator[int]:
        """Decode every step, yielding the number of steps run at each check (every ``check_every`` steps) and,
        last, in all: ``N``, or fewer when every row ended at a check, as in the eager loop. With ``cuda_graph``
        the steps run in units of ``steps_per_graph`` (a divisor of ``check_every``) replayed from one CUDA
        graph, the last ``N mod steps_per_graph`` eagerly; the replays are queued without waiting, the host
        synchronises only at the checks (a check without EOS, ``eos_id=None``, does not wait)."""
        total = self.out.shape[-1]
        unit = steps_per_graph if cuda_graph else check_every
        done = 0
        while done < total:
            n = min(unit, total - done)
            if cuda_graph and self.graph is None and n == unit:
                try:
                    with torch.cuda.device(self.logits.device):
                        self._capture(n)
                except Exception as error:
                    warnings.warn(f"generate(cuda_graph=True): capturing the whole decoding step failed "
                                  f"({type(error).__name__}: {error}); decoding it eagerly", RuntimeWarning)
                    cuda_graph = False
            if self.graph is not None and n == self.graph_steps:
                self._replay()
            else:
                self._run_steps(n, feed_last=done + n < total)
            done += n
            if done < total and done % check_every == 0:
                if self.eos_id is not None and bool(self.finished.all()):
                    break
                yield done
        yield done


def _end_capture_mode(generators) -> None:
    """After a capture that failed: CUDA generators stay marked as capturing (their next draw outside a graph
    fails: "Offset increment outside graph capture"); give each a fresh copy of its state, which is not."""
    for g in generators:
        g.graphsafe_set_state(g.clone_state())


def left_padding_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """``lengths [B]`` of prompts right-aligned in ``total`` slots -> ``[B, total]`` bool, True = real."""
    return torch.arange(total, device=lengths.device)[None, :] >= (total - lengths)[:, None]


def generate(model: TransformerLM, prompt: torch.Tensor, max_new_tokens: int, **options) -> Generation:
    """Continue ``prompt [B, K, T]`` by up to ``max_new_tokens`` tokens per stream: the last
    :class:`Generation` of :func:`generate_stream` (see there for the options)."""
    result = None
    for result in generate_stream(model, prompt, max_new_tokens, **options):
        pass
    return result


@torch.no_grad()
def generate_stream(model: TransformerLM, prompt: torch.Tensor, max_new_tokens: int, *,
                    prompt_lengths: Optional[torch.Tensor] = None, sample_fn: SampleFn = greedy_sample_fn,
                    force_fn: Optional[ForceFn] = None, eos_id: Optional[int] = None, eos_stream: Optional[int] = 0,
                    pad_id: int = 0, memory: Optional[torch.Tensor] = None,
                    memory_mask: Optional[torch.Tensor] = None, cfg_scale: Optional[float] = None,
                    check_every: int = 8, drop_finished: bool = True, static_shapes: bool = False,
                    cache_dtype: Optional[torch.dtype] = None, cuda_graph: bool = False, steps_per_graph: int = 1,
                    compile_step: bool = False, _graph_step: bool = False) -> Iterator[Generation]:
    """Continue ``prompt [B, K, T]`` by up to ``max_new_tokens`` tokens per stream, yielding what exists so far
    after every ``check_every`` steps (a :class:`Generation` of the ``n`` steps run: ``tokens [B, K, n]``, the
    rows' lengths and ends as of then; views of the decoder's buffers, valid until the next item: copy what you
    keep) and, last, the whole generation (what :func:`generate` returns). Streaming consumers (audio as the
    tokens arrive) read the partial items; the steps and their tokens are the same however it is consumed. As a
    generator it starts (and checks its arguments) at the first ``next``.

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
    cuda_graph: replay decoding from CUDA graphs when the model is on a CUDA device (ignored otherwise);
        implies ``static_shapes`` and keeps finished rows in the batch (they are fed ``pad_id``). With
        graph-safe hooks (:func:`is_graph_safe`) the whole step is captured and replayed, the replays queued
        without waiting: the host only waits at the ``check_every`` checks; otherwise only the model step is
        (:class:`DecodeStep`) and the hooks run eagerly. The tokens are the same either way, and so are the
        random draws (seeded sampling gives the eager loop's tokens when no row is dropped:
        ``drop_finished=False``, or rows that end together).
    steps_per_graph: decoding steps unrolled in one captured graph (a divisor of ``check_every``). One
        capture costs about as much host time as running its steps eagerly, and the last
        ``max_new_tokens mod steps_per_graph`` steps run eagerly, so few is cheap; more saves only the
        graph launches in between.
    compile_step: with the graph-safe loop (``cuda_graph`` with graph-safe hooks, or ``_graph_step``), run
        its two halves -- sampling with the bookkeeping, and the model step -- through ``torch.compile``
        (fused kernels: fewer launches per replayed step; the first call compiles, which takes a while).
        Ignored by the eager loop.
    _graph_step: run the graph-safe loop (fixed-size buffers, ``state.step`` a device tensor) without
        capturing it, e.g. on the CPU, to test that it matches the eager loop; needs graph-safe hooks.
    """
    if prompt.dim() != 3 or prompt.shape[1] != model.num_codebooks:
        raise ValueError(f"expected prompt [B, K={model.num_codebooks}, T], got {tuple(prompt.shape)}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    if not isinstance(steps_per_graph, int) or steps_per_graph < 1 or check_every % steps_per_graph:
        raise ValueError(f"steps_per_graph must be an int >= 1 dividing check_every={check_every}, "
                         f"got {steps_per_graph!r}")
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
    hooks_graph_safe = is_graph_safe(sample_fn) and is_graph_safe(force_fn)
    if _graph_step and not hooks_graph_safe:
        raise ValueError("generate(_graph_step=True) needs graph-safe sample_fn / force_fn (graph_safe = True)")
    fixed = _graph_step or (cuda_graph and hooks_graph_safe)
    if cuda_graph or (fixed and compile_step):   # one shape for every step: replayable, compiled once
        static_shapes, drop_finished = True, False
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(rows_in, prompt_len + max_new_tokens, dtype=cache_dtype,
                                static_shapes=static_shapes)
        logits = model(prompt, padding_mask=padding_mask, memory=memory, memory_mask=memory_mask,
                       cache=cache)[:, :, -1]
        if fixed:
            decoder = _FixedDecoder(model, cache, logits, batch=batch, max_new_tokens=max_new_tokens,
                                    sample_fn=sample_fn, force_fn=force_fn, eos_id=eos_id, eos_stream=eos_stream,
                                    pad_id=pad_id, cfg_scale=cfg_scale, compile_step=compile_step)
            for steps_run in decoder.run(check_every, cuda_graph, steps_per_graph):
                yield Generation(decoder.out[:, :, :steps_run], decoder.lengths.clamp(max=steps_run),
                                 decoder.finished)
            return
        step_fn = DecodeStep(model, cache, cuda_graph)
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
            if (step + 1) % check_every == 0:
                if eos_id is not None:
                    ended = finished[active]
                    if bool(ended.all()):
                        steps_run = step + 1
                        break
                    if drop_finished and bool(ended.any()):
                        keep = (~ended).nonzero().squeeze(1)
                        active, tokens = active[keep], tokens[keep]
                        cache.select_rows(torch.cat([keep, keep + len(ended)]) if guided else keep)
                yield Generation(out[:, :, :step + 1], lengths.clamp(max=step + 1), finished)
            feed = torch.cat([tokens, tokens]) if guided else tokens
            logits = step_fn(feed[:, :, None])
        yield Generation(out[:, :, :steps_run], lengths.clamp(max=steps_run), finished)
    finally:
        model.train(was_training)


# generate takes generate_stream's options: show them in help() and IDEs
generate.__signature__ = inspect.signature(generate_stream).replace(return_annotation="Generation")
