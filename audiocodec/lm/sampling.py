"""Next-token selection from logits: filters, penalties, guidance and samplers.

The functions are pure: they take ``logits [B, V]`` (any leading axes ``[..., V]`` where noted) and
return new tensors; removed candidates get ``-inf``. Random draws take an optional ``torch.Generator``
and are deterministic given it. :class:`TokenSampler` chains them in the usual order for
:func:`~audiocodec.lm.generate.generate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

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
    keep = logits.topk(k, dim=-1).indices
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


def repetition_penalty(logits: torch.Tensor, previous_tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL repetition penalty: each token of ``previous_tokens [B, T]`` has its logit in ``logits [B, V]``
    divided by ``penalty`` if positive, multiplied if negative (so it always gets less likely for
    ``penalty > 1``). Repeats in the history count once."""
    _check_logits(logits)
    _check_history(logits, previous_tokens, "repetition_penalty")
    if not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")
    if penalty == 1.0 or previous_tokens.shape[1] == 0:
        return logits
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
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Repetition-aware sampling (CosyVoice 2's RAS): ``logits [B, V]``, ``previous_tokens [B, T]`` ->
    tokens ``[B]``.

    Draw from the top-k/top-p nucleus; if the drawn token occurs at least ``window * tau_r`` times in
    the last ``window`` previous tokens, draw again from the full distribution instead, which breaks
    the loops nucleus sampling of speech tokens falls into.
    """
    _check_logits(logits)
    _check_history(logits, previous_tokens, "repetition_aware_sample")
    if window < 1 or not tau_r > 0:
        raise ValueError(f"RAS needs window >= 1 and tau_r > 0, got window={window}, tau_r={tau_r}")
    nucleus = sample(top_p_filter(top_k_filter(logits, top_k), top_p), generator)
    full = sample(logits, generator)
    recent = previous_tokens[:, -window:]
    repeats = (recent == nucleus[:, None]).sum(-1)
    return torch.where(repeats >= window * tau_r, full, nucleus)


def _per_row(value: Union[int, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """An int or a ``[B]`` tensor as a ``[B, 1]`` tensor on ``like``'s device."""
    value = torch.as_tensor(value, device=like.device)
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

    def __post_init__(self):
        if self.do_sample:
            apply_temperature(torch.zeros(1), self.temperature)  # validates
        if (self.max_len is not None or not (isinstance(self.min_len, int) and self.min_len == 0)) \
                and self.eos_id is None:
            raise ValueError("TokenSampler: min_len / max_len need eos_id")

    def __call__(self, logits: torch.Tensor, state) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"TokenSampler expects logits [B, K, V], got {tuple(logits.shape)}")
        batch, streams, vocab = logits.shape
        flat = logits.float().reshape(batch * streams, vocab)
        history = state.generated.reshape(batch * streams, state.generated.shape[-1])
        if self.repetition_penalty != 1.0:
            recent = history if self.repetition_window is None else history[:, -self.repetition_window:]
            flat = repetition_penalty(flat, recent, self.repetition_penalty)
        if self.eos_id is not None:
            flat = suppress_eos(flat, self.eos_id, state.step, self._rows(self.min_len, state, streams))
            if self.max_len is not None:
                flat = force_eos(flat, self.eos_id, state.step, self._rows(self.max_len, state, streams))
        if not self.do_sample:
            return greedy(flat).view(batch, streams)
        flat = apply_temperature(flat, self.temperature)
        if self.ras:
            tokens = repetition_aware_sample(flat, history, top_p=self.top_p or 0.8, top_k=self.top_k or 25,
                                             window=self.ras_window, tau_r=self.ras_tau, generator=self.generator)
            return tokens.view(batch, streams)
        if self.top_k is not None:
            flat = top_k_filter(flat, self.top_k)
        if self.top_p is not None:
            flat = top_p_filter(flat, self.top_p)
        return sample(flat, self.generator).view(batch, streams)

    @staticmethod
    def _rows(value: Union[int, torch.Tensor], state, streams: int) -> Union[int, torch.Tensor]:
        """A per-row limit ``[B_total]`` picked for the active rows and repeated for each stream."""
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            return value.to(state.rows.device)[state.rows].repeat_interleave(streams)
        return value
