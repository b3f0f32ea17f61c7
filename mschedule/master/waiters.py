"""Every long poll's wake-up, by key: ``wait(key, seconds)`` and ``release(key)``.

The master's long polls (an agent's ``get_task`` and ``watch_cancel``, the web tier's ``?wait=``) block on
a gevent Event each. Kept in dicts filled at each call site, those Events outlived what they waited for
(one per task that ever had a cancel watcher, until a cancel that never came). Here an Event exists only
while someone waits on its key: the first waiter creates it, the last one to leave (woken, timed out or
killed) removes it, so a registry with nobody waiting is empty whatever happened. ``release`` wakes every
waiter of a key at once and forgets the key; a later ``wait`` on it starts afresh.

All of it runs in the master's single gevent thread: between a caller's check of the state it waits for
and its ``wait`` nothing else runs, so a release cannot slip in between.
"""
from __future__ import annotations

from collections.abc import Hashable

import gevent.event


class _Slot:
    """One key's Event and how many greenlets wait on it."""

    __slots__ = ("event", "count")

    def __init__(self) -> None:
        self.event = gevent.event.Event()
        self.count = 0


class Waiters:
    """Events by key, each held only while at least one greenlet waits on it."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot] = {}

    def wait(self, key: Hashable, seconds: float) -> bool:
        """Block until ``release(key)`` or ``seconds`` pass. Returns whether it was released.

        ``seconds <= 0`` returns False at once, without yielding and without registering anything.
        """
        if seconds <= 0:
            return False
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.count += 1
        try:
            return bool(slot.event.wait(seconds))
        finally:
            slot.count -= 1
            if slot.count == 0 and self._slots.get(key) is slot:
                del self._slots[key]  # the last waiter left before any release: forget the key

    def release(self, key: Hashable) -> int:
        """Wake every waiter of ``key`` and forget it. Returns how many were waiting (0: nothing to do)."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return 0
        slot.event.set()
        return slot.count

    def waiting(self, key: Hashable) -> int:
        """How many greenlets wait on ``key`` now."""
        slot = self._slots.get(key)
        return slot.count if slot is not None else 0

    def __len__(self) -> int:
        """How many keys have someone waiting (0 when no long poll is open)."""
        return len(self._slots)
