"""Agent keys under load: what a registration may carry, how many keys may wait, deciding many at once.

Registrations come from raw zerorpc clients, each with a CURVE key pair of its own (a new key is what an
agent that never registered before has), so a test can make hundreds of keys in seconds.
"""
from __future__ import annotations

import contextlib
import subprocess
import uuid

import pytest
import zmq

from tests.integration.harness import PYTHON, ROOT, Stack
from utils.rpc import CurveClientKeys, close_quietly, make_client

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def raw_agent(stack: Stack, keypair: tuple[bytes, bytes] | None = None):
    """A zerorpc client on the agents' endpoint with its own (new, unless given) CURVE key pair."""
    public, secret = keypair or zmq.curve_keypair()
    client = make_client(stack.master_endpoint, curve=CurveClientKeys(stack.keys.public, public, secret))
    try:
        yield client
    finally:
        close_quietly(client)


def hello(agent_id: str | None = None, kind: str = "register", **payload) -> dict:
    return {"type": kind, "payload": {"id": agent_id or uuid.uuid4().hex, "hostname": "h", "ip": [], **payload}}


def keys(stack: Stack) -> list[dict]:
    status, body = stack.api.get("/keys")
    assert status == 200, body
    return body


def test_oversized_registrations_are_refused_naming_the_field_and_leave_no_key(stack):
    stack.master(auto_accept=False)
    stack.web()
    bad = [(hello(hostname="h" * 254), "payload.hostname"),
           (hello(hostname="web\nforged log line"), "payload.hostname"),
           (hello("a" * 65), "payload.id"), (hello("../../etc"), "payload.id"),
           (hello(ip=["10.0.0.1"] * 65), "payload.ip"), (hello(ip=["10.0.0.1", "x" * 5000]), "payload.ip[1]"),
           (hello(labels={f"k{i}": "v" for i in range(65)}), "payload.labels"),
           (hello(labels={"k" * 64: "v"}), "payload.labels"), (hello(labels={"role": "v" * 256}), "payload.labels"),
           (hello(session="s" * 1000), "payload.session"), (hello(kind="heartbeat", hostname="h" * 10000),
                                                            "payload.hostname")]
    with raw_agent(stack) as client:
        for msg, field in bad:
            reply = client.send(msg)
            assert reply["ok"] is False and reply["error"].startswith(field), (field, reply)
        assert keys(stack) == []  # nothing was kept of any of them
        at_limits = hello(hostname="h" * 253, ip=["10.0.0.1"] * 64,
                          labels={f"{i:02d}" + "k" * 61: "v" * 255 for i in range(64)})
        reply = client.send(at_limits)
        assert reply["ok"] is False and reply["pending"] is True, reply
    (record,) = keys(stack)
    assert record["state"] == "pending" and record["hostname"] == "h" * 253


def test_an_agent_with_an_oversized_label_says_so_at_start(tmp_path):
    label = "role=" + "v" * 256
    proc = subprocess.run([PYTHON, "app.py", "--insecure", "--state-dir", str(tmp_path), "--label", label],
                          cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "--label: value of 'role': 256 characters, more than 255" in proc.stderr
