"""zerorpc client and server with the fixes our stack needs (see shared/ZERORPC-NOTES.md).

- :class:`SafeClient` closes a call's channel whenever the call ends by an exception. zerorpc 0.6.3
  leaks the channel and its heartbeat greenlet otherwise, which later kills the calling greenlet in
  the middle of an unrelated call with a spurious ``LostRemote``.
- Clients get ``linger = 0`` so requests of calls that already failed are dropped on close instead
  of being replayed to a master that comes back; callers recreate the client after a failure.
- :class:`QuietServer` logs our own expected errors (bad input) as one line instead of a traceback.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import zerorpc
import zmq
from zerorpc.channel import BufferedChannel
from zerorpc.events import Event
from zerorpc.heartbeat import HeartBeatOnChannel

from utils.defaults import RPC_HEARTBEAT, RPC_TIMEOUT
from utils.exceptions import MScheduleError

log = logging.getLogger(__name__)

#: what a failed call to an unreachable or restarting peer raises
TRANSPORT_ERRORS = (zerorpc.TimeoutExpired, zerorpc.LostRemote)


class SafeClient(zerorpc.Client):
    """A zerorpc Client whose synchronous calls never leak their channel."""

    def __call__(self, method, *args, **kwargs):
        if isinstance(method, bytes):
            method = method.decode("utf-8")
        timeout = kwargs.get("timeout", self._timeout)
        channel = self._multiplexer.channel()
        hbchan = HeartBeatOnChannel(channel, freq=self._heartbeat_freq, passive=self._passive_heartbeat)
        bufchan = BufferedChannel(hbchan, inqueue_size=kwargs.get("slots", 100))
        try:
            request_event = bufchan.new_event(method, args, self._context.hook_get_task_context())
            self._context.hook_client_before_request(request_event)
            bufchan.emit_event(request_event)
            return self._process_response(request_event, bufchan, timeout)
        except BaseException:
            bufchan.close()
            raise


@dataclass(frozen=True)
class CurveClientKeys:
    """What a CURVE client needs: the server's public key and its own key pair (Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes


def make_client(endpoint: str, timeout: float = RPC_TIMEOUT, heartbeat: int = RPC_HEARTBEAT,
                curve: CurveClientKeys | None = None) -> SafeClient:
    """A connected client that drops unsent requests when closed; CURVE-encrypted when ``curve`` is given.

    A client with the wrong server key never completes the handshake: its calls time out.
    """
    client = SafeClient(timeout=timeout, heartbeat=heartbeat)
    sock = client._events._socket
    sock.linger = 0
    if curve is not None:
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
        sock.curve_serverkey = curve.server_public
    client.connect(endpoint)
    return client


def make_curve_server(server: zerorpc.Server, public: bytes, secret: bytes, zap_domain: str) -> None:
    """Turn a not yet bound zerorpc server into a CURVE server whose clients the ZAP handler vets."""
    sock = server._events._socket
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    sock.zap_domain = zap_domain.encode()


def close_quietly(client: zerorpc.Client | None) -> None:
    if client is None:
        return
    try:
        client.close()
    except Exception:  # closing a broken client must not hide the error that broke it
        log.debug("error closing rpc client", exc_info=True)


class _DirectSender:
    """Sends a multipart message at once with C-level sends (see QuietServer.send_directly)."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def __call__(self, parts, timeout=None) -> None:
        sock, last = self._sock, len(parts) - 1
        try:
            for i, part in enumerate(parts):
                zmq.Socket.send(sock, part, zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0))
        except zmq.ZMQError as exc:  # e.g. the socket is closing: lost like any reply to a gone peer
            log.debug("reply not sent: %s", exc)
        # gevent_zmq misses readiness edges while sending; look once, as its own send does after each frame
        sock._on_state_changed()

    def close(self) -> None:
        pass


USER_HEADER = "mschedule.user"


def _user(event) -> str | None:
    header = event.header
    user = header.get(USER_HEADER) if isinstance(header, dict) else None
    return user if isinstance(user, str) else None


class QuietServer(zerorpc.Server):
    """zerorpc Server with two changes that matter to the master.

    - Expected errors (bad input, a caller gone) are logged as one line, not a traceback.
    - Calls for which ``inline(method, args)`` is true (quick, never blocking: heartbeats, pings) are
      answered straight from the accepting loop. zerorpc's normal path spawns three greenlets, builds a heartbeat
      and a buffered channel and sends an extra flow-control message for every call; for the master
      the bulk of all calls are heartbeats of idle agents, and this path costs a fraction of that.
    """

    def __init__(self, methods=None, inline: Callable[[str, Any], bool] | None = None,
                 peer_hook: Callable[[str | None], None] | None = None, **kwargs) -> None:
        super().__init__(methods, **kwargs)
        self._inline = inline or (lambda name, args: False)
        #: told the caller's authenticated user id (its CURVE key, from ZAP) before each call is served,
        #: in the greenlet serving it
        self._peer_hook = peer_hook or (lambda user: None)

    def send_directly(self) -> None:
        """Send replies straight from the calling greenlet, one C-level send per frame.

        zerorpc queues every outgoing message to a sender greenlet that sends each frame through
        gevent_zmq's cooperative ``send`` (a state check per frame): about a fifth of an idle master's
        CPU. A ROUTER socket never blocks on send (it drops when a peer's queue is full, which a peer
        that stopped reading deserves), so none of that machinery is needed here.
        """
        events = self._events
        events._send.close()  # the queueing sender greenlet
        events._send = _DirectSender(events._socket)

    def stamp_user_ids(self) -> None:
        """Record on every received request the User-Id ZAP gave its connection (the client's CURVE
        public key), in the request header where no client can set it: zerorpc itself drops it."""
        events = self._events
        sock = events._socket
        events._recv.close()  # zerorpc's own receiving greenlet would take messages from under us

        def recv(timeout=None):
            frames = sock.recv_multipart(copy=False)
            event = Event.unpack(frames[-1].bytes)
            # as zerorpc's own recv: [identity..., b"", payload], or [identity, payload]
            head = frames[:-2] if len(frames) > 2 else frames[:-1]
            event.identity = [f.bytes for f in head] or None
            try:
                user = frames[-1].get("User-Id")
            except zmq.ZMQError:
                user = None
            event.header[USER_HEADER] = user
            return event

        events.recv = recv

    def _acceptor(self):
        while True:
            event = self._multiplexer.recv()
            try:
                functor = self._methods[event.name] if self._answers_inline(event) else None
            except Exception:  # whatever a hostile peer sent, the accepting loop must live on
                functor = None
            if functor is not None:
                self._peer_hook(_user(event))
                self._answer_inline(event, functor)
            else:
                self._task_pool.spawn(self._serve, event)

    def _serve(self, event) -> None:
        self._peer_hook(_user(event))
        self._async_task(event)

    def _answers_inline(self, event) -> bool:
        header = event.header
        return (isinstance(header, dict) and isinstance(header.get("v"), int) and header["v"] >= 2
                and "message_id" in header and isinstance(event.name, str) and event.name in self._methods
                and isinstance(event.args, (list, tuple)) and self._inline(event.name, event.args))

    def _answer_inline(self, event, functor) -> None:
        try:
            reply = self._multiplexer.new_event("OK", (functor(*event.args),), None)
        except Exception:
            reply = self._multiplexer.new_event("ERR", self._print_traceback(False, list(sys.exc_info())), None)
        try:
            reply.header["response_to"] = event.header["message_id"]
            reply.identity = event.identity
            self._multiplexer.emit_event(reply)
        except Exception:  # e.g. a result that cannot be packed: the caller times out, the server lives on
            log.exception("cannot answer %s", event.name)

    def _print_traceback(self, protocol_v1, exc_infos):
        exc_type, exc_value, _ = exc_infos
        if isinstance(exc_value, zerorpc.LostRemote):  # the caller went away (agent stopped, network cut)
            log.debug("rpc caller lost: %s", exc_value)
            return (exc_type.__name__, str(exc_value), None)
        if isinstance(exc_value, MScheduleError):
            log.info("rpc refused: %s: %s", exc_type.__name__, exc_value)
            return (exc_type.__name__, str(exc_value), None)
        return super()._print_traceback(protocol_v1, exc_infos)


STALE_CLIENT_GRACE = 60.0
"""Seconds a replaced client stays open so calls still running on it can end by themselves."""


class MasterLink:
    """Calls the master through one client, shared by every caller of a process (agents, web bridge).

    After a timeout or lost heartbeat the client is replaced by a fresh one (with ``linger=0``), so
    requests that never reached a master that was down are dropped rather than replayed later.
    """

    def __init__(self, endpoint: str, timeout: float = RPC_TIMEOUT, curve: CurveClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.curve = curve
        self._client: SafeClient | None = None
        self._generation = 0

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the master.

        Raises:
            zerorpc.TimeoutExpired, zerorpc.LostRemote: the master did not answer.
            zerorpc.RemoteError: the master answered with an error.
        """
        if self._client is None:
            self._client = make_client(self.endpoint, timeout=self.timeout, curve=self.curve)
        client, generation = self._client, self._generation
        try:
            return client(method, *args, timeout=timeout or self.timeout)
        except TRANSPORT_ERRORS:
            self._replace(generation)
            raise

    def _replace(self, generation: int) -> None:
        if generation != self._generation or self._client is None:
            return  # another caller already replaced it
        old, self._client = self._client, None
        self._generation += 1
        # kept open a while: calls still waiting on it may yet be answered by a master that comes back
        # (their requests are idempotent: results apply once, polls are handed out again)
        gevent.spawn_later(STALE_CLIENT_GRACE, close_quietly, old)

    def close(self) -> None:
        close_quietly(self._client)
        self._client = None
