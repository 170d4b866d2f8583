"""Distillation teachers through ``transformers``: a speech model's and a language model's frame features.

* :class:`SpeechTeacher`: HuBERT / wav2vec2 (any ``transformers`` audio encoder with ``hidden_states``)
  -> hidden states of one layer, or the mean of several / all (SpeechTokenizer: HuBERT-base, mean of
  all 13, the CNN projection included), at the codec's frame rate.
* :class:`LanguageTeacher`: BERT (any encoder LM) hidden states of a transcript, token ``i`` matched
  to frame ``i`` with DM-Codec's length handling (see its docstring).

Both load from a local folder (``from_pretrained``: a ``save_pretrained`` folder, as downloaded from a
model hub) or are built with random weights from a config (``from_config``, for tests). Nothing is
downloaded unless ``from_pretrained`` is given a hub name on a machine that can reach the hub.

Both return :class:`TeacherOutput` and have ``extract(records)`` for :mod:`audiocodec.semantic.cache`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import audio as audio_utils
from ..errors import AudioError, ConfigError

Layer = Union[str, int, Sequence[int]]

#: Speech model types ``from_config`` builds (``transformers`` config / model class names).
SPEECH_MODELS = {"hubert": ("HubertConfig", "HubertModel"), "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
                 "wavlm": ("WavLMConfig", "WavLMModel")}
#: Language model types ``from_config`` builds.
LANGUAGE_MODELS = {"bert": ("BertConfig", "BertModel"), "roberta": ("RobertaConfig", "RobertaModel"),
                   "electra": ("ElectraConfig", "ElectraModel")}


class TeacherOutput(NamedTuple):
    """``features [B, T, D]`` (float32, padded past each item's end) and ``lengths [B]`` (valid frames)."""
    features: torch.Tensor
    lengths: torch.Tensor


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("distillation teachers need the `transformers` package: pip install transformers") from e
    return transformers


def _check_layer(layer: Layer, num_states: int) -> list:
    """Indices into ``hidden_states`` (``num_states`` of them) for ``layer``: ``"avg"`` (all), an int
    (negative counts from the end) or a list of ints (their mean)."""
    if layer == "avg":
        return list(range(num_states))
    items = [layer] if isinstance(layer, int) and not isinstance(layer, bool) else layer
    if isinstance(items, str) or not isinstance(items, Sequence) or not items:
        raise ConfigError(f"teacher layer must be 'avg', an int or a list of ints, got {layer!r}")
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_states <= i < num_states:
            raise ConfigError(f"teacher layer {i!r} out of range: the model has hidden states 0..{num_states - 1} "
                              "(0 is the input embedding / CNN projection)")
        out.append(i % num_states)
    return out


def _pick_layers(hidden_states: Sequence[torch.Tensor], indices: list) -> torch.Tensor:
    if len(indices) == 1:
        return hidden_states[indices[0]]
    return torch.stack([hidden_states[i] for i in indices]).mean(dim=0)


def _read_do_normalize(path) -> Optional[bool]:
    """``do_normalize`` of a model folder's ``preprocessor_config.json`` (Wav2Vec2FeatureExtractor), if any."""
    p = Path(path) / "preprocessor_config.json"
    if not p.is_file():
        return None
    try:
        value = json.loads(p.read_text()).get("do_normalize")
    except (OSError, ValueError):
        return None
    return None if value is None else bool(value)


class SpeechTeacher(nn.Module):
    """Frame features of a self-supervised speech model (HuBERT, wav2vec2, WavLM), at the codec's rate.

    Args:
        model: a ``transformers`` model returning ``hidden_states`` (e.g. ``HubertModel``).
        layer: ``"avg"`` (mean of all hidden states, SpeechTokenizer's ``semantic_model_layer: avg``), an
            index into ``hidden_states`` (0: the CNN projection, ``i``: transformer layer ``i``), or a list
            of indices (their mean).
        model_sample_rate: the rate the model was trained at (16 kHz).
        sample_rate: the rate of the audio given to :meth:`forward` (the codec's); resampled to
            ``model_sample_rate``.
        frame_rate: frame rate of the returned features (the codec's); ``None``: the model's own
            (``model_sample_rate / prod(conv_stride)``, 50 Hz). Other rates are linearly interpolated.
        normalize: zero-mean, unit-variance input per item, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    The teacher is frozen (``requires_grad_(False)``) and in eval mode.
    """

    def __init__(self, model: nn.Module, layer: Layer = "avg", model_sample_rate: int = 16000,
                 sample_rate: Optional[int] = None, frame_rate: Optional[float] = None, normalize: bool = True):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.num_states = int(config.num_hidden_layers) + 1
        self.layers = _check_layer(layer, self.num_states)
        self.layer = layer
        self.model_sample_rate = audio_utils.check_sample_rate(model_sample_rate)
        self.sample_rate = audio_utils.check_sample_rate(sample_rate or model_sample_rate)
        self.native_frame_rate = self.model_sample_rate / math.prod(int(s) for s in config.conv_stride)
        if frame_rate is not None and not frame_rate > 0:
            raise ConfigError(f"frame_rate must be > 0, got {frame_rate!r}")
        self.frame_rate = float(frame_rate or self.native_frame_rate)
        self.normalize = bool(normalize)
        self.dim = int(config.hidden_size)

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: Union[str, Path], layer: Layer = "avg", normalize: Optional[bool] = None,
                        **kwargs) -> "SpeechTeacher":
        """Load ``transformers.AutoModel`` from ``path`` (a local ``save_pretrained`` folder).
        ``normalize=None`` takes ``do_normalize`` from the folder's ``preprocessor_config.json`` (as the
        official feature extraction does), else True."""
        tf = _transformers()
        model = tf.AutoModel.from_pretrained(str(path))
        if normalize is None:
            found = _read_do_normalize(path)
            normalize = True if found is None else found
        rate = kwargs.pop("model_sample_rate", None) or getattr(model.config, "sampling_rate", None) or 16000
        return cls(model, layer=layer, model_sample_rate=int(rate), normalize=normalize, **kwargs)

    @classmethod
    def from_config(cls, config: Union[Mapping[str, Any], Any], model_type: str = "hubert", layer: Layer = "avg",
                    seed: Optional[int] = None, **kwargs) -> "SpeechTeacher":
        """A teacher with random weights: ``config`` is a ``transformers`` config or the keyword arguments
        of ``{model_type}Config`` (``hubert``, ``wav2vec2``, ``wavlm``)."""
        tf = _transformers()
        if model_type not in SPEECH_MODELS:
            raise ConfigError(f"unknown speech model type {model_type!r}; known: {', '.join(SPEECH_MODELS)}")
        config_cls, model_cls = (getattr(tf, n) for n in SPEECH_MODELS[model_type])
        cfg = config_cls(**dict(config)) if isinstance(config, Mapping) else config
        if seed is not None:
            torch.manual_seed(seed)
        return cls(model_cls(cfg), layer=layer, **kwargs)

    # -- features --------------------------------------------------------------------------------------
    def output_frames(self, num_samples: Union[int, torch.Tensor]) -> torch.Tensor:
        """Frames :meth:`forward` returns for ``num_samples`` input samples (at :attr:`sample_rate`)."""
        n = torch.as_tensor(num_samples).long()
        if self.sample_rate != self.model_sample_rate:
            n = torch.ceil(n.double() * self.model_sample_rate / self.sample_rate).long()
        frames = self.model._get_feat_extract_output_lengths(n).long()
        if self.frame_rate != self.native_frame_rate:
            frames = torch.round(frames.double() * self.frame_rate / self.native_frame_rate).long()
        return frames

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, lengths: Optional[Union[torch.Tensor, Sequence[int]]] = None) -> TeacherOutput:
        """``wav [B, L]`` or ``[B, 1, L]`` (mono, at :attr:`sample_rate`) -> :class:`TeacherOutput`
        with ``features [B, T, dim]`` at :attr:`frame_rate`.

        ``lengths``: valid samples per item of a zero-padded batch. Items are normalised over their own
        samples; with group-norm models (HuBERT-base) the padding still slightly changes the features,
        so exact official features come from batches of one (or of equal lengths).
        """
        if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
            raise AudioError(f"expected a float waveform tensor [B, L] or [B, 1, L], got "
                             f"{getattr(wav, 'dtype', type(wav).__name__)}")
        if wav.dim() == 3:
            if wav.shape[1] != 1:
                raise AudioError(f"the speech teacher takes mono audio [B, 1, L], got {wav.shape[1]} channels")
            wav = wav[:, 0]
        if wav.dim() != 2 or wav.shape[-1] == 0 or wav.shape[0] == 0:
            raise AudioError(f"expected audio shaped [B, L] or [B, 1, L] with L > 0, got {tuple(wav.shape)}")
        audio_utils.check_finite(wav)
        device = next(self.model.parameters()).device
        wav = wav.float().to(device)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long)
        lengths = torch.as_tensor(lengths).long().flatten().cpu()
        if lengths.shape[0] != wav.shape[0] or bool((lengths < 1).any()) or bool((lengths > wav.shape[-1]).any()):
            raise AudioError(f"lengths must give 1..{wav.shape[-1]} samples for each of {wav.shape[0]} items, "
                             f"got {lengths.tolist()}")
        if self.sample_rate != self.model_sample_rate:
            wav = audio_utils.resample(wav, self.sample_rate, self.model_sample_rate)
            lengths = torch.ceil(lengths.double() * self.model_sample_rate / self.sample_rate).long().clamp(
                max=wav.shape[-1])
        mask = (torch.arange(wav.shape[-1])[None] < lengths[:, None]).to(device)
        wav = wav * mask
        if self.normalize:
            n = lengths.to(device)[:, None].to(wav.dtype)
            mean = wav.sum(-1, keepdim=True) / n
            var = (((wav - mean) * mask) ** 2).sum(-1, keepdim=True) / n
            wav = (wav - mean) / torch.sqrt(var + 1e-7) * mask
        kwargs = {}
        if getattr(self.model.config, "feat_extract_norm", "group") == "layer":
            kwargs["attention_mask"] = mask.long()  # layer-norm models take a mask; group-norm ones must not
        out = self.model(wav, output_hidden_states=True, **kwargs)
        feats = _pick_layers(out.hidden_states, self.layers).float()        # [B, T, D]
        frames = self.model._get_feat_extract_output_lengths(lengths).long().clamp(max=feats.shape[1])
        if self.frame_rate != self.native_frame_rate:
            size = max(1, int(round(feats.shape[1] * self.frame_rate / self.native_frame_rate)))
            feats = F.interpolate(feats.transpose(1, 2), size=size, mode="linear", align_corners=False).transpose(1, 2)
            frames = torch.round(frames.double() * self.frame_rate / self.native_frame_rate).long().clamp(1, size)
        return TeacherOutput(feats, frames)

    def extract(self, records: Sequence[Mapping]) -> list:
        """Features ``[T_i, dim]`` of each manifest record's whole clip (read, mixed to mono, resampled)."""
        from ..audio import load_audio
        out = []
        for rec in records:
            wav, _ = load_audio(rec["path"], sample_rate=self.sample_rate, channels=1)
            res = self(wav[None])
            out.append(res.features[0, : int(res.lengths[0])].cpu())
        return out


class LanguageTeacher(nn.Module):
    """Hidden states of a language model (BERT) for a transcript, one token per codec frame (DM-Codec).

    DM-Codec's length handling, reproduced: the text is tokenized with ``padding="max_length",
    max_length=num_frames, truncation=True``, so the sequence has exactly one position per speech frame:
    token states first (``[CLS]``, the word pieces, ``[SEP]``), then the states of the padding tokens
    (computed by the model, attention-masked as keys), and a transcript longer than the frames is cut.
    There is no alignment of words to frames. (DM-Codec transcribes the audio with wav2vec2-CTC first; give
    the manifest's ``text`` or any transcript.) Frames beyond the model's position limit (512 for BERT,
    about 10 s at 50 Hz) are not produced; the losses then use only the frames that exist.

    Args:
        model: a ``transformers`` encoder (``BertModel``); tokenizer: its tokenizer.
        layer: ``"avg"``, an index into ``hidden_states``, or a list of indices (mean).
        frame_rate: codec frames per second, for :meth:`extract` (number of frames of a clip).
    """

    def __init__(self, model: nn.Module, tokenizer, layer: Layer = "avg", frame_rate: float = 50.0):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.num_states = int(model.config.num_hidden_layers) + 1
        self.layers = _check_layer(layer, self.num_states)
        self.layer = layer
        self.dim = int(model.config.hidden_size)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        if not frame_rate > 0:
            raise ConfigError(f"frame_rate must be > 0, got {frame_rate!r}")
        self.frame_rate = float(frame_rate)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], layer: Layer = "avg", **kwargs) -> "LanguageTeacher":
        """``transformers.AutoModel`` and ``AutoTokenizer`` from ``path`` (a local folder)."""
        tf = _transformers()
        return cls(tf.AutoModel.from_pretrained(str(path)), tf.AutoTokenizer.from_pretrained(str(path)),
                   layer=layer, **kwargs)

    @classmethod
    def from_config(cls, config: Union[Mapping[str, Any], Any], tokenizer, model_type: str = "bert",
                    layer: Layer = "avg", seed: Optional[int] = None, **kwargs) -> "LanguageTeacher":
        """Random weights from ``{model_type}Config(**config)`` (``bert``, ``roberta``, ``electra``) and a
        given tokenizer (e.g. ``BertTokenizer(vocab={...})``)."""
        tf = _transformers()
        if model_type not in LANGUAGE_MODELS:
            raise ConfigError(f"unknown language model type {model_type!r}; known: {', '.join(LANGUAGE_MODELS)}")
        config_cls, model_cls = (getattr(tf, n) for n in LANGUAGE_MODELS[model_type])
        cfg = config_cls(**dict(config)) if isinstance(config, Mapping) else config
        if seed is not None:
            torch.manual_seed(seed)
        model = model_cls(cfg, add_pooling_layer=False) if model_type in ("bert", "roberta") else model_cls(cfg)
        return cls(model, tokenizer, layer=layer, **kwargs)

    def frames_for(self, duration: float) -> int:
        """Codec frames of a clip of ``duration`` seconds."""
        return max(1, int(math.ceil(float(duration) * self.frame_rate - 1e-6)))

    @torch.no_grad()
    def forward(self, texts: Union[str, Sequence[str]], num_frames: Union[int, Sequence[int]]) -> TeacherOutput:
        """Transcripts -> :class:`TeacherOutput` ``features [B, T, dim]``, ``T = max(num_frames)`` (capped at
        the model's positions); item ``b`` has ``min(num_frames[b], positions)`` valid frames."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"expected transcripts as a non-empty list of strings, got {texts!r}")
        frames = [num_frames] * len(texts) if isinstance(num_frames, int) else list(num_frames)
        if len(frames) != len(texts) or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in frames):
            raise ConfigError(f"num_frames must be a positive int or one per transcript ({len(texts)}), got {num_frames!r}")
        length = min(max(frames), self.max_positions)
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        out = self.model(**enc, output_hidden_states=True)
        feats = _pick_layers(out.hidden_states, self.layers).float()
        lengths = torch.tensor([min(n, length) for n in frames], dtype=torch.long)
        return TeacherOutput(feats, lengths)

    def extract(self, records: Sequence[Mapping]) -> list:
        """Features ``[frames, dim]`` of each record's ``text`` (frames from its ``duration``)."""
        out = []
        for rec in records:
            text = rec.get("text")
            if not isinstance(text, str):
                raise ConfigError(f"record {rec.get('id', rec.get('path'))!r} has no 'text' for the language teacher")
            res = self([text], self.frames_for(rec["duration"]))
            out.append(res.features[0, : int(res.lengths[0])].cpu())
        return out


# -- teachers from a config -------------------------------------------------------------------------

#: Kinds of teacher :func:`build_teacher` makes.
TEACHER_KINDS = ("speech", "text")
#: Keys of a teacher spec (:func:`build_teacher`); ``normalize`` is for speech teachers, ``tokenizer`` /
#: ``vocab`` for text teachers.
TEACHER_SPEC_KEYS = ("path", "config", "model_type", "layer", "seed", "normalize", "tokenizer", "vocab")

#: The tokens of :func:`char_vocab`'s character vocabulary (besides the BERT special tokens).
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789'"


def char_vocab() -> list:
    """A small character vocabulary in BERT's WordPiece format, for random toy language teachers:
    ``[PAD] [UNK] [CLS] [SEP] [MASK]``, lower-case letters, digits and ``'``, each also as a ``##``
    continuation piece, and common punctuation."""
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(_CHARS) + [f"##{c}" for c in _CHARS]
            + list(".,;:!?-\"()"))


def _tokenizer(spec: Mapping, where: str):
    """The tokenizer of a text teacher built from a config: ``tokenizer`` (a folder), ``vocab`` (a list of
    tokens or a BERT ``vocab.txt``), or the :func:`char_vocab`."""
    tf = _transformers()
    if spec.get("tokenizer") is not None and spec.get("vocab") is not None:
        raise ConfigError(f"{where}: give tokenizer (a folder) or vocab, not both")
    if spec.get("tokenizer") is not None:
        return tf.AutoTokenizer.from_pretrained(str(spec["tokenizer"]))
    vocab = spec.get("vocab")
    if vocab is None:
        vocab = char_vocab()
    elif isinstance(vocab, (str, Path)):
        path = Path(vocab)
        if not path.is_file():
            raise ConfigError(f"{where}.vocab: no such file {path} (give a list of tokens or a vocab.txt)")
        vocab = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if isinstance(vocab, str) or not isinstance(vocab, Sequence) or not vocab or \
            not all(isinstance(t, str) and t for t in vocab):
        raise ConfigError(f"{where}.vocab must be a non-empty list of tokens or a vocab.txt path, got {vocab!r}")
    if len(set(vocab)) != len(vocab):
        raise ConfigError(f"{where}.vocab: tokens repeat")
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing:
        raise ConfigError(f"{where}.vocab lacks the special token(s) {', '.join(missing)}")
    return tf.BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


def build_teacher(kind: str, spec: Mapping[str, Any], sample_rate: Optional[int] = None,
                  frame_rate: Optional[float] = None, where: str = "teacher") -> Union[SpeechTeacher, LanguageTeacher]:
    """A teacher from a config mapping (the ``live`` teachers of ``codec_gan``, the feature CLI).

    Args:
        kind: ``speech`` (:class:`SpeechTeacher`) or ``text`` (:class:`LanguageTeacher`).
        spec: ``path`` (a local ``save_pretrained`` folder) or ``config`` (keyword arguments of the
            ``transformers`` config of ``model_type``: random weights drawn with ``seed``, for tests and
            smoke runs); ``layer`` (``avg``, an index or a list of indices); speech: ``normalize``
            (default: the folder's ``preprocessor_config.json``, else True); text built from ``config``:
            ``tokenizer`` (a folder) or ``vocab`` (a token list or a ``vocab.txt``; default
            :func:`char_vocab`; ``vocab_size`` defaults to its length).
        sample_rate: the rate of the audio given to a speech teacher (the codec's).
        frame_rate: the rate of the features (the codec's frame rate).
        where: the config path, for error messages.
    """
    if kind not in TEACHER_KINDS:
        raise ConfigError(f"{where}: unknown teacher kind {kind!r}; known: {', '.join(TEACHER_KINDS)}")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with `path` or `config`, got {spec!r}")
    spec = dict(spec)
    unknown = [k for k in spec if k not in TEACHER_SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TEACHER_SPEC_KEYS)}")
    wrong = [k for k in (("tokenizer", "vocab") if kind == "speech" else ("normalize",)) if spec.get(k) is not None]
    if wrong:
        raise ConfigError(f"{where}: {', '.join(wrong)} is not an option of a {kind} teacher")
    if (spec.get("path") is None) == (spec.get("config") is None):
        raise ConfigError(f"{where}: give `path` (a local model folder) or `config` (random weights), exactly one")
    layer = spec.get("layer", "avg")
    if spec.get("path") is not None:
        path = Path(spec["path"])
        if not path.is_dir():
            raise ConfigError(f"{where}.path: {path} is not a folder (a local `save_pretrained` model folder; "
                              "nothing is downloaded)")
        if spec.get("model_type") is not None or spec.get("seed") is not None:
            raise ConfigError(f"{where}: model_type and seed go with `config`, not with `path`")
        if spec.get("tokenizer") is not None or spec.get("vocab") is not None:
            raise ConfigError(f"{where}: a text teacher from `path` uses the folder's tokenizer; "
                              "drop tokenizer / vocab")
        if kind == "speech":
            return SpeechTeacher.from_pretrained(path, layer=layer, normalize=spec.get("normalize"),
                                                 sample_rate=sample_rate, frame_rate=frame_rate)
        return LanguageTeacher.from_pretrained(path, layer=layer, **({"frame_rate": frame_rate} if frame_rate else {}))
    config = spec["config"]
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}.config must be a mapping of transformers config arguments, got {config!r}")
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{where}.seed must be an integer, got {seed!r}")
    if kind == "speech":
        normalize = spec.get("normalize")
        return SpeechTeacher.from_config(dict(config), model_type=spec.get("model_type") or "hubert", layer=layer,
                                         seed=seed, sample_rate=sample_rate, frame_rate=frame_rate,
                                         normalize=True if normalize is None else bool(normalize))
    tokenizer = _tokenizer(spec, where)
    config = {"vocab_size": len(tokenizer), **dict(config)}
    if int(config["vocab_size"]) < len(tokenizer):
        raise ConfigError(f"{where}.config.vocab_size={config['vocab_size']} is smaller than the tokenizer's "
                          f"{len(tokenizer)} tokens")
    return LanguageTeacher.from_config(config, tokenizer, model_type=spec.get("model_type") or "bert", layer=layer,
                                       seed=seed, **({"frame_rate": frame_rate} if frame_rate else {}))
