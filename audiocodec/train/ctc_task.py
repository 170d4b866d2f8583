"""``ctc_asr``: train a small wav2vec2-style CTC character recogniser from scratch on transcribed clips.

It gives an offline speech model where no pretrained one can be downloaded: a speech teacher for semantic
distillation (``egs/*/semantic_codec/run.sh --speech_teacher <run_dir>/asr``) and a recogniser for WER / CER
(``audiocodec eval --asr-model <run_dir>/asr``, ``audiocodec eval-tts --asr-model ...``). A training config
(``recipes/asr/ctc_mini.yaml``)::

    task:
      type: ctc_asr
      train: data/mini/train.jsonl      # manifests (path, duration, sample_rate, text); records without
      valid: data/mini/valid.jsonl      # text (music clips) are skipped and counted
      sample_rate: 16000                # the model's rate: clips are read, mixed to mono and resampled to it
      model: {hidden_size: 256, num_hidden_layers: 6, num_attention_heads: 4, intermediate_size: 1024}
      max_seconds: 12.0                 # longer clips are skipped (counted)
      max_batch_seconds: 200            # padded audio per batch (length-bucketed dynamic batches)
      text: {language: en, lowercase: true, punctuation: false}
    trainer: {precision: bf16, best_metric: val/cer, best_mode: min}

The model is ``transformers.Wav2Vec2ForCTC`` built from a ``Wav2Vec2Config`` (``model`` overrides
:data:`MODEL_DEFAULTS`; its vocabulary size and blank id are derived), randomly initialised: a 7-layer conv
feature encoder (320x down-sampling: 50 frames/s at 16 kHz), a pre-norm transformer, a linear CTC head.
The loss is the model's CTC loss (``ctc_loss_reduction: mean``, ``ctc_zero_infinity: true``); SpecAugment
time masks (``mask_time_prob``) are the augmentation. Input audio is normalised per clip (zero mean, unit
variance), as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does.

Transcripts go through the package's text normalisation (:func:`audiocodec.text.normalize_text`: numbers,
abbreviations, symbols to words), lower case, and without punctuation but the apostrophe (so the reference
matches what :func:`audiocodec.metrics.asr.normalize_words` scores); the character vocabulary is built from
the training transcripts: ``<pad>`` (the CTC blank, id 0), ``<unk>``, ``|`` (the word delimiter), then the
characters. Clips too short for their transcript (fewer frames than CTC needs) are skipped and counted.

Validation logs ``val/loss``, ``val/cer`` and ``val/wer`` (greedy CTC decoding against the normalised
reference). At every checkpoint the model (its EMA copy with ``trainer.ema``) is written to
``<run_dir>/asr/`` (rank 0, atomically) in the ``save_pretrained`` layout, with its processor::

    asr/config.json                 Wav2Vec2Config (architectures: Wav2Vec2ForCTC; sampling_rate)
    asr/model.safetensors           the weights
    asr/vocab.json                  character -> id (<pad> = blank = 0, <unk>, | = word delimiter)
    asr/tokenizer_config.json       Wav2Vec2CTCTokenizer
    asr/processor_config.json       Wav2Vec2Processor (with the feature extractor: 16 kHz, do_normalize)
    asr/preprocessor_config.json    Wav2Vec2FeatureExtractor (also on its own, for older readers)
    asr/audiocodec_asr.json         how transcripts were normalised, the step, the training manifests

so ``transformers.pipeline("automatic-speech-recognition", model=<run_dir>/asr)``,
:class:`~audiocodec.metrics.asr.ASRScorer` and :class:`~audiocodec.semantic.SpeechTeacher` (through
``AutoModel``: the encoder without the CTC head) load it with no other argument. With
``trainer.best_metric: val/cer`` the best model is also written to ``<run_dir>/best/``.

Needs ``transformers`` (``pip install 'audiocodec[semantic]'``); ``jiwer`` is used for CER / WER when
installed (else an edit distance of this module).
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from ..config import call_with_config
from ..errors import AudioCodecError, CheckpointError, ConfigError
from ..weights import file_mode
from .task import TASKS, ExportingTask

log = logging.getLogger("audiocodec.train")

#: Wav2Vec2Config arguments of the default model (``task.model`` overrides them): 6.4M parameters with a
#: 30-token vocabulary (the conv feature encoder 1.05M).
MODEL_DEFAULTS: dict = {
    "hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 1024,
    "conv_dim": [256] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "feat_extract_norm": "layer", "do_stable_layer_norm": True,   # layer norms: padded batches are exact
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
    "final_dropout": 0.0, "layerdrop": 0.0, "mask_time_prob": 0.05, "mask_time_length": 10,
}
#: Wav2Vec2Config arguments the task sets itself.
DERIVED_MODEL_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "ctc_loss_reduction",
                      "ctc_zero_infinity", "architectures", "transformers_version")

PAD, UNK, DELIMITER = "<pad>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, UNK, DELIMITER)
INFO_NAME = "audiocodec_asr.json"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError("task ctc_asr needs the optional dependency transformers: "
                          "pip install 'audiocodec[semantic]'") from e
    return transformers


class TranscriptNormalizer:
    """Transcript -> the characters the recogniser learns.

    Args:
        language: the language of :func:`audiocodec.text.normalize_text` (numbers, abbreviations to words).
        normalize: apply it (else only white space is collapsed).
        lowercase: lower case (the vocabulary has no capitals).
        punctuation: keep punctuation; by default every character that is not a letter, a digit or an
            apostrophe becomes a space (as :func:`audiocodec.metrics.asr.normalize_words`).
    """

    def __init__(self, language: str = "en", normalize: bool = True, lowercase: bool = True,
                 punctuation: bool = False):
        from ..text import get_normalizer
        from ..text.errors import TextError
        try:
            self._normalizer = get_normalizer(language) if normalize else None
        except TextError as e:
            raise ConfigError(f"task.text.language: {e}") from e
        self.language, self.normalize = language, bool(normalize)
        self.lowercase, self.punctuation = bool(lowercase), bool(punctuation)

    def __call__(self, text: str) -> str:
        if self._normalizer is not None:
            text = self._normalizer(text)
        if self.lowercase:
            text = text.lower()
        if not self.punctuation:
            text = "".join(c if c.isalnum() or c == "'" else " " for c in text)
        return " ".join(text.replace(DELIMITER, " ").split())

    def to_dict(self) -> dict:
        return {"language": self.language, "normalize": self.normalize, "lowercase": self.lowercase,
                "punctuation": self.punctuation}


def build_vocab(texts: Sequence[str]) -> list[str]:
    """The tokens of the CTC vocabulary of normalised transcripts: ``<pad>`` (blank), ``<unk>``, ``|``, then
    their characters, sorted (a space is ``|``)."""
    chars = sorted({c for t in texts for c in t} - {" "} - set(SPECIAL_TOKENS))
    return list(SPECIAL_TOKENS) + chars


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance of two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float, float]:
    """``(cer, wer)`` of hypotheses against (non-empty) references: edits / reference length, pooled."""
    try:
        import jiwer
    except ImportError:
        jiwer = None
    if jiwer is not None:
        return float(jiwer.cer(list(refs), list(hyps))), float(jiwer.wer(list(refs), list(hyps)))
    chars = sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))
    words = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    words /= max(1, sum(len(r.split()) for r in refs))
    return float(chars), float(words)


def conv_frames(samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Output frames of wav2vec2's conv feature encoder for ``samples`` input samples."""
    n = int(samples)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1 if n >= int(k) else 0
    return max(n, 0)


def ctc_frames_needed(ids: Sequence[int]) -> int:
    """Fewest frames CTC needs for the label sequence ``ids`` (a blank between repeated labels)."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


class _Clips(torch.utils.data.Dataset):
    """Transcribed clips of a manifest: item ``i`` is ``(audio [L] at sample_rate, normalised per clip,
    label ids, normalised transcript)``; unusable records are skipped and counted in :attr:`skipped`."""

    def __init__(self, manifest: str, normalizer: TranscriptNormalizer, vocab: Optional[dict], sample_rate: int,
                 max_seconds: Optional[float], kernels, strides, min_frames: int = 1, sort: bool = False):
        from ..data.manifest import read_manifest
        records = read_manifest(manifest)
        self.total = len(records)
        self.skipped = {"no text": 0, "too long": 0, "too short for the transcript": 0, "missing audio file": 0}
        self.sample_rate = int(sample_rate)
        self.missing = None   # one of the audio files not found, for the error message
        texts = []
        for rec in records:
            text = rec.get("text")
            norm = normalizer(text) if isinstance(text, str) else ""
            if not norm:
                self.skipped["no text"] += 1
                continue
            if max_seconds and rec["duration"] > max_seconds:
                self.skipped["too long"] += 1
                continue
            if not os.path.isfile(rec["path"]):
                self.skipped["missing audio file"] += 1
                self.missing = rec["path"]
                continue
            texts.append((rec, norm))
        self.vocab = vocab if vocab is not None else {t: i for i, t in enumerate(build_vocab([t for _, t in texts]))}
        unk, delim = self.vocab[UNK], self.vocab[DELIMITER]
        self.items = []
        for rec, norm in texts:
            ids = [delim if c == " " else self.vocab.get(c, unk) for c in norm]
            samples = int(math.ceil(rec["duration"] * self.sample_rate))
            if conv_frames(samples, kernels, strides) < max(ctc_frames_needed(ids), min_frames):
                self.skipped["too short for the transcript"] += 1
                continue
            self.items.append((rec["path"], ids, norm, samples))
        if sort:   # validation: similar lengths batched together
            self.items.sort(key=lambda item: item[3])

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        """Samples of each item (from the manifest's durations)."""
        return [item[3] for item in self.items]

    def __getitem__(self, i: int):
        from ..audio import load_audio
        path, ids, text, _ = self.items[i]
        wav, _ = load_audio(path, sample_rate=self.sample_rate, channels=1)
        x = wav[0]
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)   # Wav2Vec2FeatureExtractor's do_normalize
        return x, torch.tensor(ids, dtype=torch.long), text


def _missing_hint(clips: _Clips) -> str:
    if clips.missing is None:
        return ""
    return (f"; audio files not found, e.g. {clips.missing} (relative paths of a manifest are relative to its "
            "own folder)")


@TASKS.register("ctc_asr")
class CTCASRTask(ExportingTask):
    """Args:
        train / valid: jsonl manifests of transcribed clips (``valid`` may be null).
        sample_rate: the model's sample rate (clips are resampled to it; 16 kHz for teachers of 16 kHz codecs).
        model: ``transformers.Wav2Vec2Config`` arguments over :data:`MODEL_DEFAULTS`.
        max_seconds: skip clips longer than this (null: none).
        max_batch_seconds: padded seconds of audio per training batch (length-bucketed dynamic batches).
        max_batch_items / bucket_size: see :class:`~audiocodec.train.data.BucketBatchSampler`.
        text: :class:`TranscriptNormalizer` arguments (``language``, ``normalize``, ``lowercase``, ``punctuation``).
        media_items: validation clips whose transcripts are logged as text at each media step.
        export: write ``<run_dir>/asr/`` at each checkpoint.
    """

    export_name = "asr"

    def __init__(self, train: str, valid: Optional[str] = None, sample_rate: int = 16000,
                 model: Optional[Mapping] = None, max_seconds: Optional[float] = 12.0,
                 max_batch_seconds: float = 200.0, max_batch_items: Optional[int] = None, bucket_size: int = 1000,
                 text: Optional[Mapping] = None, media_items: int = 4, export: bool = True):
        from ..audio import check_sample_rate
        from ..errors import AudioError
        if not isinstance(train, (str, os.PathLike)):
            raise ConfigError(f"task.train must be a manifest path, got {train!r}")
        self.train_path, self.valid_path = str(train), (None if valid is None else str(valid))
        try:
            self.sample_rate = check_sample_rate(sample_rate)
        except AudioError as e:
            raise ConfigError(f"task.sample_rate: {e}") from e
        if model is not None and not isinstance(model, Mapping):
            raise ConfigError(f"task.model must map Wav2Vec2Config arguments to values, got {model!r}")
        self.model_cfg = dict(model or {})
        derived = [k for k in self.model_cfg if k in DERIVED_MODEL_KEYS]
        if derived:
            raise ConfigError(f"task.model.{derived[0]} is set by the task (from the vocabulary); drop it")
        if max_seconds is not None and not float(max_seconds) > 0:
            raise ConfigError(f"task.max_seconds must be > 0 or null, got {max_seconds!r}")
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        if not float(max_batch_seconds) > 0:
            raise ConfigError(f"task.max_batch_seconds must be > 0, got {max_batch_seconds!r}")
        self.max_batch_seconds = float(max_batch_seconds)
        if max_batch_items is not None and (isinstance(max_batch_items, bool) or int(max_batch_items) < 1):
            raise ConfigError(f"task.max_batch_items must be a positive integer or null, got {max_batch_items!r}")
        self.max_batch_items = None if max_batch_items is None else int(max_batch_items)
        self.bucket_size = int(bucket_size)
        if text is not None and not isinstance(text, Mapping):
            raise ConfigError(f"task.text must be a mapping of transcript options, got {text!r}")
        self.normalizer = call_with_config(TranscriptNormalizer, dict(text or {}), "task.text")
        self.media_items, self.export_model = int(media_items), bool(export)
        self._ctx = None
        self.model = None
        self.vocab: list[str] = []

    # -- model and data --------------------------------------------------------------------------------
    def model_config(self, vocab_size: int):
        """The ``Wav2Vec2Config`` of this task for a vocabulary of ``vocab_size`` tokens."""
        tf = _transformers()
        params = inspect.signature(tf.Wav2Vec2Config.__init__).parameters
        allowed = [k for k, p in params.items() if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and k not in DERIVED_MODEL_KEYS]
        unknown = [k for k in self.model_cfg if k not in allowed]
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(f'task.model.{k}' for k in unknown)}; "
                              f"Wav2Vec2Config takes: {', '.join(allowed)}")
        args = {**MODEL_DEFAULTS, **self.model_cfg}
        try:
            cfg = tf.Wav2Vec2Config(vocab_size=vocab_size, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                                    ctc_loss_reduction="mean", ctc_zero_infinity=True, **args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"task.model: {e}") from e
        if not (len(cfg.conv_dim) == len(cfg.conv_stride) == len(cfg.conv_kernel)):
            raise ConfigError("task.model: conv_dim, conv_stride and conv_kernel must have the same length")
        cfg.sampling_rate = self.sample_rate       # read back by SpeechTeacher.from_pretrained
        cfg.architectures = ["Wav2Vec2ForCTC"]
        return cfg

    def _min_frames(self, cfg) -> int:
        # SpecAugment draws spans of mask_time_length frames: shorter clips cannot be masked
        return int(cfg.mask_time_length) if cfg.apply_spec_augment and cfg.mask_time_prob > 0 else 1

    def build(self, ctx):
        self._ctx = ctx
        tf = _transformers()
        probe = self.model_config(len(SPECIAL_TOKENS))       # checks task.model before reading any data
        kernels, strides = list(probe.conv_kernel), list(probe.conv_stride)
        train = _Clips(self.train_path, self.normalizer, None, self.sample_rate, self.max_seconds, kernels, strides,
                       self._min_frames(probe))
        if len(train) == 0:
            if train.skipped["no text"] == train.total:
                raise ConfigError(f"task.train {self.train_path}: no record has a transcript ('text'); "
                                  "ctc_asr learns from transcribed clips")
            raise ConfigError(f"task.train {self.train_path}: no usable record of {train.total} "
                              f"(skipped: {train.skipped})" + _missing_hint(train))
        if len(train.vocab) <= len(SPECIAL_TOKENS):
            raise ConfigError(f"task.train {self.train_path}: the transcripts hold no character")
        self.vocab = list(train.vocab)
        self.vocab_ids = dict(train.vocab)
        cfg = self.model_config(len(self.vocab))
        self.model = tf.Wav2Vec2ForCTC(cfg)
        self.train_clips = train
        if any(train.skipped.values()) and ctx.is_main:
            log.warning(f"{self.train_path}: skipped {train.skipped} of {train.total} records" + _missing_hint(train))
        self.valid_clips = None
        if self.valid_path:
            self.valid_clips = _Clips(self.valid_path, self.normalizer, self.vocab_ids, self.sample_rate,
                                      self.max_seconds, kernels, strides, 1, sort=True)
            if len(self.valid_clips) == 0:
                raise ConfigError(f"task.valid {self.valid_path}: no usable record of {self.valid_clips.total} "
                                  f"(skipped: {self.valid_clips.skipped})" + _missing_hint(self.valid_clips))
            if any(self.valid_clips.skipped.values()) and ctx.is_main:
                log.warning(f"{self.valid_path}: skipped {self.valid_clips.skipped} "
                            f"of {self.valid_clips.total} records" + _missing_hint(self.valid_clips))
        if ctx.is_main:
            hours = sum(train.lengths) / self.sample_rate / 3600
            log.info(f"ctc_asr: {len(train)} training clips ({hours:.2f} h), vocabulary of {len(self.vocab)} tokens: "
                     + "".join(self.vocab[len(SPECIAL_TOKENS):]))
        return {"asr": self.model}

    def train_dataset(self):
        return self.train_clips

    def val_dataset(self):
        return self.valid_clips

    def batch_sampler(self, dataset, rank: int, world_size: int, seed: int, shuffle: bool):
        from .data import BucketBatchSampler
        return BucketBatchSampler(dataset.lengths, int(self.max_batch_seconds * self.sample_rate), rank, world_size,
                                  shuffle, seed, self.max_batch_items, self.bucket_size)

    def collate(self, items):
        n = max(x.shape[-1] for x, _, _ in items)
        m = max(len(y) for _, y, _ in items)
        audio = torch.zeros(len(items), n)
        mask = torch.zeros(len(items), n, dtype=torch.long)
        labels = torch.full((len(items), m), -100, dtype=torch.long)
        for i, (x, y, _) in enumerate(items):
            audio[i, : x.shape[-1]] = x
            mask[i, : x.shape[-1]] = 1
            labels[i, : len(y)] = y
        return {"audio": audio, "mask": mask, "labels": labels, "texts": [t for _, _, t in items]}

    # -- steps -----------------------------------------------------------------------------------------
    def training_step(self, batch, step, ctx):
        out = self.model(batch["audio"], attention_mask=batch["mask"], labels=batch["labels"])
        ctx.backward_and_step("main", out.loss)
        return {"loss": out.loss.detach(), "seconds": batch["mask"].sum() / self.sample_rate}

    def decode(self, logits: torch.Tensor, frames: torch.Tensor) -> list[str]:
        """Greedy CTC decoding of ``logits [B, T, V]`` (``frames [B]`` valid): best token per frame,
        repeats merged, blanks dropped, ``|`` -> space."""
        best = logits.argmax(-1).cpu()
        out = []
        for row, n in zip(best, frames.tolist()):
            ids = torch.unique_consecutive(row[: int(n)]).tolist()
            chars = [self.vocab[i] for i in ids if i != 0]
            text = "".join(" " if c == DELIMITER else ("" if c == UNK else c) for c in chars)
            out.append(" ".join(text.split()))
        return out

    def validation_step(self, batch, ctx):
        out = self.model(batch["audio"], attention_mask=batch["mask"], labels=batch["labels"])
        frames = self.model._get_feat_extract_output_lengths(batch["mask"].sum(-1))
        cer, wer = error_rates(batch["texts"], self.decode(out.logits.float(), frames))
        return {"loss": out.loss, "cer": cer, "wer": wer}

    def log_media(self, writer, step, ctx):
        ds = self.valid_clips
        if ds is None or not self.media_items:
            return
        lines = []
        for i in range(0, len(ds), max(1, len(ds) // self.media_items))[: self.media_items]:
            try:
                x, _, text = ds[i]
            except AudioCodecError:
                continue
            x = x[None].to(ctx.device)
            with ctx.autocast():
                logits = self.model(x, attention_mask=torch.ones_like(x, dtype=torch.long)).logits
            heard = self.decode(logits.float(), torch.tensor([logits.shape[1]]))[0]
            lines.append(f"    ref: {text}\n    hyp: {heard}")
        writer.add_text("asr/valid", "\n\n".join(lines), step)

    # -- export ----------------------------------------------------------------------------------------
    def processor(self):
        """The ``Wav2Vec2Processor`` (feature extractor + CTC tokenizer) of the model."""
        import tempfile
        tf = _transformers()
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file = Path(tmp) / "vocab.json"
            vocab_file.write_text(json.dumps({t: i for i, t in enumerate(self.vocab)}, ensure_ascii=False))
            tokenizer = tf.Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK, pad_token=PAD,
                                                word_delimiter_token=DELIMITER, bos_token=None, eos_token=None,
                                                do_lower_case=False)
        features = tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=self.sample_rate, padding_value=0.0,
                                               do_normalize=True, return_attention_mask=True)
        return tf.Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer)

    def save_model(self, model, path):
        """Write ``model`` and the processor to the folder ``path`` (``save_pretrained`` layout), atomically:
        into a temporary folder next to it, then swapped in. Returns the folder."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        for p in (tmp, old):
            shutil.rmtree(p, ignore_errors=True)
        try:
            model.save_pretrained(str(tmp))
            processor = self.processor()
            processor.save_pretrained(str(tmp))
            processor.feature_extractor.save_pretrained(str(tmp))   # preprocessor_config.json
            trainer = getattr(self._ctx, "_t", None)
            info = {"task": "ctc_asr", "step": getattr(trainer, "step", None),
                    "sample_rate": self.sample_rate, "text": self.normalizer.to_dict(), "vocab": self.vocab,
                    "train": self.train_path, "valid": self.valid_path}
            (tmp / INFO_NAME).write_text(json.dumps(info, indent=1, ensure_ascii=False))
            mode = file_mode()   # transformers writes some files 0600
            for f in tmp.iterdir():
                f.chmod(mode)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return path

    def load_model(self, path):
        """A ``Wav2Vec2ForCTC`` folder written by :meth:`save_model` (for ``trainer.init_from``); its
        vocabulary must be this task's."""
        tf = _transformers()
        path = Path(path)
        vocab_file = path / "vocab.json"
        if not vocab_file.is_file():
            raise ConfigError(f"init_from {path}: not a ctc_asr model folder (no vocab.json)")
        vocab = json.loads(vocab_file.read_text())
        theirs = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if theirs != self.vocab:
            raise ConfigError(f"init_from {path}: its vocabulary ({''.join(theirs[len(SPECIAL_TOKENS):])!r}) is not "
                              f"the one of {self.train_path} ({''.join(self.vocab[len(SPECIAL_TOKENS):])!r})")
        return tf.Wav2Vec2ForCTC.from_pretrained(str(path))

    def state_dict(self) -> dict:
        super().state_dict()   # exports the model
        return {"vocab": list(self.vocab)}

    def load_state_dict(self, state: dict) -> None:
        vocab = state.get("vocab")
        if vocab is not None and list(vocab) != self.vocab:
            raise CheckpointError(f"the checkpoint was trained with another vocabulary ({''.join(vocab[3:])!r}) "
                                  f"than {self.train_path} gives now ({''.join(self.vocab[3:])!r})")
