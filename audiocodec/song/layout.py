"""The token layout of a song LM: SongGen's modes on top of its BOS/EOS delay layout.

A song's codes come as one track (``mixture [K, T]``) or two stems (``accompaniment``, ``vocal``,
each ``[K, T]``, the same ``T``). Every mode puts them on ``R`` rows of ``L`` columns, in the vocabulary
``0 .. C-1`` codes, ``C`` BOS, ``C + 1`` EOS (``C`` = codec cardinality):

=====================  ====  ============  =========================================================
mode                   R     L             row ``r`` holds its codes at columns ``d_r .. d_r + g T - 1``
=====================  ====  ============  =========================================================
``mixed``              K     T + K         ``d_k = k`` (``g = 1``), BOS before, EOS after
``mixed_pro``          K     T + K         as ``mixed``; the vocal stem is an auxiliary target only
``parallel_std``       2K    T + K         accompaniment rows ``d = k``, then vocal rows ``d = k``
``parallel_A_V``       2K    T + K + 1     accompaniment ``d = k``, vocal one frame behind, ``d = k + 1``
``parallel_V_A``       2K    T + K + 1     vocal ``d = k``, accompaniment ``d = k + 1``
``interleaving_A_V``   K     2(T + K)      ``a_t, v_t`` alternate on each row: ``d_k = 2k``, ``g = 2``
``interleaving_V_A``   K     2(T + K)      ``v_t, a_t``
=====================  ====  ============  =========================================================

So every mode is "row ``r`` is BOS before column ``d_r``, then ``g T`` codes, then EOS": the rows with
``d_r = 0`` decide where the song ends (their first EOS, at column ``g T``), and the row with the largest
delay ends last (its EOS at column ``g T + max(d)``), which is where generation stops.
:class:`SongLayout` builds training sequences (through :mod:`audiocodec.lm.patterns`), the cells a
generator must force, and turns generated sequences back into codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from ..errors import CodesError, ConfigError
from ..lm.patterns import (DUAL_TRACK_MODES, songgen_delay_codes, songgen_dual_track_codes,
                           songgen_dual_track_sequences, songgen_training_sequences, songgen_undelay_codes,
                           combine_tracks)

#: Every mode a song model can be trained in.
MODES = ("mixed", "mixed_pro") + tuple(DUAL_TRACK_MODES)
#: Tracks of the mixed modes and of the dual-track modes.
MIXED_TRACKS = ("mixture",)
DUAL_TRACKS = ("accompaniment", "vocal")


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown song mode {mode!r}; known: {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class SongLayout:
    """Args:
        mode: one of :data:`MODES`.
        num_codebooks: ``K``, codebooks of each track.
        cardinality: ``C``, codes per codebook.
    """
    mode: str
    num_codebooks: int
    cardinality: int

    def __post_init__(self):
        check_mode(self.mode)
        for name in ("num_codebooks", "cardinality"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"song layout: {name} must be a positive int, got {value!r}")

    # -- vocabulary --------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:
        return self.cardinality

    @property
    def eos_id(self) -> int:
        return self.cardinality + 1

    @property
    def vocab_size(self) -> int:
        return self.cardinality + 2

    # -- geometry ----------------------------------------------------------------------------------
    @property
    def dual_track(self) -> bool:
        return self.mode in DUAL_TRACK_MODES

    @property
    def tracks(self) -> tuple[str, ...]:
        """The tracks the LM generates: ``("mixture",)`` or ``("accompaniment", "vocal")``."""
        return DUAL_TRACKS if self.dual_track else MIXED_TRACKS

    @property
    def rows(self) -> int:
        """``R``: token streams of the LM."""
        return 2 * self.num_codebooks if self.mode.startswith("parallel") else self.num_codebooks

    @property
    def frame_columns(self) -> int:
        """``g``: columns per frame on a row (2 when the tracks interleave)."""
        return 2 if self.mode.startswith("interleaving") else 1

    @property
    def delays(self) -> torch.Tensor:
        """``[R]`` long: the column of each row's first code."""
        k = torch.arange(self.num_codebooks)
        if self.mode.startswith("interleaving"):
            return 2 * k
        if self.mode == "parallel_std":
            return torch.cat([k, k])
        if self.mode == "parallel_A_V":
            return torch.cat([k, k + 1])
        if self.mode == "parallel_V_A":
            return torch.cat([k + 1, k])
        return k

    @property
    def max_delay(self) -> int:
        return int(self.delays.max())

    @property
    def eos_row(self) -> int:
        """The row that ends last (largest delay): generation stops at its EOS."""
        return int(self.delays.argmax())

    def sequence_length(self, n_frames: int) -> int:
        """``L``: columns of the training sequence of ``n_frames`` frames."""
        k = self.num_codebooks
        if self.frame_columns == 2:
            return 2 * (n_frames + k)
        return n_frames + k + (1 if self.mode in ("parallel_A_V", "parallel_V_A") else 0)

    def code_cells(self, n_frames: int, length: int, device=None) -> torch.Tensor:
        """``[R, length]`` bool: where the codes of ``n_frames`` frames lie."""
        column = torch.arange(length, device=device)[None, :]
        start = self.delays.to(device)[:, None]
        return (column >= start) & (column < start + self.frame_columns * n_frames)

    def bos_cells(self, length: int, device=None) -> torch.Tensor:
        """``[R, length]`` bool: the BOS cells (left of each row's codes)."""
        return torch.arange(length, device=device)[None, :] < self.delays.to(device)[:, None]

    # -- tracks <-> sequences ----------------------------------------------------------------------
    def check_tracks(self, tracks: Mapping[str, torch.Tensor], batched: bool = True) -> int:
        """Check that ``tracks`` holds this mode's tracks, each ``[B, K, T]`` (``[K, T]`` when not
        ``batched``) of codes in ``[0, C)`` with one shape; returns ``T``."""
        missing = [t for t in self.tracks if t not in tracks or tracks[t] is None]
        if missing:
            raise ConfigError(f"mode {self.mode!r} needs the track(s) {missing}; got {sorted(tracks)}")
        ndim, layout = (3, "[B, K, T]") if batched else (2, "[K, T]")
        shapes = set()
        for name in self.tracks:
            x = tracks[name]
            if not isinstance(x, torch.Tensor) or x.dim() != ndim or x.is_floating_point():
                raise CodesError(f"track {name!r} must be integer codes {layout}, got "
                                 f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
            if x.shape[-2] != self.num_codebooks:
                raise CodesError(f"track {name!r} has {x.shape[-2]} codebooks, the model {self.num_codebooks}")
            if x.shape[-1] < 1:
                raise CodesError(f"track {name!r} has no frames")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.cardinality):
                raise CodesError(f"track {name!r} holds codes outside [0, {self.cardinality})")
            shapes.add(tuple(x.shape))
        if len(shapes) != 1:
            raise CodesError(f"the tracks differ in shape: { {t: tuple(tracks[t].shape) for t in self.tracks} }")
        return int(shapes.pop()[-1])

    def labels(self, tracks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tracks ``[B, K, T]`` -> the mode's labels ``[B, R, L]`` (no shift)."""
        self.check_tracks(tracks)
        if not self.dual_track:
            return songgen_delay_codes(tracks["mixture"], self.bos_id, self.eos_id)
        return combine_tracks(songgen_delay_codes(tracks["accompaniment"], self.bos_id, self.eos_id),
                              songgen_delay_codes(tracks["vocal"], self.bos_id, self.eos_id), self.mode,
                              self.bos_id, self.eos_id)

    def training_sequences(self, tracks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tracks ``[B, K, T]`` -> ``{"inputs", "labels", "loss_mask"}`` each ``[B, R, L]`` (decoder input
        = labels shifted right behind a BOS column; loss on the codes and each row's first EOS). In
        ``mixed_pro`` mode also ``"vocal_labels"``, ``"vocal_mask"`` ``[B, K, L]``: the vocal stem in the
        same delay layout, the auxiliary heads' target."""
        self.check_tracks(tracks)
        if self.dual_track:
            seq = songgen_dual_track_sequences(tracks["accompaniment"], tracks["vocal"], self.mode,
                                               self.bos_id, self.eos_id)
        else:
            seq = songgen_training_sequences(tracks["mixture"], self.bos_id, self.eos_id)
        out = {"inputs": seq.decoder_inputs, "labels": seq.labels, "loss_mask": seq.loss_mask}
        if self.mode == "mixed_pro":
            vocal = tracks.get("vocal")
            if vocal is None:
                raise ConfigError("mode 'mixed_pro' trains auxiliary vocal heads: it needs the vocal track")
            if vocal.shape != tracks["mixture"].shape:
                raise CodesError(f"vocal {tuple(vocal.shape)} and mixture {tuple(tracks['mixture'].shape)} differ")
            self.check_tracks({"mixture": vocal})
            aux = songgen_training_sequences(vocal, self.bos_id, self.eos_id)
            out.update(vocal_labels=aux.labels, vocal_mask=aux.loss_mask)
        return out

    def tracks_from_sequence(self, sequence: torch.Tensor, n_frames: int) -> dict[str, torch.Tensor]:
        """A (generated) sequence ``[B, R, L']`` holding ``n_frames`` frames -> tracks ``[B, K, T]``.
        Columns past ``L'`` are taken as EOS, so a sequence cut at its last EOS is enough."""
        if sequence.dim() != 3 or sequence.shape[1] != self.rows:
            raise CodesError(f"expected a sequence [B, R={self.rows}, L], got {tuple(sequence.shape)}")
        full = self.sequence_length(n_frames)
        if sequence.shape[-1] < full:
            pad = sequence.new_full((*sequence.shape[:2], full - sequence.shape[-1]), self.eos_id)
            sequence = torch.cat([sequence, pad], dim=-1)
        sequence = sequence[..., :full]
        if not self.dual_track:
            return {"mixture": songgen_undelay_codes(sequence, n_frames)}
        accompaniment, vocal = songgen_dual_track_codes(sequence, self.mode, n_frames)
        return {"accompaniment": accompaniment, "vocal": vocal}

    def known_cells(self, prompt: Optional[Mapping[str, torch.Tensor]], batch: int, length: int,
                    device=None) -> tuple[torch.Tensor, int]:
        """What a generator of ``length`` columns knows before it starts: ``(known [B, R, length], start)``
        with the BOS cells and the prompt's codes (``prompt`` tracks ``[B, K, P]``, or None) in place and
        ``-1`` elsewhere; ``start = g P`` is the first column with an unknown cell (columns before it
        are all known: they are the decoder's prompt)."""
        known = torch.full((batch, self.rows, length), -1, dtype=torch.long, device=device)
        known[:, self.bos_cells(length, device)] = self.bos_id
        if prompt is None:
            return known, 0
        n_frames = self.check_tracks(prompt)
        labels = self.labels(prompt).to(device)
        span = min(length, labels.shape[-1])
        cells = self.code_cells(n_frames, span, device)
        known[:, :, :span] = torch.where(cells, labels[:, :, :span], known[:, :, :span])
        return known, self.frame_columns * n_frames


def pad_sequences(examples: Sequence[Mapping[str, torch.Tensor]], eos_id: int) -> dict[str, torch.Tensor]:
    """Per-song training sequences (``[R, L_i]`` tensors, as :meth:`SongLayout.training_sequences` of one
    song without its batch axis) -> a batch ``[B, R, max L_i]``. Sequences are right-padded with EOS
    (just a longer EOS tail, which the loss mask leaves out) and masks with False, so no attention mask
    is needed: a causal decoder never looks right."""
    if not examples:
        raise ValueError("no examples to batch")
    longest = max(int(e["labels"].shape[-1]) for e in examples)
    out = {}
    for key in examples[0]:
        pad = False if examples[0][key].dtype == torch.bool else eos_id
        out[key] = torch.stack([torch.nn.functional.pad(e[key], (0, longest - e[key].shape[-1]), value=pad)
                                for e in examples])
    return out
