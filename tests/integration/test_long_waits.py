"""Long waits are safe: many concurrent ``wait`` calls up to the cap, on running and finished tasks, end
normally and leave every route answering. Ten ``wait=30`` calls used to silence the admin endpoint: the
heartbeat of a call that had just been answered reached a closed channel, and zerorpc's dispatcher died."""
from __future__ import annotations

import threading
import time

import pytest

from tests.integration.figures import record
from tests.integration.harness import wait_until

pytestmark = pytest.mark.slow

WAITERS = 50
WAIT = 60


def check_every_route(stack, agent_id: str) -> None:
    api = stack.api
    for path in ("/health", "/task/targets", "/tasks", "/keys", "/groups", "/jobs", "/api", "/openapi.json"):
        status, body = api.get(path, timeout=5)
        assert status == 200, (path, body)
    done = api.run("echo still-serving", [agent_id], wait_for=20)
    assert done["state"] == "SUCCEED" and "still-serving" in done["targets"][agent_id]["output"]
    status, body = api.get(f"/task/{done['task_id']}/target/{agent_id}", timeout=5)
    assert status == 200, body


def test_fifty_concurrent_long_waits_on_a_running_task(stack):
    busy, agent_id = stack.up(2)
    api = stack.api
    finished = api.run("true", [agent_id])["task_id"]
    running = api.submit("sleep 70", [busy], timeout=120)
    wait_until(lambda: api.get(f"/task/{running}")[1]["counts"]["RUNNING"] == 1, 10, what="the task running")
    answers: list[tuple[int, str, float]] = []
    lock = threading.Lock()

    def waiter(task_id: str, wait: float) -> None:
        start = time.monotonic()
        status, body = api.get(f"/task/{task_id}?wait={wait}", timeout=wait + 30)
        with lock:
            answers.append((status, body.get("state") if isinstance(body, dict) else str(body),
                            time.monotonic() - start))

    threads = [threading.Thread(target=waiter, args=(running, WAIT)) for _ in range(WAITERS)]
    threads += [threading.Thread(target=waiter, args=(running, 30)) for _ in range(10)]
    threads += [threading.Thread(target=waiter, args=(finished, WAIT)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT + 40)
    assert len(answers) == len(threads), "some waits never ended"
    assert all(status == 200 for status, _, _ in answers), answers
    on_running = [a for a in answers if a[1] == "RUNNING"]
    assert len(on_running) == WAITERS + 10  # every wait on the running task ran its course and answered it as is
    assert sum(1 for a in answers if a[1] == "SUCCEED" and a[2] < 5) == 5  # a finished task answers at once
    check_every_route(stack, agent_id)
    status, body = api.post(f"/task/{running}/cancel")
    assert status == 200, body
    record("50 concurrent wait=60 (and 10 wait=30) on a 70 s task", inputs_tried=len(threads),
           http_errors=sum(1 for a in answers if a[0] != 200), master_died=0)
