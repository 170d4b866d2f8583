"""Next-token selection from logits: filters, penalties, guidance and samplers.

The functions are pure: they take ``logits [B, V]`` (any leading axes ``[..., V]`` where noted) and
return new tensors; removed candidates get ``-inf``. Random draws take an optional ``torch.Generator``
and are deterministic given it. :class:`TokenSampler` chains them in the usual order for
:func:`~audiocodec.lm.generate.generate`.

Graph-safe use. Every function here runs without a host synchronisation and with shapes that depend only
on its inputs' shapes, so it can be captured in a CUDA graph. The history-based ones
(:func:`repetition_penalty`, :func:`repetition_aware_sample`) also take the history as a *fixed-size*
buffer with a ``valid`` mask of the columns that count (:func:`last_tokens` picks the last ``window``
of the first ``count`` columns, ``count`` possibly a device tensor), which gives the same result as
passing just those columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

import torch

NEG_INF = float("-inf")


def _check_logits(logits: torch.Tensor, name: str = "logits"):
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1 or not logits.is_floating_point():
        raise ValueError(f"{name}: expected floating-point logits [..., V], got "
                         f"{getattr(logits, 'dtype', type(logits).__name__)} {tuple(getattr(logits, 'shape', ()))}")


def _check_history(logits: torch.Tensor, history: torch.Tensor, name: str):
    if history.dim() != 2 or history.shape[0] != logits.shape[0] or logits.dim() != 2:
        raise ValueError(f"{name}: expected logits [B, V] and previous tokens [B, T] with the same B, got "
                         f"{tuple(logits.shape)} and {tuple(history.shape)}")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """``[..., V] -> [...]``: the most likely token (first one on ties)."""
    _check_logits(logits)
    return logits.argmax(-1)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` (``[..., V]``); use :func:`greedy` for temperature 0."""
    _check_logits(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy() for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row (``[..., V]``, ties broken by index)."""
    _check_logits(logits)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k needs an int k >= 1, got {k!r}")
    if k >= logits.shape[-1]:
        return logits
    keep = logits.topk(k, dim=-1, sorted=False).indices   # the set, not its order: no sort of the k
    return torch.full_like(logits, NEG_INF).scatter(-1, keep, logits.gather(-1, keep))


def top_p_filter(logits: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Nucleus filter (``[..., V]``): keep the smallest set of most likely tokens whose probabilities
    sum to at least ``p`` (and at least ``min_keep`` tokens)."""
    _check_logits(logits)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top-p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[..., :min_keep] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def _check_valid(previous_tokens: torch.Tensor, valid: Optional[torch.Tensor], name: str):
    if valid is None:
        return
    if valid.dtype != torch.bool or valid.dim() > 2 or valid.shape[-1] != previous_tokens.shape[-1] or \
            (valid.dim() == 2 and valid.shape[0] not in (1, previous_tokens.shape[0])):
        raise ValueError(f"{name}: valid must be a bool mask [T] or [B or 1, T] over the previous tokens "
                         f"{tuple(previous_tokens.shape)}, got {valid.dtype} {tuple(valid.shape)}")


def last_tokens(history: torch.Tensor, count: Union[int, torch.Tensor], window: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``window`` of the first ``count`` columns of a fixed-size history ``[B, N]`` (columns
    ``>= count`` not written yet): ``(tokens [B, window], valid [1, window])``, ``valid`` False for the
    slots before the first column (when ``count < window``). ``count``: an int or a 0-dim long tensor
    (on the history's device); no host synchronisation, fixed shapes."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"last_tokens needs an int window >= 1, got {window!r}")
    if history.dim() != 2:
        raise ValueError(f"last_tokens: expected a history [B, N], got {tuple(history.shape)}")
    positions = torch.arange(window, device=history.device) + (count - window)      # [window]
    valid = positions >= 0
    if history.shape[1] == 0:
        return history.new_zeros(history.shape[0], window), torch.zeros_like(valid)[None]
    index = positions.clamp(min=0, max=history.shape[1] - 1)
    return history.index_select(1, index), valid[None]


def repetition_penalty(logits: torch.Tensor, previous_tokens: torch.Tensor, penalty: float,
                       valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """CTRL repetition penalty: each token of ``previous_tokens [B, T]`` has its logit in ``logits [B, V]``
    divided by ``penalty`` if positive, multiplied if negative (so it always gets less likely for
    ``penalty > 1``). Repeats in the history count once.

    valid: ``[T]`` or ``[B or 1, T]`` bool, which columns of ``previous_tokens`` count (a fixed-size
        history buffer); the result equals passing only those columns."""
    _check_logits(logits)
    _check_history(logits, previous_tokens, "repetition_penalty")
    _check_valid(previous_tokens, valid, "repetition_penalty")
    if not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")
    if penalty == 1.0 or previous_tokens.shape[1] == 0:
        return logits
    if valid is not None:
        # which tokens were seen, [B, V]: invalid columns write to a sentinel column V, cut off after
        vocab = logits.shape[-1]
        index = torch.where(valid, previous_tokens, vocab)
        seen = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
        seen = seen.scatter_(-1, index, True)[:, :vocab]
        return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
    seen = logits.gather(-1, previous_tokens)
    penalised = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous_tokens, penalised)


def sample(logits: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)``: ``[..., V] -> [...]``.

    Uses the exponential-race form of sampling (``argmax(p / E)`` with ``E ~ Exp(1)``), which needs
    no host synchronisation; ``-inf`` logits are never drawn.
    """
    _check_logits(logits)
    probs = logits.float().softmax(-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(-1)


def repetition_aware_sample(logits: torch.Tensor, previous_tokens: torch.Tensor, top_p: float = 0.8,
                            top_k: int = 25, window: int = 10, tau_r: float = 0.1,
                            generator: Optional[torch.Generator] = None,
                            valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Repetition-aware sampling (CosyVoice 2's RAS): ``logits [B, V]``, ``previous_tokens [B, T]`` ->
    tokens ``[B]``.

    Draw from the top-k/top-p nucleus; if the drawn token occurs at least ``window * tau_r`` times in
    the last ``window`` previous tokens, draw again from the full distribution instead, which breaks
    the loops nucleus sampling of speech tokens falls into. Both draws are always made (two races of
    ``[B, V]``), so the generator advances the same way whichever is kept.

    valid: ``[T]`` or ``[B or 1, T]`` bool, which columns of ``previous_tokens`` are real tokens (e.g.
        from :func:`last_tokens`); the last ``window`` columns are read either way.
    """
    _check_logits(logits)
    _check_history(logits, previous_tokens, "repetition_aware_sample")
    _check_valid(previous_tokens, valid, "repetition_aware_sample")
    if window < 1 or not tau_r > 0:
        raise ValueError(f"RAS needs window >= 1 and tau_r > 0, got window={window}, tau_r={tau_r}")
    nucleus = sample(top_p_filter(top_k_filter(logits, top_k), top_p), generator)
    full = sample(logits, generator)
    recent = previous_tokens[:, -window:]
    same = recent == nucleus[:, None]
    if valid is not None:
        same = same & valid[..., -window:]
    repeats = same.sum(-1)
    return torch.where(repeats >= window * tau_r, full, nucleus)


def _per_row(value: Union[int, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """An int or a ``[B]`` tensor (or a 0-dim one) as a ``[B, 1]`` tensor on ``like``'s device. A number
    is filled on the device (no host-to-device copy, so this can be captured in a CUDA graph)."""
    if isinstance(value, torch.Tensor):
        value = value.to(like.device)
    else:
        value = torch.full((), value, device=like.device)
    if value.dim() == 0:
        value = value.expand(like.shape[0])
    if value.shape != like.shape[:1]:
        raise ValueError(f"expected an int or a per-row tensor [B={like.shape[0]}], got {tuple(value.shape)}")
    return value[:, None]


def suppress_eos(logits: torch.Tensor, eos_id: int, num_generated: Union[int, torch.Tensor],
                 min_len: Union[int, torch.Tensor]) -> torch.Tensor:
    """Forbid ``eos_id`` in rows of ``logits [B, V]`` that have generated fewer than ``min_len`` tokens
    (ints, or per-row ``[B]`` tensors), so at least ``min_len`` tokens precede EOS."""
    _check_logits(logits)
    too_early = _per_row(num_generated, logits) < _per_row(min_len, logits)  # [B, 1]
    is_eos = torch.arange(logits.shape[-1], device=logits.device) == eos_id
    return logits.masked_fill(too_early & is_eos, NEG_INF)


def force_eos(logits: torch.Tensor, eos_id: int, num_generated: Union[int, torch.Tensor],
              max_len: Union[int, torch.Tensor]) -> torch.Tensor:
    """In rows of ``logits [B, V]`` that have generated ``max_len`` tokens or more, allow only
    ``eos_id``, so at most ``max_len`` tokens precede EOS."""
    _check_logits(logits)
    at_limit = _per_row(num_generated, logits) >= _per_row(max_len, logits)
    not_eos = torch.arange(logits.shape[-1], device=logits.device) != eos_id
    return logits.masked_fill(at_limit & not_eos, NEG_INF)


def classifier_free_guidance(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + (cond - uncond) * scale`` on logits of the same shape ``[..., V]``; scale 1 gives
    ``cond``, 0 gives ``uncond``."""
    _check_logits(cond_logits, "cond_logits")
    if cond_logits.shape != uncond_logits.shape:
        raise ValueError(f"CFG needs logits of one shape, got {tuple(cond_logits.shape)} and "
                         f"{tuple(uncond_logits.shape)}")
    return uncond_logits + (cond_logits - uncond_logits) * scale


@dataclass
class TokenSampler:
    """A ``sample_fn`` for :func:`~audiocodec.lm.generate.generate`:
    ``(logits [B, K, V], state) -> tokens [B, K]``, each stream handled as its own row.

    Order: repetition penalty (over the generated tokens, or the last ``repetition_window``) -> EOS
    suppression before ``min_len`` / forcing at ``max_len`` (need ``eos_id``; ints or per-row ``[B]``
    tensors indexed by ``state.rows``) -> greedy, or temperature -> RAS (``ras=True``, uses
    ``top_k``/``top_p``, defaults 25 / 0.8) or top-k -> top-p -> sample.

    Graph-safe (:attr:`graph_safe`): given a :class:`~audiocodec.lm.generate.StepState` whose ``step`` is a
    0-dim device tensor, ``generated`` is read as the whole fixed-size buffer ``[B, K, N]`` of which the
    first ``step`` columns are valid, and every operation is free of host synchronisations and of
    data-dependent shapes, so the step can be captured in a CUDA graph. The tokens and the random draws
    (number, shapes, order) are the same as with a Python-int ``step`` and the ``[B, K, step]`` history.
    """
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    do_sample: bool = True
    repetition_penalty: float = 1.0
    repetition_window: Optional[int] = None
    ras: bool = False
    ras_window: int = 10
    ras_tau: float = 0.1
    eos_id: Optional[int] = None
    min_len: Union[int, torch.Tensor] = 0
    max_len: Optional[Union[int, torch.Tensor]] = None
    generator: Optional[torch.Generator] = None
    #: per-row limits moved to another device once (a graph replays, it cannot copy from the host)
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    #: it can be captured in a CUDA graph by ``generate(cuda_graph=True)``
    graph_safe: ClassVar[bool] = True

    def __post_init__(self):
        if self.do_sample:
            apply_temperature(torch.zeros(1), self.temperature)  # validates
        if (self.max_len is not None or not (isinstance(self.min_len, int) and self.min_len == 0)) \
                and self.eos_id is None:
            raise ValueError("TokenSampler: min_len / max_len need eos_id")
        if self.repetition_window is not None and (not isinstance(self.repetition_window, int)
                                                   or self.repetition_window < 1):
            raise ValueError(f"TokenSampler: repetition_window must be an int >= 1, got {self.repetition_window!r}")

    @property
    def generators(self) -> tuple:
        """The generators it draws from (for CUDA-graph capture: replays must advance them)."""
        return () if self.generator is None else (self.generator,)

    def __call__(self, logits: torch.Tensor, state) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"TokenSampler expects logits [B, K, V], got {tuple(logits.shape)}")
        batch, streams, vocab = logits.shape
        flat = logits.float().reshape(batch * streams, vocab)
        history = state.generated.reshape(batch * streams, state.generated.shape[-1])
        fixed = isinstance(state.step, torch.Tensor)   # a fixed-size history, its first `step` columns valid
        if fixed and state.generated.shape[:2] != (batch, streams):
            raise ValueError(f"TokenSampler: history {tuple(state.generated.shape)} does not match logits "
                             f"{tuple(logits.shape)}")
        if self.repetition_penalty != 1.0:
            if not fixed:
                recent = history if self.repetition_window is None else history[:, -self.repetition_window:]
                flat = repetition_penalty(flat, recent, self.repetition_penalty)
            elif self.repetition_window is None:
                flat = repetition_penalty(flat, history, self.repetition_penalty, valid=state.valid_columns())
            else:
                recent, valid = last_tokens(history, state.step, self.repetition_window)
                flat = repetition_penalty(flat, recent, self.repetition_penalty, valid=valid)
        if self.eos_id is not None:
            flat = suppress_eos(flat, self.eos_id, state.step, self._rows(self.min_len, state, streams))
            if self.max_len is not None:
                flat = force_eos(flat, self.eos_id, state.step, self._rows(self.max_len, state, streams))
        if not self.do_sample:
            return greedy(flat).view(batch, streams)
        flat = apply_temperature(flat, self.temperature)
        if self.ras:
            valid = None
            if fixed:
                history, valid = last_tokens(history, state.step, self.ras_window)
            tokens = repetition_aware_sample(flat, history, top_p=self.top_p or 0.8, top_k=self.top_k or 25,
                                             window=self.ras_window, tau_r=self.ras_tau, generator=self.generator,
                                             valid=valid)
            return tokens.view(batch, streams)
        if self.top_k is not None:
            flat = top_k_filter(flat, self.top_k)
        if self.top_p is not None:
            flat = top_p_filter(flat, self.top_p)
        return sample(flat, self.generator).view(batch, streams)

    def _rows(self, value: Union[int, torch.Tensor], state, streams: int) -> Union[int, torch.Tensor]:
        """A per-row limit ``[B_total]`` picked for the active rows and repeated for each stream."""
        if not isinstance(value, torch.Tensor):
            return value
        device = state.rows.device
        if value.device != device:   # moved once per device (no host-to-device copy inside a graph)
            key = (id(value), device)
            moved = self._on_device.get(key)
            if moved is None or moved[0] is not value:
                moved = self._on_device[key] = (value, value.to(device))
            value = moved[1]
        if value.dim() != 1:
            return value
        rows = value.index_select(0, state.rows)
        return rows[:, None].expand(-1, streams).reshape(-1)
