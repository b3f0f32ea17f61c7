"""Versioned schema migrations of the master's database, applied at start, for each backend.

The database says its schema version (SQLite: ``PRAGMA user_version``; PostgreSQL: the one row of the table
``mschedule_schema``). At start the master applies, in order and each in its own transaction, every migration
after that version, and records the new one; a database whose version is newer than the newest this master
knows (written by a newer mschedule) is refused with one line, since an older master would misread or damage it.

Version 2 (mschedule 0.16) adds the table ``cluster``: what the masters sharing the database must agree on (their
CURVE keys, mschedule/master/postgres_storage.py).

Version 1 is the schema of mschedule 0.15 as a whole, on both backends. On SQLite: every table created if
missing, and the ``tasks.extra`` column added to a database from before selectors and batches, so any earlier
database (version 0, which SQLite reports for one that never set it) reaches it. On PostgreSQL (new in 0.16)
it creates every table. Later changes are appended as 2, 3, ... to both backends' tables, with the same number
for the same change: never edit a migration that has shipped.
"""
from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

LATEST = 2
"""The newest schema version this master knows (every backend's migrations reach it)."""


class SchemaRefused(Exception):
    """The database is not one this master may use; the message says why."""


class SchemaTooNew(SchemaRefused):
    """The database was written by a newer mschedule."""


class NotOurDatabase(SchemaRefused):
    """The database has no schema version but already has tables of the schema's names: another application's."""


def _statements(schema: str) -> list[str]:
    return [s for s in schema.split(";") if s.strip()]


def _v2(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS cluster (name TEXT PRIMARY KEY, value TEXT NOT NULL)")


class SQLiteVersions:
    """SQLite: the version in ``PRAGMA user_version``; ``schema`` is the base schema's SQL."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.migrations: dict[int, tuple[str, Callable[[Any], None]]] = {
            1: ("the schema of mschedule 0.15 (every table; tasks.extra)", self._v1),
            2: ("the cluster table (what the masters sharing the database agree on)", _v2),
        }

    def read(self, conn: sqlite3.Connection) -> int:
        return conn.execute("PRAGMA user_version").fetchone()[0]

    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def write(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {version:d}")

    def _v1(self, conn: sqlite3.Connection) -> None:
        for statement in _statements(self.schema):  # not executescript, which would commit the transaction
            conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        if "extra" not in columns:  # a database from before selectors and batches
            conn.execute("ALTER TABLE tasks ADD COLUMN extra TEXT")


MIGRATION_LOCK = 0x6D73_6368_6D69_6772
"""PostgreSQL advisory lock taken for the duration of a migration's transaction (two masters never migrate at
once); not the leader's lock (mschedule/master/leadership.py)."""


class PostgresVersions:
    """PostgreSQL: the version in the one row of ``mschedule_schema``; ``schema`` is version 1's SQL."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.migrations: dict[int, tuple[str, Callable[[Any], None]]] = {
            1: ("the schema of mschedule 0.15 (every table)", self._v1),
            2: ("the cluster table (what the masters sharing the database agree on)", _v2),
        }

    def read(self, conn) -> int:
        if conn.execute("SELECT to_regclass('mschedule_schema')").fetchone()[0] is None:
            return 0
        row = conn.execute("SELECT max(version) FROM mschedule_schema").fetchone()
        return row[0] or 0

    def begin(self, conn) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def write(self, conn, version: int) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS mschedule_schema (version INTEGER NOT NULL)")
        conn.execute("DELETE FROM mschedule_schema")
        conn.execute("INSERT INTO mschedule_schema (version) VALUES (%s)", (version,))

    def _v1(self, conn) -> None:
        # CREATE TABLE IF NOT EXISTS would keep another application's table of the same name, and the master would
        # fail later on a missing column, or worse write into it: a database without our version is created whole
        ours = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", self.schema)
        found = [name for name in ours if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None]
        if found:
            raise NotOurDatabase(f"has no mschedule schema version but already has tables named "
                                 f"{', '.join(found)}: it belongs to another application; give the master a "
                                 "database of its own (CREATE DATABASE mschedule)")
        for statement in _statements(self.schema):
            conn.execute(statement)


def check_version(conn, versions, where: str) -> int:
    """The version of the database of ``conn``.

    Raises:
        SchemaTooNew: it is newer than :data:`LATEST`.
    """
    found = versions.read(conn)
    if found > LATEST:
        raise SchemaTooNew(f"database {where} has schema version {found}, newer than this master's {LATEST}: it "
                           "was written by a newer mschedule; upgrade this one, or give it another --db")
    return found


def migrate(conn, versions, where: str) -> int:
    """Bring the database of ``conn`` (autocommit mode) to :data:`LATEST`; returns the version it had.

    Raises:
        SchemaTooNew: its version is newer than :data:`LATEST`.
    """
    found = check_version(conn, versions, where)
    for version in range(found + 1, LATEST + 1):
        what, step = versions.migrations[version]
        versions.begin(conn)
        try:
            if versions.read(conn) >= version:  # another master migrated it meanwhile
                conn.execute("ROLLBACK")
                continue
            step(conn)
            versions.write(conn, version)
            conn.execute("COMMIT")
        except NotOurDatabase as exc:
            conn.execute("ROLLBACK")
            raise NotOurDatabase(f"database {where} {exc}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("database %s: schema migrated to version %d (%s)", where, version, what)
    return found
