"""Logging set up once per process, at the entry point (the design's ``getlogger``, done right)."""
from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(tier: str, log_dir: str | None = None, level: str = "INFO") -> None:
    """Send every logger of the process to stderr, or to ``<log_dir>/<tier>.log``.

    Raises:
        OSError: the log directory cannot be created or the file opened.
    """
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(os.path.join(log_dir, f"{tier}.log"))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # zerorpc logs every remote exception with a traceback; our handler logs what matters
    logging.getLogger("zerorpc").setLevel(logging.WARNING)
