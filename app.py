"""mschedule agent: ``python app.py --master tcp://MASTER:9000``.
The code is in mschedule/agent/main.py; this script is the entry point the Makefile, the tests and the docs use."""
from __future__ import annotations

import sys

from mschedule.agent.main import main

if __name__ == "__main__":
    sys.exit(main())
