"""``appserver.py db copy``: a master's database into another, empty one, SQLite to PostgreSQL and back
(mschedule/master/dbcopy.py)."""
import os
import subprocess

import pytest

from mschedule.master.dbcopy import copy_database
from mschedule.master.scheduler import Scheduler
from mschedule.master.sql_storage import open_storage
from mschedule.master.storage import KeyRecord, KeyState, ScheduleRecord, StorageError, TokenRecord
from mschedule.utils.messages import AgentInfo, ResultMessage
from mschedule.utils.taskspec import TaskSpec
from tests.integration.harness import PYTHON, ROOT


def populate(path: str) -> dict:
    storage = open_storage(path)
    sched = Scheduler(storage, agent_timeout=10, clock=lambda: 1000.0)
    for i in range(3):
        sched.agent_seen(AgentInfo(id=f"a{i}", hostname=f"h{i}", ip=["10.0.0.1"], labels={"dc": "bj"}, session="s"))
    done = sched.submit(TaskSpec(script=b"echo \xff", targets=["a0"]))
    sched.next_task("a0")
    sched.apply_result(ResultMessage(id=done.id, agent_id="a0", code=3, output=b"out\xfe"))
    live = sched.submit(TaskSpec(script=b"sleep 9", targets=["a2", "a1"], parallel=1))
    sched.next_task("a2")
    storage.save_key(KeyRecord(agent_id="a0", key="K" * 40, state=KeyState.ACCEPTED, first_seen=1.0))
    storage.save_group("web", {"selector": {"dc": "bj"}, "targets": []})
    for version in (1, 2):
        storage.save_job_version({"name": "deploy", "version": version, "created_at": float(version), "message": "",
                                  "sha256": "0" * 64, "script": b"true", "params": []})
    storage.save_schedule(ScheduleRecord(id="s1", job="deploy", cron="@hourly", created=5.0, last_tick=3600.0))
    storage.save_token(TokenRecord(token_id="t1", user="vera", role="viewer", digest="d" * 64, created=1.0))
    for i in range(3):
        storage.add_audit({"time": 10.0 + i, "user": "otto", "action": f"a{i}", "object": None})
    storage.flush()
    storage.close()
    return {"done": done.id, "live": live.id}


def same(a_path: str, b_path: str, ids: dict) -> None:
    a, b = open_storage(a_path), open_storage(b_path)
    try:
        assert list(a.tasks) == list(b.tasks) == [ids["done"], ids["live"]]
        for task_id in a.tasks:
            assert a.tasks[task_id].summary() == b.tasks[task_id].summary()
            assert a.tasks[task_id].script == b.tasks[task_id].script
            for agent_id, target in a.tasks[task_id].targets.items():
                assert b.tasks[task_id].targets[agent_id] == target  # state, code, output bytes, times
        assert {k: v.to_dict() | {"heartbeat_age": 0} for k, v in a.agents.items()} == \
               {k: v.to_dict() | {"heartbeat_age": 0} for k, v in b.agents.items()}
        assert {k: v.to_dict() for k, v in a.keys.items()} == {k: v.to_dict() for k, v in b.keys.items()}
        assert a.groups == b.groups and a.jobs == b.jobs
        assert [r.to_json() for r in a.schedules.values()] == [r.to_json() for r in b.schedules.values()]
        assert [r.to_json() for r in a.tokens.values()] == [r.to_json() for r in b.tokens.values()]
        assert a.query_audit(None, None, None, 100) == b.query_audit(None, None, None, 100)
    finally:
        a.close()
        b.close()


def test_sqlite_to_postgresql_and_back_keeps_everything(tmp_path, pg_url):
    sqlite = str(tmp_path / "m.db")
    ids = populate(sqlite)
    copied = copy_database(sqlite, pg_url)
    assert copied == {"agents": 3, "keys": 1, "tasks": 2, "groups": 1, "job versions": 2, "schedules": 1,
                      "tokens": 1, "audit records": 3}
    same(sqlite, pg_url, ids)
    back = str(tmp_path / "back.db")
    copy_database(pg_url, back)  # a backup to a file, or the way back
    same(pg_url, back, ids)
    again = open_storage(pg_url)
    try:
        again.add_audit({"time": 99.0, "user": "otto", "action": "later", "object": None})
        again.flush()
        assert again.query_audit(None, None, None, 1)[0]["seq"] == 4  # numbering goes on in the target
    finally:
        again.close()


def test_a_target_that_is_not_empty_is_refused_and_left_alone(tmp_path, pg_url):
    sqlite = str(tmp_path / "m.db")
    populate(sqlite)
    copy_database(sqlite, pg_url)
    with pytest.raises(StorageError, match=r"is not empty \(3 agents, 1 keys, 2 tasks"):
        copy_database(sqlite, pg_url)
    other = str(tmp_path / "other.db")
    populate(other)
    with pytest.raises(StorageError, match="is not empty"):
        copy_database(sqlite, other)


def test_a_database_a_master_leads_on_is_refused_at_once(tmp_path, pg_url):
    sqlite = str(tmp_path / "m.db")
    populate(sqlite)
    leader = open_storage(pg_url)
    try:
        with pytest.raises(StorageError, match="leads on this database: stop every master"):
            copy_database(sqlite, pg_url)
    finally:
        leader.close()
    assert open_storage(pg_url).tasks == {}


def test_a_missing_source_file_is_refused_and_not_created(tmp_path):
    with pytest.raises(StorageError, match="no database file"):
        copy_database(str(tmp_path / "typo.db"), str(tmp_path / "new.db"))
    assert os.listdir(tmp_path) == []


def test_the_command_copies_and_says_what_in_one_line(tmp_path, pg_url):
    sqlite = str(tmp_path / "m.db")
    populate(sqlite)
    command = [PYTHON, "appserver.py", "--state-dir", str(tmp_path / "state"), "db", "copy", sqlite, "--db", pg_url]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("copied 3 agents, 1 keys, 2 tasks, 1 groups, 2 job versions, 1 schedules, 1 tokens, "
                           "3 audit records\n")
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    last = again.stderr.strip().splitlines()[-1]  # after the master's INFO log lines
    assert last.startswith("mschedule: db copy: the target postgresql://") and "Traceback" not in again.stderr
