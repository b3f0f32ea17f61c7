"""``appserver.py db copy SOURCE``: everything of one master database into another, empty one.

How a master on SQLite moves to PostgreSQL (docs/ha.md), and back: agents and their keys, tasks with their
targets and outputs (in submission order), groups, every job version, schedules, tokens and the audit trail
(renumbered from 1, in its order). The source is read in one snapshot; the target is written in one commit,
so a copy that fails leaves it empty. Nothing may run on either database meanwhile: on PostgreSQL the copy
takes the leader lock and refuses a database a master leads; a master on an SQLite source must be stopped
first (docs/ha.md says so). A running task's secrets are never stored, so they are not copied either: a task
copied while running is as after a restart of its master.
"""
from __future__ import annotations

import logging
import os

from mschedule.master.sql_storage import open_storage
from mschedule.master.storage import Storage, StorageError

log = logging.getLogger(__name__)

EVERYTHING = 10 ** 12
"""A limit no audit trail reaches (query_audit takes one)."""


def counts(storage: Storage) -> dict[str, int]:
    """How many records of each kind ``storage`` holds."""
    return {"agents": len(storage.agents), "keys": len(storage.keys), "tasks": len(storage.tasks),
            "groups": len(storage.groups), "job versions": sum(len(v) for v in storage.jobs.values()),
            "schedules": len(storage.schedules), "tokens": len(storage.tokens),
            "audit records": len(storage.query_audit(None, None, None, EVERYTHING))}


def copy_database(source: str, target: str) -> dict[str, int]:
    """Copy every record of the database ``source`` into ``target`` (each a ``--db`` value); returns the counts.

    Raises:
        StorageError: either cannot be opened, a master leads on one, or ``target`` is not empty.
        SchemaRefused: either was written by a newer mschedule, or belongs to another application.
    """
    if source == target:
        raise StorageError("db copy: the source and the target are the same database")
    if ":memory:" in (source, target):
        raise StorageError("db copy: ':memory:' keeps nothing to copy from or into")
    if not source.startswith(("postgresql://", "postgres://")) and not os.path.isfile(source):
        raise StorageError(f"db copy: no database file {source}")
    src = open_storage(source, wait=False)
    try:
        dst = open_storage(target, wait=False)
        try:
            found = {kind: n for kind, n in counts(dst).items() if n}
            if found:
                raise StorageError(f"db copy: the target {dst.path} is not empty ("
                                   + ", ".join(f"{n} {kind}" for kind, n in found.items()) + "): copy only into "
                                   "a new database")
            for agent in src.agents.values():
                dst.add_agent(agent)
            for record in src.keys.values():
                dst.save_key(record)
            for task in src.tasks.values():  # oldest first: the target numbers them in the same order
                dst.add_task(task)
            for name, body in src.groups.items():
                dst.save_group(name, body)
            for versions in src.jobs.values():
                for version in versions:
                    dst.save_job_version(version)
            for record in src.schedules.values():
                dst.save_schedule(record)
            for record in src.tokens.values():
                dst.save_token(record)
            for entry in reversed(src.query_audit(None, None, None, EVERYTHING)):
                dst.add_audit(dict(entry))
            dst.flush()
            copied = counts(dst)
            log.info("db copy: %s -> %s: %s", src.path, dst.path, copied)  # the paths without passwords
        finally:
            dst.close()
    finally:
        src.close()
    return copied
