"""The one codec interface every model shares: waveform -> :class:`Codes` -> waveform.

A :class:`Codec` is an encoder (``[B, C, L] -> [B, D, T]``), a quantizer (``[B, D, T] <-> [B, K, T]``)
and a decoder (``[B, D', T] -> [B, C, T * hop]``). It handles everything around them: input shapes,
sample rates and channels, padding and exact output lengths, chunking of long inputs, fp32 codes
under autocast, and validation of codes.
"""
from __future__ import annotations

import hashlib
import math
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .. import audio as audio_utils
from ..errors import AudioError, CodesError
from ..nn.conv import fold_weight_norm
from .codes import Codes, validate_tokens


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

    def fingerprint(self) -> str:
        """Short hash of the codebooks: codes from another trained model are told apart."""
        tensors = [b for n, b in self.quantizer.named_buffers() if n.endswith("embed")] or \
            [p for _, p in self.quantizer.named_parameters()]
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
        mask = torch.arange(x.shape[-1], device=x.device)[None, None] < lengths_c.to(x.device)[:, None, None]
        x = (x * mask).to(self.device)
        tokens = self._chunked(self._encode_window, x, frames_in=self.hop_length, frames_out=1,
                               total_frames=math.ceil(x.shape[-1] / self.hop_length))
        frame_lengths = torch.ceil(lengths_c.double() / self.hop_length).long()
        return Codes(tokens=tokens, lengths=frame_lengths, model_id=self.name, fingerprint=self.fingerprint(),
                     sample_rate=self.sample_rate, frame_rate=self.frame_rate, cardinality=self.cardinality,
                     input_sample_rate=sr, input_lengths=in_lengths, input_channels=in_channels)

    def _encode_window(self, x: torch.Tensor) -> torch.Tensor:
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
        mask = torch.arange(length, device=audio.device)[None, None] < out_lengths.to(audio.device)[:, None, None]
        return audio * mask

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
        return self._decode_latents(self._embed(tokens), tokens.shape[1])

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
        outputs = []
        for start in range(0, total_frames, chunk):
            stop = min(start + chunk, total_frames)
            w0, w1 = max(0, start - ctx), min(total_frames, stop + ctx)
            y = fn(x[..., w0 * frames_in: w1 * frames_in])
            outputs.append(y[..., (start - w0) * frames_out: (stop - w0) * frames_out])
        return torch.cat(outputs, dim=-1)
