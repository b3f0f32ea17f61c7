"""Counters of one endpoint's transport: what it received, dropped and why, and how often a loop restarted."""
from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL = 10.0
"""Seconds between two INFO lines about dropped events of one endpoint (each drop is also a DEBUG line)."""

DROP_REASONS = ("malformed", "unknown_channel", "foreign_channel", "duplicate_message_id", "channel_full",
                "unroutable", "too_many_calls", "not_leading", "error")
"""Every reason an event is dropped for (the metrics export each from zero)."""
LOOPS = ("dispatcher", "acceptor")
"""The supervised serving loops of a server (mschedule.transport.supervise)."""


class TransportStats:
    """Counters of one endpoint (``name``: ``agents``, ``admin``, ``client``).

    ``dropped`` counts events thrown away by reason: ``malformed`` (not a zerorpc event of the shape zerorpc
    assumes), ``unknown_channel`` (a ``response_to`` naming no open channel: a late heartbeat or reply of a
    call that ended, or anyone's crafted event), ``foreign_channel`` (a channel of another peer),
    ``duplicate_message_id``, ``channel_full``, ``unroutable``, ``too_many_calls`` (a request refused: its
    caller had ``max_calls_per_peer`` calls in progress), ``not_leading`` (received or to be sent while the server's
    gate is shut: a master that may no longer lead), ``error`` (:data:`DROP_REASONS`).
    Prometheus reads them at scrape time (:class:`mschedule.transport.metrics.TransportCollector`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self.dropped: Counter[str] = Counter()
        self.loop_restarts: Counter[str] = Counter()
        self._last_drop_log = 0.0
        self._dropped_since_log = 0

    def drop(self, reason: str, detail: object = "") -> None:
        self.dropped[reason] += 1
        self._dropped_since_log += 1
        log.debug("%s: event dropped (%s) %s", self.name, reason, detail)
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.info("%s: %d events dropped since the last report (%s in all)", self.name, self._dropped_since_log,
                     dict(self.dropped))
            self._last_drop_log, self._dropped_since_log = now, 0

    def snapshot(self) -> dict:
        return {"received": self.received, "dropped": dict(self.dropped), "loop_restarts": dict(self.loop_restarts)}
