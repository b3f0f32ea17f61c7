"""Errors that cross tiers keep their class name, so the caller can answer precisely."""
from __future__ import annotations


class MScheduleError(Exception):
    """Base class of every error mschedule raises on purpose."""


class ValidationError(MScheduleError):
    """A request or message is malformed; the message names the field."""


class NotFound(MScheduleError):
    """The task or agent named does not exist."""


class Conflict(MScheduleError):
    """The request does not fit the current state (e.g. cancelling a task that has finished)."""


class MessageError(ValidationError):
    """An agent message (register, heartbeat, task, result) has the wrong shape."""


#: remote error names the web tier maps to HTTP statuses
HTTP_STATUS_BY_ERROR = {
    "ValidationError": 400,
    "MessageError": 400,
    "NotFound": 404,
    "Conflict": 409,
}
