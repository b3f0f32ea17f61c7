"""The master's data model (the design's ``agents`` and ``tasks``), kept in memory.

:class:`Storage` is the one place records live. The scheduler changes records and then calls the
``save_*`` hooks; this in-memory backend makes them no-ops, a persistent backend writes them through.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from mschedule.utils.params import MASK, masked
from mschedule.utils.states import State


@dataclass
class AgentRecord:
    """One agent as the master knows it."""

    id: str
    hostname: str
    ip: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    #: time of the last register or heartbeat (master clock)
    heartbeat: float = 0.0
    registered: float = 0.0
    online: bool = True
    #: process id the agent reports; changes when the agent restarts
    session: str | None = None
    #: task whose target the master handed to this agent and has no result for yet
    current: str | None = None
    #: task the agent said it runs in its last heartbeat
    reported_running: str | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    def to_dict(self) -> dict:
        return {
            "hostname": self.hostname,
            "ip": list(self.ip),
            "labels": dict(self.labels),
            "online": self.online,
            "busy": self.busy,
            "running": self.current,
            "heartbeat": self.heartbeat,
            # seconds on the master's own clock, so a browser on another host needs no clock of its own
            "heartbeat_age": round(max(0.0, time.time() - self.heartbeat), 1),
            "registered": self.registered,
        }


@dataclass
class TargetRecord:
    """One agent's part of one task."""

    agent_id: str
    state: State = State.WAITING
    code: int | None = None
    output: bytes = b""
    started: float | None = None
    finished: float | None = None
    timed_out: bool = False
    truncated: bool = False

    def to_dict(self, hostname: str | None) -> dict:
        return {
            "hostname": hostname,
            "state": self.state,
            "code": self.code,
            "output": self.output,
            "started": self.started,
            "finished": self.finished,
            "timed_out": self.timed_out,
            "truncated": self.truncated,
        }


@dataclass
class TaskRecord:
    """A submitted task and the state of each of its targets."""

    id: str
    script: bytes
    timeout: float
    parallel: int
    fail_rate: float
    fail_count: int
    targets: dict[str, TargetRecord]
    created: float
    state: State = State.WAITING
    started: float | None = None
    finished: float | None = None
    #: number of targets in each state, kept in step by :meth:`set_target_state`
    counts: Counter = field(default_factory=Counter)
    #: the selector the targets were resolved from at submit time (kept for the record)
    selector: dict | None = None
    #: rolled out one value of this label at a time: ``batches`` is [(value or None, [agent ids])] in
    #: order, and only targets of batch number ``batch`` may start
    batch_by: str | None = None
    batches: list = field(default_factory=list)
    batch: int = 0
    #: the job and version this task was started from, if any
    job: str | None = None
    job_version: int | None = None
    #: the task this one retries (POST /task/{id}/retry), if any
    retry_of: str | None = None
    #: the script's environment (mschedule/utils/params.py); ``secrets`` names the values never shown and never
    #: stored (see :attr:`extra`); ``params``: the names a job run declared
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    #: webhooks to call when the task ends, and the deliveries made of them (mschedule/master/notifications.py)
    notify: list[dict] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)
    #: the schedule that fired this task, and the tick (Unix seconds) it fired for
    schedule_id: str | None = None
    schedule_tick: float | None = None
    #: the user whose token made it (``schedule:ID`` for a schedule's tick), and who cancelled it
    created_by: str | None = None
    cancelled_by: str | None = None
    #: the idempotency key that made it, ``{user, key, sha256}`` (mschedule/master/idempotency.py)
    request_key: dict | None = None

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = Counter(t.state for t in self.targets.values())
        self._batch_of = {agent_id: i for i, (_, members) in enumerate(self.batches) for agent_id in members}

    def may_start(self, agent_id: str) -> bool:
        """Whether the target of ``agent_id`` belongs to the batch now rolling out."""
        return not self.batches or self._batch_of.get(agent_id) == self.batch

    def batch_done(self) -> bool:
        if not self.batches or self.batch >= len(self.batches):
            return False
        return all(self.targets[a].state.is_finished for a in self.batches[self.batch][1])

    @property
    def extra(self) -> dict:
        """What a persistent backend stores beside the plain columns."""
        # a secret's value is never written: it lives in this process's memory while the task may hand it to an
        # agent (a restarted master fails the targets still waiting for it: Scheduler.restore)
        env = masked(self.env, self.secrets)
        return {"selector": self.selector, "batch_by": self.batch_by, "batches": self.batches, "batch": self.batch,
                "job": self.job, "job_version": self.job_version, "retry_of": self.retry_of, "env": env,
                "secrets": self.secrets, "params": self.params, "notify": self.notify,
                "notifications": self.notifications, "schedule_id": self.schedule_id,
                "schedule_tick": self.schedule_tick, "created_by": self.created_by, "cancelled_by": self.cancelled_by,
                "request_key": self.request_key}

    #: the :attr:`extra` keys a persistent backend gives back to the constructor as they are
    EXTRA_FIELDS = ("selector", "batch_by", "batch", "job", "job_version", "retry_of", "env", "secrets", "params",
                    "notify", "notifications", "schedule_id", "schedule_tick", "created_by", "cancelled_by",
                    "request_key")

    @property
    def secret_values(self) -> list[str]:
        """The values to mask in this task's output (none after a master restart: they were never stored)."""
        return [self.env[name] for name in self.secrets if self.env.get(name, MASK) != MASK]

    def set_target_state(self, target: TargetRecord, state: State) -> None:
        self.counts[target.state] -= 1
        self.counts[state] += 1
        target.state = state

    @property
    def total(self) -> int:
        return len(self.targets)

    @property
    def running(self) -> int:
        return self.counts[State.RUNNING]

    @property
    def failed(self) -> int:
        return self.counts[State.FAILED]

    @property
    def pending(self) -> int:
        """Targets that have not ended yet (WAITING or RUNNING)."""
        return self.counts[State.WAITING] + self.counts[State.RUNNING]

    def limit_breached(self) -> bool:
        """The design's failure limits: too many failures by count or by rate."""
        failed = self.failed
        if self.fail_count >= 0 and failed > self.fail_count:
            return True
        return failed * 100 > self.fail_rate * self.total

    def summary(self) -> dict:
        return {
            "task_id": self.id,
            "state": self.state,
            "parallel": self.parallel,
            "fail_rate": self.fail_rate,
            "fail_count": self.fail_count,
            "timeout": self.timeout,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "total": self.total,
            "counts": {state.value: self.counts[state] for state in State},
            "selector": self.selector,
            "batch_by": self.batch_by,
            "batches": [{"value": value, "targets": list(members)} for value, members in self.batches],
            "batch": self.batch if self.batches else None,
            "job": self.job,
            "job_version": self.job_version,
            "retry_of": self.retry_of,
            "env": masked(self.env, self.secrets),
            "secrets": list(self.secrets),
            "params": {name: value for name, value in masked(self.env, self.secrets).items() if name in self.params},
            "schedule_id": self.schedule_id,
            "schedule_tick": self.schedule_tick,
            "notify": self.notify,
            "notifications": self.notifications,
            "created_by": self.created_by,
            "cancelled_by": self.cancelled_by,
        }


class KeyState(StrEnum):
    """Admission state of an agent's CURVE public key (as Salt's minion keys)."""

    #: seen, waiting for an operator
    PENDING = "pending"
    #: may register, heartbeat, pull and report
    ACCEPTED = "accepted"
    #: refused at the door until deleted
    REJECTED = "rejected"


@dataclass
class KeyRecord:
    """An agent id bound to the public key that first claimed it."""

    agent_id: str
    key: str
    state: KeyState = KeyState.PENDING
    hostname: str = ""
    ip: list[str] = field(default_factory=list)
    first_seen: float = 0.0
    decided: float | None = None

    def to_dict(self) -> dict:
        return {"agent_id": self.agent_id, "key": self.key, "state": self.state, "hostname": self.hostname,
                "ip": list(self.ip), "first_seen": self.first_seen, "decided": self.decided}


class Overlap(StrEnum):
    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


class Catchup(StrEnum):
    NONE = "none"
    LAST = "last"


@dataclass
class ScheduleRecord:
    """A job run on a cron schedule (mschedule/master/schedules.py); stored as it is (JSON)."""

    id: str
    job: str
    cron: str
    timezone: str = "UTC"
    #: None: the job's latest version at each firing
    version: int | None = None
    #: None: the job's own
    targets: list[str] | None = None
    selector: dict | None = None
    #: the values of the job's parameters (secrets among them are shown as ***)
    params: dict[str, str] = field(default_factory=dict)
    overlap: str = Overlap.SKIP.value
    catchup: str = Catchup.NONE.value
    enabled: bool = True
    notify: list[dict] = field(default_factory=list)
    description: str = ""
    created: float = 0.0
    #: the newest tick dealt with (fired, skipped or missed), on the schedule clock; saved with the task it fires
    last_tick: float | None = None
    #: ``overlap: queue``: the tick to fire once the previous run ends
    queued_tick: float | None = None
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    runs: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict) -> ScheduleRecord:
        return cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})


class Role(StrEnum):
    """What a token may do (mschedule/master/tokens.py; the table in docs/security.md)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


@dataclass
class TokenRecord:
    """An API token of a user: only its SHA-256 is kept."""

    token_id: str
    user: str
    role: str
    digest: str
    created: float
    expires: float | None = None
    last_used: float | None = None
    #: an operator's token may target only the agents this selector matches
    selector: dict | None = None
    created_by: str | None = None

    def view(self) -> dict:
        """What ``GET /tokens`` shows: everything but the digest."""
        return {k: v for k, v in asdict(self).items() if k != "digest"}

    def identity(self) -> dict:
        return {"user": self.user, "role": self.role, "token_id": self.token_id, "selector": self.selector}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict) -> TokenRecord:
        return cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})


class StorageError(Exception):
    """The database cannot be opened, or a commit to it failed (its changes stay pending for the next one); the
    message says why. ``temporary``: trying again later may work (a database server that does not answer now),
    unlike a file that cannot be made or a URL that cannot be read."""

    def __init__(self, message: str, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class Storage:
    """In-memory agents and tasks, with the write-through hooks a persistent backend implements."""

    #: why the last commit failed (a persistent backend sets it; None once a commit succeeds again)
    last_error: str | None = None

    def __init__(self) -> None:
        self.agents: dict[str, AgentRecord] = {}
        #: insertion ordered: oldest task first
        self.tasks: dict[str, TaskRecord] = {}
        #: agent id -> its key's admission record
        self.keys: dict[str, KeyRecord] = {}
        #: group name -> {"selector": ..., "targets": [...]}
        self.groups: dict[str, dict] = {}
        #: job name -> its versions, version n at index n - 1 (never edited, never removed)
        self.jobs: dict[str, list[dict]] = {}
        #: schedule id -> its record (mschedule/master/schedules.py), oldest first
        self.schedules: dict[str, ScheduleRecord] = {}
        #: token id -> its record (mschedule/master/tokens.py)
        self.tokens: dict[str, TokenRecord] = {}
        #: the audit trail, oldest first (mschedule/master/audit.py); a persistent backend keeps only the newest
        #: in memory and the rest on disk
        self.audit: list[dict] = []

    # agents
    def get_agent(self, agent_id: str) -> AgentRecord | None:
        return self.agents.get(agent_id)

    def add_agent(self, agent: AgentRecord) -> None:
        self.agents[agent.id] = agent
        self.save_agent(agent)

    def save_agent(self, agent: AgentRecord) -> None:
        """Persist an agent's registration data (a heartbeat alone need not be durable)."""

    # tasks
    def get_task(self, task_id: str) -> TaskRecord | None:
        return self.tasks.get(task_id)

    def add_task(self, task: TaskRecord) -> None:
        self.tasks[task.id] = task
        self.save_task(task)

    def recent_tasks(self, limit: int) -> list[TaskRecord]:
        """Newest first."""
        out = []
        for task in reversed(self.tasks.values()):
            if len(out) >= limit:
                break
            out.append(task)
        return out

    def save_task(self, task: TaskRecord) -> None:
        """Persist a task's own fields (state, times)."""

    def delete_task(self, task_id: str) -> None:
        """Forget a task and its targets' outputs (retention)."""
        self.tasks.pop(task_id, None)

    def save_target(self, task: TaskRecord, target: TargetRecord) -> None:
        """Persist one target's state and result."""

    # keys
    def save_key(self, record: KeyRecord) -> None:
        self.keys[record.agent_id] = record

    def delete_key(self, agent_id: str) -> None:
        self.keys.pop(agent_id, None)

    # jobs
    def save_job_version(self, version: dict) -> None:
        self.jobs.setdefault(version["name"], []).append(version)

    # schedules
    def save_schedule(self, record: ScheduleRecord) -> None:
        """Persist a schedule (its ``last_tick`` commits with the task it fired: both are saved before a flush)."""
        self.schedules[record.id] = record

    def delete_schedule(self, schedule_id: str) -> None:
        self.schedules.pop(schedule_id, None)

    # tokens
    def save_token(self, record: TokenRecord) -> None:
        self.tokens[record.token_id] = record

    def delete_token(self, token_id: str) -> None:
        self.tokens.pop(token_id, None)

    # audit
    def add_audit(self, entry: dict) -> None:
        """Append one audit record (its ``seq`` set here)."""
        entry["seq"] = (self.audit[-1]["seq"] + 1) if self.audit else 1
        self.audit.append(entry)

    def query_audit(self, user: str | None, action: str | None, since: float | None, limit: int,
                    before: int | None = None) -> list[dict]:
        """Newest first; ``before``: only records older than the one of this ``seq`` (the next page)."""
        out = []
        for entry in reversed(self.audit):
            if before is not None and entry["seq"] >= before:
                continue
            if since is not None and entry["time"] < since:
                break
            if (user is None or entry["user"] == user) and (action is None or entry["action"] == action):
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    def prune_audit(self, before: float) -> int:
        kept = [e for e in self.audit if e["time"] >= before]
        pruned, self.audit = len(self.audit) - len(kept), kept
        return pruned

    # groups
    def save_group(self, name: str, body: dict) -> None:
        self.groups[name] = body

    def delete_group(self, name: str) -> None:
        self.groups.pop(name, None)

    def flush(self) -> None:
        """Make every change saved so far durable (nothing to do in memory)."""

    def close(self) -> None:
        """Release the backend."""
