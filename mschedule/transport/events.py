"""The wire, below zerorpc's channels: reading a message off a socket as a zerorpc ``Event`` of the shape
zerorpc's own code assumes everywhere, and sending replies without zerorpc's sender greenlet.

zerorpc 0.6.3 trusts what it receives: a header that is not a dict, a ``message_id`` that cannot be a dict
key, a ``v`` that is not a number or identities that are not ``zmq.Frame`` (its ``Event.__str__`` reads
``frame.bytes``) each raise deep inside one of its loops and kill it. :func:`parse` lets through only what
those loops can digest; anything else is dropped and counted by the caller.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import msgpack
import zmq
from zerorpc.events import Event

log = logging.getLogger(__name__)

USER_HEADER = "mschedule.user"
"""Header the receiving side sets on every event to the User-Id ZAP gave its connection (the client's CURVE
public key), or None; whatever a client put there itself is overwritten."""

MAX_ID_LENGTH = 128
"""Longest ``message_id``/``response_to`` accepted (zerorpc's own are 40 bytes)."""
MAX_NAME_LENGTH = 256
PROTOCOL_VERSION = 3
"""The only zerorpc protocol version accepted (0.6.3 speaks 3). Older versions make the server's call
heartbeat passive, so a call whose reply cannot be sent would never end."""
MAX_MORE = 10_000
"""Most send credits one ``_zpc_more`` event may grant (zerorpc asks for at most its queue size, 100)."""


class BadEvent(ValueError):
    """A message that is not a zerorpc event of a shape zerorpc can handle; the text says why."""


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, (str, bytes)) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise BadEvent(f"{what}: expected a string of 1 to {MAX_ID_LENGTH} characters, got {type(value).__name__}")


def parse(frames: list[zmq.Frame], router: bool) -> Event:
    """One received message as a checked zerorpc Event.

    ``router`` is true on a server (ROUTER) socket: the message is ``[identity, b"", payload]`` (or
    ``[identity, payload]``, as zerorpc accepts) and the identity, kept as ``zmq.Frame`` as zerorpc expects,
    is where replies go. On a client (DEALER) socket it is ``[b"", payload]`` or ``[payload]``.

    Raises:
        BadEvent: any other shape.
    """
    count = len(frames)
    if router:
        if count not in (2, 3) or (count == 3 and len(frames[1].buffer)):
            raise BadEvent(f"frames: expected [identity, '', payload], got {count} frames")
        identity = [frames[0]]
    else:
        if count not in (1, 2) or (count == 2 and len(frames[0].buffer)):
            raise BadEvent(f"frames: expected ['', payload], got {count} frames")
        identity = None
    try:
        unpacked = msgpack.unpackb(frames[-1].buffer, raw=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, UnicodeDecodeError, ...)
        raise BadEvent(f"payload: not msgpack of strings ({type(exc).__name__})") from None
    if not isinstance(unpacked, list) or len(unpacked) != 3:
        raise BadEvent("payload: expected [header, name, args]")
    header, name, args = unpacked
    if not isinstance(header, dict):
        raise BadEvent("header: expected a map")
    _check_id(header.get("message_id"), "header.message_id")
    if header.get("response_to") is not None:
        _check_id(header["response_to"], "header.response_to")
    version = header.get("v")
    if isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise BadEvent(f"header.v: expected protocol version {PROTOCOL_VERSION}")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise BadEvent(f"name: expected a string of 1 to {MAX_NAME_LENGTH} characters")
    if not isinstance(args, list):
        raise BadEvent("args: expected an array")
    if name == "_zpc_more" and not (len(args) == 1 and type(args[0]) is int and 0 < args[0] <= MAX_MORE):
        # zero or negative credit would leave the other side's reply waiting forever (and its call's memory held)
        raise BadEvent(f"_zpc_more: expected [1 to {MAX_MORE}] send credits")
    header[USER_HEADER] = _user_id(frames[-1])
    event = Event(name, args, None, header)
    event.identity = identity
    return event


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP on this socket (--insecure)
        return None
    return user if isinstance(user, str) and user else None


def user_of(event: Event) -> str | None:
    """The authenticated user (CURVE public key) of the connection ``event`` came from."""
    user = event.header.get(USER_HEADER)
    return user if isinstance(user, str) else None


def peer_of(event: Event | None) -> tuple[bytes, ...] | None:
    """The routing identity an event came from, comparable across events."""
    if event is None or not event.identity:
        return None
    return tuple(bytes(frame.bytes) if isinstance(frame, zmq.Frame) else bytes(frame) for frame in event.identity)


class DirectSender:
    """Replaces zerorpc's sender greenlet on a ROUTER socket (and on a client's DEALER that knows several masters:
    mschedule.transport.client.make_client): a multipart message is sent at once, from the calling greenlet, one
    C-level non-blocking send per frame, or dropped.

    zerorpc queues every outgoing message to a greenlet that sends each frame through gevent_zmq's
    cooperative ``send``: about a fifth of an idle master's CPU. A ROUTER never blocks on send (it drops a
    message for a peer whose queue is full, which a peer that stopped reading deserves).
    """

    def __init__(self, sock: zmq.Socket, gate: Callable[[], bool] | None = None,
                 on_shut: Callable[[], None] | None = None) -> None:
        self._sock = sock
        #: while it says False nothing is sent (``on_shut`` is told): a master that may no longer lead
        self._gate = gate
        self._on_shut = on_shut

    def __call__(self, parts, timeout=None) -> None:
        if self._gate is not None and not self._gate():
            if self._on_shut is not None:
                self._on_shut()
            return
        sock, last = self._sock, len(parts) - 1
        try:
            for i, part in enumerate(parts):
                zmq.Socket.send(sock, part, zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0))
        except zmq.ZMQError as exc:  # e.g. the socket is closing: lost like any reply to a gone peer
            log.debug("reply not sent: %s", exc)
        # gevent_zmq learns of readiness from edge-triggered fd events, and a send can consume one that a
        # greenlet waiting in recv needs: look once, as gevent_zmq's own send does after each frame
        sock._on_state_changed()

    def close(self) -> None:
        pass
