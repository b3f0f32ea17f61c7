"""The master's state in an SQLite file (WAL mode): the zero-setup default.

The database holds every script and output: the file is created 0600 before SQLite opens it, and SQLite
gives the ``-wal`` and ``-shm`` files it creates the main file's mode.
"""
from __future__ import annotations

import sqlite3

from mschedule.master.migrations import SQLiteVersions, migrate
from mschedule.master.sql_storage import SQLStorage
from mschedule.utils.statedir import private_file, tighten

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, ip TEXT NOT NULL, labels TEXT NOT NULL,
    registered REAL, heartbeat REAL, online INTEGER NOT NULL, session TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, script BLOB NOT NULL, timeout REAL NOT NULL,
    parallel INTEGER NOT NULL, fail_rate REAL NOT NULL, fail_count INTEGER NOT NULL,
    created REAL NOT NULL, state TEXT NOT NULL, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS targets (
    task_id TEXT NOT NULL, agent_id TEXT NOT NULL, pos INTEGER NOT NULL, state TEXT NOT NULL,
    code INTEGER, output BLOB NOT NULL, started REAL, finished REAL,
    timed_out INTEGER NOT NULL, truncated INTEGER NOT NULL,
    PRIMARY KEY (task_id, agent_id)
);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, created_at REAL NOT NULL, message TEXT NOT NULL,
    sha256 TEXT NOT NULL, script BLOB NOT NULL, params TEXT NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS keys (
    agent_id TEXT PRIMARY KEY, key TEXT NOT NULL, state TEXT NOT NULL, hostname TEXT NOT NULL,
    ip TEXT NOT NULL, first_seen REAL NOT NULL, decided REAL
);
"""
"""Version 1 of the schema (mschedule 0.15); the ``tasks.extra`` column is added by the migration."""


class SQLiteStorage(SQLStorage):
    """:class:`mschedule.master.sql_storage.SQLStorage` in an SQLite file."""

    driver_errors = (sqlite3.Error,)

    def _open(self) -> sqlite3.Connection:
        try:
            for suffix in ("-wal", "-shm", "-journal"):  # left by an earlier version: SQLite keeps their mode
                tighten(self.path + suffix)
            private_file(self.path)
        except OSError as exc:
            raise sqlite3.OperationalError(f"unable to open database file: {exc.strerror}") from None
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged result survives a power cut too
        try:
            migrate(conn, SQLiteVersions(SCHEMA), self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _in_transaction(self) -> bool:
        return self._conn.in_transaction
