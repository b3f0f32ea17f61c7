"""Where a tier keeps its state: an explicit directory, or the system default with a per-user fallback."""
from __future__ import annotations

import os

from utils.defaults import DEFAULT_STATE_DIR, FALLBACK_STATE_DIR


class StateDirError(Exception):
    """The state directory cannot be created or written."""


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def resolve_state_dir(requested: str | None) -> str:
    """The state directory to use.

    An explicit ``requested`` directory must be writable. Without one, the system default
    ``/var/lib/mschedule`` is used, or ``~/.mschedule`` when that is not writable (not root).

    Raises:
        StateDirError: no usable directory.
    """
    if requested:
        path = os.path.abspath(os.path.expanduser(requested))
        if not _writable_dir(path):
            raise StateDirError(f"state dir {path} is not writable")
        return path
    for candidate in (DEFAULT_STATE_DIR, os.path.expanduser(FALLBACK_STATE_DIR)):
        if _writable_dir(candidate):
            return candidate
    raise StateDirError(f"neither {DEFAULT_STATE_DIR} nor {FALLBACK_STATE_DIR} is writable")
