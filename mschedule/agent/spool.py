"""Results on disk until the master has them: nothing is lost to a master restart or an agent crash.

Each result is written to ``<state-dir>/spool/<task-id>.json`` before it is sent and removed
only when the master acknowledges it; whatever is in the spool is sent again after every (re)connect and
at start. A marker file says which task is running, so an agent restarted mid-script can report that
the script's fate is unknown instead of leaving the master waiting. Results hold scripts' output: the
spool directory is 0700 and every file in it 0600 (:mod:`mschedule.utils.statedir`).
"""
from __future__ import annotations

import json
import logging
import os

from mschedule.utils.exceptions import MessageError
from mschedule.utils.messages import ResultMessage, split_message
from mschedule.utils.statedir import private_dir, tighten, write_private

log = logging.getLogger(__name__)

RUNNING_MARKER = "running"
INTERRUPTED_CODE = -1
"""Result code of a script whose agent restarted while it ran (the script's fate is unknown)."""


def _write_atomic(path: str, data: bytes) -> None:
    """Write-and-rename: a crash leaves the old file or the new one, never half of one.

    No fsync: the spool has to survive the agent process dying (the kernel keeps the data), which is
    the case it exists for. If the whole host loses power the master fails the target when the agent
    stays silent, which is the right outcome for a host that went down; four fsyncs per script would
    cost more than the script itself for short tasks.
    """
    write_private(path, data)


class Spool:
    """The result spool and running marker of one agent."""

    def __init__(self, state_dir: str, agent_id: str) -> None:
        self.agent_id = agent_id
        self.dir = os.path.join(state_dir, "spool")
        self.marker = os.path.join(state_dir, RUNNING_MARKER)
        private_dir(self.dir)
        for name in os.listdir(self.dir):  # results an earlier version spooled world-readable
            tighten(os.path.join(self.dir, name))
        tighten(self.marker)

    def put(self, result: ResultMessage) -> None:
        """Keep ``result`` on disk (durably) until :meth:`remove`."""
        _write_atomic(self._path(result.id), json.dumps(result.to_message()).encode())

    def remove(self, task_id: str) -> None:
        try:
            os.unlink(self._path(task_id))
        except FileNotFoundError:
            pass

    def pending(self) -> list[ResultMessage]:
        """Spooled results, oldest first; unreadable files are logged and dropped."""
        entries = []
        for name in os.listdir(self.dir):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as f:
                    _, payload = split_message(json.loads(f.read()))
                entries.append((os.stat(path).st_mtime, ResultMessage.from_payload(payload)))
            except (OSError, ValueError, MessageError) as exc:
                log.error("agent %s: dropping unreadable spool file %s: %s", self.agent_id, path, exc)
                os.unlink(path)
        return [result for _, result in sorted(entries, key=lambda e: e[0])]

    def _path(self, task_id: str) -> str:
        safe = "".join(c for c in task_id if c.isalnum() or c in "-_")[:128] or "task"
        return os.path.join(self.dir, f"{safe}.json")

    # ---- running marker -------------------------------------------------------------------
    def mark_running(self, task_id: str) -> None:
        _write_atomic(self.marker, task_id.encode())

    def clear_running(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass

    def recover_interrupted(self) -> str | None:
        """At start: if a script was running when the agent died, spool a result saying so."""
        try:
            with open(self.marker, "rb") as f:
                task_id = f.read().decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        if task_id:
            log.warning("agent %s: was restarted while running task %s; reporting it", self.agent_id, task_id)
            self.put(ResultMessage(id=task_id, agent_id=self.agent_id, code=INTERRUPTED_CODE, output=(
                b"[mschedule: the agent restarted while running this task; the script's fate is unknown]\n")))
        self.clear_running()
        return task_id or None
