"""The web tier's metrics (mschedule/webserver/metrics.py) and GET /metrics, against the real app with a bridge that
answers what a test tells it to: request latency by canonical route and status, the master's text after the web
tier's."""
from __future__ import annotations

import asyncio

import zerorpc
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from mschedule.transport import remote_error
from mschedule.webserver import build_app

MASTER_TEXT = ("# HELP mschedule_master_tasks tasks kept by the master, by state\n"
               "# TYPE mschedule_master_tasks gauge\n"
               'mschedule_master_tasks{state="RUNNING"} 3.0\n')
TOKEN = "t0ken"


class Bridge:
    """Stands for MasterBridge: ``metrics`` answers ``master`` (or raises it), anything else an empty object."""

    endpoint = "tcp://fake"

    def __init__(self, master: str | BaseException = MASTER_TEXT) -> None:
        self.master = master

    async def call(self, method, *args, timeout=None):
        if method != "metrics":
            return {"output": ""}
        if isinstance(self.master, BaseException):
            raise self.master
        return self.master


def scrape(requests: list[tuple[str, str, dict]], bridge: Bridge | None = None,
           tokens: frozenset[str] = frozenset()) -> tuple[int, str, str]:
    """Make ``requests`` (method, path, headers), then GET /metrics: its status, content type and text."""
    async def go():
        app = build_app(bridge or Bridge(), max_script_bytes=1024, tokens=tokens)
        async with TestClient(TestServer(app)) as client:
            for method, path, headers in requests:
                await (await client.request(method, path, headers=headers)).read()
            auth = {"Authorization": f"Bearer {TOKEN}"} if tokens else {}
            response = await client.get("/metrics", headers=auth)
            return response.status, response.headers["Content-Type"], await response.text()

    return asyncio.run(go())


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def count(text: str, method: str, route: str, status: str) -> float:
    key = ("mschedule_web_request_duration_seconds_count", ("method", method), ("route", route), ("status", status))
    return samples(text).get(key, 0.0)


def test_requests_are_counted_by_canonical_route_never_by_their_raw_path():
    """Ids in paths (tasks, agents, groups) and paths of no route must not become series."""
    status, _, text = scrape([("GET", "/group/web-1", {}), ("GET", "/group/db-2", {}),
                              ("POST", "/task/3f2a9c/cancel", {}), ("GET", "/no/such/route-77", {}),
                              ("GET", "/task/abc/target/agent-9", {}), ("PROPFIND", "/tasks", {})])
    assert status == 200
    assert count(text, "GET", "/group/{name}", "200") == 2
    assert count(text, "POST", "/task/{task_id}/cancel", "200") == 1
    assert count(text, "GET", "/task/{task_id}/target/{agent_id}", "200") == 1
    assert count(text, "GET", "unmatched", "404") == 1
    assert count(text, "other", "unmatched", "405") == 1
    for raw in ("web-1", "db-2", "3f2a9c", "route-77", "agent-9", "PROPFIND"):
        assert raw not in text, raw


def test_a_refused_token_is_counted_with_its_status():
    _, _, text = scrape([("GET", "/keys", {}), ("GET", "/keys", {"Authorization": "Bearer wrong"})],
                        tokens=frozenset({TOKEN}))
    assert count(text, "GET", "/keys", "401") == 2


def test_metrics_serve_the_web_tiers_text_then_the_masters_and_parse():
    status, content_type, text = scrape([])
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert text.endswith(MASTER_TEXT)
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert all(n.startswith(("mschedule_web_", "mschedule_master_")) for n in names), names
    assert samples(text)[("mschedule_web_master_up",)] == 1
    assert samples(text)[("mschedule_master_tasks", ("state", "RUNNING"))] == 3


def test_a_master_that_does_not_answer_leaves_its_part_out_and_says_so():
    for failure in (zerorpc.TimeoutExpired(5), zerorpc.LostRemote("gone"), remote_error("KeyError", "'x'", "Tb")):
        status, _, text = scrape([], Bridge(failure))
        assert status == 200, failure
        assert samples(text)[("mschedule_web_master_up",)] == 0
        assert "mschedule_master_" not in text
