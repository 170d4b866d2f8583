"""Text to speech with a trained :class:`~audiocodec.tts.model.TTSModel` and its codec.

>>> tts = audiocodec.TTS.load("exp/tts/tts")                      # codec found from the model's record
>>> audio = tts.synthesize("Hello there. How are you?")           # [L] float tensor at tts.sample_rate
>>> audio = tts.synthesize(text, voice="ref.wav", voice_text="what the reference says")   # voice cloning
>>> for chunk in tts.synthesize(text, stream=True): play(chunk)  # audio as tokens arrive

Long text is normalised and split into sentences (packed up to ``max_chars``), which are generated as one
batch and joined. Speech tokens are decoded in chunks of ``chunk_frames`` frames with ``context_frames`` of
look-back and look-ahead; streaming yields each chunk as soon as the tokens it needs exist, and offline
synthesis joins the very same chunks, so both give identical audio.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import torch

from ..codecs import DEFAULT_CODEC, Codec, load_codec
from ..errors import ConfigError
from ..lm import DecodeStep, generate
from ..lm.generate import StepState
from ..lm.sampling import TokenSampler
from .frontend import TextFrontend
from .layout import EOS, PAD, TTSVocab, delay_force, lead_in, pad_batch, prompt_sequence, undelay
from .model import TTSModel, load_tts


@dataclass
class SynthesisOptions:
    """Sampling and length controls (CosyVoice defaults: RAS with top-p 0.8, top-k 25).

    ``greedy``: argmax decoding (deterministic). ``min_ratio`` / ``max_ratio``: speech tokens per text
    token below which EOS is forbidden / at which generation stops. ``speaker_prompt_seconds``: how much
    of a voice without transcript is used as speaker prompt.
    """
    temperature: float = 1.0
    top_k: Optional[int] = 25
    top_p: Optional[float] = 0.8
    repetition_penalty: float = 1.0
    ras: bool = True
    greedy: bool = False
    min_ratio: float = 2.0
    max_ratio: float = 20.0
    seed: Optional[int] = None
    max_chars: int = 300
    chunk_frames: int = 25
    context_frames: int = 8
    sentence_pause: float = 0.12
    speaker_prompt_seconds: float = 3.0
    timings: dict = field(default_factory=dict)


class TTS:
    """A TTS model with its codec, on one device.

    ``cuda_graphs``: replay each decoding step from a CUDA graph (:class:`~audiocodec.lm.DecodeStep`);
    default: on when the model is on a CUDA device. Tokens are the same either way.
    """

    def __init__(self, model: TTSModel, codec: Codec, cuda_graphs: Optional[bool] = None):
        info = model.codec_info
        if info.get("fingerprint") and info["fingerprint"] != codec.fingerprint():
            raise ConfigError(f"the TTS model was trained on tokens of codec {info.get('model_id')} "
                              f"(fingerprint {info['fingerprint']}), not of {codec.name} ({codec.fingerprint()})")
        self.model, self.codec = model.eval(), codec
        self.vocab: TTSVocab = model.vocab
        self.frontend = TextFrontend.from_dict(model.text_config)
        self.cuda_graphs = cuda_graphs

    @property
    def _graphs(self) -> bool:
        on_cuda = self.device.type == "cuda"
        return on_cuda if self.cuda_graphs is None else bool(self.cuda_graphs) and on_cuda

    @classmethod
    def load(cls, path: Union[str, Path], codec: Union[str, Path, Codec, None] = None,
             device: Union[str, torch.device] = "cpu") -> "TTS":
        """Load a TTS model (folder or file, or the name of an embedded one) and its codec: ``codec``, else
        the one recorded in the model (``codec.source``), else the embedded default codec."""
        from ..codecs.embedded import embedded_tts_path
        if not Path(path).exists() and embedded_tts_path(path) is not None:
            path = embedded_tts_path(path)
        model = load_tts(path, device)
        spec = codec if codec is not None else (model.codec_info.get("source") or DEFAULT_CODEC)
        return cls(model, spec if isinstance(spec, Codec) else load_codec(spec, device=device))

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- prompts ---------------------------------------------------------------------------------
    def _voice_tokens(self, voice) -> Optional[torch.Tensor]:
        if voice is None:
            return None
        if isinstance(voice, (str, Path)):
            from ..audio import load_audio
            wav, sr = load_audio(voice)
        else:
            wav, sr = torch.as_tensor(voice), self.sample_rate
        return self.codec.encode(wav.to(self.codec.device), sample_rate=sr).tokens[0].cpu()

    def _prompts(self, sentences: Sequence[str], voice_tokens, voice_text, opts: "SynthesisOptions"
                 ) -> tuple[list[torch.Tensor], list[int], Optional[torch.Tensor]]:
        """``(prompts [K, L_i], text lengths, speech prefix)``. With a voice and its transcript, the model
        continues the reference (the prefix); with a voice alone, the reference's first
        ``speaker_prompt_seconds`` are a speaker prompt in front of the text."""
        prefix = speaker = None
        if voice_tokens is not None and voice_text:
            prefix = voice_tokens
        elif voice_tokens is not None:
            speaker = voice_tokens[:, : max(1, int(opts.speaker_prompt_seconds * self.codec.frame_rate))]
        prefix_ids = self.frontend.encode(voice_text) if prefix is not None else []
        prompts, text_lengths = [], []
        for s in sentences:
            ids = self.frontend.encode(s)
            if not ids:
                raise ConfigError(f"the text {s!r} gives no tokens after normalisation")
            prompts.append(prompt_sequence(self.vocab, prefix_ids + ids, prefix, speaker))
            text_lengths.append(len(ids))
        return prompts, text_lengths, prefix

    def _sampler(self, opts: SynthesisOptions, text_lengths: torch.Tensor):
        """A ``sample_fn``: per row only what it may sample (speech tokens; row 0 also its end token), the
        end token forbidden before ``min_ratio`` x text length."""
        allowed = self.vocab.speech_logit_mask(self.device)[None]          # [1, K, V]
        gen = None
        if opts.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(int(opts.seed))
        sampler = TokenSampler(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
                               do_sample=not opts.greedy, repetition_penalty=opts.repetition_penalty,
                               ras=opts.ras and not opts.greedy, eos_id=self.vocab.end_token, generator=gen,
                               min_len=(text_lengths.float() * opts.min_ratio).long().to(self.device))

        def sample_fn(logits: torch.Tensor, state: StepState) -> torch.Tensor:
            return sampler(logits.float().masked_fill(~allowed, float("-inf")), state)
        return sample_fn

    def _force_fn(self, leads: torch.Tensor):
        """The delay pattern's forced cells; ``leads [B, K, K]``: each row's :func:`lead_in`."""
        def force_fn(tokens: torch.Tensor, state: StepState) -> torch.Tensor:
            return delay_force(self.vocab, tokens, state.step, state.generated, leads[state.rows])
        return force_fn

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_tokens(self, sentences: Sequence[str], voice=None, voice_text: Optional[str] = None,
                        options: Optional[SynthesisOptions] = None) -> list[torch.Tensor]:
        """Speech tokens ``[1, T_i]`` of each sentence (generated together, one batch)."""
        opts = options or SynthesisOptions()
        voice_tokens = self._voice_tokens(voice)
        prompts, text_lengths, prefix = self._prompts(sentences, voice_tokens, voice_text, opts)
        lengths = torch.tensor([p.shape[-1] for p in prompts])
        text_lengths = torch.tensor(text_lengths)
        k = self.vocab.num_codebooks
        max_new = int((text_lengths.max() * opts.max_ratio).ceil()) + k
        batch = pad_batch(prompts, PAD, left=True).to(self.device)
        leads = lead_in(self.vocab, prefix).to(self.device)[None].expand(len(prompts), k, k)
        out = generate(self.model.lm, batch, max_new, prompt_lengths=lengths.to(self.device),
                       sample_fn=self._sampler(opts, text_lengths), force_fn=self._force_fn(leads),
                       eos_id=EOS, pad_id=PAD, cuda_graph=self._graphs)
        cap = (text_lengths.float() * opts.max_ratio).long()
        return [undelay(self.vocab, out.tokens[i, :, : int(out.lengths[i])].cpu())[:, : int(cap[i])]
                for i in range(len(sentences))]

    def _decode_chunks(self, tokens: torch.Tensor, opts: SynthesisOptions, final: bool = True,
                       start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Audio of frames ``[start, ...)`` of ``tokens [K, T]`` in chunks; with ``final=False`` only the
        chunks whose look-ahead already exists. Yields ``(next start, audio [n])``."""
        total, chunk, ctx, hop = tokens.shape[-1], opts.chunk_frames, opts.context_frames, self.codec.hop_length
        while start < total:
            stop = min(start + chunk, total)
            if not final and stop + ctx > total:
                return
            w0, w1 = max(0, start - ctx), min(total, stop + ctx)
            window = tokens[None, :, w0:w1].to(self.codec.device)
            audio = self.codec.decode(window)[0, 0]
            yield stop, audio[(start - w0) * hop:(stop - w0) * hop].cpu()
            start = stop

    def _pause(self, opts: SynthesisOptions) -> torch.Tensor:
        return torch.zeros(int(opts.sentence_pause * self.sample_rate))

    def synthesize(self, text: str, voice=None, voice_text: Optional[str] = None, stream: bool = False,
                   **options) -> Union[torch.Tensor, Iterator[torch.Tensor]]:
        """Speak ``text``: audio ``[L]`` at :attr:`sample_rate`, or (``stream=True``) an iterator of
        chunks whose concatenation is exactly that audio. ``options``: :class:`SynthesisOptions` fields.
        ``voice``: a reference clip (path or tensor); with ``voice_text``, its transcript, the model
        continues the reference (best similarity); without, the clip is a speaker prompt."""
        opts = SynthesisOptions(**options)
        sentences = self.frontend.split(text, opts.max_chars)
        if not sentences:
            raise ConfigError("nothing to say: the text is empty after normalisation")
        if stream:
            return self._stream(sentences, voice, voice_text, opts)
        tokens = self.generate_tokens(sentences, voice, voice_text, opts)
        pieces = []
        for i, t in enumerate(tokens):
            if i:
                pieces.append(self._pause(opts))
            pieces += [a for _, a in self._decode_chunks(t, opts)]
        return torch.cat(pieces)

    def synthesize_batch(self, texts: Sequence[str], **options) -> list[torch.Tensor]:
        """Several independent texts (each one sentence group), generated in one batch."""
        opts = SynthesisOptions(**options)
        tokens = self.generate_tokens(list(texts), options=opts)
        return [torch.cat([a for _, a in self._decode_chunks(t, opts)]) for t in tokens]

    def _stream(self, sentences, voice, voice_text, opts: SynthesisOptions) -> Iterator[torch.Tensor]:
        """Sentence by sentence; within one, audio chunks as soon as their tokens exist."""
        t0 = time.perf_counter()
        opts.timings.clear()
        for i, sentence in enumerate(sentences):
            if i:
                yield self._pause(opts)
            done = 0
            for tokens in self._token_stream(sentence, voice, voice_text, opts):
                for done, audio in self._decode_chunks(tokens, opts, final=False, start=done):
                    opts.timings.setdefault("first_chunk_s", time.perf_counter() - t0)
                    yield audio
            for done, audio in self._decode_chunks(tokens, opts, final=True, start=done):
                opts.timings.setdefault("first_chunk_s", time.perf_counter() - t0)
                yield audio
        opts.timings["total_s"] = time.perf_counter() - t0

    @torch.inference_mode()
    def _token_stream(self, sentence: str, voice, voice_text, opts: SynthesisOptions) -> Iterator[torch.Tensor]:
        """The growing speech tokens ``[K, n]`` (complete frames) of one sentence, every ``chunk_frames``
        steps and at the end. Token-by-token decoding with the KV cache, as :func:`~audiocodec.lm.generate`."""
        voice_tokens = self._voice_tokens(voice)
        prompts, text_lengths, prefix = self._prompts([sentence], voice_tokens, voice_text, opts)
        text_len = torch.tensor(text_lengths)
        k = self.vocab.num_codebooks
        max_new = int(text_len[0] * opts.max_ratio) + k
        lm = self.model.lm
        prompt = prompts[0].to(self.device)[None]
        cache = lm.new_cache(1, prompt.shape[-1] + max_new, static_shapes=self._graphs)
        logits = lm(prompt, cache=cache)[:, :, -1]
        step_fn = DecodeStep(lm, cache, cuda_graph=self._graphs)
        sample_fn = self._sampler(opts, text_len)
        force_fn = self._force_fn(lead_in(self.vocab, prefix).to(self.device)[None])
        generated = torch.empty(1, k, 0, dtype=torch.long, device=self.device)
        rows = torch.zeros(1, dtype=torch.long, device=self.device)
        cap = int(text_len[0] * opts.max_ratio)
        for step in range(max_new):
            state = StepState(step, generated, rows)
            token = force_fn(sample_fn(logits, state), state)                   # [1, K]
            if int(token[0, 0]) == EOS:
                break
            generated = torch.cat([generated, token[:, :, None]], dim=-1)
            if (step + 1) % opts.chunk_frames == 0:
                yield undelay(self.vocab, generated[0].cpu())[:, :cap]
            logits = step_fn(token[:, :, None])
        yield undelay(self.vocab, generated[0].cpu())[:, :cap]
