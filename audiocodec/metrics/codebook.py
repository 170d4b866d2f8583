"""Codebook usage statistics over a stream of codes, and a codec's bitrate on a set.

>>> stats = CodebookStats()
>>> for wav in dataset:
...     stats.update(codec.encode(wav))                # Codes (valid frames only) or a LongTensor [B, K, T]
>>> stats.utilisation(), stats.perplexity(), stats.dead_codes()    # numpy arrays [K]
>>> stats.summary()                                   # JSON-ready dict, including the bitrates
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Union

import numpy as np
import torch

from ..codecs.codes import Codes, validate_tokens
from ..errors import CodesError


class CodebookStats:
    """Accumulated counts of each code of each codebook.

    Args:
        cardinality: codebook size; taken from the first :class:`Codes` when not given (needed for bare
            tensors).
        frame_rate: frames per second (from the first :class:`Codes` when not given), for bitrates.

    Codebook ``k`` counts only the items that use at least ``k + 1`` codebooks; ``frames[k]`` says how many
    frames each codebook saw.
    """

    def __init__(self, cardinality: Optional[int] = None, frame_rate: Optional[float] = None):
        self.cardinality = None if cardinality is None else int(cardinality)
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        self.counts = np.zeros((0, self.cardinality or 0), dtype=np.int64)      # [K, cardinality]
        self.seconds = 0.0          # audio duration covered (from Codes, or given to update)
        self.bits = 0.0             # bits of the tokens, at log2(cardinality) per token
        self.items = 0
        self._timed = True          # every update said how long its audio was

    # -- accumulate ------------------------------------------------------------------------------
    def update(self, codes: Union[Codes, torch.Tensor, np.ndarray], lengths: Optional[Iterable[int]] = None,
               seconds: Optional[float] = None) -> "CodebookStats":
        """Add a batch: :class:`Codes` (its valid frames, ``codes.lengths``; duration from its input lengths),
        or integer tokens ``[B, K, T]`` / ``[K, T]`` with optional valid ``lengths [B]`` and audio ``seconds``.
        """
        if isinstance(codes, Codes):
            self._adopt(codes.cardinality, codes.frame_rate)
            tokens, lengths = codes.tokens, codes.lengths
            if seconds is None:
                seconds = float((codes.input_lengths.double() / codes.input_sample_rate).sum())
        else:
            tokens = torch.from_numpy(np.asarray(codes)) if isinstance(codes, np.ndarray) else codes
            if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
                tokens = tokens[None]
        if self.cardinality is None:
            raise CodesError("CodebookStats needs the cardinality (codebook size) to count bare token tensors")
        tokens = validate_tokens(tokens, self.cardinality).detach().cpu().long()
        b, k, t = tokens.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        else:
            lengths = torch.as_tensor(lengths if isinstance(lengths, torch.Tensor) else list(lengths)).long().cpu()
        if lengths.shape != (b,) or (lengths < 0).any() or (lengths > t).any():
            raise CodesError(f"lengths {lengths.tolist()} do not fit a batch of {b} x {t} frames")
        if k > self.counts.shape[0]:
            self.counts = np.concatenate([self.counts, np.zeros((k - self.counts.shape[0], self.cardinality),
                                                                 dtype=np.int64)])
        valid = torch.arange(t)[None] < lengths[:, None]                                  # [B, T]
        for i in range(k):
            self.counts[i] += torch.bincount(tokens[:, i][valid], minlength=self.cardinality).numpy()
        self.bits += float(lengths.sum()) * k * math.log2(self.cardinality)
        self.items += b
        if seconds is None:
            self._timed = False
        else:
            self.seconds += float(seconds)
        return self

    def _adopt(self, cardinality: int, frame_rate: float) -> None:
        if self.cardinality is None:
            self.cardinality = int(cardinality)
            self.counts = np.zeros((self.counts.shape[0], self.cardinality), dtype=np.int64)
        elif self.cardinality != int(cardinality):
            raise CodesError(f"codes of cardinality {cardinality} added to statistics of cardinality "
                             f"{self.cardinality}")
        if self.frame_rate is None:
            self.frame_rate = float(frame_rate)

    def merge(self, other: "CodebookStats") -> "CodebookStats":
        """Add the counts of another :class:`CodebookStats` (e.g. from another worker)."""
        if other.cardinality is None:
            return self
        self._adopt(other.cardinality, other.frame_rate or 0.0)
        k = max(self.counts.shape[0], other.counts.shape[0])
        counts = np.zeros((k, self.cardinality), dtype=np.int64)
        counts[: self.counts.shape[0]] += self.counts
        counts[: other.counts.shape[0]] += other.counts
        self.counts = counts
        self.seconds += other.seconds
        self.bits += other.bits
        self.items += other.items
        self._timed = self._timed and other._timed
        return self

    # -- statistics ------------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return int(self.counts.shape[0])

    @property
    def frames(self) -> np.ndarray:
        """``[K]`` frames counted by each codebook."""
        return self.counts.sum(-1)

    def probabilities(self) -> np.ndarray:
        """``[K, cardinality]`` empirical code distribution of each codebook (zeros where nothing was counted)."""
        total = self.frames[:, None]
        return np.divide(self.counts, total, out=np.zeros(self.counts.shape), where=total > 0)

    def utilisation(self) -> np.ndarray:
        """``[K]`` fraction of the codes of each codebook used at least once (0 .. 1)."""
        return (self.counts > 0).sum(-1) / float(self.cardinality or 1)

    def dead_codes(self, min_count: int = 1) -> np.ndarray:
        """``[K]`` number of codes of each codebook used fewer than ``min_count`` times."""
        return (self.counts < min_count).sum(-1)

    def entropy(self) -> np.ndarray:
        """``[K]`` entropy of each codebook's code distribution in bits (0 .. log2 cardinality)."""
        p = self.probabilities()
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0.0).sum(-1)
        return np.where(self.frames > 0, h, np.nan)

    def perplexity(self) -> np.ndarray:
        """``[K]`` perplexity ``2 ** entropy``: the number of equally likely codes with the same entropy
        (``cardinality`` for a uniform distribution, 1 for a collapsed codebook)."""
        return np.exp2(self.entropy())

    def bitrate(self) -> dict:
        """Bits per second of the counted codes:

        * ``nominal_bps``: ``frame_rate * K * log2(cardinality)`` (the codec's rate at K codebooks);
        * ``measured_bps``: token bits over the audio duration (above nominal by the padding of each
          item's last frame); NaN without durations;
        * ``entropy_bps``: ``frame_rate * sum_k entropy_k``, what an ideal per-codebook (unigram)
          entropy coder would need.
        """
        k = self.num_codebooks
        card = self.cardinality or 1
        fr = self.frame_rate or math.nan
        measured = self.bits / self.seconds if self._timed and self.seconds > 0 else math.nan
        entropy = float(np.nansum(self.entropy())) * fr if k else math.nan
        return dict(nominal_bps=fr * k * math.log2(card), measured_bps=measured, entropy_bps=entropy)

    def summary(self) -> dict:
        """JSON-ready dict: per-codebook lists and their means, and :meth:`bitrate`."""
        util, ppl, dead = self.utilisation(), self.perplexity(), self.dead_codes()

        def num(x):
            return None if x is None or not math.isfinite(float(x)) else float(x)
        return dict(
            num_codebooks=self.num_codebooks, cardinality=self.cardinality, frame_rate=self.frame_rate,
            items=self.items, seconds=self.seconds, frames=[int(f) for f in self.frames],
            utilisation=[num(u) for u in util], perplexity=[num(p) for p in ppl],
            dead_codes=[int(d) for d in dead],
            mean_utilisation=num(util.mean()) if len(util) else None,
            mean_perplexity=num(np.nanmean(ppl)) if len(ppl) and np.isfinite(ppl).any() else None,
            total_dead_codes=int(dead.sum()),
            bitrate={k: num(v) for k, v in self.bitrate().items()},
        )


def codec_bitrate(codec, num_codebooks: Optional[int] = None) -> float:
    """Nominal bits per second of ``codec`` at ``num_codebooks`` (default: the codebooks it uses)."""
    k = codec.num_codebooks if num_codebooks is None else int(num_codebooks)
    return codec.frame_rate * k * math.log2(codec.cardinality)


def bitrate_on_set(codec, wavs: Iterable, sample_rate: Optional[int] = None) -> dict:
    """Encode each ``wav`` (``[L]``, ``[C, L]`` or ``[B, C, L]`` at ``sample_rate``, default the codec's) and
    return :meth:`CodebookStats.bitrate` over the set, plus the codebook summary under ``"codebooks"``."""
    stats = CodebookStats()
    for wav in wavs:
        stats.update(codec.encode(wav, sample_rate=sample_rate))
    return dict(stats.bitrate(), codebooks=stats.summary())
