"""The transport patches zerorpc's internals, so it runs only on the zerorpc release it was checked against."""
from __future__ import annotations

import os
import sys
from importlib import metadata

PINNED_ZERORPC = "0.6.3"
"""The zerorpc release whose internals mschedule/transport/ replaces (requirements.txt pins the same)."""


class TransportVersionError(RuntimeError):
    """The installed zerorpc is not the one the transport's patches were written and tested for."""


def installed_zerorpc() -> str:
    """The installed zerorpc distribution's version (``MSCHEDULE_FAKE_ZERORPC_VERSION`` overrides it, for the
    guard's own test)."""
    fake = os.environ.get("MSCHEDULE_FAKE_ZERORPC_VERSION")
    if fake:
        return fake
    try:
        return metadata.version("zerorpc")
    except metadata.PackageNotFoundError:
        return "none"


def require_pinned_zerorpc() -> None:
    """Raise TransportVersionError unless the installed zerorpc is :data:`PINNED_ZERORPC`."""
    found = installed_zerorpc()
    if found != PINNED_ZERORPC:
        raise TransportVersionError(
            f"zerorpc {found} is installed but mschedule's transport patches the internals of zerorpc "
            f"{PINNED_ZERORPC}: install requirements.txt (pip install -r requirements.txt)")


def exit_unless_pinned() -> None:
    """For entry points: refuse to start, with one line on stderr, on a zerorpc other than the pinned one."""
    try:
        require_pinned_zerorpc()
    except TransportVersionError as exc:
        sys.stderr.write(f"mschedule: {exc}\n")
        sys.exit(2)
