"""Command line: ``audiocodec encode | decode | reconstruct | info | convert`` (also ``python -m audiocodec``).

Examples::

    audiocodec encode data/wavs -o data/codes --model ckpt/model.safetensors --batch-size 16
    audiocodec decode data/codes -o data/decoded --model ckpt/model.safetensors
    audiocodec reconstruct song.flac -o out --model encodec-24k --num-codebooks 4
    audiocodec info --model ckpt/
    audiocodec convert wavtokenizer_75.ckpt ckpt/wavtokenizer-75.safetensors

Exit status: 0 on success, 1 when some files failed (each is reported and skipped; the run goes on),
2 on an error that stops the command (bad model, bad arguments).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from . import __version__
from . import audio as audio_utils
from .codecs import (DEFAULT_CODEC, Codec, Codes, build_codec, get_config, list_codecs, list_embedded, load_codec,
                     save_codec)
from .errors import AudioCodecError, ConfigError

#: The codec used when ``--model`` is not given: the embedded default codec when its weights are installed
#: (``None`` otherwise, and then ``--model`` is required).
DEFAULT_MODEL: Optional[str] = DEFAULT_CODEC if DEFAULT_CODEC in list_embedded() else None

CODES_SUFFIX = ".npz"
AUDIO_OUT_SUFFIX = ".wav"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -- model -------------------------------------------------------------------------------------------

def resolve_model(spec: Optional[str], device: str = "cpu", num_codebooks: Optional[int] = None) -> Codec:
    """A ready codec (eval mode) from ``--model``: a checkpoint file or folder (:func:`load_codec`), or a
    named config (:func:`build_codec`, random weights, with a warning). ``None`` means :data:`DEFAULT_MODEL`."""
    spec = DEFAULT_MODEL if spec is None else spec
    if spec is None:
        raise ConfigError("no model given: pass --model with a checkpoint path or one of "
                          f"{', '.join(list_codecs())}")
    dev = _device(device)
    path = Path(spec).expanduser()
    if path.exists():
        codec = load_codec(path, device=dev)
    elif spec in list_embedded():
        codec = load_codec(spec, device=dev)
    elif spec in list_codecs():
        _warn(f"'{spec}' is a config name: the codec has RANDOM weights and its output is meaningless; "
              "pass a trained checkpoint for real use")
        codec = build_codec(spec).to(dev).prepare_for_inference()
    else:
        raise ConfigError(f"--model {spec!r} is neither an existing checkpoint file/folder, an embedded codec "
                          f"({', '.join(list_embedded()) or 'none installed'}) nor a codec config name "
                          f"({', '.join(list_codecs())})")
    if num_codebooks is not None:
        if not 1 <= num_codebooks <= codec.max_codebooks:
            raise ConfigError(f"--num-codebooks must be in 1..{codec.max_codebooks} for this codec, "
                              f"got {num_codebooks}")
        codec.set_num_codebooks(num_codebooks)
    return codec


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"bad --device {spec!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine")
    return dev


# -- inputs and outputs ------------------------------------------------------------------------------

@dataclass
class Job:
    """One input file and the output it maps to."""
    src: Path
    dst: Path


def _collect(inputs: Sequence[str], outdir: Path, list_fn: Callable[[Path], list[Path]], suffix: str,
             failures: list, what: str = "audio") -> list[Job]:
    """Map every input file (folders searched recursively) to ``outdir / relative path`` with ``suffix``.

    A folder's files keep their path relative to that folder; a file given directly goes to
    ``outdir / name``. Missing inputs and output name clashes are recorded in ``failures``.
    """
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for raw in inputs:
        root = Path(raw).expanduser()
        if not root.exists():
            failures.append((root, f"no such file or folder: {root}"))
            continue
        if root.is_dir():
            files = list_fn(root)
            if not files:
                _warn(f"no {what} files found under {root}")
            pairs = [(f, f.relative_to(root)) for f in files]
        else:
            pairs = [(root, Path(root.name))]
        for src, rel in pairs:
            dst = outdir / rel.with_suffix(suffix)
            if dst in seen:
                failures.append((src, f"output {dst} would also be written for {seen[dst]}; rename one of them"))
                continue
            seen[dst] = src
            jobs.append(Job(src, dst))
    return jobs


def _list_codes_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{CODES_SUFFIX}") if p.is_file())


def _pending(jobs: list[Job], overwrite: bool) -> tuple[list[Job], int]:
    if overwrite:
        return jobs, 0
    todo = [j for j in jobs if not j.dst.exists()]
    return todo, len(jobs) - len(todo)


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="file", disable=quiet or total == 0, file=sys.stderr,
                dynamic_ncols=True)


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, AudioCodecError) else f"{type(e).__name__}: {e}"


class _Reporter:
    """Counts results, reports failures as they happen and prints a summary."""

    def __init__(self, verb: str, bar, failures: list):
        self.verb, self.bar, self.failures = verb, bar, failures
        self.done = 0

    def ok(self, n: int = 1):
        self.done += n
        self.bar.update(n)

    def fail(self, src: Path, e: BaseException | str):
        msg = e if isinstance(e, str) else _message(e)
        self.failures.append((src, msg))
        self.bar.write(f"failed: {src}: {msg}", file=sys.stderr)
        self.bar.update(1)

    def summary(self, skipped: int) -> int:
        self.bar.close()
        parts = [f"{self.verb} {self.done} file(s)"]
        if skipped:
            parts.append(f"skipped {skipped} existing (use --overwrite to redo them)")
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        print(", ".join(parts), file=sys.stderr)
        if self.failures:
            print("failures:", file=sys.stderr)
            for src, msg in self.failures:
                print(f"  {src}: {msg}", file=sys.stderr)
            return 1
        return 0


# -- batched encoding -----------------------------------------------------------------------------

@dataclass
class _Loaded:
    job: Job
    wav: torch.Tensor        # [C, L'] at the codec's rate and channel count
    sample_rate: int         # of the file
    length: int              # samples in the file
    channels: int            # channels in the file


def _load_for(codec: Codec, job: Job) -> _Loaded:
    wav, sr = audio_utils.load_audio(job.src)
    x = audio_utils.convert_channels(wav, codec.channels)
    x = audio_utils.resample(x, sr, codec.sample_rate)
    return _Loaded(job, x, sr, wav.shape[-1], wav.shape[0])


def _encode_batch(codec: Codec, items: list[_Loaded]) -> list[Codes]:
    """Encode padded items together; one :class:`Codes` per item recording the file's own rate and length."""
    longest = max(it.wav.shape[-1] for it in items)
    batch = torch.zeros(len(items), codec.channels, longest)
    for i, it in enumerate(items):
        batch[i, :, : it.wav.shape[-1]] = it.wav
    codes = codec.encode(batch, sample_rate=codec.sample_rate, lengths=[it.wav.shape[-1] for it in items])
    out = []
    for i, it in enumerate(items):
        item = codes[i]
        n = int(item.lengths[0])
        out.append(replace(item, tokens=item.tokens[..., :n].cpu(), input_sample_rate=it.sample_rate,
                           input_lengths=torch.tensor([it.length]), input_channels=it.channels))
    return out


def _batches(jobs: list[Job], size: int) -> Iterable[list[Job]]:
    for i in range(0, len(jobs), size):
        yield jobs[i: i + size]


def _run_encoding(codec: Codec, jobs: list[Job], batch_size: int, report: _Reporter,
                  consume: Callable[[_Loaded, Codes, Optional[torch.Tensor]], None], decode: bool = False):
    """Load, encode (and optionally decode) ``jobs`` in batches; ``consume`` writes each result.

    A file that cannot be read is reported and skipped; a batch that fails as a whole is retried
    one file at a time so only the bad file is lost.
    """
    for group in _batches(jobs, batch_size):
        items = []
        for job in group:
            try:
                items.append(_load_for(codec, job))
            except Exception as e:  # noqa: BLE001 - any bad file is reported, never stops the run
                report.fail(job.src, e)
        if not items:
            continue
        try:
            results = list(zip(items, _process(codec, items, decode)))
        except Exception as e:  # noqa: BLE001 - isolate the bad item
            if len(items) == 1:
                report.fail(items[0].job.src, e)
                continue
            results = []
            for it in items:
                try:
                    results.append((it, _process(codec, [it], decode)[0]))
                except Exception as e1:  # noqa: BLE001
                    report.fail(it.job.src, e1)
        for it, (codes, wav) in results:
            _consume(it, codes, wav, report, consume)


def _process(codec: Codec, items: list[_Loaded], decode: bool):
    codes = _encode_batch(codec, items)
    if not decode:
        return [(c, None) for c in codes]
    padded = max(c.tokens.shape[-1] for c in codes)
    tokens = torch.stack([torch.nn.functional.pad(c.tokens[0], (0, padded - c.tokens.shape[-1])) for c in codes])
    audio = codec.decode(tokens).cpu()
    return [(c, audio[i, :, : int(c.output_lengths[0])]) for i, c in enumerate(codes)]


def _consume(item, codes, wav, report, consume):
    try:
        consume(item, codes, wav)
    except Exception as e:  # noqa: BLE001 - e.g. an unwritable output
        report.fail(item.job.src, e)
    else:
        report.ok()


def _compiled(codec: Codec, args) -> Codec:
    """``codec.compile()`` with ``--compile`` (shapes vary from batch to batch: dynamic after the first)."""
    return codec.compile() if getattr(args, "compile", False) else codec


# -- commands ----------------------------------------------------------------------------------------

def cmd_encode(args) -> int:
    failures: list = []
    jobs = _collect(args.inputs, Path(args.output), audio_utils.list_audio_files, CODES_SUFFIX, failures)
    todo, skipped = _pending(jobs, args.overwrite)
    codec = _compiled(resolve_model(args.model, args.device, args.num_codebooks), args) if todo else None
    report = _Reporter("encoded", _progress(len(todo), "encode", args.quiet), failures)
    for src, msg in failures:
        report.bar.write(f"failed: {src}: {msg}", file=sys.stderr)
    if codec is not None:
        _run_encoding(codec, todo, args.batch_size, report, lambda it, codes, _: codes.save(it.job.dst))
    return report.summary(skipped)


def cmd_reconstruct(args) -> int:
    failures: list = []
    jobs = _collect(args.inputs, Path(args.output), audio_utils.list_audio_files, AUDIO_OUT_SUFFIX, failures)
    todo, skipped = _pending(jobs, args.overwrite)
    codec = _compiled(resolve_model(args.model, args.device, args.num_codebooks), args) if todo else None
    report = _Reporter("reconstructed", _progress(len(todo), "reconstruct", args.quiet), failures)
    for src, msg in failures:
        report.bar.write(f"failed: {src}: {msg}", file=sys.stderr)
    if codec is not None:
        def write(it, codes, wav):
            audio_utils.save_audio(it.job.dst, wav, codec.sample_rate, subtype=args.subtype)
        _run_encoding(codec, todo, args.batch_size, report, write, decode=True)
    return report.summary(skipped)


def cmd_decode(args) -> int:
    failures: list = []
    jobs = _collect(args.inputs, Path(args.output), _list_codes_files, AUDIO_OUT_SUFFIX, failures, ".npz")
    todo, skipped = _pending(jobs, args.overwrite)
    codec = _compiled(resolve_model(args.model, args.device), args) if todo else None
    report = _Reporter("decoded", _progress(len(todo), "decode", args.quiet), failures)
    for src, msg in failures:
        report.bar.write(f"failed: {src}: {msg}", file=sys.stderr)
    for job in todo:
        try:
            codes = Codes.load(job.src)
            audio = codec.decode(codes).cpu()
            lengths = codes.output_lengths
            if len(codes) == 1:
                audio_utils.save_audio(job.dst, audio[0, :, : int(lengths[0])], codec.sample_rate, args.subtype)
            else:  # a batch saved by the library: one file per item
                width = len(str(len(codes) - 1))
                for i in range(len(codes)):
                    dst = job.dst.with_name(f"{job.dst.stem}_{i:0{width}d}{job.dst.suffix}")
                    audio_utils.save_audio(dst, audio[i, :, : int(lengths[i])], codec.sample_rate, args.subtype)
        except Exception as e:  # noqa: BLE001 - any bad file is reported, never stops the run
            report.fail(job.src, e)
        else:
            report.ok()
    return report.summary(skipped)


def cmd_info(args) -> int:
    if args.model is None:
        embedded = list_embedded()
        if embedded:
            print("embedded codecs (trained weights in the package; --model NAME, the first is the default):")
            for name in sorted(embedded, key=lambda n: n != DEFAULT_CODEC):
                print(f"  {name:<28} {load_codec(name).config.get('description', '')}")
        print("named codec configs (random weights; use with --model NAME, or load a checkpoint):")
        for name in list_codecs():
            cfg = get_config(name)
            print(f"  {name:<28} {cfg.get('description', '')}")
        return 0
    codec = resolve_model(args.model, "cpu", args.num_codebooks)
    rows = [
        ("model", codec.name),
        ("fingerprint", codec.fingerprint()),
        ("sample rate", f"{codec.sample_rate} Hz"),
        ("channels", codec.channels),
        ("hop length", f"{codec.hop_length} samples"),
        ("frame rate", f"{codec.frame_rate:g} frames/s"),
        ("codebooks", f"{codec.num_codebooks} used (1..{codec.max_codebooks} available)"),
        ("cardinality", f"{codec.cardinality} ({math.log2(codec.cardinality):g} bits per token)"),
        ("bitrate", f"{codec.bitrate / 1000:g} kbps ({codec.frame_rate * codec.num_codebooks:g} tokens/s)"),
        ("parameters", _count(codec.num_parameters())),
    ]
    for part in ("encoder", "quantizer", "decoder"):
        rows.append((f"  {part}", _count(codec.num_parameters(part))))
    books = sum(b.numel() for n, b in codec.quantizer.named_buffers() if n.endswith("embed"))
    if books:
        rows.append(("  codebooks", f"{books:,} values (buffers, not counted above)"))
    if codec.max_codebooks > 1:
        ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < codec.max_codebooks} | {codec.max_codebooks})
        rows.append(("kbps at K codebooks",
                     ", ".join(f"{k}: {codec.frame_rate * k * math.log2(codec.cardinality) / 1000:g}" for k in ks)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _count(n: int) -> str:
    return f"{n:,} ({n / 1e6:.2f} M)"


def cmd_convert(args) -> int:
    dst = Path(args.dst)
    target = dst if dst.suffix == ".safetensors" else dst / "model.safetensors"
    if target.exists() and not args.overwrite:
        raise ConfigError(f"{target} exists: pass --overwrite to replace it")
    src = Path(args.src)
    if src.resolve() == target.resolve():
        raise ConfigError("convert: source and destination are the same file")
    codec = load_codec(src, config=args.config, inference=False)
    path = save_codec(codec, dst, dtype=args.dtype)
    print(f"wrote {path} ({codec.name}, {codec.sample_rate} Hz, {codec.frame_rate:g} frames/s, "
          f"{codec.max_codebooks} x {codec.cardinality} codes)")
    return 0


# -- eval ------------------------------------------------------------------------------------------

def _add_eval_parser(subparsers) -> None:
    """``audiocodec eval REF_DIR HYP_DIR`` or ``audiocodec eval --manifest M.jsonl --model CKPT``."""
    from .metrics.signal import ALL_METRICS, DEFAULT_METRICS
    p = subparsers.add_parser(
        "eval", help="score reconstructions: PESQ, STOI, SI-SDR, mel / STFT distance, V/UV F1",
        description="Score reconstructed audio against references. With REF_DIR HYP_DIR, files pair by relative "
                    "path without extension (then by unique name); unmatched files are reported. With --manifest "
                    "and --model, each file of the manifest (JSON lines with an 'audio_filepath' / 'audio' / "
                    "'path' key) is reconstructed by the codec, then scored; codebook usage and the bitrate are "
                    "reported too. Prints a summary table (mean, 95% CI, std, count); --json writes it with the "
                    "per-file scores.")
    p.add_argument("ref_dir", nargs="?", metavar="REF_DIR", help="folder of reference audio")
    p.add_argument("hyp_dir", nargs="?", metavar="HYP_DIR", help="folder of reconstructed audio")
    p.add_argument("--manifest", metavar="M.jsonl", help="reconstruct and score the files of this manifest")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, metavar="M",
                   help="with --manifest: checkpoint file or folder, or a named config (random weights)")
    p.add_argument("--num-codebooks", "-k", type=_positive_int, metavar="K", help="codebooks to use (default: the model's)")
    p.add_argument("--device", default="auto", help="torch device of the codec (default: auto)")
    p.add_argument("--batch-size", "-b", type=_positive_int, default=8, metavar="N",
                   help="files reconstructed together (default: 8)")
    p.add_argument("--metrics", metavar="LIST",
                   help=f"comma-separated metrics among {','.join(ALL_METRICS)} (default: {','.join(DEFAULT_METRICS)})")
    p.add_argument("--utmos", metavar="MODEL.pt",
                   help="local UTMOS model exported with TorchScript or torch.export (.pt2): adds utmos "
                        "(reconstruction) and utmos_ref (reference) scores; nothing is downloaded")
    p.add_argument("--asr-model", metavar="DIR",
                   help="local transformers ASR model folder: adds wer / cer of what it hears in the "
                        "reconstruction against what it hears in the reference")
    p.add_argument("--workers", "-j", type=_positive_int, metavar="N",
                   help="scoring processes (default: up to 2; 1 scores in this process)")
    p.add_argument("--save-audio", metavar="DIR", help="with --manifest: also write the reconstructions here")
    p.add_argument("--json", metavar="OUT.json", help="write the summary and per-file scores as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-file NaN messages")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import logging
    from .metrics import evaluate as ev
    from .metrics.model_based import load_model_scorer
    metrics = None if args.metrics is None else args.metrics.split(",")
    if args.manifest is not None:
        if args.ref_dir is not None:
            raise ConfigError("eval: give either REF_DIR HYP_DIR or --manifest, not both")
    elif args.ref_dir is None or args.hyp_dir is None:
        raise ConfigError("eval: give REF_DIR and HYP_DIR, or --manifest M.jsonl --model CKPT")
    elif args.save_audio or args.num_codebooks:
        raise ConfigError("eval: --save-audio and --num-codebooks apply to --manifest only")
    logger = logging.getLogger("audiocodec.metrics")
    level = logger.level
    if args.quiet:
        logger.setLevel(logging.ERROR)
    try:
        scorers = [load_model_scorer(args.utmos, "utmos", device=_device(args.device))] if args.utmos else []
        if args.asr_model:
            from .metrics.asr import ASRScorer
            scorers.append(ASRScorer(args.asr_model, device=_device(args.device)))
        if args.manifest is not None:
            codec = resolve_model(args.model, args.device, args.num_codebooks)
            result = ev.evaluate_manifest(args.manifest, codec, batch_size=args.batch_size, metrics=metrics,
                                          workers=args.workers, model_scorers=scorers, save_dir=args.save_audio,
                                          progress=not args.quiet)
        else:
            if args.model not in (None, DEFAULT_MODEL):
                _warn("--model is ignored when comparing two folders")
            result = ev.evaluate_dirs(args.ref_dir, args.hyp_dir, metrics=metrics, workers=args.workers,
                                      model_scorers=scorers, progress=not args.quiet)
    finally:
        logger.setLevel(level)
    print(result.table())
    for side, files in (("reference", result.unmatched["ref_only"]), ("hypothesis", result.unmatched["hyp_only"])):
        if files:
            shown = ", ".join(files[:10]) + (f", ... ({len(files) - 10} more)" if len(files) > 10 else "")
            _warn(f"{len(files)} {side} file(s) without a match: {shown}")
    for metric, reasons in result.nan_reasons().items():
        _warn(f"{metric} undefined for " + "; ".join(f"{n} file(s): {why}" for why, n in reasons.items()))
    if args.json:
        print(f"wrote {result.to_json(args.json)}", file=sys.stderr)
    if result.failures:
        print(f"{len(result.failures)} file(s) failed:", file=sys.stderr)
        for f in result.failures:
            print(f"  {f['file']}: {f['error']}", file=sys.stderr)
    if not result.rows:
        print("error: no file was scored", file=sys.stderr)
        return 1
    return 1 if result.failures else 0


# -- argument parsing ------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiocodec", description="Neural audio codec: audio <-> discrete tokens.",
        epilog="Run 'audiocodec COMMAND -h' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"audiocodec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    model_help = ("checkpoint file or folder (any format 'convert' accepts), or a named config "
                  f"({', '.join(list_codecs())}; random weights)")
    model_kw = dict(required=DEFAULT_MODEL is None, default=DEFAULT_MODEL, metavar="M", help=model_help)

    def common(p, batched: bool, codebooks: bool):
        p.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                       help="output folder; input folders' structure is mirrored inside it")
        p.add_argument("--model", "-m", **model_kw)
        if codebooks:
            p.add_argument("--num-codebooks", "-k", type=_positive_int, metavar="K",
                           help="codebooks to use (RVQ bitrate control; default: the model's)")
        p.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: auto)")
        if batched:
            p.add_argument("--batch-size", "-b", type=_positive_int, default=8, metavar="N",
                           help="files coded together, padded to the longest (default: 8)")
        p.add_argument("--overwrite", action="store_true",
                       help="redo outputs that already exist (default: skip them, so runs resume)")
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the codec first (Codec.compile; on the CPU only its activations): "
                            "faster on many files, the first batch takes longer")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser("encode", help="audio files/folders -> token files (.npz)",
                       description="Encode audio into tokens: one .npz per file (tokens, lengths, model id, "
                                   "sample and frame rate), mirroring the input folders.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)")
    common(p, batched=True, codebooks=True)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token files (.npz) -> .wav",
                       description="Decode .npz token files to .wav at the codec's sample rate, with exactly "
                                   "the duration of the encoded audio.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz files or folders (searched recursively)")
    common(p, batched=False, codebooks=False)
    p.add_argument("--subtype", default="PCM_16", help="soundfile subtype of the wav files (default: PCM_16)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="audio -> codec -> audio (.wav)",
                       description="Encode and decode audio in one go: .wav at the codec's sample rate with "
                                   "the duration of each input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)")
    common(p, batched=True, codebooks=True)
    p.add_argument("--subtype", default="PCM_16", help="soundfile subtype of the wav files (default: PCM_16)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("info", help="describe a codec, or list the named configs",
                       description="Sample rate, frame rate, codebooks, cardinality, bitrate and parameters of "
                                   "a codec; without --model, the embedded codecs and the named configs.")
    p.add_argument("--model", "-m", default=None, metavar="M", help=model_help)
    p.add_argument("--num-codebooks", "-k", type=_positive_int, metavar="K", help="report the bitrate at K codebooks")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="any supported checkpoint -> audiocodec safetensors",
                       description="Convert a checkpoint (WavTokenizer .ckpt, encodec / vocos / DAC weights, our "
                                   "safetensors) to an audiocodec .safetensors holding its config. Pickled files "
                                   "are read without running code from them.")
    p.add_argument("src", metavar="SRC", help="checkpoint file or folder")
    p.add_argument("dst", metavar="DST", help="output .safetensors file, or a folder (model.safetensors inside)")
    p.add_argument("--config", metavar="YAML", help="config for SRC: a WavTokenizer training YAML, or an "
                                                    "audiocodec config YAML for a bare state dict")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="store the weights in this precision (default: as they are; float16 halves the file)")
    p.set_defaults(func=cmd_convert)
    _add_eval_parser(sub)

    p = sub.add_parser("extract-tokens", help="encode a manifest into sharded token files (for LM training)",
                       description="Encode every clip of a jsonl manifest with a codec into token shards "
                                   "(OUTDIR/shard-r<rank>-<n>.npz: tokens + the manifest records), batched by "
                                   "duration, resumable (ids already in OUTDIR are skipped), and sharded by rank "
                                   "under torchrun (torchrun --nproc_per_node N -m audiocodec extract-tokens ...).")
    p.add_argument("manifest", metavar="MANIFEST", help="jsonl manifest (path, duration, text, speaker, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="token folder")
    p.add_argument("--model", "-m", **model_kw)
    p.add_argument("--num-codebooks", "-k", type=_positive_int, metavar="K", help="codebooks to keep (RVQ)")
    p.add_argument("--device", default="auto", help="torch device (default: auto; cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--batch-size", "-b", type=_positive_int, default=16, metavar="N", help="clips per batch (16)")
    p.add_argument("--max-batch-seconds", type=float, default=None, metavar="S",
                   help="cap on padded audio seconds per batch (bounds memory with long clips)")
    p.add_argument("--shard-size", type=_positive_int, default=1000, metavar="N", help="clips per shard (1000)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="audio loading processes (2)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract_tokens)

    p = sub.add_parser("tts", help="text -> speech with a trained TTS model",
                       description="Speak TEXT with a TTS model (audiocodec.TTS.load). With --voice (and its "
                                   "transcript --voice-text) the voice is cloned from a reference clip.")
    p.add_argument("text", metavar="TEXT", help="what to say (or @FILE to read it from a file)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="output wav file")
    p.add_argument("--model", "-m", default=None, metavar="TTS",
                   help="TTS model folder, file or embedded name (default: the embedded tts-mini)")
    p.add_argument("--codec", default=None, metavar="M", help="codec (default: the one the model records)")
    p.add_argument("--voice", default=None, metavar="REF.wav", help="reference clip of the voice to clone")
    p.add_argument("--voice-text", default=None, metavar="TEXT", help="transcript of --voice")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=25)
    p.add_argument("--top-p", type=float, default=0.8)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stream", action="store_true", help="generate in streaming mode and report latency")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: torch.compile the decoding step before capturing it (faster; ~1 min to compile)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_tts)

    p = sub.add_parser("probe", help="linear probe: how much word / phone content the first codebook carries",
                       description="Encode two manifests (with 'text') and fit a linear classifier from each clip's "
                                   "bag of first-codebook tokens to the words (or espeak-ng phones) of its "
                                   "transcript on TRAIN, scored on TEST (micro-F1, mAP). No external model.")
    p.add_argument("train", metavar="TRAIN.jsonl")
    p.add_argument("test", metavar="TEST.jsonl")
    p.add_argument("--model", "-m", **model_kw)
    p.add_argument("--kind", choices=["word", "phone"], default="word")
    p.add_argument("--min-count", type=_positive_int, default=3, help="labels seen at least N times in TRAIN")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, metavar="OUT.json")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("sing", help="lyrics + description -> a song with a trained song model",
                       description="Generate a song (audiocodec.SongGenerator): the mixture to OUT.wav and, for "
                                   "dual-track models, the stems beside it (OUT.vocal.wav, OUT.accompaniment.wav).")
    p.add_argument("--lyrics", required=True, metavar="FILE", help="lyrics text file (or '-' for stdin)")
    p.add_argument("--description", default="", help="genre, instruments, mood, tempo ...")
    p.add_argument("--voice", default=None, metavar="REF.wav", help="a reference voice (about 3 s)")
    p.add_argument("--model", "-m", default=None, metavar="SONG",
                   help="song model folder, file or embedded name (default: the embedded song-mini)")
    p.add_argument("--codec", default=None, metavar="M", help="codec (default: the one the model records)")
    p.add_argument("--mode", default=None, help="token mode (default: the model's)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds (longer than the training window: "
                                                               "continued window by window)")
    p.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance (1: none)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=250)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: torch.compile the decoding step before capturing it (faster; ~1 min to compile)")
    p.add_argument("--stream", action="store_true",
                   help="generate streaming (the mixture in 0.5 s chunks as they are decoded; no stems) and report "
                        "the first chunk's latency")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sing)

    p = sub.add_parser("eval-tts", help="synthesise a test manifest and score it (MCD-DTW, duration, WER)",
                       description="Speak each record's text (cloning the voice from another clip of the same "
                                   "speaker) and compare with the record's audio: mel-cepstral distortion after DTW, "
                                   "duration ratio, and WER/CER with a local ASR model (--asr-model).")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("--model", "-m", default=None, metavar="TTS",
                   help="TTS model folder, file or embedded name (default: the embedded tts-mini)")
    p.add_argument("--codec", default=None, metavar="M")
    p.add_argument("--asr-model", default=None, metavar="DIR", help="local transformers ASR model for WER/CER")
    p.add_argument("--no-clone", action="store_true", help="do not clone voices (use the model's own voice)")
    p.add_argument("--limit", type=int, default=None, help="score the first N records")
    p.add_argument("--out", default=None, metavar="DIR", help="write the syntheses and metrics.json here")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval_tts)

    # commands that own their argument parsing: everything after the name is passed on
    for name, help_text in (("train", "train a model from a recipe config (run under torchrun for many GPUs)"),
                            ("prepare", "write a jsonl manifest for a corpus in its official layout"),
                            ("semantic", "teacher features for semantic distillation (audiocodec semantic -h)"),
                            ("demo", "start the web demo (demos/app.py of a checkout; audiocodec demo -h)")):
        p = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(name))
    return parser


def cmd_extract_tokens(args) -> int:
    from .data.extract import extract_tokens
    from .train.distributed import barrier, init_distributed, shutdown
    device = None if args.device == "auto" else _device(args.device)
    dist_info = init_distributed("auto" if device is None else device.type)
    try:
        device = dist_info.device if device is None or device.type == "cuda" else device
        codec = resolve_model(args.model, str(device), args.num_codebooks)
        stats = extract_tokens(args.manifest, args.output, codec, batch_size=args.batch_size,
                               max_batch_seconds=args.max_batch_seconds, shard_size=args.shard_size,
                               num_workers=args.workers, rank=dist_info.rank, world_size=dist_info.world_size,
                               progress=not args.quiet)
        barrier()
    finally:
        shutdown(dist_info)
    who = f"rank {dist_info.rank}: " if dist_info.distributed else ""
    print(f"{who}encoded {stats['encoded']} clip(s) into {len(stats['shards'])} shard(s) in {args.output}; "
          f"{stats['skipped_existing']} already there, {len(stats['failed'])} failed", file=sys.stderr)
    for item, reason in list(stats["failed"].items())[:20]:
        print(f"  failed {item}: {reason}", file=sys.stderr)
    return 1 if stats["failed"] else 0


def _load_tts(args):
    """The TTS of ``--model`` (default: the embedded one) with ``--codec`` on ``--device``."""
    from .codecs.embedded import DEFAULT_TTS
    from .tts import TTS
    model = args.model or DEFAULT_TTS
    if model is None:
        raise ConfigError("no TTS model: give --model (a trained TTS folder or file)")
    return TTS.load(model, codec=args.codec, device=_device(args.device), compile=getattr(args, "compile", False))


def cmd_tts(args) -> int:
    tts = _load_tts(args)
    text = Path(args.text[1:]).read_text() if args.text.startswith("@") else args.text
    opts = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                repetition_penalty=args.repetition_penalty, greedy=args.greedy, seed=args.seed)
    if args.stream:
        timings: dict = {}
        chunks = list(tts.synthesize(text, voice=args.voice, voice_text=args.voice_text, stream=True,
                                     timings=timings, **opts))
        audio = torch.cat(chunks)
        print(f"first chunk after {timings.get('first_chunk_s', float('nan')) * 1000:.0f} ms, "
              f"{len(chunks)} chunks, {timings.get('total_s', float('nan')):.2f} s in all", file=sys.stderr)
    else:
        audio = tts.synthesize(text, voice=args.voice, voice_text=args.voice_text, **opts)
    path = audio_utils.save_audio(args.output, audio[None], tts.sample_rate)
    print(f"wrote {path} ({audio.shape[-1] / tts.sample_rate:.2f} s)", file=sys.stderr)
    return 0


def cmd_probe(args) -> int:
    from .data.manifest import read_manifest
    from .metrics.probe import token_probe
    codec = resolve_model(args.model, args.device)
    result = token_probe(codec, read_manifest(args.train), read_manifest(args.test), kind=args.kind,
                         min_count=args.min_count)
    print(f"{args.kind} probe on {result['test_items']} clips ({result['labels']} labels): micro-F1 "
          f"{result['micro_f1']:.3f} (label frequencies alone: {result['label_frequency_f1']:.3f}), "
          f"mAP {result['map']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def cmd_sing(args) -> int:
    from .song import SongGenerator
    lyrics = sys.stdin.read() if args.lyrics == "-" else Path(args.lyrics).read_text(encoding="utf-8")
    if not lyrics.strip():
        raise ConfigError(f"--lyrics {args.lyrics}: no lyrics in it")
    from .codecs.embedded import DEFAULT_SONG, default_song_path
    model = args.model or (DEFAULT_SONG if default_song_path() is not None else None)
    if model is None:
        raise ConfigError("no song model: give --model (a trained song model folder or file)")
    generator = SongGenerator.load(model, codec=args.codec, device=_device(args.device), compile=args.compile)
    options = dict(voice=args.voice, mode=args.mode, duration=args.duration, cfg_scale=args.cfg_scale,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    out = Path(args.output)
    if args.stream:
        start, first, chunks = time.perf_counter(), None, []
        for chunk in generator.generate(lyrics, args.description, stream=True, **options):
            first = time.perf_counter() - start if first is None else first
            chunks.append(chunk)
        audio = torch.cat(chunks)
        path = audio_utils.save_audio(out, audio[None], generator.sample_rate)
        print(f"first chunk after {first * 1000:.0f} ms, {len(chunks)} chunks, {time.perf_counter() - start:.2f} s "
              f"in all; wrote {path} ({audio.shape[-1] / generator.sample_rate:.2f} s)", file=sys.stderr)
        return 0
    song = generator.generate(lyrics, args.description, **options)
    written = [audio_utils.save_audio(out, song.audio[None], song.sample_rate)]
    for name, stem in (song.stems or {}).items():
        written.append(audio_utils.save_audio(out.with_suffix(f".{name}{out.suffix or '.wav'}"), stem[None],
                                              song.sample_rate))
    print(f"wrote {', '.join(str(w) for w in written)} ({song.audio.shape[-1] / song.sample_rate:.2f} s)",
          file=sys.stderr)
    return 0


def cmd_eval_tts(args) -> int:
    from .tts.evaluate import evaluate_tts
    tts = _load_tts(args)
    result = evaluate_tts(tts, args.manifest, out_dir=args.out, clone=False if args.no_clone else None,
                          asr_model=args.asr_model, limit=args.limit, greedy=args.greedy)
    print(f"{'metric':<16}{'mean':>10}{'std':>10}{'n':>6}")
    for key, v in result["summary"].items():
        print(f"{key:<16}{v['mean']:>10.3f}{v['std']:>10.3f}{v['n']:>6}")
    return 0


def _run_demo(argv: Sequence[str]) -> int:
    """Run ``demos/app.py`` of the checkout this package was installed from (``pip install -e .``)."""
    import importlib.util
    app = Path(__file__).resolve().parents[1] / "demos" / "app.py"
    if not app.is_file():
        raise ConfigError(f"the web demo lives in the repository ({app} is missing): clone it and run "
                          "'make demo', or install the package from the checkout with pip install -e '.[demo]'")
    spec = importlib.util.spec_from_file_location("audiocodec_demo_app", app)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses in the app look their module up
    spec.loader.exec_module(module)
    return int(module.main(list(argv)) or 0)


def _delegate(name: str) -> Callable:
    def run(args) -> int:
        if name == "train":
            from .train.cli import main as train_main
            return train_main(args.rest)
        if name == "semantic":
            from .semantic.cli import main as semantic_main
            return semantic_main(args.rest)
        if name == "demo":
            return _run_demo(args.rest)
        from .data.prepare import main_prepare
        return main_prepare(args.rest)
    return run


def run_parser(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and run the chosen command's ``func``: errors of ours become ``error: ...`` and exit
    status 2, Ctrl-C status 130. Shared by every command-line entry point of the package."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AudioCodecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``audiocodec`` command; returns the exit status."""
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
