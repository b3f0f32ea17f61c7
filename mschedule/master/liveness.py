"""How often agents heartbeat and when one counts as gone: one rule, stretched with the fleet.

A master answers every heartbeat; at a fixed interval its cost grows with the fleet (2,000 agents every 3 s
cost a quarter of a core). As Nomad does, the interval stretches so that the whole fleet sends at most
``max_rate`` heartbeats a second, and the offline deadline stretches with it:

    interval(N) = max(base, N / max_rate) * (1 + jitter(agent))     jitter in [0, JITTER)
    deadline    = agent_timeout * told / base                          told: the interval last given
    poll(N)     = min(MAX_POLL_WAIT, poll_base * interval / base)

so liveness is detected within the same number of missed heartbeats at any size. The per-agent jitter
(from the agent id, so stable) spreads a fleet's heartbeats that would otherwise line up after a restart.
The deadline uses the interval each agent was last told, so a fleet that shrinks does not declare agents
offline that were told to wait longer.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from mschedule.utils.defaults import (
    DEFAULT_AGENT_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_HEARTBEAT_RATE,
    DEFAULT_POLL_WAIT,
    MAX_POLL_WAIT,
)

JITTER = 0.1
"""Most extra share of the interval an agent is given, by its id."""


@dataclass(frozen=True)
class HeartbeatPolicy:
    """The rule above with a master's settings."""

    base: float = DEFAULT_HEARTBEAT_INTERVAL
    max_rate: float = DEFAULT_MAX_HEARTBEAT_RATE
    agent_timeout: float = DEFAULT_AGENT_TIMEOUT
    poll_base: float = DEFAULT_POLL_WAIT

    def fleet_interval(self, online: int) -> float:
        """Seconds between two heartbeats of each agent for a fleet of ``online`` agents (before jitter)."""
        return max(self.base, online / self.max_rate)

    def interval(self, online: int, agent_id: str) -> float:
        """The interval to give ``agent_id``: the fleet's, plus its own share of jitter."""
        share = (zlib.crc32(agent_id.encode()) % 1000) / 1000 * JITTER
        return round(self.fleet_interval(online) * (1 + share), 3)

    def deadline(self, told: float) -> float:
        """Seconds of silence after which an agent last told ``told`` is offline."""
        return self.agent_timeout * max(told, self.base) / self.base

    def poll(self, told: float) -> float:
        """Seconds a long poll of an agent told ``told`` waits on the master."""
        return round(min(MAX_POLL_WAIT, self.poll_base * max(told, self.base) / self.base), 3)

    def detection_time(self, online: int) -> float:
        """Worst case, seconds from an agent's death to its targets failing, for a fleet of ``online``."""
        return self.deadline(self.fleet_interval(online) * (1 + JITTER))
