"""Idempotency keys (mschedule/master/idempotency.py): the same request with the same key makes one task."""
import pytest

from mschedule.master.handler import AdminHandler
from mschedule.master.scheduler import Scheduler
from mschedule.master.sql_storage import open_storage
from mschedule.utils.exceptions import Conflict, ValidationError
from mschedule.utils.messages import AgentInfo, ResultMessage


def master(path: str):
    storage = open_storage(path)
    sched = Scheduler(storage, agent_timeout=60)
    for agent_id in ("a0", "a1"):
        sched.agent_seen(AgentInfo(id=agent_id, hostname=f"h-{agent_id}", session="s"))
    return storage, sched, AdminHandler(sched)


def otto(key: str | None) -> dict:
    return {"user": "otto", "selector": None, **({"idempotency_key": key} if key is not None else {})}


@pytest.fixture
def world(tmp_path):
    storage, sched, admin = master(str(tmp_path / "m.db"))
    yield storage, sched, admin
    storage.close()


def test_the_same_request_with_the_same_key_makes_one_task(world):
    storage, _, admin = world
    body = {"script": "echo hi", "targets": ["a0"]}
    first = admin.add_task(body, otto("k-1"))
    assert admin.add_task(body, otto("k-1")) == first
    assert list(storage.tasks) == [first]
    assert admin.add_task(body, otto("k-2")) != first  # another key: another task
    assert admin.add_task(body, otto(None)) not in (first,)  # no key: a task each time, as before
    assert len(storage.tasks) == 3


def test_a_key_is_the_callers_own(world):
    storage, _, admin = world
    body = {"script": "true", "targets": ["a0"]}
    mine = admin.add_task(body, otto("shared"))
    theirs = admin.add_task(body, {"user": "vera", "selector": None, "idempotency_key": "shared"})
    assert mine != theirs and len(storage.tasks) == 2


def test_the_same_key_for_another_request_is_a_conflict(world):
    storage, _, admin = world
    admin.add_task({"script": "echo one", "targets": ["a0"]}, otto("k"))
    for other in ({"script": "echo two", "targets": ["a0"]}, {"script": "echo one", "targets": ["a1"]},
                  {"script": "echo one", "targets": ["a0"], "parallel": 2}):
        with pytest.raises(Conflict, match="made task .* for another request") as refused:
            admin.add_task(other, otto("k"))
        assert refused.value.field == "idempotency_key"
    assert len(storage.tasks) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "caf\u00e9", 42, ["k"]])
def test_a_key_that_is_not_short_printable_ascii_is_refused(world, key):
    storage, _, admin = world
    with pytest.raises(ValidationError) as refused:
        admin.add_task({"script": "true", "targets": ["a0"]}, otto(key))
    assert refused.value.field == "idempotency_key" and not storage.tasks


def test_a_key_outlives_a_restart_and_a_secret_is_not_in_what_is_kept(tmp_path):
    path = str(tmp_path / "m.db")
    storage, _, admin = master(path)
    body = {"script": "echo $TOKEN", "targets": ["a0"], "env": {"TOKEN": "hunter2"}}
    # a task's env holds no secret unless a job declares it: a job run is where secrets come from
    admin.job_save("deploy", {"script": "echo $TOKEN", "targets": ["a0"],
                              "params": [{"name": "TOKEN", "secret": True, "required": True}]})
    run = admin.job_run("deploy", {"params": {"TOKEN": "hunter2"}}, otto("run-1"))
    plain = admin.add_task(body, otto("plain-1"))
    storage.flush()
    storage.close()
    again, sched, admin = master(path)
    try:
        assert admin.add_task(body, otto("plain-1")) == plain
        assert admin.job_run("deploy", {"params": {"TOKEN": "hunter2"}}, otto("run-1"))["task_id"] == run["task_id"]
        assert len(again.tasks) == 2
        kept = again.tasks[run["task_id"]].request_key
        assert kept["key"] == "run-1" and kept["user"] == "otto" and "hunter2" not in repr(kept)
        # the fingerprint leaves secrets' values out (it is stored): the same run with another secret is the same
        assert admin.job_run("deploy", {"params": {"TOKEN": "other"}}, otto("run-1"))["task_id"] == run["task_id"]
    finally:
        again.close()


def test_a_retry_with_a_key_is_made_once_and_a_pruned_task_frees_its_key(world):
    storage, sched, admin = world
    first = admin.add_task({"script": "false", "targets": ["a0"]}, otto("orig"))
    sched.next_task("a0", "s")
    sched.apply_result(ResultMessage(id=first, agent_id="a0", code=1))
    retry = admin.retry_task(first, None, otto("retry-1"))
    assert admin.retry_task(first, None, otto("retry-1")) == retry
    with pytest.raises(Conflict):
        admin.add_task({"script": "false", "targets": ["a0"]}, otto("retry-1"))  # the key made a retry
    sched.next_task("a0", "s")
    sched.apply_result(ResultMessage(id=retry["task_id"], agent_id="a0", code=1))
    assert sched.prune(keep_tasks=1) == 1 and first not in storage.tasks
    again = admin.add_task({"script": "false", "targets": ["a0"]}, otto("orig"))  # its task is gone: a new one
    assert again != first
