"""Attacks on GET /task/{id}/events: the stream limit under a concurrent burst, and hostile Last-Event-ID."""
from __future__ import annotations

import http.client
import socket
import threading
import time

from tests.integration.harness import wait_until


def _open_stream(port: int, token: str, path: str, headers: dict | None = None, timeout: float = 10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **(headers or {})})
    return conn, conn.getresponse()


def _first_event_id(resp) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = resp.fp.readline().decode()
        if line.startswith("id: "):
            return line[4:].strip()
    raise AssertionError("no event id")


def test_150_concurrent_streams_more_than_100_never_get_200(stack):
    """The check of MAX_STREAMS comes before an await (the first master call), the count goes up after it:
    a burst all passes the check."""
    ids = stack.up(1)
    task_id = stack.api.submit("sleep 40", ids)
    statuses: list[int] = []
    conns = []
    lock = threading.Lock()
    barrier = threading.Barrier(150, timeout=20)

    def one():
        barrier.wait()
        try:
            conn, resp = _open_stream(stack.web_port, stack.token, f"/task/{task_id}/events")
            with lock:
                statuses.append(resp.status)
                conns.append(conn)
        except Exception as exc:  # noqa: BLE001
            with lock:
                statuses.append(repr(exc))
    threads = [threading.Thread(target=one) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ok = statuses.count(200)
    try:
        print("statuses:", {s: statuses.count(s) for s in set(statuses)})
        assert ok <= 100, f"{ok} streams open, limit 100"
    finally:
        for c in conns:
            c.close()
        stack.api.post(f"/task/{task_id}/cancel")
    wait_until(lambda: stack.api.get("/health")[0] == 200, 10, what="health")


def _status_for_cursor(stack, task_id: str, cursor: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", stack.web_port), timeout=10) as s:
        s.sendall(b"GET /task/" + task_id.encode() + b"/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + stack.token.encode() + b"\r\nLast-Event-ID: " + cursor + b"\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 300:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    return int(data.split(b" ", 2)[1]), data[:600]


def test_hostile_last_event_ids_never_get_a_5xx(stack):
    ids = stack.up(1)
    task_id = stack.api.submit("echo hi; sleep 40", ids)
    conn, resp = _open_stream(stack.web_port, stack.token, f"/task/{task_id}/events")
    epoch = _first_event_id(resp).split("-")[0]
    conn.close()
    other = stack.api.submit("sleep 40", ids)  # another task's cursor too
    conn, resp = _open_stream(stack.web_port, stack.token, f"/task/{other}/events")
    other_cursor = _first_event_id(resp).encode()
    conn.close()
    cursors = {
        "superscript digit": f"{epoch}-\u00b2".encode(),  # str.isdigit() is true, int() raises
        "5000 digits": f"{epoch}-{'9' * 5000}".encode(),  # int() refuses more than 4300 digits
        "arabic digits": f"{epoch}-\u0661\u0662".encode(),
        "non-ascii": "é—😀".encode(),
        "latin-1 byte": b"\xff\xfe",
        "long": b"a" * 7000,
        "other task": other_cursor,
        "negative": f"{epoch}--5".encode(),
    }
    bad = {}
    for name, cursor in cursors.items():
        status, head = _status_for_cursor(stack, task_id, cursor)
        print(name, status, head[-160:])
        if status >= 500 or b'"event": "error"' in head or b"event: error" in head:
            bad[name] = head
    try:
        assert stack.api.get("/health")[0] == 200
        assert not bad, bad
    finally:
        stack.api.post(f"/task/{task_id}/cancel")
        stack.api.post(f"/task/{other}/cancel")


def test_a_disconnect_storm_leaves_every_route_answering(stack):
    ids = stack.up(1)
    task_id = stack.api.submit("while :; do echo tick; sleep 0.1; done", ids)
    deadline = time.monotonic() + 15
    opened = 0
    while time.monotonic() < deadline and opened < 400:
        s = socket.create_connection(("127.0.0.1", stack.web_port), timeout=5)
        s.sendall(f"GET /task/{task_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.token}\r\n\r\n"
                  .encode())
        if opened % 2:
            s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
        opened += 1
    time.sleep(1)
    try:
        for path in ("/health", "/tasks", "/task/targets", f"/task/{task_id}", "/jobs", "/keys"):
            status = stack.api.get(path)[0]
            assert status == 200, (path, status)
        conn, resp = _open_stream(stack.web_port, stack.token, f"/task/{task_id}/events")
        assert resp.status == 200
        conn.close()
    finally:
        stack.api.post(f"/task/{task_id}/cancel")
