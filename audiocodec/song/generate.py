"""Text to song with a trained :class:`~audiocodec.song.model.SongModel` and its codec.

>>> gen = SongGenerator.load("exp/song/song")                       # codec found from the model's record
>>> song = gen.generate("la la la, hello sun", "happy pop, female vocal", duration=10, seed=0)
>>> song.audio, song.sample_rate, song.stems       # mixture [L]; {"accompaniment", "vocal"} for dual-track

Decoding: the decoder starts from one BOS column and writes the mode's layout column by column (see
:mod:`audiocodec.song.layout`). The generator forces what the layout fixes: BOS left of each row's codes,
the prompt's codes when continuing, and EOS on every row once the delay-0 rows have ended (a delay-0 row
ends by emitting EOS, or is made to at the requested duration); decoding stops at the EOS of the row that
ends last. Classifier-free guidance pairs each song with the null condition:
``logits = uncond + (cond - uncond) * cfg_scale`` (``cfg_scale`` 1 or None: no unconditional pass).

Songs longer than the model's window (``window_frames``, the length it was trained on) are continued
window by window: the last ``context_frames`` frames become the next window's prompt (forced, not
sampled), and the window generates the rest, until the duration is reached or the song ends.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Generator, Iterator, NamedTuple, Optional, Sequence, Union

import torch

from ..codecs import Codec, load_codec
from ..errors import ConfigError
from ..lm import generate_stream
from ..lm.generate import Generation, StepState, use_cuda_graphs
from ..lm.sampling import TokenSampler
from .conditioners import Conditions
from .layout import SongLayout
from .model import SongModel, load_song


@dataclass
class SongOptions:
    """Length, guidance and sampling controls.

    duration: seconds of song to make (frames = ``round(duration * frame_rate)``, at least 1).
    cfg_scale: classifier-free guidance scale; None or 1.0 runs no unconditional pass.
    temperature / top_k / top_p: sampling (MusicGen / SongGen use top-k 250); ``greedy``: argmax.
    seed: makes sampling reproducible.
    stop_at_eos: the song may end before ``duration`` when the model emits EOS; False forbids it.
    window_frames: frames per decoding window (default: the model's ``window_frames``).
    context_frames: frames of the previous window kept as the prompt of the next (default half a window).
    chunk_frames, chunk_context_frames: streaming (``generate(stream=True)``): the audio comes in chunks of
        ``chunk_frames`` frames, each decoded with ``chunk_context_frames`` frames of look-back and look-ahead
        (:meth:`~audiocodec.codecs.Codec.decode_chunks`); 20 and 8 are 0.5 s and 0.2 s at 40 Hz.
    """
    duration: float = 30.0
    cfg_scale: Optional[float] = 3.0
    temperature: float = 1.0
    top_k: Optional[int] = 250
    top_p: Optional[float] = None
    greedy: bool = False
    seed: Optional[int] = None
    stop_at_eos: bool = True
    window_frames: Optional[int] = None
    context_frames: Optional[int] = None
    chunk_frames: int = 20
    chunk_context_frames: int = 8


@dataclass
class Song:
    """A generated song.

    audio: the mixture ``[L]`` at ``sample_rate`` (for dual-track modes: accompaniment + vocal).
    stems: ``{"accompaniment": [L], "vocal": [L]}`` for dual-track modes, else None.
    tokens: codec tokens of each generated track, ``{"mixture": [K, T]}`` or
        ``{"accompaniment": [K, T], "vocal": [K, T]}``.
    """
    audio: torch.Tensor
    sample_rate: int
    stems: Optional[dict]
    tokens: dict

    @property
    def frames(self) -> int:
        return int(next(iter(self.tokens.values())).shape[-1])


class SongProgress(NamedTuple):
    """Where :meth:`SongGenerator.generate_tokens` stands, after a check of the decoding loop.

    pieces: each song's finished windows, ``[{track: [K, n]}, ...]`` (their new frames).
    active: the songs of the window being decoded ``[B']`` (indices into the batch).
    kept: the frames of the window's prompt (the previous window's last frames, forced).
    target: the frames the window makes at most (``kept`` included).
    prefix: the window's prompt columns ``[B', R, P]``; out: its :class:`~audiocodec.lm.Generation` so far.
    """
    pieces: list
    active: torch.Tensor
    kept: int
    target: int
    prefix: torch.Tensor
    out: Generation


def _options(options: dict) -> SongOptions:
    known = {f.name for f in fields(SongOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown song generation option(s) {unknown}; known: {', '.join(sorted(known))}")
    return _checked(SongOptions(**options))


def _checked(opts: SongOptions) -> SongOptions:
    if isinstance(opts.duration, bool) or not isinstance(opts.duration, (int, float)) or not opts.duration > 0:
        raise ValueError(f"duration must be a positive number of seconds, got {opts.duration!r}")
    scale = opts.cfg_scale
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ValueError(f"cfg_scale must be a number or None, got {opts.cfg_scale!r}")
    for name, least in (("chunk_frames", 1), ("chunk_context_frames", 0)):
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return opts


class SongGenerator:
    """A song model with its codec (``codec=None``: tokens only, no audio), on one device.

    ``cuda_graphs``: replay the whole decoding step (sampling, forced cells, guidance, the model with its
    cross-attention memory) from CUDA graphs (``generate(cuda_graph=True)``); default: on when the model
    is on a CUDA device. Tokens are the same either way. ``compile``: with CUDA graphs, ``torch.compile`` the
    step before capturing it (fused kernels: ~1.6x the steps/s at batch 1 on an H200; the first call of each
    new shape compiles, ~1 minute).
    """

    def __init__(self, model: SongModel, codec: Optional[Codec] = None, cuda_graphs: Optional[bool] = None,
                 compile: bool = False):
        info = model.codec_info
        if codec is not None:
            if info.get("fingerprint") and info["fingerprint"] != codec.fingerprint():
                raise ConfigError(f"the song model was trained on tokens of codec {info.get('model_id')} "
                                  f"(fingerprint {info['fingerprint']}), not of {codec.name} ({codec.fingerprint()})")
            if int(info["cardinality"]) != codec.cardinality or int(info["sample_rate"]) != codec.sample_rate:
                raise ConfigError(f"codec {codec.name} ({codec.cardinality} codes, {codec.sample_rate} Hz) does not "
                                  f"fit the model's tokens ({info['cardinality']} codes, {info['sample_rate']} Hz)")
            if model.layout.num_codebooks > codec.max_codebooks:
                raise ConfigError(f"the model writes {model.layout.num_codebooks} codebooks; codec {codec.name} "
                                  f"has {codec.max_codebooks}")
        self.model, self.codec = model.eval(), codec
        self.layout: SongLayout = model.layout
        self.cuda_graphs = cuda_graphs
        self.compile = bool(compile)

    @property
    def _graphs(self) -> bool:
        return use_cuda_graphs(self.cuda_graphs, self.device)

    @classmethod
    def load(cls, path: Union[str, Path], codec: Union[str, Path, Codec, None] = None,
             device: Union[str, torch.device] = "cpu", **options) -> "SongGenerator":
        """Load a song model (folder or file) and its codec: ``codec``, else the one recorded in the
        model (``codec.source``). ``path`` may name an embedded song model (``song-mini``). ``options``:
        ``cuda_graphs``, ``compile`` (see :class:`SongGenerator`)."""
        from ..codecs.embedded import embedded_song_path
        if not Path(path).exists() and embedded_song_path(path) is not None:
            path = embedded_song_path(path)
        model = load_song(path, device)
        spec = codec if codec is not None else model.codec_info.get("source")
        if spec is None:
            raise ConfigError(f"{path}: the model records no codec source; pass codec=")
        return cls(model, spec if isinstance(spec, Codec) else load_codec(spec, device=device), **options)

    @property
    def sample_rate(self) -> int:
        return int(self.model.codec_info["sample_rate"])

    @property
    def frame_rate(self) -> float:
        return self.model.frame_rate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- inputs ------------------------------------------------------------------------------------------
    def voice_tokens(self, voice) -> Optional[torch.Tensor]:
        """A reference voice -> codec tokens ``[K, Tv]`` (its first ``voice.seconds``): None, codec tokens
        (an integer tensor ``[K, Tv]``), a waveform (float tensor ``[L]`` / ``[C, L]`` at the codec's rate),
        or an audio file path."""
        if voice is None:
            return None
        cond = self.model.conditioner
        if not cond.has_voice:
            raise ConfigError("this song model was built without voice conditioning: it takes no reference voice")
        if isinstance(voice, torch.Tensor) and not voice.is_floating_point():
            tokens = voice
        else:
            if self.codec is None:
                raise ConfigError("a reference voice given as audio needs the codec (SongGenerator(model, codec))")
            if isinstance(voice, (str, Path)):
                from ..audio import load_audio
                wav, sr = load_audio(voice)
            else:
                wav, sr = torch.as_tensor(voice), self.sample_rate
            tokens = self.codec.encode(wav.to(self.codec.device), sample_rate=sr).tokens[0, :self.layout.num_codebooks]
        if tokens.dim() != 2 or tokens.shape[0] != self.layout.num_codebooks:
            raise ConfigError(f"reference voice tokens must be [K={self.layout.num_codebooks}, Tv], "
                              f"got {tuple(tokens.shape)}")
        return tokens[:, :max(1, round(cond.voice_seconds * self.frame_rate))].long().cpu()

    def _check_mode(self, mode: Optional[str]):
        if mode is None or mode == self.model.mode or (mode == "mixed" and self.model.mode == "mixed_pro"):
            return
        raise ConfigError(f"this model was trained in mode {self.model.mode!r}; it cannot generate in mode {mode!r}")

    # -- decoding ----------------------------------------------------------------------------------------
    def _hooks(self, known: torch.Tensor, start: int, limit: int, opts: SongOptions, generator):
        """``(sample_fn, force_fn)`` for one window whose decoding starts at column ``start`` and whose
        delay-0 rows end at column ``limit`` at the latest (``known [B, R, L]``: cells fixed beforehand).

        Both are graph-safe (``graph_safe = True``): with the graph-safe loop's state (``state.step`` a
        device tensor, ``state.generated`` the fixed-size buffer) they run without host synchronisations,
        so ``generate(cuda_graph=True)`` captures the whole decoding step; the eager loop's Python-int step
        becomes such a tensor first, so one code path serves both."""
        layout = self.layout
        device = known.device
        delays = layout.delays.to(device)
        zero = (delays == 0).nonzero().squeeze(1)
        g, bos, eos = layout.frame_columns, layout.bos_id, layout.eos_id
        sampler = TokenSampler(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
                               do_sample=not opts.greedy, generator=generator)
        may_end = torch.zeros(layout.rows, dtype=torch.bool, device=device)
        may_end[zero] = True
        # what each row may not sample: BOS always; EOS except on the delay-0 rows at a frame boundary
        banned_no_eos = torch.zeros(layout.rows, layout.vocab_size, dtype=torch.bool, device=device)
        banned_no_eos[:, bos] = True
        banned_eos_ok = banned_no_eos.clone()
        banned_no_eos[:, eos] = True
        banned_eos_ok[:, eos] = ~may_end
        never = 1 << 40

        def current_column(state: StepState) -> torch.Tensor:
            """The column being decoded as a 0-dim device tensor (the graph-safe loop's step is one already)."""
            step = state.step if state.fixed else torch.tensor(state.step, device=device)
            return start + step

        def sample_fn(logits: torch.Tensor, state: StepState) -> torch.Tensor:
            column = current_column(state)
            eos_ok = (column % g == 0) & (column >= g) & opts.stop_at_eos
            banned = torch.where(eos_ok, banned_eos_ok, banned_no_eos)
            return sampler(logits.float().masked_fill(banned, float("-inf")), state)

        def force_fn(tokens: torch.Tensor, state: StepState) -> torch.Tensor:
            column = current_column(state)
            generated = state.generated.index_select(1, zero)                       # [B, Z, N]
            ended = (generated == eos).any(1)                                       # [B, N]
            if state.fixed:                                  # columns not generated yet: stop the count there
                ended = ended | ~state.valid_columns()
            # columns before the first EOS (all of them without one): reductions, no scan over the history
            before = (torch.where(ended.any(-1), ended.int().argmax(-1), ended.shape[-1]) if ended.shape[-1]
                      else ended.new_zeros(ended.shape[:-1], dtype=torch.long))
            now = (tokens.index_select(1, zero) == eos).any(-1) | (column >= limit)
            end = torch.where(before < state.step, start + before, torch.where(now, column, never))
            cell = known.index_select(2, column.view(1)).squeeze(2).index_select(0, state.rows)   # [B, R]
            out = torch.where(cell >= 0, cell, tokens)
            return torch.where(column >= delays[None] + end[:, None], torch.full_like(out, eos), out)

        sample_fn.graph_safe = force_fn.graph_safe = True
        sample_fn.generators = sampler.generators
        return sample_fn, force_fn

    def _window_steps(self, cond: Conditions, prompt: Optional[dict], batch: int, target: int, opts: SongOptions,
                      generator, song: tuple) -> Generator[SongProgress, None, tuple[list[dict], torch.Tensor]]:
        """One decoding window of at most ``target`` frames (``prompt`` tracks ``[B, K, P]`` included).
        ``cond`` holds ``B`` rows, or ``2B`` (conditional then null) with guidance. Yields a
        :class:`SongProgress` (``song``: its ``pieces, active, kept``) after every check of the decoding loop;
        returns the tracks of each row (``[K, T_b]``) and ``T_b`` ``[B]``."""
        layout, device = self.layout, self.device
        g, last = layout.frame_columns, layout.max_delay
        limit = g * target
        length = limit + last + 1
        known, start = layout.known_cells(prompt, batch, length, device)
        prefix = known[:, :, :start]
        decoder_prompt = torch.cat([torch.full_like(known[:, :, :1], layout.bos_id), prefix], dim=-1)
        guided = cond.batch_size == 2 * batch
        if guided:
            decoder_prompt = torch.cat([decoder_prompt, decoder_prompt])
        memory, memory_mask = self.model.condition(cond)
        memory = memory.to(next(self.model.lm.parameters()).dtype)   # e.g. an fp32 conditioner before a bf16 LM
        sample_fn, force_fn = self._hooks(known, start, limit, opts, generator)
        for out in generate_stream(self.model.lm, decoder_prompt, length - start, sample_fn=sample_fn,
                                   force_fn=force_fn, eos_id=layout.eos_id, eos_stream=layout.eos_row,
                                   pad_id=layout.eos_id, memory=memory, memory_mask=memory_mask,
                                   cfg_scale=opts.cfg_scale if guided else None, cuda_graph=self._graphs,
                                   compile_step=self.compile):
            yield SongProgress(*song, target, prefix, out)
        sequence = torch.cat([prefix, out.tokens], dim=-1)
        ends = start + out.lengths - last                      # first EOS column of the delay-0 rows
        frames = torch.div(ends, g, rounding_mode="floor").clamp(min=1, max=target)
        tracks = []
        for b in range(batch):
            n = int(frames[b])
            got = layout.tracks_from_sequence(sequence[b:b + 1, :, :g * n + last + 1], n)
            tracks.append({k: v[0] for k, v in got.items()})
        return tracks, frames.cpu()

    @torch.inference_mode()
    def generate_tokens(self, lyrics: Sequence[str], descriptions: Sequence[Optional[str]],
                        voices: Optional[Sequence] = None, options: Optional[SongOptions] = None) -> list[dict]:
        """Codec tokens of several songs, generated as one batch: one ``{track: [K, T_i]}`` per song
        (``T_i`` frames: the duration's, or fewer where the song ended)."""
        opts = _checked(options or SongOptions())
        steps = self._song_steps(self._setup(lyrics, descriptions, voices, opts), opts)
        while True:   # to the end: its return value
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value

    def _setup(self, lyrics, descriptions, voices, opts: SongOptions):
        """The checked inputs of :meth:`_song_steps`: the conditions (with their null twins under guidance),
        songs, guidance, frames to make, window and context frames, the random generator."""
        if isinstance(lyrics, str) or isinstance(descriptions, str):
            raise ConfigError("generate_tokens takes lists of lyrics and descriptions (one per song)")
        if not lyrics or len(lyrics) != len(descriptions):
            raise ConfigError(f"one description per lyrics: got {len(lyrics)} lyrics and "
                              f"{len(descriptions)} descriptions")
        model, device = self.model, self.device
        cond = model.conditioner.prepare(list(lyrics), list(descriptions),
                                         None if voices is None else [self.voice_tokens(v) for v in voices], device)
        total = max(1, round(float(opts.duration) * self.frame_rate))
        window = model.window_frames if opts.window_frames is None else opts.window_frames
        context = window // 2 if opts.context_frames is None else opts.context_frames
        if not isinstance(window, int) or window < 1 or not isinstance(context, int) or not 0 <= context < window:
            raise ValueError(f"need window_frames >= 1 and 0 <= context_frames < window_frames, "
                             f"got {window} and {context}")
        guided = opts.cfg_scale is not None and float(opts.cfg_scale) != 1.0
        batch = cond.batch_size
        if guided:
            cond = cond.cat(cond.null())
        generator = None
        if opts.seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(opts.seed))
        return cond, batch, guided, total, window, context, generator

    @torch.inference_mode()
    def _song_steps(self, setup: tuple, opts: SongOptions) -> Generator[SongProgress, None, list[dict]]:
        """:meth:`generate_tokens` step by step (``setup``: :meth:`_setup`'s): yields a :class:`SongProgress`
        after every check of the decoding loop; returns the songs' tokens."""
        cond, batch, guided, total, window, context, generator = setup
        device = self.device
        pieces: list[list[dict]] = [[] for _ in range(batch)]
        active = torch.arange(batch)
        prompt, done = None, 0
        while len(active):
            kept = 0 if prompt is None else next(iter(prompt.values())).shape[-1]
            target = min(window, kept + total - done)
            rows = torch.cat([active, active + batch]) if guided else active
            tracks, frames = yield from self._window_steps(cond.select(rows), prompt, len(active), target, opts,
                                                           generator, (pieces, active, kept))
            for i, row in enumerate(active.tolist()):
                pieces[row].append({k: v[:, kept:] for k, v in tracks[i].items()})
            done += target - kept
            going = (frames == target) if done < total else torch.zeros(len(active), dtype=torch.bool)
            if not bool(going.any()):
                break
            active = active[going]
            keep = min(context, done)
            prompt = None if keep == 0 else {
                k: torch.stack([torch.cat([p[k] for p in pieces[r]], dim=-1)[:, done - keep:] for r in active.tolist()])
                .to(device) for k in self.layout.tracks}
        return [{k: torch.cat([p[k] for p in chunks], dim=-1).cpu() for k in self.layout.tracks} for chunks in pieces]

    def decode(self, tokens: dict, chunk_frames: Optional[int] = None,
               chunk_context_frames: int = SongOptions.chunk_context_frames) -> Song:
        """Tokens of one song (``{track: [K, T]}``) -> :class:`Song` (needs the codec): in one piece, or with
        ``chunk_frames`` in the chunks a stream plays (:meth:`Codec.decode_chunks`), joined."""
        self._require_codec()
        if chunk_frames is None:
            audio = {k: self.codec.decode(v[None].to(self.codec.device))[0].mean(0).cpu() for k, v in tokens.items()}
        else:
            chunks = [self._track_chunks(tokens, chunk_frames, chunk_context_frames, k) for k in tokens]
            audio = {k: torch.cat([a for _, a in c]) for k, c in zip(tokens, chunks)}
        if self.layout.dual_track:
            return Song(audio["accompaniment"] + audio["vocal"], self.sample_rate, audio, dict(tokens))
        return Song(audio["mixture"], self.sample_rate, None, dict(tokens))

    def generate(self, lyrics: str, description: Optional[str] = "", voice=None, mode: Optional[str] = None,
                 stream: bool = False, **options) -> Union[Song, Iterator[torch.Tensor]]:
        """One song: lyrics, a style description, optionally a reference voice (see :meth:`voice_tokens`).
        ``mode``: the model's own (or ``"mixed"`` for a ``mixed_pro`` model); ``options``:
        :class:`SongOptions` fields (``duration``, ``cfg_scale``, ``temperature``, ``top_k``, ``top_p``,
        ``greedy``, ``seed``, ...). Returns the mixture audio and, for dual-track modes, the stems.

        ``stream=True``: an iterator of the mixture's audio chunks ``[n]``, each yielded as soon as the frames
        it needs (``chunk_frames`` and ``chunk_context_frames`` of look-ahead) are decoded; joined, they are
        ``decode(tokens, chunk_frames=...)`` of the tokens this call without streaming would make."""
        self._check_mode(mode)
        if not isinstance(lyrics, str):
            raise ConfigError(f"lyrics must be a str, got {type(lyrics).__name__}")
        if not lyrics.strip():
            raise ConfigError("the lyrics are empty")
        opts = _options(options)
        voices = None if voice is None else [voice]
        if stream:
            self._require_codec()
            return self._stream(self._setup([lyrics], [description], voices, opts), opts)
        tokens = self.generate_tokens([lyrics], [description], voices, opts)[0]
        return self.decode(tokens)

    def _require_codec(self):
        if self.codec is None:
            raise ConfigError("decoding audio needs the codec (SongGenerator(model, codec))")

    def _track_chunks(self, tokens: dict, chunk: int, context: int, track: str, start: int = 0,
                      final: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
        """One track's audio chunks (``(next start, audio [n])``) of ``tokens {track: [K, T]}``."""
        codes = tokens[track][None].to(self.codec.device)
        for stop, audio in self.codec.decode_chunks(codes, chunk, context, start=start, final=final):
            yield stop, audio[0].mean(0).cpu()

    def _mixture_chunks(self, tokens: dict, opts: SongOptions, start: int, final: bool
                        ) -> Iterator[tuple[int, torch.Tensor]]:
        """The mixture's audio chunks of ``tokens`` from frame ``start`` (dual-track: the tracks' sum)."""
        tracks = [self._track_chunks(tokens, opts.chunk_frames, opts.chunk_context_frames, k, start, final)
                  for k in self.layout.tracks]
        for parts in zip(*tracks):
            yield parts[0][0], sum(audio for _, audio in parts)

    @torch.inference_mode()
    def _stream(self, setup: tuple, opts: SongOptions) -> Iterator[torch.Tensor]:
        """One song's mixture audio in chunks as its frames are decoded; joined, the chunks are
        ``decode(tokens, chunk_frames=opts.chunk_frames, ...)`` of the song's tokens (the same tokens as
        :meth:`generate_tokens` with the same options and seed)."""
        layout = self.layout
        g, last = layout.frame_columns, layout.max_delay
        steps = self._song_steps(setup, opts)
        played = 0
        while True:
            try:
                pieces, _, kept, target, prefix, out = next(steps)
            except StopIteration as finished:
                song = finished.value[0]
                break
            # frames whose every cell is decoded, up to the song's end (a row's length counts the steps run until
            # it ends: its first EOS column of the delay-0 rows, as the window's own end in _window_steps)
            columns = prefix.shape[-1] + out.tokens.shape[-1]
            frames = min((columns - last - 1) // g, (prefix.shape[-1] + int(out.lengths[0]) - last) // g, target)
            if frames <= kept:
                continue
            sequence = torch.cat([prefix[:1], out.tokens[:1]], dim=-1)[:, :, :g * frames + last + 1]
            window = layout.tracks_from_sequence(sequence, frames)
            tokens = {k: torch.cat([p[k] for p in pieces[0]] + [window[k][0, :, kept:]], dim=-1)
                      for k in layout.tracks}
            for played, audio in self._mixture_chunks(tokens, opts, played, final=False):
                yield audio
        for played, audio in self._mixture_chunks(song, opts, played, final=True):
            yield audio
