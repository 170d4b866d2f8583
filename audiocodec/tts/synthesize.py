"""Text to speech with a trained :class:`~audiocodec.tts.model.TTSModel` and its codec.

>>> tts = audiocodec.TTS.load("exp/tts/tts")                      # codec found from the model's record
>>> audio = tts.synthesize("Hello there. How are you?")           # [L] float tensor at tts.sample_rate
>>> audio = tts.synthesize(text, voice="ref.wav", voice_text="what the reference says")   # voice cloning
>>> for chunk in tts.synthesize(text, stream=True): play(chunk)  # audio as tokens arrive

Long text is normalised and split into sentences (packed up to ``max_chars``), which are generated as one
batch and joined. Speech tokens are decoded in chunks of ``chunk_frames`` frames with ``context_frames`` of
look-back and look-ahead; streaming yields each chunk as soon as the tokens it needs exist, and offline
synthesis joins the very same chunks, so both give identical audio.

The text may also be an iterable of str pieces arriving over time (an LLM's output, char by char or word
by word). A model of the plain layout joins them and speaks as above, once the text is complete. A model
of the *bistream* layout (:mod:`audiocodec.tts.layout`) starts speaking while the text arrives:

>>> for chunk in tts.synthesize(llm_pieces(), stream=True): play(chunk)   # speech before the text is done

There the pieces go through a :class:`~audiocodec.tts.frontend.TextStream` (read at word boundaries, one
utterance per sentence, at most ``max_text_tokens`` text tokens each), whose tokens are fed to the model in
chunks of ``text_chunk`` as it produces ``speech_chunk`` speech tokens per chunk
(:class:`~audiocodec.tts.bistream.BistreamFeed`). The tokens depend only on the joined text, so a str and
the same text piece by piece give the same speech; offline synthesis generates the utterances as a batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch

from ..codecs import DEFAULT_CODEC, Codec, load_codec
from ..errors import ConfigError
from ..lm import DecodeStep, generate
from ..lm.generate import StepState, use_cuda_graphs
from ..lm.sampling import TokenSampler
from .bistream import BistreamFeed, BistreamHooks, KnownText, TextSource
from .frontend import TextFrontend
from .layout import (EOS, PAD, TTSVocab, delay_force, lead_in, pad_batch, prompt_sequence, speaker_rows,
                     split_sequence, undelay)
from .model import TTSModel, load_tts

#: Text to speak: a str, or str pieces arriving over time.
Text = Union[str, Iterable[str]]


@dataclass
class SynthesisOptions:
    """Sampling and length controls (CosyVoice defaults: RAS with top-p 0.8, top-k 25).

    ``greedy``: argmax decoding (deterministic). ``min_ratio`` / ``max_ratio``: speech tokens per text
    token below which EOS is forbidden / at which generation stops. ``speaker_prompt_seconds``: how much
    of a voice without transcript is used as speaker prompt. ``max_chars``: plain layout, characters per
    generated sentence group. ``max_text_tokens``: bistream layout, text tokens per utterance (a longer
    sentence is cut at a word boundary); sizes the KV cache of streaming generation.
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
    max_text_tokens: int = 300
    timings: dict = field(default_factory=dict)


class TTS:
    """A TTS model with its codec, on one device.

    ``cuda_graphs``: replay each decoding step from a CUDA graph (:class:`~audiocodec.lm.DecodeStep`);
    default: on when the model is on a CUDA device. Tokens are the same either way.
    ``compile``: with CUDA graphs, ``torch.compile`` the decoding step before capturing it (fused kernels,
    ~1.5x the tokens/s at batch 1 on an H200; the first call of each new shape compiles, ~1 minute).
    Offline synthesis only: streaming replays the model step alone.
    """

    def __init__(self, model: TTSModel, codec: Codec, cuda_graphs: Optional[bool] = None, compile: bool = False):
        info = model.codec_info
        if info.get("fingerprint") and info["fingerprint"] != codec.fingerprint():
            raise ConfigError(f"the TTS model was trained on tokens of codec {info.get('model_id')} "
                              f"(fingerprint {info['fingerprint']}), not of {codec.name} ({codec.fingerprint()})")
        self.model, self.codec = model.eval(), codec
        self.vocab: TTSVocab = model.vocab
        self.layout = model.layout
        self.frontend = TextFrontend.from_dict(model.text_config)
        self.cuda_graphs = cuda_graphs
        self.compile = bool(compile)

    @property
    def _graphs(self) -> bool:
        return use_cuda_graphs(self.cuda_graphs, self.device)

    @classmethod
    def load(cls, path: Union[str, Path], codec: Union[str, Path, Codec, None] = None,
             device: Union[str, torch.device] = "cpu", **options) -> "TTS":
        """Load a TTS model (folder or file, or the name of an embedded one) and its codec: ``codec``, else
        the one recorded in the model (``codec.source``), else the embedded default codec. ``options``:
        ``cuda_graphs``, ``compile`` (see :class:`TTS`)."""
        from ..codecs.embedded import embedded_tts_path
        if not Path(path).exists() and embedded_tts_path(path) is not None:
            path = embedded_tts_path(path)
        model = load_tts(path, device)
        spec = codec if codec is not None else (model.codec_info.get("source") or DEFAULT_CODEC)
        return cls(model, spec if isinstance(spec, Codec) else load_codec(spec, device=device), **options)

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

    def _reference(self, voice_tokens, voice_text, opts: "SynthesisOptions"
                   ) -> tuple[Optional[torch.Tensor], list[int], Optional[torch.Tensor]]:
        """``(speech prefix [K, T], its transcript's tokens, speaker prompt [K, T'])`` of a voice. With a
        voice and its transcript, the model continues the reference (the prefix); with a voice alone, the
        reference's first ``speaker_prompt_seconds`` are a speaker prompt in front of the text."""
        prefix = speaker = None
        if voice_tokens is not None and voice_text:
            prefix = voice_tokens
        elif voice_tokens is not None:
            speaker = voice_tokens[:, : max(1, int(opts.speaker_prompt_seconds * self.codec.frame_rate))]
        prefix_ids = self.frontend.encode(voice_text) if prefix is not None else []
        return prefix, prefix_ids, speaker

    def _encode(self, sentence: str) -> list[int]:
        ids = self.frontend.encode(sentence)
        if not ids:
            raise ConfigError(f"the text {sentence!r} gives no tokens after normalisation")
        return ids

    def _prompts(self, sentences: Sequence[str], reference
                 ) -> tuple[list[torch.Tensor], list[int], Optional[torch.Tensor]]:
        """``(prompts [K, L_i], text lengths, speech prefix)`` of the plain layout; ``reference``:
        :meth:`_reference` of the voice."""
        prefix, prefix_ids, speaker = reference
        prompts, text_lengths = [], []
        for s in sentences:
            ids = self._encode(s)
            prompts.append(prompt_sequence(self.vocab, prefix_ids + ids, prefix, speaker))
            text_lengths.append(len(ids))
        return prompts, text_lengths, prefix

    def _token_sampler(self, opts: SynthesisOptions, min_len=None) -> TokenSampler:
        """The :class:`TokenSampler` of ``opts``; ``min_len`` (``[B]``): the end token forbidden before."""
        gen = None
        if opts.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(int(opts.seed))
        limits = {} if min_len is None else {"eos_id": self.vocab.end_token, "min_len": min_len}
        return TokenSampler(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
                            do_sample=not opts.greedy, repetition_penalty=opts.repetition_penalty,
                            ras=opts.ras and not opts.greedy, generator=gen, **limits)

    def _sampler(self, opts: SynthesisOptions, text_lengths: torch.Tensor):
        """A ``sample_fn``: per row only what it may sample (speech tokens; row 0 also its end token), the
        end token forbidden before ``min_ratio`` x text length."""
        allowed = self.vocab.speech_logit_mask(self.device)[None]          # [1, K, V]
        sampler = self._token_sampler(opts, (text_lengths.float() * opts.min_ratio).long().to(self.device))

        def sample_fn(logits: torch.Tensor, state: StepState) -> torch.Tensor:
            return sampler(logits.float().masked_fill(~allowed, float("-inf")), state)
        sample_fn.graph_safe, sample_fn.generators = True, sampler.generators   # the whole step can be captured
        return sample_fn

    def _force_fn(self, leads: torch.Tensor):
        """The delay pattern's forced cells; ``leads [B, K, K]``: each row's :func:`lead_in`."""
        def force_fn(tokens: torch.Tensor, state: StepState) -> torch.Tensor:
            return delay_force(self.vocab, tokens, state.step, state.generated, leads.index_select(0, state.rows))
        force_fn.graph_safe = True
        return force_fn

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_tokens(self, sentences: Sequence[str], voice=None, voice_text: Optional[str] = None,
                        options: Optional[SynthesisOptions] = None) -> list[torch.Tensor]:
        """Speech tokens ``[K, T_i]`` of each sentence (generated together, one batch; with the bistream
        layout each sentence is one utterance, its whole text known)."""
        opts = options or SynthesisOptions()
        reference = self._reference(self._voice_tokens(voice), voice_text, opts)
        if self.layout.bistream:
            return self._bistream_tokens([self._encode(s) for s in sentences], reference, opts)
        prompts, text_lengths, prefix = self._prompts(sentences, reference)
        lengths = torch.tensor([p.shape[-1] for p in prompts])
        text_lengths = torch.tensor(text_lengths)
        k = self.vocab.num_codebooks
        max_new = int((text_lengths.max() * opts.max_ratio).ceil()) + k
        batch = pad_batch(prompts, PAD, left=True).to(self.device)
        leads = lead_in(self.vocab, prefix).to(self.device)[None].expand(len(prompts), k, k)
        out = generate(self.model.lm, batch, max_new, prompt_lengths=lengths.to(self.device),
                       sample_fn=self._sampler(opts, text_lengths), force_fn=self._force_fn(leads),
                       eos_id=EOS, pad_id=PAD, cuda_graph=self._graphs, compile_step=self.compile)
        cap = (text_lengths.float() * opts.max_ratio).long()
        return [undelay(self.vocab, out.tokens[i, :, : int(out.lengths[i])].cpu())[:, : int(cap[i])]
                for i in range(len(sentences))]

    def speech_tokens(self, text: Text, voice=None, voice_text: Optional[str] = None, stream: bool = False,
                      **options) -> list[torch.Tensor]:
        """The speech tokens ``[K, T_i]`` of each utterance of ``text`` (a str or str pieces), which
        :meth:`synthesize` turns into audio: generated as one batch, or (``stream=True``) step by step as
        in streaming synthesis, reading the text as it arrives."""
        opts = SynthesisOptions(**options)
        if not stream:
            return self._offline_tokens(text, voice, voice_text, opts)
        tokens = [self._last(s) for s in self._utterance_streams(text, voice, voice_text, opts)]
        if not tokens:
            raise ConfigError("nothing to say: the text is empty after normalisation")
        return tokens

    def _offline_tokens(self, text: Text, voice, voice_text, opts: SynthesisOptions) -> list[torch.Tensor]:
        """Every utterance's speech tokens ``[K, T_i]``, generated as one batch."""
        if self.layout.bistream:
            reference = self._reference(self._voice_tokens(voice), voice_text, opts)
            texts = self.frontend.stream(text, opts.max_text_tokens).token_lists()
            tokens = self._bistream_tokens(texts, reference, opts) if texts else []
        else:
            sentences = self.frontend.split(_joined(text), opts.max_chars)
            tokens = self.generate_tokens(sentences, voice, voice_text, opts) if sentences else []
        if not tokens:
            raise ConfigError("nothing to say: the text is empty after normalisation")
        return tokens

    def _utterance_streams(self, text: Text, voice, voice_text, opts: SynthesisOptions
                           ) -> Iterator[Iterator[torch.Tensor]]:
        """Each utterance's growing speech tokens, decoded step by step (streaming); the voice is encoded
        once. Raises ConfigError at once when a str (or, with the plain layout, any text) is empty."""
        reference = self._reference(self._voice_tokens(voice), voice_text, opts)
        if self.layout.bistream:
            if isinstance(text, str) and not self.frontend.split(text, opts.max_chars):
                raise ConfigError("nothing to say: the text is empty after normalisation")
            utterances = self.frontend.stream(text, opts.max_text_tokens).utterances()
            return (self._bistream_token_stream(u, reference, opts) for u in utterances)
        sentences = self.frontend.split(_joined(text), opts.max_chars)
        if not sentences:
            raise ConfigError("nothing to say: the text is empty after normalisation")
        return (self._token_stream(s, reference, opts) for s in sentences)

    @staticmethod
    def _last(token_stream: Iterator[torch.Tensor]) -> torch.Tensor:
        """The last (complete) tokens of a growing token stream."""
        tokens = None
        for tokens in token_stream:
            pass
        return tokens

    def _decode_chunks(self, tokens: torch.Tensor, opts: SynthesisOptions, final: bool = True,
                       start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Audio of frames ``[start, ...)`` of ``tokens [K, T]`` in chunks; with ``final=False`` only the
        chunks whose look-ahead already exists. Yields ``(next start, audio [n])``."""
        for stop, audio in self.codec.decode_chunks(tokens[None].to(self.codec.device), opts.chunk_frames,
                                                    opts.context_frames, start=start, final=final):
            yield stop, audio[0, 0].cpu()

    def _pause(self, opts: SynthesisOptions) -> torch.Tensor:
        return torch.zeros(int(opts.sentence_pause * self.sample_rate))

    def _join_audio(self, tokens: Sequence[torch.Tensor], opts: SynthesisOptions) -> torch.Tensor:
        """The audio of each utterance's tokens ``[K, T_i]``, a pause between them."""
        pieces = []
        for i, t in enumerate(tokens):
            if i:
                pieces.append(self._pause(opts))
            pieces += [a for _, a in self._decode_chunks(t, opts)]
        return torch.cat(pieces)

    def synthesize(self, text: Text, voice=None, voice_text: Optional[str] = None, stream: bool = False,
                   **options) -> Union[torch.Tensor, Iterator[torch.Tensor]]:
        """Speak ``text``: audio ``[L]`` at :attr:`sample_rate`, or (``stream=True``) an iterator of
        chunks whose concatenation is exactly that audio. ``options``: :class:`SynthesisOptions` fields.
        ``voice``: a reference clip (path or tensor); with ``voice_text``, its transcript, the model
        continues the reference (best similarity); without, the clip is a speaker prompt.

        ``text``: a str, or an iterable of str pieces arriving over time. With the plain layout the pieces
        are joined first; with the bistream layout they are read as they come, and with ``stream=True``
        speech starts before the text has ended (see the module docstring)."""
        opts = SynthesisOptions(**options)
        if stream:
            return self._stream(self._utterance_streams(text, voice, voice_text, opts), opts)
        return self._join_audio(self._offline_tokens(text, voice, voice_text, opts), opts)

    def synthesize_batch(self, texts: Sequence[str], **options) -> list[torch.Tensor]:
        """Several independent texts (each one sentence group), generated in one batch."""
        opts = SynthesisOptions(**options)
        tokens = self.generate_tokens(list(texts), options=opts)
        return [torch.cat([a for _, a in self._decode_chunks(t, opts)]) for t in tokens]

    def _stream(self, token_streams: Iterable[Iterator[torch.Tensor]], opts: SynthesisOptions
                ) -> Iterator[torch.Tensor]:
        """Utterance by utterance (``token_streams``: each one's growing tokens ``[K, n]``), a pause
        between them; within one, audio chunks as soon as their tokens exist."""
        t0 = time.perf_counter()
        opts.timings.clear()
        spoken = 0
        for token_stream in token_streams:
            if spoken:
                yield self._pause(opts)
            spoken += 1
            done = 0
            for tokens in token_stream:
                for done, audio in self._decode_chunks(tokens, opts, final=False, start=done):
                    opts.timings.setdefault("first_chunk_s", time.perf_counter() - t0)
                    yield audio
            for done, audio in self._decode_chunks(tokens, opts, final=True, start=done):
                opts.timings.setdefault("first_chunk_s", time.perf_counter() - t0)
                yield audio
        if not spoken:
            raise ConfigError("nothing to say: the text is empty after normalisation")
        opts.timings["total_s"] = time.perf_counter() - t0

    @torch.inference_mode()
    def _decode_steps(self, prompt: torch.Tensor, max_new: int, sample_fn, force_fn) -> Iterator[torch.Tensor]:
        """Decode ``prompt [1, K, L]`` token by token with the KV cache, as :func:`~audiocodec.lm.generate`
        (``sample_fn`` then ``force_fn`` at each step): yields the generated ids ``[1, K, n]`` after each
        step, until EOS (not included) or ``max_new`` steps."""
        lm = self.model.lm
        cache = lm.new_cache(1, prompt.shape[-1] + max_new, static_shapes=self._graphs)
        logits = lm(prompt, cache=cache)[:, :, -1]
        step_fn = DecodeStep(lm, cache, cuda_graph=self._graphs)
        generated = torch.empty(1, self.vocab.num_codebooks, 0, dtype=torch.long, device=self.device)
        rows = torch.zeros(1, dtype=torch.long, device=self.device)
        for step in range(max_new):
            state = StepState(step, generated, rows)
            token = force_fn(sample_fn(logits, state), state)                   # [1, K]
            if int(token[0, 0]) == EOS:
                return
            generated = torch.cat([generated, token[:, :, None]], dim=-1)
            yield generated
            logits = step_fn(token[:, :, None])

    @torch.inference_mode()
    def _token_stream(self, sentence: str, reference, opts: SynthesisOptions) -> Iterator[torch.Tensor]:
        """The growing speech tokens ``[K, n]`` (complete frames) of one sentence, every ``chunk_frames``
        steps and at the end (plain layout; ``reference``: :meth:`_reference` of the voice)."""
        prompts, text_lengths, prefix = self._prompts([sentence], reference)
        text_len = torch.tensor(text_lengths)
        k = self.vocab.num_codebooks
        max_new = int(text_len[0] * opts.max_ratio) + k
        sample_fn = self._sampler(opts, text_len)
        force_fn = self._force_fn(lead_in(self.vocab, prefix).to(self.device)[None])
        cap = int(text_len[0] * opts.max_ratio)
        generated = torch.empty(1, k, 0, dtype=torch.long)
        for generated in self._decode_steps(prompts[0].to(self.device)[None], max_new, sample_fn, force_fn):
            if generated.shape[-1] % opts.chunk_frames == 0:
                yield undelay(self.vocab, generated[0].cpu())[:, :cap]
        yield undelay(self.vocab, generated[0].cpu())[:, :cap]

    # -- the bistream layout -----------------------------------------------------------------------------
    def _feed(self, text: TextSource, reference, opts: SynthesisOptions, max_text: Optional[int] = None
              ) -> BistreamFeed:
        prefix, prefix_ids, _ = reference
        return BistreamFeed(self.vocab, self.layout, text, prefix_ids, prefix, opts.min_ratio, opts.max_ratio, max_text)

    def _bistream_prompt(self, feed: BistreamFeed, reference) -> torch.Tensor:
        """``[1, L]``: (speaker prompt), then the feed's sequence up to its first sampled position."""
        ids = torch.tensor([feed.prompt()], dtype=torch.long)
        speaker = speaker_rows(self.vocab, reference[2])
        return ids if speaker is None else torch.cat([speaker, ids], dim=1)

    def _speech_of(self, generated: torch.Tensor) -> torch.Tensor:
        """Generated ids ``[n]`` (speech, forced text and audio_bos) -> the speech tokens ``[1, T]``."""
        return split_sequence(self.vocab, generated.cpu())[1]

    @torch.inference_mode()
    def _bistream_tokens(self, texts: Sequence[Sequence[int]], reference, opts: SynthesisOptions
                         ) -> list[torch.Tensor]:
        """Speech tokens ``[1, T_i]`` of each utterance's text tokens, generated as one batch (the feeds'
        given tokens precomputed for :func:`~audiocodec.lm.generate`)."""
        feeds = [self._feed(KnownText(t), reference, opts) for t in texts]
        prompts = [self._bistream_prompt(f, reference) for f in feeds]
        max_new = max(f.step_budget(len(t)) for f, t in zip(feeds, texts))
        hooks = BistreamHooks(self.vocab, feeds, self._token_sampler(opts), self.device, steps=max_new)
        lengths = torch.tensor([p.shape[-1] for p in prompts], device=self.device)
        out = generate(self.model.lm, pad_batch(prompts, PAD, left=True).to(self.device), max_new,
                       prompt_lengths=lengths, sample_fn=hooks.sample_fn, force_fn=hooks.force_fn,
                       eos_id=EOS, pad_id=PAD, cuda_graph=self._graphs, compile_step=self.compile)
        return [self._speech_of(out.tokens[i, 0, : int(out.lengths[i])]) for i in range(len(texts))]

    @torch.inference_mode()
    def _bistream_token_stream(self, utterance: TextSource, reference, opts: SynthesisOptions
                               ) -> Iterator[torch.Tensor]:
        """The growing speech tokens ``[1, n]`` of one utterance whose text may still be arriving, every
        ``chunk_frames`` steps and at the end."""
        feed = self._feed(utterance, reference, opts, max_text=opts.max_text_tokens)
        prompt = self._bistream_prompt(feed, reference).to(self.device)[None]
        hooks = BistreamHooks(self.vocab, [feed], self._token_sampler(opts), self.device)
        generated = torch.empty(1, 1, 0, dtype=torch.long)
        for generated in self._decode_steps(prompt, feed.step_budget(opts.max_text_tokens), hooks.sample_fn,
                                            hooks.force_fn):
            if generated.shape[-1] % opts.chunk_frames == 0:
                yield self._speech_of(generated[0, 0])
        yield self._speech_of(generated[0, 0])


def _joined(text: Text) -> str:
    """A str, or str pieces joined."""
    if isinstance(text, str):
        return text
    pieces = list(text)
    bad = next((p for p in pieces if not isinstance(p, str)), None)
    if bad is not None:
        raise ConfigError(f"text pieces must be str, got {type(bad).__name__}")
    return "".join(pieces)
