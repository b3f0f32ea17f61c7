"""mschedule master: ``python appserver.py``; agent keys: ``python appserver.py keys list|accept|reject|delete``.
The code is in mschedule/master/main.py; this script is the entry point the Makefile, the tests and the docs use."""
from __future__ import annotations

import sys

from mschedule.master.main import main

if __name__ == "__main__":
    sys.exit(main())
