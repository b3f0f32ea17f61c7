"""Reconnect pacing for the agent."""
from __future__ import annotations

import random

from mschedule.utils.defaults import BACKOFF_BASE, BACKOFF_CAP


class Backoff:
    """Capped exponential backoff with jitter: a delay drawn from [c/2, c], c = min(cap, base * 2**n)."""

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
