"""mschedule web tier: ``python appwebserver.py --master tcp://127.0.0.1:9000 --port 8080``.
The code is in mschedule/webserver/main.py; this script is the entry point the Makefile, the tests and the docs use."""
from __future__ import annotations

import sys

from mschedule.webserver.main import main

if __name__ == "__main__":
    sys.exit(main())
