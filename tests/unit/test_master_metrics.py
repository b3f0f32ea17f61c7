"""The master's metrics (mschedule/master/metrics.py, docs/metrics.md): the collectors that read state at scrape time,
and the event metrics the scheduler, the handler and the SQLite storage move, each read back through a registry as
Prometheus would."""
from __future__ import annotations

import sqlite3

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mschedule.master.admission import Admission, set_current_key
from mschedule.master.handler import AdminHandler, AgentHandler
from mschedule.master.metrics import MasterMetrics, StateCollector
from mschedule.master.scheduler import Scheduler
from mschedule.master.sqlite_storage import SQLiteStorage
from mschedule.master.storage import AgentRecord, KeyState, Storage, StorageError
from mschedule.transport.metrics import TransportCollector
from mschedule.transport.stats import DROP_REASONS, TransportStats
from mschedule.utils.messages import AgentInfo, ResultMessage, heartbeat_message, register_message
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def seen(sched: Scheduler, *agent_ids: str) -> None:
    for agent_id in agent_ids:
        sched.agent_seen(AgentInfo(id=agent_id, hostname=f"h-{agent_id}", session="s1"))


def test_state_collector_reads_agents_tasks_and_targets_at_each_scrape():
    storage = Storage()
    admission = Admission(storage, admin_key=b"A" * 40)
    for agent_id in ("p1", "p2", "p3"):
        set_current_key(agent_id.upper() * 20)
        admission.on_register(agent_id, f"h-{agent_id}", [])
    set_current_key(None)
    sched = Scheduler(storage, agent_timeout=10)
    seen(sched, "a", "b")
    storage.add_agent(AgentRecord(id="gone", hostname="h-gone", online=False))
    running = sched.submit(TaskSpec(script=b"true", targets=["a", "b"], parallel=1))
    assert sched.next_task("a") is running  # a RUNNING, b WAITING
    sched.submit(TaskSpec(script=b"true", targets=["gone"]))  # offline: FAILED at once
    sched.cancel(sched.submit(TaskSpec(script=b"true", targets=["b"])).id)
    sched.submit(TaskSpec(script=b"true", targets=["b"]))  # WAITING
    registry = CollectorRegistry()
    registry.register(StateCollector(storage, admission))

    assert [value(registry, "mschedule_master_agents", state=s) for s in ("online", "offline", "pending")] == [2, 1, 3]
    assert {s.value: value(registry, "mschedule_master_tasks", state=s.value) for s in State} == {
        "WAITING": 1, "RUNNING": 1, "SUCCEED": 0, "FAILED": 1, "CANCELLED": 1}
    assert value(registry, "mschedule_master_targets", state="WAITING") == 2
    assert value(registry, "mschedule_master_targets", state="RUNNING") == 1

    sched.apply_result(ResultMessage(id=running.id, agent_id="a", code=0, output=b""))
    admission.decide("p1", KeyState.ACCEPTED)
    assert value(registry, "mschedule_master_targets", state="RUNNING") == 0  # read again, not cached
    assert value(registry, "mschedule_master_agents", state="pending") == 2


def test_state_collector_without_admission_has_no_pending_agents():
    registry = CollectorRegistry()
    registry.register(StateCollector(Storage()))
    assert value(registry, "mschedule_master_agents", state="pending") == 0


def test_transport_collector_exports_the_endpoints_counters_each_known_reason_from_zero():
    agents, admin = TransportStats("agents"), TransportStats("admin")
    agents.received = 7
    agents.drop("malformed")
    agents.drop("unknown_channel")
    agents.drop("unknown_channel")
    admin.loop_restarts["acceptor"] += 1
    watched = [agents]
    registry = CollectorRegistry()
    registry.register(TransportCollector(watched))
    watched.append(admin)  # an endpoint added after the registry was built is exported too

    assert value(registry, "mschedule_master_transport_received_total", endpoint="agents") == 7
    assert value(registry, "mschedule_master_transport_dropped_total", endpoint="agents", reason="unknown_channel") == 2
    for reason in DROP_REASONS:
        expected = {"malformed": 1, "unknown_channel": 2}.get(reason, 0)
        assert registry.get_sample_value("mschedule_master_transport_dropped_total",
                                         {"endpoint": "agents", "reason": reason}) == expected, reason
    assert value(registry, "mschedule_master_serving_loop_restarts_total", endpoint="admin", loop="acceptor") == 1
    assert registry.get_sample_value("mschedule_master_serving_loop_restarts_total",
                                     {"endpoint": "admin", "loop": "dispatcher"}) == 0


class Deltas:
    """How much each sample of a master's registry moved since construction."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.before = self.samples()

    def samples(self) -> dict[tuple, float]:
        return {(s.name, *sorted(s.labels.items())): s.value for family in self.registry.collect()
                for s in family.samples if "process" not in s.name}

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, *sorted(labels.items()))
        return self.samples().get(key, 0.0) - self.before.get(key, 0.0)


@pytest.fixture
def world():
    clock = Clock()
    storage = Storage()
    sched = Scheduler(storage, agent_timeout=10, clock=clock)
    seen(sched, "a", "b")
    return sched, clock, Deltas(MasterMetrics(storage).registry)


def test_a_target_that_runs_moves_started_ended_and_both_histograms(world):
    sched, clock, moved = world
    task = sched.submit(TaskSpec(script=b"true", targets=["a"]))
    clock.now += 2
    sched.next_task("a")
    clock.now += 5
    sched.apply_result(ResultMessage(id=task.id, agent_id="a", code=0, output=b""))

    assert moved("mschedule_master_targets_started_total") == 1
    assert moved("mschedule_master_dispatch_latency_seconds_count") == 1
    assert moved("mschedule_master_dispatch_latency_seconds_sum") == 2
    assert moved("mschedule_master_dispatch_latency_seconds_bucket", le="2.5") == 1
    assert moved("mschedule_master_dispatch_latency_seconds_bucket", le="1.0") == 0
    assert moved("mschedule_master_targets_ended_total", state="SUCCEED") == 1
    assert moved("mschedule_master_target_duration_seconds_count", state="SUCCEED") == 1
    assert moved("mschedule_master_target_duration_seconds_sum", state="SUCCEED") == 5


def test_every_target_end_path_counts_by_final_state(world):
    """A failing result, the abort that cancels the rest, a cancel, a lost agent: each end counts once; only a
    target that ran is timed."""
    sched, clock, moved = world
    seen(sched, "c")
    aborted = sched.submit(TaskSpec(script=b"false", targets=["a", "b"], parallel=1, fail_count=0))
    sched.next_task("a")
    clock.now += 1
    sched.apply_result(ResultMessage(id=aborted.id, agent_id="a", code=1, output=b""))  # a FAILED, b CANCELLED
    sched.cancel(sched.submit(TaskSpec(script=b"true", targets=["a", "b"])).id)  # 2 CANCELLED, never started
    lost = sched.submit(TaskSpec(script=b"sleep 9", targets=["c"]))
    sched.next_task("c")
    clock.now += 11
    seen(sched, "a", "b")
    assert sched.check_agents() == ["c"]  # c's running target FAILED
    assert lost.state is State.FAILED

    assert moved("mschedule_master_targets_started_total") == 2
    assert moved("mschedule_master_targets_ended_total", state="FAILED") == 2
    assert moved("mschedule_master_targets_ended_total", state="CANCELLED") == 3
    assert moved("mschedule_master_targets_ended_total", state="SUCCEED") == 0
    assert moved("mschedule_master_target_duration_seconds_count", state="FAILED") == 2
    assert moved("mschedule_master_target_duration_seconds_sum", state="FAILED") == 1 + 11
    assert moved("mschedule_master_target_duration_seconds_count", state="CANCELLED") == 0


def test_heartbeats_and_registrations_are_counted_as_they_arrive(world):
    sched, _, moved = world
    handler = AgentHandler(sched)
    info = AgentInfo(id="a", hostname="h-a", session="s1")
    handler.send(register_message(info))
    for _ in range(3):
        handler.send(heartbeat_message(info))
    assert moved("mschedule_master_heartbeats_total", type="register") == 1
    assert moved("mschedule_master_heartbeats_total", type="heartbeat") == 3


def test_each_sqlite_commit_is_timed_and_a_failed_one_counted(tmp_path, monkeypatch):
    storage = SQLiteStorage(str(tmp_path / "master.db"))
    try:
        moved = Deltas(MasterMetrics(storage).registry)
        storage.add_agent(AgentRecord(id="a", hostname="h"))
        storage.flush()
        assert moved("mschedule_master_db_commit_seconds_count") == 1
        assert moved("mschedule_master_db_commit_seconds_sum") > 0

        def broken(*batch):
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(storage, "_commit", broken)
        storage.add_agent(AgentRecord(id="b", hostname="h"))
        with pytest.raises(StorageError, match="disk I/O error"):
            storage.flush()
        assert moved("mschedule_master_db_commit_errors_total") == 1
        assert moved("mschedule_master_db_commit_seconds_count") == 1
        monkeypatch.undo()
    finally:
        storage.close()


def test_the_admin_rpc_answers_text_that_parses_with_only_master_names(world):
    sched, _, _ = world
    text = AdminHandler(sched).metrics()
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)) and all(n.startswith("mschedule_master_") for n in names), names
    assert {"mschedule_master_agents", "mschedule_master_tasks", "mschedule_master_targets",
            "mschedule_master_heartbeats", "mschedule_master_rpc_calls", "mschedule_master_targets_started",
            "mschedule_master_targets_ended", "mschedule_master_dispatch_latency_seconds",
            "mschedule_master_target_duration_seconds", "mschedule_master_db_commit_seconds",
            "mschedule_master_process_cpu_seconds"} <= set(names)
    online = next(f for f in families if f.name == "mschedule_master_agents")
    assert {s.labels["state"]: s.value for s in online.samples} == {"online": 2, "offline": 0, "pending": 0}
