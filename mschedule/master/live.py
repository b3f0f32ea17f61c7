"""Live output and task events: what running targets have printed so far, and what happened to a task.

Two things, both in memory only and both bounded:

- a **tail** per running target: the last ``tail_bytes`` of what its agent's ``progress`` messages brought
  (all tails together within ``budget_bytes``: with many targets each keeps less). It is made by the first
  progress message and dropped when the target ends, whatever the end: the result then carries the whole
  output, which is what the database keeps; a target failed without a result (its agent lost) keeps the tail
  as its output (:meth:`Scheduler._fail_target`).
- an **event log** per followed task (``GET /task/{id}/events``): target state changes, new output and task
  state changes, each with a sequence number. A log exists only for a task someone follows (made by the first
  :meth:`LiveOutput.poll`, dropped once nobody polled it for ``idle`` seconds or ``linger`` seconds after its
  ``end``), keeps its last ``max_events`` events and at most ``max_bytes`` of output, and at most
  ``max_logs`` logs exist. A poll blocks in :class:`master.waiters.Waiters` on ``("events", task_id)``,
  released by every append: nothing is held for a task nobody follows.

Cursors are ``<epoch>-<seq>``: ``epoch`` names the log (a new log, e.g. after the master restarted, has a new
one). A poll whose cursor is not of this log, or older than its oldest event, gets a fresh **snapshot** of the
task (``reset``) and the cursor of the log's newest event: a client that reconnects with ``Last-Event-ID``
resumes where it was when the log still has what followed, else starts again from a snapshot.

All of it runs in the master's single gevent thread (see master/waiters.py).
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable

import gevent

from mschedule.master.storage import TargetRecord, TaskRecord
from mschedule.master.waiters import Waiters
from mschedule.utils import messages
from mschedule.utils.exceptions import Conflict
from mschedule.utils.states import State

log = logging.getLogger(__name__)

TAIL_BYTES = 64 * 1024
"""Bytes of the newest output kept per running target."""
BUDGET_BYTES = 64 * 1024 * 1024
"""Bytes all tails together may hold: with more running targets than this many tails of TAIL_BYTES, each keeps
an equal share (at least MIN_TAIL_BYTES)."""
MIN_TAIL_BYTES = 4096
MAX_EVENTS = 1000
"""Events kept per followed task."""
MAX_LOG_BYTES = 4 * 1024 * 1024
"""Output bytes kept in the events of one followed task."""
LOG_BUDGET_BYTES = 64 * 1024 * 1024
"""Output bytes the event logs of all followed tasks together may hold: with more followed tasks than this many
logs of MAX_LOG_BYTES, each keeps an equal share (at least MIN_LOG_BYTES)."""
MIN_LOG_BYTES = 64 * 1024
EVENT_OUTPUT_BYTES = 16 * 1024
"""Most output bytes one ``output`` event carries (the last ones; its ``offset`` shows what was skipped)."""
SNAPSHOT_OUTPUT_BYTES = 1024 * 1024
"""Output bytes one snapshot carries in all (shared by the running targets, at most EVENT_OUTPUT_BYTES each)."""
MAX_LOGS = 256
"""Tasks followed at once; a poll for one more is a Conflict."""
MAX_WAIT = 30.0
"""Longest ``wait`` of one poll, seconds."""
COALESCE = 0.2
"""Seconds a woken poll waits for more events before it answers: a task of a thousand chatty targets makes a
follower poll at most about five times a second, not once per event."""
IDLE = 60.0
"""Seconds without a poll after which a log is dropped."""
LINGER = 30.0
"""Seconds a log is kept after its ``end`` (a client that reconnects then still gets the end)."""


def _share(budget: int, holders: int, most: int, least: int) -> int:
    """Each of ``holders``' equal share of ``budget`` bytes, between ``least`` and ``most``: the one rule of the
    tails' and the event logs' budgets."""
    return min(most, max(least, budget // max(1, holders)))


class _Tail:
    __slots__ = ("data", "end")

    def __init__(self) -> None:
        self.data = bytearray()
        #: offset in the target's output just past ``data``
        self.end = 0


class EventLog:
    """The bounded, numbered events of one followed task."""

    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.max_events = max_events
        self.max_bytes = max_bytes
        #: (seq, kind, data, output bytes)
        self.events: deque[tuple[int, str, dict, int]] = deque()
        self.seq = 0
        self.bytes = 0
        self.used = time.monotonic()
        #: monotonic time of the ``end`` event, or None
        self.ended: float | None = None

    def cursor(self, seq: int | None = None) -> str:
        return f"{self.epoch}-{self.seq if seq is None else seq}"

    def append(self, kind: str, data: dict, size: int = 0) -> None:
        self.seq += 1
        self.events.append((self.seq, kind, data, size))
        self.bytes += size
        self.trim()
        if kind == "end":
            self.ended = time.monotonic()

    def trim(self) -> None:
        """Drop the oldest events beyond ``max_events`` or ``max_bytes`` (a follower behind them gets a snapshot)."""
        while self.events and (len(self.events) > self.max_events or self.bytes > self.max_bytes):
            self.bytes -= self.events.popleft()[3]

    def after(self, cursor: object) -> list[tuple[int, str, dict, int]] | None:
        """The events after ``cursor``; None when the cursor is not of this log or the log no longer has
        everything after it (the caller needs a snapshot)."""
        if not isinstance(cursor, str):
            return None
        epoch, _, seq_text = cursor.partition("-")
        # ASCII digits only, and few: str.isdigit() also takes "²", which int() refuses, and int() refuses
        # more than 4,300 digits; a client's Last-Event-ID may be anything
        if epoch != self.epoch or not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 19):
            return None
        seq = int(seq_text)
        if seq > self.seq:
            return None
        first = self.events[0][0] if self.events else self.seq + 1
        if seq < first - 1:
            return None
        return [e for e in self.events if e[0] > seq] if seq < self.seq else []


def _target_data(agent_id: str, target: TargetRecord, hostname: str | None) -> dict:
    """A target's state; an ended one's ``output_bytes`` (the size of its final output) lets a follower tell
    whether it has seen all of that output or must fetch it."""
    return {"agent_id": agent_id, "hostname": hostname, "state": target.state.value, "code": target.code,
            "started": target.started, "finished": target.finished, "timed_out": target.timed_out,
            "output_bytes": len(target.output or b"") if target.state.is_finished else None}


def _task_data(task: TaskRecord) -> dict:
    return {"task_id": task.id, "state": task.state.value, "total": task.total, "started": task.started,
            "finished": task.finished, "counts": {state.value: task.counts[state] for state in State}}


END_FIELDS = ("env", "secrets", "params", "schedule_id", "schedule_tick", "notify", "notifications", "created_by",
              "cancelled_by")
"""What the ``end`` event carries beyond the task's state: what it ran with and the webhooks it calls (as its
summary shows them, secrets masked), so a follower can sum the task up without fetching it."""


def _end_data(task: TaskRecord) -> dict:
    summary = task.summary()
    return {**_task_data(task), **{name: summary[name] for name in END_FIELDS}}


class LiveOutput:
    """The tails of running targets and the event logs of followed tasks (module docstring)."""

    def __init__(self, waiters: Waiters, hostname: Callable[[str], str | None] = lambda agent_id: None,
                 tail_bytes: int = TAIL_BYTES, budget_bytes: int = BUDGET_BYTES, max_logs: int = MAX_LOGS,
                 max_events: int = MAX_EVENTS, max_log_bytes: int = MAX_LOG_BYTES,
                 log_budget_bytes: int = LOG_BUDGET_BYTES, event_output_bytes: int = EVENT_OUTPUT_BYTES,
                 coalesce: float = COALESCE) -> None:
        self.waiters = waiters
        self.hostname = hostname
        self.tail_bytes = tail_bytes
        self.budget_bytes = budget_bytes
        self.max_logs = max_logs
        self.max_events = max_events
        self.max_log_bytes = max_log_bytes
        self.log_budget_bytes = log_budget_bytes
        self.event_output_bytes = event_output_bytes
        self.coalesce = coalesce
        self._tails: dict[tuple[str, str], _Tail] = {}
        self._logs: dict[str, EventLog] = {}

    def _share_log_budget(self) -> None:
        """Every log's share of LOG_BUDGET_BYTES, given again whenever a log comes or goes."""
        cap = _share(self.log_budget_bytes, len(self._logs), self.max_log_bytes, MIN_LOG_BYTES)
        for events in self._logs.values():
            events.max_bytes = cap
            events.trim()

    # ---- tails ------------------------------------------------------------------------------
    def _tail_cap(self) -> int:
        return _share(self.budget_bytes, len(self._tails), self.tail_bytes, MIN_TAIL_BYTES)

    def feed(self, task_id: str, agent_id: str, offset: int, data: bytes) -> bool:
        """Add a progress message's bytes to the target's tail (a resent or older part is skipped, a gap is
        accepted: progress is best effort). Returns whether anything new arrived."""
        tail = self._tails.get((task_id, agent_id))
        if tail is None:
            tail = self._tails[(task_id, agent_id)] = _Tail()
        if offset + len(data) <= tail.end:
            return False
        if offset < tail.end:
            data, offset = data[tail.end - offset:], tail.end
        tail.data += data
        tail.end = offset + len(data)
        cap = self._tail_cap()
        if len(tail.data) > cap:
            del tail.data[:len(tail.data) - cap]
        events = self._logs.get(task_id)
        if events is not None:
            shown = data[-self.event_output_bytes:]
            events.append("output", {"agent_id": agent_id, "offset": tail.end - len(shown), "data": shown},
                          len(shown))
            self.waiters.release(("events", task_id))
        return True

    def tail(self, task_id: str, agent_id: str) -> tuple[bytes, int] | None:
        """``(newest bytes, total bytes received)`` of a running target's output, or None (nothing arrived)."""
        tail = self._tails.get((task_id, agent_id))
        return (bytes(tail.data), tail.end) if tail is not None else None

    def drop(self, task_id: str, agent_id: str) -> tuple[bytes, int] | None:
        """Forget a target's tail (it ended); returns what :meth:`tail` would have."""
        tail = self._tails.pop((task_id, agent_id), None)
        return (bytes(tail.data), tail.end) if tail is not None else None

    def __len__(self) -> int:
        """Tails held (running targets that have sent output)."""
        return len(self._tails)

    # ---- events -------------------------------------------------------------------------------
    def target_changed(self, task: TaskRecord, target: TargetRecord, result: bool = False) -> None:
        """A target changed state: an event for its followers; an ended target's tail goes.

        ``result``: it ended with its agent's result, whose output is ``target.output``. The output a script
        printed after its last progress message reaches the master only there: when that output continues
        what the events carried (it agrees with the tail), its rest goes as a last ``output`` event and the
        ``target`` event says ``output_streamed``: the output events, joined by offset, are the final output
        (an offset past the previous end still shows bytes skipped). A follower then needs no fetch."""
        tail = self._tails.pop((task.id, target.agent_id), None) if target.state.is_finished else None
        events = self._logs.get(task.id)
        if events is not None:
            data = _target_data(target.agent_id, target, self.hostname(target.agent_id))
            if result and target.state.is_finished:
                data["output_streamed"] = self._stream_rest(events, target, tail)
            events.append("target", data)
            self._maybe_end(task, events)
            self.waiters.release(("events", task.id))

    def _stream_rest(self, events: EventLog, target: TargetRecord, tail: _Tail | None) -> bool:
        """Append the final output's part past the tail as an ``output`` event; whether the final output
        continues the tail (false for an output the agent's cap cut, which no longer matches the stream)."""
        output = target.output or b""
        end = tail.end if tail is not None else 0
        if tail is not None and (len(output) < end or output[end - len(tail.data):end] != tail.data):
            return False
        if len(output) > end:
            shown = output[end:][-self.event_output_bytes:]
            events.append("output", {"agent_id": target.agent_id, "offset": len(output) - len(shown), "data": shown},
                          len(shown))
        return True

    def task_changed(self, task: TaskRecord) -> None:
        events = self._logs.get(task.id)
        if events is not None:
            events.append("task", _task_data(task))
            self._maybe_end(task, events)
            self.waiters.release(("events", task.id))

    @staticmethod
    def _maybe_end(task: TaskRecord, events: EventLog) -> None:
        if events.ended is None and task.state.is_finished and task.running == 0:
            events.append("end", _end_data(task))

    def followed(self) -> int:
        """Tasks with an event log now."""
        return len(self._logs)

    def _sweep(self) -> None:
        now = time.monotonic()
        gone = [t for t, e in self._logs.items()
                if now - e.used > IDLE or (e.ended is not None and now - e.ended > LINGER)]
        for task_id in gone:
            del self._logs[task_id]
            self.waiters.release(("events", task_id))
        if gone:
            self._share_log_budget()

    def poll(self, task: TaskRecord, cursor: object, wait: float) -> dict:
        """Events of ``task`` after ``cursor``, waiting up to ``wait`` seconds for one when there is none yet.

        Answers ``{"cursor", "reset", "snapshot", "events": [{"id", "event", "data"}]}``; ``reset`` (with a
        ``snapshot`` of the task) when the cursor is None, of another log, or older than the log keeps.

        Raises:
            Conflict: MAX_LOGS tasks are followed already.
        """
        self._sweep()
        events = self._logs.get(task.id)
        if events is None:
            finished = task.state.is_finished and task.running == 0
            if not finished and len(self._logs) >= self.max_logs:
                raise Conflict(f"task_id: {self.max_logs} tasks are followed already; try again later",
                               field="task_id")
            events = EventLog(self.max_events, self.max_log_bytes)
            if finished:  # nothing will happen: a snapshot and the end, without keeping a log
                events.append("end", _end_data(task))
                return self._answer(events, None, task)
            self._logs[task.id] = events
            self._share_log_budget()
        events.used = time.monotonic()
        new = events.after(cursor)
        if new == [] and events.ended is None and wait > 0:
            if self.waiters.wait(("events", task.id), min(wait, MAX_WAIT)) and self.coalesce > 0:
                gevent.sleep(self.coalesce)
            events.used = time.monotonic()
            new = events.after(cursor)
        if new == [] and events.ended is not None:  # past the end: the end again (the stream closes on it)
            new = [e for e in events.events if e[1] == "end"]
        return self._answer(events, new, task)

    def _answer(self, events: EventLog, new: list | None, task: TaskRecord) -> dict:
        reset = new is None
        if reset:
            new = [e for e in events.events if e[1] == "end"]
        return {"cursor": events.cursor(), "reset": reset, "snapshot": self.snapshot(task) if reset else None,
                "events": [{"id": events.cursor(seq), "event": kind, "data": _wire(kind, data)}
                           for seq, kind, data, _ in new]}

    def snapshot(self, task: TaskRecord) -> dict:
        """The task and each target's state, with running targets' newest output (bounded in all)."""
        running = sum(1 for key in self._tails if key[0] == task.id)
        share = min(self.event_output_bytes, SNAPSHOT_OUTPUT_BYTES // max(1, running))
        targets = {}
        for agent_id, target in task.targets.items():
            entry = _target_data(agent_id, target, self.hostname(agent_id))
            tail = self._tails.get((task.id, agent_id))
            if tail is not None:
                shown = bytes(tail.data[-share:])
                entry["output"], entry["offset"] = messages.b64encode(shown), tail.end - len(shown)
            targets[agent_id] = entry
        return {"task": _task_data(task), "targets": targets}


def _wire(kind: str, data: dict) -> dict:
    """An event's data as it crosses msgpack: output as base64 (as every output does)."""
    if kind == "output":
        return {**data, "data": messages.b64encode(data["data"])}
    return data
