"""``song_lm``: train a song LM (SongGen) on token folders made by ``extract-tokens``.

Data: one token folder per split, holding the **mixture** tokens of each song clip, and, for the modes
that need them, its stems in sub-folders with the same ids (each made by ``audiocodec extract-tokens``
on the separated stems, with the same codec)::

    tokens/songs/train/shard-*.npz                 mixture  [K, T]; records: id, lyrics, description
    tokens/songs/train/vocal/shard-*.npz           vocal stem [K, T] (mixed_pro, dual-track, voice prompts)
    tokens/songs/train/accompaniment/shard-*.npz   accompaniment stem [K, T] (dual-track modes)

Record keys: ``lyrics`` (str, required; ``text`` is read when it is missing), ``description`` (str,
optional: missing or empty = no description). A clip is one training window: the lyrics are those sung
in it (cut songs into clips of at most ``max_frames`` frames beforehand; longer clips are skipped, as are
clips without lyrics or stems, all counted in the log). Stems may differ from the mixture by up to two
frames (all tracks are cut to the shortest); larger mismatches are skipped.

The reference voice of a training clip is a random ``voice.seconds`` crop of its vocal stem (of the
mixture when there is no vocal folder, or with ``voice_source: mixture``), dropped with probability
``condition_dropout.voice``.

A training config (``recipes/song/*.yaml``)::

    task:
      type: song_lm
      train: tokens/songs/train
      valid: tokens/songs/valid
      mode: mixed                          # mixed | mixed_pro | parallel_std | parallel_A_V | parallel_V_A
                                           # | interleaving_A_V | interleaving_V_A
      lyrics: {tokenizer: {type: phoneme, language: en-us}, num_layers: 4, num_heads: 8}
      description: {tokenizer: {type: char}, num_layers: 4, num_heads: 8}   # or {type: t5, path: /models/t5-base}
      voice: {seconds: 3.0, num_layers: 2, num_heads: 8}                    # null: no voice prompts
      condition_dropout: {voice: 0.5, description: 0.1, lyrics: 0.1, all: 0.1}
      model: {dim: 1024, num_layers: 24, num_heads: 16, dropout: 0.1}       # TransformerLM arguments
      loss: {codebook_weights: null, vocal_weight: 0.1}
      max_tokens: 12000        # padded sequence columns per batch (length-bucketed dynamic batches)
      max_frames: 2250         # the training window (30 s at 75 Hz); generation continues beyond it
      codec: encodec-24k.safetensors   # where generation loads the codec from (checked against the shards)

At every checkpoint the model is written to ``<run_dir>/song/`` (rank 0, atomically), ready for
``SongGenerator.load(<run_dir>/song)``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ..data.tokens import TokenShards, list_shards
from ..errors import ConfigError
from ..song.conditioners import fit_text_config
from ..song.layout import SongLayout, check_mode, pad_sequences
from ..song.model import SongModel, load_song, save_song
from .data import item_rng
from .task import TASKS, TokenLMTask

log = logging.getLogger("audiocodec.train")

STEMS = ("vocal", "accompaniment")
#: frames a stem may differ from its mixture by (separation / resampling rounding)
LENGTH_TOLERANCE = 2


def _lyrics(record: Mapping) -> str:
    return str(record.get("lyrics") or record.get("text") or "").strip()


class SongExamples(torch.utils.data.Dataset):
    """The usable clips of a token folder (and its stem sub-folders).

    ``ds[i]`` or ``ds[(i, epoch)]`` -> ``{"sequences": {key: [R, L]}, "lyrics": [ids], "description": [ids],
    "voice": LongTensor [K, Tv] or None}``; the voice crop depends on ``(i, epoch, seed)`` only.
    """

    def __init__(self, folder: Union[str, Path], model: SongModel, max_frames: int, num_codebooks: int,
                 voice_source: str = "vocal", seed: int = 0, meta: Optional[Mapping] = None):
        folder = Path(folder)
        layout: SongLayout = model.layout
        shards = TokenShards(folder)
        if meta is not None and shards.meta["fingerprint"] != meta["fingerprint"]:
            raise ConfigError(f"{folder} holds tokens of another codec than the training folder")
        needed = set(layout.tracks) - {"mixture"}
        if layout.mode == "mixed_pro":
            needed.add("vocal")
        stems = {}
        for name in STEMS:
            sub = folder / name
            if list_shards(sub):
                stems[name] = TokenShards(sub)
                if stems[name].meta != shards.meta:
                    raise ConfigError(f"{sub} holds tokens of another codec than {folder}")
            elif name in needed:
                raise ConfigError(f"mode {layout.mode!r} needs {name} tokens: no shards in {sub} "
                                  f"(extract-tokens of the {name} stems, with the same ids)")
        self.has_voice = model.conditioner.has_voice
        self.voice_track = "vocal" if voice_source == "vocal" and "vocal" in stems else "mixture"
        self.voice_frames = max(1, round((model.conditioner.voice_seconds or 0) * model.frame_rate))
        self.seed, self.epoch = int(seed), 0
        self.items: list[dict] = []
        self.skipped = {"no lyrics": 0, "too long": 0, "length mismatch": 0, **{f"no {s}": 0 for s in stems}}
        for rec, mixture in zip(shards.records, shards.tokens):
            lyrics = _lyrics(rec)
            if not lyrics:
                self.skipped["no lyrics"] += 1
                continue
            tracks = {"mixture": mixture[:num_codebooks]}
            for name, stem in stems.items():
                try:
                    tracks[name] = stem.by_id(rec["id"])["tokens"][:num_codebooks]
                except KeyError:
                    pass
            missing = [n for n in sorted(needed) if n not in tracks]
            if missing:
                self.skipped[f"no {missing[0]}"] += 1
                continue
            lengths = [t.shape[-1] for t in tracks.values()]
            if max(lengths) - min(lengths) > LENGTH_TOLERANCE:
                self.skipped["length mismatch"] += 1
                continue
            frames = min(lengths)
            if frames > max_frames:
                self.skipped["too long"] += 1
                continue
            tracks = {k: v[:, :frames] for k, v in tracks.items()}
            seqs = layout.training_sequences({k: v[None] for k, v in tracks.items()})
            self.items.append({
                "sequences": {k: v[0] for k, v in seqs.items()},
                "lyrics": model.conditioner.lyrics_ids(lyrics),
                "description": model.conditioner.description_ids(rec.get("description") or ""),
                "voice": tracks[self.voice_track] if self.has_voice else None,
            })

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        item = self.items[int(index)]
        voice = item["voice"]
        if voice is not None and voice.shape[-1] > self.voice_frames:
            rng = item_rng(int(index), int(epoch), self.seed)
            start = int(rng.integers(0, voice.shape[-1] - self.voice_frames + 1))
            voice = voice[:, start:start + self.voice_frames]
        return {**item, "voice": voice}

    @property
    def lengths(self) -> list[int]:
        return [int(x["sequences"]["labels"].shape[-1]) for x in self.items]


@TASKS.register("song_lm")
class SongLanguageModel(TokenLMTask):
    """Args:
        train / valid: token folders (see the module doc; ``valid`` may be null).
        mode: one of :data:`~audiocodec.song.layout.MODES`.
        lyrics / description: text encoders (``tokenizer``, ``language``, ``num_layers``, ``num_heads``,
            ``ffn_dim``, ``dropout``; a description may be ``{type: t5, path: <local folder>}``). Tokenizers
            needing a vocabulary are fitted on the training texts and saved in the model.
        voice: the reference-voice encoder (``seconds``, ``num_layers``, ...); null: no voice prompts.
        voice_source: ``vocal`` (the vocal stem when there is one) or ``mixture``.
        condition_dropout: probabilities of dropping ``voice``, ``description``, ``lyrics``, ``all``.
        conditioner_dim: memory width (default ``model.dim``).
        model: :class:`~audiocodec.lm.TransformerLM` arguments (vocabulary and rows are derived).
        loss: ``codebook_weights`` (K or R numbers) and ``vocal_weight`` (mixed_pro).
        num_codebooks: use the first K codebooks of the tokens (default all).
        max_tokens / max_items / bucket_size: dynamic batching by padded sequence columns.
        max_frames: the training window; longer clips are skipped.
        codec: where generation loads the codec from; recorded with the folder's codec fingerprint.
        init_from: a trained song model (folder or file) to fine-tune (its tokenizers are kept).
        export: write ``<run_dir>/song/model.safetensors`` at each checkpoint.
    """

    export_name = "song"

    def __init__(self, train: str, valid: Optional[str] = None, mode: str = "mixed",
                 lyrics: Optional[Mapping] = None, description: Optional[Mapping] = None,
                 voice: Union[Mapping, bool, None] = True, voice_source: str = "vocal",
                 condition_dropout: Optional[Mapping] = None, conditioner_dim: Optional[int] = None,
                 model: Optional[Mapping] = None, loss: Optional[Mapping] = None, num_codebooks: Optional[int] = None,
                 max_tokens: int = 8000, max_items: Optional[int] = None, bucket_size: int = 1000,
                 max_frames: int = 1500, codec: Optional[str] = None, init_from: Optional[str] = None,
                 export: bool = True, seed: int = 0):
        self.train_dir, self.valid_dir, self.mode = train, valid, check_mode(mode)
        self.lyrics_cfg = dict(lyrics or {"tokenizer": {"type": "char"}})
        self.description_cfg = dict(description or {"tokenizer": {"type": "char"}})
        if voice is True:
            voice = {"seconds": 3.0, "num_layers": 1}
        self.voice_cfg = dict(voice) if voice else None
        if voice_source not in ("vocal", "mixture"):
            raise ConfigError(f"voice_source must be 'vocal' or 'mixture', got {voice_source!r}")
        self.voice_source, self.dropout_cfg, self.cond_dim = voice_source, condition_dropout, conditioner_dim
        self.model_cfg = dict(model or {"dim": 256, "num_layers": 4, "num_heads": 4})
        self.loss_cfg, self.num_codebooks = loss, num_codebooks
        self.max_tokens, self.max_items, self.bucket_size = int(max_tokens), max_items, int(bucket_size)
        if not isinstance(max_frames, int) or max_frames < 2:
            raise ConfigError(f"max_frames must be an int >= 2, got {max_frames!r}")
        self.max_frames, self.codec_source, self.init_path, self.export_model = max_frames, codec, init_from, export
        self.seed = int(seed)
        self._ctx = None

    def _build_model(self, shards: TokenShards, meta: dict) -> SongModel:
        if self.init_path is not None:
            base = load_song(self.init_path)
            self.check_init_codec(base, meta)
            if base.mode != self.mode:
                raise ConfigError(f"init_from {self.init_path} is a {base.mode!r} model, the task trains {self.mode!r}")
            return base.train()
        k = int(meta["num_codebooks"]) if self.num_codebooks is None else int(self.num_codebooks)
        if not 1 <= k <= int(meta["num_codebooks"]):
            raise ConfigError(f"num_codebooks={self.num_codebooks}: {self.train_dir} has "
                              f"{meta['num_codebooks']} codebooks")
        lyrics = fit_text_config(self.lyrics_cfg, [_lyrics(r) for r in shards.records if _lyrics(r)])
        texts = [str(r.get("description") or "") for r in shards.records]
        description = fit_text_config(self.description_cfg, [t for t in texts if t] or ["-"])
        conditioners = {"lyrics": lyrics, "description": description, "voice": self.voice_cfg,
                        "dropout": self.dropout_cfg}
        if self.cond_dim is not None:
            conditioners["dim"] = int(self.cond_dim)
        codec = {**meta, "num_codebooks": k, "source": self.codec_source}
        return SongModel(self.mode, codec, self.model_cfg, conditioners, self.loss_cfg, window_frames=self.max_frames)

    def build(self, ctx):
        self._ctx = ctx
        shards = TokenShards(self.train_dir)
        meta = dict(shards.meta)
        self.model = self._build_model(shards, meta)
        k = self.model.layout.num_codebooks
        self.train_examples = SongExamples(self.train_dir, self.model, self.max_frames, k, self.voice_source, self.seed)
        if len(self.train_examples) == 0:
            raise ConfigError(f"{self.train_dir}: no usable song (skipped: {self.train_examples.skipped})")
        if any(self.train_examples.skipped.values()) and ctx.is_main:
            log.warning(f"{self.train_dir}: skipped {self.train_examples.skipped}")
        self.valid_examples = None
        if self.valid_dir:
            self.valid_examples = SongExamples(self.valid_dir, self.model, self.max_frames, k, self.voice_source,
                                               self.seed, meta=meta)
        return {"song": self.model}

    def collate(self, items):
        """Items -> ``{"sequences": {key: [B, R, L]}, "cond": Conditions}``."""
        sequences = pad_sequences([x["sequences"] for x in items], self.model.layout.eos_id)
        cond = self.model.conditioner.collate([x["lyrics"] for x in items], [x["description"] for x in items],
                                              [x["voice"] for x in items] if self.model.conditioner.has_voice else None)
        return {"sequences": sequences, "cond": cond}

    def _loss(self, batch):
        cond = batch["cond"].to(batch["sequences"]["inputs"].device)
        return self.model.loss(batch["sequences"], cond)

    def training_step(self, batch, step, ctx):
        loss, stats = self._loss(batch)
        ctx.backward_and_step("main", loss)
        out = {"loss": loss.detach(), "accuracy": stats["accuracy"], "tokens": stats["tokens"]}
        if "vocal_loss" in stats:
            out["vocal_loss"] = stats["vocal_loss"]
        return out

    def validation_step(self, batch, ctx):
        loss, stats = self._loss(batch)
        return {"loss": loss, "accuracy": stats["accuracy"]}

    def save_model(self, model, path):
        return save_song(model, path)

    def load_model(self, path):
        return load_song(path)
