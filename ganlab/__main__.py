"""``python -m ganlab``: the same as the ``ganlab`` command (e.g. to run a given checkout's code)."""

import sys

from ganlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
