"""Where a tier keeps its state, and how it keeps it private.

A state directory holds task scripts and outputs (passwords included), CURVE secrets and the agents'
spools: only the user that runs the tier may read it. Every directory a tier creates there is 0700 and
every file 0600, whatever the process umask (0600 & ~umask is 0600 for any umask that lets the owner
write; an explicit chmod covers the others). State left too open by an earlier version is tightened when
a tier starts, with one WARNING line per path.
"""
from __future__ import annotations

import logging
import os
import stat

from mschedule.utils.defaults import DEFAULT_STATE_DIR, FALLBACK_STATE_DIR

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_OPEN_TO_OTHERS = 0o077


class StateDirError(Exception):
    """The state directory cannot be created or written."""


def tighten(path: str) -> bool:
    """Take group and other permissions off ``path`` if it has any; True when it had to.

    A missing path or a symlink is left alone (chmod would follow the link out of the state directory).
    A path this user cannot chmod (someone else's) is logged and left: its owner can read it anyway.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not mode & _OPEN_TO_OTHERS:
        return False
    try:
        os.chmod(path, mode & ~_OPEN_TO_OTHERS)
    except OSError as exc:
        log.warning("%s is open to other users (mode %04o) and cannot be tightened: %s", path, mode, exc.strerror)
        return False
    log.warning("%s was open to other users (mode %04o): now %04o", path, mode, mode & ~_OPEN_TO_OTHERS)
    return True


def private_dir(path: str) -> str:
    """``path`` as a directory only its owner can use: created 0700 (missing parents as the umask says),
    or tightened when it exists. Returns ``path``.

    Raises:
        OSError: it cannot be created.
    """
    try:
        os.makedirs(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        tighten(path)
    else:
        os.chmod(path, PRIVATE_DIR_MODE)  # exactly, even under a umask that takes owner bits
    return path


def private_opener(path: str, flags: int) -> int:
    """``open(path, mode, opener=private_opener)``: a file created 0600, and a file that already
    existed (a stale ``.tmp``) made 0600 too."""
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_file(path: str) -> None:
    """Create ``path`` empty and 0600 if it is missing, tighten it if it exists (before a library such
    as SQLite opens it with its own default mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: str, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` (0600) through a temporary name and a rename: a crash leaves the old
    file or the new one, never half of one. ``fsync`` makes the data durable before the rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb", opener=private_opener) as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _usable_dir(path: str) -> bool:
    """Created (0700) or already there and writable; then made private. A directory this user may not
    write (the system default for a non-root user) is not touched."""
    try:
        if not os.path.isdir(path):
            private_dir(path)
    except OSError:
        return False
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    tighten(path)  # one created by an earlier version, or by hand
    return True


def resolve_state_dir(requested: str | None) -> str:
    """The state directory to use, private to this user (0700).

    An explicit ``requested`` directory must be writable. Without one, the system default
    ``/var/lib/mschedule`` is used, or ``~/.mschedule`` when that is not writable (not root).

    Raises:
        StateDirError: no usable directory.
    """
    if requested:
        path = os.path.abspath(os.path.expanduser(requested))
        if not _usable_dir(path):
            raise StateDirError(f"state dir {path} is not writable")
        return path
    for candidate in (DEFAULT_STATE_DIR, os.path.expanduser(FALLBACK_STATE_DIR)):
        if _usable_dir(candidate):
            return candidate
    raise StateDirError(f"neither {DEFAULT_STATE_DIR} nor {FALLBACK_STATE_DIR} is writable")
