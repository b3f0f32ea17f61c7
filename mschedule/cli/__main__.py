"""``python -m cli``: the same as the ``mschedule`` console script."""
from __future__ import annotations

import sys

from mschedule.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
