"""The master process: one zerorpc server, the scheduler behind it, and a housekeeping loop."""
from __future__ import annotations

import logging
import signal

import gevent
import zmq

from master.handler import Handler
from master.scheduler import Scheduler
from master.storage import Storage
from utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, RPC_HEARTBEAT
from utils.rpc import QuietServer

log = logging.getLogger(__name__)

INLINE_METHODS = frozenset({"send", "ping"})
"""RPC methods that never block, answered without zerorpc's per-call greenlets (see QuietServer)."""

HOUSEKEEPING_INTERVAL = 0.5
"""Seconds between two checks for silent agents."""


class MasterServer:
    """Binds the RPC endpoint and runs until stopped."""

    def __init__(self, bind: str, agent_timeout: float, storage: Storage | None = None,
                 max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES) -> None:
        self.bind_endpoint = bind
        self.scheduler = Scheduler(storage or Storage(), agent_timeout)
        self.handler = Handler(self.scheduler, max_script_bytes=max_script_bytes)
        self._server = QuietServer(self.handler, inline=INLINE_METHODS, heartbeat=RPC_HEARTBEAT)
        self._housekeeper: gevent.Greenlet | None = None

    def bind(self) -> None:
        """Bind the endpoint.

        Raises:
            zmq.ZMQError: the address is in use or invalid.
        """
        self._server._events._socket.linger = 0
        self._server.bind(self.bind_endpoint)
        log.info("master listening on %s (agent timeout %.1fs)", self.bind_endpoint, self.scheduler.agent_timeout)

    def _housekeeping(self) -> None:
        while True:
            gevent.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self.scheduler.check_agents()
            except Exception:  # one bad record must not stop liveness checks for good
                log.exception("housekeeping failed")

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM."""
        self._housekeeper = gevent.spawn(self._housekeeping)
        gevent.signal_handler(signal.SIGTERM, self.stop)
        gevent.signal_handler(signal.SIGINT, self.stop)
        try:
            self._server.run()
        except gevent.GreenletExit:
            pass
        finally:
            self.close()

    def stop(self) -> None:
        """Stop serving; calls in progress (long polls included) are cut short."""
        log.info("master stopping")
        self._server._task_pool.kill(block=False)
        self._server.stop()

    def close(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.kill(block=False)
            self._housekeeper = None
        try:
            self._server.close()
        except zmq.ZMQError:
            log.debug("error closing server socket", exc_info=True)
