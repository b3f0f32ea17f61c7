"""zerorpc clients as the agents, the web tier and the ``keys`` command use them (see shared/ZERORPC-NOTES.md)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import gevent
import msgpack
import zerorpc
import zmq
from zerorpc.channel import BufferedChannel
from zerorpc.heartbeat import HeartBeatOnChannel

from mschedule.transport import errors
from mschedule.transport.dispatch import Multiplexer
from mschedule.transport.guard import require_pinned_zerorpc
from mschedule.transport.stats import TransportStats
from mschedule.utils.defaults import RPC_HEARTBEAT, RPC_TIMEOUT

log = logging.getLogger(__name__)

#: what a failed call to an unreachable or restarting peer raises
TRANSPORT_ERRORS = (zerorpc.TimeoutExpired, zerorpc.LostRemote)


class SafeClient(zerorpc.Client):
    """A zerorpc Client whose calls never leak their channel, reading its socket with the checked
    dispatcher of :mod:`mschedule.transport.dispatch` (a late or crafted reply is dropped, never fatal), and whose
    remote errors are typed (:func:`mschedule.transport.errors.remote_error`: a ``NotFound`` answer raises a
    ``zerorpc.RemoteError`` that is also a :class:`mschedule.utils.exceptions.NotFound`, with its ``field``).

    zerorpc 0.6.3 leaks a call's channel and heartbeat greenlet when the call ends by an exception other
    than its own timeout (an argument msgpack cannot pack, a lost heartbeat, an outer gevent.Timeout); the
    leaked heartbeat later kills the calling greenlet in the middle of an unrelated call.
    """

    def __init__(self, timeout: float = RPC_TIMEOUT, heartbeat: int = RPC_HEARTBEAT) -> None:
        require_pinned_zerorpc()
        super().__init__(timeout=timeout, heartbeat=heartbeat)
        errors.install(self._context)
        self.stats = TransportStats("client")
        self._multiplexer = Multiplexer(self._events, self.stats, router=False, ignore_broadcast=True)

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

    @property
    def open_channels(self) -> int:
        return len(self._multiplexer.active_channels)


@dataclass(frozen=True)
class CurveClientKeys:
    """What a CURVE client needs: the server's public key and its own key pair (Z85)."""

    server_public: bytes
    public: bytes
    secret: bytes


class BoundedSender:
    """Sends a client's message within ``wait`` seconds or never (replaces zerorpc's sending greenlet, which holds
    a message until the socket can take it, however late): while no connection is complete (no master listens
    yet, or the handshake is under way) it looks again every SEND_RETRY seconds, then drops the message and
    raises TimeoutExpired in the sending greenlet, so its call fails then, not a reply timeout later (an agent
    registering with a new leader tries again at once), and its request never reaches a master that comes
    later."""

    def __init__(self, sock: zmq.Socket, wait: float) -> None:
        self._sock = sock
        self._wait = wait

    def __call__(self, parts, timeout=None) -> None:
        sock, last = self._sock, len(parts) - 1
        deadline = time.monotonic() + self._wait
        while True:
            try:
                # a DEALER takes a multipart message whole or not at all: the first frame decides
                for i, part in enumerate(parts):
                    zmq.Socket.send(sock, part, zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0))
                break
            except zmq.Again:
                if time.monotonic() >= deadline:
                    sock._on_state_changed()
                    if _is_request(parts):  # a call's heartbeat or credit is dropped quietly: its call ends anyway
                        raise zerorpc.TimeoutExpired(self._wait, "sending: no master connection is complete") from None
                    return
                gevent.sleep(SEND_RETRY)
            except zmq.ZMQError as exc:  # the socket is closing
                log.debug("request not sent: %s", exc)
                break
        sock._on_state_changed()  # as gevent_zmq's own send does: a send may consume a readiness event

    def close(self) -> None:
        pass


def _is_request(parts) -> bool:
    """Whether a client's message is a call's request, not zerorpc's own (``_zpc_hb``, ``_zpc_more``)."""
    try:
        name = msgpack.unpackb(parts[-1], raw=False)[1]
    except Exception:  # not ours to judge: treat it as a request
        return True
    return not (isinstance(name, str) and name.startswith("_zpc_"))


SEND_RETRY = 0.05
"""Seconds between two tries of a :class:`BoundedSender` to send on a socket that has no complete connection."""

FOLLOW_HEARTBEAT_MS = 1000
FOLLOW_HEARTBEAT_TIMEOUT_MS = 3000
"""A client of several masters pings each connection (ZMTP heartbeats) every second and drops one silent for 3 s:
a master that died or froze without closing its connections stops taking requests."""
FOLLOW_RECONNECT_MS = (1000, 4000)
"""How often a client of several masters tries a master that does not listen (a standby): from 1 s, doubling up to
4 s, so a fleet does not hammer a standby's port; zmq adds up to the first interval at random to each wait."""
FOLLOW_RECONNECT_LATEST = (FOLLOW_RECONNECT_MS[0] + FOLLOW_RECONNECT_MS[1]) / 1000
"""Seconds after a master starts listening by which every client of several masters has tried it (a new leader
gives its agents this much more grace: mschedule/master/scheduler.py restore)."""


def make_client(endpoint: str, timeout: float = RPC_TIMEOUT, heartbeat: int = RPC_HEARTBEAT,
                curve: CurveClientKeys | None = None) -> SafeClient:
    """A connected client that drops unsent requests when closed; CURVE-encrypted when ``curve`` is given.

    ``endpoint`` may name several masters, comma separated (``tcp://m1:9000,tcp://m2:9000``): the client then
    connects to all of them and sends each request only to one whose connection is complete. Of the masters of a
    cluster only the leader listens (mschedule/master/leadership.py), so requests reach it, whichever it is,
    without the client knowing which; a request made while none listens fails at its timeout and is never sent
    later (it might have been a submit the caller was told failed).

    A client with the wrong server key never completes the handshake: its calls time out.
    """
    endpoints = [e.strip() for e in endpoint.split(",") if e.strip()]
    client = SafeClient(timeout=timeout, heartbeat=heartbeat)
    sock = client._events._socket
    sock.linger = 0
    if len(endpoints) > 1:
        sock.immediate = True  # queue only on complete connections: not on a standby's, which never completes
        sock.heartbeat_ivl = FOLLOW_HEARTBEAT_MS
        sock.heartbeat_timeout = FOLLOW_HEARTBEAT_TIMEOUT_MS
        sock.reconnect_ivl, sock.reconnect_ivl_max = FOLLOW_RECONNECT_MS
        client._events._send.close()  # zerorpc's sending greenlet would hold a request until some master listens
        client._events._send = BoundedSender(sock, timeout)
    if curve is not None:
        sock.curve_publickey = curve.public
        sock.curve_secretkey = curve.secret
        sock.curve_serverkey = curve.server_public
    for each in endpoints:
        client.connect(each)
    return client


def close_quietly(client: zerorpc.Client | None) -> None:
    if client is None:
        return
    try:
        client.close()
    except Exception:  # closing a broken client must not hide the error that broke it
        log.debug("error closing rpc client", exc_info=True)


STALE_CLIENT_GRACE = 60.0
"""Seconds a replaced client stays open so calls still running on it can end by themselves."""


class MasterLink:
    """Calls the master through one client, shared by every caller of a process (agents, web bridge).

    When calls fail with a transport error for ``relink_after`` seconds in a row, the client is replaced by a
    fresh one (with ``linger=0``), so requests that never reached a master that was down are dropped rather
    than replayed later. 0 replaces it at the first failure: right for the web tier, whose calls (submit a
    task) must not be replayed. Agents, whose calls are all idempotent, keep their connection through short
    failures: under load a fresh client per timeout means a fresh CURVE handshake per timeout, which is how a
    slow master turns into a reconnect storm.
    """

    def __init__(self, endpoint: str, timeout: float = RPC_TIMEOUT, curve: CurveClientKeys | None = None,
                 relink_after: float = 0.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.curve = curve
        self.relink_after = relink_after
        self._client: SafeClient | None = None
        self._generation = 0
        self._failing_since: float | None = None

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the master.

        Raises:
            zerorpc.TimeoutExpired, zerorpc.LostRemote: the master did not answer.
            mschedule.transport.errors.RemoteError: the master answered with an error (a zerorpc.RemoteError; for a name
                in mschedule.utils.exceptions.ERRORS also that class, e.g. NotFound, with the error's ``field``).
        """
        if self._client is None:
            self._client = make_client(self.endpoint, timeout=self.timeout, curve=self.curve)
        client, generation = self._client, self._generation
        try:
            value = client(method, *args, timeout=timeout or self.timeout)
        except TRANSPORT_ERRORS:
            self._failed(generation)
            raise
        except zerorpc.RemoteError:
            self._failing_since = None  # the master answered
            raise
        self._failing_since = None
        return value

    def _failed(self, generation: int) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self.relink_after:
            self._replace(generation)

    def _replace(self, generation: int) -> None:
        if generation != self._generation or self._client is None:
            return  # another caller already replaced it
        old, self._client = self._client, None
        self._generation += 1
        self._failing_since = None
        # kept open a while: calls still waiting on it may yet be answered by a master that comes back
        # (their requests are idempotent: results apply once, polls are handed out again)
        gevent.spawn_later(STALE_CLIENT_GRACE, close_quietly, old)

    def close(self) -> None:
        close_quietly(self._client)
        self._client = None
