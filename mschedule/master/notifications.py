"""Webhooks: when a task ends, a signed POST of its summary to each ``notify`` URL that asked for its state.

- The deliveries are made when the task ends, in the task's own record (``task.notifications``), so they are
  committed with its end: a master that dies after is still owed them, and sends them after its restart. None
  is started before everything saved so far is committed, so no receiver hears of an end that never was.
- Each attempt is recorded (attempts, last status, last error); a failure (no answer within
  ``TIMEOUT``, a connection refused, a status other than 2xx: redirects are not followed) is retried after
  ``retry_base`` seconds, doubling up to ``MAX_BACKOFF``, until ``retry_for`` seconds after the first attempt;
  then the delivery is ``failed``. Delivery is at least once: the receiver dedupes on ``X-Mschedule-Delivery``.
- The body is signed: ``X-Mschedule-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the secret of
  ``--webhook-secret-file``.
- Nothing waits for a receiver on the master's loop: requests run on a pool of threads, at most two at a time
  per receiver (scheme, host and port), so a slow or dead receiver holds two threads and delays only its own
  deliveries.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from enum import StrEnum
from urllib.parse import urlsplit

import gevent
import gevent.event
from gevent.threadpool import ThreadPool

from mschedule import __version__
from mschedule.master import metrics
from mschedule.master.storage import Storage, StorageError, TaskRecord
from mschedule.utils.statedir import tighten, write_private

log = logging.getLogger(__name__)

TIMEOUT = 10.0
"""Seconds one attempt may take (connect, send, answer)."""
THREADS = 8
"""Deliveries in flight at once."""
PER_RECEIVER = 2
"""Deliveries in flight at once to one receiver (scheme, host and port, whatever the path): a slow receiver holds
at most this many threads, and the others go on."""
DEFAULT_RETRY_BASE = 10.0
DEFAULT_RETRY_FOR = 3600.0
MAX_BACKOFF = 600.0
MAX_ERROR = 300
"""Characters of an attempt's error kept in the record."""


class Delivery(StrEnum):
    """A delivery's state, in ``task.notifications[i]["state"]``."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def load_secret(path: str) -> bytes:
    """The signing secret in ``path`` (its first line), created (0600, 32 random bytes as hex) if missing."""
    if not os.path.exists(path):  # the master says where it is once it listens (MasterServer.bind)
        write_private(path, secrets.token_hex(32).encode() + b"\n", fsync=True)
    tighten(path)
    with open(path, "rb") as f:
        secret = f.readline().strip()
    if not secret:
        raise ValueError(f"{path} is empty: it must hold the webhook signing secret")
    return secret


def _receiver(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 3xx is an answer, not a new address to POST to
        return None


#: the sockets the attempt running on this thread opened, for its deadline to shut them down
_attempt = threading.local()


_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")
"""Where receivers' names are looked up: a lookup is one blocking call that no socket timeout bounds (the
resolver's own retries can take half a minute), so the attempt waits for it only until its deadline."""


def _lookup(host: str, port: int) -> list[tuple]:
    """The addresses of ``host``, looked up within what is left of the attempt's deadline.

    Raises:
        OSError: the name is unknown, or its lookup outlasted the deadline.
    """
    remaining = _attempt.deadline - time.monotonic()
    lookup = _LOOKUPS.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=max(0.0, remaining))
    except FutureTimeout:
        raise TimeoutError(f"the lookup of {host} took longer than the attempt's deadline") from None


def _tracked_connection(address, timeout: float | None = None, source_address=None) -> socket.socket:
    """http.client's connect, to the addresses of a bounded lookup (TLS still checks the name the URL has)."""
    host, port = address
    error: OSError | None = None
    for *_, sockaddr in _lookup(host, port):
        try:
            sock = socket.create_connection(sockaddr[:2], timeout, source_address)
        except OSError as exc:
            error = exc
            continue
        _attempt.sockets.append(sock)
        return sock
    raise error or OSError(f"{host} has no address")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _tracked_connection


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _tracked_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


_OPENER = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)


def _shut(sockets: list[socket.socket], expired: threading.Event) -> None:
    expired.set()
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a read blocked on it returns at once
        except OSError:
            pass


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
    """One attempt (blocking: run it on a thread): ``(status, error)``; error None for a 2xx.

    ``timeout`` bounds the whole attempt, not each read: a receiver that trickles its answer a byte at a time
    would otherwise hold the attempt (and one of the threads) as long as it likes.
    """
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    _attempt.sockets = sockets = []
    _attempt.deadline = time.monotonic() + timeout
    expired = threading.Event()
    deadline = threading.Timer(timeout, _shut, (sockets, expired))
    deadline.daemon = True
    deadline.start()
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
            status = answer.status
        error = None
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: an answer that is not HTTP (a bad status line, a header too long, a broken chunk)
        status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    finally:
        deadline.cancel()
        _attempt.sockets = []
    if expired.is_set():  # cut short: whatever was read of it, not an answer (a retry is at least once)
        status, error = None, f"TimeoutError: no complete answer within {timeout:g}s"
    return status, error


class Notifications:
    """Makes a task's deliveries when it ends (:meth:`task_ended`) and sends them (:meth:`run`)."""

    def __init__(self, storage: Storage, secret: bytes, public_url: str | None = None,
                 retry_base: float = DEFAULT_RETRY_BASE, retry_for: float = DEFAULT_RETRY_FOR,
                 clock: Callable[[], float] = time.time,
                 send: Callable[[str, bytes, dict[str, str]], tuple[int | None, str | None]] = post) -> None:
        self.storage = storage
        self.secret = secret
        self.public_url = public_url.rstrip("/") if public_url else None
        self.retry_base = retry_base
        self.retry_for = retry_for
        self.clock = clock
        self._send = send
        self._pool = ThreadPool(THREADS)
        self._wake = gevent.event.Event()
        #: tasks with a delivery still pending (found again at start: they are in the tasks' records)
        self._owed: dict[str, None] = {t.id: None for t in storage.tasks.values()
                                       if any(n["state"] == Delivery.PENDING for n in t.notifications)}
        #: requests in flight per receiver (scheme, host and port)
        self._busy: Counter[str] = Counter()
        #: ids of the deliveries being attempted now
        self._sending: set[str] = set()
        #: why the deliveries due wait (a commit failed), said once
        self._held: str | None = None

    def task_ended(self, task: TaskRecord) -> None:
        """Make the deliveries the task's ``notify`` asks for its end state (saved with the task's end)."""
        now = self.clock()
        for entry in task.notify:
            if task.state.value in entry["on"]:
                task.notifications.append({"id": uuid.uuid4().hex, "url": entry["url"], "on": entry["on"],
                                           "state": Delivery.PENDING, "attempts": 0, "last_status": None,
                                           "last_error": None, "next_attempt": now, "first_attempt": None,
                                           "delivered": None})
        if task.notifications:
            self._owed[task.id] = None
            self._wake.set()

    def run(self) -> None:
        """The delivery loop (a greenlet of the master)."""
        while True:
            try:
                wake = self._start_due()
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad record
                log.exception("notifications: delivery loop failed; going on")
                wake = 1.0
            self._wake.clear()
            self._wake.wait(timeout=max(0.05, min(wake, 1.0)))

    def _start_due(self) -> float:
        now = self.clock()
        soonest = float("inf")
        due: list[tuple[TaskRecord, dict, str]] = []
        for task_id in list(self._owed):
            task = self.storage.tasks.get(task_id)
            pending = [n for n in task.notifications if n["state"] == Delivery.PENDING] if task else []
            if not pending:
                self._owed.pop(task_id, None)
                continue
            for delivery in pending:
                receiver = _receiver(delivery["url"])
                if self._busy[receiver] >= PER_RECEIVER or delivery["id"] in self._sending:
                    continue
                if delivery["next_attempt"] <= now:
                    due.append((task, delivery, receiver))
                    self._busy[receiver] += 1  # counted now: a receiver gets at most PER_RECEIVER of them
                else:
                    soonest = min(soonest, delivery["next_attempt"] - now)
        if not due:
            return soonest
        # a task's end is saved when it happens and committed a moment later: tell no receiver of an end that may
        # never be committed (the database failing, or a master that no longer leads and whose successor has
        # no such end: it ends the task again, with deliveries of other ids the receiver could not dedupe)
        try:
            self.storage.flush()
        except StorageError as exc:
            if str(exc) != self._held:  # once per cause, not every second
                self._held = str(exc)
                log.warning("notifications: deliveries wait until the ends they tell of are committed (%s)", exc)
            for _, _, receiver in due:
                self._busy[receiver] -= 1
            return 1.0
        self._held = None
        for task, delivery, receiver in due:
            self._sending.add(delivery["id"])
            gevent.spawn(self._attempt, task, delivery, receiver)
        return soonest

    def body(self, task: TaskRecord, delivery: dict) -> bytes:
        summary = task.summary()
        payload = {"event": "task.finished", "delivery": delivery["id"], "sent": self.clock(),
                   **{k: summary[k] for k in ("task_id", "state", "counts", "total", "job", "job_version",
                                              "schedule_id", "schedule_tick", "created", "started", "finished",
                                              "retry_of")},
                   "url": f"{self.public_url}/#/task/{task.id}" if self.public_url else None}
        return json.dumps(payload, sort_keys=True).encode()

    def _attempt(self, task: TaskRecord, delivery: dict, receiver: str) -> None:
        try:
            body = self.body(task, delivery)
            headers = {"Content-Type": "application/json", "User-Agent": f"mschedule/{__version__}",
                       "X-Mschedule-Event": "task.finished", "X-Mschedule-Delivery": delivery["id"],
                       "X-Mschedule-Attempt": str(delivery["attempts"] + 1),
                       "X-Mschedule-Signature": sign(self.secret, body)}
            start = self.clock()
            try:
                status, error = self._pool.apply(self._send, (delivery["url"], body, headers))
            except Exception as exc:  # noqa: BLE001 - an attempt not recorded would be retried at once, forever
                log.exception("task %s: notification to %s: the attempt raised", task.id, delivery["url"])
                status, error = None, f"{type(exc).__name__}: {exc}"
            self._record(task, delivery, start, status, error)
        finally:
            self._sending.discard(delivery["id"])
            self._busy[receiver] -= 1
            self._wake.set()

    def _record(self, task: TaskRecord, delivery: dict, start: float, status: int | None, error: str | None) -> None:
        now = self.clock()
        delivery["attempts"] += 1
        delivery["first_attempt"] = delivery["first_attempt"] or start
        delivery["last_status"], delivery["last_error"] = status, (error[:MAX_ERROR] if error else None)
        metrics.webhook_attempted(error is None)
        if error is None:
            delivery["state"], delivery["delivered"], delivery["next_attempt"] = Delivery.DELIVERED, now, None
            log.info("task %s: notification to %s delivered (HTTP %s, attempt %d)", task.id, delivery["url"],
                     status, delivery["attempts"])
        elif now - delivery["first_attempt"] >= self.retry_for:
            delivery["state"], delivery["next_attempt"] = Delivery.FAILED, None
            log.warning("task %s: notification to %s failed for good after %d attempts: %s", task.id,
                        delivery["url"], delivery["attempts"], error)
        else:
            delivery["next_attempt"] = now + min(MAX_BACKOFF, self.retry_base * 2 ** (delivery["attempts"] - 1))
            log.warning("task %s: notification to %s failed (attempt %d: %s); next in %.0fs", task.id,
                        delivery["url"], delivery["attempts"], error, delivery["next_attempt"] - now)
        if task.id in self.storage.tasks:  # not pruned meanwhile
            self.storage.save_task(task)

    def close(self) -> None:
        self._pool.kill()
