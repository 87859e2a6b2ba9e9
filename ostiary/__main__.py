"""``python -m ostiary``: the same as the ``ostiary`` console script."""

from __future__ import annotations

import sys

from ostiary.cli import main

if __name__ == "__main__":
    sys.exit(main())
