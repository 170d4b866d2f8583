"""Signal metrics between a reference and a hypothesis (e.g. a codec's reconstruction).

Every metric takes mono signals shaped ``[..., L]`` (a numpy array or a torch tensor; any leading batch
shape, same shape for reference and hypothesis) at one sample rate in Hz, and returns a float64 numpy
array shaped ``[...]`` (a 0-d array for a single pair). Use :func:`prepare_pair` (single files: channel
mix, resampling of the hypothesis to the reference rate, trimming to the shorter) or :func:`align`
(batches already at one rate) first.

=================  ===========================================================  =====================
metric             definition                                                   better
=================  ===========================================================  =====================
``pesq``           ITU-T P.862.2 wide-band PESQ (MOS-LQO, 1.04 .. 4.64) at       higher
                   16 kHz (``pesq`` package); NaN with a reason when undefined
``stoi``           STOI (Taal 2011) / ``estoi``: extended STOI (Jensen 2016),    higher
                   ``pystoi`` (0 .. 1; resampled to 10 kHz inside pystoi)
``si_sdr``         scale-invariant SDR in dB (Le Roux 2019), zero-mean signals   higher
``mel_distance``   mean |log mel(ref) - log mel(hyp)| (natural log of a          lower
                   magnitude mel spectrogram, clamped at 1e-5)
``stft_distance``  multi-resolution STFT distance: mean over resolutions of      lower
                   spectral convergence + mean |log |S_ref| - log |S_hyp||
``vuv_f1``         F1 of the hypothesis' voiced/unvoiced frame decisions         higher
                   against the reference's (voiced = positive class), see
                   :func:`voicing`
=================  ===========================================================  =====================

``pesq`` and ``stoi`` need the optional packages ``pesq`` and ``pystoi`` (``pip install pesq pystoi``).
Undefined values are NaN, never an exception: functions accepting ``return_reasons=True`` also return
one reason string (or ``None``) per item, and log it on the ``audiocodec.metrics`` logger.
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import audio as audio_utils
from ..errors import AudioError, ConfigError

logger = logging.getLogger("audiocodec.metrics")

ArrayLike = Union[np.ndarray, torch.Tensor]

PESQ_SAMPLE_RATE = 16000
#: Largest wide-band PESQ score (identical signals).
PESQ_WB_MAX = 4.644
#: Peak absolute amplitude at or below which a signal counts as digital silence.
SILENCE_PEAK = 1e-8


# -- shapes and alignment ------------------------------------------------------------------------

def _tensor(x: ArrayLike, what: str = "signal") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise AudioError(f"expected the {what} as a numpy array or torch tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise AudioError(f"expected floating-point {what} samples, got {x.dtype}")
    if x.dim() == 0:
        raise AudioError(f"expected the {what} shaped [..., L], got a scalar")
    return x.detach().cpu()


def _pair(ref: ArrayLike, hyp: ArrayLike, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Both signals as ``[N, L]`` tensors of ``dtype``, plus the batch shape ``[...]``."""
    r, h = _tensor(ref, "reference"), _tensor(hyp, "hypothesis")
    if r.shape != h.shape:
        raise AudioError(f"reference {tuple(r.shape)} and hypothesis {tuple(h.shape)} differ in shape: "
                         "align them first (audiocodec.metrics.align / prepare_pair)")
    if r.shape[-1] == 0:
        raise AudioError("signals are empty (0 samples)")
    audio_utils.check_finite(r, "reference")
    audio_utils.check_finite(h, "hypothesis")
    batch = tuple(r.shape[:-1])
    return r.reshape(-1, r.shape[-1]).to(dtype), h.reshape(-1, h.shape[-1]).to(dtype), batch


def align(ref: ArrayLike, hyp: ArrayLike, ref_sample_rate: Optional[int] = None,
          hyp_sample_rate: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``hyp [..., L2]`` to ``ref_sample_rate`` (when both rates are given and differ), then trim
    both to the shorter length. Returns float32 tensors ``(ref [..., L], hyp [..., L])``."""
    r, h = _tensor(ref, "reference").float(), _tensor(hyp, "hypothesis").float()
    if ref_sample_rate is not None and hyp_sample_rate is not None and ref_sample_rate != hyp_sample_rate:
        h = audio_utils.resample(h, hyp_sample_rate, ref_sample_rate)
    n = min(r.shape[-1], h.shape[-1])
    return r[..., :n], h[..., :n]


def to_mono(wav: ArrayLike) -> torch.Tensor:
    """``[L]`` or ``[C, L]`` -> ``[L]`` (channels averaged), float32."""
    x = _tensor(wav).float()
    if x.dim() == 1:
        return x
    if x.dim() == 2:
        return x.mean(0)
    raise AudioError(f"expected one signal shaped [L] or [C, L], got {tuple(x.shape)}")


def prepare_pair(ref: ArrayLike, ref_sample_rate: int, hyp: ArrayLike,
                 hyp_sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One reference and one hypothesis (``[L]`` or ``[C, L]`` each) -> mono ``(ref [L], hyp [L],
    ref_sample_rate)``: channels averaged, the hypothesis resampled to the reference's rate, both trimmed
    to the shorter length."""
    r, h = align(to_mono(ref), to_mono(hyp), ref_sample_rate, hyp_sample_rate)
    return r, h, int(ref_sample_rate)


def is_silent(x: ArrayLike) -> np.ndarray:
    """``[..., L]`` -> bool ``[...]``: peak amplitude at most :data:`SILENCE_PEAK` (digital silence)."""
    t = _tensor(x)
    return (t.abs().amax(-1) <= SILENCE_PEAK).numpy()


def _out(values, batch: tuple) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(batch)


def _note(metric: str, index: int, n: int, reason: str) -> str:
    where = f" (item {index})" if n > 1 else ""
    logger.warning("%s is NaN%s: %s", metric, where, reason)
    return reason


# -- PESQ / STOI ------------------------------------------------------------------------------------

def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(f"the '{module}' package is needed for this metric: pip install {module} "
                          "(or leave the metric out with --metrics / metrics=)") from e


def pesq_wb(ref: ArrayLike, hyp: ArrayLike, sample_rate: int, return_reasons: bool = False):
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO from 1.04 to 4.64).

    Args:
        ref, hyp: ``[..., L]`` mono signals at ``sample_rate`` Hz (resampled to 16 kHz here).
        return_reasons: also return a list (flattened batch order) of ``None`` or why an item is NaN.

    Returns:
        ``[...]`` float64 scores; NaN where PESQ is undefined (silent reference, no utterance found,
        shorter than 0.25 s, ...), with the reason logged. A silent hypothesis against a non-silent
        reference is scored (near the 1.04 floor) with -180 dBFS of dither, since PESQ divides by zero
        on exact zeros.
    """
    pesq_mod = _require("pesq")
    r, h, batch = _pair(ref, hyp)
    sample_rate = audio_utils.check_sample_rate(sample_rate)
    r16, h16 = (audio_utils.resample(x, sample_rate, PESQ_SAMPLE_RATE).numpy().astype(np.float32) for x in (r, h))
    scores, reasons = [], []
    for i in range(r16.shape[0]):
        score, reason = _pesq_one(pesq_mod, r16[i], h16[i])
        if reason is not None and math.isnan(score):
            _note("PESQ", i, r16.shape[0], reason)
        scores.append(score)
        reasons.append(reason)
    out = _out(scores, batch)
    return (out, reasons) if return_reasons else out


def _pesq_one(pesq_mod, ref: np.ndarray, hyp: np.ndarray) -> tuple[float, Optional[str]]:
    if np.abs(ref).max() <= SILENCE_PEAK:
        return math.nan, "reference is silent"
    if ref.shape[-1] < PESQ_SAMPLE_RATE // 4:
        return math.nan, f"too short for PESQ ({ref.shape[-1] / PESQ_SAMPLE_RATE:.3f} s < 0.25 s)"
    note = None
    if np.abs(hyp).max() <= SILENCE_PEAK:
        hyp = (1e-9 * np.random.default_rng(0).standard_normal(hyp.shape[-1])).astype(np.float32)
        note = "hypothesis is silent: scored with -180 dBFS dither"
    try:
        with np.errstate(all="ignore"):
            return float(pesq_mod.pesq(PESQ_SAMPLE_RATE, ref, hyp, "wb")), note
    except pesq_mod.NoUtterancesError:
        return math.nan, "PESQ found no utterance (speech activity) in the reference"
    except pesq_mod.BufferTooShortError:
        return math.nan, "too short for PESQ (< 0.25 s)"
    except Exception as e:  # noqa: BLE001 - the C code raises ValueError etc. on degenerate input
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        return math.nan, f"PESQ failed: {type(e).__name__}: {msg}"


def stoi(ref: ArrayLike, hyp: ArrayLike, sample_rate: int, extended: bool = False, return_reasons: bool = False):
    """Short-time objective intelligibility (``extended=True``: ESTOI), via ``pystoi``.

    Args:
        ref, hyp: ``[..., L]`` mono signals at ``sample_rate`` Hz (pystoi resamples to 10 kHz).
        extended: extended STOI (Jensen & Taal 2016), better for non-linear distortions.
        return_reasons: also return a list of ``None`` or why an item is NaN.

    Returns:
        ``[...]`` float64 in [0, 1] (ESTOI may be slightly negative); NaN for a silent reference or when
        fewer than 30 frames (~0.4 s) of the reference are above pystoi's silence threshold.
    """
    pystoi = _require("pystoi")
    r, h, batch = _pair(ref, hyp, torch.float64)
    sample_rate = audio_utils.check_sample_rate(sample_rate)
    r, h = r.numpy(), h.numpy()
    name = "ESTOI" if extended else "STOI"
    scores, reasons = [], []
    for i in range(r.shape[0]):
        reason = None
        if np.abs(r[i]).max() <= SILENCE_PEAK:
            score, reason = math.nan, "reference is silent"
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                score = float(pystoi.stoi(r[i], h[i], sample_rate, extended=extended))
            if any("Not enough STFT frames" in str(w.message) for w in caught):
                score, reason = math.nan, f"too little non-silent reference for {name} (needs ~0.4 s)"
        if reason is not None:
            _note(name, i, r.shape[0], reason)
        scores.append(score)
        reasons.append(reason)
    out = _out(scores, batch)
    return (out, reasons) if return_reasons else out


# -- SI-SDR ---------------------------------------------------------------------------------------

def si_sdr(ref: ArrayLike, hyp: ArrayLike, eps: float = 1e-10) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019).

    Both signals ``[..., L]`` are made zero-mean; ``target = <hyp, ref> / |ref|^2 * ref`` and
    ``SI-SDR = 10 log10(|target|^2 / |hyp - target|^2)``. Invariant to the scale of ``hyp``. Identical
    signals give a large finite value (``eps`` in the denominator, ~100+ dB); NaN for a silent (constant)
    reference. Returns ``[...]`` float64.
    """
    r, h, batch = _pair(ref, hyp, torch.float64)
    r = r - r.mean(-1, keepdim=True)
    h = h - h.mean(-1, keepdim=True)
    energy = (r * r).sum(-1)
    alpha = (h * r).sum(-1) / energy.clamp_min(1e-30)
    target = alpha[:, None] * r
    noise = h - target
    value = 10 * torch.log10(((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps))
    value = torch.where(energy > 0, value, torch.full_like(value, math.nan))
    return _out(value.numpy(), batch)


# -- spectral distances -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    import librosa
    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
                                                fmax=f_max)).float()


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """``[N, L]`` -> ``[N, n_fft // 2 + 1, frames]`` magnitude STFT (Hann window, centred, reflect padding;
    zero padding for signals too short to reflect)."""
    window = torch.hann_window(win, dtype=x.dtype)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    return torch.stft(x, n_fft, hop, win, window, center=True, pad_mode=pad_mode, return_complex=True).abs()


def mel_distance(ref: ArrayLike, hyp: ArrayLike, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
                 n_mels: int = 80, f_min: float = 0.0, f_max: Optional[float] = None,
                 clamp: float = 1e-5) -> np.ndarray:
    """Log-mel L1 distance: ``mean |ln max(M(ref), clamp) - ln max(M(hyp), clamp)|`` over mel bins and
    frames, where ``M`` is the magnitude (not power) mel spectrogram (Hann window ``n_fft``, hop
    ``hop_length``, Slaney mel filters from ``f_min`` to ``f_max`` (default: Nyquist)).

    ``ref, hyp [..., L]`` at ``sample_rate`` Hz (evaluate at the codec's rate). Returns ``[...]``; 0 for
    identical signals.
    """
    r, h, batch = _pair(ref, hyp)
    sample_rate = audio_utils.check_sample_rate(sample_rate)
    basis = _mel_basis(sample_rate, n_fft, n_mels, float(f_min), float(f_max or sample_rate / 2))
    with torch.no_grad():
        mr = torch.matmul(basis, _magnitude(r, n_fft, hop_length, n_fft)).clamp_min(clamp).log()
        mh = torch.matmul(basis, _magnitude(h, n_fft, hop_length, n_fft)).clamp_min(clamp).log()
        value = (mr - mh).abs().mean(dim=(-2, -1))
    return _out(value.double().numpy(), batch)


DEFAULT_STFT_RESOLUTIONS: tuple = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


def stft_distance(ref: ArrayLike, hyp: ArrayLike,
                  resolutions: Sequence[tuple[int, int, int]] = DEFAULT_STFT_RESOLUTIONS,
                  eps: float = 1e-7) -> np.ndarray:
    """Multi-resolution STFT distance (as the Parallel WaveGAN auxiliary loss).

    For each ``(n_fft, hop, win)`` in ``resolutions``: spectral convergence
    ``||S_ref - S_hyp||_F / ||S_ref||_F`` plus log-magnitude L1 ``mean |ln(S_ref + eps) - ln(S_hyp + eps)|``
    on magnitude STFTs; the result is the mean over resolutions. ``ref, hyp [..., L]`` (any rate: the
    resolutions are in samples). Returns ``[...]``; 0 for identical signals, NaN for a silent reference
    (spectral convergence is relative to the reference's energy).
    """
    r, h, batch = _pair(ref, hyp)
    total = torch.zeros(r.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for n_fft, hop, win in resolutions:
            sr_, sh = _magnitude(r, n_fft, hop, win), _magnitude(h, n_fft, hop, win)
            norm = torch.linalg.vector_norm(sr_, dim=(-2, -1)).clamp_min(eps)
            sc = torch.linalg.vector_norm(sr_ - sh, dim=(-2, -1)) / norm
            mag = ((sr_ + eps).log() - (sh + eps).log()).abs().mean(dim=(-2, -1))
            total += (sc + mag).double()
    total = torch.where(r.abs().amax(-1) > SILENCE_PEAK, total / len(resolutions), math.nan)
    return _out(total.numpy(), batch)


# -- voicing ------------------------------------------------------------------------------------------

VOICING_SAMPLE_RATE = 16000


def _frames(x: torch.Tensor, frame_length: int, hop: int) -> torch.Tensor:
    """``[N, L]`` -> ``[N, F, frame_length]`` centred frames (zero padding), ``F = 1 + L // hop``."""
    x = torch.nn.functional.pad(x, (frame_length // 2, frame_length // 2))
    if x.shape[-1] < frame_length:
        x = torch.nn.functional.pad(x, (0, frame_length - x.shape[-1]))
    return x.unfold(-1, frame_length, hop)


def _cmndf(frames: torch.Tensor, win: int, tau_max: int) -> torch.Tensor:
    """YIN's cumulative mean normalised difference ``d'(tau)`` for ``tau = 0..tau_max`` of
    ``frames [..., frame_length]`` (integration window ``win`` samples); ``[..., tau_max + 1]``."""
    n = frames.shape[-1]
    size = 1 << (n + win - 1).bit_length()
    spec_full = torch.fft.rfft(frames, size)
    spec_head = torch.fft.rfft(frames[..., :win], size)
    acf = torch.fft.irfft(spec_full * spec_head.conj(), size)[..., : tau_max + 1]       # sum_j x_j x_{j+tau}
    sq = torch.nn.functional.pad(torch.cumsum(frames * frames, -1), (1, 0))
    taus = torch.arange(tau_max + 1)
    energy_tau = sq[..., taus + win] - sq[..., taus]                                     # sum_{j<win} x_{j+tau}^2
    diff = (energy_tau[..., :1] + energy_tau - 2 * acf).clamp_min(0)
    cum = torch.cumsum(diff[..., 1:], -1)
    norm = torch.where(cum > 0, diff[..., 1:] * taus[1:] / cum.clamp_min(1e-30), torch.ones_like(cum))
    return torch.cat([torch.ones_like(diff[..., :1]), norm], -1)


def voicing(x: ArrayLike, sample_rate: int, fmin: float = 50.0, fmax: float = 500.0, hop_seconds: float = 0.01,
            threshold: float = 0.3, energy_threshold: Optional[ArrayLike] = None,
            energy_floor_db: float = -40.0) -> dict:
    """Frame-wise voicing decisions and F0 with a YIN pitch tracker (de Cheveigne & Kawahara 2002).

    The signal ``[..., L]`` is resampled to 16 kHz and cut in centred frames of 1024 samples (64 ms) every
    ``hop_seconds``; YIN's cumulative mean normalised difference ``d'`` is computed over a 512-sample window.
    A frame is **voiced** when

    * its aperiodicity ``min d'(tau)`` over lags ``tau`` in ``[16000 / fmax, 16000 / fmin]`` is below
      ``threshold`` (a clearly periodic frame), and
    * its RMS is above ``energy_threshold`` (per item, ``[...]``); by default ``energy_floor_db`` dB below
      the item's loudest frame (and at least 1e-5, -100 dBFS).

    Returns a dict of ``voiced`` (bool ``[..., F]``), ``f0`` (Hz, ``[..., F]``: from the first dip of ``d'``
    below ``threshold``, else its minimum; 0 for unvoiced frames), ``aperiodicity`` and ``rms``
    (``[..., F]``), and ``energy_threshold`` (``[...]``).
    """
    t = _tensor(x).float()
    batch = tuple(t.shape[:-1])
    t = t.reshape(-1, t.shape[-1])
    audio_utils.check_finite(t)
    sr = VOICING_SAMPLE_RATE
    t = audio_utils.resample(t, audio_utils.check_sample_rate(sample_rate), sr)
    frame_length, win = 1024, 512
    tau_min, tau_max = max(2, int(sr / fmax)), min(win, int(math.ceil(sr / fmin)))
    if not tau_min < tau_max:
        raise ConfigError(f"voicing: need fmin < fmax within 32..8000 Hz, got fmin={fmin}, fmax={fmax}")
    hop = max(1, int(round(hop_seconds * sr)))
    frames = _frames(t.double(), frame_length, hop)                                     # [N, F, 1024]
    rms = frames.pow(2).mean(-1).sqrt()
    d = _cmndf(frames, win, tau_max)[..., tau_min:]                                      # lags tau_min..tau_max
    aperiodicity = d.amin(-1)
    if energy_threshold is None:
        thr = (rms.amax(-1) * 10 ** (energy_floor_db / 20)).clamp_min(1e-5)
    else:
        thr = torch.as_tensor(np.asarray(energy_threshold, dtype=np.float64)).reshape(-1).expand(t.shape[0])
    voiced = (aperiodicity < threshold) & (rms > thr[:, None])
    # f0: first local minimum of d' below the threshold, else the global minimum
    below = d < threshold
    local_min = torch.ones_like(below)
    local_min[..., 1:-1] = (d[..., 1:-1] <= d[..., :-2]) & (d[..., 1:-1] <= d[..., 2:])
    dip = below & local_min
    first = torch.where(dip.any(-1), dip.float().argmax(-1), d.argmin(-1))
    f0 = torch.where(voiced, sr / (first + tau_min).double(), torch.zeros_like(rms))
    shape = batch + (frames.shape[1],)
    return dict(voiced=voiced.reshape(shape).numpy(), f0=f0.reshape(shape).numpy(),
                aperiodicity=aperiodicity.reshape(shape).numpy(), rms=rms.reshape(shape).numpy(),
                energy_threshold=thr.reshape(batch).numpy())


def vuv_f1(ref: ArrayLike, hyp: ArrayLike, sample_rate: int, return_reasons: bool = False, **voicing_kw):
    """F1 score of voiced/unvoiced decisions of ``hyp`` against those of ``ref`` (voiced = positive class):
    ``2 TP / (2 TP + FP + FN)`` over frames, with :func:`voicing` decisions on both signals. Both use the
    *reference's* energy threshold, so a hypothesis that is quieter than the reference is not judged by a
    lower bar.

    ``ref, hyp [..., L]`` at ``sample_rate`` Hz. Returns ``[...]`` in [0, 1]; NaN (undefined) when neither
    signal has a voiced frame.
    """
    r, h, batch = _pair(ref, hyp)
    vr = voicing(r, sample_rate, **voicing_kw)
    vh = voicing(h, sample_rate, energy_threshold=vr["energy_threshold"],
                 **{k: v for k, v in voicing_kw.items() if k not in ("energy_threshold", "energy_floor_db")})
    a, b = vr["voiced"], vh["voiced"]
    tp = (a & b).sum(-1)
    wrong = (a ^ b).sum(-1)
    denom = 2 * tp + wrong
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    reasons = [None if d > 0 else _note("V/UV F1", i, len(denom), "no voiced frame in either signal")
               for i, d in enumerate(denom)]
    out = _out(f1, batch)
    return (out, reasons) if return_reasons else out


# -- everything at once -------------------------------------------------------------------------------

#: Metrics computed by :func:`score_pair` unless told otherwise (``estoi`` is also available).
DEFAULT_METRICS = ("pesq", "stoi", "si_sdr", "mel_distance", "stft_distance", "vuv_f1")
ALL_METRICS = DEFAULT_METRICS + ("estoi",)
#: Whether a larger value is better, per metric.
HIGHER_IS_BETTER = dict(pesq=True, stoi=True, estoi=True, si_sdr=True, mel_distance=False, stft_distance=False,
                        vuv_f1=True)


def check_metrics(metrics: Optional[Sequence[str]]) -> tuple[str, ...]:
    """Validate metric names (``None``: :data:`DEFAULT_METRICS`)."""
    if metrics is None:
        return DEFAULT_METRICS
    metrics = tuple(dict.fromkeys(m.strip() for m in metrics if m.strip()))
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown or not metrics:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
    if "pesq" in metrics:
        _require("pesq")                    # fail once, up front, rather than on every file
    if "stoi" in metrics or "estoi" in metrics:
        _require("pystoi")
    return metrics


def score_pair(ref: ArrayLike, hyp: ArrayLike, sample_rate: int, metrics: Optional[Sequence[str]] = None,
               mel_sample_rate: Optional[int] = None) -> tuple[dict, dict]:
    """All ``metrics`` on one aligned mono pair ``ref, hyp [L]`` at ``sample_rate`` Hz.

    ``mel_distance`` is computed at ``mel_sample_rate`` (e.g. the codec's rate; default ``sample_rate``).
    Returns ``(values, notes)``: ``{metric: float}`` (NaN when undefined) and ``{metric: reason}`` for
    the values that are NaN or need a remark.
    """
    metrics = check_metrics(metrics)
    values, notes = {}, {}
    for m in metrics:
        reasons = None
        if m == "pesq":
            v, reasons = pesq_wb(ref, hyp, sample_rate, return_reasons=True)
        elif m in ("stoi", "estoi"):
            v, reasons = stoi(ref, hyp, sample_rate, extended=m == "estoi", return_reasons=True)
        elif m == "si_sdr":
            v = si_sdr(ref, hyp)
            if math.isnan(float(v)):
                reasons = ["reference is constant (silent)"]
        elif m == "mel_distance":
            rate = mel_sample_rate or sample_rate
            r, h = (audio_utils.resample(_tensor(x).float(), sample_rate, rate) for x in (ref, hyp))
            v = mel_distance(r, h, rate)
        elif m == "stft_distance":
            v = stft_distance(ref, hyp)
            if math.isnan(float(v)):
                reasons = ["reference is silent"]
        elif m == "vuv_f1":
            v, reasons = vuv_f1(ref, hyp, sample_rate, return_reasons=True)
        values[m] = float(v)
        if reasons and reasons[0]:
            notes[m] = reasons[0]
    return values, notes


def interval_energy_contrast(x: ArrayLike, sample_rate: int, intervals: Sequence[tuple[float, float]],
                             hop_seconds: float = 0.02, floor_db: float = -80.0) -> float:
    """How much louder ``x`` (``[L]`` or ``[C, L]``, mixed to mono) is inside ``intervals`` than outside:
    mean frame energy in dB over frames whose centre lies in one of the ``(start, end)`` intervals (seconds),
    minus the mean over the other frames. Frames are ``2 * hop_seconds`` long, ``hop_seconds`` apart; energy
    is floored at ``floor_db`` (dB re full scale) so silence counts as a level, not as minus infinity.

    E.g. a sung vocal stem against its lyrics' note times: a large positive value means the voice sounds
    where the words are and is quiet between them (the stem check of the song recipes).

    Raises:
        ConfigError: no interval, or the intervals cover none or all of the frames.
    """
    wav = to_mono(x).float()
    hop = max(1, int(round(hop_seconds * sample_rate)))
    frames = _frames(wav[None], 2 * hop, hop)[0]                                   # [F, 2 hop]
    level = 10 * torch.log10(frames.pow(2).mean(-1).clamp_min(10 ** (floor_db / 10)))
    centres = torch.arange(frames.shape[0], dtype=torch.float64) * hop / sample_rate
    inside = torch.zeros(frames.shape[0], dtype=torch.bool)
    for start, end in intervals:
        inside |= (centres >= float(start)) & (centres < float(end))
    if not len(intervals) or bool(inside.all()) or not bool(inside.any()):
        raise ConfigError(f"interval_energy_contrast needs intervals that cover some but not all of the "
                          f"{frames.shape[0]} frames ({len(intervals)} interval(s) given)")
    return float(level[inside].mean() - level[~inside].mean())
