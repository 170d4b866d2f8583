"""The one codec interface every model shares: waveform -> :class:`Codes` -> waveform.

A :class:`Codec` is an encoder (``[B, C, L] -> [B, D, T]``), a quantizer (``[B, D, T] <-> [B, K, T]``)
and a decoder (``[B, D', T] -> [B, C, T * hop]``). It handles everything around them: input shapes,
sample rates and channels, padding and exact output lengths, chunking of long inputs, fp32 codes
under autocast, and validation of codes.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .. import audio as audio_utils
from ..errors import AudioError, CodesError
from ..nn.conv import TimeMajorWeights, cpu_inference, fold_weight_norm
from ..nn.lookup_conv import conv_tables, lookup_conv
from ..nn import streaming as nn_streaming
from ..nn.streaming import StreamingError
from .codes import Codes, validate_tokens


def chunk_windows(total: int, chunk: int, context: int, start: int = 0, final: bool = True
                  ) -> Iterator[tuple[int, int, int, int]]:
    """The chunks ``[start, stop)`` of ``chunk`` frames that tile frames ``[start, total)``, each with its window
    ``[w0, w1)`` of ``context`` more frames on either side where they exist: ``(start, stop, w0, w1)``. With
    ``final=False`` (frames still arriving) it stops before the first chunk whose look-ahead is not there yet."""
    while start < total:
        stop = min(start + chunk, total)
        if not final and stop + context > total:
            return
        yield start, stop, max(0, start - context), min(total, stop + context)
        start = stop


class CodecOutput(NamedTuple):
    """Training forward pass: ``audio [B, C, L]`` (cut to the input length), ``codes [B, K, T]``,
    ``latents [B, D, T]`` (quantized) and the quantizer ``losses``."""
    audio: torch.Tensor
    codes: torch.Tensor
    latents: torch.Tensor
    losses: dict


class Codec(nn.Module):
    """A neural audio codec.

    Args:
        encoder: module with ``hop_length``; ``[B, channels, L] -> [B, D, ceil(L / hop)]``.
        quantizer: a :class:`~audiocodec.quantize.ResidualVQ` (or anything with its interface).
        decoder: ``[B, D', T] -> [B, channels, T * hop]``; it takes ``num_codebooks=`` (bitrate
            conditioning); a decoder with ``reads_codes = True`` reads codes itself through
            ``embed_codes(codes) -> [B, D', T]``.
        sample_rate, channels: of the audio the codec models.
        name: config name, stored in :class:`Codes` as ``model_id``.
        config: the config the codec was built from (saved with its weights).
        chunk_seconds, context_seconds: inputs longer than ``chunk_seconds`` are coded in chunks of
            that length with ``context_seconds`` of overlap each side, so memory stays bounded.
    """

    #: CPU inference in fp32 of a decoder whose first layer is a zero-padded "same" conv (its ``first_conv``:
    #: Vocos, WavTokenizer): that conv of the code vectors as sums of rows of a precomputed table
    #: (:mod:`audiocodec.nn.lookup_conv`) instead of a GEMM, where the table takes at most
    #: :attr:`code_table_max_bytes` (all numbers of codebooks decoded together; built on the first decode, cached,
    #: rebuilt when a weight or codebook changes; 0.3 s). WavTokenizer-75: an 88 MB table, the input conv
    #: 6.8 -> ~1 ms of a 5 s decode (2 vCPUs).
    cpu_code_tables = True
    code_table_max_bytes = 128 << 20

    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: nn.Module, sample_rate: int,
                 channels: int = 1, name: str = "codec", config: Optional[dict] = None,
                 chunk_seconds: float = 60.0, context_seconds: float = 1.0):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.sample_rate, self.channels, self.name = int(sample_rate), int(channels), name
        self.config = config or {}
        self.chunk_seconds, self.context_seconds = chunk_seconds, context_seconds
        self._fingerprint_cache: tuple = ((), "")

    # -- properties ----------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return int(self.encoder.hop_length)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return int(self.quantizer.num_codebooks)

    @property
    def max_codebooks(self) -> int:
        return int(self.quantizer.max_codebooks)

    @property
    def cardinality(self) -> int:
        return int(self.quantizer.cardinality)

    @property
    def bitrate(self) -> float:
        """Bits per second at the current number of codebooks."""
        return self.frame_rate * self.num_codebooks * math.log2(self.cardinality)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_num_codebooks(self, n: int) -> "Codec":
        """Choose how many codebooks ``encode`` emits (RVQ bitrate control)."""
        self.quantizer.set_num_codebooks(n)
        return self

    def num_parameters(self, part: Optional[str] = None) -> int:
        module = self if part is None else getattr(self, part)
        return sum(p.numel() for p in module.parameters())

    def prepare_for_inference(self) -> "Codec":
        """Eval mode with weight norm folded into plain weights (same outputs, faster)."""
        fold_weight_norm(self)
        return self.eval()

    def use_cuda_graphs(self, enabled: bool = True, max_graphs: int = 8) -> "Codec":
        """Replay encode / decode windows through CUDA graphs, one per input shape (inference on CUDA).

        Pays off for small batches and fixed chunk sizes (serving, streaming TTS), where launching
        kernels costs more than running them. Outputs are unchanged. Call again with ``False`` to stop.
        """
        from ..nn.cuda_graphs import CUDAGraphCache
        if enabled:
            self._graph_encode = CUDAGraphCache(self._encode_window_eager, max_graphs)
            self._graph_decode = CUDAGraphCache(self._decode_window_eager, max_graphs)
        else:
            self.__dict__.pop("_graph_encode", None)
            self.__dict__.pop("_graph_decode", None)
        return self

    def compile(self, mode: Optional[str] = None, dynamic: Optional[bool] = None,
                cpu_fast_paths: bool = True) -> "Codec":
        """``torch.compile`` the encoder and decoder in place (fuses the elementwise work around the
        convolutions; ``mode="reduce-overhead"`` adds CUDA graphs for small batches of fixed shape). Compiled fp32
        CUDA inference of a Vocos decoder also runs its GEMMs and convs as bf16 tensor-core GEMMs of split
        operands, to fp32's accuracy (:attr:`~audiocodec.nn.vocos.VocosBackbone.cuda_split_bf16_gemms`).

        On the CPU a part with faster eager paths of its own (``cpu_fast_paths``: SEANet, Vocos) keeps them and
        only its activations are compiled where it has any (``compiled_activations``: a WavTokenizer-75 encode
        1.06-1.1x faster on 2 vCPUs); ``cpu_fast_paths=False`` compiles it whole, as on CUDA. The first call pays the
        compilation (~10 s). Returns ``self``; encode / decode keep their interface."""
        for name in ("encoder", "decoder"):
            part = getattr(self, name)
            if cpu_fast_paths and self.device.type == "cpu" and getattr(part, "cpu_fast_paths", False):
                if hasattr(part, "compiled_activations"):
                    part.compiled_activations = True
            else:
                part.forward = torch.compile(part.forward, mode=mode, dynamic=dynamic)
        return self

    def fingerprint(self) -> str:
        """Short hash of the codebooks: codes from another trained model are told apart."""
        # the code vectors themselves: EMA codebooks (buffers) or learned ones (embedding weights); not
        # projections, whose stored form changes when weight norm is folded
        tensors = [t for n, t in itertools.chain(self.quantizer.named_buffers(), self.quantizer.named_parameters())
                   if n.endswith(("codebook.embed", "codebook.weight"))]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if key != self._fingerprint_cache[0]:
            h = hashlib.sha1()
            for t in tensors:
                h.update(t.detach().float().cpu().numpy().tobytes())
            self._fingerprint_cache = (key, h.hexdigest()[:12])
        return self._fingerprint_cache[1]

    # -- training --------------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor, n_q: Optional[int] = None) -> CodecOutput:
        """``wav [B, C, L]`` at the codec's rate -> :class:`CodecOutput` (quantizer in training mode)."""
        latents = self.encoder(wav)
        q = self.quantizer(latents, n_q)
        audio = self._decode_latents(q.quantized, q.codes.shape[1])
        return CodecOutput(audio[..., : wav.shape[-1]], q.codes, q.quantized, q.losses)

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: Union[torch.Tensor, np.ndarray], sample_rate: Optional[int] = None,
               lengths: Optional[Union[torch.Tensor, Sequence[int]]] = None) -> Codes:
        """Tokenize audio.

        Args:
            wav: ``[L]``, ``[C, L]`` or ``[B, C, L]`` at any rate and channel count; it is resampled
                and mixed to the codec's format.
            sample_rate: rate of ``wav`` (defaults to the codec's).
            lengths: valid samples of each item when a batch is padded (defaults to all).

        Returns:
            :class:`Codes` with ``tokens [B, K, T]``, ``T = ceil(L' / hop_length)`` for ``L'`` samples at
            the codec's rate, and per-item ``lengths``.
        """
        wav, sr, in_lengths = self._prepare_input(wav, sample_rate, lengths)
        in_channels = wav.shape[1]
        x = audio_utils.convert_channels(wav, self.channels)
        if sr != self.sample_rate:
            x = audio_utils.resample(x, sr, self.sample_rate)
        lengths_c = torch.ceil(in_lengths.double() * self.sample_rate / sr).long().clamp(max=x.shape[-1])
        # zero the padding of shorter items so it does not depend on what the caller left there
        x = x.to(self.device)
        if bool((lengths_c < x.shape[-1]).any()):
            mask = torch.arange(x.shape[-1], device=x.device)[None, None] < lengths_c.to(x.device)[:, None, None]
            x = x * mask
        tokens = self._chunked(self._encode_window, x, frames_in=self.hop_length, frames_out=1,
                               total_frames=math.ceil(x.shape[-1] / self.hop_length))
        frame_lengths = torch.ceil(lengths_c.double() / self.hop_length).long()
        return Codes(tokens=tokens, lengths=frame_lengths, model_id=self.name, fingerprint=self.fingerprint(),
                     sample_rate=self.sample_rate, frame_rate=self.frame_rate, cardinality=self.cardinality,
                     input_sample_rate=sr, input_lengths=in_lengths, input_channels=in_channels)

    def _encode_window(self, x: torch.Tensor) -> torch.Tensor:
        graphed = self.__dict__.get("_graph_encode")
        return graphed(x) if graphed is not None else self._encode_window_eager(x)

    def _encode_window_eager(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(x))

    @torch.no_grad()
    def decode(self, codes: Union[Codes, torch.Tensor]) -> torch.Tensor:
        """Codes -> waveform ``[B, channels, L]`` at the codec's sample rate.

        With :class:`Codes`, each item is cut to exactly the duration of its input (samples past an
        item's end are zero; ``codes.output_lengths`` gives each length). A bare tensor
        ``[B, K, T]`` (or ``[K, T]``) decodes to ``T * hop_length`` samples.
        """
        tokens, out_lengths = self._check_codes(codes)
        audio = self._chunked(self._decode_window, tokens, frames_in=1, frames_out=self.hop_length,
                              total_frames=tokens.shape[-1])
        if out_lengths is None:
            return audio
        length = int(out_lengths.max()) if len(out_lengths) else 0
        audio = audio[..., :length]
        if bool((out_lengths == length).all()):
            return audio
        mask = torch.arange(length, device=audio.device)[None, None] < out_lengths.to(audio.device)[:, None, None]
        return audio * mask

    @torch.no_grad()
    def decode_chunks(self, codes: Union[Codes, torch.Tensor], chunk_frames: int, context_frames: int,
                      start: int = 0, final: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
        """The audio of frames ``[start, T)`` of ``codes [B, K, T]`` (or ``[K, T]``, or :class:`Codes`, whose
        frames are all decoded: no cut to the input's length) in chunks of ``chunk_frames``
        frames, each decoded in a window of ``context_frames`` more on either side (where they exist) whose
        centre is kept: yields ``(next start, audio [B, channels, n * hop_length])``. With ``final=False`` only the
        chunks whose look-ahead already exists, for codes that are still growing (streaming: call again with the
        longer codes and the last ``next start``). A chunk depends only on the frames of its window, so a stream's
        chunks are those of ``final=True`` on the whole codes, and their concatenation is the same audio."""
        if not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be an int >= 1, got {chunk_frames!r}")
        if not isinstance(context_frames, int) or context_frames < 0:
            raise ValueError(f"context_frames must be an int >= 0, got {context_frames!r}")
        if isinstance(codes, Codes):
            codes = codes.tokens
        total = codes.shape[-1]
        if not 0 <= start <= total:
            raise ValueError(f"start={start} is outside the codes' {total} frames")
        hop = self.hop_length
        for start, stop, w0, w1 in chunk_windows(total, chunk_frames, context_frames, start, final):
            yield stop, self.decode(codes[..., w0:w1])[..., (start - w0) * hop:(stop - w0) * hop]

    def decode_latent(self, codes: Union[Codes, torch.Tensor]) -> torch.Tensor:
        """Codes -> the decoder's input features ``[B, D', T]`` (quantized latents or code embeddings)."""
        tokens, _ = self._check_codes(codes)
        return self._embed(tokens)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if getattr(self.decoder, "reads_codes", False):
            return self.decoder.embed_codes(tokens)
        return self.quantizer.decode(tokens)

    def _decode_latents(self, latents: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        return self.decoder(latents, num_codebooks=num_codebooks)

    def _decode_window(self, tokens: torch.Tensor) -> torch.Tensor:
        graphed = self.__dict__.get("_graph_decode")
        return graphed(tokens) if graphed is not None else self._decode_window_eager(tokens)

    def _decode_window_eager(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self._first_conv_by_lookup(tokens)
        if h is not None:
            return self.decoder(h, num_codebooks=tokens.shape[1], first_conv_applied=True)
        return self._decode_latents(self._embed(tokens), tokens.shape[1])

    def _first_conv_by_lookup(self, tokens: torch.Tensor) -> Optional[torch.Tensor]:
        """The decoder's first conv of the features of ``tokens [B, K, T]`` by table lookup
        (:attr:`cpu_code_tables`), or ``None`` where that does not apply."""
        conv = getattr(self.decoder, "first_conv", None)
        if not (self.cpu_code_tables and conv is not None and cpu_inference(tokens) and tokens.shape[-1] > 0
                and conv.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
            return None
        r, k = conv.kernel_size[0], tokens.shape[1]
        if (conv.stride[0], conv.dilation[0], conv.groups) != (1, 1, 1) or r % 2 == 0 or conv.causal \
                or conv.pad_mode != "constant":
            return None
        # one table per number of codebooks decoded (bitrates), those of the current weights within
        # code_table_max_bytes together (stale ones are dropped); none for weights that cannot be cached (inference
        # tensors), which would rebuild it on every call
        sources = (conv.weight, conv.bias) + self._code_vector_sources()
        held = TimeMajorWeights.prune(self, "code_conv_tables_", sources)
        if held is None:
            return None
        name = f"code_conv_tables_{k}"
        others = sum(table.nbytes for key, table in held.items() if key != name)
        if others + (r * k * self.cardinality + 2) * conv.out_channels * 4 > self.code_table_max_bytes:
            return None
        tables = held.get(name)
        if tables is None:
            tables = TimeMajorWeights.get(self, name, sources, lambda *_: conv_tables(
                self._code_vectors(k), conv.weight, conv.bias))
        return lookup_conv(tokens, tables, r)

    def _code_vector_sources(self) -> tuple:
        """The tensors :meth:`_embed` reads (a cache of what is derived from them is rebuilt when one changes)."""
        if getattr(self.decoder, "reads_codes", False):
            return (self.decoder.codebook_weights,)
        return tuple(self.quantizer.parameters()) + tuple(self.quantizer.buffers())

    def _code_vectors(self, num_codebooks: int) -> torch.Tensor:
        """``[K, C, D']`` (float64) whose rows, one per codebook, sum to the features of any codes of ``K``
        codebooks (features are sums over codebooks): codebook 0's row of code ``c`` is the features of codes
        ``(c, 0, ..., 0)``, codebook ``k``'s the change that code ``c`` in place of 0 makes."""
        c = self.cardinality
        probe = torch.zeros(c, num_codebooks, 1, dtype=torch.long, device=self.device)
        base = self._embed(probe[:1])[..., 0].double()
        rows = []
        for k in range(num_codebooks):
            codes = probe.clone()
            codes[:, k, 0] = torch.arange(c, device=self.device)
            features = self._embed(codes)[..., 0].double()
            rows.append(features if k == 0 else features - base)
        return torch.stack(rows)

    # -- helpers ---------------------------------------------------------------------------------
    def _prepare_input(self, wav, sample_rate, lengths):
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(np.ascontiguousarray(wav))
        if not isinstance(wav, torch.Tensor):
            raise AudioError(f"expected audio as a tensor or numpy array, got {type(wav).__name__}")
        if not wav.dtype.is_floating_point:
            raise AudioError(f"expected floating-point audio samples, got {wav.dtype}; "
                             "convert integer PCM to float in [-1, 1] first")
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[None]
        elif wav.dim() != 3:
            raise AudioError(f"expected audio shaped [L], [C, L] or [B, C, L], got {tuple(wav.shape)}")
        if wav.shape[-1] == 0 or wav.shape[0] == 0 or wav.shape[1] == 0:
            raise AudioError(f"audio is empty: shape {tuple(wav.shape)}")
        wav = audio_utils.check_finite(wav.float())
        sr = audio_utils.check_sample_rate(self.sample_rate if sample_rate is None else sample_rate)
        if lengths is None:
            in_lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long)
        else:
            in_lengths = torch.as_tensor(lengths, dtype=torch.long).flatten().cpu()
            if in_lengths.shape[0] != wav.shape[0]:
                raise AudioError(f"got {in_lengths.shape[0]} lengths for a batch of {wav.shape[0]}")
            if (in_lengths <= 0).any() or (in_lengths > wav.shape[-1]).any():
                raise AudioError(f"lengths must be in 1..{wav.shape[-1]}, got {in_lengths.tolist()}")
        return wav, sr, in_lengths

    def _check_codes(self, codes):
        if isinstance(codes, Codes):
            if codes.model_id and codes.model_id != self.name:
                raise CodesError(f"these codes were made by '{codes.model_id}', not by this codec "
                                 f"('{self.name}'): decode them with the model that encoded them")
            if codes.fingerprint and codes.fingerprint != self.fingerprint():
                raise CodesError(f"these codes were made by another '{self.name}' model (codebook "
                                 f"fingerprint {codes.fingerprint}, this model {self.fingerprint()}): "
                                 "decode them with the checkpoint that encoded them")
            if codes.sample_rate != self.sample_rate:
                raise CodesError(f"codes are for {codes.sample_rate} Hz but this codec runs at {self.sample_rate} Hz")
            tokens, out_lengths = codes.tokens, codes.output_lengths
        elif isinstance(codes, torch.Tensor):
            tokens, out_lengths = (codes[None] if codes.dim() == 2 else codes), None
        else:
            raise CodesError(f"expected Codes or a LongTensor [B, K, T], got {type(codes).__name__}")
        validate_tokens(tokens, self.cardinality)
        if not 1 <= tokens.shape[1] <= self.max_codebooks:
            raise CodesError(f"codes have {tokens.shape[1]} codebooks; this codec has 1..{self.max_codebooks}")
        if tokens.shape[-1] == 0:
            raise CodesError("codes are empty (0 frames)")
        return tokens.long().to(self.device), out_lengths

    def _chunked(self, fn, x: torch.Tensor, frames_in: int, frames_out: int, total_frames: int) -> torch.Tensor:
        """Apply ``fn`` on windows of ``x`` along time, with overlap, and keep the centre of each.

        ``x`` has ``frames_in`` items per codec frame along its last axis, ``fn``'s output ``frames_out``.
        """
        chunk = max(1, int(self.chunk_seconds * self.frame_rate))
        if total_frames <= chunk:
            return fn(x)
        ctx = int(self.context_seconds * self.frame_rate)
        return torch.cat([fn(x[..., w0 * frames_in: w1 * frames_in])[..., (start - w0) * frames_out:
                                                                      (stop - w0) * frames_out]
                          for start, stop, w0, w1 in chunk_windows(total_frames, chunk, ctx)], dim=-1)

    # -- streaming (causal codecs) -----------------------------------------------------------------
    # Chunk in, chunk out, equal to offline encode / decode of the whole signal (up to float rounding).
    # The per-stream state lives in the encoder's and decoder's modules (audiocodec.nn.streaming).
    _stream: Optional[dict] = None

    def streaming_unsupported_reason(self) -> Optional[str]:
        """Why this codec cannot stream (``None`` when it can)."""
        for part in ("encoder", "decoder"):
            reason = nn_streaming.streaming_unsupported_reason(getattr(self, part), part)
            if reason:
                return reason
        return None

    @property
    def can_stream(self) -> bool:
        """Whether :meth:`streaming` works: causal encoder and decoder."""
        return self.streaming_unsupported_reason() is None

    @property
    def is_streaming(self) -> bool:
        return self._stream is not None

    @contextlib.contextmanager
    def streaming(self, batch_size: Optional[int] = None):
        """Context for streaming with :meth:`encode_chunk` and :meth:`decode_chunk`.

        Only causal codecs stream (e.g. ``encodec-24k``); others raise :class:`StreamingError` (code
        long inputs with :meth:`encode` / :meth:`decode`, which work on bounded-memory chunks).
        One encoder stream and one decoder stream run side by side, each of ``batch_size`` items
        (default: the batch of the first chunk). ``last=True`` ends a stream and a new one starts
        with the next chunk; :meth:`reset_streaming` drops both streams.

        >>> with codec.streaming(batch_size=1):
        ...     for chunk in mic:                                  # [B, C, n] at codec.sample_rate
        ...         play(codec.decode_chunk(codec.encode_chunk(chunk)))
        ...     play(codec.decode_chunk(codec.encode_chunk(None, last=True), last=True))
        """
        reason = self.streaming_unsupported_reason()
        if reason:
            raise StreamingError(f"'{self.name}' cannot stream ({reason}). Streaming needs a causal "
                                 "codec (e.g. encodec-24k); use encode() / decode(), which code long "
                                 "inputs in overlapping chunks with bounded memory")
        if self.is_streaming:
            raise StreamingError(f"'{self.name}' is already streaming; nested streaming() is not supported")
        if batch_size is not None and batch_size < 1:
            raise StreamingError(f"batch_size must be >= 1, got {batch_size}")
        nn_streaming.start_streaming(self.encoder)
        try:
            nn_streaming.start_streaming(self.decoder)
        except BaseException:
            nn_streaming.stop_streaming(self.encoder)
            raise
        self._stream = dict(batch_size=batch_size, encoder=None, decoder=None)
        try:
            yield self
        finally:
            self._stream = None
            nn_streaming.stop_streaming(self.encoder)
            nn_streaming.stop_streaming(self.decoder)

    def reset_streaming(self) -> None:
        """Drop the state of both streams: the next chunks start new ones."""
        self._require_stream()
        nn_streaming.reset_streaming(self.encoder)
        nn_streaming.reset_streaming(self.decoder)
        self._stream.update(encoder=None, decoder=None)

    @torch.no_grad()
    def encode_chunk(self, wav: Optional[Union[torch.Tensor, np.ndarray]], last: bool = False) -> torch.Tensor:
        """Encode the next chunk of a stream; returns the codes of the frames it completes.

        Args:
            wav: ``[B, C, n]`` (or ``[C, n]``, or ``[n]`` for a single mono stream) at the codec's sample
                rate, any ``n >= 0``; ``None`` is an empty chunk. Channels are mixed like ``encode``.
            last: end the stream: the remaining frames are returned, including a last partial frame
                (padded as ``encode`` pads it), and the next chunk starts a new stream.

        Returns:
            ``LongTensor [B, K, t]``. Concatenated over a stream they equal ``encode`` of the whole
            signal: ``ceil(L / hop_length)`` frames. A frame is returned once its hop of samples has
            arrived, except at the start: reflect padding of the first samples (as offline) delays the
            first frames until about ``kernel_size`` frames of audio have arrived.
        """
        self._require_stream()
        if wav is None:
            x = torch.zeros(self._stream_batch("encoder", None), self.channels, 0, device=self.device)
        else:
            x = self._stream_tensor(wav, "audio")
            self._stream_batch("encoder", x)
            x = audio_utils.check_finite(audio_utils.convert_channels(x.float(), self.channels)).to(self.device)
        latents = nn_streaming.stream_step(self.encoder, x, final=last)
        if last:
            self._stream["encoder"] = None
        if latents.shape[-1] == 0:
            return torch.zeros(x.shape[0], self.num_codebooks, 0, dtype=torch.long, device=self.device)
        return self.quantizer.encode(latents)

    @torch.no_grad()
    def decode_chunk(self, codes: Optional[Union[torch.Tensor, Codes]], last: bool = False) -> torch.Tensor:
        """Decode the next chunk of codes ``[B, K, t]`` (or ``[K, t]``, or :class:`Codes` whose tokens are
        used as they are; ``None``: no codes) of a stream.

        Returns audio ``[B, channels, n]``. Concatenated over a stream it equals ``decode`` of all the
        codes: ``T * hop_length`` samples. Each chunk of ``t`` frames gives ``t * hop_length`` samples,
        except at the start: the decoder's first conv pads the first frames by reflection (as offline),
        so no audio comes out until it has ``kernel_size`` (7 for SEANet) frames, then all of it does.
        ``last=True`` ends the stream (returning what is held back) and the next chunk starts a new one.
        """
        self._require_stream()
        latents = None
        if codes is None:
            batch = self._stream_batch("decoder", None)
        else:
            tokens = self._stream_tensor(codes.tokens if isinstance(codes, Codes) else codes, "codes")
            batch = self._stream_batch("decoder", tokens)
            if tokens.shape[-1]:
                validate_tokens(tokens, self.cardinality)
            if not 1 <= tokens.shape[1] <= self.max_codebooks:
                raise CodesError(f"codes have {tokens.shape[1]} codebooks; this codec has 1..{self.max_codebooks}")
            tokens = tokens.long().to(self.device)
            latents = self._embed(tokens) if tokens.shape[-1] else None
        if latents is None:
            latents = torch.zeros(batch, int(self.decoder.dimension), 0, device=self.device)
        audio = nn_streaming.stream_step(self.decoder, latents, final=last)
        if last:
            self._stream["decoder"] = None
        return audio

    def _require_stream(self) -> None:
        if self._stream is None:
            raise StreamingError("not streaming: call encode_chunk / decode_chunk inside "
                                 "`with codec.streaming():` (or use encode / decode for whole signals)")

    def _stream_batch(self, part: str, x: Optional[torch.Tensor]) -> int:
        """Check the batch size of chunk ``x [B, ., n]`` against its stream's; return it."""
        st = self._stream
        if x is None:
            b = st[part] or st["batch_size"]
            if b is None:
                raise StreamingError(f"the {part} stream has seen no chunk yet and streaming() got no "
                                     "batch_size, so an empty last chunk has no batch size")
            return b
        b = int(x.shape[0])
        expected = st[part] or st["batch_size"]
        if expected is not None and b != expected:
            raise StreamingError(f"this {part} stream has a batch of {expected}, got a chunk of {b}; "
                                 "use reset_streaming() (or a new streaming() context) for another batch")
        st[part] = b
        return b

    @staticmethod
    def _stream_tensor(x, what: str) -> torch.Tensor:
        """A chunk of ``"audio"`` (``[n]``, ``[C, n]``, ``[B, C, n]``) or ``"codes"`` (``[K, t]``, ``[B, K, t]``)
        as a 3-d tensor."""
        audio = what == "audio"
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        error = AudioError if audio else CodesError
        if not isinstance(x, torch.Tensor):
            raise error(f"expected a {what} chunk as a tensor, got {type(x).__name__}")
        if audio and not x.dtype.is_floating_point:
            raise AudioError(f"expected floating-point audio samples, got {x.dtype}; "
                             "convert integer PCM to float in [-1, 1] first")
        if x.dim() == 1 and audio:
            x = x[None, None]
        elif x.dim() == 2:
            x = x[None]
        elif x.dim() != 3:
            shapes = "[n], [C, n] or [B, C, n]" if audio else "[K, t] or [B, K, t]"
            raise error(f"expected a {what} chunk shaped {shapes}, got {tuple(x.shape)}")
        return x
