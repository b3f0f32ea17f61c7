"""File-mode checks shared by the tests: a tier's state must be 0700 directories and 0600 files."""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator


def open_paths(root: str | os.PathLike) -> dict[str, str]:
    """Every path under ``root`` (itself included) that is not a 0700 directory or a 0600 file, with
    its mode; ``{}`` when the whole tree is private."""
    found = {}
    for directory, _subdirs, files in os.walk(root):
        for path, want in [(directory, 0o700)] + [(os.path.join(directory, f), 0o600) for f in files]:
            bits = stat.S_IMODE(os.lstat(path).st_mode)
            if bits != want:
                found[os.path.relpath(path, root)] = oct(bits)
    return found


def mode(path: str | os.PathLike) -> str:
    return oct(stat.S_IMODE(os.lstat(path).st_mode))


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """The process umask set to ``value`` (children started meanwhile inherit it), then restored."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)
