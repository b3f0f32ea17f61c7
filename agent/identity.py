"""Who an agent is: a persisted uuid, its hostname and its usable IPv4 addresses."""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import uuid

import netifaces

from utils.defaults import DEFAULT_STATE_DIR, FALLBACK_STATE_DIR

log = logging.getLogger(__name__)

AGENT_ID_FILE = "agent_id"


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


def load_or_create_agent_id(state_dir: str) -> str:
    """The agent id stored in ``<state_dir>/agent_id``, created (uuid4 hex) on first use.

    The file is written to a temporary name and renamed, so a crash never leaves a half id.

    Raises:
        StateDirError: the directory or the file cannot be written.
    """
    path = os.path.join(state_dir, AGENT_ID_FILE)
    try:
        with open(path, encoding="ascii") as f:
            agent_id = f.read().strip()
        if agent_id:
            return agent_id
        log.warning("empty %s: creating a new agent id", path)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise StateDirError(f"cannot read {path}: {exc}") from None
    agent_id = uuid.uuid4().hex
    tmp = f"{path}.tmp"
    try:
        os.makedirs(state_dir, exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            f.write(agent_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StateDirError(f"cannot write {path}: {exc.strerror}") from None
    log.info("agent %s: new id stored in %s", agent_id, path)
    return agent_id


def is_usable_ipv4(address: str) -> bool:
    """True for an address worth showing an operator: not loopback, multicast, link-local,
    reserved or unspecified."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_reserved or ip.is_unspecified)


def local_ipv4_addresses() -> list[str]:
    """The host's usable IPv4 addresses, in interface order, without duplicates."""
    found: list[str] = []
    for interface in netifaces.interfaces():
        try:
            entries = netifaces.ifaddresses(interface).get(netifaces.AF_INET) or []
        except ValueError:  # the interface vanished between the two calls
            continue
        for entry in entries:
            address = entry.get("addr", "")
            if is_usable_ipv4(address) and address not in found:
                found.append(address)
    return found


def hostname() -> str:
    return socket.gethostname()
