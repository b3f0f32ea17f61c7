"""asyncio -> master calls through one gevent thread.

zerorpc is gevent-based and its sockets belong to the hub of the thread that made them. The web tier
runs one daemon thread with a gevent hub and a single :class:`MasterLink`; coroutines hand it calls
with ``run_callback_threadsafe`` and get the answer back on their own loop through a future. The asyncio
loop never blocks, and hundreds of concurrent long polls cost one greenlet each, not one thread each
(see shared/ZERORPC-NOTES.md: faster and steadier than a thread pool of clients).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from mschedule.utils.defaults import RPC_TIMEOUT

log = logging.getLogger(__name__)


class MasterBridge:
    """Runs master calls in a gevent thread and awaits them from asyncio."""

    def __init__(self, endpoint: str, timeout: float = RPC_TIMEOUT, curve=None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        #: mschedule.transport.CurveClientKeys for the admin endpoint, or None (--insecure)
        self.curve = curve
        self._hub = None
        self._link = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="master-bridge", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("master bridge thread did not start")

    def _thread_main(self) -> None:
        import gevent

        from mschedule.transport import MasterLink

        self._hub = gevent.get_hub()
        self._link = MasterLink(self.endpoint, timeout=self.timeout, curve=self.curve)
        self._ready.set()
        # a hub with no active watcher exits its loop (LoopExit); a periodic wake keeps it serving
        while not self._stopping.is_set():
            gevent.sleep(0.5)
        self._link.close()

    async def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the master; raises what the zerorpc call raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def run() -> None:
            try:
                value = self._link.call(method, *args, timeout=timeout or self.timeout)
            except BaseException as exc:  # noqa: B036 - handed to the awaiting coroutine, not swallowed
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, value, None)

        def start() -> None:
            import gevent

            gevent.spawn(run)

        self._hub.loop.run_callback_threadsafe(start)
        return await future

    def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():  # the HTTP request went away and cancelled its await
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
