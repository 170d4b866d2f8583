import sys

from . import main_prepare

sys.exit(main_prepare())
