"""The master's RPC surface, as two objects served on two endpoints.

:class:`AgentHandler` (the agents' endpoint) has only what an agent needs: ``send`` (register, heartbeat,
progress, result), ``get_task`` and ``ping``, each for the caller's own agent id. :class:`AdminHandler` (the admin
endpoint, loopback by default, for the web tier and the ``keys`` command) creates and reads tasks and
manages agent keys. Method names keep the design's. A bad message or call gets a typed error answer
(:mod:`mschedule.transport.errors`: ``MessageError``, ``ValidationError``, ``Unauthorized``, ``KeyPending``, ...) with
the field it is about, and a log line; it never reaches the state.
"""
from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from mschedule.master import live, metrics
from mschedule.master.admission import Admission, Unauthorized
from mschedule.master.audit import AuditLog
from mschedule.master.idempotency import RequestKeys, fingerprint, request_key
from mschedule.master.jobs import Jobs
from mschedule.master.metrics import MasterMetrics
from mschedule.master.scheduler import Scheduler
from mschedule.master.schedules import DEFAULT_GRACE, ScheduleClock, Schedules
from mschedule.master.storage import KeyState, StorageError, TargetRecord, TaskRecord
from mschedule.master.tokens import Tokens
from mschedule.utils import messages
from mschedule.utils.defaults import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MAX_SCRIPT_BYTES,
    DEFAULT_MAX_TARGETS,
    DEFAULT_TASK_LIST,
    MAX_POLL_WAIT,
    MAX_RESULT_WAIT,
    MAX_TASK_LIST,
    MAX_TIME,
)
from mschedule.utils.exceptions import Conflict, KeyPending, MessageError, NotDurable, NotFound, ValidationError
from mschedule.utils.messages import AgentInfo, ProgressMessage, ResultMessage, TaskMessage
from mschedule.utils.params import check_param, check_value
from mschedule.utils.selectors import validate_selector
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec, resolve_hostnames
from mschedule.utils.validate import describe, integer, number, utf8

log = logging.getLogger(__name__)

MAX_BULK_KEYS = 10000
"""Most agent ids one keys_decide_many / keys_delete_many call takes."""

_COMMITS = "_commits"


def commits(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a handler method as one that changes state, and commit what it changed before it answers.

    The commit (``storage.flush()``: everything saved so far) runs after the method returns and before
    zerorpc sends its answer, so whatever a caller was told happened survives a kill -9 of the master. It is
    one decorator rather than a ``flush()`` at the end of each method because a method that forgets its
    flush works in every test until the master crashes; a method with this mark cannot forget, and
    tests/unit/test_handler_durability.py fails on any public method that is neither marked nor declared
    read-only. A method that raises is not committed here (its error acknowledges nothing); the periodic
    commit catches up with anything it changed before the error.
    """
    @functools.wraps(method)
    def committed(self, *args: Any, **kwargs: Any) -> Any:
        answer = method(self, *args, **kwargs)
        try:
            self._storage.flush()
        except StorageError as exc:  # the caller must not take a change for refused, nor for durable
            raise NotDurable(f"the change was made but could not be committed ({exc}); it will be when the "
                             "master's disk has room, and is lost if the master stops first: check its state "
                             "before retrying") from exc
        return answer

    setattr(committed, _COMMITS, True)
    return committed


def changes_state(method: Callable[..., Any]) -> bool:
    """Whether ``method`` carries the :func:`commits` mark."""
    return getattr(method, _COMMITS, False)


def _wait_seconds(value: Any, cap: float, name: str = "wait") -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValidationError(f"{name}: expected a number of seconds", field=name)
    return max(0.0, min(float(value), cap))


def _result_wait(value: Any) -> float:
    """``wait`` of a ``get_result``: 0 to MAX_RESULT_WAIT seconds."""
    return float(number(value, "wait", 0, int(MAX_RESULT_WAIT), default=0, hint="seconds"))


def _actor(actor: Any) -> tuple[str | None, dict | None]:
    """``(user, scope)`` of an ``actor`` the web tier sends: ``{"user": name, "selector": {...} or null}``, and
    an ``idempotency_key`` if the request has one (mschedule/master/idempotency.py). None, or a user None: a
    caller that is no user (the master's own ``keys`` command, a web tier run --insecure)."""
    if actor is None:
        return None, None
    if not isinstance(actor, dict) or not (actor.get("user") is None or isinstance(actor["user"], str)) \
            or len(actor.get("user") or "") > 256:
        raise ValidationError("actor: expected {user, selector}", field="actor")
    scope = actor.get("selector")
    return actor["user"], (validate_selector(scope, "actor.selector") if scope is not None else None)


def output_tail(output: bytes, limit: int | None) -> bytes:
    """The last ``limit`` bytes of ``output`` (all of it for None), not starting inside a UTF-8 character."""
    if limit is None or len(output) <= limit:
        return output
    tail = output[len(output) - limit:]
    start = 0
    while start < min(3, len(tail)) and 0x80 <= tail[start] <= 0xBF:
        start += 1
    return tail[start:]


class AgentHandler:
    """zerorpc methods for agents. Public methods are exposed; helpers start with ``_``.

    With ``admission`` (CURVE on), every call must come from the agent it names, with an accepted key.
    """

    def __init__(self, scheduler: Scheduler, admission: Admission | None = None) -> None:
        self._scheduler = scheduler
        self._storage = scheduler.storage
        self._admission = admission
        #: id of this master process, in every answer to an agent: a new one tells agents the master
        #: restarted, and that a long poll they sent before it will never be answered
        self.boot = uuid.uuid4().hex

    def send(self, msg: Any) -> dict:
        """Take an agent message: ``register``, ``heartbeat`` or ``result``; answer ``{"ok": True, ...}``.

        A message that is not taken raises, and the agent gets the typed error (docs/architecture.md, Messages):
        MessageError (malformed, with its field), Unauthorized (key rejected, another agent's id, no room for
        a new key: the master's PendingFull), KeyPending (the key waits for an operator's decision).
        The RPC server logs each at its class's level (a pending key or a full pending list: not per call).
        """
        kind, payload = messages.split_message(msg)
        if kind in (messages.REGISTER, messages.HEARTBEAT):
            metrics.heartbeat_received(kind)
        if kind == messages.REGISTER:
            return self._register(AgentInfo.from_payload(payload))
        if kind == messages.HEARTBEAT:
            return self._heartbeat(messages.Heartbeat.from_payload(payload))
        if kind == messages.RESULT:
            return self._result(ResultMessage.from_payload(payload))
        if kind == messages.PROGRESS:
            return self._progress(ProgressMessage.from_payload(payload))
        raise MessageError(f"type: unknown message type {kind!r}", field="type")

    def _register(self, info: AgentInfo) -> dict:
        if self._admission is not None:
            self._require_accepted(info.id, self._admission.on_register(info.id, info.hostname, info.ip))
        known = self._scheduler.agent_seen(info)
        return self._pace(info.id, {"ok": True, "known": known, "master": self.boot})

    def _heartbeat(self, beat: messages.Heartbeat) -> dict:
        if self._admission is not None:
            state = self._admission.on_heartbeat(beat.id)
            if state is None:  # no key on record (deleted by an operator): registering records it
                return self._pace(beat.id, {"ok": True, "known": False, "master": self.boot})
            self._require_accepted(beat.id, state)
        known = self._scheduler.agent_heartbeat(beat)
        return self._pace(beat.id, {"ok": True, "known": known, "master": self.boot})

    @staticmethod
    def _require_accepted(agent_id: str, state: KeyState) -> None:
        if state is KeyState.REJECTED:
            raise Unauthorized(f"agent {agent_id}: key rejected")
        if state is KeyState.PENDING:
            raise KeyPending(f"agent {agent_id}: key pending acceptance by an operator")

    def _pace(self, agent_id: str, answer: dict) -> dict:
        """Add the heartbeat interval and long-poll wait this agent is to use (mschedule/master/liveness.py)."""
        interval, poll = self._scheduler.pace(agent_id)
        answer["interval"], answer["poll"] = interval, poll
        return answer

    def _progress(self, progress: ProgressMessage) -> dict:
        """Live output of a running target: kept in memory (master/live.py), never committed."""
        if self._admission is not None:
            self._admission.check_agent(progress.agent_id)
        applied = self._scheduler.apply_progress(progress)
        metrics.progress_received(applied)
        return {"ok": True, "applied": applied, "master": self.boot}

    @commits
    def _result(self, result: ResultMessage) -> dict:
        """Apply a result; the agent deletes it from its spool on this ack, so the ack waits for the commit.

        Registrations and heartbeats, the rest of ``send``, are not committed before their answer.
        """
        if self._admission is not None:
            self._admission.check_agent(result.agent_id)
        applied = self._scheduler.apply_result(result)
        return {"ok": True, "applied": applied, "master": self.boot}

    @commits
    def get_task(self, agent_id: Any, wait: Any = 0, session: Any = None) -> dict | None:
        """Long poll: the agent's next task message as soon as there is one, or None after ``wait``.

        ``session`` (optional) is the polling process's session id; a poll of a process that is no
        longer the agent's current one gets nothing. The dispatch is committed before the agent hears of it
        (``@commits``), so a restarted master knows the target runs.
        """
        if not isinstance(agent_id, str) or not agent_id:
            raise ValidationError("agent_id: expected a non-empty string", field="agent_id")
        if session is not None and not isinstance(session, str):
            raise ValidationError("session: expected a string", field="session")
        if self._admission is not None:
            self._admission.check_agent(agent_id)
        task = self._scheduler.wait_task(agent_id, _wait_seconds(wait, MAX_POLL_WAIT), session)
        if task is None:
            return None
        if self._admission is not None:
            self._admission.check_agent(agent_id)  # rejected while it waited: reveal nothing
        return TaskMessage(id=task.id, script=task.script, timeout=task.timeout, parallel=task.parallel,
                           fail_rate=task.fail_rate, fail_count=task.fail_count, env=task.env,
                           secrets=task.secrets).to_message()

    def watch_cancel(self, agent_id: Any, task_id: Any, wait: Any = 0) -> bool:
        """Long poll of an agent while it runs ``task_id``: True as soon as the task is cancelled."""
        if not isinstance(agent_id, str) or not isinstance(task_id, str):
            raise ValidationError("agent_id, task_id: expected strings",
                                  field="agent_id" if not isinstance(agent_id, str) else "task_id")
        if self._admission is not None:
            self._admission.check_agent(agent_id)
        task = self._storage.get_task(task_id)
        if task is None or agent_id not in task.targets:
            raise ValidationError(f"task {task_id}: agent {agent_id} is not one of its targets", field="task_id")
        cancelled = self._scheduler.watch_cancel(task_id, _wait_seconds(wait, MAX_POLL_WAIT))
        if cancelled:  # the agent kills its script on this answer: not before the cancel is durable
            try:
                self._storage.flush()
            except StorageError as exc:
                raise NotDurable(f"the cancel of {task_id} is not committed yet ({exc}); ask again") from exc
        return cancelled

    def ping(self) -> dict:
        return {"ok": True, "master": self.boot}


class AdminHandler:
    """zerorpc methods for the web tier and the ``keys`` command.

    Every method that changes state is marked :func:`commits`: its answer leaves only after its commit.
    """

    def __init__(self, scheduler: Scheduler, admission: Admission | None = None,
                 max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES,
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES, max_targets: int = DEFAULT_MAX_TARGETS,
                 health: Callable[[], dict] | None = None, metrics: Callable[[], str] | None = None,
                 schedule_clock: ScheduleClock | None = None, schedule_grace: float = DEFAULT_GRACE,
                 audit_log: str | None = None) -> None:
        self._scheduler = scheduler
        self._health = health
        #: the text of the master's metrics (the server's registry, which has its endpoints too)
        self._metrics_text = metrics or MasterMetrics(scheduler.storage, admission).text
        self._storage = scheduler.storage
        self._admission = admission
        self._max_script_bytes = max_script_bytes
        self._max_result_bytes = max_result_bytes
        self._max_targets = max_targets
        self._jobs = Jobs(self._storage, max_script_bytes, max_targets)
        self.tokens = Tokens(self._storage)
        self._request_keys = RequestKeys(self._storage)
        #: the housekeeper prunes it (``--keep-audit-days``)
        self.audit = AuditLog(self._storage, audit_log)
        #: the server runs its firing loop (``schedules.run``)
        self.schedules = Schedules(self._storage, self._jobs, self._submit, self._checked_targets,
                                   clock=schedule_clock, grace=schedule_grace, settle=scheduler.agent_timeout)

    @commits
    def add_task(self, task: Any, actor: Any = None) -> str:
        """Create a task from the HTTP body as it came: ``{script (text), targets, selector, timeout, ...}``.

        The master is the one place that validates it (TaskSpec); the web tier only parses JSON. ``actor``
        (:func:`_actor`) is who asks: the task records it, and an operator's selector bounds its targets.
        """
        spec = TaskSpec.from_request(task, max_script_bytes=self._max_script_bytes, max_targets=self._max_targets)
        return self._submit(spec, actor).id

    def _submit(self, spec: TaskSpec, actor: Any = None, job: tuple[str, int] | None = None,
                retry_of: str | None = None) -> TaskRecord:
        """The task ``spec`` asks for, its targets checked: every task is made here (a request, a job run, a
        retry, a schedule's tick). A request whose idempotency key made a task already gets that task."""
        user, scope = _actor(actor)
        key = request_key(actor)
        spec = self._checked_targets(spec)
        if scope is not None:
            self._check_scope(spec, scope)
        if key is not None:
            digest = fingerprint(spec, job, retry_of)
            made = self._request_keys.made(user, key, digest)
            if made is not None:
                log.info("task %s: the same request again (idempotency key %s): no new task", made.id, key)
                return made
        task = self._scheduler.submit(spec)
        task.created_by = user
        if key is not None:
            self._request_keys.remember(task, user, key, digest)
        return task

    def _check_scope(self, spec: TaskSpec, scope: dict) -> None:
        """Every target of ``spec`` must match ``scope`` (an operator token's selector)."""
        try:
            targets = self._scheduler.resolve_targets(spec)
        except NotFound as exc:
            raise ValidationError(exc.message, field=exc.field) from None
        self._check_scope_of(targets, scope)

    def _check_scope_of(self, targets: list[str], scope: dict) -> None:
        """Unauthorized (403, ``targets``) naming the agents of ``targets`` that ``scope`` does not pick."""
        try:
            allowed = set(self._scheduler.select(scope, field="scope"))
        except NotFound as exc:
            raise ValidationError(exc.message, field=exc.field) from None
        outside = [a for a in targets if a not in allowed]
        if outside:
            agents = self._storage.agents
            shown = ", ".join(f"{a} ({agents[a].hostname})" if a in agents else a for a in outside[:10])
            raise Unauthorized(f"targets: {len(outside)} agents are outside what your token may target "
                               f"({json.dumps(scope, sort_keys=True)}): {shown}{' ...' if len(outside) > 10 else ''}",
                               field="targets")

    def _checked_targets(self, spec: TaskSpec) -> TaskSpec:
        """``spec`` with hostnames in its targets resolved to agent ids, each target with an accepted key.

        Every path that creates a task from a request goes through here (a task, a job run), so a hostname
        works, and a refused key is refused, the same way in each.
        """
        agents = self._storage.agents
        if any(a not in agents for a in spec.targets):  # the map of hostnames only when one is needed
            spec.targets = resolve_hostnames(spec.targets, {a: agent.hostname for a, agent in agents.items()})
        if self._admission is not None:
            keys = self._storage.keys
            refused = [a for a in spec.targets
                       if a in agents and a in keys and keys[a].state is not KeyState.ACCEPTED]
            if refused:
                raise ValidationError(f"targets: agent {refused[0]} has no accepted key", field="targets")
        return spec

    @commits
    def cancel_task(self, task_id: Any, actor: Any = None) -> dict:
        """Cancel a task (see Scheduler.cancel); answers its summary; the task records who cancelled it. An
        operator's selector must pick every target of it (Unauthorized otherwise)."""
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id: expected a non-empty string", field="task_id")
        user, scope = _actor(actor)
        task = self._storage.get_task(task_id)
        if task is not None and scope is not None:  # an operator stops only what it could have started
            self._check_scope_of([a for a in task.targets if a in self._storage.agents], scope)
        first = task is not None and task.state is not State.CANCELLED
        task = self._scheduler.cancel(task_id)
        if first:
            task.cancelled_by = user
            self._storage.save_task(task)
        return task.summary()

    @commits
    def retry_task(self, task_id: Any, body: Any = None, actor: Any = None) -> dict:
        """A new task with the script and parameters of an ended one, on its targets in the ``only`` states.

        ``body``: ``{"only": ["FAILED", "CANCELLED"]}`` (the default: both). The new task keeps the old one's
        timeout, parallel, failure limits, batching (its order of values) and job version, and records
        ``retry_of``; it runs on exactly those targets, in the old order (no selector: the hosts are known).

        Raises:
            ValidationError: a bad ``only``, or no target in those states ("nothing to retry").
            NotFound: no such task. Conflict: the task has not finished, or some of its targets still run (a
                cancelled or aborted task's running scripts end on their own time).
        """
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id: expected a non-empty string", field="task_id")
        only = self._retry_states(body)
        old = self._storage.get_task(task_id)
        if old is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        if not old.state.is_finished or old.running:  # a cancelled or aborted task's scripts may still run
            state = old.state.value if not old.state.is_finished else f"{old.running} targets still running"
            raise Conflict(f"task_id: task {task_id} has not finished ({state}); retry it once it has",
                           field="task_id")
        targets = [a for a, target in old.targets.items() if target.state in only]
        if not targets:
            raise ValidationError(f"task_id: nothing to retry: no target of task {task_id} is "
                                  f"{' or '.join(sorted(s.value for s in only))}", field="task_id")
        order = [value for value, _ in old.batches if value is not None]
        spec = TaskSpec(script=old.script, targets=targets, timeout=old.timeout, parallel=old.parallel,
                        fail_rate=old.fail_rate, fail_count=old.fail_count, batch_by=old.batch_by,
                        batch_order=order or None, env=self._retry_env(old, body), secrets=list(old.secrets),
                        params=list(old.params), notify=list(old.notify))
        task = self._submit(spec, actor, retry_of=old.id)
        task.job, task.job_version, task.retry_of = old.job, old.job_version, old.id
        self._storage.save_task(task)
        log.info("task %s retries %d targets of task %s", task.id, len(targets), old.id)
        return {"task_id": task.id, "retry_of": old.id, "targets": targets}

    def _retry_env(self, old: TaskRecord, body: Any) -> dict[str, str]:
        """The old task's environment, its secrets given again in ``body["params"]``: a secret is not kept once
        its task has ended, so the retry cannot take it from there."""
        given = body.get("params") if isinstance(body, dict) else None
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ValidationError(f"params: expected an object of SECRET_NAME: value, got {describe(given)}",
                                  field="params")
        extra = sorted(str(k) for k in given if k not in old.secrets)
        if extra:
            raise ValidationError(f"params.{extra[0]}: not a secret of task {old.id} (a retry reuses its other "
                                  "values; only secrets are given again)", field=f"params.{extra[0]}")
        declared = {}
        if old.job is not None and old.job_version is not None:
            try:
                declared = {d["name"]: d for d in self._jobs.declarations(old.job, old.job_version)}
            except NotFound:
                declared = {}
        env = dict(old.env)
        for name in old.secrets:
            if name not in given:
                raise ValidationError(f"params.{name}: secret parameter: give its value again (a secret is not "
                                      "kept once its task has ended)", field=f"params.{name}")
            field = f"params.{name}"
            env[name] = check_param(declared[name], given[name], field) if name in declared else \
                check_value(given[name], field)
        return env

    @staticmethod
    def _retry_states(body: Any) -> set[State]:
        allowed = (State.FAILED, State.CANCELLED)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object such as {\"only\": [\"FAILED\"]}", field="body")
        unknown = sorted(set(body) - {"only", "params"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: only, params)", field=unknown[0])
        only = body.get("only", [s.value for s in allowed])
        if not isinstance(only, list) or not only:
            raise ValidationError(f"only: expected a non-empty array of FAILED and/or CANCELLED, got "
                                  f"{describe(only)}", field="only")
        for value in only:
            if not isinstance(value, str) or value not in {s.value for s in allowed}:
                shown = repr(value) if isinstance(value, str) else describe(value)
                raise ValidationError(f"only: expected FAILED and/or CANCELLED, got {shown}", field="only")
        return {State(v) for v in only}

    def get_agents(self) -> dict:
        return {agent_id: agent.to_dict() for agent_id, agent in self._storage.agents.items()}

    def get_result(self, query: Any) -> dict:
        """One task in full: ``{"task_id": ..., "wait": seconds, "output_limit": bytes}`` (or the bare id).

        ``output_limit`` keeps only the last bytes of each output: a page that refreshes a task of a thousand
        hosts must not make the master encode a gigabyte of output each time. Whatever the limit, outputs that
        together pass ``max_result_bytes`` each keep an equal share of it, their tail. The answer's
        ``output_limit`` says which limit applied (None: whole outputs).
        """
        if isinstance(query, str):
            query = {"task_id": query}
        if not isinstance(query, dict):
            raise ValidationError("body: expected an object with task_id", field="body")
        if not isinstance(query.get("task_id"), str) or not query["task_id"]:
            raise ValidationError("task_id: missing or not a string", field="task_id")
        wait = _result_wait(query.get("wait"))
        limit = integer(query.get("output_limit"), "output_limit", 0, self._max_result_bytes, default=None,
                        hint="bytes")
        task = self._scheduler.wait_finished(query["task_id"], wait)
        cap = self._max_result_bytes if limit is None else limit  # any one output adds at most this
        outputs = (len(self._output_of(task.id, t)[0]) for t in task.targets.values())
        if sum(min(size, cap) for size in outputs) > self._max_result_bytes:
            share = self._max_result_bytes // len(task.targets)
            limit = share if limit is None else min(limit, share)
        detail = self._task_detail(task, limit)
        detail["output_limit"] = limit
        return detail

    def get_target(self, task_id: Any, agent_id: Any) -> dict:
        """One target of one task, with its whole output (a running one's: what reached the master so far,
        ``partial``)."""
        if not isinstance(task_id, str) or not isinstance(agent_id, str):
            raise ValidationError("task_id, agent_id: expected strings",
                                  field="task_id" if not isinstance(task_id, str) else "agent_id")
        task = self._storage.tasks.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        target = task.targets.get(agent_id)
        if target is None:
            raise NotFound(f"task {task_id} has no target {agent_id}", field="agent_id")
        return {"task_id": task_id, "agent_id": agent_id, **self._target_entry(task_id, agent_id, target, None)}

    def task_events(self, task_id: Any, cursor: Any = None, wait: Any = 0) -> dict:
        """Long poll of a task's events after ``cursor`` (master/live.py): target states, new output, the task's
        state and its ``end``; a fresh snapshot when the cursor is None or too old (``reset``)."""
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id: expected a non-empty string", field="task_id")
        if cursor is not None and not isinstance(cursor, str):
            raise ValidationError("cursor: expected a string (an event id) or null", field="cursor")
        task = self._storage.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        return self._scheduler.live.poll(task, cursor, _wait_seconds(wait, live.MAX_WAIT))

    def get_tasks(self, limit: Any = None, filters: Any = None) -> list[dict]:
        """Summaries of the newest tasks, newest first; ``filters``: state, job, agent, schedule, before (created
        time).

        ``limit``: 1 to MAX_TASK_LIST, DEFAULT_TASK_LIST for None.
        """
        limit = integer(limit, "limit", 1, MAX_TASK_LIST, default=DEFAULT_TASK_LIST)
        filters = filters or {}
        if not isinstance(filters, dict):
            raise ValidationError("filters: expected an object", field="filters")
        state, job, agent, before, schedule = (filters.get(k) for k in ("state", "job", "agent", "before", "schedule"))
        if state is not None and state not in {s.value for s in State}:
            raise ValidationError(f"state: expected one of {', '.join(s.value for s in State)}", field="state")
        for name, value in (("job", job), ("agent", agent), ("schedule", schedule)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name}: expected a string, got {describe(value)}", field=name)
        before = number(before, "before", 0, MAX_TIME, default=None, hint="a created time, Unix seconds")
        out = []
        for task in reversed(self._storage.tasks.values()):
            if len(out) >= limit:
                break
            if ((state and task.state != state) or (job and task.job != job) or (agent and agent not in task.targets)
                    or (before is not None and task.created >= before)
                    or (schedule and task.schedule_id != schedule)):
                continue
            out.append(task.summary())
        return out

    # ---- jobs -------------------------------------------------------------------------------
    @commits
    def job_save(self, name: Any, body: Any) -> dict:
        return self._jobs.save(name, body)

    def job_get(self, name: Any, version: Any = None) -> dict:
        return self._jobs.get(name, version)

    def job_versions(self, name: Any) -> list[dict]:
        return self._jobs.versions(name)

    def jobs_list(self) -> list[dict]:
        return self._jobs.list()

    def job_diff(self, name: Any, old: Any, new: Any) -> dict:
        return self._jobs.diff(name, old, new)

    @commits
    def job_rollback(self, name: Any, version: Any) -> dict:
        return self._jobs.rollback(name, version)

    @commits
    def job_run(self, name: Any, body: Any = None, actor: Any = None) -> dict:
        spec, version = self._jobs.spec_for_run(name, body)
        task = self._submit(spec, actor, job=(name, version))
        task.job, task.job_version = name, version
        self._storage.save_task(task)
        return {"task_id": task.id, "job": name, "version": version}

    # ---- tokens and audit ---------------------------------------------------------------------
    @commits
    def token_create(self, body: Any, actor: Any = None) -> dict:
        """A new API token (mschedule/master/tokens.py): its secret is in this answer only."""
        return self.tokens.create(body, created_by=_actor(actor)[0])

    def tokens_list(self) -> list[dict]:
        return self.tokens.list()

    @commits
    def token_delete(self, token_id: Any) -> dict:
        return self.tokens.delete(token_id)

    def authenticate(self, token: Any) -> dict:
        """Who a bearer token is, ``{user, role, token_id, selector}``; Unauthenticated (401) if nobody."""
        return self.tokens.authenticate(token)

    @commits
    def audit_record(self, entry: Any) -> dict:
        """One audit record from the web tier, committed before it answers the request it is about."""
        return self.audit.record(entry)

    def audit_query(self, filters: Any = None) -> list[dict]:
        """Audit records, newest first: ``filters`` user, action, since (Unix seconds), limit (1 to 1000)."""
        return self.audit.query(filters)

    # ---- schedules --------------------------------------------------------------------------
    @commits
    def schedule_create(self, body: Any) -> dict:
        return self.schedules.create(body)

    def schedules_list(self, job: Any = None) -> list[dict]:
        return self.schedules.list(job)

    def schedule_get(self, schedule_id: Any) -> dict:
        return self.schedules.get(schedule_id)

    @commits
    def schedule_update(self, schedule_id: Any, body: Any) -> dict:
        return self.schedules.update(schedule_id, body)

    @commits
    def schedule_delete(self, schedule_id: Any) -> dict:
        return self.schedules.delete(schedule_id)

    def ping(self) -> dict:
        """The master's state in brief; with ``endpoints`` (each endpoint's health, from a real round trip,
        and its transport counters) when the server provides them."""
        agents = self._storage.agents.values()
        answer = {"ok": True, "agents": len(self._storage.agents),
                  "online": sum(1 for a in agents if a.online), "tasks": len(self._storage.tasks),
                  "secure": self._admission is not None}
        if self._health is not None:
            answer["endpoints"] = self._health()
            answer["ok"] = all(e["ok"] for e in answer["endpoints"].values())
        return answer

    def metrics(self) -> str:
        """The master's Prometheus metrics in the text exposition format (docs/metrics.md): the web tier's
        ``GET /metrics`` serves them after its own, behind its token."""
        return self._metrics_text()

    # ---- groups -----------------------------------------------------------------------------
    @commits
    def group_put(self, name: Any, body: Any) -> dict:
        """Create or replace a group: ``{"selector": {...}}`` and/or ``{"targets": [ids]}``."""
        name = self._group_name(name)
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object with selector and/or targets", field="body")
        unknown = sorted(set(body) - {"selector", "targets"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: selector, targets)", field=unknown[0])
        selector = validate_selector(body.get("selector"), allow_group=False)
        targets = body.get("targets") or []
        if not isinstance(targets, list) or not all(isinstance(a, str) and a for a in targets):
            raise ValidationError("targets: expected an array of agent ids", field="targets")
        if len(targets) > self._max_targets:
            raise ValidationError(f"targets: {len(targets)} agents, more than the limit of {self._max_targets}",
                                  field="targets")
        unknown_ids = [a for a in targets if a not in self._storage.agents]
        if unknown_ids:
            raise ValidationError(f"targets: unknown agent id {unknown_ids[0]!r}", field="targets")
        if selector is None and not targets:
            raise ValidationError("body: give a selector, targets, or both", field="body")
        self._storage.save_group(name, {"selector": selector, "targets": list(dict.fromkeys(targets))})
        return self.group_get(name)

    def group_get(self, name: Any) -> dict:
        name = self._group_name(name)
        body = self._storage.groups.get(name)
        if body is None:
            raise NotFound(f"group {name!r} not found", field="name")
        return {"name": name, **body, "members": self._scheduler.group_members(name)}

    def groups_list(self) -> list[dict]:
        return [{"name": name, **body} for name, body in sorted(self._storage.groups.items())]

    @commits
    def group_delete(self, name: Any) -> dict:
        name = self._group_name(name)
        if name not in self._storage.groups:
            raise NotFound(f"group {name!r} not found", field="name")
        self._storage.delete_group(name)
        return {"name": name, "deleted": True}

    @staticmethod
    def _group_name(value: Any) -> str:
        if not isinstance(value, str) or not value or len(value) > 128:
            raise ValidationError("name: expected a group name of 1 to 128 characters", field="name")
        return utf8(value, "name")

    # ---- agent keys -------------------------------------------------------------------------
    def keys_list(self) -> list[dict]:
        return self._keys().list()

    @commits
    def keys_accept(self, agent_id: Any) -> dict:
        return self._decide(self._agent_id(agent_id), KeyState.ACCEPTED)

    @commits
    def keys_reject(self, agent_id: Any) -> dict:
        return self._decide(self._agent_id(agent_id), KeyState.REJECTED)

    @commits
    def keys_delete(self, agent_id: Any) -> dict:
        return self._delete_key(self._agent_id(agent_id))

    @commits
    def keys_decide_many(self, verdict: Any, body: Any) -> dict:
        """Accept or reject several keys in one call and one commit: after a flood, or a rack enrolled at once.

        ``verdict`` is ``"accept"`` or ``"reject"``; ``body`` is ``{"agent_ids": [...]}`` or
        ``{"all_pending": true}``. Every id gets its own result (an unknown one fails alone).
        """
        state = {"accept": KeyState.ACCEPTED, "reject": KeyState.REJECTED}.get(verdict)
        if state is None:
            raise ValidationError("verdict: expected accept or reject", field="verdict")
        return self._keys_many(body, lambda agent_id: {"state": self._decide(agent_id, state)["state"]},
                               all_pending=True)

    @commits
    def keys_delete_many(self, body: Any) -> dict:
        """Forget several keys in one call and one commit; ``body`` is ``{"agent_ids": [...]}``."""
        return self._keys_many(body, lambda agent_id: {"deleted": self._delete_key(agent_id)["deleted"]},
                               all_pending=False)

    def _keys_many(self, body: Any, action: Callable[[str], dict], all_pending: bool) -> dict:
        agent_ids = self._bulk_ids(body, all_pending)
        results = []
        for agent_id in agent_ids:
            try:
                results.append({"agent_id": agent_id, "ok": True, **action(agent_id)})
            except NotFound as exc:
                results.append({"agent_id": agent_id, "ok": False, "error": str(exc)})
        done = sum(1 for r in results if r["ok"])
        return {"done": done, "failed": len(results) - done, "results": results}

    def _bulk_ids(self, body: Any, all_pending: bool) -> list[str]:
        allowed = ("agent_ids", "all_pending") if all_pending else ("agent_ids",)
        if not isinstance(body, dict):
            raise ValidationError(f"body: expected an object with {' or '.join(allowed)}", field="body")
        unknown = sorted(set(body) - {"agent_ids", "all_pending"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: {', '.join(allowed)})", field=unknown[0])
        if "all_pending" in body:
            if not all_pending:
                raise ValidationError("all_pending: only for accept and reject", field="all_pending")
            if body["all_pending"] is not True or "agent_ids" in body:
                raise ValidationError("all_pending: expected true, without agent_ids", field="all_pending")
            return self._keys().pending_ids()
        agent_ids = body.get("agent_ids")
        if (not isinstance(agent_ids, list) or not agent_ids
                or not all(isinstance(a, str) and a for a in agent_ids)):
            alternative = " (or all_pending: true)" if all_pending else ""
            raise ValidationError(f"agent_ids: expected a non-empty array of agent ids{alternative}",
                                  field="agent_ids")
        if len(agent_ids) > MAX_BULK_KEYS:
            raise ValidationError(f"agent_ids: {len(agent_ids)} ids, more than {MAX_BULK_KEYS} in one call",
                                  field="agent_ids")
        return list(dict.fromkeys(agent_ids))

    def _decide(self, agent_id: str, state: KeyState) -> dict:
        record = self._keys().decide(agent_id, state)
        if state is KeyState.REJECTED:
            self._scheduler.agent_refused(agent_id, "agent key rejected by an operator")
        return record.to_dict()

    def _delete_key(self, agent_id: str) -> dict:
        self._keys().delete(agent_id)
        self._scheduler.agent_refused(agent_id, "agent key deleted by an operator")
        return {"agent_id": agent_id, "deleted": True}

    def _keys(self) -> Admission:
        if self._admission is None:
            raise ValidationError("keys: the master runs --insecure, without agent keys")
        return self._admission

    @staticmethod
    def _agent_id(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValidationError("agent_id: expected a non-empty string", field="agent_id")
        return value

    def _task_detail(self, task: TaskRecord, output_limit: int | None = None) -> dict:
        detail = task.summary()
        detail["script"] = messages.b64encode(task.script)
        detail["targets"] = {agent_id: self._target_entry(task.id, agent_id, target, output_limit)
                             for agent_id, target in task.targets.items()}
        return detail

    def _output_of(self, task_id: str, target: TargetRecord) -> tuple[bytes, int, bool]:
        """``(output, bytes written, partial)``: a running target's is what reached the master so far."""
        if target.state is State.RUNNING:
            kept = self._scheduler.live.tail(task_id, target.agent_id)
            data, total = kept if kept is not None else (b"", 0)
            return data, total, True
        return target.output, len(target.output), False

    def _target_entry(self, task_id: str, agent_id: str, target: TargetRecord, output_limit: int | None) -> dict:
        agent = self._storage.agents.get(agent_id)
        entry = target.to_dict(agent.hostname if agent else None)
        output, total, partial = self._output_of(task_id, target)
        shown = output_tail(output, output_limit)
        entry["output"] = messages.b64encode(shown)
        entry["output_bytes"] = total
        entry["output_omitted"] = total - len(shown)
        entry["partial"] = partial
        return entry
