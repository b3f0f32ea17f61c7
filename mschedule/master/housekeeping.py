"""The master's periodic chores: silent agents, retention, commits; and noticing its own stalls.

A master that was not running for a while (SIGSTOP, a host suspended, a VM paused, minutes of swapping) or
whose wall clock jumped must not blame its agents: their heartbeats are waiting, unread, in its sockets,
and their scripts went on. Each tick compares the time since the last tick on the monotonic clock (which
stops while the host is suspended) and on the wall clock (which agents' heartbeat stamps use):

- a gap longer than ``agent_timeout`` (a real stall) gives every online agent the grace a restart gives:
  a full deadline from now, stretched for a large fleet (Scheduler.grace_online_agents);
- a shorter gap beyond the tick's own period (an overloaded moment) moves every heartbeat forward by the
  excess, so liveness is measured in time the master was awake, and an agent that really went silent
  still ages;
- a wall clock that moved differently from the monotonic one (NTP step, manual change, suspend) moves
  every heartbeat by the difference.

These corrections come before each sweep for silent agents, so a sweep never counts time in which the
master could not read the heartbeats queued for it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage

log = logging.getLogger(__name__)

TICK = 0.2
"""Seconds between two ticks."""

FLUSH_INTERVAL = 0.2
"""Seconds between two commits of changes nobody waits for (heartbeats, offline agents)."""

PRUNE_INTERVAL = 10.0
"""Seconds between two applications of the retention limits."""

LATE_TICK = 1.0
"""Seconds a tick may come late before the master counts the delay as time it was not running."""

FAILURE_LOG_EVERY = 10.0
"""Seconds between two log lines while housekeeping keeps failing (a full disk fails every commit)."""

CLOCK_JUMP = 1.0
"""Seconds of difference between the wall and the monotonic clock over one tick that count as a jump."""


@dataclass
class Retention:
    keep_tasks: int | None = None
    keep_days: float | None = None
    #: the audit trail's own (task retention never touches it)
    keep_audit_days: float | None = None

    @property
    def active(self) -> bool:
        return self.keep_tasks is not None or bool(self.keep_days) or bool(self.keep_audit_days)


class Housekeeper:
    """Runs :meth:`tick` every TICK seconds in a greenlet of its own; the clocks can be replaced in tests."""

    def __init__(self, scheduler: Scheduler, storage: Storage, retention: Retention | None = None,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.scheduler = scheduler
        self.storage = storage
        self.retention = retention or Retention()
        self._monotonic, self._wall = monotonic, wall
        self._last_tick = self._last_flush = self._last_prune = monotonic()
        self._last_wall = wall()
        #: how often a stall or clock jump was noticed
        self.stalls = 0
        self.clock_jumps = 0

    def run(self) -> None:
        failing_since, failures = None, 0
        while True:
            gevent.sleep(TICK)
            try:
                self.tick()
            except Exception as exc:  # a failed check or commit must not stop housekeeping for good
                failures += 1
                now = self._monotonic()
                if failing_since is None:  # the traceback once, then a line per FAILURE_LOG_EVERY
                    log.exception("housekeeping failed")
                    failing_since = now
                elif now - failing_since >= FAILURE_LOG_EVERY:
                    log.error("housekeeping still failing (%d times in %.0fs): %s", failures, now - failing_since,
                              exc)
                    failing_since, failures = now, 0
            else:
                if failing_since is not None:
                    log.warning("housekeeping works again")
                failing_since, failures = None, 0

    def tick(self) -> None:
        now, wall = self._monotonic(), self._wall()
        gap, wall_gap = now - self._last_tick, wall - self._last_wall
        self._last_tick, self._last_wall = now, wall
        self._forgive(gap, wall_gap)
        self.scheduler.check_agents()
        if self.retention.active and now - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = now
            self.scheduler.prune(self.retention.keep_tasks, self.retention.keep_days)
            if self.retention.keep_audit_days:
                pruned = self.storage.prune_audit(self._wall() - self.retention.keep_audit_days * 86400)
                if pruned:
                    log.info("retention: %d audit records older than %g days pruned", pruned,
                             self.retention.keep_audit_days)
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._last_flush = now
            self.storage.flush()

    def _forgive(self, gap: float, wall_gap: float) -> None:
        """Make up for a stall or a clock jump since the last tick, before the sweep for silent agents."""
        jump = wall_gap - gap
        if abs(jump) > CLOCK_JUMP:
            self.clock_jumps += 1
            log.warning("the wall clock moved %+.1fs against the monotonic clock (clock step or host suspend): "
                        "agents' heartbeat ages are corrected by as much", jump)
            self.scheduler.shift_heartbeats(jump)
        agent_timeout = self.scheduler.agent_timeout
        if gap > agent_timeout:
            self.stalls += 1
            log.warning("the master did not run for %.1fs (stopped, suspended or starved): every online agent "
                        "gets the grace of a restart", gap)
            self.scheduler.grace_online_agents()
        elif gap > TICK + LATE_TICK:
            self.stalls += 1
            log.info("housekeeping ran %.1fs late: heartbeat ages are counted without that time", gap - TICK)
            self.scheduler.shift_heartbeats(gap - TICK)
