"""GET /task/{id}/events against the real app with a scripted master: SSE framing, a character split between
two output events, the keep-alive, the end, the bound on open streams and an error mid-stream."""
from __future__ import annotations

import asyncio
import base64
import json

from aiohttp.test_utils import TestClient, TestServer

from mschedule.transport import remote_error
from mschedule.webserver import build_app
from mschedule.webserver import routes as web_routes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ScriptedBridge:
    """Answers task_events with the next of ``answers`` (an exception is raised)."""

    endpoint = "tcp://fake"

    def __init__(self, answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple] = []

    async def call(self, method, *args, timeout=None):
        assert method == "task_events"
        self.calls.append(args)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def parse(text: str) -> list[tuple[str | None, str, object]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return events


def stream(bridge, headers=None) -> tuple[int, str, str]:
    async def go():
        async with TestClient(TestServer(build_app(bridge))) as client:
            response = await client.get("/task/t1/events", headers=headers or {})
            return response.status, response.headers.get("Content-Type", ""), await response.text()

    return asyncio.run(go())


def snapshot() -> dict:
    return {"task": {"state": "RUNNING"}, "targets": {"a": {"agent_id": "a", "state": "RUNNING",
                                                            "output": b64(b"x"), "offset": 0}}}
EURO = "€".encode()  # three bytes


def test_events_are_framed_split_characters_joined_and_the_stream_ends_with_end():
    bridge = ScriptedBridge([
        {"cursor": "e-1", "reset": True, "snapshot": snapshot(), "events": []},
        {"cursor": "e-1", "reset": False, "snapshot": None, "events": []},  # a quiet poll: keep-alive
        {"cursor": "e-3", "reset": False, "snapshot": None, "events": [
            {"id": "e-2", "event": "output", "data": {"agent_id": "a", "offset": 1, "data": b64(b"a" + EURO[:2])}},
            {"id": "e-3", "event": "output", "data": {"agent_id": "a", "offset": 4, "data": b64(EURO[2:] + b"\n")}},
        ]},
        {"cursor": "e-5", "reset": False, "snapshot": None, "events": [
            {"id": "e-4", "event": "target", "data": {"agent_id": "a", "state": "SUCCEED"}},
            {"id": "e-5", "event": "end", "data": {"state": "SUCCEED"}}]},
    ])
    status, kind, text = stream(bridge, {"Last-Event-ID": "old-7"})
    assert status == 200 and kind.startswith("text/event-stream")
    assert ": keep-alive\n\n" in text
    events = parse(text)
    assert [e[1] for e in events] == ["snapshot", "output", "output", "target", "end"]
    assert events[0][2]["targets"]["a"]["output"] == "x"
    assert events[1][2]["data"] + events[2][2]["data"] == "a€\n"  # not two replacement characters
    assert [e[0] for e in events] == ["e-1", "e-2", "e-3", "e-4", "e-5"]
    assert bridge.calls[0] == ("t1", "old-7", 0)  # the client's cursor goes to the master
    assert [c[1] for c in bridge.calls[1:]] == ["e-1", "e-1", "e-3"]
    assert not bridge.answers  # no poll after the end


def test_an_unknown_task_is_a_json_404_before_the_stream_starts():
    async def go():
        bridge = ScriptedBridge([remote_error("NotFound", "task t1 not found", None, "task_id")])
        async with TestClient(TestServer(build_app(bridge))) as client:
            response = await client.get("/task/t1/events")
            return response.status, await response.json()

    assert go_run(go) == (404, {"error": "task t1 not found", "field": "task_id"})


def go_run(coro_fn):
    return asyncio.run(coro_fn())


def test_an_error_mid_stream_is_an_error_event_and_the_stream_ends():
    bridge = ScriptedBridge([{"cursor": "e-1", "reset": True, "snapshot": snapshot(), "events": []},
                             remote_error("Conflict", "task_id: too many followed", None, "task_id")])
    status, _, text = stream(bridge)
    events = parse(text)
    assert status == 200 and [e[1] for e in events] == ["snapshot", "error"]
    assert events[1][2] == {"error": "task_id: too many followed", "field": "task_id"}


def test_streams_beyond_the_bound_are_refused_and_a_closed_one_frees_its_place(monkeypatch):
    monkeypatch.setattr(web_routes, "MAX_STREAMS", 1)

    class Holding(ScriptedBridge):
        async def call(self, method, *args, timeout=None):
            if args[1] is None:
                return {"cursor": "e-1", "reset": True, "snapshot": snapshot(), "events": []}
            await asyncio.sleep(0.3)
            return {"cursor": "e-1", "reset": False, "snapshot": None, "events": []}

    async def go():
        app = build_app(Holding([]))
        async with TestClient(TestServer(app)) as client:
            first = await client.get("/task/t1/events")
            assert first.status == 200
            await first.content.readuntil(b"\n\n")
            second = await client.get("/task/t1/events")
            refused = (second.status, await second.json())
            first.close()  # the client goes away
            for _ in range(50):
                if app[web_routes.STREAMS]["open"] == 0:
                    break
                await asyncio.sleep(0.05)
            return refused, app[web_routes.STREAMS]["open"]

    (status, body), still_open = go_run(go)
    assert status == 503 and body["field"] is None and "streams" in body["error"]
    assert still_open == 0
