#!/usr/bin/env python
"""Build the offline mini corpus: espeak-ng speakers reading generated sentences + fluidsynth music, 24 kHz
mono wav, with train/valid/test manifests whose valid/test speakers and sentences are not in train.

    python egs/mini/local/make_corpus.py data/mini --scale toy      # ~30 clips, < 1 min
    python egs/mini/local/make_corpus.py data/mini                  # default: a few hundred clips
    python egs/mini/local/make_corpus.py data/mini --scale large    # thousands

Installs espeak-ng, fluidsynth and fluid-soundfont-gm with install_tools.sh when they are missing (unless
--no-install). Exit status: 0 ok, 2 on error.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))   # the repository root, when run from a checkout

from audiocodec.data.synth import SCALES, ToolMissing, build_corpus, missing_tools  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--scale", choices=list(SCALES), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel renderers (default: CPU count, max 8)")
    p.add_argument("--force", action="store_true", help="render every clip again")
    p.add_argument("--no-install", action="store_true", help="never run install_tools.sh")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if missing_tools() and not args.no_install:
        subprocess.run(["bash", str(HERE / "install_tools.sh")], check=False)
    try:
        stats = build_corpus(args.out, scale=args.scale, seed=args.seed, workers=args.workers, force=args.force)
    except ToolMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
