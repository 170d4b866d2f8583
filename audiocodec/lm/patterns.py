"""Codebook patterns: how the ``K`` parallel code streams of a codec become one token sequence for a
language model, and back.

Two layouts live here, both used by the TTS and song generation models:

* MusicGen's patterns (audiocraft's ``codebooks_patterns``). A :class:`CodebookPattern` is a *layout*:
  a list of sequence steps, each a list of ``(t, q)`` coordinates (frame ``t`` of codebook ``q``) that
  the model predicts at that step. Step 0 is always empty (the step of the initial special token).
  Building a sequence from codes ``[B, K, T]`` gives ``[B, K, S]`` with a special token where a step
  holds no coordinate of codebook ``q`` or holds a frame ``t >= T``. Providers make the layout for any
  ``T``: ``delay`` (step ``s >= 1`` holds frame ``s - 1 - d_q`` of codebook ``q``), ``parallel`` (all
  delays 0), ``unroll`` (flattened, one codebook per step), ``coarse_first`` (all of codebook 0, then
  the rest with delays) and ``musiclm`` (groups of codebooks flattened one group after the other).
  :func:`build_pattern_provider` looks them up by name.

* SongGen's BOS/EOS delay layout (:func:`songgen_training_sequences`): row ``k`` holds ``k`` BOS
  tokens, the ``T`` codes, then EOS to the end (``T + K`` columns); the decoder input is the labels
  shifted right behind a start column, and the loss covers the codes and one EOS per row. Dual-track
  songs (accompaniment and vocal) are stacked as ``2K`` rows (:func:`parallel_tracks`) or alternate
  frame by frame on ``K`` rows (:func:`interleave_tracks`); every arrangement has an exact inverse.

Everything is index arithmetic (gather / index_put) on whole batches; no Python loop runs over ``B``.
"""
from __future__ import annotations

import inspect
import numbers
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import CodesError, ConfigError


class Coord(NamedTuple):
    """One cell of the code grid: frame ``t`` of codebook ``q``."""
    t: int
    q: int


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(value, what: str, minimum: int = 0) -> int:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_int_list(values, what: str, length: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{what} must be a list of {length} integers, got {values!r}")
    if len(values) != length:
        raise ConfigError(f"{what} must have one entry per codebook ({length}), got {len(values)}: {list(values)}")
    for v in values:
        if not _is_int(v):
            raise ConfigError(f"{what} must hold integers, got {list(values)}")
        if v < 0:
            raise ConfigError(f"{what} must not be negative, got {list(values)}")
    return [int(v) for v in values]


def _check_tokens(x, what: str, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise CodesError(f"{what} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise CodesError(f"{what} must be {layout} ({ndim} dims), got shape {tuple(x.shape)}")
    return x


# ----------------------------------------------------------------------------------------------------
# MusicGen patterns
# ----------------------------------------------------------------------------------------------------

class CodebookPattern:
    """The layout of ``n_q`` codebooks of ``timesteps`` frames as a sequence of ``S = len(layout)`` steps.

    Args:
        layout: one list of ``(t, q)`` pairs per sequence step; ``layout[0]`` must be empty. Within a
            step a codebook appears at most once, and each codebook's frames strictly increase along
            the sequence. Frames ``t >= timesteps`` are allowed (they hold the special token).
        timesteps: ``T``, the number of frames the pattern was made for.
        n_q: ``K``, the number of codebooks.

    Shapes: codes ``[B, K, T]``, sequences ``[B, K, S]``, logits ``[B, card, K, S]``; the index and
    mask tensors are ``[K, S]`` (sequence side) or ``[K, T]`` (frame side). ``S`` is
    :attr:`num_steps`, or :attr:`valid_steps` with ``keep_only_valid_steps=True`` (the steps before
    the trailing ones that only hold frames ``>= T``).
    """

    def __init__(self, layout: Sequence[Sequence[tuple[int, int]]], timesteps: int, n_q: int):
        self.timesteps = _check_int(timesteps, "timesteps", 1)
        self.n_q = _check_int(n_q, "n_q", 1)
        if len(layout) == 0 or len(layout[0]) != 0:
            raise ConfigError("a pattern layout must start with an empty step (the initial special token), "
                              f"got first step {list(layout[0]) if len(layout) else 'none (empty layout)'}")
        self.layout: tuple[tuple[Coord, ...], ...] = tuple(
            tuple(Coord(int(t), int(q)) for t, q in step) for step in layout)
        self._check_layout()
        steps, frames, books = [], [], []
        for s, step in enumerate(self.layout):
            for coord in step:
                steps.append(s)
                frames.append(coord.t)
                books.append(coord.q)
        self._coord_step = torch.tensor(steps, dtype=torch.long)
        self._coord_t = torch.tensor(frames, dtype=torch.long)
        self._coord_q = torch.tensor(books, dtype=torch.long)
        last_frame_end = max((t + 1 for t in frames), default=0)
        self.max_delay = max(last_frame_end - self.timesteps, 0)  # trailing steps that miss frames < T
        self._index_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _check_layout(self):
        last_frame = [-1] * self.n_q
        for s, step in enumerate(self.layout):
            seen = set()
            for t, q in step:
                if not 0 <= q < self.n_q:
                    raise ConfigError(f"pattern step {s}: codebook {q} is outside 0..{self.n_q - 1}")
                if t < 0:
                    raise ConfigError(f"pattern step {s}: negative frame {t} for codebook {q}")
                if q in seen:
                    raise ConfigError(f"pattern step {s}: codebook {q} appears twice")
                if t <= last_frame[q]:
                    raise ConfigError(f"pattern step {s}: frame {t} of codebook {q} does not come after "
                                      f"frame {last_frame[q]} placed earlier")
                seen.add(q)
                last_frame[q] = t

    def __repr__(self) -> str:
        return f"CodebookPattern(n_q={self.n_q}, timesteps={self.timesteps}, num_steps={self.num_steps})"

    @property
    def num_steps(self) -> int:
        """``S``: steps of a built sequence, the initial special-token step included."""
        return len(self.layout)

    @property
    def valid_steps(self) -> int:
        """Steps kept by ``keep_only_valid_steps=True``: :attr:`num_steps` minus :attr:`max_delay`."""
        return len(self.layout) - self.max_delay

    def first_step_with_frame(self, t: int) -> Optional[int]:
        """The first sequence step holding frame ``t`` of any codebook (``None`` if none does); a
        generator continuing a prompt of ``t`` frames starts there."""
        hits = self._coord_step[self._coord_t == t]
        return int(hits.min()) if hits.numel() else None

    # index tables -----------------------------------------------------------------------------------

    def _steps_limit(self, keep_only_valid_steps: bool) -> int:
        return self.valid_steps if keep_only_valid_steps else self.num_steps

    def sequence_index(self, n_frames: int, keep_only_valid_steps: bool = False,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Where each sequence cell comes from in the flattened codes ``[K * n_frames]``.

        Returns ``(indexes [K, S], mask [K, S])``: ``indexes[q, s] = q * n_frames + t`` where step ``s``
        holds frame ``t < n_frames`` of codebook ``q`` (``mask`` True), else ``K * n_frames``.
        """
        key = ("sequence", n_frames, keep_only_valid_steps, str(device))
        if key not in self._index_cache:
            n_steps = self._steps_limit(keep_only_valid_steps)
            keep = (self._coord_step < n_steps) & (self._coord_t < n_frames)
            q, s, t = self._coord_q[keep], self._coord_step[keep], self._coord_t[keep]
            indexes = torch.full((self.n_q, n_steps), self.n_q * n_frames, dtype=torch.long)
            mask = torch.zeros(self.n_q, n_steps, dtype=torch.bool)
            indexes[q, s] = q * n_frames + t
            mask[q, s] = True
            self._index_cache[key] = (indexes.to(device), mask.to(device))
        return self._index_cache[key]

    def frame_index(self, n_steps: int, keep_only_valid_steps: bool = False, model_output: bool = False,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Where each code frame comes from in a flattened sequence ``[K * n_steps]``.

        ``model_output=True`` reads a model's output, shifted one step left: position ``p`` of it holds
        the prediction of step ``p + 1`` (layout step 0 has nothing to predict).
        Returns ``(indexes [K, T], mask [K, T])``: ``indexes[q, t] = q * n_steps + p`` where frame ``t``
        of codebook ``q`` sits at position ``p < n_steps`` (``mask`` True), else ``K * n_steps``.
        """
        limit = self._steps_limit(keep_only_valid_steps)
        if not 1 <= n_steps <= limit:
            raise CodesError(f"a sequence of this pattern has 1..{limit} steps "
                             f"(keep_only_valid_steps={keep_only_valid_steps}), got {n_steps}")
        key = ("frames", n_steps, keep_only_valid_steps, model_output, str(device))
        if key not in self._index_cache:
            position = self._coord_step - int(model_output)
            keep = (self._coord_step < limit) & (position < n_steps) & (self._coord_t < self.timesteps)
            q, p, t = self._coord_q[keep], position[keep], self._coord_t[keep]
            indexes = torch.full((self.n_q, self.timesteps), self.n_q * n_steps, dtype=torch.long)
            mask = torch.zeros(self.n_q, self.timesteps, dtype=torch.bool)
            indexes[q, t] = q * n_steps + p
            mask[q, t] = True
            self._index_cache[key] = (indexes.to(device), mask.to(device))
        return self._index_cache[key]

    def step_mask(self, keep_only_valid_steps: bool = False, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[K, S]`` bool: True where step ``s`` holds a real frame of codebook ``q``; a generator forces
        the special token everywhere else."""
        return self.sequence_index(self.timesteps, keep_only_valid_steps, device)[1]

    def loss_mask(self, n_steps: Optional[int] = None, keep_only_valid_steps: bool = False,
                  device: torch.device | str = "cpu") -> torch.Tensor:
        """``[K, T]`` bool: the frames that logits of ``n_steps`` steps (default all) predict, i.e. the
        mask returned by :meth:`revert_logits`; combine it with any padding mask for the loss."""
        n_steps = self._steps_limit(keep_only_valid_steps) if n_steps is None else n_steps
        return self.frame_index(n_steps, keep_only_valid_steps, True, device)[1]

    # sequences --------------------------------------------------------------------------------------

    def _check_codebooks(self, x: torch.Tensor, what: str, dim: int):
        if x.shape[dim] != self.n_q:
            raise CodesError(f"{what} has {x.shape[dim]} codebooks but the pattern has {self.n_q}")

    def build_sequence(self, codes: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``[B, K, T]`` (``T <= timesteps``) -> ``(sequence [B, K, S], indexes [K, S], mask [K, S])``.

        Cells with no frame ``< T`` of their codebook hold ``special_token`` (``mask`` False).
        """
        _check_tokens(codes, "codes", 3, "[B, K, T]")
        self._check_codebooks(codes, "codes", 1)
        batch, n_q, n_frames = codes.shape
        if not 1 <= n_frames <= self.timesteps:
            raise CodesError(f"codes have {n_frames} frames; this pattern takes 1..{self.timesteps}")
        indexes, mask = self.sequence_index(n_frames, keep_only_valid_steps, codes.device)
        flat = codes.reshape(batch, n_q * n_frames)
        picked = flat[:, indexes.clamp(max=n_q * n_frames - 1).reshape(-1)].view(batch, n_q, -1)
        sequence = torch.where(mask, picked, torch.full_like(picked, special_token))
        return sequence, indexes, mask

    def revert_sequence(self, sequence: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequence ``[B, K, S']`` (``S'`` up to the full length) -> ``(codes [B, K, T], indexes [K, T],
        mask [K, T])``; frames not in the first ``S'`` steps hold ``special_token`` (``mask`` False)."""
        _check_tokens(sequence, "sequence", 3, "[B, K, S]")
        self._check_codebooks(sequence, "sequence", 1)
        return self._revert(sequence, special_token, keep_only_valid_steps, model_output=False)

    def revert_logits(self, logits: torch.Tensor, special_value: float = float("nan"),
                      keep_only_valid_steps: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model logits ``[B, card, K, S']`` -> ``(logits [B, card, K, T], indexes [K, T], mask [K, T])``.

        The logit at step ``s`` predicts the frames of layout step ``s + 1``; frames no step predicts
        are filled with ``special_value`` (``mask`` False).
        """
        _check_tokens(logits, "logits", 4, "[B, card, K, S]")
        self._check_codebooks(logits, "logits", 2)
        batch, card, n_q, n_steps = logits.shape
        merged = logits.reshape(batch * card, n_q, n_steps)
        out, indexes, mask = self._revert(merged, special_value, keep_only_valid_steps, model_output=True)
        return out.view(batch, card, n_q, self.timesteps), indexes, mask

    def _revert(self, sequence: torch.Tensor, fill, keep_only_valid_steps: bool, model_output: bool):
        rows, n_q, n_steps = sequence.shape
        indexes, mask = self.frame_index(n_steps, keep_only_valid_steps, model_output, sequence.device)
        flat = sequence.reshape(rows, n_q * n_steps)
        picked = flat[:, indexes.clamp(max=n_q * n_steps - 1).reshape(-1)].view(rows, n_q, self.timesteps)
        return torch.where(mask, picked, torch.full_like(picked, fill)), indexes, mask

    # generation -------------------------------------------------------------------------------------

    def prefill(self, batch_size: int, special_token: int, prompt: Optional[torch.Tensor] = None,
                unknown_token: int = -1, device: torch.device | str = "cpu") -> torch.Tensor:
        """The sequence a generator starts from, ``[B, K, S]`` long: the prompt's frames
        (``prompt [B, K, T0]``, ``T0 <= timesteps``) in place, ``unknown_token`` on every other real
        frame, ``special_token`` where the pattern has no frame."""
        codes = torch.full((batch_size, self.n_q, self.timesteps), unknown_token, dtype=torch.long,
                           device=device if prompt is None else prompt.device)
        if prompt is not None:
            _check_tokens(prompt, "prompt", 3, "[B, K, T0]")
            self._check_codebooks(prompt, "prompt", 1)
            if prompt.shape[0] != batch_size or prompt.shape[2] > self.timesteps:
                raise CodesError(f"prompt of shape {tuple(prompt.shape)} does not fit batch {batch_size} "
                                 f"and {self.timesteps} frames")
            codes[:, :, :prompt.shape[2]] = prompt
        return self.build_sequence(codes, special_token)[0]

    def fill_step(self, sequence: torch.Tensor, step: int, next_tokens: torch.Tensor, special_token: int,
                  unknown_token: int = -1) -> torch.Tensor:
        """Write the sampled ``next_tokens [B, K]`` into column ``step`` of ``sequence [B, K, S]`` (in
        place, also returned): the special token where the pattern has no frame, and cells already
        known (prompt) are kept."""
        _check_tokens(sequence, "sequence", 3, "[B, K, S]")
        if not 0 <= step < sequence.shape[2]:
            raise CodesError(f"step {step} is outside the sequence's 0..{sequence.shape[2] - 1}")
        if next_tokens.shape != sequence.shape[:2]:
            raise CodesError(f"next_tokens must be [B, K] = {tuple(sequence.shape[:2])}, "
                             f"got {tuple(next_tokens.shape)}")
        valid = self.step_mask(device=sequence.device)[:, step]
        forced = torch.where(valid, next_tokens, torch.full_like(next_tokens, special_token))
        current = sequence[:, :, step]
        sequence[:, :, step] = torch.where(current == unknown_token, forced, current)
        return sequence


def codebook_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy per codebook over the masked cells, averaged over codebooks (MusicGen, SongGen).

    Args:
        logits: ``[B, card, K, T]``.
        targets: ``[B, K, T]`` long; cells outside ``mask`` may hold anything (e.g. special tokens).
        mask: ``[B, K, T]`` or ``[K, T]`` bool.
    Returns ``(loss [], per_codebook [K])``; a codebook with no masked cell contributes 0.
    """
    _check_tokens(logits, "logits", 4, "[B, card, K, T]")
    _check_tokens(targets, "targets", 3, "[B, K, T]")
    if targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise CodesError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise CodesError(f"mask must be a bool tensor [B, K, T] or [K, T], got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape not in (targets.shape, targets.shape[1:]):
        raise CodesError(f"mask {tuple(mask.shape)} fits neither targets {tuple(targets.shape)} nor their [K, T]")
    mask = mask.expand_as(targets)
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    cell_loss = F.cross_entropy(logits.float(), safe_targets, reduction="none")  # [B, K, T]
    weights = mask.to(cell_loss.dtype)
    per_codebook = (cell_loss * weights).sum((0, 2)) / weights.sum((0, 2)).clamp(min=1)
    return per_codebook.mean(), per_codebook


class PatternProvider:
    """Makes the :class:`CodebookPattern` of ``n_q`` codebooks for any number of frames (cached)."""

    def __init__(self, n_q: int):
        self.n_q = _check_int(n_q, "n_q", 1)
        self._patterns: dict[int, CodebookPattern] = {}

    def layout(self, timesteps: int) -> list[list[Coord]]:
        """The steps of ``timesteps`` frames, ``layout[0] == []``."""
        raise NotImplementedError

    def pattern(self, timesteps: int) -> CodebookPattern:
        """The pattern of ``timesteps`` frames."""
        _check_int(timesteps, "timesteps", 1)
        if timesteps not in self._patterns:
            self._patterns[timesteps] = CodebookPattern(self.layout(timesteps), timesteps, self.n_q)
        return self._patterns[timesteps]

    def num_steps(self, timesteps: int) -> int:
        """``S`` for ``timesteps`` frames."""
        return self.pattern(timesteps).num_steps


class DelayPatternProvider(PatternProvider):
    """Codebook ``q`` lags ``delays[q]`` steps: step ``s >= 1`` holds frame ``s - 1 - delays[q]``.
    ``S = T + max(delays) + 1``. Default delays ``0, 1, ..., K - 1`` (MusicGen)."""

    def __init__(self, n_q: int, delays: Optional[Sequence[int]] = None):
        super().__init__(n_q)
        self.delays = list(range(self.n_q)) if delays is None else _check_int_list(delays, "delays", self.n_q)

    def layout(self, timesteps: int) -> list[list[Coord]]:
        steps: list[list[Coord]] = [[]]
        for s in range(timesteps + max(self.delays)):
            steps.append([Coord(s - d, q) for q, d in enumerate(self.delays) if s - d >= 0])
        return steps


class ParallelPatternProvider(DelayPatternProvider):
    """All codebooks of frame ``t`` at step ``t + 1`` (delays all 0); ``S = T + 1``."""

    def __init__(self, n_q: int):
        super().__init__(n_q, [0] * _check_int(n_q, "n_q", 1))


class UnrolledPatternProvider(PatternProvider):
    """Codebooks flattened along the sequence: each frame takes ``max(flattening) + 1`` inner steps and
    codebook ``q`` sits on inner step ``flattening[q]`` (default ``q``: ``S = K * T + 1``).

    ``delays[q]`` (default 0) moves codebook ``q`` that many frames later; codebooks sharing an inner
    step share a delay. Both lists are non-decreasing (audiocraft's ``UnrolledPatternProvider``).
    """

    def __init__(self, n_q: int, flattening: Optional[Sequence[int]] = None,
                 delays: Optional[Sequence[int]] = None):
        super().__init__(n_q)
        flattening = (list(range(self.n_q)) if flattening is None
                      else _check_int_list(flattening, "flattening", self.n_q))
        delays = [0] * self.n_q if delays is None else _check_int_list(delays, "delays", self.n_q)
        if flattening != sorted(flattening) or delays != sorted(delays):
            raise ConfigError(f"unroll: flattening {flattening} and delays {delays} must be non-decreasing")
        self.inner_steps = max(flattening) + 1
        self.max_delay = max(delays)
        self.groups: dict[int, tuple[list[int], int]] = {}  # inner step -> (codebooks, delay)
        for q, (inner, delay) in enumerate(zip(flattening, delays)):
            books, group_delay = self.groups.setdefault(inner, ([], delay))
            if group_delay != delay:
                raise ConfigError(f"unroll: codebooks {books + [q]} share inner step {inner} "
                                  f"but have different delays {[delays[b] for b in books + [q]]}")
            books.append(q)

    def layout(self, timesteps: int) -> list[list[Coord]]:
        end = timesteps + self.max_delay
        keyed: list[tuple[int, list[Coord]]] = []  # (sequence position key, coordinates)
        for t in range(end):
            for inner in range(self.inner_steps):
                if inner not in self.groups:
                    keyed.append((t, []))
                    continue
                books, delay = self.groups[inner]
                if t + delay < end:
                    keyed.append((t + delay, [Coord(t, q) for q in books]))
        keyed.sort(key=lambda item: (item[0], [tuple(c) for c in item[1]]))
        return [[]] + [coords for _, coords in keyed]


class CoarseFirstPatternProvider(PatternProvider):
    """All ``T`` frames of codebook 0 first (one per step), then codebooks ``1..K-1`` with
    ``delays`` (``K - 1`` values, default 0): ``S = 1 + T + T + max(delays)`` (``1 + T`` when ``K = 1``)."""

    def __init__(self, n_q: int, delays: Optional[Sequence[int]] = None):
        super().__init__(n_q)
        fine = self.n_q - 1
        self.delays = [0] * fine if delays is None else _check_int_list(delays, "delays", fine)

    def layout(self, timesteps: int) -> list[list[Coord]]:
        steps: list[list[Coord]] = [[]] + [[Coord(t, 0)] for t in range(timesteps)]
        if self.delays:
            for s in range(timesteps + max(self.delays)):
                steps.append([Coord(s - d, q + 1) for q, d in enumerate(self.delays) if s - d >= 0])
        return steps


class MusicLMPatternProvider(PatternProvider):
    """Codebooks in groups of ``group_by``: every frame of group 0 (its codebooks one per step), then
    group 1, ...; ``S = K * T + 1``. ``group_by`` must divide ``n_q``."""

    def __init__(self, n_q: int, group_by: int = 2):
        super().__init__(n_q)
        self.group_by = _check_int(group_by, "group_by", 1)
        if self.n_q % self.group_by:
            raise ConfigError(f"musiclm: group_by={group_by} does not divide n_q={n_q}")

    def layout(self, timesteps: int) -> list[list[Coord]]:
        steps: list[list[Coord]] = [[]]
        for first in range(0, self.n_q, self.group_by):
            for t in range(timesteps):
                steps.extend([Coord(t, q)] for q in range(first, first + self.group_by))
        return steps


PATTERN_PROVIDERS: dict[str, type[PatternProvider]] = {
    "delay": DelayPatternProvider,
    "parallel": ParallelPatternProvider,
    "unroll": UnrolledPatternProvider,
    "coarse_first": CoarseFirstPatternProvider,
    "musiclm": MusicLMPatternProvider,
}


def build_pattern_provider(name: str, n_q: int, **options) -> PatternProvider:
    """The provider ``name`` (one of :data:`PATTERN_PROVIDERS`) for ``n_q`` codebooks, e.g.
    ``build_pattern_provider("delay", n_q=4, delays=[0, 1, 2, 3])``."""
    if name not in PATTERN_PROVIDERS:
        raise ConfigError(f"unknown codebook pattern {name!r}; known: {', '.join(PATTERN_PROVIDERS)}")
    cls = PATTERN_PROVIDERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_q")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"pattern {name!r} takes no option(s) {', '.join(unknown)}; "
                          f"its options: {', '.join(accepted) or 'none'}")
    return cls(n_q, **options)


# ----------------------------------------------------------------------------------------------------
# SongGen's BOS / EOS delay layout
# ----------------------------------------------------------------------------------------------------

class SongGenSequences(NamedTuple):
    """Training tensors of SongGen's layout, each ``[B, R, L]`` (``R`` rows, ``L`` columns)."""
    labels: torch.Tensor
    decoder_inputs: torch.Tensor
    loss_mask: torch.Tensor


def songgen_code_positions(n_q: int, n_frames: int, length: Optional[int] = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """``[K, L]`` bool (``L`` default ``n_frames + K``): True where SongGen's layout holds a code,
    i.e. columns ``k .. k + n_frames - 1`` of row ``k``; BOS lies left of them and EOS right."""
    _check_int(n_q, "n_q", 1)
    _check_int(n_frames, "n_frames", 0)
    length = n_frames + n_q if length is None else _check_int(length, "length", 0)
    column = torch.arange(length, device=device)[None, :]
    row = torch.arange(n_q, device=device)[:, None]
    return (column >= row) & (column < row + n_frames)


def songgen_delay_codes(codes: torch.Tensor, bos_id: int, eos_id: int) -> torch.Tensor:
    """Codes ``[B, K, T]`` -> labels ``[B, K, T + K]``: row ``k`` is ``k`` BOS, the codes, then EOS."""
    _check_tokens(codes, "codes", 3, "[B, K, T]")
    batch, n_q, n_frames = codes.shape
    if n_frames == 0:
        raise CodesError("codes have no frames")
    length = n_frames + n_q
    rows = torch.arange(n_q, device=codes.device)[:, None]
    source = torch.arange(length, device=codes.device)[None, :] - rows
    picked = codes.gather(2, source.clamp(0, n_frames - 1).expand(batch, -1, -1))
    specials = torch.where(source < 0, bos_id, eos_id).to(codes.dtype)
    return torch.where((source >= 0) & (source < n_frames), picked, specials)


def songgen_undelay_codes(sequence: torch.Tensor, n_frames: Optional[int] = None) -> torch.Tensor:
    """SongGen-layout tokens ``[B, K, L]`` -> codes ``[B, K, T]``, reading row ``k`` at columns
    ``k .. k + T - 1`` (BOS / EOS positions dropped). ``T`` defaults to ``L - K`` (the exact inverse of
    :func:`songgen_delay_codes`); a generated sequence without the last EOS column needs ``L - K + 1``."""
    _check_tokens(sequence, "sequence", 3, "[B, K, L]")
    batch, n_q, length = sequence.shape
    n_frames = length - n_q if n_frames is None else n_frames
    if n_frames < 1 or n_frames + n_q - 1 > length:
        raise CodesError(f"a SongGen sequence of {n_q} rows and {length} columns holds 1..{length - n_q + 1} "
                         f"frames, asked for {n_frames}")
    rows = torch.arange(n_q, device=sequence.device)[:, None]
    source = torch.arange(n_frames, device=sequence.device)[None, :] + rows
    return sequence.gather(2, source.expand(batch, -1, -1))


def songgen_decoder_inputs(labels: torch.Tensor, start_id: int) -> torch.Tensor:
    """Labels ``[B, R, L]`` shifted one column right behind a ``start_id`` column: ``[B, R, L]``."""
    _check_tokens(labels, "labels", 3, "[B, R, L]")
    return torch.cat([torch.full_like(labels[:, :, :1], start_id), labels[:, :, :-1]], dim=2)


def songgen_loss_mask(decoder_inputs: torch.Tensor, labels: torch.Tensor, bos_id: int, eos_id: int) -> torch.Tensor:
    """``[B, R, L]`` bool: ``(decoder_inputs != EOS) & (labels != BOS)``, i.e. every code and the first
    EOS of each row."""
    if decoder_inputs.shape != labels.shape:
        raise CodesError(f"decoder inputs {tuple(decoder_inputs.shape)} and labels {tuple(labels.shape)} differ")
    return (decoder_inputs != eos_id) & (labels != bos_id)


def _training_sequences(labels: torch.Tensor, bos_id: int, eos_id: int, start_id: Optional[int]) -> SongGenSequences:
    inputs = songgen_decoder_inputs(labels, bos_id if start_id is None else start_id)
    return SongGenSequences(labels, inputs, songgen_loss_mask(inputs, labels, bos_id, eos_id))


def songgen_training_sequences(codes: torch.Tensor, bos_id: int, eos_id: int,
                               start_id: Optional[int] = None) -> SongGenSequences:
    """Mixed-track codes ``[B, K, T]`` -> (labels, decoder inputs, loss mask), each ``[B, K, T + K]``.
    The decoder's start token defaults to ``bos_id`` (SongGen uses the same id)."""
    return _training_sequences(songgen_delay_codes(codes, bos_id, eos_id), bos_id, eos_id, start_id)


# dual-track arrangements ----------------------------------------------------------------------------

TRACK_ORDERS = ("A-V", "V-A")
DUAL_TRACK_MODES = ("parallel_std", "parallel_A_V", "parallel_V_A", "interleaving_A_V", "interleaving_V_A")


def _check_order(order, what: str, allow_none: bool = False):
    if order in TRACK_ORDERS or (allow_none and order is None):
        return
    raise ConfigError(f"{what} must be {' or '.join(map(repr, TRACK_ORDERS))}"
                      f"{' or None' if allow_none else ''}, got {order!r}")


def _check_track_pair(accompaniment: torch.Tensor, vocal: torch.Tensor):
    _check_tokens(accompaniment, "accompaniment", 3, "[B, K, L]")
    _check_tokens(vocal, "vocal", 3, "[B, K, L]")
    if accompaniment.shape != vocal.shape:
        raise CodesError(f"accompaniment {tuple(accompaniment.shape)} and vocal {tuple(vocal.shape)} differ in shape")


def parallel_tracks(accompaniment: torch.Tensor, vocal: torch.Tensor, lead: Optional[str] = None,
                    bos_id: Optional[int] = None, eos_id: Optional[int] = None) -> torch.Tensor:
    """Two tracks ``[B, K, L]`` -> ``[B, 2K, L]`` (accompaniment rows, then vocal rows).

    ``lead="A-V"`` (accompaniment leads) delays the vocal by one column: ``bos_id`` before the vocal,
    ``eos_id`` after the accompaniment; ``"V-A"`` the reverse. Both give ``[B, 2K, L + 1]``.
    """
    _check_track_pair(accompaniment, vocal)
    _check_order(lead, "lead", allow_none=True)
    if lead is None:
        return torch.cat([accompaniment, vocal], dim=1)
    if bos_id is None or eos_id is None:
        raise ConfigError(f"parallel tracks with lead {lead!r} need bos_id and eos_id for the shift")
    first, second = (accompaniment, vocal) if lead == "A-V" else (vocal, accompaniment)
    first = torch.cat([first, torch.full_like(first[:, :, :1], eos_id)], dim=2)
    second = torch.cat([torch.full_like(second[:, :, :1], bos_id), second], dim=2)
    accompaniment, vocal = (first, second) if lead == "A-V" else (second, first)
    return torch.cat([accompaniment, vocal], dim=1)


def split_parallel_tracks(combined: torch.Tensor, lead: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`parallel_tracks`: ``[B, 2K, L']`` -> ``(accompaniment, vocal)``, each
    ``[B, K, L]`` (the shift column dropped when ``lead`` is given)."""
    _check_tokens(combined, "combined", 3, "[B, 2K, L]")
    _check_order(lead, "lead", allow_none=True)
    rows, length = combined.shape[1], combined.shape[2]
    if rows % 2:
        raise CodesError(f"parallel tracks have an even number of rows (2K), got {rows}")
    if lead is not None and length < 2:
        raise CodesError(f"shifted parallel tracks have at least 2 columns, got {length}")
    accompaniment, vocal = combined[:, : rows // 2], combined[:, rows // 2:]
    if lead == "A-V":
        accompaniment, vocal = accompaniment[:, :, :-1], vocal[:, :, 1:]
    elif lead == "V-A":
        accompaniment, vocal = accompaniment[:, :, 1:], vocal[:, :, :-1]
    return accompaniment, vocal


def interleave_tracks(accompaniment: torch.Tensor, vocal: torch.Tensor, order: str = "A-V") -> torch.Tensor:
    """Two tracks ``[B, K, L]`` -> ``[B, K, 2L]``, each row alternating the tracks column by column:
    ``a_0, v_0, a_1, v_1, ...`` for ``order="A-V"``, ``v_0, a_0, ...`` for ``"V-A"``."""
    _check_track_pair(accompaniment, vocal)
    _check_order(order, "order")
    pair = (accompaniment, vocal) if order == "A-V" else (vocal, accompaniment)
    batch, n_q, length = accompaniment.shape
    return torch.stack(pair, dim=3).reshape(batch, n_q, 2 * length)


def deinterleave_tracks(combined: torch.Tensor, order: str = "A-V") -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave_tracks`: ``[B, K, 2L]`` -> ``(accompaniment, vocal)``, each ``[B, K, L]``."""
    _check_tokens(combined, "combined", 3, "[B, K, 2L]")
    _check_order(order, "order")
    if combined.shape[2] % 2:
        raise CodesError(f"interleaved tracks have an even number of columns, got {combined.shape[2]}")
    first, second = combined[:, :, 0::2], combined[:, :, 1::2]
    return (first, second) if order == "A-V" else (second, first)


def _check_mode(mode: str):
    if mode not in DUAL_TRACK_MODES:
        raise ConfigError(f"unknown dual-track mode {mode!r}; known: {', '.join(DUAL_TRACK_MODES)}")


def _mode_order(mode: str) -> Optional[str]:
    return None if mode == "parallel_std" else mode[-3:].replace("_", "-")


def combine_tracks(accompaniment: torch.Tensor, vocal: torch.Tensor, mode: str,
                   bos_id: Optional[int] = None, eos_id: Optional[int] = None) -> torch.Tensor:
    """Arrange two tracks ``[B, K, L]`` by SongGen's mode name (one of :data:`DUAL_TRACK_MODES`):
    ``parallel_std`` / ``parallel_A_V`` / ``parallel_V_A`` -> :func:`parallel_tracks`,
    ``interleaving_A_V`` / ``interleaving_V_A`` -> :func:`interleave_tracks`."""
    _check_mode(mode)
    if mode.startswith("parallel"):
        return parallel_tracks(accompaniment, vocal, _mode_order(mode), bos_id, eos_id)
    return interleave_tracks(accompaniment, vocal, _mode_order(mode))


def split_tracks(combined: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`combine_tracks`: ``(accompaniment, vocal)``, each ``[B, K, L]``."""
    _check_mode(mode)
    if mode.startswith("parallel"):
        return split_parallel_tracks(combined, _mode_order(mode))
    return deinterleave_tracks(combined, _mode_order(mode))


def songgen_dual_track_sequences(accompaniment: torch.Tensor, vocal: torch.Tensor, mode: str, bos_id: int,
                                 eos_id: int, start_id: Optional[int] = None) -> SongGenSequences:
    """Codes of both tracks ``[B, K, T]`` -> (labels, decoder inputs, loss mask) of SongGen's dual-track
    ``mode``: each track in the BOS/EOS delay layout ``[B, K, T + K]``, then arranged by
    :func:`combine_tracks` (``[B, 2K, T + K (+1)]`` or ``[B, K, 2(T + K)]``)."""
    _check_track_pair(accompaniment, vocal)
    labels = combine_tracks(songgen_delay_codes(accompaniment, bos_id, eos_id),
                            songgen_delay_codes(vocal, bos_id, eos_id), mode, bos_id, eos_id)
    return _training_sequences(labels, bos_id, eos_id, start_id)


def songgen_dual_track_codes(sequence: torch.Tensor, mode: str, n_frames: Optional[int] = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`songgen_dual_track_sequences` on its labels (or a generated sequence of the same
    layout): ``(accompaniment, vocal)`` codes, each ``[B, K, T]`` (``n_frames`` as in
    :func:`songgen_undelay_codes`)."""
    accompaniment, vocal = split_tracks(sequence, mode)
    return songgen_undelay_codes(accompaniment, n_frames), songgen_undelay_codes(vocal, n_frames)


def delay_pattern_force(tokens: torch.Tensor, step, generated: torch.Tensor, end_token: int, pad_id: int,
                        eos_id: int, lead: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Force the cells of a TTS delay pattern that are not sampled, for a graph-safe ``force_fn`` of
    :func:`~audiocodec.lm.generate.generate` (the same cells as :func:`audiocodec.tts.layout.delay_force`).

    ``tokens [B, K]`` were chosen at generation step ``step`` given ``generated [B, K, N]``: with an int
    ``step``, ``N = step`` (every column generated); with a 0-dim device tensor ``step`` (the graph-safe
    loop), the fixed-size buffer whose columns ``>= step`` are not generated yet. Rows ``k >= 1`` get
    ``lead [K, K]`` or ``[B, K, K]`` (default ``pad_id``) for their first ``k`` steps; once row 0 has
    emitted ``end_token`` at step ``T``, row ``k`` gets ``pad_id`` from step ``T + max(k, 1)`` and every
    row ``eos_id`` at step ``T + K - 1``. One stream: nothing is forced. No host synchronisation, fixed
    shapes (``lead`` should already be on the tokens' device: a graph cannot copy from the host).
    """
    k = tokens.shape[1]
    if k == 1:
        return tokens
    device = tokens.device
    q = torch.arange(k, device=device)
    fixed = isinstance(step, torch.Tensor)
    lead_in = (q >= 1) & (step < q)                                              # [K]
    if lead is None:
        tokens = torch.where(lead_in, pad_id, tokens)
    else:
        lead = lead.to(device)
        column = lead.index_select(-1, step.clamp(max=k - 1).view(1)).squeeze(-1) if fixed \
            else lead[..., min(step, k - 1)]                                     # [K] or [B, K]
        tokens = torch.where(lead_in, column.to(tokens.dtype), tokens)
    n = generated.shape[-1]
    if n == 0:
        return tokens
    ended = generated[:, 0] == end_token                                          # [B, N]
    if fixed:
        ended = ended & (torch.arange(n, device=device) < step)
    has_end = ended.any(-1)
    end = ended.float().argmax(-1)                                                # the first end token
    tokens = torch.where(has_end[:, None] & (step >= end[:, None] + q.clamp(min=1)), pad_id, tokens)
    return torch.where((has_end & (step == end + k - 1))[:, None], eos_id, tokens)
