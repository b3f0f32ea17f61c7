"""Attacks on the agents' ``progress`` message: unaccepted keys, another agent's id, targets not running,
offsets at the edges, data at the size limit and a flood from one key. The master must stay responsive, a
real agent's live output must stay its own, and the master's memory bounded."""
from __future__ import annotations

import base64
import os
import time

import pytest
import zerorpc
import zmq

from mschedule.transport import CurveClientKeys, make_client
from mschedule.utils.exceptions import MessageError, Unauthorized
from mschedule.utils.messages import MAX_PROGRESS_BYTES
from tests.integration.harness import wait_until


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def _progress(task_id: str, agent_id: str, offset: int, data: bytes) -> dict:
    return {"type": "progress", "payload": {"id": task_id, "agent_id": agent_id, "offset": offset,
                                            "data": base64.b64encode(data).decode()}}


def test_progress_attacks(stack):
    master = stack.master()
    stack.web()
    stack.agents(1)
    (victim,) = stack.online_agents()
    public, secret = zmq.curve_keypair()
    fake = make_client(stack.master_endpoint, timeout=10, curve=CurveClientKeys(stack.keys.public, public, secret))
    stranger = make_client(stack.master_endpoint, timeout=10,
                           curve=CurveClientKeys(stack.keys.public, *zmq.curve_keypair()))
    me = "attacker-" + os.urandom(4).hex()
    try:
        fake.send({"type": "register", "payload": {"id": me, "hostname": "attacker", "ip": []}})  # auto-accepted
        victim_task = stack.api.submit("echo victim-line; sleep 25", [victim])
        wait_until(lambda: "victim-line" in (stack.api.get(f"/task/{victim_task}")[1]["targets"][victim]
                                             .get("output") or ""), 10, what="victim output")
        my_task = stack.api.submit("sleep 30", [me])
        msg = fake.get_task(me, 0)
        assert msg, "the fake agent got no task"
        # 1. a key nobody accepted, and an accepted key naming the victim
        with pytest.raises((Unauthorized, zerorpc.RemoteError)):
            stranger.send(_progress(victim_task, victim, 10**6, b"EVIL-STRANGER"))
        with pytest.raises((Unauthorized, zerorpc.RemoteError)):
            fake.send(_progress(victim_task, victim, 10**6, b"EVIL-IMPOSTOR"))
        # 2. a task that is not running for me / no such task
        assert fake.send(_progress(victim_task, me, 0, b"x"))["applied"] is False
        assert fake.send(_progress("nope", me, 0, b"x"))["applied"] is False
        # 3. offsets
        with pytest.raises((MessageError, zerorpc.RemoteError)):
            fake.send(_progress(my_task, me, -1, b"x"))
        with pytest.raises((MessageError, zerorpc.RemoteError)):
            fake.send(_progress(my_task, me, 2**63, b"x"))
        assert fake.send(_progress(my_task, me, 2**63 - 1, b"huge-offset"))["applied"] is True
        with pytest.raises((MessageError, zerorpc.RemoteError)):
            fake.send(_progress(my_task, me, 0, b"y" * (MAX_PROGRESS_BYTES + 1)))
        status, task = stack.api.get(f"/task/{my_task}")
        assert status == 200, task
        # 4. a flood at the size limit from one key, for ~10 s, with heartbeats so it stays online
        rss_before = _rss_kib(master.pid)
        block = os.urandom(MAX_PROGRESS_BYTES // 2).hex().encode()[:MAX_PROGRESS_BYTES]
        sent, offset, worst_ping = 0, 0, 0.0
        deadline = time.monotonic() + 10
        next_check = 0.0
        while time.monotonic() < deadline:
            fake.send(_progress(my_task, me, offset, block))
            offset += len(block)
            sent += 1
            if time.monotonic() > next_check:
                fake.send({"type": "heartbeat", "payload": {"id": me}})
                started = time.monotonic()
                assert stack.api.get("/health")[0] == 200
                worst_ping = max(worst_ping, time.monotonic() - started)
                next_check = time.monotonic() + 0.5
        rss_after = _rss_kib(master.pid)
        print(f"flood: {sent} messages ({sent * len(block) / 2**20:.0f} MiB) in 10 s, worst /health "
              f"{worst_ping:.3f}s, master RSS {rss_before} -> {rss_after} KiB")
        assert worst_ping < 2.0
        assert rss_after - rss_before < 100 * 1024
        # the victim's live output is its own
        status, target = stack.api.get(f"/task/{victim_task}/target/{victim}")
        assert status == 200 and "EVIL" not in target["output"] and "victim-line" in target["output"], target
        status, mine = stack.api.get(f"/task/{my_task}/target/{me}")
        assert status == 200 and len(mine["output"]) <= 64 * 1024, len(mine["output"])
    finally:
        fake.close()
        stranger.close()
        for path in ("/tasks?limit=10",):
            assert stack.api.get(path)[0] == 200
