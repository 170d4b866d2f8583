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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from ..errors import ConfigError

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
                      speaker_prompt: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [K, L-1], targets [K, L-1])`` of ``[(speaker prompt), bos, text, audio_bos, speech, eos]``
    (``L`` columns): the model reads ``inputs`` and predicts ``targets`` (the sequence shifted by one),
    which are :data:`IGNORE` except for the speech part: row 0 everywhere (frames, end token, eos), rows
    ``k >= 1`` only where they hold a frame."""
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
    nothing is forced."""
    k = vocab.num_codebooks
    if k == 1:
        return tokens
    tokens = tokens.clone()
    lead = lead_in(vocab) if lead is None else lead
    for q in range(1, k):
        if step < q:
            tokens[:, q] = (lead[:, q, step] if lead.dim() == 3 else lead[q, step]).to(tokens.device)
    ended = generated[:, 0] == vocab.end_token
    has_end = ended.any(-1)
    if bool(has_end.any()):
        end = ended.float().argmax(-1)
        for q in range(k):
            tokens[has_end & (step >= end + max(q, 1)), q] = PAD
        tokens[has_end & (step == end + k - 1)] = EOS
    return tokens


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
