"""Schema versions of the master's database (mschedule/master/migrations.py)."""
import sqlite3
import subprocess

import pytest

from mschedule.master.migrations import LATEST, SchemaTooNew
from mschedule.master.sqlite_storage import SQLiteStorage
from tests.integration.harness import PYTHON, ROOT


def _version(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_database_gets_the_latest_version(tmp_path):
    SQLiteStorage(str(tmp_path / "m.db")).close()
    assert _version(tmp_path / "m.db") == LATEST


def test_a_database_from_before_versions_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # as mschedule 0.5 left it: no extra column, no later tables
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, script BLOB NOT NULL, "
                   "timeout REAL NOT NULL, parallel INTEGER NOT NULL, fail_rate REAL NOT NULL, "
                   "fail_count INTEGER NOT NULL, created REAL NOT NULL, state TEXT NOT NULL, started REAL, "
                   "finished REAL)")
        db.execute("INSERT INTO tasks VALUES ('t1', 1, x'74727565', 0, 1, 0, -1, 1.0, 'SUCCEED', 1.0, 2.0)")
    storage = SQLiteStorage(str(path))
    storage.load()
    assert list(storage.tasks) == ["t1"] and storage.tasks["t1"].script == b"true"
    storage.close()
    assert _version(path) == LATEST
    with sqlite3.connect(path) as db:
        assert "extra" in {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'schedules'").fetchone()[0] == 1


def test_a_database_newer_than_the_master_is_refused_in_one_line(tmp_path):
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST + 1}, newer than this master's {LATEST}"):
        SQLiteStorage(str(path))
    proc = subprocess.run([PYTHON, "appserver.py", "--insecure", "--db", str(path), "--state-dir", str(tmp_path),
                           "--bind", "tcp://127.0.0.1:0", "--admin-bind", "tcp://127.0.0.1:0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"mschedule: database {path} has schema version {LATEST + 1}, newer "
                                                f"than this master's {LATEST}: it was written by a newer mschedule; "
                                                "upgrade this one, or give it another --db"], proc.stderr
    assert _version(path) == LATEST + 1  # untouched
