"""``python -m audiocodec.semantic``: see :mod:`audiocodec.semantic.cli`."""
import sys

from .cli import main

sys.exit(main())
