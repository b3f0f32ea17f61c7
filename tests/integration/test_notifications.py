"""Webhooks: a loopback HTTP server stands in for the receiver; the master signs, retries and records."""
import hashlib
import hmac
import json
import threading
import time
import urllib.request

import pytest

from tests.integration.harness import free_port, wait_until
from tests.integration.receiver import Receiver

FAST = ("--webhook-retry-base", "0.5")


@pytest.fixture
def receivers():
    made = []

    def make(*args, **kwargs) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def _secret(stack) -> bytes:
    return (stack.state / "webhook.secret").read_bytes().strip()


def _metrics(stack) -> str:
    req = urllib.request.Request(stack.api.base + "/metrics", headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return answer.read().decode()


def _notifications(api, task_id):
    return api.get(f"/task/{task_id}")[1]["notifications"]


def test_a_webhook_arrives_signed_and_is_retried_after_a_500(stack, receivers):
    receiver = receivers(statuses=(500, 200))
    stack.master(*FAST, "--public-url", "https://ms.example.test")
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    task = api.run("exit 3", ids, notify=[{"url": receiver.url, "on": ["FAILED"]},
                                          {"url": receiver.url + "?never", "on": ["SUCCEED"]}])
    assert task["state"] == "FAILED"
    wait_until(lambda: _notifications(api, task["task_id"])[0]["state"] == "delivered", 20, what="delivery")
    assert len(receiver.calls) == 2  # the 500, then the retry; the SUCCEED-only hook was never owed
    first, second = receiver.calls
    assert second["at"] - first["at"] >= 0.4  # the backoff
    secret = _secret(stack)
    for call in receiver.calls:
        expected = "sha256=" + hmac.new(secret, call["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(call["headers"]["X-Mschedule-Signature"], expected)
        assert call["headers"]["Content-Type"] == "application/json"
    assert first["headers"]["X-Mschedule-Delivery"] == second["headers"]["X-Mschedule-Delivery"]
    assert [c["headers"]["X-Mschedule-Attempt"] for c in receiver.calls] == ["1", "2"]
    body = json.loads(second["body"])
    assert body["task_id"] == task["task_id"] and body["state"] == "FAILED" and body["counts"]["FAILED"] == 1
    assert body["url"] == f"https://ms.example.test/#/task/{task['task_id']}" and body["event"] == "task.finished"
    shown = _notifications(api, task["task_id"])
    assert len(shown) == 1 and shown[0]["attempts"] == 2 and shown[0]["last_status"] == 200
    assert shown[0]["url"] == receiver.url and shown[0]["last_error"] is None
    text = _metrics(stack)
    assert 'mschedule_master_webhook_attempts_total{result="failed"} 1.0' in text
    assert 'mschedule_master_webhook_attempts_total{result="delivered"} 1.0' in text
    # a forged body does not match the signature
    assert "sha256=" + hmac.new(secret, second["body"] + b" ", hashlib.sha256).hexdigest() != \
        second["headers"]["X-Mschedule-Signature"]


def test_a_job_and_a_schedule_notify_and_a_slow_receiver_delays_nothing_else(stack, receivers):
    slow = receivers(delay=8)
    fast = receivers()
    stack.master(*FAST)
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    status, _ = api.post("/job/j", {"script": "true", "targets": ids, "notify": [{"url": slow.url}]})
    assert status == 201
    status, run = api.post("/job/j/run", {})
    api.wait_task(run["task_id"])
    for i in range(9):  # more URLs of the slow receiver than the master has threads: they must not take them all
        api.run("true", ids, notify=[{"url": f"{slow.url}?n={i}"}])
    wait_until(lambda: slow.calls, 10, what="the slow receiver called")
    # while the slow receiver holds its request, another task's webhook goes out at once, and the API answers
    begun = time.monotonic()
    other = api.run("true", ids, notify=[{"url": fast.url}])
    wait_until(lambda: _notifications(api, other["task_id"])[0]["state"] == "delivered", 5, what="fast delivery")
    assert time.monotonic() - begun < 5
    assert api.get("/health")[0] == 200
    # the job's own notify reaches the task
    assert _notifications(api, run["task_id"])[0]["url"] == slow.url


def test_a_pending_webhook_survives_a_master_kill(stack, receivers):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    master = stack.master(*FAST)
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    task = api.run("true", ids, notify=[{"url": url}])  # nobody listens yet: refused, retried
    wait_until(lambda: _notifications(api, task["task_id"])[0]["attempts"] >= 1, 10, what="a failed attempt")
    assert _notifications(api, task["task_id"])[0]["last_error"]
    time.sleep(1.5)  # the periodic commit has the attempt
    master.kill9()
    receiver = receivers(port=port)
    stack.master(*FAST)
    wait_until(lambda: _notifications(api, task["task_id"])[0]["state"] == "delivered", 20, what="delivery")
    assert len(receiver.calls) == 1


def test_bad_notify_entries_are_400(stack):
    ids = stack.up(1)
    api = stack.api
    for notify, field in (("http://x", "notify"), ([{"url": "ftp://x"}], "notify[0].url"),
                          ([{"url": "http://a b"}], "notify[0].url"), ([{"url": 5}], "notify[0].url"),
                          ([{"url": "http://x", "on": ["DONE"]}], "notify[0].on"),
                          ([{"url": "http://x", "on": []}], "notify[0].on"),
                          ([{"url": "http://x", "secret": "s"}], "notify[0].secret"),
                          ([{"url": "http://x"}] * 11, "notify")):
        status, body = api.post("/task", {"script": "true", "targets": ids, "notify": notify})
        assert status == 400 and body["field"] == field, (notify, body)
    assert api.run("true", ids)["state"] == "SUCCEED"


class RawReceiver:
    """A TCP server that answers every connection with ``answer`` (not necessarily HTTP) and counts them."""

    def __init__(self, answer: bytes) -> None:
        import socket
        self.answer = answer
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                conn.recv(65536)
                conn.sendall(self.answer)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("answer", [b"HELLO\r\n\r\n", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
                         ids=["bad-status-line", "header-too-long", "bad-chunk"])
def test_a_receiver_that_does_not_speak_http_is_a_failed_attempt_retried_with_backoff(stack, answer):
    receiver = RawReceiver(answer)
    try:
        stack.master(*FAST)
        stack.web()
        stack.agents(1)
        ids = stack.online_agents()
        api = stack.api
        task = api.run("true", ids, notify=[{"url": receiver.url}])
        wait_until(lambda: _notifications(api, task["task_id"])[0]["attempts"] >= 2, 10, what="two attempts")
        time.sleep(1)
        shown = _notifications(api, task["task_id"])[0]
        assert shown["state"] == "pending" and shown["last_error"] and shown["last_status"] is None, shown
        # retried after 0.5 s, then 1 s, 2 s...: a handful of connections, not a request as fast as it answers
        assert receiver.connections <= 6, receiver.connections
        assert api.run("true", ids)["state"] == "SUCCEED"
    finally:
        receiver.close()
