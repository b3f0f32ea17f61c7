"""The master's Prometheus metrics (docs/metrics.md lists each): events counted as they happen, state read at
scrape time.

The master is one gevent process that 10,000 agents heartbeat, so an event costs one counter increment or one
histogram observation (a fraction of a microsecond), on a child made at import: no label lookup on a hot
path. What can be read from the records (agents by state, tasks by state, targets waiting or running) is
counted only when Prometheus scrapes, by :class:`StateCollector`. The event metrics are process-wide, like
the scheduler they count; each :class:`MasterMetrics` registry (one per master) exposes them with its own
state collector. Every name starts with ``mschedule_master_``: the web tier serves this text after its own,
whose names start with ``mschedule_web_``.
"""
from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from mschedule.transport.metrics import NAMESPACE, RPC_CALLS, RPC_ERRORS, TransportCollector
from mschedule.utils import messages
from mschedule.utils.states import FINISHED_STATES, State

if TYPE_CHECKING:  # the scheduler and the storage import this module
    from mschedule.master.admission import Admission
    from mschedule.master.storage import Storage
    from mschedule.transport.stats import TransportStats

_HEARTBEATS = Counter("heartbeats", "heartbeats and registrations received from agents (before the key check), "
                      "by type: heartbeat, register", ("type",), namespace=NAMESPACE, registry=None)
_PROGRESS = Counter("progress_messages", "live output messages (progress) of running targets received, by whether "
                    "they brought new output: applied true, false (a resend, or a target not running)", ("applied",),
                    namespace=NAMESPACE, registry=None)
_TARGETS_STARTED = Counter("targets_started", "targets handed to their agent (WAITING -> RUNNING)",
                           namespace=NAMESPACE, registry=None)
_TARGETS_ENDED = Counter("targets_ended", "targets that ended, by final state: SUCCEED, FAILED (a non-zero exit, "
                         "a timeout, a lost agent), CANCELLED (the task was cancelled or aborted)", ("state",),
                         namespace=NAMESPACE, registry=None)
_DISPATCH_LATENCY = Histogram(
    "dispatch_latency_seconds", "seconds from a task's submit to one of its targets RUNNING (includes the wait for "
    "the parallel window and for earlier batches)", namespace=NAMESPACE, registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600))
_TARGET_DURATION = Histogram(
    "target_duration_seconds", "seconds from a target's start to its end, by final state (targets that never "
    "started are not observed)", ("state",), namespace=NAMESPACE, registry=None,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400))
_DB_COMMIT = Histogram(
    "db_commit_seconds", "seconds one database commit takes, from the batch handed to the database thread to its "
    "fsync done (what a flush waits for)", namespace=NAMESPACE, registry=None,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DB_COMMIT_ERRORS = Counter("db_commit_errors", "database commits that failed (their changes stay pending)",
                           namespace=NAMESPACE, registry=None)

_SCHEDULE_TICKS = Counter("schedule_ticks", "schedule ticks dealt with, by outcome: fired, skipped (overlap or an "
                          "error), missed (seen too late; a catch-up fires only the newest)", ("outcome",),
                          namespace=NAMESPACE, registry=None)
_WEBHOOK_ATTEMPTS = Counter("webhook_attempts", "webhook POSTs made, by result: delivered (a 2xx), failed (any other "
                            "answer, none, or refused)", ("result",), namespace=NAMESPACE, registry=None)

EVENT_METRICS = (RPC_CALLS, RPC_ERRORS, _HEARTBEATS, _PROGRESS, _TARGETS_STARTED, _TARGETS_ENDED, _DISPATCH_LATENCY,
                 _TARGET_DURATION, _DB_COMMIT, DB_COMMIT_ERRORS, _SCHEDULE_TICKS, _WEBHOOK_ATTEMPTS)
"""Every metric counted as events happen (the same objects in every registry of this process)."""

# children made once: exported from zero, and no label lookup per event
_HEARTBEAT_OF = {kind: _HEARTBEATS.labels(kind) for kind in (messages.HEARTBEAT, messages.REGISTER)}
_PROGRESS_OF = {applied: _PROGRESS.labels(str(applied).lower()) for applied in (True, False)}
_ENDED = {state: _TARGETS_ENDED.labels(state.value) for state in State if state.is_finished}
_DURATION = {state: _TARGET_DURATION.labels(state.value) for state in State if state.is_finished}
_TICKS = {outcome: _SCHEDULE_TICKS.labels(outcome) for outcome in ("fired", "skipped", "missed")}
_ATTEMPTS = {ok: _WEBHOOK_ATTEMPTS.labels("delivered" if ok else "failed") for ok in (True, False)}


def schedule_ticks(outcome: str, count: int = 1) -> None:
    """``count`` ticks of a schedule were ``fired``, ``skipped`` or ``missed``."""
    _TICKS[outcome].inc(count)


def webhook_attempted(delivered: bool) -> None:
    _ATTEMPTS[delivered].inc()


def heartbeat_received(kind: str) -> None:
    """An agent's ``heartbeat`` or ``register`` message arrived."""
    _HEARTBEAT_OF[kind].inc()


def progress_received(applied: bool) -> None:
    """A ``progress`` message of a running target was taken (``applied``: it brought new output)."""
    _PROGRESS_OF[applied].inc()


def target_started(latency: float) -> None:
    """A target became RUNNING ``latency`` seconds after its task was submitted."""
    _TARGETS_STARTED.inc()
    _DISPATCH_LATENCY.observe(latency)


def target_ended(state: State, started: float | None = None, finished: float | None = None, count: int = 1) -> None:
    """``count`` targets ended in ``state``; the time between ``started`` and ``finished`` (when it started)."""
    _ENDED[state].inc(count)
    if started is not None and finished is not None:
        _DURATION[state].observe(max(0.0, finished - started))


def db_committed(seconds: float) -> None:
    """One database commit succeeded after ``seconds``."""
    _DB_COMMIT.observe(seconds)


class StateCollector:
    """Gauges read from the master's records when Prometheus scrapes (one pass over agents and tasks).

    - ``mschedule_master_agents{state}``: online, offline (known, silent past the agent timeout or stopped),
      pending (a key waiting for an operator's decision; 0 with ``--insecure``);
    - ``mschedule_master_tasks{state}``: the tasks the master keeps (retention prunes finished ones);
    - ``mschedule_master_targets{state}``: targets WAITING or RUNNING now.
    """

    def __init__(self, storage: Storage, admission: Admission | None = None) -> None:
        self._storage = storage
        self._admission = admission

    def collect(self) -> Iterator[Metric]:
        agents = GaugeMetricFamily(f"{NAMESPACE}_agents", "agents by state: online, offline, pending (a key that "
                                   "waits for an operator)", labels=["state"])
        online = sum(1 for agent in self._storage.agents.values() if agent.online)
        agents.add_metric(["online"], online)
        agents.add_metric(["offline"], len(self._storage.agents) - online)
        agents.add_metric(["pending"], self._admission.pending_count if self._admission is not None else 0)
        by_state: Tally[State] = Tally()
        waiting = running = 0
        for task in self._storage.tasks.values():
            by_state[task.state] += 1
            running += task.running  # an aborted task's targets may still run
            if task.state not in FINISHED_STATES:
                waiting += task.counts[State.WAITING]
        tasks = GaugeMetricFamily(f"{NAMESPACE}_tasks", "tasks kept by the master, by state", labels=["state"])
        for state in State:
            tasks.add_metric([state.value], by_state[state])
        targets = GaugeMetricFamily(f"{NAMESPACE}_targets", "targets waiting for their agent or running now",
                                    labels=["state"])
        targets.add_metric([State.WAITING.value], waiting)
        targets.add_metric([State.RUNNING.value], running)
        yield from (agents, tasks, targets)


class MasterMetrics:
    """One master's registry: the event metrics, its records' state, its endpoints' transport counters and
    its process (CPU, memory, open files: ``mschedule_master_process_*``).

    ``transports`` may grow after construction (:meth:`watch`): the servers exist after their handlers.
    """

    def __init__(self, storage: Storage, admission: Admission | None = None,
                 transports: Sequence[TransportStats] = ()) -> None:
        self.transports: list[TransportStats] = list(transports)
        self.registry = CollectorRegistry(auto_describe=True)
        for metric in EVENT_METRICS:
            self.registry.register(metric)
        self.registry.register(StateCollector(storage, admission))
        self.registry.register(TransportCollector(self.transports))
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)

    def watch(self, *stats: TransportStats) -> None:
        """Export these endpoints' transport counters too."""
        self.transports.extend(stats)

    def text(self) -> str:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry).decode()
