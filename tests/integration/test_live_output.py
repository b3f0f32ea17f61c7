"""Live output through the real tiers: a running target's output so far, the task's event stream, and what a
target lost with its agent keeps."""
from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.request

from tests.integration.harness import scaled, wait_until


def _metric(stack, name: str) -> float:
    req = urllib.request.Request(stack.api.base + "/metrics", headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_the_first_line_shows_while_the_target_runs_and_the_result_keeps_it_all(stack):
    ids = stack.up(1)
    before = _metric(stack, "mschedule_master_progress_messages_total")
    stack.api.run("true", ids)
    time.sleep(scaled(1.5))  # a progress of the short script would have been sent by now
    assert _metric(stack, "mschedule_master_progress_messages_total") == before  # a 'true' costs no message
    task_id = stack.api.submit("echo first; sleep 6; echo second", ids)

    def first_seen():
        status, target = stack.api.get(f"/task/{task_id}/target/{ids[0]}")
        assert status == 200, target
        return target if "first" in target["output"] else None

    target = wait_until(first_seen, 5, interval=0.1, what="'first' in the running target's output")
    seen = time.time()
    assert target["state"] == "RUNNING" and target["partial"] is True, target
    assert target["output"] == "first\n" and target["output_bytes"] == 6
    assert seen - target["started"] < scaled(2.0), f"'first' took {seen - target['started']:.2f}s to show"
    status, detail = stack.api.get(f"/task/{task_id}?output_limit=3")
    assert status == 200 and detail["targets"][ids[0]]["output"] == "st\n"  # the task shows it, within the limit
    assert detail["targets"][ids[0]]["partial"] is True and detail["targets"][ids[0]]["output_omitted"] == 3
    done = stack.api.wait_task(task_id, 20)["targets"][ids[0]]
    assert done["state"] == "SUCCEED" and done["output"] == "first\nsecond\n" and done["partial"] is False
    assert _metric(stack, "mschedule_master_progress_messages_total") >= before + 1


class EventStream:
    """A tiny SSE reader over http.client: events as (id, event, data)."""

    def __init__(self, stack, task_id: str, last_id: str | None = None, timeout: float = 30) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=scaled(timeout))
        headers = {"Authorization": f"Bearer {stack.token}"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", f"/task/{task_id}/events", headers=headers)
        self.response = self.conn.getresponse()

    def events(self):
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if not line:
                if "event" in fields:
                    yield fields.get("id"), fields["event"], json.loads(fields.get("data", "null"))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def close(self) -> None:
        self.conn.close()


def test_the_event_stream_delivers_state_changes_output_and_the_end(stack):
    ids = stack.up(1)
    stack.api.submit("sleep 1.5", ids)  # keeps the agent busy: the next task's target waits for it
    task_id = stack.api.submit("echo first; sleep 2; echo second", ids)
    stream = EventStream(stack, task_id)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        events = list(stream.events())  # the stream closes after `end`
    finally:
        stream.close()
    kinds = [e[1] for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end", kinds
    assert events[0][2]["targets"][ids[0]]["state"] == "WAITING"
    assert [e[2]["state"] for e in events if e[1] == "target"] == ["RUNNING", "SUCCEED"]
    assert [e[2]["state"] for e in events if e[1] == "task"] == ["RUNNING", "SUCCEED"]
    assert events[-1][2]["state"] == "SUCCEED" and events[-1][2]["counts"]["SUCCEED"] == 1
    first_output = kinds.index("output")
    assert kinds.index("target") < first_output < len(kinds) - 1 - kinds[::-1].index("target")  # while RUNNING
    output = "".join(e[2]["data"] for e in events if e[1] == "output")
    assert output.startswith("first\n"), events
    assert all(e[0] for e in events)  # every event has an id to resume from
    # a client that comes back with the last id of a finished task gets its end again
    again = EventStream(stack, task_id, last_id=events[-1][0])
    try:
        assert [e[1] for e in again.events()][-1] == "end"
    finally:
        again.close()


def test_the_event_stream_of_an_unknown_task_is_a_json_404(stack):
    stack.up(1)
    status, body = stack.api.get("/task/nope/events")
    assert status == 404 and body["field"] == "task_id" and "error" in body


def test_a_client_that_goes_away_mid_stream_leaves_both_tiers_answering(stack):
    ids = stack.up(1)
    task_id = stack.api.submit("echo first; sleep 30", ids)
    for _ in range(3):
        stream = EventStream(stack, task_id)
        assert next(stream.events())[1] == "snapshot"
        stream.response.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        stream.close()
    started = time.monotonic()
    status, health = stack.api.get("/health")
    assert status == 200 and health["master"]["ok"], health
    assert stack.api.get(f"/task/{task_id}")[0] == 200
    assert time.monotonic() - started < scaled(2.0)
    stack.api.post(f"/task/{task_id}/cancel")


def test_a_target_lost_with_its_agent_keeps_the_output_that_reached_the_master(stack):
    stack.master()
    stack.web()
    agent = stack.agents(1)
    ids = stack.online_agents()
    task_id = stack.api.submit("echo first; sleep 60", ids)
    wait_until(lambda: "first" in stack.api.get(f"/task/{task_id}/target/{ids[0]}")[1]["output"], 5,
               what="'first' to reach the master")
    agent.kill9()
    target = stack.api.wait_task(task_id, 20)["targets"][ids[0]]
    assert target["state"] == "FAILED", target
    assert "first\n" in target["output"] and "agent offline" in target["output"], target["output"]
