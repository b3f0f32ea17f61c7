"""The web tier's Prometheus metrics (docs/metrics.md): request latency by route and status, and its process.

Each app has its own registry (:class:`WebMetrics`); ``GET /metrics`` serves its text followed by the
master's (the admin RPC ``metrics``). Every name here starts with ``mschedule_web_``, every name of the
master's with ``mschedule_master_``, so the two texts never define one metric twice.

The ``route`` label is the route's canonical path (``/task/{task_id}``), never the raw one, so task ids and
agent ids do not become series; a request no route matches is ``unmatched``, a method outside HTTP's usual
ones ``other``: nothing a client sends can grow the label set.
"""
from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# A ``*_created`` series per histogram doubles what Prometheus stores, for nothing it needs.
disable_created_metrics()

NAMESPACE = "mschedule_web"
UNMATCHED = "unmatched"
"""The ``route`` label of a request that matched no route (a 404, or a 405 on a path of another method)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CLIENT_GONE = "499"
"""The ``status`` label of a request whose client went away before its answer (nginx's convention)."""


class WebMetrics:
    """One web app's registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "request_duration_seconds", "seconds from a request's arrival to its answer, by method, route (its "
            "canonical path, /task/{task_id}) and status; a long poll's wait (up to 60 s) is part of it",
            ("method", "route", "status"), namespace=NAMESPACE, registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90))
        self.master_up = Gauge("master_up", "1 when the master answered the metrics call of the last GET /metrics, "
                               "0 when it did not (its metrics are then missing from the answer)",
                               namespace=NAMESPACE, registry=self.registry)
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)

    def observe(self, request: web.Request, status: int | str, seconds: float) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        self.requests.labels(method, route, str(status)).observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


METRICS = web.AppKey("metrics", WebMetrics)


@web.middleware
async def measure(request: web.Request, handler) -> web.StreamResponse:
    """Time every request to its answer, with the status it got (the outermost middleware: a 401 counts too)."""
    start = time.perf_counter()
    status: int | str = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # what the JSON error middleware lets through (a redirect)
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        request.app[METRICS].observe(request, status, time.perf_counter() - start)
