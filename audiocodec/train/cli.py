"""``python -m audiocodec.train CONFIG.yaml [--set key=value ...] [--run-dir DIR]`` (also ``audiocodec train``).

The same command runs on one process, on all GPUs of a node and on several nodes::

    python -m audiocodec.train recipes/codec/x.yaml --run-dir exp/x
    torchrun --nproc_per_node 8 -m audiocodec.train recipes/codec/x.yaml --run-dir exp/x
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint host0:29500 -m audiocodec.train recipes/codec/x.yaml --run-dir exp/x

Run it again to resume from the newest valid checkpoint (``trainer.resume: auto``). ``--init-from``
starts from other weights (fine-tuning). Exit status: 0 done, 2 bad config / checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..config import load_yaml
from ..errors import AudioCodecError


def build_parser(prog: str = "python -m audiocodec.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train a model from a YAML config.")
    p.add_argument("config", help="training config (YAML: name, task, trainer, optim)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set trainer.batch_size=8 "
                        "(repeatable; unknown keys are errors)")
    p.add_argument("--run-dir", help="run folder (default: exp/<name>, name from the config or the file name)")
    p.add_argument("--resume", help="auto (default) | never | a checkpoint folder")
    p.add_argument("--init-from", help="weights to initialise from when not resuming (fine-tuning)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .trainer import Trainer
    try:
        config = load_yaml(args.config)
        overrides = list(args.overrides)
        if args.resume is not None:
            overrides.append({"trainer": {"resume": args.resume}})
        if args.init_from is not None:
            overrides.append({"trainer": {"init_from": args.init_from}})
        name = config.get("name") or Path(args.config).stem
        run_dir = Path(args.run_dir) if args.run_dir else Path("exp") / str(name)
        trainer = Trainer(config, run_dir, overrides=overrides)
        trainer.fit()
    except (AudioCodecError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
