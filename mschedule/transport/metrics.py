"""Prometheus metrics of the master's RPC servers (docs/metrics.md).

Calls and errors are counted as they happen, by :class:`mschedule.transport.server.RpcServer`, in the process-wide
counters below; what :class:`mschedule.transport.stats.TransportStats` already counts (events dropped by reason, serving
loop restarts) is read at scrape time by :class:`TransportCollector`, so the receiving loop pays nothing more.
The metrics belong to no registry here: the master registers them in its own (:mod:`mschedule.master.metrics`).

Label values are bounded by the code, never by what a peer sends: a call to a method the server does not have
is counted as :data:`UNKNOWN_METHOD`, whatever name it gave, so a scan of method names cannot grow the series.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import Counter, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, Metric

from mschedule.transport.stats import DROP_REASONS, LOOPS, TransportStats

# A ``*_created`` series per counter and histogram doubles what Prometheus stores, for nothing it needs.
disable_created_metrics()

NAMESPACE = "mschedule_master"

UNKNOWN_METHOD = "(unknown)"
"""The ``method`` label of calls to a method the server does not serve."""

RPC_CALLS = Counter("calls", "RPC calls received, by endpoint and method: answered inline, run in a greenlet, "
                    "or refused (an unknown method, arguments that do not fit)", ("endpoint", "method"),
                    namespace=NAMESPACE, subsystem="rpc", registry=None)
RPC_ERRORS = Counter("errors", "RPC calls answered with an error, by endpoint, method and error name "
                     "(ValidationError, NotFound, ..., LostRemote when the caller went away, or an unexpected "
                     "exception's class)", ("endpoint", "method", "error"),
                     namespace=NAMESPACE, subsystem="rpc", registry=None)


class TransportCollector:
    """The transport counters of some endpoints, read when Prometheus scrapes.

    ``stats`` is read at each scrape, so a server may add its endpoints after building the registry. Every known
    drop reason and loop is exported from zero, so ``increase()`` sees the first drop too.
    """

    def __init__(self, stats: Sequence[TransportStats], namespace: str = NAMESPACE) -> None:
        self._stats = stats
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(f"{self._namespace}_transport_received",
                                       "zerorpc events received by an endpoint's receiving loop", labels=["endpoint"])
        dropped = CounterMetricFamily(
            f"{self._namespace}_transport_dropped",
            "events an endpoint threw away, by reason: malformed, unknown_channel (a late heartbeat or reply), "
            "foreign_channel, duplicate_message_id, channel_full, unroutable, error (a bug of ours)",
            labels=["endpoint", "reason"])
        restarts = CounterMetricFamily(f"{self._namespace}_serving_loop_restarts",
                                       "times a serving loop died and was restarted, by endpoint and loop "
                                       "(dispatcher, acceptor)", labels=["endpoint", "loop"])
        for stats in self._stats:
            received.add_metric([stats.name], stats.received)
            for reason in dict.fromkeys((*DROP_REASONS, *stats.dropped)):
                dropped.add_metric([stats.name, reason], stats.dropped[reason])
            for loop in dict.fromkeys((*LOOPS, *stats.loop_restarts)):
                restarts.add_metric([stats.name, loop], stats.loop_restarts[loop])
        yield from (received, dropped, restarts)
