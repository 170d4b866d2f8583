"""The audiocodec web demo: codec reconstruction, text to speech, song generation, model cards.

    python demos/app.py [--model-dir DIR] [--tts-model PATH] [--song-model PATH]
                        [--server-name 127.0.0.1] [--server-port 7860] [--share]

Tabs:

* **Codec**: upload or record a clip, pick a codec (the embedded default first, then every checkpoint under
  ``--model-dir``; named configs with random weights only with ``--random-configs``), choose the number of
  codebooks of RVQ codecs; the page shows the original and the reconstruction side by side, both
  spectrograms, a heat map of the tokens, the bitrate, the frame rate and PESQ / STOI / mel distance.
* **Speech**: text to speech with the embedded ``tts-mini`` or the model of ``--tts-model`` (optional
  reference voice, with or without its transcript, sampling controls); the audio arrives while it is
  generated and the first-chunk latency is shown.
* **Song**: lyrics to song with the embedded ``song-mini`` (or ``--song-model``).
* **About**: the loaded models' cards.

Every upload and every file the page writes stays inside the app's own temporary folder, which is removed
when the app stops. ``build_app(...)`` returns the ``gr.Blocks`` without launching it; the handlers are
methods of :class:`Demo`, usable without a browser.
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import inspect
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audiocodec  # noqa: E402
from audiocodec import audio as audio_utils  # noqa: E402
from audiocodec.errors import AudioCodecError  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from an offline demo

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".th", ".pth", ".bin")

MAX_UPLOAD_MB = 25            # per file, enforced by the server (launch max_file_size) and again here
MAX_SECONDS = 60.0            # codec input
MAX_VOICE_SECONDS = 20.0      # TTS / song reference voice
MIN_SECONDS = 0.25            # shorter clips give no meaningful scores (PESQ needs 0.25 s)
SILENCE_DBFS = -60.0          # a clip whose peak is below this is treated as silent
MAX_TEXT_CHARS = 600
MAX_LYRICS_CHARS = 2000
QUEUE_SIZE = 16
AUDIO_HINT = "Upload a WAV, FLAC, OGG or MP3 file"


def _gr():
    import gradio as gr
    return gr


def _error(message: str) -> Exception:
    """A ``gr.Error`` (shown to the user as a red toast)."""
    return _gr().Error(message)


# -- audio checks ----------------------------------------------------------------------------------

def load_clip(path: Optional[str], what: str = "audio", max_seconds: float = MAX_SECONDS,
              min_seconds: float = MIN_SECONDS) -> tuple[torch.Tensor, int]:
    """Read an uploaded / recorded clip as ``(wav [C, L], sample_rate)``; every problem is a ``gr.Error``
    that says what to do."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise _error(f"No {what} given: upload a file or record with the microphone first.")
    p = Path(path)
    if not p.is_file():
        raise _error(f"The {what} upload was lost (no file at {p.name}); upload it again.")
    size = p.stat().st_size
    if size == 0:
        raise _error(f"The {what} file is empty (0 bytes). {AUDIO_HINT} with some sound in it.")
    if size > MAX_UPLOAD_MB * 2 ** 20:
        raise _error(f"The {what} file is {size / 2 ** 20:.0f} MB; the demo takes files up to {MAX_UPLOAD_MB} MB. "
                     "Upload a shorter or compressed clip.")
    try:
        import soundfile as sf
        info = sf.info(str(p))
    except Exception:  # noqa: BLE001 - libsndfile raises several types for non-audio data
        raise _error(f"'{p.name}' is not an audio file this demo can read. {AUDIO_HINT}.") from None
    if info.frames == 0 or info.samplerate <= 0:
        raise _error(f"'{p.name}' holds no audio samples. {AUDIO_HINT} with some sound in it.")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise _error(f"The {what} is {seconds:.1f} s long; the demo takes up to {max_seconds:.0f} s. "
                     "Trim it and upload it again.")
    if seconds < min_seconds:
        raise _error(f"The {what} is only {seconds:.2f} s long; give at least {min_seconds:g} s.")
    try:
        wav, sr = audio_utils.load_audio(p)
    except AudioCodecError as e:
        raise _error(f"Cannot read '{p.name}': {e} {AUDIO_HINT}.") from None
    peak = float(wav.abs().max())
    if peak <= 10 ** (SILENCE_DBFS / 20):
        level = "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
        raise _error(f"The {what} is silent ({level}). Upload or record a clip with sound in it.")
    return wav, sr


def to_int16(wav) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 (what gr.Audio plays without re-normalising the loudness)."""
    x = wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


# -- pictures (numpy only: no plotting library needed) ----------------------------------------------

_MAGMA = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                   (250, 193, 39), (252, 253, 191)], dtype=np.float64)
_VIRIDIS = np.array([(68, 1, 84), (70, 50, 127), (54, 92, 141), (39, 127, 142), (31, 161, 135),
                     (74, 194, 109), (159, 218, 58), (253, 231, 37)], dtype=np.float64)


def colorize(values: np.ndarray, palette: np.ndarray = _MAGMA) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 through a piecewise-linear palette."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(palette))
    rgb = np.stack([np.interp(v, stops, palette[:, c]) for c in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def _pool_columns(x: np.ndarray, max_width: int) -> np.ndarray:
    if x.shape[1] <= max_width:
        return x
    factor = math.ceil(x.shape[1] / max_width)
    pad = (-x.shape[1]) % factor
    x = np.pad(x, ((0, 0), (0, pad)), mode="edge")
    return x.reshape(x.shape[0], -1, factor).mean(-1)


def log_mel(wav: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 128) -> np.ndarray:
    """``[n_mels, frames]`` log-magnitude mel spectrogram in dB."""
    import librosa
    x = torch.as_tensor(np.asarray(wav, np.float32))
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    mag = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True, pad_mode=pad_mode,
                     return_complex=True).abs().numpy()
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    return 20 * np.log10(np.maximum(basis @ mag, 1e-5))


def spectrogram_image(wav: np.ndarray, sample_rate: int, top_db: Optional[float] = None, range_db: float = 80.0,
                      max_width: int = 1000) -> tuple[np.ndarray, float]:
    """A log-mel spectrogram as an RGB image (low frequencies at the bottom) and the dB level mapped to the
    brightest colour (pass the original's to draw the reconstruction on the same scale)."""
    db = log_mel(wav, sample_rate)
    top = float(db.max()) if top_db is None else float(top_db)
    img = colorize((db - (top - range_db)) / range_db)[::-1]
    img = np.stack([_pool_columns(img[..., c].astype(np.float64), max_width) for c in range(3)], -1)
    img = np.repeat(img, 2, axis=0)                                    # 256 px high
    if img.shape[1] < 500:
        img = np.repeat(img, math.ceil(500 / img.shape[1]), axis=1)
    return img.round().astype(np.uint8), top


def token_image(tokens: np.ndarray, cardinality: int, max_width: int = 1200) -> np.ndarray:
    """Tokens ``[K, T]`` as a heat map: one band per codebook (top = first), one column per frame, colour =
    token id / codebook size."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"expected tokens [K, T] with T > 0, got {tokens.shape}")
    k, t = tokens.shape
    values = tokens.astype(np.float64) / max(1, cardinality - 1)
    if t > max_width:                                                  # nearest frames, no averaging of ids
        values = values[:, np.linspace(0, t - 1, max_width).round().astype(int)]
    img = colorize(values, _VIRIDIS)
    img = np.repeat(img, max(4, min(96, 256 // k)), axis=0)
    if img.shape[1] < 600:
        img = np.repeat(img, math.ceil(600 / img.shape[1]), axis=1)
    return img


# -- model choices and caches ----------------------------------------------------------------------

def model_choices(model_dir: Optional[str] = None, random_configs: bool = False) -> dict[str, str]:
    """Dropdown label -> ``resolve_model`` spec: the embedded codecs (the default first), every checkpoint
    under ``model_dir``, then (only when asked) the named configs with random weights."""
    embedded = audiocodec.list_embedded()
    ordered = sorted(embedded, key=lambda n: n != audiocodec.DEFAULT_CODEC)
    choices = {f"{name} (embedded)": name for name in ordered}
    if model_dir:
        root = Path(model_dir).expanduser()
        if not root.is_dir():
            raise audiocodec.ConfigError(f"--model-dir {model_dir}: no such folder")
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
                choices[str(path.relative_to(root))] = str(path.resolve())
    if random_configs:
        for name in audiocodec.list_codecs():
            choices[f"{name} (random weights)"] = name
    return choices


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise audiocodec.ConfigError(f"--device {spec}: CUDA is not available on this machine")
    return dev


class ModelCache:
    """Load each model once; thread-safe (one lock per key, so two different models load in parallel and
    two requests for the same model wait for one load). ``lock(key)`` serialises use of a model whose
    state a request changes (e.g. the number of codebooks)."""

    def __init__(self, loader: Callable[[str], Any]):
        self._loader = loader
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._use: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _key_lock(self, key: str, table: dict) -> threading.Lock:
        with self._guard:
            return table.setdefault(key, threading.Lock())

    def get(self, key: str):
        if key in self._models:
            return self._models[key]
        with self._key_lock(key, self._locks):
            if key not in self._models:
                self._models[key] = self._loader(key)
            return self._models[key]

    def lock(self, key: str) -> threading.Lock:
        return self._key_lock(key, self._use)

    def __contains__(self, key: str) -> bool:
        return key in self._models


# -- song package (optional, looked up at run time) ------------------------------------------------

def song_package():
    """``audiocodec.song`` when the installed package has it, else None."""
    try:
        return importlib.import_module("audiocodec.song")
    except ModuleNotFoundError as e:
        if e.name in ("audiocodec.song",):
            return None
        raise


DEFAULT_SONG_MODES = ("mixed",)


def _call_with_supported(fn: Callable, candidates: dict[str, tuple[tuple[str, ...], Any]]):
    """Call ``fn`` with each value under the first of its names that ``fn`` accepts (all first names when it
    takes ``**kwargs``); values that are None are left out."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    for names, value in candidates.values():
        if value is None:
            continue
        name = next((n for n in names if n in params), names[0] if var_kw else None)
        if name is not None:
            kwargs[name] = value
    return fn(**kwargs)


def _as_mono(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    a = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    a = np.squeeze(a)
    if a.ndim == 2:                                        # [C, L] -> mix
        a = a.mean(0) if a.shape[0] < a.shape[1] else a.mean(1)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected song audio shaped [L] or [C, L], got {np.shape(x)}")
    return a


def song_outputs(result, default_rate: int) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """Whatever the song generator returned -> ``(sample_rate, mixture [L], {stem: [L]})``: a tensor /
    array (the mixture), a dict, or an object with ``mixture`` / ``audio`` and stem attributes."""
    rate = int(getattr(result, "sample_rate", None) or (result.get("sample_rate") if isinstance(result, dict)
                                                          else None) or default_rate)
    if isinstance(result, (torch.Tensor, np.ndarray)):
        return rate, _as_mono(result), {}
    get = result.get if isinstance(result, dict) else (lambda k: getattr(result, k, None))
    mixture = next((get(k) for k in ("mixture", "mix", "audio", "song") if get(k) is not None), None)
    stems = {}
    named = get("stems")                                   # audiocodec.song.Song: stems {"accompaniment", "vocal"}
    if isinstance(named, dict):
        stems.update({str(k): _as_mono(v) for k, v in named.items() if v is not None})
    for name in ("vocal", "vocals", "accompaniment", "instrumental"):
        if get(name) is not None:
            stems[name] = _as_mono(get(name))
    if mixture is None:
        if not stems:
            raise ValueError(f"the song generator returned {type(result).__name__} without audio")
        n = max(len(s) for s in stems.values())
        mixture = sum(np.pad(s, (0, n - len(s))) for s in stems.values())
    return rate, _as_mono(mixture), stems


# -- the demo --------------------------------------------------------------------------------------

@dataclass
class CodecResult:
    """One reconstruction, as the Codec tab shows it."""
    sample_rate: int
    original: np.ndarray            # [L] mono at the codec's rate
    reconstruction: np.ndarray      # [L]
    tokens: np.ndarray              # [K, T]
    spectrogram_original: np.ndarray
    spectrogram_reconstruction: np.ndarray
    token_map: np.ndarray
    stats: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


class Demo:
    """Models, caches, temporary folder and the handlers of every tab."""

    def __init__(self, model_dir: Optional[str] = None, tts_model: Optional[str] = None,
                 song_model: Optional[str] = None, random_configs: bool = False, device: str = "auto",
                 temp_dir: Optional[str] = None, speech_output: str = "auto"):
        # every check first: a bad argument leaves no temporary folder behind
        self.device = pick_device(device)
        self.choices = model_choices(model_dir, random_configs)
        if not self.choices:
            raise audiocodec.ConfigError("no codec to offer: the embedded codec is not installed; pass --model-dir "
                                         "with trained checkpoints (or --random-configs to try untrained ones)")
        if not tts_model:  # the embedded default TTS, when the package ships one
            from audiocodec.codecs.embedded import default_tts_path
            tts_model = default_tts_path()
        if not song_model:  # the embedded default song model, when the package ships one
            from audiocodec.codecs.embedded import default_song_path
            song_model = default_song_path()
        self.tts_path = str(Path(tts_model).expanduser()) if tts_model else None
        self.song_path = str(Path(song_model).expanduser()) if song_model else None
        if self.tts_path and not Path(self.tts_path).exists():
            raise audiocodec.ConfigError(f"--tts-model {tts_model}: no such file or folder")
        if self.song_path and not Path(self.song_path).exists():
            raise audiocodec.ConfigError(f"--song-model {song_model}: no such file or folder")
        # speech audio: gradio's streamed output (chunks, played as they come) needs ffmpeg; without it the
        # growing audio is sent again every ~0.5 s ("progressive")
        if speech_output not in ("auto", "stream", "progressive"):
            raise audiocodec.ConfigError(f"--speech-output must be auto, stream or progressive, got {speech_output!r}")
        has_ffmpeg = shutil.which("ffmpeg") is not None
        if speech_output == "stream" and not has_ffmpeg:
            raise audiocodec.ConfigError("--speech-output stream needs ffmpeg (gradio encodes the streamed audio "
                                         "with it): install ffmpeg or use --speech-output progressive")
        self.stream_speech = has_ffmpeg if speech_output == "auto" else speech_output == "stream"
        if temp_dir is not None and not Path(temp_dir).is_dir():
            raise audiocodec.ConfigError(f"--temp-dir {temp_dir}: no such folder")
        self.codecs = ModelCache(self._load_codec)
        self._tts = ModelCache(lambda path: audiocodec.TTS.load(path, device=self.device))
        self._song = ModelCache(self._load_song)
        self.workdir = Path(tempfile.mkdtemp(prefix="audiocodec-demo-", dir=temp_dir))
        self._old_temp = os.environ.get("GRADIO_TEMP_DIR")
        # gradio keeps uploads and the files it serves in GRADIO_TEMP_DIR: our own folder
        os.environ["GRADIO_TEMP_DIR"] = str(self.workdir / "gradio")
        self._closed = False
        atexit.register(self.close)

    # -- life cycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the temporary folder (uploads, outputs); restore GRADIO_TEMP_DIR."""
        if self._closed:
            return
        self._closed = True
        shutil.rmtree(self.workdir, ignore_errors=True)
        if os.environ.get("GRADIO_TEMP_DIR") == str(self.workdir / "gradio"):
            if self._old_temp is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self._old_temp

    @property
    def default_label(self) -> str:
        return next(iter(self.choices))

    # -- models ----------------------------------------------------------------------------------------
    def _load_codec(self, spec: str):
        from audiocodec.cli import resolve_model
        return resolve_model(spec, device=str(self.device))

    def codec(self, label: str):
        if label not in self.choices:
            raise _error(f"Unknown model '{label}': pick one from the list.")
        try:
            return self.codecs.get(self.choices[label])
        except AudioCodecError as e:
            raise _error(f"Cannot load '{label}': {e}") from None

    def tts(self):
        if self.tts_path is None:
            raise _error("No TTS model loaded: start the demo with --tts-model PATH (a folder written by "
                         "the tts recipe, e.g. exp/tts/tts).")
        try:
            return self._tts.get(self.tts_path)
        except AudioCodecError as e:
            raise _error(f"Cannot load the TTS model {self.tts_path}: {e}") from None

    def _load_song(self, path: str):
        pkg = song_package()
        cls = getattr(pkg, "SongGenerator", None) if pkg is not None else None
        if cls is None:
            raise _error("This audiocodec has no song generator (audiocodec.song.SongGenerator); update the "
                         "package to generate songs.")
        load = getattr(cls, "load", None) or cls
        return _call_with_supported(load, {"path": (("path", "source", "model"), path),
                                           "device": (("device",), self.device)})

    def song_status(self) -> Optional[str]:
        """None when songs can be generated, else why not."""
        if self.song_path is None:
            return ("No song model loaded: start the demo with --song-model PATH to generate songs from "
                    "lyrics.")
        if song_package() is None:
            return ("A song model was given, but this audiocodec has no song package (audiocodec.song); "
                    "update the package to generate songs.")
        return None

    def song(self):
        status = self.song_status()
        if status:
            raise _error(status)
        try:
            return self._song.get(self.song_path)
        except AudioCodecError as e:
            raise _error(f"Cannot load the song model {self.song_path}: {e}") from None

    def song_modes(self) -> list[str]:
        """The modes the loaded song model generates in (its own; a mixed-pro model also answers to "mixed")."""
        modes = None
        if self.song_status() is None and self.song_path in self._song:
            gen = self._song.get(self.song_path)
            modes = getattr(gen, "modes", None)
            own = getattr(getattr(gen, "model", None), "mode", None)
            if modes is None and own:
                modes = [own] + (["mixed"] if own == "mixed_pro" else [])
        return list(modes or DEFAULT_SONG_MODES)

    def song_info(self) -> str:
        status = self.song_status()
        if status:
            return status
        gen = self.song()
        model = getattr(gen, "model", None)
        rows = [("model", f"`{self.song_path}`"), ("sample rate", f"{getattr(gen, 'sample_rate', 'n/a')} Hz"),
                ("modes", ", ".join(self.song_modes()))]
        if isinstance(model, torch.nn.Module):
            rows.append(("parameters", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"))
        codec = getattr(gen, "codec", None)
        if codec is not None:
            rows.append(("codec", f"{codec.name} ({codec.frame_rate:g} tokens/s, {codec.sample_rate} Hz)"))
        table = "| Song | |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
        from audiocodec.codecs.embedded import embedded_name
        name = embedded_name(self.song_path)
        card = audiocodec.model_card(name) if name else None
        return table + ("\n" + _card_section(card) if card else "")

    # -- codec tab -------------------------------------------------------------------------------------
    def codec_controls(self, label: str, num_codebooks: Optional[float] = None):
        """Slider settings and bitrate text for a model: ``(max codebooks, value, text)``."""
        codec = self.codec(label)
        k_max = codec.max_codebooks
        k = int(min(max(1, int(num_codebooks or k_max)), k_max))
        return k_max, k, self.bitrate_text(label, k)

    def bitrate_text(self, label: str, num_codebooks: Optional[float]) -> str:
        codec = self.codec(label)
        k = int(min(max(1, int(num_codebooks or 1)), codec.max_codebooks))
        kbps = codec.frame_rate * k * math.log2(codec.cardinality) / 1000
        rvq = f"{k} of {codec.max_codebooks} codebooks" if codec.max_codebooks > 1 else "1 codebook"
        return (f"**{kbps:.2f} kbps**: {rvq} of {codec.cardinality} codes at {codec.frame_rate:g} frames/s "
                f"({codec.sample_rate} Hz audio)")

    def reconstruct(self, path: Optional[str], label: str, num_codebooks: Optional[float] = None,
                    progress: Optional[Callable] = None) -> CodecResult:
        """Encode and decode one clip; spectrograms, token map and scores."""
        from audiocodec.metrics.signal import score_pair
        step = progress or (lambda *a, **k: None)
        step(0.0, desc="Reading the clip")
        wav, sr = load_clip(path, "audio")
        step(0.1, desc="Loading the codec")
        codec = self.codec(label)
        spec = self.choices[label]
        step(0.2, desc="Encoding and decoding")
        with self.codecs.lock(spec), torch.inference_mode():
            k = int(min(max(1, int(num_codebooks or codec.max_codebooks)), codec.max_codebooks))
            if codec.max_codebooks > 1:
                codec.set_num_codebooks(k)
            t0 = time.perf_counter()
            codes = codec.encode(wav.to(codec.device), sr)
            t1 = time.perf_counter()
            out = codec.decode(codes)[0]
            if out.is_cuda:
                torch.cuda.synchronize(out.device)        # time the work, not the kernel launches
            t2 = time.perf_counter()
            bitrate = codec.bitrate
        rate = codec.sample_rate
        original = audio_utils.resample(wav.float().mean(0, keepdim=True), sr, rate)[0]
        recon = out.float().mean(0).cpu()
        n = min(original.shape[-1], recon.shape[-1])
        original, recon = original[:n].numpy(), recon[:n].numpy()
        tokens = codes.tokens[0, :, : int(codes.lengths[0])].cpu().numpy()
        step(0.6, desc="Scoring (PESQ, STOI, mel distance)")
        scores, notes = score_pair(original, recon, rate, metrics=["pesq", "stoi", "mel_distance"])
        step(0.85, desc="Drawing")
        spec_o, top = spectrogram_image(original, rate)
        spec_r, _ = spectrogram_image(recon, rate, top_db=top)
        seconds = n / rate
        counts = [np.bincount(row, minlength=codec.cardinality) for row in tokens]
        entropy = float(np.mean([-(p[p > 0] * np.log2(p[p > 0])).sum() for p in (c / c.sum() for c in counts)]))
        stats = {"model": label, "codec": codec.name, "sample_rate": rate, "frame_rate": codec.frame_rate,
                 "num_codebooks": int(tokens.shape[0]), "max_codebooks": codec.max_codebooks,
                 "cardinality": codec.cardinality, "bitrate_kbps": bitrate / 1000, "seconds": seconds,
                 "frames": int(tokens.shape[1]), "unique_tokens": int(len(np.unique(tokens))),
                 "entropy_bits": entropy, "encode_s": t1 - t0, "decode_s": t2 - t1,
                 "rtf": (t2 - t0) / max(seconds, 1e-9), "device": str(codec.device), **scores}
        step(1.0, desc="Done")
        return CodecResult(rate, original, recon, tokens, spec_o, spec_r, token_image(tokens, codec.cardinality),
                           stats, notes)

    @staticmethod
    def stats_markdown(r: CodecResult) -> str:
        s = r.stats
        rows = [
            ("Bitrate", f"{s['bitrate_kbps']:.2f} kbps ({s['num_codebooks']} of {s['max_codebooks']} codebook(s) "
                        f"x {math.log2(s['cardinality']):g} bits)"),
            ("Frame rate", f"{s['frame_rate']:g} frames/s, {s['frames']} frames for {s['seconds']:.2f} s"),
            ("Tokens", f"{s['unique_tokens']} distinct ids of {s['cardinality']}; "
                       f"{s['entropy_bits']:.2f} bits/token empirical entropy"),
            ("PESQ-wb", _fmt(s["pesq"], 2) + " (1.04 .. 4.64, higher is better)"),
            ("STOI", _fmt(s["stoi"], 3) + " (0 .. 1, higher is better)"),
            ("Mel distance", _fmt(s["mel_distance"], 3) + " (lower is better)"),
            ("Speed", f"encode {s['encode_s'] * 1000:.0f} ms + decode {s['decode_s'] * 1000:.0f} ms on "
                      f"{s['device']} (real-time factor {s['rtf']:.3f})"),
        ]
        table = "| Measure | Value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
        notes = "".join(f"\n* {k}: {v}" for k, v in r.notes.items())
        return f"**{s['model']}** ({s['codec']}, {s['sample_rate']} Hz)\n\n{table}{notes}"

    def reconstruct_ui(self, path, label, num_codebooks, progress=None):
        """The Codec tab's handler: (original, reconstruction, spectrogram x2, token map, scores)."""
        try:
            r = self.reconstruct(path, label, num_codebooks, progress=progress)
        except AudioCodecError as e:                              # anything the library rejects
            raise _error(f"Cannot code this clip: {e}. Try another clip or model.") from None
        return ((r.sample_rate, to_int16(r.original)), (r.sample_rate, to_int16(r.reconstruction)),
                r.spectrogram_original, r.spectrogram_reconstruction, r.token_map, self.stats_markdown(r))

    # -- speech tab ------------------------------------------------------------------------------------
    def speak(self, text: str, voice: Optional[str] = None, voice_text: Optional[str] = None,
              temperature: float = 1.0, top_k: Optional[float] = 25, top_p: Optional[float] = 0.8,
              greedy: bool = False, seed: Optional[float] = None, stream: Optional[bool] = None,
              min_interval: float = 0.5) -> Iterator[tuple[Any, str]]:
        """Text to speech, as a generator of ``(audio, status)``.

        With ``stream=True`` (gradio's streamed output, needs ffmpeg) each ``audio`` is a new chunk
        ``(rate, int16 [n])``; otherwise it is all the audio so far, yielded at most every ``min_interval``
        seconds and once more at the end."""
        text = (text or "").strip()
        if not text:
            raise _error("Type some text to speak first.")
        if len(text) > MAX_TEXT_CHARS:
            raise _error(f"The text has {len(text)} characters; the demo speaks up to {MAX_TEXT_CHARS}. "
                         "Shorten it.")
        if not (0.05 <= float(temperature) <= 5.0):
            raise _error("Temperature must be between 0.05 and 5.")
        voice_text = (voice_text or "").strip() or None
        tts = self.tts()
        prompt = None
        if voice is not None:   # with its transcript the model continues it; without, it is a speaker prompt
            wav, sr = load_clip(voice, "reference voice", max_seconds=MAX_VOICE_SECONDS)
            prompt = audio_utils.resample(wav.mean(0, keepdim=True), sr, tts.sample_rate)
        elif voice_text:
            raise _error("A reference transcript was given without a reference voice: upload the clip it "
                         "belongs to, or clear the transcript.")
        stream = self.stream_speech if stream is None else stream
        options = dict(temperature=float(temperature), top_k=int(top_k) if top_k else None,
                       top_p=float(top_p) if top_p and float(top_p) < 1.0 else None, greedy=bool(greedy),
                       seed=None if seed is None or int(seed) < 0 else int(seed))
        timings: dict = {}
        rate = tts.sample_rate
        try:
            chunks = tts.synthesize(text, voice=prompt, voice_text=voice_text, stream=True, timings=timings,
                                    **options)
            pieces: list[np.ndarray] = []
            last = 0.0
            sent = 0
            for chunk in chunks:
                pieces.append(to_int16(chunk))
                samples = sum(len(p) for p in pieces)
                status = (f"First audio after **{timings.get('first_chunk_s', 0.0):.2f} s**; "
                          f"{samples / rate:.1f} s of speech so far...")
                now = time.perf_counter()
                if stream:
                    yield (rate, pieces[-1]), status
                elif sent == 0 or now - last >= min_interval:
                    yield (rate, np.concatenate(pieces)), status
                    last, sent = now, len(pieces)
        except AudioCodecError as e:
            raise _error(f"Cannot speak this text: {e}. Change the text or the settings and try again.") from None
        if not pieces:
            raise _error("The model produced no audio for this text; try other wording or sampling settings.")
        total = sum(len(p) for p in pieces) / rate
        status = (f"First audio after **{timings.get('first_chunk_s', 0.0):.2f} s**; {total:.2f} s of speech in "
                  f"{timings.get('total_s', 0.0):.2f} s (real-time factor "
                  f"{timings.get('total_s', 0.0) / max(total, 1e-9):.2f}) on {tts.device}")
        if stream:
            yield None, status
        else:
            yield (rate, np.concatenate(pieces)), status

    def tts_info(self) -> str:
        if self.tts_path is None:
            return "No TTS model loaded (start the demo with `--tts-model PATH`)."
        tts = self.tts()
        model = tts.model
        params = sum(p.numel() for p in model.parameters())
        info = model.codec_info
        text = model.text_config
        tok = text.get("tokenizer", {})
        tok = tok.get("type", tok) if isinstance(tok, dict) else tok
        lm = model.lm_config
        rows = [("model", f"`{self.tts_path}`"), ("sample rate", f"{tts.sample_rate} Hz"),
                ("parameters", f"{params / 1e6:.2f} M"),
                ("codec", f"{tts.codec.name} (`{info.get('source') or info.get('model_id')}`, fingerprint "
                          f"{tts.codec.fingerprint()}, {tts.codec.frame_rate:g} tokens/s)"),
                ("language model", ", ".join(f"{k} {lm[k]}" for k in ("dim", "num_layers", "num_heads") if k in lm)
                 or "n/a"),
                ("text tokenizer", str(tok or "n/a")), ("device", str(tts.device))]
        table = "| TTS | |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
        from audiocodec.codecs.embedded import embedded_name
        name = embedded_name(self.tts_path)
        card = audiocodec.model_card(name) if name else None
        return table + ("\n" + _card_section(card) if card else "")

    # -- song tab --------------------------------------------------------------------------------------
    def sing(self, lyrics: str, description: str = "", voice: Optional[str] = None, mode: Optional[str] = None,
             duration: float = 10.0, cfg_scale: float = 3.0, seed: Optional[float] = None, progress=None):
        """Lyrics (+ description, reference voice) to a song: ``(mixture, vocal, accompaniment, status)``."""
        step = progress or (lambda *a, **k: None)
        status = self.song_status()
        if status:
            raise _error(status)
        lyrics = (lyrics or "").strip()
        if not lyrics:
            raise _error("Type some lyrics first.")
        if len(lyrics) > MAX_LYRICS_CHARS:
            raise _error(f"The lyrics have {len(lyrics)} characters; the demo takes up to {MAX_LYRICS_CHARS}.")
        if not (1.0 <= float(duration) <= 60.0):
            raise _error("Duration must be between 1 and 60 seconds.")
        step(0.05, desc="Loading the song model")
        gen = self.song()
        prompt = None
        if voice is not None:
            wav, sr = load_clip(voice, "reference voice", max_seconds=MAX_VOICE_SECONDS)
            rate = int(getattr(gen, "sample_rate", sr))
            prompt = audio_utils.resample(wav.mean(0, keepdim=True), sr, rate)
        step(0.1, desc="Generating the song")
        t0 = time.perf_counter()
        try:
            result = _call_with_supported(gen.generate, {
                "lyrics": (("lyrics",), lyrics),
                "description": (("description", "prompt", "text"), (description or "").strip() or None),
                "voice": (("voice", "reference_voice", "reference", "voice_prompt"), prompt),
                "mode": (("mode",), mode or None),
                "duration": (("duration", "seconds", "max_seconds", "duration_s"), float(duration)),
                "cfg": (("cfg_scale", "cfg", "guidance_scale", "cfg_coef"), float(cfg_scale)),
                "seed": (("seed",), None if seed is None or int(seed) < 0 else int(seed)),
            })
            rate, mixture, stems = song_outputs(result, int(getattr(gen, "sample_rate", 0) or 0))
        except AudioCodecError as e:
            raise _error(f"Cannot make this song: {e}. Change the inputs or the settings and try again.") from None
        if rate <= 0:
            raise _error("The song generator did not say its sample rate.")
        seconds = len(mixture) / rate
        vocal = stems.get("vocal", stems.get("vocals"))
        accomp = stems.get("accompaniment", stems.get("instrumental"))
        step(1.0, desc="Done")
        text = (f"{seconds:.1f} s of song in {time.perf_counter() - t0:.1f} s"
                + ("" if stems else "; this model makes the mixture only (no stems)"))
        return ((rate, to_int16(mixture)), None if vocal is None else (rate, to_int16(vocal)),
                None if accomp is None else (rate, to_int16(accomp)), text)

    # -- about tab -------------------------------------------------------------------------------------
    def about_markdown(self) -> str:
        gr = _gr()
        parts = ["## Codecs", "Models offered in the Codec tab:\n"
                 + "".join(f"* `{label}`\n" for label in self.choices)]
        for name in audiocodec.list_embedded():
            card = audiocodec.model_card(name)
            if card:
                parts.append(_card_section(card))
        parts += ["## Text to speech", self.tts_info(), "## Song", self.song_info(),
                  "## Runtime", f"audiocodec {audiocodec.__version__}, torch {torch.__version__}, gradio "
                  f"{gr.__version__}, device {self.device}; temporary files in `{self.workdir}` (removed "
                  "when the app stops)."]
        return "\n\n".join(parts)


def _card_section(card: str) -> str:
    """A model card's Markdown with its top-level headings made level 3, to sit inside the About page."""
    return card.replace("\n# ", "\n### ").replace("# ", "### ", 1) if card.startswith("# ") else card


# -- examples --------------------------------------------------------------------------------------

EXAMPLE_SENTENCE = "The quick brown fox jumps over the lazy dog."


def example_clips(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Example clips for the Codec tab: the files in ``demos/examples``; when there are none, a sentence
    spoken by espeak-ng (if installed) is rendered there first."""
    files = sorted(str(p) for p in folder.glob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    if files or shutil.which("espeak-ng") is None:
        return files
    try:
        import random
        from audiocodec.data.synth import Voice, render_speech
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "speech.wav"
        render_speech(Voice("demo", "en-us", None, pitch=50, speed=165, amplitude=120, gap=0), EXAMPLE_SENTENCE,
                      out, random.Random(0))
        return [str(out)]
    except Exception as e:  # noqa: BLE001 - examples are a convenience; the page works without them
        print(f"warning: could not render an example clip: {e}", file=sys.stderr)
        return []


SPEECH_EXAMPLES = ["Hello! This sentence was written as text a moment ago.",
                   "The sea is calm tonight, and the boats are home.",
                   "Six green boxes sit by the door."]

CSS = """
#codec-stats table {width: 100%}
.spectrogram img, .tokens img {image-rendering: pixelated}
"""


def _theme():
    gr = _gr()
    # system fonts only: the page must not wait on font servers when it runs offline
    return gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


# -- the page --------------------------------------------------------------------------------------

def build_app(model_dir: Optional[str] = None, tts_model: Optional[str] = None, song_model: Optional[str] = None,
              random_configs: bool = False, device: str = "auto", temp_dir: Optional[str] = None,
              speech_output: str = "auto", demo: Optional[Demo] = None):
    """The demo's ``gr.Blocks`` (queued, not launched). Its ``demo`` attribute is the :class:`Demo` whose
    methods are the handlers; ``app.demo.close()`` removes the temporary folder."""
    demo = demo or Demo(model_dir, tts_model, song_model, random_configs, device, temp_dir, speech_output)
    gr = _gr()
    k_max, k_value, bitrate = demo.codec_controls(demo.default_label)
    if demo.song_path and demo.song_status() is None:
        demo.song()                                     # load now: the Song tab lists the model's modes
    examples = example_clips()

    def run_codec(path, label, k, progress=gr.Progress()):
        return demo.reconstruct_ui(path, label, k, progress=progress)

    def update_model(label, k):
        k_max, k, text = demo.codec_controls(label, k)
        return gr.update(maximum=max(2, k_max), value=k, visible=k_max > 1), text

    def run_speech(text, voice, voice_text, temperature, top_k, top_p, greedy, seed):
        yield from demo.speak(text, voice, voice_text, temperature, top_k, top_p, greedy, seed)

    def run_song(lyrics, description, voice, mode, duration, cfg, seed, progress=gr.Progress()):
        return demo.sing(lyrics, description, voice, mode, duration, cfg, seed, progress=progress)

    with gr.Blocks(title="audiocodec demo", delete_cache=(600, 3600)) as app:
        gr.Markdown("# audiocodec\nNeural audio codecs and the generative models built on their tokens.")
        with gr.Tabs():
            with gr.Tab("Codec", id="codec"):
                gr.Markdown("Encode a clip to tokens and decode it back. Up to "
                            f"{MAX_SECONDS:.0f} s and {MAX_UPLOAD_MB} MB; any sample rate, mixed to mono.")
                with gr.Row():
                    with gr.Column(scale=1):
                        audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Input audio",
                                            elem_id="codec-input")
                        model = gr.Dropdown(list(demo.choices), value=demo.default_label, label="Model",
                                            elem_id="codec-model")
                        k = gr.Slider(1, max(2, k_max), value=k_value, step=1, visible=k_max > 1,
                                      label="Codebooks (bitrate of RVQ codecs)", elem_id="codec-k")
                        bitrate_md = gr.Markdown(bitrate, elem_id="codec-bitrate")
                        run = gr.Button("Reconstruct", variant="primary", elem_id="codec-run")
                    with gr.Column(scale=2):
                        with gr.Row():
                            orig_out = gr.Audio(label="Original (as the codec hears it)", interactive=False,
                                                elem_id="codec-original")
                            recon_out = gr.Audio(label="Reconstruction", interactive=False, elem_id="codec-recon")
                        with gr.Row():
                            spec_o = gr.Image(label="Spectrogram: original", interactive=False, type="numpy",
                                              elem_id="codec-spec-original", elem_classes="spectrogram")
                            spec_r = gr.Image(label="Spectrogram: reconstruction", interactive=False, type="numpy",
                                              elem_id="codec-spec-recon", elem_classes="spectrogram")
                        tokens = gr.Image(label="Tokens (rows: codebooks; columns: frames; colour: token id)",
                                          interactive=False, type="numpy", elem_id="codec-tokens",
                                          elem_classes="tokens")
                        stats = gr.Markdown(elem_id="codec-stats")
                if examples:
                    gr.Examples([[p] for p in examples], inputs=[audio_in], label="Example clips")
                model.change(update_model, [model, k], [k, bitrate_md])
                k.change(demo.bitrate_text, [model, k], bitrate_md)
                run.click(run_codec, [audio_in, model, k], [orig_out, recon_out, spec_o, spec_r, tokens, stats],
                          concurrency_limit=2)

            with gr.Tab("Speech", id="speech"):
                if demo.tts_path is None:
                    gr.Markdown("**No TTS model loaded**: start the demo with `--tts-model PATH`.")
                with gr.Row():
                    with gr.Column():
                        text = gr.Textbox(label="Text", lines=3, max_length=MAX_TEXT_CHARS,
                                          placeholder="Type what to say", elem_id="speech-text")
                        with gr.Accordion("Reference voice (optional: voice cloning)", open=False):
                            voice = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                             label=f"Reference voice (up to {MAX_VOICE_SECONDS:.0f} s)",
                                             elem_id="speech-voice")
                            voice_text = gr.Textbox(label="What the reference voice says (optional: closer voice)",
                                                    elem_id="speech-voice-text")
                        with gr.Accordion("Sampling", open=False):
                            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                            top_k = gr.Slider(0, 200, value=25, step=1, label="Top-k (0 = off)")
                            top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Top-p (1 = off)")
                            greedy = gr.Checkbox(False, label="Greedy (deterministic, ignores the above)")
                            seed = gr.Number(-1, precision=0, label="Seed (-1 = random)")
                        speak_btn = gr.Button("Speak", variant="primary", elem_id="speech-run")
                    with gr.Column():
                        speech_out = gr.Audio(label="Speech", streaming=demo.stream_speech, autoplay=True,
                                              interactive=False, elem_id="speech-output")
                        speech_status = gr.Markdown(elem_id="speech-status")
                gr.Examples([[s] for s in SPEECH_EXAMPLES], inputs=[text], label="Example texts")
                speak_btn.click(run_speech, [text, voice, voice_text, temperature, top_k, top_p, greedy, seed],
                                [speech_out, speech_status], concurrency_limit=1)

            with gr.Tab("Song", id="song"):
                song_msg = demo.song_status()
                gr.Markdown(f"**{song_msg}**" if song_msg else f"Song model: `{demo.song_path}`",
                            elem_id="song-status-top")
                ready = song_msg is None
                with gr.Row():
                    with gr.Column():
                        lyrics = gr.Textbox(label="Lyrics", lines=6, max_length=MAX_LYRICS_CHARS, interactive=ready)
                        description = gr.Textbox(label="Description (genre, mood, instruments, voice)",
                                                 interactive=ready)
                        song_voice = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                              label="Reference voice (optional)", interactive=ready)
                        modes = demo.song_modes()
                        mode = gr.Dropdown(modes, value=modes[0], label="Mode", interactive=ready)
                        duration = gr.Slider(5, 30, value=10, step=1, label="Duration (s)", interactive=ready)
                        cfg = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="CFG scale (1 = no guidance)",
                                        interactive=ready)
                        song_seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", interactive=ready)
                        sing_btn = gr.Button("Generate song", variant="primary", interactive=ready)
                    with gr.Column():
                        mixture = gr.Audio(label="Mixture", interactive=False)
                        vocal = gr.Audio(label="Stem: vocal", interactive=False)
                        accomp = gr.Audio(label="Stem: accompaniment", interactive=False)
                        song_status = gr.Markdown()
                sing_btn.click(run_song, [lyrics, description, song_voice, mode, duration, cfg, song_seed],
                               [mixture, vocal, accomp, song_status], concurrency_limit=1)

            with gr.Tab("About", id="about"):
                gr.Markdown(demo.about_markdown(), elem_id="about")
    app.queue(max_size=QUEUE_SIZE)
    app.demo = demo
    return app


def launch_kwargs(demo: Demo) -> dict:
    """What :func:`main` passes to ``launch`` besides the server address."""
    return dict(max_file_size=f"{MAX_UPLOAD_MB}mb", allowed_paths=[str(EXAMPLES_DIR)], theme=_theme(), css=CSS,
                show_error=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="add every checkpoint under DIR to the codec list")
    p.add_argument("--tts-model", default=None,
                   help="a TTS model folder (or file) for the Speech tab (default: the embedded tts-mini)")
    p.add_argument("--song-model", default=None, help="a song model for the Song tab (default: the embedded song-mini)")
    p.add_argument("--random-configs", action="store_true",
                   help="also list every named codec config with RANDOM weights (for trying the page only)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--temp-dir", default=None, help="where the app's temporary folder is made (default: system)")
    p.add_argument("--speech-output", default="auto", choices=["auto", "stream", "progressive"],
                   help="stream: audio chunks played as they come (needs ffmpeg); progressive: the growing audio "
                        "re-sent every ~0.5 s; auto: stream when ffmpeg is installed")
    p.add_argument("--server-name", default="127.0.0.1")
    p.add_argument("--server-port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    args = p.parse_args(argv)
    demo = None
    try:
        demo = Demo(args.model_dir, args.tts_model, args.song_model, args.random_configs, args.device,
                    args.temp_dir, args.speech_output)
        print(f"loading models on {demo.device} ...", flush=True)
        demo.codec(demo.default_label)                  # load once up front: the first request is fast
        if demo.tts_path:
            demo.tts()
        if demo.song_path and demo.song_status() is None:
            demo.song()
        app = build_app(demo=demo)
    except (AudioCodecError, _gr().Error) as e:
        if demo is not None:
            demo.close()
        print(f"error: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 2
    print(f"temporary files: {demo.workdir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # a plain kill also removes the temporary folder
    try:
        app.launch(server_name=args.server_name, server_port=args.server_port, share=args.share,
                   **launch_kwargs(demo))
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
