"""Register many new agent keys fast, as a flood would: ``python -m tests.integration.flood ENDPOINT
MASTER_KEY COUNT HOSTNAME``; each registration comes from a CURVE key pair of its own, on its own
connection (``{i}`` in HOSTNAME is its number). Prints one JSON line: how many were answered KeyPending.

A separate process, so that the browser tests (Playwright's own greenlets) never share a thread with
gevent's hub.
"""
from __future__ import annotations

import json
import sys
import uuid

import gevent.pool
import zmq

from mschedule.transport import CurveClientKeys, close_quietly, make_client
from mschedule.utils.exceptions import KeyPending

CONCURRENCY = 32


def register_one(endpoint: str, master_key: bytes, hostname: str) -> bool:
    """Whether the registration left the key pending (the master answers that with a KeyPending error)."""
    public, secret = zmq.curve_keypair()
    client = make_client(endpoint, curve=CurveClientKeys(master_key, public, secret))
    try:
        client.send({"type": "register", "payload": {"id": uuid.uuid4().hex, "hostname": hostname,
                                                     "ip": ["10.9.8.7"]}})
    except KeyPending:
        return True
    finally:
        close_quietly(client)
    return False


def flood(endpoint: str, master_key: bytes, count: int, hostname: str) -> list[bool]:
    pool = gevent.pool.Pool(CONCURRENCY)
    jobs = [pool.spawn(register_one, endpoint, master_key, hostname.format(i=i)) for i in range(count)]
    gevent.joinall(jobs, raise_error=True)
    return [job.value for job in jobs]


if __name__ == "__main__":
    endpoint, key_path, count, pattern = sys.argv[1:5]
    with open(key_path, "rb") as f:
        key = f.read().strip()
    replies = flood(endpoint, key, int(count), pattern)
    print(json.dumps({"pending": sum(replies), "replies": len(replies)}))
