"""The master process: one zerorpc server, the scheduler behind it, and a housekeeping loop."""
from __future__ import annotations

import logging
import signal
import time
from typing import Any

import gevent
import zmq

from master.handler import Handler
from master.scheduler import Scheduler
from master.storage import Storage
from utils import messages
from utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, RPC_HEARTBEAT
from utils.rpc import QuietServer

log = logging.getLogger(__name__)

MIN_MESSAGE_LIMIT = 8 * 1024 * 1024
"""Bytes: the smallest limit on one RPC message the master accepts (results carry up to 1 MiB of output)."""

FLUSH_INTERVAL = 0.2
"""Seconds between two commits of changes nobody waits for (heartbeats, offline agents)."""


def answer_inline(method: str, args: Any) -> bool:
    """Calls that never block, answered without zerorpc's per-call greenlets (see QuietServer):
    pings, and the heartbeats and registrations that are most of an idle master's traffic.
    Results are not among them: their ack waits for a commit."""
    if method == "ping":
        return True
    return (method == "send" and len(args) == 1 and isinstance(args[0], dict)
            and args[0].get("type") in (messages.HEARTBEAT, messages.REGISTER))

HOUSEKEEPING_INTERVAL = 0.5
"""Seconds between two checks for silent agents."""


class MasterServer:
    """Binds the RPC endpoint and runs until stopped."""

    def __init__(self, bind: str, agent_timeout: float, storage: Storage | None = None,
                 max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES) -> None:
        self.bind_endpoint = bind
        # room for the largest script or output (base64: 4/3) plus the message around it
        self.max_message_bytes = max(MIN_MESSAGE_LIMIT, 2 * max_script_bytes + 1024 * 1024)
        self.storage = storage or Storage()
        self.scheduler = Scheduler(self.storage, agent_timeout)
        self.scheduler.restore()
        self.handler = Handler(self.scheduler, max_script_bytes=max_script_bytes)
        self._server = QuietServer(self.handler, inline=answer_inline, heartbeat=RPC_HEARTBEAT)
        self._housekeeper: gevent.Greenlet | None = None

    def bind(self) -> None:
        """Bind the endpoint.

        Raises:
            zmq.ZMQError: the address is in use or invalid.
        """
        socket = self._server._events._socket
        socket.linger = 0
        # a peer sending a larger message is disconnected by zmq before it costs memory
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        for endpoint in self.bind_endpoint.split(","):
            self._server.bind(endpoint.strip())
        log.info("master listening on %s (agent timeout %.1fs)", self.bind_endpoint, self.scheduler.agent_timeout)

    def _housekeeping(self) -> None:
        last_flush = time.monotonic()
        while True:
            gevent.sleep(min(HOUSEKEEPING_INTERVAL, FLUSH_INTERVAL))
            try:
                self.scheduler.check_agents()
                if time.monotonic() - last_flush >= FLUSH_INTERVAL:
                    last_flush = time.monotonic()
                    self.storage.flush()
            except Exception:  # a failed check or commit must not stop housekeeping for good
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
        self.storage.close()
