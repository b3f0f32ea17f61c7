"""Attacks on POST /task/{id}/retry and on hostnames in targets."""
from __future__ import annotations

import json
import threading
import time
import urllib.request


def _raw_post(stack, path: str, raw: bytes) -> tuple[int, object]:
    req = urllib.request.Request(stack.api.base + path, data=raw, method="POST",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body[:200]


def test_retry_bodies_of_every_wrong_shape_are_4xx_with_a_field(stack):
    ids = stack.up(1)
    task = stack.api.run("exit 3", ids)
    assert task["state"] == "FAILED"
    tid = task["task_id"]
    bodies = {
        "only str": b'{"only": "FAILED"}', "only int": b'{"only": 1}', "only null": b'{"only": null}',
        "only empty": b'{"only": []}', "only obj": b'{"only": {"FAILED": 1}}',
        "huge list": json.dumps({"only": ["FAILED"] * 200000}).encode(),
        "huge bad list": json.dumps({"only": ["FAILED"] * 100000 + ["X"]}).encode(),
        "dupes": b'{"only": ["FAILED", "FAILED"]}', "unknown state": b'{"only": ["SUCCEED"]}',
        "RUNNING": b'{"only": ["RUNNING"]}', "lower": b'{"only": ["failed"]}', "nested": b'{"only": [["FAILED"]]}',
        "non-json": b"only=FAILED", "array": b'["FAILED"]', "string": b'"FAILED"', "number": b"1e999",
        "extra field": b'{"only": ["FAILED"], "script": "rm -rf /"}', "invalid utf8": b'{"only": ["\xff"]}',
        "big int": b'{"only": [123456789012345678901234567890]}', "deep": b"[" * 5000 + b"]" * 5000,
    }
    bad = {}
    for name, raw in bodies.items():
        started = time.monotonic()
        status, body = _raw_post(stack, f"/task/{tid}/retry", raw)
        took = time.monotonic() - started
        ok_shape = isinstance(body, dict) and "error" in body and "field" in body
        if name in ("dupes", "huge list"):  # valid bodies: a new task
            ok = status == 201
        else:
            ok = 400 <= status < 500 and ok_shape and took < 2
        print(name, status, round(took, 2), str(body)[:150])
        if not ok:
            bad[name] = (status, str(body)[:200], round(took, 2))
    assert stack.api.get("/health")[0] == 200
    assert not bad, bad


def test_retry_of_a_retry_and_concurrent_retries(stack):
    ids = stack.up(1)
    task = stack.api.run("exit 3", ids)
    tid = task["task_id"]
    status, first = stack.api.post(f"/task/{tid}/retry")
    assert status == 201, first
    again = stack.api.wait_task(first["task_id"])
    status, second = stack.api.post(f"/task/{again['task_id']}/retry")
    assert status == 201 and second["retry_of"] == first["task_id"], second
    stack.api.wait_task(second["task_id"])
    results = []

    def one():
        results.append(stack.api.post(f"/task/{tid}/retry"))
    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    created = [b["task_id"] for s, b in results if s == 201]
    print("concurrent retries:", [s for s, _ in results])
    assert all(s < 500 for s, _ in results), results
    # each call is a new task, as a second "run again" is (docs/api.md): ten calls, ten tasks, each on the
    # failed host alone, each recording what it retried
    assert len(created) == 10 and all(stack.api.get(f"/task/{t}")[1]["retry_of"] == tid for t in created)


def test_a_hostname_equal_to_another_agents_id(stack):
    """Agent B's hostname is agent A's id: targets [A's id] must run on A, not B (an id is taken as one)."""
    stack.master()
    stack.web()
    stack.agents(1)
    victim = stack.online_agents()[0]
    stack.agents(1, extra=("--hostname", victim))
    other = [a for a in stack.online_agents() if a != victim][0]
    task = stack.api.run("true", [victim])
    assert list(task["targets"]) == [victim], task["targets"]
    status, body = stack.api.post("/task", {"script": "true", "targets": [victim, other]})
    assert status == 201, body


def test_10000_unknown_names_give_a_small_quick_error(stack):
    ids = stack.up(1)
    names = [f"no-such-host-{i}" for i in range(10000)]
    started = time.monotonic()
    status, body = stack.api.post("/task", {"script": "true", "targets": names})
    took = time.monotonic() - started
    print(status, took, len(json.dumps(body)), str(body)[:300])
    status2, body2 = stack.api.post("/task", {"script": "true", "targets": ids + names[:9999]})
    print(status2, str(body2)[:300])
    assert status == 400 and len(json.dumps(body)) < 2000 and took < 2, (status, took, str(body)[:300])
