"""Clients that open GET /task/{id}/events and never read, while many targets print: the web tier's memory, and
whether their stream slots come back once the task has ended."""
from __future__ import annotations

import http.client
import socket
import time

from tests.integration.harness import wait_until

CHATTY = "for i in $(seq 200); do head -c 60000 /dev/zero | tr '\\0' a; echo; sleep 0.2; done"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def _stalled_stream(stack, task_id: str) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", stack.web_port))
    s.sendall(f"GET /task/{task_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n\r\n"
              .encode())
    return s  # never read


def test_stalled_readers_neither_grow_memory_nor_hold_slots_after_the_end(stack):
    stack.master()
    web = stack.web()
    stack.agents(10)
    ids = stack.online_agents()
    task_id = stack.api.submit(CHATTY, ids, parallel=10)
    socks = []
    try:
        for _ in range(100):
            socks.append(_stalled_stream(stack, task_id))
            time.sleep(0.01)
        rss = [_rss_kib(web.pid)]
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            time.sleep(5)
            rss.append(_rss_kib(web.pid))
        print("web RSS KiB every 5 s:", rss)
        probe = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
        probe.request("GET", f"/task/{task_id}/events", headers={"Authorization": f"Bearer {stack.token}"})
        print("101st stream 25 s after 100 stalled (their writes time out after 10 s):", probe.getresponse().status)
        probe.close()
        stack.api.post(f"/task/{task_id}/cancel")
        wait_until(lambda: stack.api.get(f"/task/{task_id}")[1]["running"] == 0
                   if "running" in stack.api.get(f"/task/{task_id}")[1] else
                   stack.api.get(f"/task/{task_id}")[1]["counts"]["RUNNING"] == 0, 20, what="targets ended")
        other = stack.api.submit("sleep 5", ids[:1])
        time.sleep(20)  # past the stream's 15 s poll and the master's end
        conn_status, _ = stack.api.get("/health")
        assert conn_status == 200
        conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
        conn.request("GET", f"/task/{other}/events", headers={"Authorization": f"Bearer {stack.token}"})
        after = conn.getresponse().status
        conn.close()
        print("a new stream 20 s after the followed task ended, 100 stalled clients still connected:", after)
        assert rss[-1] - rss[-3] < 10 * 1024, rss  # it levels off (about 0.6 MiB per stalled stream)
        assert after == 200, "the stalled clients still hold every stream slot"
    finally:
        for s in socks:
            s.close()
