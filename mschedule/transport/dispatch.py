"""Routing received events to zerorpc's channels, by a loop of our own that no event can kill.

zerorpc 0.6.3's ``ChannelMultiplexer._channel_dispatcher`` lets any exception out of its loop (its ``try``
covers only the receive), and its "unable to route" log line itself raised on our identities: one
heartbeat for a channel that no longer exists silenced an endpoint for good. Here every message is parsed
(:func:`mschedule.transport.events.parse`), routed or dropped with a counter, and the loop is supervised.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
import gevent.queue
from zerorpc.channel import Channel, ChannelMultiplexer

from mschedule.transport.events import BadEvent, parse, peer_of
from mschedule.transport.stats import TransportStats
from mschedule.transport.supervise import supervise

log = logging.getLogger(__name__)

CHANNEL_QUEUE = 64
"""Events waiting for one channel's reader before more are dropped (zerorpc's own queue holds one, and a
full one blocked its whole dispatcher)."""

YIELD_EVERY = 32
"""Events routed in a row before the loop lets other greenlets run: while messages keep arriving, a receive
never waits, and without this the other endpoint, the ZAP handler and housekeeping would starve."""


class SafeChannel(Channel):
    """A zerorpc Channel with room for a few events and a close that only removes itself."""

    def __init__(self, multiplexer: Multiplexer, from_event=None) -> None:
        super().__init__(multiplexer, from_event)
        queue = gevent.queue.Queue(maxsize=CHANNEL_QUEUE)
        while not self._queue.empty():
            queue.put_nowait(self._queue.get_nowait())
        self._queue = queue
        #: who may send on this channel (the caller, for a server's channel; anyone for a client's)
        self.peer = peer_of(from_event)

    def close(self) -> None:
        channels = self._multiplexer._active_channels
        if self._channel_id is not None and channels.get(self._channel_id) is self:
            del channels[self._channel_id]
        self._channel_id = None


class Multiplexer(ChannelMultiplexer):
    """zerorpc's ChannelMultiplexer reading and routing with the loop above.

    It takes the socket over from zerorpc's own receiving greenlet, which it stops.
    """

    def __init__(self, events, stats: TransportStats, router: bool, ignore_broadcast: bool = False,
                 on_giveup: Callable[[str], None] | None = None, gate: Callable[[], bool] | None = None) -> None:
        self.stats = stats
        #: while it says False every received event is dropped unread (a master that may no longer lead)
        self._gate = gate
        self._router = router
        self._on_giveup = on_giveup
        self._socket = events._socket
        events._recv.close()  # zerorpc's receiving greenlet would take messages from under us
        super().__init__(events, ignore_broadcast)

    def channel(self, from_event=None) -> SafeChannel:
        if self._channel_dispatcher_task is None:
            self._channel_dispatcher_task = gevent.spawn(self._channel_dispatcher)
        return SafeChannel(self, from_event)

    def _channel_dispatcher(self) -> None:
        supervise("dispatcher", self._dispatch_forever, self.stats, self._on_giveup)

    def _dispatch_forever(self) -> None:
        routed = 0
        while True:
            frames = self._socket.recv_multipart(copy=False)
            self.stats.received += 1
            try:
                self._route(frames)
            except Exception:  # a bug of ours: logged loudly, but one event must not stop the loop
                log.exception("%s: event not routed", self.stats.name)
                self.stats.drop("error")
            routed += 1
            if routed % YIELD_EVERY == 0:
                gevent.sleep(0)

    def _route(self, frames) -> None:
        if self._gate is not None and not self._gate():
            self.stats.drop("not_leading")
            return
        try:
            event = parse(frames, self._router)
        except BadEvent as exc:
            self.stats.drop("malformed", exc)
            return
        channel_id = event.header.get("response_to")
        if channel_id is None:
            if self._broadcast_queue is None:
                self.stats.drop("unroutable", event.name)
            elif event.header["message_id"] in self._active_channels:
                self.stats.drop("duplicate_message_id", event.name)
            else:
                self._broadcast_queue.put(event)  # the acceptor takes each at once
            return
        channel = self._active_channels.get(channel_id)
        if channel is None:
            self.stats.drop("unknown_channel", event.name)
        elif channel.peer is not None and channel.peer != peer_of(event):
            self.stats.drop("foreign_channel", event.name)
        else:
            try:
                channel._queue.put_nowait(event)
            except gevent.queue.Full:
                self.stats.drop("channel_full", event.name)
