"""Evaluate a codec: score reconstructions against references, per file and in summary.

* :func:`evaluate_dirs` pairs the audio files of a reference folder and a hypothesis folder (by relative
  path without extension, then by unique file stem) and scores each pair; unmatched files are reported.
* :func:`evaluate_manifest` reconstructs every file of a manifest with a codec (in batches), scores the
  reconstructions and gathers codebook statistics and the bitrate on the set.

Each pair is mixed to mono; the hypothesis is resampled to the reference's rate and both are trimmed to
the shorter length (see :mod:`audiocodec.metrics.signal`). The summary of each metric has ``mean``,
``std`` (sample), ``count`` (finite values), ``nan`` (undefined values, whose reasons are in each row's
``notes``) and ``ci95`` (half-width of the 95 % Student-t confidence interval of the mean).
Scoring runs in a process pool when ``workers > 1`` and there is enough audio to pay for starting it
(:data:`MIN_SECONDS_FOR_POOL`).

Manifest: a JSON-lines file, one object per audio file, with its path under ``path`` (as in
:mod:`audiocodec.data.manifest`), ``audio_filepath``, ``audio``, ``wav`` or ``file`` (relative paths are
relative to the manifest's folder) and optionally an ``id`` (the row's name; default: the path as written).
With an ``offset`` (seconds), only ``duration`` seconds from there are evaluated; without one, the whole
file is (``duration`` then describes the file, as in training manifests). Other keys are ignored. A line
that is not a JSON object is read as a bare path; blank lines and lines starting with ``#`` are skipped.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .. import audio as audio_utils
from ..errors import AudioCodecError, ConfigError
from . import signal as sig
from .codebook import CodebookStats

PathLike = Union[str, os.PathLike]
PATH_KEYS = ("audio_filepath", "audio", "path", "wav", "file")
#: Less reference audio than this (seconds) is scored in this process even when ``workers > 1``: starting
#: workers (spawn, importing torch etc.) takes seconds, while all metrics on one second of audio take ~0.1 s.
MIN_SECONDS_FOR_POOL = 300.0


# -- results -------------------------------------------------------------------------------------------

def summarize(rows: Sequence[dict], metrics: Sequence[str]) -> dict:
    """``{metric: {mean, std, count, nan, ci95, ci95_low, ci95_high}}`` over the finite values of ``rows``."""
    out = {}
    for m in metrics:
        values = np.array([r.get(m, math.nan) for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        n = len(finite)
        mean = float(finite.mean()) if n else math.nan
        std = float(finite.std(ddof=1)) if n > 1 else math.nan
        half = _t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        out[m] = dict(mean=mean, std=std, count=n, nan=int(len(values) - n), ci95=half,
                      ci95_low=mean - half, ci95_high=mean + half)
    return out


def _t975(dof: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, dof))
    except ImportError:  # pragma: no cover - scipy comes with librosa
        return 1.959964


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


@dataclass
class EvalResult:
    """Per-file ``rows`` (``file``, paths, ``seconds``, one value per metric, ``notes``), their ``summary``,
    ``unmatched`` files (``ref_only`` / ``hyp_only``), ``failures`` (``file``, ``error``), run ``info`` and,
    for a codec, ``codebooks`` statistics (see :meth:`CodebookStats.summary`)."""
    rows: list
    metrics: tuple
    summary: dict
    unmatched: dict = field(default_factory=lambda: dict(ref_only=[], hyp_only=[]))
    failures: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    codebooks: Optional[dict] = None

    def to_dict(self) -> dict:
        """JSON-ready (NaN written as ``null``)."""
        out = dict(info=self.info, metrics=list(self.metrics), summary=self.summary, count=len(self.rows),
                   unmatched=self.unmatched, failures=self.failures, files=self.rows)
        if self.codebooks is not None:
            out["codebooks"] = self.codebooks
        return _jsonable(out)

    def to_json(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return path

    def nan_reasons(self) -> dict:
        """``{metric: {reason: files}}`` for the undefined values."""
        out: dict = {}
        for r in self.rows:
            for m, reason in r.get("notes", {}).items():
                if not math.isfinite(r.get(m, math.nan)):
                    out.setdefault(m, {}).setdefault(reason, 0)
                    out[m][reason] += 1
        return out

    def table(self) -> str:
        """The summary as a text table."""
        lines = [f"{'metric':<16}{'mean':>10}{'±95% CI':>10}{'std':>10}{'n':>7}{'NaN':>6}  better"]
        for m in self.metrics:
            s = self.summary[m]
            better = {True: "higher", False: "lower"}.get(sig.HIGHER_IS_BETTER.get(m.removesuffix("_ref"), True))
            lines.append(f"{m:<16}{_fmt(s['mean']):>10}{_fmt(s['ci95']):>10}{_fmt(s['std']):>10}"
                         f"{s['count']:>7}{s['nan']:>6}  {better}")
        if self.codebooks:
            cb = self.codebooks
            br = cb["bitrate"]
            lines.append(f"codebooks: {cb['num_codebooks']} x {cb['cardinality']}, utilisation "
                         f"{_fmt(cb['mean_utilisation'])}, perplexity {_fmt(cb['mean_perplexity'])} (mean), "
                         f"dead codes {cb['total_dead_codes']}")
            kbps = {k.removesuffix("_bps"): math.nan if v is None else v / 1000 for k, v in br.items()}
            lines.append("bitrate: " + ", ".join(f"{k} {_fmt(v)} kbps" for k, v in kbps.items()))
        return "\n".join(lines)


def _fmt(x) -> str:
    if x is None or not math.isfinite(float(x)):
        return "-"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


# -- pairing -----------------------------------------------------------------------------------------

def pair_files(ref_dir: PathLike, hyp_dir: PathLike) -> tuple[list[tuple[str, Path, Path]], list[Path], list[Path]]:
    """Pair the audio files under two folders.

    Files pair by path relative to their folder without extension (``a/b.flac`` with ``a/b.wav``); those
    left pair by file stem when that stem is unique among the left files on both sides. Returns
    ``(pairs [(key, ref, hyp)], ref_only, hyp_only)``; sorted.
    """
    ref_dir, hyp_dir = Path(ref_dir), Path(hyp_dir)
    for d, what in ((ref_dir, "reference"), (hyp_dir, "hypothesis")):
        if not d.is_dir():
            raise ConfigError(f"{what} folder not found: {d}")
    refs, hyps = audio_utils.list_audio_files(ref_dir), audio_utils.list_audio_files(hyp_dir)

    def keyed(files, root):
        out, extra = {}, []
        for f in files:
            key = f.relative_to(root).with_suffix("").as_posix()
            (extra.append(f) if key in out else out.__setitem__(key, f))
        return out, extra

    rk, ref_extra = keyed(refs, ref_dir)
    hk, hyp_extra = keyed(hyps, hyp_dir)
    pairs = [(k, rk[k], hk[k]) for k in sorted(set(rk) & set(hk))]
    ref_left = {k: v for k, v in rk.items() if k not in hk}
    hyp_left = {k: v for k, v in hk.items() if k not in rk}

    def by_stem(left):
        stems: dict = {}
        for k, v in left.items():
            stems.setdefault(Path(k).name, []).append(k)
        return {s: ks[0] for s, ks in stems.items() if len(ks) == 1}

    rs, hs = by_stem(ref_left), by_stem(hyp_left)
    for stem in sorted(set(rs) & set(hs)):
        pairs.append((rs[stem], ref_left.pop(rs[stem]), hyp_left.pop(hs[stem])))
    pairs.sort(key=lambda p: p[0])
    return pairs, sorted(list(ref_left.values()) + ref_extra), sorted(list(hyp_left.values()) + hyp_extra)


# -- scoring tasks (run in worker processes) ----------------------------------------------------------------

def _worker_init(log_level: int) -> None:
    torch.set_num_threads(1)
    sig.logger.setLevel(log_level)


def _score_arrays(key: str, ref: np.ndarray, ref_sr: int, hyp: np.ndarray, hyp_sr: int, metrics, mel_sr,
                  extra: dict) -> dict:
    """Score one pair of mono arrays; a row. Torch runs on one thread meanwhile: these small ops get no
    faster with more, and several threads fight each other (and the pool's workers) for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r, h, sr = sig.prepare_pair(ref, ref_sr, hyp, hyp_sr)
        values, notes = sig.score_pair(r, h, sr, metrics, mel_sample_rate=mel_sr)
    finally:
        torch.set_num_threads(threads)
    hyp_len = hyp.shape[-1] * ref_sr / hyp_sr
    row = dict(file=key, **extra, sample_rate=sr, seconds=r.shape[-1] / sr,
               length_diff_s=(hyp_len - ref.shape[-1]) / ref_sr)
    row.update(values)
    row["notes"] = notes
    return row


def _score_files(key: str, ref_path: str, hyp_path: str, metrics, mel_sr) -> dict:
    ref, ref_sr = audio_utils.load_audio(ref_path)
    hyp, hyp_sr = audio_utils.load_audio(hyp_path)
    ref, hyp = sig.to_mono(ref).numpy(), sig.to_mono(hyp).numpy()
    return _score_arrays(key, ref, ref_sr, hyp, hyp_sr, metrics, mel_sr, dict(ref=ref_path, hyp=hyp_path))


class _Runner:
    """Runs scoring tasks inline or in a process pool; collects rows and failures in submission order."""

    def __init__(self, workers: int, seconds: float, progress=None):
        self.pool = None
        self.max_in_flight = 4 * workers
        if workers > 1 and seconds >= MIN_SECONDS_FOR_POOL:
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init,
                                            initargs=(sig.logger.getEffectiveLevel(),))
        self.pending: list = []
        self.progress = progress

    def submit(self, key: str, fn: Callable, *args) -> None:
        if self.pool is not None:
            in_flight = [f for _, f, _ in self.pending if isinstance(f, Future) and not f.done()]
            while len(in_flight) >= self.max_in_flight:  # bound the memory held by queued arrays
                wait(in_flight, return_when=FIRST_COMPLETED)
                in_flight = [f for f in in_flight if not f.done()]
            try:
                future = self.pool.submit(fn, *args)
            except BrokenProcessPool:
                self._broken()
            else:
                future.add_done_callback(lambda _: self._tick())
                self.pending.append((key, future, (fn, args)))
                return
        self.pending.append((key, self._inline(fn, args), None))
        self._tick()

    @staticmethod
    def _inline(fn, args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - a bad file is reported, never stops the run
            return e

    def _broken(self) -> None:
        """A worker died (killed, out of memory, ...): go on in this process."""
        print("warning: a scoring worker process died; scoring the remaining files in this process",
              file=sys.stderr)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None

    def _tick(self):
        if self.progress is not None:
            self.progress.update(1)

    def results(self) -> tuple[list, list]:
        rows, failures = [], []
        try:
            for key, item, task in self.pending:
                if isinstance(item, Future):
                    try:
                        item = item.result()
                    except BrokenProcessPool:
                        if self.pool is not None:
                            self._broken()
                        item = self._inline(*task)
                    except Exception as e:  # noqa: BLE001
                        item = e
                if isinstance(item, BaseException):
                    failures.append(dict(file=key, error=_message(item)))
                else:
                    rows.append(item)
        finally:
            self.close()
        return rows, failures

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, AudioCodecError) else f"{type(e).__name__}: {e}"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, dynamic_ncols=True)


def _duration(path, offset: float = 0.0, duration: Optional[float] = None) -> float:
    """Seconds of audio to score in ``path`` (from its header; 0 when unreadable)."""
    try:
        import soundfile as sf
        total = max(0.0, sf.info(str(path)).duration - offset)
    except Exception:  # noqa: BLE001 - unreadable files are reported when they are loaded
        return 0.0
    return total if duration is None else min(total, duration)


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _model_names(scorers) -> tuple:
    return tuple(n for s in scorers or () for n in getattr(s, "names", (s.name, f"{s.name}_ref")))


def _model_scores(scorers, ref, ref_sr: int, hyp, hyp_sr: int) -> tuple[dict, dict]:
    """``name`` (hypothesis) and ``name_ref`` (reference) scores of each model: ``(values, notes)``."""
    values, notes = {}, {}
    for scorer in scorers or ():
        try:
            if hasattr(scorer, "score_pair"):       # scores of the pair, e.g. ASR WER / CER
                values.update(scorer.score_pair(ref, ref_sr, hyp, hyp_sr))
            else:
                values[scorer.name] = float(scorer.score([hyp], hyp_sr)[0])
                values[f"{scorer.name}_ref"] = float(scorer.score([ref], ref_sr)[0])
        except Exception as e:  # noqa: BLE001 - reported on the row; the run goes on
            notes[scorer.name] = f"{scorer.name} failed: {_message(e)}"
            for name in getattr(scorer, "names", (scorer.name, f"{scorer.name}_ref")):
                values.setdefault(name, math.nan)
    return values, notes


def _merge(row: dict, values: dict, notes: dict) -> None:
    row.update(values)
    row.setdefault("notes", {}).update(notes)


# -- folders -------------------------------------------------------------------------------------------

def evaluate_dirs(ref_dir: PathLike, hyp_dir: PathLike, metrics: Optional[Sequence[str]] = None,
                  workers: Optional[int] = None, mel_sample_rate: Optional[int] = None,
                  model_scorers: Sequence = (), progress: bool = False) -> EvalResult:
    """Score every hypothesis file against the reference file it pairs with (:func:`pair_files`).

    Args:
        ref_dir, hyp_dir: folders of audio files (searched recursively).
        metrics: names from :data:`audiocodec.metrics.signal.ALL_METRICS` (default: ``DEFAULT_METRICS``).
        workers: scoring processes (default: up to 2); 1 scores in this process.
        mel_sample_rate: rate of the mel distance (default: each reference's rate).
        model_scorers: :class:`~audiocodec.metrics.model_based.ModelScorer` objects, run in this process.
        progress: show a progress bar on stderr.
    """
    metrics = sig.check_metrics(metrics)
    pairs, ref_only, hyp_only = pair_files(ref_dir, hyp_dir)
    bar = _progress(len(pairs), "eval", progress)
    runner = _Runner(workers or _default_workers(), sum(_duration(r) for _, r, _ in pairs), bar)
    try:
        for key, ref, hyp in pairs:
            runner.submit(key, _score_files, key, str(ref), str(hyp), metrics, mel_sample_rate)
        rows, failures = runner.results()
    finally:
        runner.close()
        if bar is not None:
            bar.close()
    for row in rows if model_scorers else ():
        try:
            ref, ref_sr = audio_utils.load_audio(row["ref"])
            hyp, hyp_sr = audio_utils.load_audio(row["hyp"])
        except Exception as e:  # noqa: BLE001 - e.g. a file removed meanwhile
            _merge(row, {n: math.nan for n in _model_names(model_scorers)}, {"model scores": _message(e)})
            continue
        _merge(row, *_model_scores(model_scorers, sig.to_mono(ref), ref_sr, sig.to_mono(hyp), hyp_sr))
    all_metrics = tuple(metrics) + _model_names(model_scorers)
    info = dict(mode="dirs", ref_dir=str(ref_dir), hyp_dir=str(hyp_dir), pairs=len(pairs))
    return EvalResult(rows=rows, metrics=all_metrics, summary=summarize(rows, all_metrics),
                      unmatched=dict(ref_only=[str(p) for p in ref_only], hyp_only=[str(p) for p in hyp_only]),
                      failures=failures, info=info)


# -- manifest + codec ----------------------------------------------------------------------------------

def read_manifest(manifest: PathLike) -> list[dict]:
    """Entries ``{key, path, offset, duration}`` of a manifest (see the module docs)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ConfigError(f"manifest not found: {manifest}")
    entries, seen = [], {}
    for lineno, line in enumerate(manifest.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{manifest}:{lineno}: invalid JSON: {e}") from e
            raw = next((obj[k] for k in PATH_KEYS if k in obj), None)
            if not isinstance(raw, str):
                raise ConfigError(f"{manifest}:{lineno}: no audio path (one of the keys {', '.join(PATH_KEYS)})")
        else:
            obj, raw = {}, line
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = manifest.parent / path
        key = str(obj.get("id", raw))
        n = seen[key] = seen.get(key, 0) + 1
        if n > 1:
            key = f"{key}#{n}"
        try:
            offset = float(obj.get("offset") or 0.0)
            segment = "offset" in obj and obj.get("duration") is not None
            duration = float(obj["duration"]) if segment else None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{manifest}:{lineno}: offset / duration must be seconds: {e}") from e
        entries.append(dict(key=key, path=path, offset=offset, duration=duration))
    return entries


def evaluate_manifest(manifest: Union[PathLike, Sequence[dict]], codec, num_codebooks: Optional[int] = None,
                      batch_size: int = 8, metrics: Optional[Sequence[str]] = None, workers: Optional[int] = None,
                      model_scorers: Sequence = (), save_dir: Optional[PathLike] = None, device=None,
                      progress: bool = False) -> EvalResult:
    """Reconstruct every file of ``manifest`` with ``codec`` and score the reconstructions.

    Args:
        manifest: a manifest file, or entries as :func:`read_manifest` returns them.
        codec: a :class:`~audiocodec.Codec`, or a checkpoint path for :func:`~audiocodec.load_codec`.
        num_codebooks: codebooks to use (restored afterwards); default: the codec's.
        batch_size: files coded together (padded to the longest; each decoded to its own length).
        metrics, workers, model_scorers, progress: as in :func:`evaluate_dirs`; the mel distance is
            computed at the codec's rate.
        save_dir: also write each reconstruction there as ``<key>.wav`` (codec rate).
        device: where to load ``codec`` when it is a path (default cpu).

    Returns an :class:`EvalResult` whose ``codebooks`` holds the code statistics and the bitrate on the set
    (nominal, measured and unigram-entropy bound).
    """
    from ..codecs import Codec, load_codec
    metrics = sig.check_metrics(metrics)
    entries = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    if not isinstance(codec, Codec):
        codec = load_codec(codec, device=device or "cpu")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    previous = codec.num_codebooks
    if num_codebooks is not None:
        if not 1 <= num_codebooks <= codec.max_codebooks:
            raise ConfigError(f"num_codebooks must be in 1..{codec.max_codebooks} for this codec, got {num_codebooks}")
        codec.set_num_codebooks(num_codebooks)
    stats = CodebookStats(codec.cardinality, codec.frame_rate)
    bar = _progress(len(entries), "eval", progress)
    runner = _Runner(workers or _default_workers(), sum(_duration(e["path"], e.get("offset", 0.0), e.get("duration"))
                                                         for e in entries), bar)
    load_failures: list = []
    model_values: dict = {}
    try:
        for start in range(0, len(entries), batch_size):
            items = []
            for e in entries[start: start + batch_size]:
                try:
                    wav, sr = audio_utils.load_audio(e["path"], offset=e.get("offset", 0.0), duration=e.get("duration"))
                    items.append((e, wav, sr))
                except Exception as err:  # noqa: BLE001
                    load_failures.append(dict(file=e["key"], error=_message(err)))
                    if bar is not None:
                        bar.update(1)
            for e, ref, ref_sr, hyp in _reconstruct(codec, items, stats, load_failures, bar):
                ref_m, hyp_m = sig.to_mono(ref).numpy(), sig.to_mono(hyp).numpy()
                if save_dir is not None:
                    try:
                        audio_utils.save_audio(Path(save_dir) / _output_name(e["key"]), hyp, codec.sample_rate,
                                               "FLOAT")
                    except Exception as err:  # noqa: BLE001 - e.g. an unwritable folder: say so, keep scoring
                        load_failures.append(dict(file=e["key"], error=f"cannot save reconstruction: {_message(err)}"))
                if model_scorers:
                    model_values[e["key"]] = _model_scores(model_scorers, ref_m, ref_sr, hyp_m, codec.sample_rate)
                runner.submit(e["key"], _score_arrays, e["key"], ref_m, ref_sr, hyp_m, codec.sample_rate, metrics,
                              codec.sample_rate, dict(ref=str(e["path"])))
        rows, failures = runner.results()
    finally:
        runner.close()
        codec.set_num_codebooks(previous)
        if bar is not None:
            bar.close()
    for row in rows:
        if row["file"] in model_values:
            _merge(row, *model_values[row["file"]])
    all_metrics = tuple(metrics) + _model_names(model_scorers)
    info = dict(mode="manifest", manifest=str(manifest) if isinstance(manifest, (str, os.PathLike)) else None,
                codec=codec.name, fingerprint=codec.fingerprint(), sample_rate=codec.sample_rate,
                frame_rate=codec.frame_rate, num_codebooks=num_codebooks or previous, cardinality=codec.cardinality,
                bitrate_bps=codec.frame_rate * (num_codebooks or previous) * math.log2(codec.cardinality),
                files=len(entries))
    return EvalResult(rows=rows, metrics=all_metrics, summary=summarize(rows, all_metrics),
                      failures=load_failures + failures, info=info, codebooks=stats.summary())


def _output_name(key: str) -> str:
    """A relative ``.wav`` path for a row key (never absolute, never climbing out of the output folder)."""
    parts = [p for p in Path(key.replace("\\", "/")).parts if p not in ("/", "..", ".") and not p.endswith(":")]
    name = Path(*parts) if parts else Path("item")
    if name.suffix.lower() in audio_utils.AUDIO_EXTENSIONS:
        name = name.with_suffix("")
    return f"{name.as_posix()}.wav"


def _reconstruct(codec, items: list, stats: CodebookStats, failures: list, bar) -> Iterable[tuple]:
    """Encode + decode ``items [(entry, wav [C, L], sr)]`` as one batch (one by one if the batch fails);
    yields ``(entry, ref [C, L], ref_sr, hyp [C', L'])`` with ``hyp`` at the codec's rate."""
    if not items:
        return
    try:
        outs = _codec_batch(codec, [(w, sr) for _, w, sr in items], stats)
    except Exception as err:  # noqa: BLE001 - isolate the bad item
        if len(items) > 1:
            for it in items:
                yield from _reconstruct(codec, [it], stats, failures, bar)
        else:
            failures.append(dict(file=items[0][0]["key"], error=_message(err)))
            if bar is not None:
                bar.update(1)
        return
    for (e, wav, sr), hyp in zip(items, outs):
        yield e, wav, sr, hyp


@torch.no_grad()
def _codec_batch(codec, wavs: list, stats: CodebookStats) -> list[torch.Tensor]:
    xs = [audio_utils.resample(audio_utils.convert_channels(w, codec.channels), sr, codec.sample_rate)
          for w, sr in wavs]
    longest = max(x.shape[-1] for x in xs)
    batch = torch.zeros(len(xs), codec.channels, longest)
    for i, x in enumerate(xs):
        batch[i, :, : x.shape[-1]] = x
    codes = codec.encode(batch, sample_rate=codec.sample_rate, lengths=[x.shape[-1] for x in xs])
    audio = codec.decode(codes).cpu()
    stats.update(codes.to("cpu"), seconds=sum(w.shape[-1] / sr for w, sr in wavs))
    return [audio[i, :, : int(n)] for i, n in enumerate(codes.output_lengths)]
