"""Serving loops that cannot die quietly: restarted when they fail, given up on (loudly) when they keep failing."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import gevent

from mschedule.transport.stats import TransportStats

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
"""Restarts of one loop within RESTART_WINDOW after which it is beyond repair."""
RESTART_WINDOW = 60.0


class LoopGaveUp(RuntimeError):
    """A serving loop kept dying: the process must not live on deaf."""


def supervise(name: str, loop: Callable[[], None], stats: TransportStats,
              on_giveup: Callable[[str], None] | None = None) -> None:
    """Run ``loop`` (which serves forever) and restart it whenever it raises or returns.

    Each death is logged at ERROR with its traceback and counted in ``stats.loop_restarts[name]``. After
    more than MAX_RESTARTS deaths within RESTART_WINDOW seconds ``on_giveup(name)`` is called (a server
    makes its process exit non-zero, so a supervisor such as systemd restarts it); without one,
    :class:`LoopGaveUp` is raised.
    """
    deaths: deque[float] = deque()
    while True:
        try:
            loop()
            log.error("%s: serving loop %s returned; restarting it", stats.name, name)
        except (gevent.GreenletExit, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # anything else that kills the loop is a reason to restart it
            log.error("%s: serving loop %s died; restarting it", stats.name, name, exc_info=True)
        stats.loop_restarts[name] += 1
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            log.critical("%s: serving loop %s died %d times in %.0fs: giving up", stats.name, name, len(deaths),
                         RESTART_WINDOW)
            if on_giveup is None:
                raise LoopGaveUp(f"{stats.name}: serving loop {name} keeps dying")
            on_giveup(f"{stats.name} {name}")
            return
        gevent.sleep(min(0.05 * 2 ** len(deaths), 1.0))
