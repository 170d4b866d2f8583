"""Command line of the semantic-distillation data stages (``python -m audiocodec.semantic``).

Teacher features of the clips of one or more manifests, into a :class:`~audiocodec.semantic.FeatureCache`
folder (resumable: run it again to continue; ``--rank`` / ``--world-size`` split the items between processes)::

    # HuBERT-base, mean of all hidden states (SpeechTokenizer), for a 16 kHz, 50 Hz codec
    python -m audiocodec.semantic features data/train.jsonl data/valid.jsonl feats/hubert_avg --teacher speech \\
        --teacher-path models/hubert-base-ls960 --layer avg
    # BERT-base of the manifest's transcripts (DM-Codec's LM-guided targets)
    python -m audiocodec.semantic features data/train.jsonl feats/bert_avg --teacher text \\
        --teacher-path models/bert-base-uncased
    # a tiny random teacher (smoke runs, tests): transformers config arguments as JSON (or a .json file)
    python -m audiocodec.semantic features data/train.jsonl feats/toy --teacher speech \\
        --teacher-config '{"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "intermediate_size": 32, "conv_dim": [8, 8, 8, 8, 8, 8, 8]}' --seed 0

The clips of a manifest that have a transcript (a language teacher needs one)::

    python -m audiocodec.semantic transcribed data/train.jsonl data/train_text.jsonl

Nothing is downloaded: ``--teacher-path`` is a local ``save_pretrained`` folder. Exit status: 0 on
success, 1 when some items failed (listed in ``<out>/failed.jsonl``; run again to retry them), 2 on an
error that stops the command.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError


def _layer(text: str):
    """``avg``, ``-1``, ``9`` or ``3,4,5`` (the mean of those hidden states)."""
    if text == "avg":
        return "avg"
    try:
        items = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected avg, an index or comma-separated indices, got {text!r}") from None
    return items[0] if len(items) == 1 else items


def _json_arg(text: str, what: str) -> dict:
    """A JSON object given inline or as a file path."""
    path = Path(text)
    source = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        value = json.loads(source)
    except ValueError as e:
        raise ConfigError(f"{what}: not a JSON object or a .json file: {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {value!r}")
    return value


def _device(spec: str):
    import torch
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiocodec semantic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("features", help="teacher features of manifests into a feature cache folder")
    f.add_argument("manifest", nargs="+", help="jsonl manifest(s) (path, duration, sample_rate; text for "
                                                "--teacher text); their clip ids must differ")
    f.add_argument("out", help="cache folder (created; an interrupted run continues)")
    f.add_argument("--teacher", choices=("speech", "text"), required=True,
                   help="speech: HuBERT / wav2vec2 / WavLM of the audio; text: BERT of the transcript")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher-path", "--teacher_path", metavar="DIR",
                     help="a local transformers model folder (save_pretrained layout)")
    src.add_argument("--teacher-config", "--teacher_config", metavar="JSON",
                     help="random weights: transformers config arguments, as JSON or a .json file")
    f.add_argument("--model-type", default=None,
                   help="with --teacher-config: hubert | wav2vec2 | wavlm (speech), bert | roberta | electra (text)")
    f.add_argument("--seed", type=int, default=0, help="with --teacher-config: weight seed (default 0)")
    f.add_argument("--tokenizer", metavar="DIR", help="with --teacher-config --teacher text: a tokenizer folder")
    f.add_argument("--vocab", metavar="FILE", help="with --teacher-config --teacher text: a BERT vocab.txt "
                                                     "(default: a small character vocabulary)")
    f.add_argument("--layer", type=_layer, default="avg",
                   help="hidden states: avg (mean of all), an index, or comma-separated indices (default avg)")
    f.add_argument("--sample-rate", type=int, default=16000,
                   help="the codec's sample rate: audio is read at it (default 16000)")
    f.add_argument("--frame-rate", type=float, default=50.0, help="the codec's frame rate (default 50)")
    f.add_argument("--no-normalize", action="store_true",
                   help="speech: no per-clip zero-mean unit-variance input (default: the model folder's "
                        "preprocessor_config.json, else normalised)")
    f.add_argument("--shard-size", type=int, default=256, help="items per shard file (default 256)")
    f.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="storage precision (default float16)")
    f.add_argument("--rank", type=int, default=0, help="this process's share: items rank::world_size")
    f.add_argument("--world-size", type=int, default=1)
    f.add_argument("--max-items", type=int, default=None, help="stop after this many new items")
    f.add_argument("--device", default="auto", help="torch device of the teacher (default: auto)")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    f.set_defaults(func=_features)

    t = sub.add_parser("transcribed", help="the records of a manifest that have a transcript")
    t.add_argument("manifest", help="input jsonl manifest")
    t.add_argument("out", help="output jsonl manifest (paths relative to its folder)")
    t.set_defaults(func=_transcribed)
    return p


def _features(args) -> int:
    from ..data.manifest import read_manifest
    from .cache import FAILED_NAME, precompute_features
    from .teachers import build_teacher
    spec: dict = {"layer": args.layer}
    if args.teacher_path is not None:
        for name in ("model_type", "tokenizer", "vocab"):
            if getattr(args, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} goes with --teacher-config, not --teacher-path")
        spec["path"] = args.teacher_path
    else:
        spec.update(config=_json_arg(args.teacher_config, "--teacher-config"), seed=args.seed,
                    model_type=args.model_type)
        if args.teacher == "text":
            spec.update(tokenizer=args.tokenizer, vocab=args.vocab)
        elif args.tokenizer is not None or args.vocab is not None:
            raise ConfigError("--tokenizer / --vocab are options of a text teacher")
    if args.no_normalize:
        if args.teacher != "speech":
            raise ConfigError("--no-normalize is an option of a speech teacher")
        spec["normalize"] = False
    teacher = build_teacher(args.teacher, spec, sample_rate=args.sample_rate, frame_rate=args.frame_rate,
                            where="teacher")
    device = _device(args.device)
    teacher.to(device)
    info = {"kind": args.teacher}
    if args.teacher_config is not None:
        info["random_config"] = {"seed": args.seed, "model_type": args.model_type}
    records = [r for m in args.manifest for r in read_manifest(m)]
    cache = precompute_features(records, teacher, args.out, shard_size=args.shard_size, dtype=args.dtype,
                                rank=args.rank, world_size=args.world_size, max_items=args.max_items,
                                info=info, progress=not args.quiet)
    out = Path(args.out)
    failed_file = out / (FAILED_NAME if args.world_size == 1 else f"failed-{args.rank:03d}.jsonl")
    failed = len(failed_file.read_text().splitlines()) if failed_file.is_file() else 0
    print(json.dumps({"cache": str(out), "items": len(cache), "failed": failed, "dim": cache.dim,
                      "frame_rate": cache.frame_rate}))
    if failed:
        print(f"{failed} item(s) failed: see {failed_file}", file=sys.stderr)
    return 1 if failed else 0


def _transcribed(args) -> int:
    from ..data.manifest import read_manifest, write_manifest
    records = read_manifest(args.manifest)
    kept = [r for r in records if isinstance(r.get("text"), str) and r["text"].strip()]
    if not kept:
        raise ConfigError(f"{args.manifest}: no record has a transcript (`text`)")
    write_manifest(args.out, kept)
    print(json.dumps({"manifest": str(args.out), "kept": len(kept), "dropped": len(records) - len(kept)}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``audiocodec semantic`` / ``python -m audiocodec.semantic``; returns the exit status."""
    from ..cli import run_parser
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
