"""Bistream generation: the schedule that feeds text to the model while it speaks (CosyVoice 2 style).

A bistream sequence (:mod:`audiocodec.tts.layout`) is fixed by the text alone: ``N`` text tokens, ``M``
speech tokens, again while whole text chunks remain, then the rest of the text, ``audio_bos``, speech until
``eos``. :class:`BistreamFeed` lays out one such sequence at inference, position by position: a *given*
token (text, ``audio_bos``, the reference speech of a voice prompt, ``eos`` at the length cap) or a
*sampled* one (speech, and ``eos`` once the text has ended and ``min_ratio`` is reached). It reads its text
through ``take(n)`` (a :class:`~audiocodec.tts.frontend.StreamedUtterance`, or :class:`KnownText`), only
when the schedule reaches the next chunk, so text still arriving is waited for exactly when the model
needs it. :class:`BistreamHooks` turns feeds into the ``sample_fn`` / ``force_fn`` hooks of
:func:`~audiocodec.lm.generate` (the given tokens are forced over whatever was sampled).
"""
from __future__ import annotations

import logging
from typing import Optional, Protocol, Sequence

import torch

from .layout import AUDIO_BOS, BOS, EOS, SequenceLayout, TTSVocab

log = logging.getLogger("audiocodec.tts")

#: A position the model samples (in :attr:`BistreamFeed.plan`, where the others hold the given id).
SAMPLED = -1


class TextSource(Protocol):
    def take(self, n: int) -> list[int]:
        """The next ``n`` text tokens; fewer (possibly none) only when the text has ended."""


class KnownText:
    """A :class:`TextSource` over text tokens known in advance (list of int)."""

    def __init__(self, tokens: Sequence[int]):
        self.tokens, self._read = list(tokens), 0

    def take(self, n: int) -> list[int]:
        out = self.tokens[self._read:self._read + n]
        self._read += len(out)
        return out


class BistreamFeed:
    """The positions of one bistream sequence after ``bos``, planned as the text comes.

    Args:
        vocab, layout: the model's vocabulary and (bistream) layout.
        text: the text tokens to speak (:class:`TextSource`).
        ref_text: voice cloning: the reference's transcript tokens, read before ``text``.
        ref_speech: voice cloning: the reference's codec tokens ``[1, T]``, given in the first speech slots.
        min_ratio / max_ratio: sampled speech tokens per token of ``text`` below which ``eos`` is not
            allowed / at which it is forced (both only once the text has ended).
        max_text: read at most this many tokens of ``text`` (the rest is dropped with a warning); bounds the
            sequence (:meth:`step_budget`).

    :meth:`prompt` gives the sequence up to the first sampled position (prefilled at once); generation
    step ``s`` is position ``len(prompt) - 1 + s``: :meth:`given` (a forced token or None) and
    :meth:`may_end` tell the hooks what to do there.
    """

    def __init__(self, vocab: TTSVocab, layout: SequenceLayout, text: TextSource, ref_text: Sequence[int] = (),
                 ref_speech: Optional[torch.Tensor] = None, min_ratio: float = 2.0, max_ratio: float = 20.0,
                 max_text: Optional[int] = None):
        layout.check_codebooks(vocab.num_codebooks)
        if not layout.bistream:
            raise ValueError("BistreamFeed needs the bistream layout")
        self.vocab, self.layout, self._text = vocab, layout, text
        self._ref_text = list(ref_text)
        self._ref_speech = [] if ref_speech is None else vocab.speech_ids(ref_speech)[0].tolist()
        self._reference_length = len(self._ref_text) + len(self._ref_speech)
        self.min_ratio, self.max_ratio, self.max_text = float(min_ratio), float(max_ratio), max_text
        self.plan: list[int] = []       # given id or SAMPLED, one per position after bos
        self.sampled = 0                # SAMPLED positions in the plan
        self.text_length = 0            # tokens read from ``text`` (the reference's not counted)
        self.ended = False              # the text has ended: audio_bos is planned, the tail follows
        self._tail = 0                  # first position of the sampled tail (once ended)
        self._next_is_text = True
        self._start: Optional[int] = None

    # -- planning ----------------------------------------------------------------------------------
    def _take_text(self, n: int) -> list[int]:
        """Up to ``n`` text tokens: the reference transcript first, then ``text`` (within ``max_text``)."""
        out, self._ref_text = self._ref_text[:n], self._ref_text[n:]
        want = n - len(out)
        capped = self.max_text is not None and self.text_length + want > self.max_text
        if capped:
            want = self.max_text - self.text_length
        new = self._text.take(want) if want > 0 else []
        self.text_length += len(new)
        if capped and self._text.take(1):
            log.warning(f"bistream: the text is longer than {self.max_text} tokens (max_text_tokens); the rest "
                        f"is not spoken")
        return out + new

    def _plan_more(self) -> None:
        """Plan the next chunk: text (N tokens, or the rest + audio_bos + the tail), or M speech slots."""
        if self._next_is_text:
            chunk = self._take_text(self.layout.text_chunk)
            self.plan += self.vocab.text_ids(chunk).tolist()
            if len(chunk) < self.layout.text_chunk:           # the text has ended: the rest of the speech
                self.plan += [AUDIO_BOS] + self._ref_speech
                self._ref_speech, self.ended, self._tail = [], True, len(self.plan)
        else:
            given = self._ref_speech[:self.layout.speech_chunk]
            self._ref_speech = self._ref_speech[len(given):]
            slots = self.layout.speech_chunk - len(given)
            self.plan += given + [SAMPLED] * slots
            self.sampled += slots
        self._next_is_text = not self._next_is_text

    def slot(self, position: int) -> int:
        """What ``position`` (after bos) holds: a given id or :data:`SAMPLED`; plans (reads text) as needed."""
        while position >= len(self.plan) and not self.ended:
            self._plan_more()
        return self.plan[position] if position < len(self.plan) else SAMPLED

    def _sampled_before(self, position: int) -> int:
        """Sampled positions before ``position``, a position of the tail."""
        return self.sampled + position - self._tail

    # -- what generation asks ------------------------------------------------------------------------
    def prompt(self) -> list[int]:
        """``[bos, ...]``: the ids up to the first sampled position (reads text until there is one)."""
        position = 0
        while self.slot(position) != SAMPLED:
            position += 1
        self._start = position
        return [BOS] + self.plan[:position]

    def _position(self, step: int) -> int:
        if self._start is None:
            raise RuntimeError("BistreamFeed: call prompt() before generating")
        return self._start + step

    def given(self, step: int) -> Optional[int]:
        """The token forced at generation ``step``: text, ``audio_bos``, reference speech, or ``eos`` at
        ``max_ratio``; None where the model samples."""
        position = self._position(step)
        token = self.slot(position)
        if token != SAMPLED:
            return token
        if self.ended and position >= self._tail and \
                self._sampled_before(position) >= int(self.text_length * self.max_ratio):
            return EOS
        return None

    def may_end(self, step: int) -> bool:
        """Whether ``eos`` may be sampled at generation ``step``: in the tail, after ``min_ratio`` x text."""
        position = self._position(step)
        self.slot(position)
        return self.ended and position >= self._tail and \
            self._sampled_before(position) >= int(self.text_length * self.min_ratio)

    def step_budget(self, text_tokens: int) -> int:
        """Most generation steps (positions after ``bos``) for at most ``text_tokens`` tokens of text: the
        reference, the text, ``audio_bos``, the sampled speech (``max_ratio`` x text, or the chunks' if
        more) and ``eos``."""
        chunks = ((self._reference_length + text_tokens) // self.layout.text_chunk + 1) * self.layout.speech_chunk
        return self._reference_length + text_tokens + 1 + max(int(text_tokens * self.max_ratio), chunks) + 1


def _or_sampled(token: Optional[int]) -> int:
    return SAMPLED if token is None else token


class BistreamHooks:
    """``sample_fn`` / ``force_fn`` for :func:`~audiocodec.lm.generate` (or a step-by-step loop) over one
    :class:`BistreamFeed` per batch row: the sampler sees only speech (and ``eos`` where the feed allows
    it), and the feed's given tokens replace what was sampled.

    With ``steps``, the feeds (whose text must then be known) are read once into tables ``[B, steps]`` on
    ``device``, so a step does no host work; without, each step asks the feeds (streaming text).
    """

    def __init__(self, vocab: TTSVocab, feeds: Sequence[BistreamFeed], sampler, device: torch.device,
                 steps: Optional[int] = None):
        self.feeds, self.sampler, self.device = list(feeds), sampler, device
        self.speech_only = torch.zeros(1, 1, vocab.size, dtype=torch.bool, device=device)
        self.speech_only[..., vocab.speech_offset:] = True
        self.tables = None
        if steps is not None:
            given = [[_or_sampled(f.given(s)) for s in range(steps)] for f in self.feeds]
            ends = [[f.may_end(s) for s in range(steps)] for f in self.feeds]
            self.tables = (torch.tensor(given, dtype=torch.long, device=device),
                           torch.tensor(ends, dtype=torch.bool, device=device))

    def _at(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """``(given [B_active] (SAMPLED where the model samples), may_end [B_active])`` at ``state.step``."""
        if self.tables is not None:
            given, ends = self.tables
            return given[state.rows, state.step], ends[state.rows, state.step]
        rows = state.rows.tolist()
        given = torch.tensor([_or_sampled(self.feeds[r].given(state.step)) for r in rows], dtype=torch.long,
                             device=self.device)
        ends = torch.tensor([self.feeds[r].may_end(state.step) for r in rows], dtype=torch.bool, device=self.device)
        return given, ends

    def sample_fn(self, logits: torch.Tensor, state) -> torch.Tensor:
        """``logits [B, 1, V]`` -> sampled ``[B, 1]``: speech only, ``eos`` where the feed allows it."""
        _, ends = self._at(state)
        allowed = self.speech_only.expand(logits.shape[0], 1, -1).clone()
        allowed[:, 0, EOS] = ends
        return self.sampler(logits.float().masked_fill(~allowed, float("-inf")), state)

    def force_fn(self, tokens: torch.Tensor, state) -> torch.Tensor:
        """``tokens [B, 1]`` with the feeds' given tokens in place of the sampled ones."""
        given, _ = self._at(state)
        return torch.where(given[:, None] != SAMPLED, given[:, None], tokens)
