"""CURVE key pairs on disk, and how a tier finds the keys it is given on the command line.

Files: ``<name>.key`` holds the public key, ``<name>.key_secret`` the secret key; both as Z85 text
(40 characters), one line, mode 0600 in a 0700 directory (see :mod:`mschedule.utils.statedir`). A key given on
the command line may be that text itself or a path to a file holding it.
"""
from __future__ import annotations

import os

import zmq

from mschedule.utils.statedir import private_dir, tighten, write_private

Z85_KEY_LENGTH = 40


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed."""


def _read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(key) != Z85_KEY_LENGTH:
        raise KeyFileError(f"{path}: not a CURVE key (expected 40 Z85 characters)")
    return key


def load_or_create_keypair(directory: str, name: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` from ``<directory>/<name>.key[_secret]``, created on first use; the
    directory and both files are made private if an earlier version left them open."""
    public_path = os.path.join(directory, f"{name}.key")
    secret_path = public_path + "_secret"
    private_dir(directory)
    if os.path.exists(secret_path):
        tighten(secret_path)
        tighten(public_path)
        secret = _read_key(secret_path)
        public = _read_key(public_path) if os.path.exists(public_path) else zmq.curve_public(secret)
        return public, secret
    public, secret = zmq.curve_keypair()
    write_private(secret_path, secret + b"\n")
    write_private(public_path, public + b"\n")
    return public, secret


def public_key_arg(value: str) -> bytes:
    """A public key given as Z85 text or as a path to a ``.key`` file."""
    if len(value) == Z85_KEY_LENGTH and not os.path.exists(value):
        return value.encode("ascii")
    return _read_key(value)


def client_keypair_arg(secret_path: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``.key_secret`` file (the public key is derived from it)."""
    secret = _read_key(secret_path)
    return zmq.curve_public(secret), secret


def fingerprint(public: bytes | str) -> str:
    """A short, stable way to show a key to an operator."""
    text = public.decode("ascii") if isinstance(public, bytes) else public
    return text[:8] + "…" + text[-4:]
