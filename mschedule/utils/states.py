"""The one definition of task and target states, shared by every tier."""
from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """State of a task or of one target (one agent) of a task.

    A ``StrEnum``: it crosses msgpack and JSON as its plain value.
    """

    #: accepted, not started yet
    WAITING = "WAITING"
    #: handed to an agent (target) / at least one target handed out (task)
    RUNNING = "RUNNING"
    #: exit code 0 (target) / every target ended and no limit was breached (task)
    SUCCEED = "SUCCEED"
    #: non-zero exit, timeout or lost agent (target) / a failure limit was breached (task)
    FAILED = "FAILED"
    #: never started because the task stopped first
    CANCELLED = "CANCELLED"

    @property
    def is_finished(self) -> bool:
        """True for the states nothing leaves."""
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({State.SUCCEED, State.FAILED, State.CANCELLED})
