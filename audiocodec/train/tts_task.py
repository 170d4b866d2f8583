"""``tts_lm``: train (or fine-tune) the TTS language model on token folders made by ``extract-tokens``.

A training config (``recipes/tts/*.yaml``)::

    task:
      type: tts_lm
      train: tokens/train               # token folders (audiocodec extract-tokens)
      valid: tokens/valid
      text: {tokenizer: {type: char}, language: en, normalize: true}
      model: {dim: 512, num_layers: 8, num_heads: 8, dropout: 0.1}    # TransformerLM arguments
      max_tokens: 12000                 # padded tokens per batch (length-bucketed dynamic batches)
      max_sequence: 2048                # longer examples are skipped (counted in the log)
      codec: wavtokenizer-75-small-mini # where synthesis loads the codec from (checked against the shards)
      layout: {type: plain}             # or {type: bistream, text_chunk: 5, speech_chunk: 15}
      speaker_prompt_prob: 0.3          # examples with a speaker prompt (cloning without transcript)
      continuation_prob: 0.3            # examples after another clip of their speaker (cloning with transcript)
    trainer: {precision: bf16, max_steps: 100000}
    optim: {main: {lr: 5.0e-4, scheduler: {type: cosine, warmup_steps: 1000}}}

The tokenizer is fitted on the training transcripts when it needs a vocabulary (characters, BPE) and
saved inside the model. At every checkpoint the model is also written to ``<run_dir>/tts/`` (rank 0,
atomically), ready for ``audiocodec.TTS.load(<run_dir>/tts)``. Fine-tuning (``--init-from`` a trained
TTS folder) keeps that model's tokenizer and vocabulary, so a new speaker's data is read with them.

``layout`` picks the sequence layout (:class:`~audiocodec.tts.layout.SequenceLayout`), recorded in the
exported model: ``bistream`` interleaves text and speech chunks (CosyVoice 2) so the model can speak text
that is still arriving; examples with too little speech for their text chunks are skipped (counted).
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional

import torch

from ..data.tokens import TokenShards
from ..errors import ConfigError
from ..tts.frontend import TextFrontend
from ..tts.layout import IGNORE, PAD, PLAIN, SequenceLayout, TTSVocab, bistream_fits, pad_batch, training_sequence
from ..tts.model import TTSModel, load_tts, save_tts
from .data import mix_seed
from .task import TASKS, TokenLMTask

log = logging.getLogger("audiocodec.train")


class _Examples(torch.utils.data.Dataset):
    """``(inputs [K, L], targets [K, L])`` of each usable item of a token folder.

    With ``speaker_prompt_prob`` > 0, that share of the items (chosen by a fixed hash of the item index,
    among speakers with several clips) gets a speaker prompt: the first ``speaker_prompt_frames`` of
    another clip of the same speaker, so the model learns to clone a voice from audio alone. With
    ``continuation_prob`` > 0, another share (an independent hash) is a *continuation*: another clip of the
    same speaker, text and speech, in front of the item's own (``[bos, text_a + text_b, audio_bos, speech_a,
    speech_b, eos]``), the shape of a voice-cloning prompt with its transcript, which the model otherwise
    never sees in training (it then ends such prompts early); an item gets a speaker prompt or a
    continuation, not both. ``layout``: the sequence layout; bistream skips items with too little speech for
    their text chunks."""

    def __init__(self, shards: TokenShards, frontend: TextFrontend, vocab: TTSVocab, max_sequence: int,
                 speaker_prompt_prob: float = 0.0, speaker_prompt_frames: int = 225, seed: int = 0,
                 layout: SequenceLayout = PLAIN, continuation_prob: float = 0.0):
        self.items, self.skipped = [], {"no text": 0, "too long": 0}
        self.continuations = 0
        if layout.bistream:
            self.skipped["too little speech for bistream"] = 0
        by_speaker: dict = {}
        for i, rec in enumerate(shards.records):
            if rec.get("speaker") is not None:
                by_speaker.setdefault(rec["speaker"], []).append(i)
        for i, (rec, tokens) in enumerate(zip(shards.records, shards.tokens)):
            text = rec.get("text")
            if not text:
                self.skipped["no text"] += 1
                continue
            ids = frontend.encode(text)
            prompt = None
            clips = by_speaker.get(rec.get("speaker"), [])
            if len(clips) > 1 and mix_seed(seed, i, 2) % 1000 < continuation_prob * 1000:
                other = clips[(clips.index(i) + 1 + mix_seed(seed, i, 3) % (len(clips) - 1)) % len(clips)]
                other_text = shards.records[other].get("text")
                if other_text:   # the other clip's text and speech in front, as a cloning prompt has them
                    joined_ids = frontend.encode(other_text) + ids
                    joined = torch.cat([shards.tokens[other], tokens], dim=-1)
                    if len(joined_ids) + joined.shape[-1] + joined.shape[0] + 2 <= max_sequence and (
                            not layout.bistream or bistream_fits(layout, len(joined_ids), joined.shape[-1])):
                        self.items.append(training_sequence(vocab, joined_ids, joined, None, layout))
                        self.continuations += 1
                        continue
            if len(clips) > 1 and mix_seed(seed, i) % 1000 < speaker_prompt_prob * 1000:
                other = clips[(clips.index(i) + 1 + mix_seed(seed, i, 1) % (len(clips) - 1)) % len(clips)]
                prompt = shards.tokens[other][:, :speaker_prompt_frames]
            extra = 0 if prompt is None else prompt.shape[-1] + 1
            if len(ids) + tokens.shape[-1] + tokens.shape[0] + 2 + extra > max_sequence:
                self.skipped["too long"] += 1
                continue
            if layout.bistream and not bistream_fits(layout, len(ids), tokens.shape[-1]):
                self.skipped["too little speech for bistream"] += 1
                continue
            self.items.append(training_sequence(vocab, ids, tokens, prompt, layout))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [x.shape[-1] for x, _ in self.items]


@TASKS.register("tts_lm")
class TTSLanguageModel(TokenLMTask):
    """Args:
        train / valid: token folders (``valid`` may be null).
        text: text frontend (see :class:`~audiocodec.tts.frontend.TextFrontend`); ignored when
            ``init_from`` names a trained TTS (its frontend is kept).
        model: :class:`~audiocodec.lm.TransformerLM` arguments (vocabulary sizes are derived).
        max_tokens / max_items / bucket_size: dynamic batching (see
            :class:`~audiocodec.train.data.BucketBatchSampler`).
        max_sequence: skip examples longer than this many tokens (prompt + text + speech + specials).
        continuation_prob: share of training examples preceded by another clip of the same speaker, text and
            speech (the shape of voice cloning with a transcript; see :class:`_Examples`).
        speaker_prompt_prob / speaker_prompt_seconds: share of training examples that get a speaker
            prompt (another clip of the same speaker, its first seconds), for cloning without transcript.
        codec: where to load the codec from at synthesis time (a path or embedded codec name); recorded
            in the model with the token folder's codec fingerprint.
        layout: ``{type: plain}`` (default: ``[bos, text, audio_bos, speech, eos]``) or ``{type: bistream,
            text_chunk: 5, speech_chunk: 15}`` (text and speech chunks interleaved, for streaming text
            input; single-codebook codecs). Recorded in the exported model. With ``init_from``, default:
            the trained model's layout.
        init_from: a trained TTS (folder or file) to fine-tune.
        export: write ``<run_dir>/tts/model.safetensors`` at each checkpoint.
    """

    export_name = "tts"

    def __init__(self, train: str, valid: Optional[str] = None, text: Optional[Mapping] = None,
                 model: Optional[Mapping] = None, max_tokens: int = 8000, max_items: Optional[int] = None,
                 bucket_size: int = 1000, max_sequence: int = 2048, codec: Optional[str] = None,
                 speaker_prompt_prob: float = 0.3, speaker_prompt_seconds: float = 3.0,
                 continuation_prob: float = 0.0,
                 layout: Optional[Mapping] = None, init_from: Optional[str] = None, export: bool = True):
        self.train_dir, self.valid_dir = train, valid
        self.text_cfg = dict(text or {"tokenizer": {"type": "char"}})
        self.model_cfg = dict(model or {"dim": 256, "num_layers": 4, "num_heads": 4})
        self.max_tokens, self.max_items, self.bucket_size = int(max_tokens), max_items, int(bucket_size)
        self.max_sequence, self.codec_source, self.init_path, self.export_model = int(max_sequence), codec, init_from, export
        if not 0.0 <= speaker_prompt_prob <= 1.0:
            raise ConfigError(f"task.speaker_prompt_prob must be in [0, 1], got {speaker_prompt_prob}")
        self.speaker_prompt_prob, self.speaker_prompt_seconds = float(speaker_prompt_prob), float(speaker_prompt_seconds)
        if not 0.0 <= continuation_prob <= 1.0:
            raise ConfigError(f"task.continuation_prob must be in [0, 1], got {continuation_prob}")
        self.continuation_prob = float(continuation_prob)
        self.layout = None if layout is None else SequenceLayout.from_config(layout, "task.layout")
        self._ctx = None

    def build(self, ctx):
        self._ctx = ctx
        shards = TokenShards(self.train_dir)
        meta = shards.meta
        if self.init_path is not None:
            base = load_tts(self.init_path)
            self.check_init_codec(base, meta)
            self.frontend = TextFrontend.from_dict(base.text_config)
            self.model = base.train()
        else:
            self.frontend = TextFrontend.from_config(self.text_cfg, texts=[r.get("text") or "" for r in shards.records])
            vocab = {"text_size": self.frontend.vocab_size, "speech_size": int(meta["cardinality"]),
                     "num_codebooks": int(meta["num_codebooks"])}
            codec = {**meta, "source": self.codec_source}
            self.model = TTSModel(vocab, self.model_cfg, self.frontend.to_dict(), codec)
        if self.layout is not None:
            self.layout.check_codebooks(self.model.vocab.num_codebooks, "task.layout")
            self.model.layout = self.layout
        layout = self.model.layout
        frames = int(self.speaker_prompt_seconds * float(meta["frame_rate"]))
        seed = int(ctx.config["trainer"]["seed"])
        self.train_examples = _Examples(shards, self.frontend, self.model.vocab, self.max_sequence,
                                        self.speaker_prompt_prob, frames, seed, layout, self.continuation_prob)
        if len(self.train_examples) == 0:
            raise ConfigError(f"{self.train_dir}: no usable example (skipped: {self.train_examples.skipped})")
        if any(self.train_examples.skipped.values()) and ctx.is_main:
            log.warning(f"{self.train_dir}: skipped {self.train_examples.skipped}")
        if self.train_examples.continuations and ctx.is_main:
            log.info(f"{self.train_dir}: {self.train_examples.continuations} examples continue another clip "
                     "of their speaker (task.continuation_prob)")
        self.valid_examples = None
        if self.valid_dir:
            valid = TokenShards(self.valid_dir)
            if valid.meta["fingerprint"] != meta["fingerprint"]:
                raise ConfigError(f"{self.valid_dir} holds tokens of another codec than {self.train_dir}")
            self.valid_examples = _Examples(valid, self.frontend, self.model.vocab, self.max_sequence,
                                            layout=layout)
        return {"tts": self.model}

    def collate(self, items):
        inputs = pad_batch([x for x, _ in items], PAD)
        targets = pad_batch([y for _, y in items], IGNORE)
        lengths = torch.tensor([x.shape[-1] for x, _ in items])
        mask = torch.arange(inputs.shape[-1])[None] < lengths[:, None]
        return {"inputs": inputs, "targets": targets, "mask": mask}

    def _mask(self, batch):
        # all-real rows need no mask (the plain causal kernel); right padding only affects the padded tail
        return None if bool(batch["mask"].all()) else batch["mask"]

    def training_step(self, batch, step, ctx):
        loss, stats = self.model.loss(batch["inputs"], batch["targets"], self._mask(batch))
        ctx.backward_and_step("main", loss)
        return {"loss": loss.detach(), "accuracy": stats["accuracy"], "tokens": stats["tokens"]}

    def validation_step(self, batch, ctx):
        loss, stats = self.model.loss(batch["inputs"], batch["targets"], self._mask(batch))
        return {"loss": loss, "accuracy": stats["accuracy"]}

    def save_model(self, model, path):
        return save_tts(model, path)

    def load_model(self, path):
        return load_tts(path)
