#!/usr/bin/env python
"""Build the offline mini song corpus: fluidsynth accompaniment from generated MIDI, vocals sung by espeak-ng
voices on the melody's pitches, stems kept separate, descriptions from the metadata; 24 kHz mono wav with
train/valid/test manifests (mixture, .vocal, .accompaniment; same ids) whose valid/test lyrics lines (and
test singers) are not in train.

    python egs/mini/local/make_song_corpus.py data/songs --scale toy      # 12 songs, a few seconds
    python egs/mini/local/make_song_corpus.py data/songs                  # default: 300 songs
    python egs/mini/local/make_song_corpus.py data/songs --scale large    # 3000 songs

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

from audiocodec.data.song_synth import SCALES, build_song_corpus  # noqa: E402
from audiocodec.data.synth import missing_tools  # noqa: E402
from audiocodec.errors import AudioCodecError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--scale", choices=list(SCALES), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel renderers (default: CPU count, max 8)")
    p.add_argument("--force", action="store_true", help="render every song again")
    p.add_argument("--no-install", action="store_true", help="never run install_tools.sh")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if missing_tools() and not args.no_install:
        subprocess.run(["bash", str(HERE / "install_tools.sh")], check=False)
    try:
        stats = build_song_corpus(args.out, scale=args.scale, seed=args.seed, workers=args.workers,
                                  force=args.force)
    except (AudioCodecError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
