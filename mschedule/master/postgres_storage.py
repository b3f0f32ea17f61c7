"""The master's state in PostgreSQL (``--db postgresql://...``), shared by the masters of a cluster.

One connection does everything: it holds the leader lock (a session-level ``pg_try_advisory_lock``, see
mschedule/master/leadership.py), loads the state and commits every change. So a write can only ever commit
while this master holds the lock: once its session is gone (the master killed, frozen, or cut off, and
PostgreSQL ended the session), a later commit of a batch it still has in memory fails on the dead connection
instead of overwriting what the next leader did.

The session is set to end by itself once it has been idle for the lease (``idle_session_timeout`` and
``idle_in_transaction_session_timeout``): the leader touches it every lease / 5, so the lock outlives neither a
master that stopped touching it (a SIGSTOP, a hung host, a cut network: the server ends the session on its own
clock) nor, through TCP, one that died. This needs PostgreSQL 14 or newer.
"""
from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import gevent
import psycopg
from psycopg.pq import TransactionStatus

from mschedule.master.leadership import lease_clock
from mschedule.master.migrations import PostgresVersions, check_version, migrate
from mschedule.master.sql_storage import SQLStorage
from mschedule.master.storage import StorageError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, ip TEXT NOT NULL, labels TEXT NOT NULL,
    registered DOUBLE PRECISION, heartbeat DOUBLE PRECISION, online INTEGER NOT NULL, session TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, seq BIGINT NOT NULL, script BYTEA NOT NULL, timeout DOUBLE PRECISION NOT NULL,
    parallel INTEGER NOT NULL, fail_rate DOUBLE PRECISION NOT NULL, fail_count INTEGER NOT NULL,
    created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION,
    extra TEXT
);
CREATE TABLE IF NOT EXISTS targets (
    task_id TEXT NOT NULL, agent_id TEXT NOT NULL, pos INTEGER NOT NULL, state TEXT NOT NULL,
    code INTEGER, output BYTEA NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION,
    timed_out INTEGER NOT NULL, truncated INTEGER NOT NULL,
    PRIMARY KEY (task_id, agent_id)
);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL, message TEXT NOT NULL,
    sha256 TEXT NOT NULL, script BYTEA NOT NULL, params TEXT NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, seq BIGINT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, "user" TEXT NOT NULL, action TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS keys (
    agent_id TEXT PRIMARY KEY, key TEXT NOT NULL, state TEXT NOT NULL, hostname TEXT NOT NULL,
    ip TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL, decided DOUBLE PRECISION
);
"""
"""Version 1 of the schema: the SQLite schema's tables and columns, in the same order, in PostgreSQL's types."""

LEADER_LOCK = 0x6D73_6368_6C65_6164
"""The advisory lock whose holder leads (bigint ``pg_try_advisory_lock`` key): one cluster per database."""

MIN_SERVER_VERSION = 140000
"""PostgreSQL 14: the first with ``idle_session_timeout``, which ends a silent leader's session."""

IDENTITY_NAMES = {"master_key": "the master public key", "admin_key": "the admin credential's public key"}
"""What the masters of a cluster share (mschedule/master/main.py fills them in from keys/; ``insecure`` for
--insecure), as the refusal names them."""

STANDBY_POLL = 1.0
"""Seconds between two tries of a standby for the leader lock."""


def redact(dsn: str) -> str:
    """``dsn`` without its password (in its user part or a ``password=`` parameter), for messages; a URL too
    malformed to take apart is shown as its scheme only."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:  # e.g. "Invalid IPv6 URL"
        return dsn.split("://", 1)[0] + "://..."
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        parts = parts._replace(query=urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*"))
    return urlunsplit(parts)


def passwords(dsn: str) -> list[str]:
    """Every password ``dsn`` may hold (``user:PASSWORD@``, ``password=PASSWORD``), however malformed it is."""
    found = re.findall(r"://[^/@:]*:([^/]*)@", dsn) + re.findall(r"[?&]password=([^&]*)", dsn)
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


class PostgresStorage(SQLStorage):
    """:class:`mschedule.master.sql_storage.SQLStorage` in PostgreSQL, on the session that holds the leader lock."""

    driver_errors = (psycopg.Error,)
    placeholder = "%s"
    shared = True
    snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ"

    def __init__(self, dsn: str, lease: float, identity: dict[str, str] | None = None,
                 keys_dir: str | None = None) -> None:
        """``identity``: what every master of the cluster must share (CURVE public keys, IDENTITY_NAMES); the
        first to lead records it in table ``cluster``, and a master with other values is refused at once, as a
        standby too: after a failover to it no agent or web tier could talk to it."""
        self.dsn = dsn
        self.lease = lease
        self.identity = identity or {}
        #: where this master's keys are (for the refusal: where to copy the cluster's)
        self.keys_dir = keys_dir
        #: when (leadership.lease_clock) the newest statement that succeeded was sent: the server cannot have
        #: ended the session for idleness before this plus the lease (mschedule/master/leadership.py)
        self.last_contact = 0.0
        #: set once this master no longer leads: nothing more is sent on the session
        self.fenced = False
        super().__init__(redact(dsn))

    def _run(self, fn, *args):
        if self.fenced:
            raise StorageError("this master no longer holds the leader lock: nothing more is written")

        def timed():
            sent = lease_clock()
            value = fn(*args)
            self.last_contact = max(self.last_contact, sent)
            return value

        return super()._run(timed)

    def _open(self) -> psycopg.Connection:
        name = f"mschedule-master {socket.gethostname()} {os.getpid()}"[:63]
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10, application_name=name,
                               keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        try:
            if conn.info.server_version < MIN_SERVER_VERSION:
                raise StorageError(f"{self.path}: PostgreSQL {conn.info.server_version // 10000} is too old; the "
                                   "master needs 14 or newer (idle_session_timeout ends a silent leader's session)")
            ms = max(1000, int(self.lease * 1000))
            conn.execute(f"SET idle_session_timeout = {ms:d}")
            conn.execute(f"SET idle_in_transaction_session_timeout = {ms:d}")
            check_version(conn, PostgresVersions(SCHEMA), self.path)  # a standby refuses a newer one at once too
            self._check_identity(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _in_transaction(self) -> bool:
        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def temporary(self, exc: BaseException) -> bool:
        """A server that does not answer, restarts or went away may be back later (an OperationalError, which is
        also what a refused login raises); not a URL libpq refuses before connecting (``connection is bad:
        invalid sslmode value``), nor a database of another kind."""
        return isinstance(exc, psycopg.OperationalError) and not str(exc).startswith("connection is bad")

    def describe(self, exc: BaseException) -> str:
        """As :meth:`SQLStorage.describe`, without the password: libpq quotes a URL it cannot parse whole."""
        text = super().describe(exc).replace(self.dsn, self.path)
        for secret in passwords(self.dsn):
            text = text.replace(secret, "***")
        return text

    # ---- leadership -----------------------------------------------------------------------
    def lead(self, waiting: Callable[[str], None] | None = None, wait: bool = True) -> None:
        """Return once this session holds the leader lock, with the schema migrated; until then stand by.

        ``waiting(holder)`` is called once, when the lock is found taken (``holder``: who has it).

        Raises:
            StorageError: the lock is taken and ``wait`` is false.
        """
        told = False
        while not self._run(self._try_lock):
            if not wait:
                raise StorageError(f"{self.path}: {self._run(self._holder)} leads on this database: stop every "
                                   "master that uses it first")
            if not told:
                told = True
                holder = self._run(self._holder)
                log.warning("standing by: %s leads on %s; this master takes over when that session ends",
                            holder, self.path)
                if waiting is not None:
                    waiting(holder)
            gevent.sleep(STANDBY_POLL)
        self._run(migrate, self._conn, PostgresVersions(SCHEMA), self.path)
        self._run(self._record_identity)
        log.info("leading: this master holds the leader lock on %s", self.path)

    def _check_identity(self, conn: psycopg.Connection) -> None:
        """Refuse to join a cluster whose masters have other keys (a table from before version 2: none yet)."""
        if not self.identity or conn.execute("SELECT to_regclass('cluster')").fetchone()[0] is None:
            return
        recorded = dict(conn.execute("SELECT name, value FROM cluster").fetchall())
        for name, mine in self.identity.items():
            theirs = recorded.get(name)
            if theirs is not None and theirs != mine:
                raise StorageError(f"database {self.path}: the masters of its cluster have {IDENTITY_NAMES[name]} "
                                   f"{theirs}, this one has {mine}: copy keys/ from one of them to "
                                   f"{self.keys_dir or 'this master'} (docs/ha.md), or give it another --db")

    def _record_identity(self) -> None:
        """The first leader's keys become the cluster's (then checked, in case another master recorded first)."""
        for name, value in self.identity.items():
            self._conn.execute("INSERT INTO cluster (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                               (name, value))
        self._check_identity(self._conn)

    def cluster_value(self, name: str) -> str | None:
        """What the cluster records under ``name`` (table ``cluster``), or None."""
        row = self._run(lambda: self._conn.execute("SELECT value FROM cluster WHERE name = %s", (name,)).fetchone())
        return row[0] if row else None

    def set_cluster_value(self, name: str, value: str) -> None:
        """Record ``value`` under ``name`` for the cluster, at once (the leader does: it holds the session)."""
        self._run(lambda: self._conn.execute(
            "INSERT INTO cluster (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value)))

    def _try_lock(self) -> bool:
        return self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]

    def _holder(self) -> str:
        row = self._conn.execute(
            "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s", (LEADER_LOCK,)).fetchone()
        if row is None:
            return "another master"
        return f"{row[0] or 'a session'}" + (f" from {row[1]}" if row[1] else "")

    def ping(self) -> None:
        """One round trip on the session (it renews :attr:`last_contact`).

        Raises:
            StorageError: the session is gone.
        """
        try:
            self._run(lambda: self._conn.execute("SELECT 1").fetchone())
        except psycopg.Error as exc:
            raise StorageError(f"{type(exc).__name__}: {self.describe(exc)}") from exc

    def fence(self) -> None:
        """Send nothing more (the caller found this master no longer leads)."""
        self.fenced = True
