"""Typed errors across the RPC boundary: one error shape on the wire, rebuilt as a class on the other side.

An error a method raises on purpose (:class:`mschedule.utils.exceptions.MScheduleError`) is answered as zerorpc's
``ERR`` event, whose args are zerorpc's own ``(name, message, None)`` (``name``: :func:`wire_name`), with
the field it is about in the event's header (:data:`FIELD_HEADER`): a zerorpc peer that knows nothing of
it still reads a normal error. Every path that answers an error (zerorpc's spawned call, the inline call,
the refusal) marks it with :func:`mark_error`; zerorpc's spawned path reaches it through its public
``server_inspect_exception`` middleware hook.

The calling side rebuilds the error through zerorpc's ``client_handle_remote_error`` hook:
:func:`remote_error` gives an instance of a :class:`RemoteError` subclass that is also the matching class
of :data:`mschedule.utils.exceptions.ERRORS` (a remote ``NotFound`` is caught by ``except NotFound`` and by
``except zerorpc.RemoteError``), with ``name``, ``msg`` and ``field``.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import zerorpc

from mschedule.utils.exceptions import ERRORS, MScheduleError, wire_name

log = logging.getLogger(__name__)

FIELD_HEADER = "mschedule.field"
"""Header of an ``ERR`` reply: the request field the error is about (absent or None: the whole request)."""

MAX_FIELD_LENGTH = 256
"""Longest field name a client takes from a reply (a longer one is dropped, the error kept)."""


class RemoteError(zerorpc.RemoteError):
    """An error the peer answered, with the field it is about (None when it named none).

    ``str()`` is zerorpc's (``"Name: message"``, or the remote traceback of an unexpected error).
    """

    def __init__(self, name: str, human_msg: str, human_traceback: str | None, field: str | None = None) -> None:
        zerorpc.RemoteError.__init__(self, name, human_msg, human_traceback)
        self.field = field

    @property
    def message(self) -> str:
        """The peer's message, as :class:`mschedule.utils.exceptions.MScheduleError` names it."""
        return self.msg

    def __str__(self) -> str:  # zerorpc's, not MScheduleError's (which comes later in a typed error's MRO)
        return zerorpc.RemoteError.__str__(self)


def _remote_class(name: str, cls: type[MScheduleError]) -> type[RemoteError]:
    return type(f"Remote{name}", (RemoteError, cls), {"__module__": __name__,
                                                       "__doc__": f"A {name} the peer answered."})


#: the class a remote error of each known name is rebuilt as
REMOTE_ERRORS: dict[str, type[RemoteError]] = {name: _remote_class(name, cls) for name, cls in ERRORS.items()}


def remote_error(name: str, message: str, traceback: str | None = None, field: str | None = None) -> RemoteError:
    """The error a peer answered as ``name``: an instance of its class in :data:`REMOTE_ERRORS`, or a plain
    :class:`RemoteError` for a name outside the table (an unexpected error: ``ValueError``, ...)."""
    return REMOTE_ERRORS.get(name, RemoteError)(name, message, traceback, field)


def error_args(exc: MScheduleError) -> tuple[str, str, None]:
    """An expected error as the args of zerorpc's ERR event: no traceback (it is an answer, not a bug)."""
    return (wire_name(exc), exc.message, None)


def mark_error(reply_event: Any, exc: BaseException | None) -> None:
    """Put the field ``exc`` is about into the ERR reply's header (nothing for other errors)."""
    field = getattr(exc, "field", None) if isinstance(exc, MScheduleError) else None
    if reply_event is not None and isinstance(field, str):
        reply_event.header[FIELD_HEADER] = field


class ErrorMiddleware:
    """zerorpc middleware: marks a spawned call's error on the server, rebuilds typed errors on the client."""

    def server_inspect_exception(self, request_event, reply_event, task_context, exc_infos) -> None:
        mark_error(reply_event, exc_infos[1] if exc_infos else None)

    def client_handle_remote_error(self, event) -> RemoteError | None:
        """The typed error of an ERR event; None (zerorpc's own handling) for one of another shape (v1)."""
        try:
            if event.header.get("v", 1) < 2 or len(event.args) != 3:
                return None
            name, message, traceback = event.args
            if not isinstance(name, str) or not isinstance(message, str):
                return None
            field = event.header.get(FIELD_HEADER)
            if not isinstance(field, str) or len(field) > MAX_FIELD_LENGTH:
                field = None
            return remote_error(name, message, traceback if isinstance(traceback, str) else None, field)
        except Exception:  # a malformed reply must not hide the error it carries: zerorpc's own handling
            log.debug("error reply not understood", exc_info=True)
            return None


_installed: weakref.WeakSet = weakref.WeakSet()
_installing = threading.Lock()  # the web tier makes its clients in a thread of its own


def install(context: zerorpc.Context) -> None:
    """Register :class:`ErrorMiddleware` on a zerorpc context, once (servers and clients share the default one)."""
    with _installing:
        if context not in _installed:
            context.register_middleware(ErrorMiddleware())
            _installed.add(context)
