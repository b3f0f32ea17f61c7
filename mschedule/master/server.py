"""The master process: the agents' endpoint, the admin endpoint, the scheduler behind both, housekeeping."""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import zerorpc
import zmq

from mschedule.master.admission import ADMIN_DOMAIN, AGENTS_DOMAIN, Admission, ZapHandler, set_current_key
from mschedule.master.handler import AdminHandler, AgentHandler
from mschedule.master.housekeeping import Housekeeper, Retention
from mschedule.master.leadership import EXIT_NOT_LEADING, Leadership, lease_clock
from mschedule.master.liveness import HeartbeatPolicy
from mschedule.master.metrics import MasterMetrics
from mschedule.master.notifications import DEFAULT_RETRY_BASE, DEFAULT_RETRY_FOR, Notifications, load_secret
from mschedule.master.scheduler import Scheduler
from mschedule.master.schedules import DEFAULT_GRACE, ScheduleClock
from mschedule.master.storage import Storage, StorageError
from mschedule.transport import TRANSPORT_ERRORS, CurveClientKeys, MasterLink, RpcServer, make_curve_server
from mschedule.transport.client import FOLLOW_RECONNECT_LATEST
from mschedule.utils import messages
from mschedule.utils.defaults import (
    DEFAULT_ADMIN_BIND,
    DEFAULT_AGENT_TIMEOUT,
    DEFAULT_BIND,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_HEARTBEAT_RATE,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MAX_SCRIPT_BYTES,
    DEFAULT_MAX_TARGETS,
    RPC_HEARTBEAT,
)
from mschedule.utils.keys import load_or_create_keypair

log = logging.getLogger(__name__)

MIN_MESSAGE_LIMIT = 8 * 1024 * 1024
"""Bytes: the smallest limit on one RPC message the master accepts (results carry up to 1 MiB of output)."""

LISTEN_BACKLOG = 4096
"""Connections waiting to be accepted per listening socket (the kernel caps it at net.core.somaxconn). zmq's
default of 100 made a fleet reconnecting to a restarted master lose SYNs: 3,000 agents took 42 s to get
back, in waves 1, 3, 7, 15 and 31 s apart (TCP's SYN retransmission schedule), and most were declared
offline on the way."""

AGENT_CALLS_PER_KEY = 16
"""Calls one agent key may have in progress on the agents' endpoint (an agent holds at most a long poll, a
cancel watch and a result or stop notice): more are refused, so no key can pin the master's memory with
thousands of open calls."""

WEBHOOK_SECRET_NAME = "webhook_secret_sha256"
"""Under this name the leader records its webhook secret's fingerprint in the cluster table."""


def webhook_fingerprint(secret: bytes) -> str:
    """What a cluster keeps of a webhook secret to compare: a SHA-256 of it, not the secret."""
    return hashlib.sha256(b"mschedule webhook secret\0" + secret).hexdigest()


PROBE_TIMEOUT = 1.0
"""Seconds the health check waits for its ping through the agents' endpoint."""
INLINE_MESSAGES = frozenset({messages.HEARTBEAT, messages.REGISTER, messages.PROGRESS})
"""The ``send`` messages :func:`answer_inline` takes: none of them waits for a commit."""


def answer_inline(method: str, args: Any) -> bool:
    """Calls that never block, answered without zerorpc's per-call greenlets (see RpcServer):
    pings, the heartbeats and registrations that are most of an idle master's traffic, and a running
    script's progress (kept in memory only). Results are not among them: their ack waits for a commit."""
    if method == "ping":
        return True
    return (method == "send" and len(args) == 1 and isinstance(args[0], dict)
            and args[0].get("type") in INLINE_MESSAGES)



def _local_endpoint(bound: str) -> str:
    """Where this host reaches an endpoint bound to ``bound`` (a wildcard address means loopback)."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if bound.startswith(wildcard):
            return "tcp://127.0.0.1:" + bound[len(wildcard):]
    if bound.startswith("tcp://[::]:"):
        return "tcp://[::1]:" + bound[len("tcp://[::]:"):]
    return bound


class ServingLoopDied(RuntimeError):
    """A serving loop of an endpoint could not be restored."""


class BindError(Exception):
    """An endpoint cannot be bound (in use, or not an address of this host)."""


@dataclass
class MasterKeys:
    """The master's CURVE key pair and the admin credential (a client key pair for the web tier and
    the ``keys`` command), kept in ``<state-dir>/keys/``."""

    directory: str
    public: bytes
    secret: bytes
    admin_public: bytes
    admin_secret: bytes

    @classmethod
    def load_or_create(cls, state_dir: str) -> MasterKeys:
        directory = os.path.join(state_dir, "keys")
        public, secret = load_or_create_keypair(directory, "master")
        admin_public, admin_secret = load_or_create_keypair(directory, "admin")
        return cls(directory, public, secret, admin_public, admin_secret)

    @property
    def public_path(self) -> str:
        return os.path.join(self.directory, "master.key")

    @property
    def admin_secret_path(self) -> str:
        return os.path.join(self.directory, "admin.key_secret")


@dataclass
class MasterSettings:
    """What an operator sets for a master (appserver.py's flags)."""

    bind: str = DEFAULT_BIND
    admin_bind: str = DEFAULT_ADMIN_BIND
    agent_timeout: float = DEFAULT_AGENT_TIMEOUT
    #: the heartbeat interval agents are given for a small fleet, and the most heartbeats a second the whole
    #: fleet may send (mschedule/master/liveness.py)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    max_heartbeat_rate: float = DEFAULT_MAX_HEARTBEAT_RATE
    max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    max_targets: int = DEFAULT_MAX_TARGETS
    auto_accept: bool = False
    max_pending: int = DEFAULT_MAX_PENDING
    #: retention: keep at most this many tasks / prune finished tasks older than this many days
    keep_tasks: int | None = None
    keep_days: float | None = None
    #: schedules: how old a missed tick may be for catchup "last"; the tests' fast clock (schedules.py)
    schedule_grace: float = DEFAULT_GRACE
    schedule_clock: str | None = None
    #: webhooks: the signing secret's file (None: a secret of this process only), the console's address for
    #: links, and the retry rule (mschedule/master/notifications.py)
    webhook_secret_file: str | None = None
    public_url: str | None = None
    webhook_retry_base: float = DEFAULT_RETRY_BASE
    webhook_retry_for: float = DEFAULT_RETRY_FOR
    #: the audit trail's copy as JSON lines, and its retention (mschedule/master/audit.py)
    audit_log: str | None = None
    keep_audit_days: float | None = None


class MasterServer:
    """Binds both endpoints and runs until stopped. ``keys`` None means --insecure (plain TCP)."""

    def __init__(self, settings: MasterSettings, storage: Storage | None = None,
                 keys: MasterKeys | None = None, leadership: Leadership | None = None) -> None:
        """``leadership``: this master leads a cluster on PostgreSQL (its storage holds the leader lock); its lease
        is the gate of both endpoints, and the process exits when it is lost."""
        self.settings = settings
        self.leadership = leadership
        gate = leadership.serving if leadership is not None else None
        if leadership is not None:
            leadership.on_lost = self._not_leading
        self.bind_endpoint = settings.bind
        self.admin_endpoint = settings.admin_bind
        # room for the largest script or output (base64: 4/3) plus the message around it
        self.max_message_bytes = max(MIN_MESSAGE_LIMIT, 2 * settings.max_script_bytes + 1024 * 1024)
        self.storage = storage or Storage()
        self.keys = keys
        policy = HeartbeatPolicy(base=settings.heartbeat_interval, max_rate=settings.max_heartbeat_rate)
        self.scheduler = Scheduler(self.storage, settings.agent_timeout, policy=policy)
        secret = (load_secret(settings.webhook_secret_file) if settings.webhook_secret_file
                  else secrets.token_hex(32).encode())
        self.notifications = Notifications(self.storage, secret, settings.public_url,
                                           retry_base=settings.webhook_retry_base,
                                           retry_for=settings.webhook_retry_for)
        self.scheduler.on_finish = self.notifications.task_ended
        if leadership is not None:
            self._share_webhook_secret(secret)
        # a new leader of a cluster: its agents try a master that did not listen only every few seconds
        self.scheduler.restore(FOLLOW_RECONNECT_LATEST if leadership is not None else 0.0)
        self.housekeeper = Housekeeper(self.scheduler, self.storage, Retention(settings.keep_tasks, settings.keep_days,
                                                                                settings.keep_audit_days))
        self.admission = (Admission(self.storage, keys.admin_public, settings.auto_accept, settings.max_pending)
                          if keys else None)
        self._zap = ZapHandler(zerorpc.Context.get_instance(), self.admission) if self.admission else None
        self.metrics = MasterMetrics(self.storage, self.admission)
        self.agent_handler = AgentHandler(self.scheduler, self.admission)
        self.admin_handler = AdminHandler(self.scheduler, self.admission, max_script_bytes=settings.max_script_bytes,
                                          max_result_bytes=settings.max_result_bytes,
                                          max_targets=settings.max_targets,
                                          health=self.endpoints_health, metrics=self.metrics.text,
                                          schedule_clock=ScheduleClock.parse(settings.schedule_clock),
                                          schedule_grace=settings.schedule_grace, audit_log=settings.audit_log)
        self._agents = RpcServer(self.agent_handler, "agents", inline=answer_inline, peer_hook=set_current_key,
                                 on_giveup=self._give_up, max_calls_per_peer=AGENT_CALLS_PER_KEY,
                                 heartbeat=RPC_HEARTBEAT, gate=gate)
        self._admin = RpcServer(self.admin_handler, "admin", on_giveup=self._give_up, heartbeat=RPC_HEARTBEAT,
                                gate=gate)
        self.metrics.watch(self._agents.stats, self._admin.stats)
        self._housekeeper: gevent.Greenlet | None = None
        self._schedules: gevent.Greenlet | None = None
        self._notifier: gevent.Greenlet | None = None
        #: a client of our own agents' endpoint: /health is a real round trip through it, not a flag
        self._probe = MasterLink(_local_endpoint(settings.bind.split(",")[0].strip()), timeout=PROBE_TIMEOUT,
                                 curve=CurveClientKeys(keys.public, keys.admin_public, keys.admin_secret)
                                 if keys else None)
        #: set by stop() (None) or by a serving loop beyond repair (ServingLoopDied): run() returns or raises
        self._done = gevent.event.AsyncResult()

    def bind(self) -> None:
        """Bind both endpoints.

        Raises:
            BindError: an address is in use or invalid.
        """
        for server, endpoints, domain in ((self._agents, self.bind_endpoint, AGENTS_DOMAIN),
                                          (self._admin, self.admin_endpoint, ADMIN_DOMAIN)):
            sock = server._events._socket
            sock.linger = 0
            # a peer sending a larger message is disconnected by zmq before it costs memory
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            sock.backlog = LISTEN_BACKLOG
            if self.keys is not None:
                make_curve_server(server, self.keys.public, self.keys.secret, domain)
            for endpoint in endpoints.split(","):
                try:
                    server.bind(endpoint.strip())
                except zmq.ZMQError as exc:
                    raise BindError(f"cannot listen on {endpoint.strip()}: {exc}") from None
        log.info("master: agents on %s, admin on %s, agent timeout %.1fs", self.bind_endpoint,
                 self.admin_endpoint, self.scheduler.agent_timeout)
        if self.keys is None:
            log.warning("master runs --insecure: no encryption, no authentication; any client reaching %s "
                        "or %s can run code on every agent", self.bind_endpoint, self.admin_endpoint)
        else:
            log.info("master public key %s (give agents --master-key %s)", self.keys.public.decode(),
                     self.keys.public_path)
        if self.settings.webhook_secret_file:
            log.info("webhooks are signed with the secret in %s (give it to their receivers)",
                     self.settings.webhook_secret_file)

    def endpoints_health(self) -> dict:
        """Each endpoint's state: the agents' from a ping sent through it now, the admin's from the call that
        asks (it answered); with each its transport counters. And the database's: whether commits succeed."""
        start = time.monotonic()
        try:
            self._probe.call("ping")
            agents = {"ok": True, "rtt_ms": round((time.monotonic() - start) * 1000, 1)}
        except TRANSPORT_ERRORS as exc:
            agents = {"ok": False, "error": f"no answer through {self._probe.endpoint} within {PROBE_TIMEOUT}s "
                                            f"({type(exc).__name__})"}
        database = {"ok": self.storage.last_error is None}
        if self.storage.last_error is not None:
            database["error"] = f"the last commit failed: {self.storage.last_error}"
        if self.leadership is not None:
            # a standby does not listen: whoever answers leads, and says who it is
            database["leader"] = {"host": socket.gethostname(), "pid": os.getpid()}
            database["lease_s"] = self.leadership.lease
            database["last_round_trip_s"] = round(lease_clock() - self.leadership.storage.last_contact, 2)
        return {"agents": {**agents, **self._agents.stats.snapshot()},
                "admin": {"ok": True, **self._admin.stats.snapshot()}, "database": database}

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM.

        Raises:
            ServingLoopDied: a serving loop kept dying; the process must exit non-zero, not live on deaf.
        """
        if self.leadership is not None:
            self.leadership.start()
        self._housekeeper = gevent.spawn(self.housekeeper.run)
        self._schedules = gevent.spawn(self.admin_handler.schedules.run)
        self._notifier = gevent.spawn(self.notifications.run)
        self._admin.start()
        self._agents.start()
        gevent.signal_handler(signal.SIGTERM, self.stop)
        gevent.signal_handler(signal.SIGINT, self.stop)
        gevent.signal_handler(signal.SIGHUP, self.reload)  # was the default: the process died
        try:
            self._done.get()
        finally:
            self.close()

    def _share_webhook_secret(self, secret: bytes) -> None:
        """A leader records its webhook secret's fingerprint for the cluster, and says so when the previous
        leader signed with another: every receiver that checks signatures refuses this master's webhooks."""
        mine = webhook_fingerprint(secret)
        theirs = self.leadership.storage.cluster_value(WEBHOOK_SECRET_NAME)
        if theirs is not None and theirs != mine:
            log.warning("this master's webhook secret (%s) is not the one the cluster's previous leader signed "
                        "with: receivers that check X-Mschedule-Signature refuse its webhooks; copy webhook.secret "
                        "from the other masters (docs/ha.md), or give every receiver this one",
                        self.settings.webhook_secret_file or "made at start")
        self.leadership.storage.set_cluster_value(WEBHOOK_SECRET_NAME, mine)

    def reload(self) -> None:
        """SIGHUP: read again what can change without a restart (the webhook secret), and say so."""
        path = self.settings.webhook_secret_file
        if not path:
            log.warning("SIGHUP: nothing to read again (no --webhook-secret-file); other flags need a restart")
            return
        try:
            self.notifications.secret = load_secret(path)
        except (OSError, ValueError) as exc:
            log.error("SIGHUP: cannot read the webhook secret %s (%s); the one read before stays in force", path, exc)
            return
        log.warning("SIGHUP: webhook secret read again from %s; other flags need a restart", path)
        if self.leadership is not None:  # rotated on purpose: the next leader compares with this one
            try:
                self.leadership.storage.set_cluster_value(WEBHOOK_SECRET_NAME,
                                                          webhook_fingerprint(self.notifications.secret))
            except StorageError as exc:
                log.error("SIGHUP: the cluster could not record the new webhook secret's fingerprint (%s)", exc)

    def stop(self) -> None:
        """Stop serving; calls in progress (long polls included) are cut short."""
        log.info("master stopping")
        self._halt()
        if not self._done.ready():
            self._done.set(None)

    def _not_leading(self, why: str) -> None:
        """The lease is lost (mschedule/master/leadership.py): the gate is shut already; exit at once, without the
        final commit of close(), since another master may lead by now (and this session is gone or about to be)."""
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # a log that cannot be flushed must not keep a fenced master alive
                pass
        os._exit(EXIT_NOT_LEADING)

    def _give_up(self, loop: str) -> None:
        if not self._done.ready():
            self._done.set_exception(ServingLoopDied(f"serving loop {loop} keeps dying; the master exits"))
        self._halt()

    def _halt(self) -> None:
        for server in (self._admin, self._agents):
            server._task_pool.kill(block=False)
            server.stop()

    def close(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()
        for loop in (self._housekeeper, self._schedules, self._notifier):
            if loop is not None:
                loop.kill(block=False)
        self.notifications.close()
        for server in (self._admin, self._agents):
            try:
                server.close()
            except zmq.ZMQError:
                log.debug("error closing server socket", exc_info=True)
        self._probe.close()
        if self._zap is not None:
            self._zap.close()
        self.storage.close()
