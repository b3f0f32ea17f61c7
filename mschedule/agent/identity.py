"""Who an agent is: a persisted uuid, its hostname and its usable IPv4 addresses."""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import uuid

import netifaces

from mschedule.utils.statedir import (  # noqa: F401 (StateDirError and resolve_state_dir are re-exported)
    StateDirError,
    private_dir,
    resolve_state_dir,
    tighten,
    write_private,
)

log = logging.getLogger(__name__)

AGENT_ID_FILE = "agent_id"


def load_or_create_agent_id(state_dir: str) -> str:
    """The agent id stored in ``<state_dir>/agent_id``, created (uuid4 hex) on first use.

    The file is written to a temporary name and renamed, so a crash never leaves a half id. The
    directory is made 0700 and the file 0600 (:mod:`mschedule.utils.statedir`).

    Raises:
        StateDirError: the directory or the file cannot be written.
    """
    path = os.path.join(state_dir, AGENT_ID_FILE)
    try:
        private_dir(state_dir)
        tighten(path)
    except OSError as exc:
        raise StateDirError(f"cannot create {state_dir}: {exc.strerror}") from None
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
    try:
        write_private(path, (agent_id + "\n").encode("ascii"), fsync=True)
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
