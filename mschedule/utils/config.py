"""argparse helpers: every flag has an ``MSCHEDULE_*`` environment fallback and shows its default."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


def env(name: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
    """Value of ``MSCHEDULE_<NAME>`` cast with ``cast``, or ``default`` when unset."""
    raw = os.environ.get(f"MSCHEDULE_{name}")
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        fail(f"MSCHEDULE_{name}={raw!r} is not a valid value")


def flag(text: str) -> bool:
    """An environment value read as a boolean flag."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def new_parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-dir", default=env("LOG_DIR", None),
                        help="write <log-dir>/<tier>.log instead of stderr [MSCHEDULE_LOG_DIR]")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        help="[MSCHEDULE_LOG_LEVEL]")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how an entry point refuses to start."""
    sys.stderr.write(f"mschedule: {message}\n")
    sys.exit(code)


def start_logging(tier: str, args: argparse.Namespace) -> None:
    """Configure logging from ``--log-dir``/``--log-level``; an unwritable log dir is one clear line."""
    from mschedule.utils.log import setup_logging

    try:
        setup_logging(tier, args.log_dir, args.log_level)
    except OSError as exc:
        fail(f"cannot write logs to {args.log_dir}: {exc.strerror}")
    raise_fd_limit()


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (systemd's soft default, 1024, is what a few
    hundred slow clients or a large fleet's connections use up); returns the limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
