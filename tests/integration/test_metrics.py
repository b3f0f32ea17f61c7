"""GET /metrics on the real stack: the text parses with prometheus_client's own parser, holds the web tier's and
the master's metrics without a name twice, and its counters move when a real task runs on a real agent."""
from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import AGENT_INTERVAL, scaled, wait_until


def scrape(stack, token: str | None = "") -> tuple[int, str]:
    """GET /metrics with the stack's token (``None``: without one)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token or stack.token}"}
    request = urllib.request.Request(stack.api.base + "/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple, float]:
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a metric defined twice"
    assert all(n.startswith(("mschedule_web_", "mschedule_master_")) for n in names), names
    return {(s.name, *sorted(s.labels.items())): s.value for f in families for s in f.samples}


def test_metrics_parse_and_move_when_a_real_task_runs(stack):
    [agent] = stack.up(1)
    status, text = scrape(stack)
    assert status == 200, text
    before = samples(text)
    task = stack.api.run("echo metrics", [agent])
    assert task["state"] == "SUCCEED"
    heartbeats = ("mschedule_master_heartbeats_total", ("type", "heartbeat"))
    wait_until(lambda: samples(scrape(stack)[1])[heartbeats] > before[heartbeats], 5 + scaled(AGENT_INTERVAL) * 4,
               what="a heartbeat counted")
    after = samples(scrape(stack)[1])

    def moved(name: str, **labels: str) -> float:
        key = (name, *sorted(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("mschedule_master_targets_started_total") == 1
    assert moved("mschedule_master_targets_ended_total", state="SUCCEED") == 1
    assert moved("mschedule_master_dispatch_latency_seconds_count") == 1
    assert moved("mschedule_master_target_duration_seconds_count", state="SUCCEED") == 1
    assert moved("mschedule_master_rpc_calls_total", endpoint="admin", method="add_task") == 1
    assert moved("mschedule_master_rpc_calls_total", endpoint="agents", method="get_task") >= 1
    assert moved("mschedule_master_rpc_calls_total", endpoint="agents", method="send") >= 2  # a result, heartbeats
    assert moved("mschedule_master_rpc_calls_total", endpoint="admin", method="metrics") >= 1
    assert moved("mschedule_master_db_commit_seconds_count") >= 2  # the task, the dispatch, the result
    assert moved("mschedule_web_request_duration_seconds_count", method="POST", route="/task", status="201") == 1
    assert moved("mschedule_web_request_duration_seconds_count", method="POST", route="/result", status="200") >= 1
    assert moved("mschedule_web_request_duration_seconds_count", method="GET", route="/metrics", status="200") >= 1
    assert after[("mschedule_master_agents", ("state", "online"))] == 1
    assert after[("mschedule_master_tasks", ("state", "SUCCEED"))] == 1
    assert after[("mschedule_master_targets", ("state", "RUNNING"))] == 0
    assert after[("mschedule_web_master_up",)] == 1
    assert after[("mschedule_master_transport_dropped_total", ("endpoint", "agents"), ("reason", "malformed"))] == 0
    assert after[("mschedule_master_process_resident_memory_bytes",)] > 0
    assert task["task_id"] not in scrape(stack)[1]

    status, body = scrape(stack, token=None)
    assert status == 401, body
    assert scrape(stack, token="wrong")[0] == 401


def test_metrics_say_when_the_master_is_gone(stack):
    master = stack.master()
    stack.web("--rpc-timeout", "2")
    assert samples(scrape(stack)[1])[("mschedule_web_master_up",)] == 1
    master.stop()
    status, text = scrape(stack)
    assert status == 200, text
    assert samples(text)[("mschedule_web_master_up",)] == 0
    assert "mschedule_master_" not in text
