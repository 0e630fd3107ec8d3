"""``python -m serving.skew``: the command line without an app's loader (--reference NPZ)."""

import sys

from serving.skew.cli import main

if __name__ == "__main__":
    sys.exit(main())
