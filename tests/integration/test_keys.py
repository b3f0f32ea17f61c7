"""Agent keys under load: what a registration may carry, how many keys may wait, deciding many at once.

Registrations come from raw zerorpc clients, each with a CURVE key pair of its own (a new key is what an
agent that never registered before has), so a test can make hundreds of keys in seconds.
"""
from __future__ import annotations

import contextlib
import subprocess
import time
import uuid

import pytest
import zmq

from mschedule.transport import CurveClientKeys, close_quietly, make_client
from mschedule.utils.exceptions import KeyPending, MessageError, Unauthorized
from tests.integration.harness import AGENT_TIMEOUT, PYTHON, ROOT, Stack, scaled, wait_until

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
           (hello(session="s" * 1000), "payload.session"), (hello(kind="heartbeat", session="s" * 1000),
                                                            "payload.session")]
    with raw_agent(stack) as client:
        for msg, field in bad:
            with pytest.raises(MessageError) as refused:
                client.send(msg)
            assert refused.value.msg.startswith(field), (field, refused.value)
            assert refused.value.field == field.split("[")[0], (field, refused.value.field)  # payload.ip[1]: payload.ip
        assert keys(stack) == []  # nothing was kept of any of them
        # a heartbeat carries no hostname (it is not read): an unknown agent's is told to register, no key kept
        assert client.send(hello(kind="heartbeat", hostname="h" * 10000))["known"] is False
        assert keys(stack) == []
        at_limits = hello(hostname="h" * 253, ip=["10.0.0.1"] * 64,
                          labels={f"{i:02d}" + "k" * 61: "v" * 255 for i in range(64)})
        with pytest.raises(KeyPending):
            client.send(at_limits)
    (record,) = keys(stack)
    assert record["state"] == "pending" and record["hostname"] == "h" * 253


def test_an_agent_with_an_oversized_label_says_so_at_start(tmp_path):
    label = "role=" + "v" * 256
    proc = subprocess.run([PYTHON, "app.py", "--insecure", "--state-dir", str(tmp_path), "--label", label],
                          cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "--label: value of 'role': 256 characters, more than 255" in proc.stderr


def send_outcome(client, msg: dict) -> dict | Exception:
    """The master's answer to ``msg``: its reply, or the typed error it refused it with."""
    try:
        return client.send(msg)
    except Unauthorized as exc:
        return exc


def register_new_keys(stack: Stack, count: int, hostname: str = "flood-{i}") -> list[dict | Exception]:
    """``count`` registrations, each from a new key pair on its own connection; their outcomes."""
    outcomes = []
    for i in range(count):
        with raw_agent(stack) as client:
            outcomes.append(send_outcome(client, hello(hostname=hostname.format(i=i))))
    return outcomes


def pending_ids(stack: Stack) -> list[str]:
    return [k["agent_id"] for k in keys(stack) if k["state"] == "pending"]


def test_pending_keys_are_capped_known_keys_keep_working_and_a_decision_frees_a_slot(stack):
    stack.master("--max-pending", "5", auto_accept=False)
    stack.web()
    stack.agents(1, wait=False, extra=("--hostname", "real-{i}"))
    (real,) = wait_until(lambda: pending_ids(stack), 15, what="the real agent's key pending")
    assert stack.api.post(f"/keys/{real}/accept")[0] == 200
    wait_until(lambda: stack.online_agents() == [real], 15, what="the accepted agent online")

    mine = zmq.curve_keypair()  # a pending key that asks again while the list is full
    with raw_agent(stack, mine) as client:
        first = send_outcome(client, hello("early-bird", hostname="early"))
    assert isinstance(first, KeyPending), first
    assert all(isinstance(r, KeyPending) for r in register_new_keys(stack, 4))
    assert len(pending_ids(stack)) == 5

    refused = register_new_keys(stack, 30, hostname="late-{i}")  # a flood beyond the cap
    for error in refused:  # refused outright (the master's PendingFull), not pending
        assert isinstance(error, Unauthorized) and not isinstance(error, KeyPending), error
        assert error.name == "Unauthorized" and "--max-pending is 5" in error.msg and "new key refused" in error.msg
    assert len(pending_ids(stack)) == 5 and not any(k["hostname"].startswith("late-") for k in keys(stack))
    # keys already known keep working: the pending one is still pending, the accepted agent stays online
    with raw_agent(stack, mine) as client:
        again = send_outcome(client, hello("early-bird", kind="heartbeat", hostname="early"))
    assert isinstance(again, KeyPending) and "refused" not in again.msg, again
    time.sleep(scaled(AGENT_TIMEOUT + 1))
    agent = stack.api.agents()[real]
    assert agent["online"] and agent["heartbeat_age"] < AGENT_TIMEOUT
    assert stack.api.run("echo still here", [real])["targets"][real]["output"] == "still here\n"
    # one refusal line for the whole flood (at most one more once the interval has passed), not thirty
    master_log = next(p for p in stack.procs if p.name == "master").log()
    assert 1 <= master_log.count("new agent key(s) in") <= 2, master_log
    assert "refused 1 new agent key(s)" in master_log and "(the last from hostname 'late-0')" in master_log
    assert "rpc refused" not in master_log  # neither a pending key nor a full list logs per call

    # a decision frees a slot: the next new key is pending again, and the one after is refused
    assert stack.api.post("/keys/early-bird/accept")[0] == 200
    after = register_new_keys(stack, 2, hostname="after-{i}")
    assert [type(r).__name__ for r in after] == ["RemoteKeyPending", "RemoteUnauthorized"], after
    assert len(pending_ids(stack)) == 5


def _keys_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "appserver.py", "--state-dir", str(stack.state), "--admin-bind",
                           stack.admin_endpoint, "keys", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def states(stack: Stack) -> dict[str, str]:
    return {k["agent_id"]: k["state"] for k in keys(stack)}


def test_keys_in_bulk_from_the_cli(stack):
    stack.master(auto_accept=False)
    stack.web()
    register_new_keys(stack, 6)
    ids = pending_ids(stack)  # oldest first
    accept = _keys_cli(stack, "accept", ids[0], ids[1], "no-such-agent", ids[0])
    assert accept.returncode == 1, accept  # one id failed: the others are done all the same
    assert accept.stdout.splitlines() == [f"accepted  {ids[0]}", f"accepted  {ids[1]}"]
    assert accept.stderr.strip() == "mschedule: no-such-agent: no key for agent no-such-agent"
    reject = _keys_cli(stack, "reject", "--all-pending")
    assert reject.returncode == 0 and reject.stdout.splitlines() == [f"rejected  {a}" for a in ids[2:]], reject
    assert states(stack) == {**dict.fromkeys(ids[:2], "accepted"), **dict.fromkeys(ids[2:], "rejected")}
    delete = _keys_cli(stack, "delete", ids[1], ids[2], ids[3])
    assert delete.returncode == 0 and delete.stdout.split() == ["deleted", ids[1], "deleted", ids[2], "deleted", ids[3]]
    assert sorted(states(stack)) == sorted([ids[0], *ids[4:]])
    nothing = _keys_cli(stack, "accept", "--all-pending")
    assert nothing.returncode == 0 and nothing.stdout == "" and "no key is pending" in nothing.stderr
    for bad in (("delete", "--all-pending"), ("accept",), ("accept", ids[0], "--all-pending"), ("list", ids[0])):
        refused = _keys_cli(stack, *bad)
        assert refused.returncode == 2 and "error:" in refused.stderr, (bad, refused)
    assert sorted(states(stack)) == sorted([ids[0], *ids[4:]])  # the bad commands changed nothing


def test_keys_in_bulk_over_http(stack):
    stack.master(auto_accept=False)
    stack.web()
    register_new_keys(stack, 5)
    ids = pending_ids(stack)
    status, answer = stack.api.post("/keys/accept", {"agent_ids": [ids[0], "no-such-agent", ids[1]]})
    assert status == 200, answer
    assert answer == {"done": 2, "failed": 1, "results": [
        {"agent_id": ids[0], "ok": True, "state": "accepted"},
        {"agent_id": "no-such-agent", "ok": False, "error": "no key for agent no-such-agent"},
        {"agent_id": ids[1], "ok": True, "state": "accepted"}]}
    status, answer = stack.api.post("/keys/reject", {"all_pending": True})
    assert status == 200 and answer["done"] == 3 and [r["agent_id"] for r in answer["results"]] == ids[2:]
    assert states(stack) == {**dict.fromkeys(ids[:2], "accepted"), **dict.fromkeys(ids[2:], "rejected")}
    status, answer = stack.api.post("/keys/delete", {"agent_ids": [ids[0], ids[4]]})
    assert status == 200
    assert answer["results"] == [{"agent_id": a, "ok": True, "deleted": True} for a in (ids[0], ids[4])]
    assert sorted(states(stack)) == sorted(ids[1:4])
    # the single-id routes are still there
    assert stack.api.post(f"/keys/{ids[2]}/accept")[1]["state"] == "accepted"
    for path, body, field in (("/keys/accept", {}, "agent_ids"), ("/keys/accept", {"agent_ids": []}, "agent_ids"),
                              ("/keys/reject", {"agent_ids": [3]}, "agent_ids"),
                              ("/keys/accept", {"agent_ids": ["a"] * 10001}, "agent_ids"),
                              ("/keys/accept", {"all_pending": "yes"}, "all_pending"),
                              ("/keys/accept", {"all_pending": True, "agent_ids": [ids[1]]}, "all_pending"),
                              ("/keys/delete", {"all_pending": True}, "all_pending"),
                              ("/keys/reject", {"agent_ids": [ids[1]], "force": True}, "force"),
                              ("/keys/accept", [ids[1]], "body")):
        status, answer = stack.api.post(path, body)
        assert status == 400 and answer["error"].startswith(field), (path, body, answer)
    assert stack.api.post("/keys/accept", raw=b"")[0] == 400
    assert states(stack)[ids[1]] == "accepted" and states(stack)[ids[3]] == "rejected"  # nothing changed
