"""``python -m audiocodec.train``: see :mod:`audiocodec.train.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
