"""Versioned schema migrations of the master's database, applied at start.

The database says its schema version (SQLite: ``PRAGMA user_version``). At start the master applies, in order
and each in its own transaction, every migration after that version, and records the new one; a database
whose version is newer than the newest this master knows (written by a newer mschedule) is refused with one
line, since an older master would misread or damage it.

Version 1 is the schema of mschedule 0.15 as a whole: every table created if missing, and the ``tasks.extra``
column added to a database from before selectors and batches, so any earlier database (version 0, which
SQLite reports for one that never set it) reaches it. Later changes are appended as 2, 3, ...: never edit a
migration that has shipped.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

log = logging.getLogger(__name__)


class SchemaTooNew(Exception):
    """The database was written by a newer mschedule."""


def _v1(conn: sqlite3.Connection, schema: str) -> None:
    for statement in schema.split(";"):  # not executescript, which would commit the migration's transaction
        if statement.strip():
            conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    if "extra" not in columns:  # a database from before selectors and batches
        conn.execute("ALTER TABLE tasks ADD COLUMN extra TEXT")


#: version -> (what it does, the step); the step gets the connection and the base schema's SQL
MIGRATIONS: dict[int, tuple[str, Callable[[sqlite3.Connection, str], None]]] = {
    1: ("the schema of mschedule 0.15 (every table; tasks.extra)", _v1),
}
LATEST = max(MIGRATIONS)


def migrate(conn: sqlite3.Connection, schema: str, path: str) -> int:
    """Bring the database of ``conn`` (autocommit mode) to :data:`LATEST`; returns the version it had.

    Raises:
        SchemaTooNew: its version is newer than :data:`LATEST`.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > LATEST:
        raise SchemaTooNew(f"database {path} has schema version {found}, newer than this master's {LATEST}: it "
                           "was written by a newer mschedule; upgrade this one, or give it another --db")
    for version in range(found + 1, LATEST + 1):
        what, step = MIGRATIONS[version]
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn, schema)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("database %s: schema migrated to version %d (%s)", path, version, what)
    return found
