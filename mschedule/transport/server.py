"""The zerorpc server of the master's endpoints: supervised loops, checked events, quick calls inline."""
from __future__ import annotations

import inspect
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import gevent.local
import zerorpc
import zmq

from mschedule.transport import errors
from mschedule.transport.dispatch import Multiplexer
from mschedule.transport.events import DirectSender, peer_of, user_of
from mschedule.transport.guard import require_pinned_zerorpc
from mschedule.transport.metrics import RPC_CALLS, RPC_ERRORS, UNKNOWN_METHOD
from mschedule.transport.stats import TransportStats
from mschedule.transport.supervise import supervise
from mschedule.utils.exceptions import Conflict, MScheduleError, ValidationError, wire_name

log = logging.getLogger(__name__)


class RpcServer(zerorpc.Server):
    """zerorpc Server for one master endpoint (``name``: ``agents`` or ``admin``).

    - Every received message goes through :class:`mschedule.transport.dispatch.Multiplexer`: checked, routed or
      dropped with a counter (``stats``), by a supervised loop; so is the accepting loop. A loop that keeps
      dying calls ``on_giveup`` (the master exits non-zero rather than living on deaf).
    - Replies are sent straight from the greenlet that made them (:class:`mschedule.transport.events.DirectSender`).
    - Calls for which ``inline(method, args)`` is true (quick, never blocking: heartbeats, pings) are answered
      from the accepting loop itself: zerorpc's normal path spawns three greenlets, a heartbeat and a
      buffered channel and sends a flow-control message per call, and most of an idle master's calls are
      heartbeats.
    - A call whose arguments do not fit the method is refused as a ValidationError without running it.
    - zerorpc's built-in introspection methods (``_zerorpc_*``) are not served.
    - Expected errors (bad input, a caller gone) are logged as one line (at the error class's ``log_level``), not
      a traceback, and answered with the field they are about (:mod:`mschedule.transport.errors`), on every path.
    - ``peer_hook(user)`` is told the caller's authenticated user (its CURVE key, from ZAP) before each call,
      in the greenlet serving it.
    - While ``gate()`` says False nothing is taken and nothing is sent: every received message is dropped unread
      and every reply, even one computed before, is dropped (counted as ``not_leading``). A master on PostgreSQL
      shuts it the moment it may no longer lead (mschedule/master/leadership.py).
    - Every call is counted (:data:`mschedule.transport.metrics.RPC_CALLS`, by endpoint and method) on all three paths
      (inline, spawned, refused), and every error answer (:data:`mschedule.transport.metrics.RPC_ERRORS`, by error
      name): one counter increment each, whose children are made here so a heartbeat pays no label lookup.
    """

    def __init__(self, methods: Any, name: str, inline: Callable[[str, Any], bool] | None = None,
                 peer_hook: Callable[[str | None], None] | None = None,
                 on_giveup: Callable[[str], None] | None = None, max_calls_per_peer: int | None = None,
                 gate: Callable[[], bool] | None = None, **kwargs: Any) -> None:
        require_pinned_zerorpc()
        super().__init__(methods, name=name, **kwargs)
        errors.install(self._context)
        self._methods = {k: f for k, f in self._methods.items() if not k.startswith("_zerorpc_")}
        self._signatures = {k: _signature(f) for k, f in self._methods.items()}
        self._inline = inline or (lambda method, args: False)
        self._peer_hook = peer_hook or (lambda user: None)
        self._on_giveup = on_giveup
        self.stats = TransportStats(name)
        self._refusals = ThrottledLog()
        #: spawned calls in progress per caller (its CURVE key, or its connection): a caller that opens calls
        #: and never lets them end (never reads, or asks for long polls by the thousand) holds the master's
        #: memory, so beyond ``max_calls_per_peer`` it is refused
        self._max_calls_per_peer = max_calls_per_peer
        self._in_progress: Counter = Counter()
        self._calls = {method: RPC_CALLS.labels(name, method) for method in (*self._methods, UNKNOWN_METHOD)}
        #: the method a spawned call's greenlet serves, for zerorpc's error hook (_print_traceback)
        self._serving = gevent.local.local()
        self._multiplexer.close()  # zerorpc's dispatcher, not started yet
        self._multiplexer = Multiplexer(self._events, self.stats, router=True, on_giveup=on_giveup, gate=gate)
        self._events._send.close()  # zerorpc's sending greenlet
        self._events._send = DirectSender(self._events._socket, gate, lambda: self.stats.drop("not_leading"))

    @property
    def socket(self) -> zmq.Socket:
        return self._events._socket

    def start(self) -> gevent.Greenlet:
        """Start the accepting loop (the dispatcher started with the server)."""
        self._acceptor_task = gevent.spawn(supervise, "acceptor", self._accept_forever, self.stats, self._on_giveup)
        return self._acceptor_task

    def run(self) -> None:
        self.start().get()

    def _accept_forever(self) -> None:
        while True:
            event = self._multiplexer.recv()
            functor = self._methods.get(event.name)
            if functor is None or not self._args_fit(event):
                self._refuse(event, functor is None)
            elif self._inline(event.name, event.args):
                self._calls[event.name].inc()
                self._peer_hook(user_of(event))
                self._answer_inline(event, functor)
            else:
                caller = user_of(event) or peer_of(event)
                if self._max_calls_per_peer is not None and self._in_progress[caller] >= self._max_calls_per_peer:
                    self._refuse_busy(event)
                    continue
                self._in_progress[caller] += 1
                self._task_pool.spawn(self._serve_counted, event, caller)

    def _args_fit(self, event) -> bool:
        signature = self._signatures.get(event.name)
        if signature is None:
            return True
        try:
            signature.bind(*event.args)
        except TypeError:
            return False
        return True

    def _serve_counted(self, event, caller) -> None:
        try:
            self._serve(event)
        finally:
            self._in_progress[caller] -= 1
            if self._in_progress[caller] <= 0:
                del self._in_progress[caller]

    def _refuse_busy(self, event) -> None:
        self.stats.drop("too_many_calls", event.name)
        self._answer_refused(event, event.name, Conflict(
            f"calls: {self._max_calls_per_peer} calls of this caller are in progress already; wait for one to end",
            field="calls"))

    def _serve(self, event) -> None:
        if event.header["message_id"] in self._multiplexer.active_channels:  # its twin got here first
            self.stats.drop("duplicate_message_id", event.name)
            return
        self._calls[event.name].inc()
        self._serving.method = event.name
        self._peer_hook(user_of(event))
        self._async_task(event)

    def _refuse(self, event, unknown: bool) -> None:
        """Answer an unknown method, or arguments that do not fit it, with an error without running anything."""
        what = f"no method {event.name!r}" if unknown else f"{event.name}: {len(event.args)} arguments do not fit"
        self._refusals.log(logging.INFO, "method", "%s: rpc refused: %s", self.stats.name, what)
        self._answer_refused(event, UNKNOWN_METHOD if unknown else event.name,
                             ValidationError(f"method: {what}", field="method"))

    def _answer_refused(self, event, method: str, exc: MScheduleError) -> None:
        """Answer a call refused before it ran with ``exc``, counted as a call of ``method`` and its error."""
        self._calls[method].inc()
        self._count_error(method, exc)
        reply = self._multiplexer.new_event("ERR", errors.error_args(exc), None)
        errors.mark_error(reply, exc)
        self._reply(event, reply)

    def _answer_inline(self, event, functor) -> None:
        try:
            reply = self._multiplexer.new_event("OK", (functor(*event.args),), None)
        except Exception as exc:
            self._count_error(event.name, exc)
            reply = self._multiplexer.new_event("ERR", self._error_args(False, list(sys.exc_info())), None)
            errors.mark_error(reply, exc)
        self._reply(event, reply)

    def _reply(self, event, reply) -> None:
        try:
            reply.header["response_to"] = event.header["message_id"]
            reply.identity = event.identity
            self._multiplexer.emit_event(reply)
        except Exception:  # e.g. a result that cannot be packed: the caller times out, the server lives on
            log.exception("%s: cannot answer %s", self.stats.name, event.name)

    def _count_error(self, method: str, exc: BaseException) -> None:
        name = wire_name(exc) if isinstance(exc, MScheduleError) else type(exc).__name__
        RPC_ERRORS.labels(self.stats.name, method, name).inc()

    def _print_traceback(self, protocol_v1, exc_infos):
        """zerorpc's hook for an error of a spawned call (the caller lost, or the method raised)."""
        self._count_error(getattr(self._serving, "method", UNKNOWN_METHOD), exc_infos[1])
        return self._error_args(protocol_v1, exc_infos)

    def _error_args(self, protocol_v1, exc_infos):
        """The args of the ERR answer to an error: one log line and no traceback for an expected one."""
        exc_type, exc_value, _ = exc_infos
        if isinstance(exc_value, zerorpc.LostRemote):  # the caller went away (agent stopped, network cut)
            log.debug("rpc caller lost: %s", exc_value)
            return (exc_type.__name__, str(exc_value), None)
        if isinstance(exc_value, MScheduleError):
            self._refusals.log(exc_value.log_level, exc_type.__name__, "%s: rpc refused: %s: %s", self.stats.name,
                               exc_type.__name__, exc_value)
            return errors.error_args(exc_value)
        return super()._print_traceback(protocol_v1, exc_infos)


REFUSAL_LOG_EVERY = 10.0
"""Seconds between two log lines about refused calls of one kind: any key can send refused calls in a loop."""


class ThrottledLog:
    """At most one line per kind per REFUSAL_LOG_EVERY seconds; the next one says how many were not logged."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -REFUSAL_LOG_EVERY) < REFUSAL_LOG_EVERY:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            message += " (and %d more like it in the last %.0fs, not logged)"
            args = (*args, skipped, REFUSAL_LOG_EVERY)
        log.log(level, message, *args)


def _signature(functor) -> inspect.Signature | None:
    target = getattr(functor, "_functor", functor)  # zerorpc wraps methods in a decorator object
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def make_curve_server(server: zerorpc.Server, public: bytes, secret: bytes, zap_domain: str) -> None:
    """Turn a not yet bound zerorpc server into a CURVE server whose clients the ZAP handler vets."""
    sock = server._events._socket
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    sock.zap_domain = zap_domain.encode()
