"""Audio I/O and conversions: load / save with soundfile, resample with torchaudio,
channel conversion, peak and loudness normalisation, and input validation.

Waveforms are float32 tensors shaped ``[C, L]`` (channels, samples) unless stated otherwise.
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import AudioError

PathLike = Union[str, os.PathLike]

#: Sample rates outside this range are refused as impossible.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


def check_sample_rate(sample_rate) -> int:
    """Return ``sample_rate`` as an int, or raise AudioError if it is not a plausible rate."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise AudioError(f"sample rate must be a number of Hz, got {sample_rate!r}")
    if not math.isfinite(float(sample_rate)) or float(sample_rate) != int(sample_rate):
        raise AudioError(f"sample rate must be a whole number of Hz, got {sample_rate!r}")
    sr = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"impossible sample rate {sr} Hz: expected between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
        )
    return sr


def check_finite(wav: torch.Tensor, what: str = "audio") -> torch.Tensor:
    """Raise AudioError if ``wav`` holds NaN or infinite samples; return it unchanged otherwise."""
    if not torch.isfinite(wav).all():
        bad = (~torch.isfinite(wav)).sum().item()
        kind = "NaN" if torch.isnan(wav).any() else "infinite"
        raise AudioError(f"{what} contains {bad} {kind} sample(s); clean or drop this input")
    return wav


def load_audio(
    path: PathLike,
    sample_rate: Optional[int] = None,
    channels: Optional[int] = None,
    offset: float = 0.0,
    duration: Optional[float] = None,
) -> tuple[torch.Tensor, int]:
    """Read any file soundfile reads (wav, flac, ogg, mp3, ...).

    Args:
        path: audio file.
        sample_rate: resample to this rate when given.
        channels: convert to this many channels when given (see :func:`convert_channels`).
        offset, duration: seconds to skip and to read (``None`` reads to the end).

    Returns:
        ``(wav [C, L] float32, sample_rate)``.

    Raises:
        AudioError: missing, unreadable or empty file; NaN/inf samples; bad sample rate.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr = f.samplerate
            start = int(round(offset * file_sr))
            frames = -1 if duration is None else int(round(duration * file_sr))
            if start:
                f.seek(min(start, f.frames))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"cannot read audio file {path}: {e}. Is it a valid wav/flac/ogg/mp3 file?") from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file holds no samples: {path}")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    check_finite(wav, f"audio file {path}")
    file_sr = check_sample_rate(file_sr)
    if channels is not None:
        wav = convert_channels(wav, channels)
    if sample_rate is not None and sample_rate != file_sr:
        wav = resample(wav, file_sr, sample_rate)
        file_sr = int(sample_rate)
    return wav, file_sr


def save_audio(path: PathLike, wav: torch.Tensor, sample_rate: int, subtype: Optional[str] = None) -> Path:
    """Write ``wav`` ([L] or [C, L]) to ``path``; the format follows the extension (wav default PCM_16).

    Samples are clipped to [-1, 1] for integer and companded formats. The parent folder is created.
    The file is written to a temporary name and renamed, so a crash never leaves half a file; a subtype
    that cannot hold exactly ``L`` samples (block-based ADPCM, GSM) is refused rather than padded.
    """
    path = Path(path)
    sample_rate = check_sample_rate(sample_rate)
    wav = torch.as_tensor(wav).detach().float().cpu()
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise AudioError(f"save_audio expects [L] or [C, L], got shape {tuple(wav.shape)}")
    check_finite(wav, "audio to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _format_for(path)
    if subtype is None and fmt == "WAV":
        subtype = "PCM_16"
    effective = subtype or sf.default_subtype(fmt)
    if effective not in _UNCLIPPED_SUBTYPES:
        # integer and companded encodings (PCM, ULAW, ALAW, ADPCM...) wrap values beyond full scale around
        wav = wav.clamp(-1.0, 1.0)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        try:
            sf.write(str(tmp), wav.numpy().T, sample_rate, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:  # e.g. a subtype and channel count
            raise AudioError(f"cannot write {path} as {fmt} {effective} ({wav.shape[0]} channel(s) at "
                             f"{sample_rate} Hz): {e}") from e
        if effective not in _LOSSY_SUBTYPES:
            frames = sf.info(str(tmp)).frames
            if frames != wav.shape[-1]:  # block-based encodings pad; some 8-bit AIFF files gain a sample
                raise AudioError(f"cannot write {wav.shape[-1]} samples exactly as {fmt} {effective}: the file would "
                                 f"hold {frames}; use PCM_16, PCM_24 or FLOAT")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


#: Subtypes that store values beyond [-1, 1] (floats, and lossy codecs that decode to floats).
_UNCLIPPED_SUBTYPES = ("FLOAT", "DOUBLE", "VORBIS", "OPUS")
#: Lossy codecs: their length is the encoder's business (encoder delay, frames), not checked on write.
_LOSSY_SUBTYPES = ("VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    formats = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "opus": "OGG", "mp3": "MP3", "aiff": "AIFF",
               "aif": "AIFF", "au": "AU"}
    if ext not in formats:
        raise AudioError(f"cannot write audio with extension '.{ext}': use one of {sorted(formats)}")
    return formats[ext]


#: Largest sinc kernel (values) torchaudio may build; it holds ``up * (down + 2 * width)`` values for the ratio
#: ``up / down`` in lowest terms, so rates without a large common divisor (22051 Hz -> 24 kHz) would need gigabytes.
MAX_SINC_KERNEL = 2 ** 22


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample along the last axis to ``ceil(L * target_sr / orig_sr)`` samples: torchaudio's band-limited sinc
    interpolation, or, for rates whose ratio has large terms (odd rates such as 22051 Hz, where torchaudio's
    kernel would take gigabytes and hours), scipy's polyphase filter (no autograd)."""
    orig_sr, target_sr = check_sample_rate(orig_sr), check_sample_rate(target_sr)
    if orig_sr == target_sr:
        return wav
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    width = math.ceil(6 * down / (min(up, down) * 0.99))  # torchaudio's lowpass_filter_width=6, rolloff=0.99
    if up * (down + 2 * width) <= MAX_SINC_KERNEL:
        return AF.resample(wav, orig_sr, target_sr)
    from scipy.signal import resample_poly
    out = resample_poly(wav.detach().cpu().double().numpy(), up, down, axis=-1)
    return torch.from_numpy(out).to(dtype=wav.dtype, device=wav.device)


def convert_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``wav [..., C, L]`` to ``channels`` channels.

    Down-mixing to mono averages the channels; mono is repeated to any count; other
    conversions are refused, since there is no single right way to make them.
    """
    if channels < 1:
        raise AudioError(f"channel count must be >= 1, got {channels}")
    c = wav.shape[-2]
    if c == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if c == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).contiguous()
    raise AudioError(f"cannot convert {c} channels to {channels}: only down-mix to mono or up-mix from mono")


def normalize_peak(wav: torch.Tensor, peak_db: float = -1.0) -> torch.Tensor:
    """Scale so the largest absolute sample is ``peak_db`` dBFS. Silence is returned unchanged."""
    peak = wav.abs().amax(dim=(-2, -1), keepdim=True) if wav.dim() >= 2 else wav.abs().max()
    target = 10 ** (peak_db / 20)
    return torch.where(peak > 0, wav * (target / peak.clamp_min(1e-12)), wav)


def loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness of ``wav [C, L]`` in LUFS (ITU-R BS.1770, via torchaudio)."""
    wav = torch.as_tensor(wav).float()
    if wav.dim() == 1:
        wav = wav[None]
    return float(AF.loudness(wav, check_sample_rate(sample_rate)))


def normalize_loudness(wav: torch.Tensor, sample_rate: int, target_lufs: float = -23.0,
                       max_peak: float = 0.999) -> torch.Tensor:
    """Scale ``wav [C, L]`` to ``target_lufs`` LUFS, then limit the peak to ``max_peak`` to avoid clipping.

    Clips too short for a loudness measurement (< 0.4 s) or silent are returned unchanged.
    """
    if wav.shape[-1] < int(0.4 * sample_rate):
        return wav
    current = loudness(wav, sample_rate)
    if not math.isfinite(current):
        return wav
    out = wav * (10 ** ((target_lufs - current) / 20))
    peak = out.abs().max()
    if peak > max_peak:
        out = out * (max_peak / peak)
    return out


def list_audio_files(root: PathLike) -> list[Path]:
    """All audio files under ``root`` (recursively), sorted; ``root`` may also be a single file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise AudioError(f"no such file or folder: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
