"""The master's RPC surface: what agents and the web tier may call.

Method names keep the design's: ``send`` (register / heartbeat / result), ``get_task``, ``add_task``,
``get_agents``, ``get_result``; plus ``get_tasks`` and ``ping`` for the web tier. A bad message gets an
error answer (``{"ok": False, "error": ...}`` for ``send``, a ``ValidationError`` otherwise) and a log
line; it never reaches the state.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from master.scheduler import Scheduler
from master.storage import TaskRecord
from utils import messages
from utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, MAX_POLL_WAIT, MAX_RESULT_WAIT
from utils.exceptions import MessageError, ValidationError
from utils.messages import AgentInfo, ResultMessage, TaskMessage
from utils.taskspec import TaskSpec

log = logging.getLogger(__name__)


def _wait_seconds(value: Any, cap: float, name: str = "wait") -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValidationError(f"{name}: expected a number of seconds")
    return max(0.0, min(float(value), cap))


class Handler:
    """zerorpc methods of the master. Public methods are exposed; helpers start with ``_``."""

    def __init__(self, scheduler: Scheduler, max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES) -> None:
        self._scheduler = scheduler
        self._storage = scheduler.storage
        self._max_script_bytes = max_script_bytes
        #: id of this master process, in every answer to an agent: a new one tells agents the master
        #: restarted, and that a long poll they sent before it will never be answered
        self.boot = uuid.uuid4().hex

    # ---- agents -------------------------------------------------------------------------
    def send(self, msg: Any) -> dict:
        """Take an agent message: ``register``, ``heartbeat`` or ``result``."""
        try:
            kind, payload = messages.split_message(msg)
            if kind in (messages.REGISTER, messages.HEARTBEAT):
                known = self._scheduler.agent_seen(AgentInfo.from_payload(payload))
                return {"ok": True, "known": known, "master": self.boot}
            if kind == messages.RESULT:
                applied = self._scheduler.apply_result(ResultMessage.from_payload(payload))
                self._storage.flush()  # acknowledged only once durable
                return {"ok": True, "applied": applied, "master": self.boot}
            raise MessageError(f"type: unknown message type {kind!r}")
        except MessageError as exc:
            log.warning("bad agent message refused: %s", exc)
            return {"ok": False, "error": str(exc)}

    def get_task(self, agent_id: Any, wait: Any = 0, session: Any = None) -> dict | None:
        """Long poll: the agent's next task message as soon as there is one, or None after ``wait``.

        ``session`` (optional) is the polling process's session id; a poll of a process that is no
        longer the agent's current one gets nothing.
        """
        if not isinstance(agent_id, str) or not agent_id:
            raise ValidationError("agent_id: expected a non-empty string")
        if session is not None and not isinstance(session, str):
            raise ValidationError("session: expected a string")
        task = self._scheduler.wait_task(agent_id, _wait_seconds(wait, MAX_POLL_WAIT), session)
        if task is None:
            return None
        self._storage.flush()  # the dispatch is durable before the agent hears of it
        return TaskMessage(id=task.id, script=task.script, timeout=task.timeout, parallel=task.parallel,
                           fail_rate=task.fail_rate, fail_count=task.fail_count).to_message()

    # ---- web tier -----------------------------------------------------------------------
    def add_task(self, task: Any) -> str:
        """Create a task from ``{script (base64), targets, timeout, parallel, fail_rate, fail_count}``."""
        spec = TaskSpec.from_request(task, script_base64=True, max_script_bytes=self._max_script_bytes)
        task_id = self._scheduler.submit(spec).id
        self._storage.flush()  # the id is returned only once the task is durable
        return task_id

    def get_agents(self) -> dict:
        return {agent_id: agent.to_dict() for agent_id, agent in self._storage.agents.items()}

    def get_result(self, query: Any) -> dict:
        """One task in full: ``{"task_id": ..., "wait": seconds}`` (or the bare id)."""
        if isinstance(query, str):
            query = {"task_id": query}
        if not isinstance(query, dict) or not isinstance(query.get("task_id"), str):
            raise ValidationError("task_id: missing or not a string")
        wait = _wait_seconds(query.get("wait"), MAX_RESULT_WAIT)
        return self._task_detail(self._scheduler.wait_finished(query["task_id"], wait))

    def get_tasks(self, limit: Any = 50) -> list[dict]:
        """Summaries of the newest tasks, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit: expected a positive integer")
        return [task.summary() for task in self._storage.recent_tasks(min(limit, 1000))]

    def ping(self) -> dict:
        agents = self._storage.agents.values()
        return {"ok": True, "agents": len(self._storage.agents),
                "online": sum(1 for a in agents if a.online), "tasks": len(self._storage.tasks)}

    def _task_detail(self, task: TaskRecord) -> dict:
        detail = task.summary()
        agents = self._storage.agents
        detail["targets"] = {}
        for agent_id, target in task.targets.items():
            agent = agents.get(agent_id)
            entry = target.to_dict(agent.hostname if agent else None)
            entry["output"] = messages.b64encode(target.output)
            detail["targets"][agent_id] = entry
        return detail
