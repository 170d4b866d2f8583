"""The condition memory a song LM cross-attends to: ``[voice ; description ; lyrics]``.

* lyrics: a tokenizer of :mod:`audiocodec.text` (char / phoneme / bpe) -> embedding + sinusoidal
  positions -> a small transformer encoder;
* description: the same kind of trainable encoder, or (``type: t5``) a frozen T5 encoder read from a
  local folder through ``transformers``, projected to the memory width (its weights are not saved with
  the song model; the folder must exist wherever the model is loaded);
* voice: codec tokens of a reference clip ``[K, Tv]`` (SongGen: 3 s) -> sum of per-codebook
  embeddings + positions -> a small encoder. A song without a reference has its voice frames masked out.

Each part gets a learned segment embedding, and its padded (or absent) frames are masked. Training drops
conditions per row (:meth:`SongConditioner.drop`: voice, description, lyrics independently, and all of
them at once), and classifier-free guidance pairs every row with the *null* condition
(:meth:`Conditions.null`: everything masked, so the decoder's cross-attention adds nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..tts.frontend import TextFrontend

#: The parts of the memory, in order.
PARTS = ("voice", "description", "lyrics")
#: Keys of ``condition_dropout``: the probability of dropping each part of a row, and all of them.
DROPOUT_KEYS = PARTS + ("all",)
DEFAULT_DROPOUT = {"voice": 0.5, "description": 0.1, "lyrics": 0.1, "all": 0.1}


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """``[length, dim]`` sin/cos position codes (``dim`` even), any length."""
    pos = torch.arange(length, dtype=torch.float, device=device)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)


def pad_ids(sequences: Sequence[Sequence[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> ``(ids [B, N], mask [B, N])``, right-padded with 0, ``N >= 1`` (all-masked rows
    for empty lists)."""
    longest = max([len(s) for s in sequences] + [1])
    ids = torch.zeros(len(sequences), longest, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.bool)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = True
    return ids.to(device), mask.to(device)


@dataclass
class Conditions:
    """A batch of conditions (ids, not yet encoded). Masks are True on real tokens / frames.

    lyrics, lyrics_mask: ``[B, Nl]``; description, description_mask: ``[B, Nd]``;
    voice: ``[B, K, Tv]`` codec tokens, voice_mask: ``[B, Tv]`` (all False: no reference).
    """
    lyrics: torch.Tensor
    lyrics_mask: torch.Tensor
    description: torch.Tensor
    description_mask: torch.Tensor
    voice: torch.Tensor
    voice_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.lyrics.shape[0]

    def _map(self, fn) -> "Conditions":
        return Conditions(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device) -> "Conditions":
        return self._map(lambda t: t.to(device))

    def select(self, index: torch.Tensor) -> "Conditions":
        """The rows ``index`` (``[B']`` long)."""
        return self._map(lambda t: t[index.to(t.device)])

    def cat(self, other: "Conditions") -> "Conditions":
        """Rows of ``self`` then rows of ``other`` (padded to common lengths)."""
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            longest = max(a.shape[-1], b.shape[-1])
            a = nn.functional.pad(a, (0, longest - a.shape[-1]))
            b = nn.functional.pad(b, (0, longest - b.shape[-1]))
            out[f.name] = torch.cat([a, b])
        return Conditions(**out)

    def dropped(self, voice: Optional[torch.Tensor] = None, description: Optional[torch.Tensor] = None,
                lyrics: Optional[torch.Tensor] = None) -> "Conditions":
        """A copy with the rows flagged in each ``[B]`` bool tensor masked out of that part."""
        out = {}
        for part, rows in (("voice", voice), ("description", description), ("lyrics", lyrics)):
            if rows is not None:
                mask = getattr(self, f"{part}_mask")
                out[f"{part}_mask"] = mask & ~rows.to(mask.device)[:, None]
        return replace(self, **out)

    def null(self) -> "Conditions":
        """The unconditional twin: every part masked out (same shapes)."""
        return self._map(lambda t: torch.zeros_like(t) if t.dtype == torch.bool else t)


class TextEncoder(nn.Module):
    """Token ids ``[B, N]`` (mask ``[B, N]``) -> ``[B, N, dim]``: embedding + sinusoidal positions ->
    ``num_layers`` pre-norm transformer encoder layers -> LayerNorm; masked frames are zero."""

    def __init__(self, vocab_size: int, dim: int, num_layers: int = 2, num_heads: int = 4,
                 ffn_dim: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        _check_encoder(dim, num_layers, num_heads, dropout, "text encoder")
        self.dim = dim
        self.embedding = nn.Embedding(vocab_size, dim)
        self.encoder = _encoder_stack(dim, num_layers, num_heads, ffn_dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, N] -> [B, N, dim]`` before the positions."""
        return self.embedding(ids)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) * math.sqrt(self.dim)
        positions = sinusoidal_positions(x.shape[1], self.dim, x.device).to(x.dtype)
        return _encode(self.encoder, self.norm, x + positions, mask)


class VoiceEncoder(TextEncoder):
    """Reference-voice codec tokens ``[B, K, Tv]`` (mask ``[B, Tv]``) -> ``[B, Tv, dim]``: the sum of one
    embedding per codebook, positions, a small encoder."""

    def __init__(self, num_codebooks: int, cardinality: int, dim: int, num_layers: int = 1, num_heads: int = 4,
                 ffn_dim: Optional[int] = None, dropout: float = 0.0):
        super().__init__(cardinality, dim, num_layers, num_heads, ffn_dim, dropout)
        self.embedding = nn.ModuleList(nn.Embedding(cardinality, dim) for _ in range(num_codebooks))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return sum(table(tokens[:, k]) for k, table in enumerate(self.embedding))


class T5TextEncoder(nn.Module):
    """A frozen T5 encoder from a local folder (``transformers``), projected to ``dim``:
    ids ``[B, N]`` -> ``[B, N, dim]``. Only the projection is trained and saved."""

    def __init__(self, path: str, dim: int, max_length: int = 256):
        super().__init__()
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("a t5 description encoder needs the 'transformers' package") from e
        if not Path(path).is_dir():
            raise ConfigError(f"t5 description encoder: {path} is not a local model folder")
        self.path, self.max_length = str(path), int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        t5 = T5EncoderModel.from_pretrained(self.path, local_files_only=True).eval().requires_grad_(False)
        self._frozen = [t5]  # a plain list: not a submodule, so not trained, not saved
        self.proj = nn.Linear(t5.config.d_model, dim)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]) if text else []

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t5 = self._frozen[0].to(ids.device)
        with torch.no_grad():
            hidden = t5(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return self.proj(hidden.to(self.proj.weight.dtype)).masked_fill(~mask[..., None], 0.0)


def _check_encoder(dim, num_layers, num_heads, dropout, what):
    for name, value, low in (("dim", dim, 1), ("num_layers", num_layers, 0), ("num_heads", num_heads, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{what}: {name} must be an int >= {low}, got {value!r}")
    if dim % 2 or dim % num_heads:
        raise ConfigError(f"{what}: dim={dim} must be even and divisible by num_heads={num_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{what}: dropout must be in [0, 1), got {dropout}")


def _encoder_stack(dim, num_layers, num_heads, ffn_dim, dropout) -> Optional[nn.TransformerEncoder]:
    if num_layers == 0:
        return None
    layer = nn.TransformerEncoderLayer(dim, num_heads, ffn_dim or 4 * dim, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


def _encode(encoder, norm, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if encoder is not None:
        # a row with no real frame would softmax over nothing (NaN): let it attend to its first slot;
        # its output is masked below anyway
        safe = mask.clone()
        safe[:, 0] |= ~mask.any(-1)
        x = encoder(x, src_key_padding_mask=~safe)
    return norm(x).masked_fill(~mask[..., None], 0.0)


def check_dropout(probs: Optional[Mapping]) -> dict[str, float]:
    """``condition_dropout`` with defaults filled in; unknown keys or values outside [0, 1] raise."""
    probs = dict(DEFAULT_DROPOUT if probs is None else probs)
    unknown = sorted(set(probs) - set(DROPOUT_KEYS))
    if unknown:
        raise ConfigError(f"condition_dropout: unknown key(s) {unknown}; known: {', '.join(DROPOUT_KEYS)}")
    out = {}
    for key in DROPOUT_KEYS:
        p = probs.get(key, 0.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"condition_dropout.{key} must be a probability in [0, 1], got {p!r}")
        out[key] = float(p)
    return out


_ENCODER_KEYS = {"num_layers", "num_heads", "ffn_dim", "dropout"}


def _encoder_args(cfg: Mapping, what: str, extra: set) -> dict:
    unknown = sorted(set(cfg) - _ENCODER_KEYS - extra)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; known: {', '.join(sorted(_ENCODER_KEYS | extra))}")
    return {k: cfg[k] for k in _ENCODER_KEYS if k in cfg}


def fit_text_config(config: Optional[Mapping], texts: Sequence[str]) -> dict:
    """A lyrics / description config with its tokenizer fitted on ``texts`` when it needs a vocabulary
    (see :class:`~audiocodec.tts.frontend.TextFrontend`); a ``t5`` config is returned as it is."""
    config = dict(config or {})
    if config.get("type", "trainable") == "t5":
        return config
    text = {k: config.pop(k) for k in ("tokenizer", "language") if k in config}
    frontend = TextFrontend.from_config(text or {"tokenizer": {"type": "char"}}, texts=texts)
    return {**config, **frontend.to_dict()}


class SongConditioner(nn.Module):
    """Encodes :class:`Conditions` into the memory ``[B, M, dim]`` (+ mask ``[B, M]``) of a song LM.

    Args:
        dim: memory width.
        lyrics: ``{"tokenizer": <tokenizer state>, "language", "num_layers", "num_heads", "ffn_dim",
            "dropout"}`` (a fitted tokenizer: see :func:`fit_text_config`).
        description: the same keys (``"type": "trainable"``, the default), or
            ``{"type": "t5", "path": <local folder>, "max_length": 256}``.
        voice: ``{"seconds": 3.0, "num_layers", "num_heads", ...}``, or None for a model without voice
            prompts.
        num_codebooks, cardinality: of the codec tokens (reference voice).
        dropout: :data:`DROPOUT_KEYS` probabilities (see :func:`check_dropout`).
    """

    def __init__(self, dim: int, lyrics: Mapping, description: Optional[Mapping], voice: Optional[Mapping],
                 num_codebooks: int, cardinality: int, dropout: Optional[Mapping] = None):
        super().__init__()
        self.dim = dim
        self.dropout_probs = check_dropout(dropout)
        self.lyrics_frontend = _frontend(lyrics, "lyrics")
        self.lyrics_encoder = TextEncoder(self.lyrics_frontend.vocab_size, dim,
                                          **_encoder_args(lyrics, "lyrics", {"tokenizer", "language"}))
        description = dict(description or {"tokenizer": {"type": "char"}})
        kind = description.get("type", "trainable")
        self.description_frontend = None
        if kind == "t5":
            unknown = sorted(set(description) - {"type", "path", "max_length"})
            if unknown or "path" not in description:
                raise ConfigError("description of type t5 takes path (required) and max_length; "
                                  f"got {sorted(description)}")
            self.description_encoder = T5TextEncoder(description["path"], dim, description.get("max_length", 256))
        elif kind == "trainable":
            self.description_frontend = _frontend(description, "description")
            self.description_encoder = TextEncoder(
                self.description_frontend.vocab_size, dim,
                **_encoder_args(description, "description", {"type", "tokenizer", "language"}))
        else:
            raise ConfigError(f"description: unknown type {kind!r}; known: trainable, t5")
        self.voice_seconds = None
        self.voice_encoder = None
        if voice is not None:
            voice = dict(voice)
            self.voice_seconds = float(voice.get("seconds", 3.0))
            if not self.voice_seconds > 0:
                raise ConfigError(f"voice.seconds must be > 0, got {voice.get('seconds')}")
            self.voice_encoder = VoiceEncoder(num_codebooks, cardinality, dim,
                                              **_encoder_args(voice, "voice", {"seconds"}))
        self.num_codebooks = num_codebooks
        self.segments = nn.Embedding(len(PARTS), dim)

    @property
    def has_voice(self) -> bool:
        return self.voice_encoder is not None

    # -- text -> ids ---------------------------------------------------------------------------------
    def lyrics_ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ConfigError(f"lyrics must be a str, got {type(text).__name__}")
        return self.lyrics_frontend.encode(text) if text.strip() else []

    def description_ids(self, text: Optional[str]) -> list[int]:
        if text is None:
            return []
        if not isinstance(text, str):
            raise ConfigError(f"a description must be a str, got {type(text).__name__}")
        if not text.strip():
            return []
        if self.description_frontend is None:
            return self.description_encoder.encode_text(text)
        return self.description_frontend.encode(text)

    def collate(self, lyrics: Sequence[Sequence[int]], descriptions: Sequence[Sequence[int]],
                voices: Optional[Sequence[Optional[torch.Tensor]]] = None, device=None) -> Conditions:
        """Token ids of each row (and reference-voice tokens ``[K, Tv]`` or None per row) -> :class:`Conditions`."""
        if len(lyrics) != len(descriptions) or (voices is not None and len(voices) != len(lyrics)):
            raise ConfigError(f"one lyrics, description (and voice) per song: got {len(lyrics)}, "
                              f"{len(descriptions)}{'' if voices is None else f', {len(voices)}'}")
        lyr, lyr_mask = pad_ids(lyrics, device)
        desc, desc_mask = pad_ids(descriptions, device)
        voices = list(voices) if voices is not None else [None] * len(lyrics)
        if any(v is not None for v in voices) and not self.has_voice:
            raise ConfigError("this song model was built without voice conditioning: it takes no reference voice")
        longest = max([v.shape[-1] for v in voices if v is not None] + [1])
        voice = torch.zeros(len(voices), self.num_codebooks, longest, dtype=torch.long)
        voice_mask = torch.zeros(len(voices), longest, dtype=torch.bool)
        for i, v in enumerate(voices):
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.shape[0] != self.num_codebooks \
                    or v.is_floating_point() or v.shape[1] < 1:
                raise ConfigError(f"a reference voice is codec tokens [K={self.num_codebooks}, Tv >= 1], got "
                                  f"{getattr(v, 'dtype', type(v).__name__)} {tuple(getattr(v, 'shape', ()))}")
            card = self.voice_encoder.embedding[0].num_embeddings
            if int(v.min()) < 0 or int(v.max()) >= card:
                raise ConfigError(f"reference voice tokens must be in [0, {card})")
            voice[i, :, :v.shape[1]] = v
            voice_mask[i, :v.shape[1]] = True
        return Conditions(lyr, lyr_mask, desc, desc_mask, voice.to(device), voice_mask.to(device))

    def prepare(self, lyrics: Sequence[str], descriptions: Sequence[Optional[str]],
                voices: Optional[Sequence[Optional[torch.Tensor]]] = None, device=None) -> Conditions:
        """Texts (and reference-voice tokens ``[K, Tv]`` or None per row) -> :class:`Conditions`."""
        return self.collate([self.lyrics_ids(t) for t in lyrics], [self.description_ids(t) for t in descriptions],
                            voices, device)

    # -- training dropout ------------------------------------------------------------------------------
    def drop(self, cond: Conditions, generator: Optional[torch.Generator] = None) -> Conditions:
        """Condition dropout: each row loses each part with its probability, and everything with
        ``all``'s. Draws ``4 B`` uniforms (on the CPU, from ``generator`` or the global RNG)."""
        u = torch.rand(len(DROPOUT_KEYS), cond.batch_size, generator=generator)
        hit = {key: u[i] < self.dropout_probs[key] for i, key in enumerate(DROPOUT_KEYS)}
        return cond.dropped(**{part: hit[part] | hit["all"] for part in PARTS})

    # -- encoding ----------------------------------------------------------------------------------------
    def forward(self, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
        """:class:`Conditions` -> ``(memory [B, M, dim], mask [B, M])`` with ``M = Tv + Nd + Nl`` (the
        voice part is left out of a model without voice conditioning)."""
        parts, masks = [], []
        if self.has_voice:
            parts.append(self.voice_encoder(cond.voice, cond.voice_mask) + self.segments.weight[0])
            masks.append(cond.voice_mask)
        parts.append(self.description_encoder(cond.description, cond.description_mask) + self.segments.weight[1])
        masks.append(cond.description_mask)
        parts.append(self.lyrics_encoder(cond.lyrics, cond.lyrics_mask) + self.segments.weight[2])
        masks.append(cond.lyrics_mask)
        mask = torch.cat(masks, dim=1)
        return torch.cat(parts, dim=1).masked_fill(~mask[..., None], 0.0), mask

    def frontends_config(self) -> dict:
        """The fitted tokenizers (for the model's saved config)."""
        out = {"lyrics": self.lyrics_frontend.to_dict()}
        if self.description_frontend is not None:
            out["description"] = self.description_frontend.to_dict()
        return out


def _frontend(cfg: Mapping, what: str) -> TextFrontend:
    if "tokenizer" not in cfg:
        raise ConfigError(f"{what}: needs a tokenizer ({{'tokenizer': {{'type': 'char'}}}}; "
                          "fit one on texts with fit_text_config)")
    return TextFrontend.from_dict({"tokenizer": cfg["tokenizer"], "language": cfg.get("language", "en")})
