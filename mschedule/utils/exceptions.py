"""Errors that cross tiers keep their class name, so the caller can answer precisely.

Every error raised on purpose carries the request field it is about (``field``, None when it is about
the request as a whole); the web tier answers ``{"error": message, "field": field}``. An error crosses
the RPC boundary as its name, message and field (see :mod:`mschedule.transport.errors`), and the receiving side
rebuilds it from :data:`ERRORS`: one table of the names the agent, the master and the web tier share.
"""
from __future__ import annotations

import logging


class MScheduleError(Exception):
    """Base class of every error mschedule raises on purpose."""

    #: the HTTP status the web tier answers for this error
    http_status = 500
    #: the level the RPC server logs this error at when a call raises it
    log_level = logging.INFO

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
    log_level = logging.WARNING


class Unauthenticated(MScheduleError):
    """No valid credential: a token that is missing, unknown, expired or revoked (HTTP 401)."""

    http_status = 401
    log_level = logging.WARNING


class KeyPending(Unauthorized):
    """The agent's key waits for an operator's decision: it may register and heartbeat, nothing else yet.

    Routine while it lasts (the agent asks again with backoff), so the master logs it only at debug: it logs
    the new key once, when the key first registers.
    """

    log_level = logging.DEBUG


class MessageError(ValidationError):
    """An agent message (register, heartbeat, task, result) has the wrong shape."""

    log_level = logging.WARNING


#: every error name that crosses the RPC boundary, and the class the receiving side rebuilds
class NotDurable(MScheduleError):
    """The change was made but the master could not commit it (e.g. its disk is full): it will be written
    with the next commit that succeeds, and is lost if the master dies first. Check before retrying."""

    http_status = 503
    log_level = logging.ERROR


ERRORS: dict[str, type[MScheduleError]] = {
    cls.__name__: cls for cls in (ValidationError, MessageError, NotFound, Conflict, Unauthorized, KeyPending,
                                  NotDurable, Unauthenticated)
}

#: remote error names the web tier maps to HTTP statuses
HTTP_STATUS_BY_ERROR = {name: cls.http_status for name, cls in ERRORS.items()}


def wire_name(exc: MScheduleError) -> str:
    """The name ``exc`` crosses the RPC boundary as: its nearest class in :data:`ERRORS`, so a subclass private
    to one tier (the master's PendingFull) reaches the other as what it is to them (Unauthorized)."""
    for cls in type(exc).__mro__:
        if ERRORS.get(cls.__name__) is cls:
            return cls.__name__
    return "MScheduleError"
