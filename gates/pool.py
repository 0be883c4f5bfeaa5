"""python -m gates.pool: the image pool command line (gates/cli/pool.py)."""

import sys

from .cli.pool import main

if __name__ == "__main__":
    sys.exit(main())
