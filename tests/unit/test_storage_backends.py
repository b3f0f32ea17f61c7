"""The master's write-through to SQLite and PostgreSQL: what is flushed comes back after a restart, exactly.

The tests taking ``db`` run on both backends (PostgreSQL in a throwaway cluster: tests/pg.py; they skip, saying
why, where it is not installed); those about files are SQLite's own."""
import os
import sqlite3

import pytest

from mschedule.master.scheduler import Scheduler
from mschedule.master.sql_storage import open_storage
from mschedule.master.sqlite_storage import SQLiteStorage
from mschedule.master.storage import Storage
from mschedule.utils.messages import AgentInfo, ResultMessage
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec
from tests.modes import open_paths


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def populated(storage, clock):
    sched = Scheduler(storage, agent_timeout=10, clock=clock)
    for i in range(3):
        sched.agent_seen(AgentInfo(id=f"a{i}", hostname=f"h{i}", ip=["10.0.0.1"], labels={"dc": "bj"}, session="s"))
    done = sched.submit(TaskSpec(script=b"echo \xff", targets=["a0"]))
    sched.next_task("a0")
    sched.apply_result(ResultMessage(id=done.id, agent_id="a0", code=0, output=b"out\xfe"))
    live = sched.submit(TaskSpec(script=b"sleep 1", targets=["a2", "a1", "a0"], parallel=1, fail_rate=100))
    assert sched.next_task("a2") is live
    storage.flush()
    return sched, done, live


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    """A new database of each persistent backend: its ``--db``."""
    if request.param == "sqlite":
        return str(tmp_path / "m.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def storage(request, tmp_path):
    s = Storage() if request.param == "memory" else open_storage(request.getfixturevalue("pg_url")
                                                                   if request.param == "postgresql"
                                                                   else str(tmp_path / "m.db"))
    yield s
    s.close()


def test_behaviour_is_the_same_on_every_backend(storage):
    sched, done, live = populated(storage, Clock())
    assert done.state is State.SUCCEED and done.targets["a0"].output == b"out\xfe"
    assert live.running == 1 and live.counts[State.WAITING] == 2
    assert [t.id for t in storage.recent_tasks(10)] == [live.id, done.id]


def test_everything_flushed_comes_back(db):
    path = db
    first = open_storage(path)
    clock = Clock()
    _, done, live = populated(first, clock)
    first.close()

    again = open_storage(path)
    assert list(again.tasks) == [done.id, live.id]  # submission order kept
    back = again.tasks[done.id]
    assert back.script == b"echo \xff" and back.state is State.SUCCEED
    assert back.targets["a0"].output == b"out\xfe" and back.targets["a0"].code == 0
    back_live = again.tasks[live.id]
    assert list(back_live.targets) == ["a2", "a1", "a0"]  # target order kept
    assert back_live.targets["a2"].state is State.RUNNING and back_live.running == 1
    assert again.agents["a1"].labels == {"dc": "bj"} and again.agents["a1"].ip == ["10.0.0.1"]
    assert again.agents["a1"].session == "s"

    clock.now += 100  # long after the last heartbeat: the restart grants grace
    sched = Scheduler(again, agent_timeout=10, clock=clock)
    sched.restore()
    assert sched.check_agents() == []
    assert again.agents["a2"].current == live.id
    assert sched.next_task("a1") is None  # the window (parallel 1) is taken by a2's running target
    sched.apply_result(ResultMessage(id=live.id, agent_id="a2", code=0))
    assert sched.next_task("a1").id == live.id  # waiting targets were queued again
    again.close()


def test_unflushed_changes_are_not_lost_by_a_later_flush(db):
    path = db
    s = open_storage(path)
    sched = Scheduler(s, agent_timeout=10, clock=Clock())
    sched.agent_seen(AgentInfo(id="a", hostname="h", session="s"))
    task = sched.submit(TaskSpec(script=b"true", targets=["a"]))
    sched.next_task("a")  # insert and update of the same target in one batch
    s.flush()
    s.close()
    again = open_storage(path)
    assert again.tasks[task.id].targets["a"].state is State.RUNNING
    assert again.tasks[task.id].state is State.RUNNING
    again.close()


def test_memory_db_keeps_nothing():
    assert type(open_storage(":memory:")) is Storage


def test_retention_prunes_finished_tasks_durably(db):
    path = db
    clock = Clock()
    storage = open_storage(path)
    sched = Scheduler(storage, agent_timeout=10, clock=clock)
    sched.agent_seen(AgentInfo(id="a", hostname="h", session="s"))
    done = []
    for _ in range(4):
        task = sched.submit(TaskSpec(script=b"true", targets=["a"]))
        sched.next_task("a")
        sched.apply_result(ResultMessage(id=task.id, agent_id="a", code=0))
        done.append(task.id)
        clock.now += 86400
    running = sched.submit(TaskSpec(script=b"sleep", targets=["a"]))
    sched.next_task("a")
    assert sched.prune(keep_tasks=2) == 3  # 5 tasks, keep 2: the 3 oldest finished go
    assert list(storage.tasks) == [done[3], running.id]
    assert sched.prune(keep_days=0.5) == 1  # older than half a day: the last finished one; running stays
    storage.flush()
    storage.close()
    again = open_storage(path)
    assert list(again.tasks) == [running.id]
    again.close()


def test_database_and_its_wal_and_shm_are_private(tmp_path, permissive_umask):
    path = tmp_path / "m.db"
    storage = SQLiteStorage(str(path))
    try:
        populated(storage, Clock())
        assert sorted(os.listdir(tmp_path)) == ["m.db", "m.db-shm", "m.db-wal"]  # open, in WAL mode
        assert open_paths(tmp_path) == {}
    finally:
        storage.close()


def test_open_database_left_by_an_earlier_version_is_tightened(tmp_path):
    path = tmp_path / "m.db"
    first = SQLiteStorage(str(path))
    _, done, _ = populated(first, Clock())
    first.close()
    os.chmod(path, 0o644)
    for suffix in ("-wal", "-shm"):  # as a master killed -9 leaves them
        (tmp_path / f"m.db{suffix}").touch(mode=0o644)
    again = open_storage(str(path))
    try:
        assert done.id in again.tasks
        assert open_paths(tmp_path) == {}
    finally:
        again.close()


def test_retry_of_comes_back_and_a_database_without_it_loads(tmp_path):
    path = str(tmp_path / "m.db")
    first = SQLiteStorage(path)
    _, done, live = populated(first, Clock())
    live.retry_of = done.id
    first.save_task(live)
    first.flush()
    first.close()
    conn = sqlite3.connect(path)  # a task saved before retry_of existed: its extra has no such key
    conn.execute("UPDATE tasks SET extra = ? WHERE id = ?", ('{"job": null}', done.id))
    conn.commit()
    conn.close()
    again = open_storage(path)
    assert again.tasks[live.id].retry_of == done.id and again.tasks[live.id].summary()["retry_of"] == done.id
    assert again.tasks[done.id].retry_of is None
    again.close()


def test_every_kind_of_record_comes_back(db):
    from mschedule.master.storage import KeyRecord, KeyState, ScheduleRecord, TokenRecord

    first = open_storage(db)
    first.save_key(KeyRecord(agent_id="a1", key="K" * 40, state=KeyState.ACCEPTED, hostname="h1", ip=["10.0.0.1"],
                             first_seen=1.5, decided=2.5))
    first.save_key(KeyRecord(agent_id="gone", key="G" * 40))
    first.save_group("web", {"selector": {"role": "web"}, "targets": ["a1"]})
    first.save_group("old", {"selector": None, "targets": []})
    first.save_job_version({"name": "deploy", "version": 1, "created_at": 3.25, "message": "first",
                            "sha256": "ab" * 32, "script": b"echo \x00\xff", "params": [{"name": "X"}]})
    first.save_schedule(ScheduleRecord(id="s1", job="deploy", cron="*/5 * * * *", created=4.0, last_tick=1e9 + 0.5))
    first.save_token(TokenRecord(token_id="t1", user="vera", role="viewer", digest="d" * 64, created=5.0,
                                 selector={"dc": "bj"}))
    for i, user in enumerate(["vera", "otto", "vera"]):
        first.add_audit({"time": 100.0 + i, "user": user, "action": "task.submit", "object": f"o{i}"})
    first.flush()
    first.delete_key("gone")
    first.delete_group("old")
    first.flush()
    first.close()

    again = open_storage(db)
    try:
        assert set(again.keys) == {"a1"} and again.keys["a1"].to_dict()["decided"] == 2.5
        assert again.keys["a1"].state is KeyState.ACCEPTED and again.keys["a1"].ip == ["10.0.0.1"]
        assert again.groups == {"web": {"selector": {"role": "web"}, "targets": ["a1"]}}
        assert again.jobs["deploy"][0]["script"] == b"echo \x00\xff" and again.jobs["deploy"][0]["created_at"] == 3.25
        assert again.schedules["s1"].last_tick == 1e9 + 0.5  # a double, not PostgreSQL's 4-byte REAL
        assert again.tokens["t1"].selector == {"dc": "bj"}
        assert [e["object"] for e in again.query_audit("vera", None, None, 10)] == ["o2", "o0"]
        assert [e["seq"] for e in again.query_audit(None, "task.submit", 101.0, 10)] == [3, 2]
        assert [e["seq"] for e in again.query_audit(None, None, None, 1, before=3)] == [2]  # the next page
        assert [e["seq"] for e in again.query_audit("vera", None, None, 10, before=3)] == [1]
        again.add_audit({"time": 200.0, "user": "otto", "action": "key.accept", "object": None})
        again.flush()
        assert again.query_audit(None, None, None, 1)[0]["seq"] == 4  # numbering goes on after a restart
        assert again.prune_audit(102.0) == 2
        assert [e["seq"] for e in again.query_audit(None, None, None, 10)] == [4, 3]
    finally:
        again.close()
