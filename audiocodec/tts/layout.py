"""The token layout of the TTS language model (TouchTTS / CosyVoice 2 style, decoder-only).

One vocabulary holds four special tokens, the text tokens and the codec's speech tokens::

    0 pad | 1 bos | 2 eos | 3 audio_bos | 4 speaker | 5 .. 5+V_text-1 text | 5+V_text .. speech

A training sequence is ``[bos, text..., audio_bos, speech..., eos]``; the loss covers the speech tokens and
the final EOS (the model is never asked to predict text). Voice cloning puts the reference transcript in
front of the target text and the reference speech after ``audio_bos``, then lets the model continue:
``[bos, ref_text + text, audio_bos, ref_speech...]``. Without the reference's transcript, its speech is a
*speaker prompt* in front: ``[speaker, ref_speech..., bos, text, audio_bos, ...]`` (the codebooks of a
frame side by side, no delay); training puts one there for part of the examples (another clip of the same
speaker), so the model learns to take the voice from it.

Sequences are ``[K, L]``: one row per codebook, read by a K-stream LM (one embedding and head per
stream). With one codebook (WavTokenizer) it is the plain sequence above. With K codebooks (RVQ) the
text part sits in row 0 (rows 1.. hold ``pad``) and the speech part follows the *delay* pattern
(:mod:`audiocodec.lm.patterns`): at speech step ``s`` row ``k`` holds frame ``s - k``, and ``pad`` where
that frame does not exist. Row 0 ends its frames with ``pad`` (the end signal the model learns to emit at
step ``T``), rows catch up during ``K - 1`` steps, then ``eos`` closes every row::

    K=2, T=3:  row 0  bos t t audio_bos  a0 a1 a2 pad eos
               row 1  pad pad pad pad    pad b0 b1 b2 eos

Rows ``k >= 1`` are scored only where they hold a frame; at inference the generator forces their
``pad`` / ``eos`` cells (:func:`delay_force`), and row 0's ``pad`` tells it where the frames end.

**Bistream layout** (CosyVoice 2, for text that arrives while speaking; :class:`SequenceLayout`
``{type: bistream, text_chunk: N, speech_chunk: M}``, one codebook only). While a whole chunk of ``N``
text tokens remains, ``N`` text tokens and then ``M`` speech tokens alternate; the last, shorter text chunk
(possibly empty) is followed by ``audio_bos`` and all the remaining speech, then ``eos``. The model predicts
speech, ``eos``, and a *fill* target after each chunk's ``M`` speech tokens: ``audio_bos`` there means "I
need more text" (CosyVoice 2's fill token; the vocabulary stays the same). As an *input*, ``audio_bos`` means
"the text has ended". With ``N=3, M=4``, 7 text and 20 speech tokens (``t``: text, ``s``: speech, ``A``:
``audio_bos``, ``-``: not scored)::

    input   bos t1 t2 t3 s1 s2 s3 s4 t4 t5 t6 s5 s6 s7 s8 t7 A  s9  ... s20
    target  -   -  -  s1 s2 s3 s4 A  -  -  s5 s6 s7 s8 A  -  s9 s10 ... eos

An example needs at least ``M`` speech tokens per whole text chunk (``M * (n // N)``); training skips the
others. At inference the schedule is fixed (:class:`~audiocodec.tts.bistream.BistreamFeed`): after ``M``
sampled speech tokens the next ``N`` text tokens are fed, waiting for them if the text is still arriving;
when the text ends, its rest and ``audio_bos`` are fed and the model speaks on until ``eos``. Voice cloning
interleaves the reference like one longer utterance: text = reference transcript + text, speech =
reference speech + generated speech, the prompt running up to the end of the reference speech (CosyVoice 2's
zero-shot prompt); a speaker prompt (voice without transcript) stays in front of ``bos``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

import torch

from ..errors import ConfigError
from ..lm.patterns import delay_pattern_force

PAD, BOS, EOS, AUDIO_BOS, SPEAKER = 0, 1, 2, 3, 4
NUM_SPECIAL = 5
IGNORE = -100  # cross-entropy ignore index


@dataclass(frozen=True)
class TTSVocab:
    """Offsets of the text and speech token ranges in the LM vocabulary."""
    text_size: int
    speech_size: int
    num_codebooks: int = 1

    def __post_init__(self):
        if self.text_size < 1 or self.speech_size < 1 or self.num_codebooks < 1:
            raise ConfigError(f"TTSVocab needs positive sizes, got text {self.text_size}, speech "
                              f"{self.speech_size}, codebooks {self.num_codebooks}")

    @property
    def text_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def speech_offset(self) -> int:
        return NUM_SPECIAL + self.text_size

    @property
    def size(self) -> int:
        return NUM_SPECIAL + self.text_size + self.speech_size

    def text_ids(self, text_tokens: Sequence[int]) -> torch.Tensor:
        t = torch.as_tensor(list(text_tokens), dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.text_size):
            raise ValueError(f"text token out of range [0, {self.text_size}): {t.tolist()[:10]}")
        return t + self.text_offset

    def speech_ids(self, speech_tokens: torch.Tensor) -> torch.Tensor:
        """Codec tokens ``[K, T]`` (``[T]`` for one codebook) -> LM ids ``[K, T]``."""
        s = torch.as_tensor(speech_tokens, dtype=torch.long)
        if s.dim() == 1:
            s = s[None]
        if s.dim() != 2 or s.shape[0] != self.num_codebooks:
            raise ConfigError(f"expected speech tokens of {self.num_codebooks} codebook(s) [K, T], got {tuple(s.shape)}")
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.speech_size):
            raise ValueError(f"speech token out of range [0, {self.speech_size})")
        return s + self.speech_offset

    def to_speech(self, ids: torch.Tensor) -> torch.Tensor:
        """LM ids -> codec tokens; ids outside the speech range raise ValueError."""
        s = ids.long() - self.speech_offset
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.speech_size):
            raise ValueError("generated ids outside the speech range: the model emitted a text or special token")
        return s

    @property
    def end_token(self) -> int:
        """What row 0 emits after its last frame: ``eos`` with one codebook, ``pad`` with several."""
        return EOS if self.num_codebooks == 1 else PAD

    def speech_logit_mask(self, device=None) -> torch.Tensor:
        """``[K, size]`` bool: what each row may sample after ``audio_bos`` (speech tokens; row 0 also its
        end token). The other cells of the delay pattern are forced, not sampled."""
        allowed = torch.zeros(self.num_codebooks, self.size, dtype=torch.bool, device=device)
        allowed[:, self.speech_offset:] = True
        allowed[0, self.end_token] = True
        return allowed

    def to_dict(self) -> dict:
        return asdict(self)


#: The layouts :class:`SequenceLayout` knows.
LAYOUTS = ("plain", "bistream")


@dataclass(frozen=True)
class SequenceLayout:
    """How text and speech are ordered in a sequence: ``plain`` (``[bos, text, audio_bos, speech, eos]``)
    or ``bistream`` (``text_chunk`` text tokens and ``speech_chunk`` speech tokens alternating); see the
    module docstring."""
    type: str = "plain"
    text_chunk: int = 5
    speech_chunk: int = 15

    @classmethod
    def from_config(cls, config: Optional[Mapping], where: str = "layout") -> "SequenceLayout":
        """``{type: plain}`` (the default, also for None) or ``{type: bistream, text_chunk: 5,
        speech_chunk: 15}``; ConfigError naming the key (``where.type``, ``where.text_chunk``, ...)."""
        if config is None:
            return cls()
        if isinstance(config, SequenceLayout):
            return config
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where} must be a mapping such as {{type: bistream, text_chunk: 5, speech_chunk: 15}}, "
                              f"got {type(config).__name__}")
        kind = config.get("type", "plain")
        if kind not in LAYOUTS:
            raise ConfigError(f"{where}.type: unknown layout {kind!r}; known: {', '.join(LAYOUTS)}")
        sizes = ("text_chunk", "speech_chunk")
        unknown = sorted(set(config) - {"type", *sizes})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: type, text_chunk, speech_chunk")
        if kind == "plain":
            given = [k for k in sizes if k in config]
            if given:
                raise ConfigError(f"{where}.{given[0]} only applies to the bistream layout (type: bistream)")
            return cls()
        for key in sizes:
            value = config.get(key, getattr(cls, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key} must be a positive int, got {value!r}")
        return cls("bistream", int(config.get("text_chunk", cls.text_chunk)),
                   int(config.get("speech_chunk", cls.speech_chunk)))

    @property
    def bistream(self) -> bool:
        return self.type == "bistream"

    def check_codebooks(self, num_codebooks: int, where: str = "layout") -> None:
        """ConfigError if this layout cannot hold speech of ``num_codebooks`` codebooks (bistream: one)."""
        if self.bistream and num_codebooks != 1:
            raise ConfigError(f"{where}.type: the bistream layout needs a single-codebook codec, this one has "
                              f"{num_codebooks} codebooks; use {{type: plain}} (the delay pattern)")

    def to_dict(self) -> dict:
        return asdict(self) if self.bistream else {"type": "plain"}


PLAIN = SequenceLayout()


def speech_rows(vocab: TTSVocab, speech_tokens: torch.Tensor) -> torch.Tensor:
    """The speech part of a sequence, ``[K, T + K]`` ids: the delay pattern of ``speech_tokens [K, T]``
    (row 0's end token after its frames), then the closing ``eos`` column."""
    ids = vocab.speech_ids(speech_tokens)
    k, t = ids.shape
    rows = torch.full((k, t + k), PAD, dtype=torch.long)
    for q in range(k):
        rows[q, q:q + t] = ids[q]
    rows[0, t] = vocab.end_token
    rows[:, -1] = EOS
    return rows


def undelay(vocab: TTSVocab, rows: torch.Tensor) -> torch.Tensor:
    """Generated speech rows ``[K, N]`` (after ``audio_bos``) -> codec tokens ``[K, T]`` of the frames every
    row has produced: ``T`` = where row 0 emitted its end token (or ``N - K + 1`` while it has not)."""
    k, n = rows.shape
    ended = (rows[0] == vocab.end_token).nonzero()
    t = int(ended[0]) if len(ended) else max(0, n - k + 1)
    t = min(t, max(0, n - k + 1))
    frames = torch.stack([rows[q, q:q + t] for q in range(k)]) if t else rows.new_zeros(k, 0)
    return vocab.to_speech(frames)


def _text_rows(vocab: TTSVocab, parts: list) -> torch.Tensor:
    row0 = torch.cat(parts)
    out = torch.full((vocab.num_codebooks, len(row0)), PAD, dtype=torch.long)
    out[0] = row0
    return out


def speaker_rows(vocab: TTSVocab, speaker_prompt: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``[K, 1 + T]`` ids of a speaker prompt: ``speaker`` then the frames of ``speaker_prompt [K, T]``."""
    if speaker_prompt is None or not speaker_prompt.numel():
        return None
    ids = vocab.speech_ids(speaker_prompt)
    head = torch.full((vocab.num_codebooks, 1), PAD, dtype=torch.long)
    head[0, 0] = SPEAKER
    return torch.cat([head, ids], dim=1)


def training_sequence(vocab: TTSVocab, text_tokens: Sequence[int], speech_tokens: torch.Tensor,
                      speaker_prompt: Optional[torch.Tensor] = None,
                      layout: SequenceLayout = PLAIN) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [K, L-1], targets [K, L-1])`` of ``[(speaker prompt), bos, text, audio_bos, speech, eos]``
    (``L`` columns): the model reads ``inputs`` and predicts ``targets`` (the sequence shifted by one),
    which are :data:`IGNORE` except for the speech part: row 0 everywhere (frames, end token, eos), rows
    ``k >= 1`` only where they hold a frame. With the bistream ``layout``: :func:`bistream_sequence` after
    the speaker prompt, scored by :func:`bistream_targets` (speech, eos and the fill targets)."""
    if layout.bistream:
        return _bistream_training_sequence(vocab, layout, text_tokens, speech_tokens, speaker_prompt)
    text = vocab.text_ids(text_tokens)
    parts = [_text_rows(vocab, [torch.tensor([BOS]), text, torch.tensor([AUDIO_BOS])]),
             speech_rows(vocab, speech_tokens)]
    prompt = speaker_rows(vocab, speaker_prompt)
    if prompt is not None:
        parts.insert(0, prompt)
    seq = torch.cat(parts, dim=1)
    given = len(text) + 2 + (prompt.shape[1] if prompt is not None else 0)   # columns up to audio_bos
    targets = seq[:, 1:].clone()
    targets[:, : given - 1] = IGNORE    # the prompt, text and audio_bos are given, not predicted
    if vocab.num_codebooks > 1:
        forced = (targets[1:] < vocab.speech_offset) & (targets[1:] != IGNORE)
        targets[1:][forced] = IGNORE
    return seq[:, :-1], targets


def bistream_fits(layout: SequenceLayout, num_text: int, num_speech: int) -> bool:
    """Whether ``num_text`` text and ``num_speech`` speech tokens make a bistream sequence: ``speech_chunk``
    speech tokens for every whole chunk of ``text_chunk`` text tokens."""
    return num_speech >= (num_text // layout.text_chunk) * layout.speech_chunk


def bistream_sequence(vocab: TTSVocab, layout: SequenceLayout, text_tokens: Sequence[int],
                      speech_tokens: torch.Tensor) -> torch.Tensor:
    """LM ids ``[1, n + T + 3]`` of ``[bos, N text, M speech, N text, M speech, ..., rest of the text (< N),
    audio_bos, rest of the speech, eos]`` for ``text_tokens`` (``n`` ids) and ``speech_tokens [1, T]``.
    ValueError when the speech is too short (:func:`bistream_fits`)."""
    layout.check_codebooks(vocab.num_codebooks)
    text, speech = vocab.text_ids(text_tokens), vocab.speech_ids(speech_tokens)[0]
    n, m = layout.text_chunk, layout.speech_chunk
    whole = len(text) // n
    if not bistream_fits(layout, len(text), len(speech)):
        raise ValueError(f"{len(speech)} speech tokens are too few for the bistream layout: {whole} whole "
                         f"text chunks of {n} tokens need {whole * m}")
    parts = [torch.tensor([BOS])]
    for j in range(whole):
        parts += [text[j * n:(j + 1) * n], speech[j * m:(j + 1) * m]]
    parts += [text[whole * n:], torch.tensor([AUDIO_BOS]), speech[whole * m:], torch.tensor([EOS])]
    return torch.cat(parts)[None]


def bistream_targets(vocab: TTSVocab, sequence: torch.Tensor) -> torch.Tensor:
    """Targets ``[L-1]`` of a bistream ``sequence [L]`` (from ``bos``) read as inputs ``sequence[:-1]``: the
    next token where it is speech or ``eos``; ``audio_bos`` (fill: "more text, please") after the last
    speech token of a chunk, where text or the text-ended ``audio_bos`` comes next; :data:`IGNORE` elsewhere
    (the text and ``audio_bos`` inputs are given, never predicted)."""
    current, following = sequence[:-1], sequence[1:]
    scored = (following >= vocab.speech_offset) | (following == EOS)
    fill = (current >= vocab.speech_offset) & ~scored
    targets = torch.full_like(following, IGNORE)
    targets[scored] = following[scored]
    targets[fill] = AUDIO_BOS
    return targets


def _bistream_training_sequence(vocab: TTSVocab, layout: SequenceLayout, text_tokens: Sequence[int],
                                speech_tokens: torch.Tensor, speaker_prompt: Optional[torch.Tensor]
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`training_sequence` of the bistream layout: ``(inputs [1, L-1], targets [1, L-1])``."""
    sequence = bistream_sequence(vocab, layout, text_tokens, speech_tokens)
    targets = bistream_targets(vocab, sequence[0])[None]
    prompt = speaker_rows(vocab, speaker_prompt)
    if prompt is not None:                       # given, not predicted (nor is the bos after it)
        targets = torch.cat([torch.full((1, prompt.shape[1]), IGNORE, dtype=torch.long), targets], dim=1)
        sequence = torch.cat([prompt, sequence], dim=1)
    return sequence[:, :-1], targets


def split_sequence(vocab: TTSVocab, ids: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """``(text tokens, speech tokens [1, T])`` of a single-codebook sequence ``ids [L]`` (or ``[1, L]``) of
    either layout: its text and speech ids in order, back in the tokenizer's and the codec's ranges. A
    speaker prompt in front of ``bos`` is skipped; a generated continuation (no ``bos``) is read whole."""
    ids = torch.as_tensor(ids).reshape(-1)
    start = (ids == BOS).nonzero()
    if len(start):
        ids = ids[int(start[0]):]
    text = ids[(ids >= vocab.text_offset) & (ids < vocab.speech_offset)] - vocab.text_offset
    return text.tolist(), (ids[ids >= vocab.speech_offset] - vocab.speech_offset)[None]


def prompt_sequence(vocab: TTSVocab, text_tokens: Sequence[int], speech_prefix: Optional[torch.Tensor] = None,
                    speaker_prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[(speaker prompt), bos, text, audio_bos, speech_prefix...]`` (ids ``[K, L]``): the model continues
    with speech. A prefix of K codebooks enters in the delay pattern, complete frames only: its last
    ``K - 1`` columns hold the first frames of the lower rows (the rows above continue them)."""
    rows = _text_rows(vocab, [torch.tensor([BOS]), vocab.text_ids(text_tokens), torch.tensor([AUDIO_BOS])])
    prompt = speaker_rows(vocab, speaker_prompt)
    if prompt is not None:
        rows = torch.cat([prompt, rows], dim=1)
    if speech_prefix is not None and speech_prefix.numel():
        prefix = speech_rows(vocab, speech_prefix)
        t = prefix.shape[1] - vocab.num_codebooks
        rows = torch.cat([rows, prefix[:, :t]], dim=1)
    return rows


def lead_in(vocab: TTSVocab, speech_prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[K, K]`` ids that rows ``k >= 1`` hold at the first ``k`` generated steps: ``pad`` (the delay's
    lead-in), or with a voice prompt its last frames, which those rows still owe after the prompt."""
    k = vocab.num_codebooks
    lead = torch.full((k, k), PAD, dtype=torch.long)
    if speech_prefix is not None and speech_prefix.numel():
        ids = vocab.speech_ids(speech_prefix)
        t = ids.shape[1]
        for q in range(1, k):
            for j in range(q):
                if t - q + j >= 0:
                    lead[q, j] = ids[q, t - q + j]
    return lead


def delay_force(vocab: TTSVocab, tokens: torch.Tensor, step: int, generated: torch.Tensor,
                lead: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Force the cells of the delay pattern that are not sampled (for a ``force_fn`` of
    :func:`~audiocodec.lm.generate`): ``tokens [B, K]`` chosen at generation step ``step`` given
    ``generated [B, K, step]``. Rows ``k >= 1`` get ``lead [K, K]`` or ``[B, K, K]`` (:func:`lead_in`) for their first
    ``k`` steps; once row 0 has emitted its end token at step ``T``, row 0 gets ``pad`` after it, row
    ``k`` gets ``pad`` from step ``T + k``, and every row ``eos`` at step ``T + K - 1``. One codebook:
    nothing is forced. Graph-safe: ``step`` may be a 0-dim device tensor with ``generated`` the fixed-size
    buffer of :func:`~audiocodec.lm.generate` (see :func:`~audiocodec.lm.patterns.delay_pattern_force`)."""
    if vocab.num_codebooks == 1:
        return tokens
    lead = lead_in(vocab) if lead is None else lead
    return delay_pattern_force(tokens, step, generated, vocab.end_token, PAD, EOS, lead.to(tokens.device))


def pad_batch(sequences: Sequence[torch.Tensor], value: int, left: bool = False) -> torch.Tensor:
    """Stack ``[K, L_i]`` sequences into ``[B, K, max_len]``, padded with ``value`` on the right (or left)."""
    longest = max(s.shape[-1] for s in sequences)
    out = torch.full((len(sequences), sequences[0].shape[0], longest), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        if left:
            out[i, :, longest - s.shape[-1]:] = s
        else:
            out[i, :, : s.shape[-1]] = s
    return out
