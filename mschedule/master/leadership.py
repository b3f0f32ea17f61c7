"""Which master of a cluster serves: the one whose PostgreSQL session holds the leader lock, while it is sure of it.

Every master started on the same PostgreSQL database tries ``pg_try_advisory_lock`` (mschedule/master/
postgres_storage.py); the one that gets it leads: it loads the state, binds its endpoints and serves. The
others stand by without listening, trying for the lock every second, so a standby is never mistaken for the
leader by a client, old agents included: to every client it looks like a master that is down, and clients that
know several endpoints (``--master tcp://m1:9000,tcp://m2:9000``) reach whichever one listens.

PostgreSQL releases the lock when the leader's session ends: at once when the process dies (its connection
closes), and after the lease (``--leader-lease``, the session's idle timeout) when the master stops talking to
it (frozen, hung, cut off). The leader must stop serving before that can happen, and it can know when without
asking the database: the server cannot end the session for idleness earlier than the lease after the newest
statement that succeeded was *sent* (``PostgresStorage.last_contact``). So the leader serves while

    now < last_contact + lease - margin

by :func:`lease_clock` (Linux's CLOCK_BOOTTIME: it keeps counting while a process is stopped, and while its host
is suspended, which the monotonic clock does not). This is checked on every message the
endpoints receive and on every reply they send (:meth:`Leadership.serving` is their gate), so a leader resumed
after a SIGSTOP longer than its lease answers nothing, not even what was queued for it, before a greenlet of
its own has run; and its session's writes fail, the session being gone. A watchdog then exits the process
(``EXIT_NOT_LEADING``): its memory is no longer the truth, and its supervisor (systemd ``Restart=on-failure``)
starts it again as a standby. A round trip every lease / 5 keeps the lease fresh while nothing else is written.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from mschedule.master.storage import StorageError

if TYPE_CHECKING:  # psycopg is imported only by a master on PostgreSQL
    from mschedule.master.postgres_storage import PostgresStorage

log = logging.getLogger(__name__)

EXIT_NOT_LEADING = 75
"""The exit code of a master that stopped leading (EX_TEMPFAIL: its supervisor restarts it, as a standby)."""

BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)
"""Linux's clock that also counts the time the host was suspended (None elsewhere)."""


def lease_clock() -> float:
    """Seconds on a clock that counts every second the database's clock counts: through a SIGSTOP and through a
    suspend of the host (CLOCK_BOOTTIME), where the monotonic clock stops; the monotonic clock elsewhere."""
    return time.clock_gettime(BOOTTIME) if BOOTTIME is not None else time.monotonic()


CHECK_EVERY = 0.2
"""Seconds between two looks of the watchdog at the lease."""


class Leadership:
    """The leader's lease on its database session, and the gate of its endpoints."""

    def __init__(self, storage: PostgresStorage, on_lost: Callable[[str], None] | None = None) -> None:
        """``on_lost(why)`` is called once when the lease is lost (the master server exits there)."""
        self.storage = storage
        self.lease = storage.lease
        #: slack for the two clocks' rates and for scheduling: the gate closes this long before the server may act
        self.margin = max(0.5, self.lease * 0.2)
        self.on_lost = on_lost
        self.lost: str | None = None
        self._greenlets: list[gevent.Greenlet] = []

    def serving(self) -> bool:
        """Whether this master may still take a message or send a reply."""
        return self.lost is None and lease_clock() < self.storage.last_contact + self.lease - self.margin

    def start(self) -> None:
        """Renew and watch the lease from now on, after one round trip: the last one may be old (loading a large
        state is one long statement, and the lease counts from when a statement was sent)."""
        try:
            self.storage.ping()
        except StorageError as exc:
            self._lose(f"its database session failed ({exc})")
            return
        self._greenlets = [gevent.spawn(self._renew_forever), gevent.spawn(self._watch_forever)]

    def stop(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)

    def _renew_forever(self) -> None:
        while self.lost is None:
            try:
                self.storage.ping()
            except StorageError as exc:
                self._lose(f"its database session failed ({exc})")
                return
            gevent.sleep(self.lease / 5)

    def _watch_forever(self) -> None:
        while self.lost is None:
            if not self.serving():
                silent = lease_clock() - self.storage.last_contact
                self._lose(f"no round trip to the database for {silent:.1f}s, and PostgreSQL ends a session silent "
                           f"for {self.lease:g}s (--leader-lease), which frees the leader lock for a standby")
                return
            gevent.sleep(CHECK_EVERY)

    def _lose(self, why: str) -> None:
        if self.lost is not None:
            return
        self.lost = why
        self.storage.fence()
        log.critical("this master no longer leads: %s; it stops serving now and exits (code %d) so that its "
                     "supervisor starts it again as a standby", why, EXIT_NOT_LEADING)
        if self.on_lost is not None:
            self.on_lost(why)
