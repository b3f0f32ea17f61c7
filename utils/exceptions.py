"""Errors that cross tiers keep their class name, so the caller can answer precisely.

Every error raised on purpose carries the request field it is about (``field``, None when it is about
the request as a whole); the web tier answers ``{"error": message, "field": field}``.
"""
from __future__ import annotations


class MScheduleError(Exception):
    """Base class of every error mschedule raises on purpose."""

    #: the HTTP status the web tier answers for this error
    http_status = 500

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ValidationError(MScheduleError):
    """A request or message is malformed; ``field`` names the part that is."""

    http_status = 400


class NotFound(MScheduleError):
    """The task or agent named does not exist."""

    http_status = 404


class Conflict(MScheduleError):
    """The request does not fit the current state (e.g. cancelling a task that has finished)."""

    http_status = 409


class Unauthorized(MScheduleError):
    """The caller may not do this (key not accepted, or another agent's id)."""

    http_status = 403


class MessageError(ValidationError):
    """An agent message (register, heartbeat, task, result) has the wrong shape."""


#: remote error names the web tier maps to HTTP statuses
HTTP_STATUS_BY_ERROR = {
    "ValidationError": 400,
    "MessageError": 400,
    "NotFound": 404,
    "Conflict": 409,
    "Unauthorized": 403,
}
