"""Who runs what, when: dispatch with a parallel window, failure limits, lost agents.

The rules (docs/architecture.md, "State machine"):

- a task's targets start WAITING; an idle agent that polls gets its oldest task whose window
  has room (``running < parallel``), the target becomes RUNNING;
- after every target end the failure limits are checked; a breach makes the task FAILED at once
  and its WAITING targets CANCELLED (RUNNING ones finish and keep their results);
- a task whose targets all ended without a breach is SUCCEED;
- an agent silent for ``agent_timeout`` seconds is offline: its RUNNING and WAITING targets fail.

All methods run in the master's single gevent thread and never block, except the long polls
(``wait_task``, ``watch_cancel``, ``wait_finished``), which wait in :class:`mschedule.master.waiters.Waiters`:
an agent's poll on the key ``("agent", id)``, released when there may be work for it; every waiter of a
task on ``("task", id)``, released by the one transition every end goes through (``_finish``: succeed,
abort, cancel) and again when the task is forgotten (``prune``). A waiter's Event lives only while it
waits, so nothing is held for a task that ended.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import gevent

from mschedule.master import metrics
from mschedule.master.live import LiveOutput
from mschedule.master.liveness import HeartbeatPolicy
from mschedule.master.storage import AgentRecord, Storage, TargetRecord, TaskRecord
from mschedule.master.waiters import Waiters
from mschedule.utils.exceptions import Conflict, NotFound, ValidationError
from mschedule.utils.masking import mask
from mschedule.utils.messages import AgentInfo, Heartbeat, ProgressMessage, ResultMessage
from mschedule.utils.selectors import matches
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec

log = logging.getLogger(__name__)

REGISTRATIONS_PER_SECOND = 200.0
"""Agents a restarted (or stalled) master can count on hearing from per second when its whole fleet comes back
at once; its grace grows by one second per this many online agents. Measured with bench/storm.py on a 2-core
host that also ran the 3,000 agents: every one registered again within 13 s of the restart, 300/s at best."""


class Scheduler:
    """The task and target state machine on top of :class:`Storage`."""

    def __init__(self, storage: Storage, agent_timeout: float, clock: Callable[[], float] = time.time,
                 policy: HeartbeatPolicy | None = None) -> None:
        self.storage = storage
        self.agent_timeout = agent_timeout
        #: the heartbeat interval and offline deadline rule (its agent_timeout is this one)
        self.policy = replace(policy or HeartbeatPolicy(), agent_timeout=agent_timeout)
        #: online agents at the last sweep: the fleet size the interval is stretched for
        self.online = 0
        #: per agent, the heartbeat interval it was last told (its offline deadline follows from it)
        self._told: dict[str, float] = {}
        self.clock = clock
        #: per agent, ids of tasks where it has a WAITING target, oldest first
        self._queues: dict[str, deque[str]] = {}
        #: every long poll open on the master, by ("agent", id) or ("task", id); empty when none is
        self.waiters = Waiters()
        #: running targets' output so far and followed tasks' events (memory only)
        self.live = LiveOutput(self.waiters, self._hostname)
        #: called with each task as it ends, before its end is saved (mschedule/master/notifications.py)
        self.on_finish: Callable[[TaskRecord], None] | None = None

    def _hostname(self, agent_id: str) -> str | None:
        agent = self.storage.agents.get(agent_id)
        return agent.hostname if agent is not None else None

    def restore(self, reconnect: float = 0.0) -> None:
        """Rebuild what is derived from the stored records after a master restart.

        Every agent that was online gets a deadline of grace from now (grace_online_agents), so a quick restart fails
        no running target; RUNNING targets wait for their agents' results; WAITING ones queue again. ``reconnect``:
        seconds more the agents may need to find this master at all (a new leader of a cluster: they try a master
        that did not listen only every few seconds).
        """
        for agent in self.storage.agents.values():
            agent.current = None
        self.grace_online_agents(reconnect)
        lost_secrets = []
        for task in self.storage.tasks.values():
            if task.state.is_finished:
                continue
            if len(task.secret_values) < len(task.secrets):
                lost_secrets.append(task)
            for agent_id, target in task.targets.items():
                if target.state is State.WAITING:
                    self._queues.setdefault(agent_id, deque()).append(task.id)
                elif target.state is State.RUNNING and agent_id in self.storage.agents:
                    self.storage.agents[agent_id].current = task.id
        for task in lost_secrets:  # running targets' agents have the values and finish; no other may start
            for target in list(task.targets.values()):
                if target.state is State.WAITING and not task.state.is_finished:
                    self._fail_target(task, target, "the master restarted, and it never stores a secret's value: "
                                                    "retry the task with its secrets")

    # ---- agents -------------------------------------------------------------------------
    def pace(self, agent_id: str) -> tuple[float, float]:
        """The heartbeat interval and long-poll wait ``agent_id`` is to use now (remembered for its deadline)."""
        interval = self.policy.interval(max(self.online, 1), agent_id)
        self._told[agent_id] = interval
        return interval, self.policy.poll(interval)

    def deadline(self, agent_id: str) -> float:
        """Seconds of silence after which ``agent_id`` is offline: from the interval this master last gave it,
        or (not told yet, e.g. after a restart: the restart's grace covers the jitter) the fleet's."""
        return self.policy.deadline(self._told.get(agent_id) or self.policy.fleet_interval(self.online))

    def grace_online_agents(self, reconnect: float = 0.0) -> None:
        """Every online agent counts as heard from now, plus the time the master needs to hear from all of
        them (REGISTRATIONS_PER_SECOND) and ``reconnect``: a full ``agent_timeout`` to show up after a restart or a
        stall of the master, which could not read their heartbeats, stretched for a large fleet that all comes
        back at once."""
        online = [a for a in self.storage.agents.values() if a.online]
        until = self.clock() + reconnect + len(online) / REGISTRATIONS_PER_SECOND
        for agent in online:
            agent.heartbeat = until

    def shift_heartbeats(self, seconds: float) -> None:
        """Move every online agent's last heartbeat by ``seconds`` (time the master did not count, or a step of
        its wall clock); a heartbeat moved forward stops at now, unless it was already ahead (a grace given)."""
        now = self.clock()
        for agent in self.storage.agents.values():
            if agent.online:
                shifted = agent.heartbeat + seconds
                agent.heartbeat = shifted if agent.heartbeat > now else min(now, shifted)  # keep a grace given

    def agent_seen(self, info: AgentInfo) -> bool:
        """Record a register. Returns whether the agent was known before."""
        agent = self.storage.get_agent(info.id)
        known = agent is not None
        if agent is None:
            agent = AgentRecord(id=info.id, hostname=info.hostname, registered=self.clock(), session=info.session)
            self.storage.add_agent(agent)
            log.info("agent %s registered hostname=%s ip=%s", info.id, info.hostname, ",".join(info.ip))
        if (agent.hostname, agent.ip, agent.labels) != (info.hostname, info.ip, info.labels):
            agent.hostname, agent.ip, agent.labels = info.hostname, list(info.ip), dict(info.labels)
            self.storage.save_agent(agent)
        self._alive(agent, info.session, info.running, info.stopping, known)
        return known

    def agent_heartbeat(self, beat: Heartbeat) -> bool:
        """Record a heartbeat. Returns False for an agent this master does not know: it must register."""
        agent = self.storage.get_agent(beat.id)
        if agent is None:
            return False
        self._alive(agent, beat.session, beat.running, beat.stopping, True)
        return True

    def _alive(self, agent: AgentRecord, session: str | None, running: str | None, stopping: bool,
               known: bool) -> None:
        """What every register and heartbeat says: the agent lives, in this process, running this."""
        if known:
            if not agent.online:
                log.info("agent %s is back online", agent.id)
            if session and agent.session and session != agent.session:
                self._agent_restarted(agent, session, running)
                self._wake_agent(agent.id)  # a poll of the old process may still be waiting: end it
        if session and session != agent.session:
            agent.session = session
            self.storage.save_agent(agent)
        agent.heartbeat = self.clock()
        agent.online = True
        agent.reported_running = running
        if running and agent.current != running:
            self._adopt(agent, running)
        if stopping:
            self._agent_stopped(agent)

    def _adopt(self, agent: AgentRecord, task_id: str) -> None:
        """The agent runs a target the master had not recorded as handed out (a dispatch lost in a
        master crash): take note instead of handing it out a second time."""
        task = self.storage.get_task(task_id)
        target = task.targets.get(agent.id) if task is not None else None
        if target is not None and target.state is State.WAITING and not task.state.is_finished:
            log.info("agent %s: adopting task %s it reports running", agent.id, task_id)
            self._start_target(agent, task, target)

    def agent_refused(self, agent_id: str, reason: str) -> None:
        """An operator rejected or deleted the agent's key: it is offline at once and its targets fail."""
        agent = self.storage.get_agent(agent_id)
        if agent is not None:
            self._take_offline(agent, reason)

    def _agent_stopped(self, agent: AgentRecord) -> None:
        """A clean shutdown: the agent killed its script and takes no more work."""
        log.info("agent %s stopping", agent.id)
        self._take_offline(agent, "agent stopped (its script, if any, was killed)")

    def _take_offline(self, agent: AgentRecord, reason: str) -> None:
        """Offline now (not after the agent timeout): its targets fail, a poll it has open ends."""
        agent.online = False
        self.storage.save_agent(agent)
        self._fail_agent_targets(agent, reason)
        self._wake_agent(agent.id)

    @staticmethod
    def _stale_poll(agent: AgentRecord, session: str | None) -> bool:
        """A poll that must get nothing: the agent is offline, or the poll comes from a process that is
        not the agent's current one (a stale request of a process that is gone)."""
        return not agent.online or (session is not None and session != agent.session)

    def _agent_restarted(self, agent: AgentRecord, session: str, running: str | None) -> None:
        log.info("agent %s restarted (new session %s)", agent.id, session)
        if agent.current and agent.current != running:
            task = self.storage.get_task(agent.current)
            if task is not None:
                self._fail_target(task, task.targets[agent.id],
                                  "agent restarted while running this task; the script's fate is unknown")

    def check_agents(self) -> list[str]:
        """Declare silent agents offline and fail their targets. Returns the ids declared offline."""
        now = self.clock()
        online = [a for a in self.storage.agents.values() if a.online]
        self.online = len(online)
        lost = [a for a in online if now - a.heartbeat > self.deadline(a.id)]
        for agent in lost:
            silent = now - agent.heartbeat
            agent.online = False
            log.warning("agent %s offline: no heartbeat for %.1fs", agent.id, silent)
            self._fail_agent_targets(agent, f"agent offline: no heartbeat for {silent:.1f}s")
        return [a.id for a in lost]

    def _fail_agent_targets(self, agent: AgentRecord, reason: str) -> None:
        if agent.current:
            task = self.storage.get_task(agent.current)
            if task is not None:
                self._fail_target(task, task.targets[agent.id], reason)
            agent.current = None
        for task_id in self._queues.pop(agent.id, ()):
            task = self.storage.get_task(task_id)
            if task is not None and task.targets[agent.id].state is State.WAITING:
                self._fail_target(task, task.targets[agent.id], reason)

    # ---- tasks --------------------------------------------------------------------------
    # ---- selection ----------------------------------------------------------------------
    def select(self, selector: dict, field: str = "selector") -> list[str]:
        """Ids of the known agents a selector picks (hostname glob, labels, group), in registration order.

        Raises:
            ValidationError: the selector names a group that does not exist.
        """
        members: list[str] | None = None
        group_name = selector.get("group")
        if group_name is not None:
            members = self.group_members(group_name, field=f"{field}.group")
        rest = {k: v for k, v in selector.items() if k != "group"}
        agents = self.storage.agents
        pool = members if members is not None else list(agents)
        if not rest:
            return [a for a in pool if a in agents]
        return [a for a in pool if a in agents and matches(rest, agents[a].hostname, agents[a].labels)]

    def group_members(self, name: str, field: str = "group") -> list[str]:
        body = self.storage.groups.get(name)
        if body is None:
            raise NotFound(f"{field}: no group named {name!r}", field=field)
        ids = list(dict.fromkeys(a for a in body.get("targets", []) if a in self.storage.agents))
        if body.get("selector"):
            ids += [a for a in self.select(body["selector"]) if a not in ids]
        return ids

    def resolve_targets(self, spec: TaskSpec) -> list[str]:
        """``targets`` and the selector's matches, once, at submit time (later agents do not join)."""
        targets = list(spec.targets)
        if spec.selector is not None:
            picked = self.select(spec.selector)
            if not picked:
                raise ValidationError(f"selector: matches no agent ({json.dumps(spec.selector, sort_keys=True)})",
                                      field="selector")
            chosen = set(targets)
            targets += [a for a in picked if a not in chosen]
        return targets

    def _batches(self, spec: TaskSpec, targets: list[str]) -> list:
        """Targets grouped by the ``batch_by`` label: batch_order's values first, then the other values
        in alphabetical order, then the targets without the label."""
        if not spec.batch_by:
            return []
        by_value: dict[str | None, list[str]] = {}
        for agent_id in targets:
            by_value.setdefault(self.storage.agents[agent_id].labels.get(spec.batch_by), []).append(agent_id)
        order = [v for v in (spec.batch_order or []) if v in by_value]
        order += sorted(v for v in by_value if v is not None and v not in order)
        if None in by_value:
            order.append(None)
        return [(value, by_value[value]) for value in order]

    def submit(self, spec: TaskSpec) -> TaskRecord:
        """Create a task. Offline targets fail at once (and count toward the limits).

        Raises:
            ValidationError: a target is not a known agent, or the selector matches none.
        """
        unknown = [a for a in spec.targets if self.storage.get_agent(a) is None]
        if unknown:
            raise ValidationError(f"targets: unknown agent id {unknown[0]!r}"
                                  + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""), field="targets")
        try:
            targets = self.resolve_targets(spec)
        except NotFound as exc:
            raise ValidationError(exc.message, field=exc.field) from None
        task = TaskRecord(
            id=uuid.uuid4().hex, script=spec.script, timeout=spec.timeout, parallel=spec.parallel,
            fail_rate=spec.fail_rate, fail_count=spec.fail_count,
            targets={a: TargetRecord(agent_id=a) for a in targets}, created=self.clock(),
            selector=spec.selector, batch_by=spec.batch_by, batches=self._batches(spec, targets),
            env=dict(spec.env), secrets=list(spec.secrets), params=list(spec.params), notify=list(spec.notify),
        )
        self.storage.add_task(task)
        log.info("task %s submitted: %d targets parallel=%d fail_rate=%s fail_count=%d timeout=%s script=%dB",
                 task.id, task.total, task.parallel, task.fail_rate, task.fail_count, task.timeout,
                 len(task.script))
        for agent_id, target in task.targets.items():
            if not self.storage.agents[agent_id].online:
                self._fail_target(task, target, "agent offline when the task was submitted")
                if task.state.is_finished:
                    break
        self._advance_batches(task)
        for agent_id, target in task.targets.items():
            if target.state is State.WAITING:
                self._queues.setdefault(agent_id, deque()).append(task.id)
                self._wake_agent(agent_id)
        return task

    def next_task(self, agent_id: str, session: str | None = None) -> TaskRecord | None:
        """Hand ``agent_id`` its next task, or None. Never blocks.

        An agent polls only when idle, so a poll from an agent the master believes busy means the
        reply that carried its task was lost: the same task is handed out again. A poll from an
        offline agent, or from a process that is not the agent's current one (``session``), gets
        nothing: it may be a stale request of a process that is gone.

        Raises:
            NotFound: the agent is not registered (the master restarted): it should register.
        """
        agent = self.storage.get_agent(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} is not registered", field="agent_id")
        if self._stale_poll(agent, session):
            return None
        if agent.current:
            task = self.storage.get_task(agent.current)
            if task is not None and task.targets[agent_id].state is State.RUNNING:
                log.info("agent %s: task %s handed out again (lost reply)", agent_id, task.id)
                return task
            agent.current = None
        queue = self._queues.get(agent_id)
        while queue:
            for index, task_id in enumerate(queue):
                task = self.storage.tasks[task_id]
                target = task.targets[agent_id]
                if target.state is not State.WAITING or task.state.is_finished:
                    del queue[index]
                    break  # deque changed: rescan
                if task.running < task.parallel and task.may_start(agent_id):
                    del queue[index]
                    self._start_target(agent, task, target)
                    return task
            else:
                return None
        return None

    def _start_target(self, agent: AgentRecord, task: TaskRecord, target: TargetRecord) -> None:
        now = self.clock()
        task.set_target_state(target, State.RUNNING)
        target.started = now
        agent.current = task.id
        if task.state is State.WAITING:
            task.state = State.RUNNING
            task.started = now
            self.storage.save_task(task)
            self.live.task_changed(task)
        self.storage.save_target(task, target)
        self.live.target_changed(task, target)
        metrics.target_started(now - task.created)
        log.info("agent %s: task %s started (%d/%d running)", agent.id, task.id, task.running, task.parallel)

    def wait_task(self, agent_id: str, wait: float, session: str | None = None) -> TaskRecord | None:
        """Long poll: the next task for ``agent_id``, as soon as there is one, or None after ``wait``."""
        deadline = self.clock() + wait
        while True:
            task = self.next_task(agent_id, session)
            remaining = deadline - self.clock()
            if task is not None or remaining <= 0 or self._stale_poll(self.storage.agents[agent_id], session):
                return task
            self.waiters.wait(("agent", agent_id), remaining)

    def _wake_agent(self, agent_id: str) -> None:
        """Every poll the agent has open looks again (a poll of a process whose reply was lost included)."""
        self.waiters.release(("agent", agent_id))

    def apply_progress(self, progress: ProgressMessage) -> bool:
        """Take what a running script printed so far (memory only). Returns whether it was new; progress for a
        target that is not RUNNING (ended, or never started) is ignored."""
        task = self.storage.get_task(progress.id)
        target = task.targets.get(progress.agent_id) if task is not None else None
        if target is None or target.state is not State.RUNNING:
            return False
        return self.live.feed(task.id, progress.agent_id, progress.offset, progress.data)

    def apply_result(self, result: ResultMessage) -> bool:
        """Record an agent's result. Returns whether it changed anything (a resend does not)."""
        task = self.storage.get_task(result.id)
        agent = self.storage.get_agent(result.agent_id)
        if agent is not None and agent.current == result.id:
            agent.current = None
        if task is None or result.agent_id not in task.targets:
            log.warning("agent %s: result for unknown task %s ignored", result.agent_id, result.id)
            return False
        target = task.targets[result.agent_id]
        if target.state is State.WAITING and not task.state.is_finished and agent is not None:
            self._adopt(agent, task.id)  # its dispatch was lost in a master crash: the result is real
            agent.current = None
        if target.state is not State.RUNNING:
            self._late_result(task, target, result)
            return False
        target.code = result.code
        target.output = mask(result.output, task.secret_values)  # the agent masked it; an older one may not
        target.timed_out = result.timed_out
        target.truncated = result.truncated
        target.finished = self.clock()
        ok = result.code == 0 and not result.timed_out
        if task.state is State.CANCELLED:
            final = State.CANCELLED  # killed (or finished just as) the task was cancelled
        else:
            final = State.SUCCEED if ok else State.FAILED
        task.set_target_state(target, final)
        self.live.target_changed(task, target, result=True)
        metrics.target_ended(final, target.started, target.finished)
        log.info("agent %s: task %s finished code=%s%s output=%dB", result.agent_id, task.id, result.code,
                 " (timed out)" if result.timed_out else "", len(result.output))
        self.storage.save_target(task, target)
        self._target_ended(task)
        return True

    def _late_result(self, task: TaskRecord, target: TargetRecord, result: ResultMessage) -> None:
        """A result for a target already ended: a resend, or from an agent given up as lost."""
        if target.state is State.FAILED and target.code is None:
            target.code = result.code
            target.output += ((f"\n[mschedule: late result: the agent reported code {result.code} after the "
                               f"target had failed; the task's outcome is unchanged]\n").encode()
                              + mask(result.output, task.secret_values))
            self.storage.save_target(task, target)
            log.warning("agent %s: late result for task %s recorded (code=%s)", target.agent_id, task.id,
                        result.code)
        else:
            log.info("agent %s: duplicate result for task %s ignored", target.agent_id, task.id)

    def _fail_target(self, task: TaskRecord, target: TargetRecord, reason: str) -> None:
        if target.state.is_finished:
            return
        now = self.clock()
        if target.state is State.RUNNING:
            agent = self.storage.get_agent(target.agent_id)
            if agent is not None and agent.current == task.id:
                agent.current = None
        task.set_target_state(target, State.FAILED)
        target.output = self._kept_output(task, target) + f"[mschedule: {reason}]\n".encode()
        target.finished = now
        self.live.target_changed(task, target)
        metrics.target_ended(State.FAILED, target.started, now)
        log.warning("agent %s: task %s target failed: %s", target.agent_id, task.id, reason)
        self.storage.save_target(task, target)
        self._target_ended(task)

    def _kept_output(self, task: TaskRecord, target: TargetRecord) -> bytes:
        """What had reached the master of a target that ends without a result (its agent lost): its live tail,
        said to be partial."""
        kept = self.live.drop(task.id, target.agent_id)
        if kept is None:
            return b""
        data, total = kept
        note = f"[mschedule: the output the master had received live ({total} bytes"
        note += f", the last {len(data)} kept" if len(data) < total else ""
        return (note + ")]\n").encode() + data + (b"" if data.endswith(b"\n") else b"\n")

    def _target_ended(self, task: TaskRecord) -> None:
        """Apply the failure limits and the end of the task after one target ended."""
        if task.state.is_finished:
            return
        if task.limit_breached():
            self._abort(task)
        elif task.pending == 0:
            self._finish(task, State.SUCCEED)
        else:
            self._advance_batches(task)
            self._wake_waiting_targets(task)

    def _advance_batches(self, task: TaskRecord) -> None:
        """Move on to the next batch once every target of the current one has ended."""
        moved = False
        while task.batch_done() and task.batch + 1 < len(task.batches):
            task.batch += 1
            moved = True
        if moved:
            value = task.batches[task.batch][0]
            log.info("task %s: batch %d/%d (%s=%s) starts", task.id, task.batch + 1, len(task.batches),
                     task.batch_by, value)
            self.storage.save_task(task)

    def _abort(self, task: TaskRecord) -> None:
        cancelled = 0
        for target in task.targets.values():
            if target.state is State.WAITING:
                task.set_target_state(target, State.CANCELLED)
                self.storage.save_target(task, target)
                self.live.target_changed(task, target)
                cancelled += 1
        metrics.target_ended(State.CANCELLED, count=cancelled)
        log.warning("task %s aborted: %d failed of %d (fail_count=%d fail_rate=%s), %d cancelled",
                    task.id, task.failed, task.total, task.fail_count, task.fail_rate, cancelled)
        self._finish(task, State.FAILED)

    def _finish(self, task: TaskRecord, state: State) -> None:
        """The task ended (every end comes here): its finish waiters and cancel watchers answer now, and its
        webhooks are owed (saved with its end)."""
        task.state = state
        task.finished = self.clock()
        if self.on_finish is not None:
            self.on_finish(task)
        self.storage.save_task(task)
        log.info("task %s %s: %s", task.id, state.value, dict((s.value, n) for s, n in task.counts.items() if n))
        self.waiters.release(("task", task.id))
        self.live.task_changed(task)

    def _wake_waiting_targets(self, task: TaskRecord) -> None:
        if task.running >= task.parallel or not task.counts[State.WAITING]:
            return
        for agent_id, target in task.targets.items():
            if target.state is State.WAITING:
                self._wake_agent(agent_id)

    # ---- retention ------------------------------------------------------------------------
    def prune(self, keep_tasks: int | None = None, keep_days: float | None = None) -> int:
        """Forget finished tasks beyond the newest ``keep_tasks`` or older than ``keep_days``; returns how
        many. Tasks still running (or with targets running) are always kept."""
        tasks = self.storage.tasks
        cutoff = self.clock() - keep_days * 86400 if keep_days else None
        excess = len(tasks) - keep_tasks if keep_tasks is not None else 0
        doomed = []
        for task in tasks.values():  # oldest first
            ended = task.state.is_finished and task.running == 0
            if ended and (len(doomed) < excess or (cutoff is not None and task.created < cutoff)):
                doomed.append(task.id)
        for task_id in doomed:
            self.storage.delete_task(task_id)
            self.waiters.release(("task", task_id))  # none should wait on an ended task; if one does, it answers
        if doomed:
            log.info("retention: %d finished tasks pruned", len(doomed))
        return len(doomed)

    # ---- cancel ---------------------------------------------------------------------------
    def cancel(self, task_id: str) -> TaskRecord:
        """Stop a task: it is CANCELLED at once, its waiting targets never start, its running scripts are
        killed by their agents (who watch for this) and end CANCELLED with the output they produced.

        Raises:
            NotFound: no such task. Conflict: it already ended (SUCCEED or FAILED).
        """
        task = self.storage.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        if task.state is State.CANCELLED:
            return task  # idempotent
        if task.state.is_finished:
            raise Conflict(f"task {task_id} already ended ({task.state.value}); nothing to cancel", field="task_id")
        cancelled = 0
        for target in task.targets.values():
            if target.state is State.WAITING:
                task.set_target_state(target, State.CANCELLED)
                target.output = b"[mschedule: cancelled before it started]\n"
                self.storage.save_target(task, target)
                self.live.target_changed(task, target)
                cancelled += 1
        metrics.target_ended(State.CANCELLED, count=cancelled)
        log.warning("task %s cancelled: %d waiting targets cancelled, %d running being killed", task.id, cancelled,
                    task.running)
        self._finish(task, State.CANCELLED)  # wakes the agents watching it (watch_cancel)
        return task

    def watch_cancel(self, task_id: str, wait: float) -> bool:
        """Long poll for an agent running ``task_id``: True as soon as the task is cancelled; False once it
        ended otherwise, or after ``wait``.

        A task that already ended without a cancel (aborted by its limits while this agent's script runs on)
        can never be cancelled, but an answer at once would have the agent ask again at once, in a loop, for
        the rest of its script: that poll is held for its ``wait`` like any other (registering nothing).
        """
        task = self.storage.get_task(task_id)
        if task is None or task.state is State.CANCELLED:
            return task is not None
        if task.state.is_finished:
            if wait > 0:
                gevent.sleep(wait)
            return False
        self.waiters.wait(("task", task_id), wait)
        return task.state is State.CANCELLED

    def wait_finished(self, task_id: str, wait: float) -> TaskRecord:
        """The task once it has finished, or as it is after ``wait`` seconds (as it was last, if it is
        forgotten meanwhile).

        Raises:
            NotFound: no such task.
        """
        task = self.storage.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        if not task.state.is_finished:
            self.waiters.wait(("task", task_id), wait)
        return task
