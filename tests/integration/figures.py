"""Figures the fault tests produce, collected for docs/reliability.md (scripts/reliability_report.py).

A test calls ``record(name, **numbers)``; when MSCHEDULE_FIGURES names a file, the figures are appended to
it as JSON lines. Without it, recording does nothing.
"""
from __future__ import annotations

import json
import os
import time


def record(name: str, **figures) -> None:
    path = os.environ.get("MSCHEDULE_FIGURES")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"test": name, "at": time.time(), **figures}) + "\n")
