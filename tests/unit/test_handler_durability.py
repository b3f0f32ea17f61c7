"""Every handler call that changes state is committed before it answers, and none can forget to be.

A forgotten ``flush()`` passes every other test: the change is in memory, answers show it, and the periodic
commit writes it 0.2 s later. Only a crash in between loses it. So this test walks every public method of
both handlers: each is either declared read-only or carries ``@commits``; a new method that is neither
fails here. Each changing method is then called on a real SQLite storage and, without any flush by the
test, a second storage opened on the same file (its own connection, what a restarted master reads) must
see the change. Each read-only method is called too, and must leave nothing to commit.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from mschedule.master.admission import Admission, set_current_key
from mschedule.master.handler import AdminHandler, AgentHandler, changes_state
from mschedule.master.scheduler import Scheduler
from mschedule.master.sql_storage import open_storage
from mschedule.master.sqlite_storage import SQLiteStorage
from mschedule.master.storage import KeyState, Storage, TargetRecord
from mschedule.utils.exceptions import NotDurable
from mschedule.utils.messages import AgentInfo, ResultMessage
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec

#: public methods that change nothing (each is called below and must leave nothing to commit)
ADMIN_READS = {"get_agents", "get_result", "get_target", "get_tasks", "job_get", "job_versions", "jobs_list",
               "job_diff", "ping", "group_get", "groups_list", "keys_list", "metrics", "task_events", "schedules_list",
               "schedule_get", "tokens_list", "audit_query"}
AGENT_READS = {"watch_cancel", "ping"}
#: public methods that change state through a committing helper only for some messages:
#: ``send`` commits results (``_result``), not registrations or heartbeats
AGENT_MIXED = {"send": "_result"}
#: ``authenticate`` saves a token's last use at most once a minute, left to the periodic commit: waiting for a
#: commit on every request would cost an fsync each; a last use lost in a crash is a minute of "last used"
ADMIN_MIXED = {"authenticate": "token_create"}


def public_methods(cls: type) -> set[str]:
    return {name for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


class World:
    """A master's handlers on a real SQLite file: agents, keys, jobs, a group and a task, all committed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.storage = SQLiteStorage(path)
        self.scheduler = Scheduler(self.storage, agent_timeout=60)
        self.admission = Admission(self.storage, admin_key=b"A" * 40)
        self.admin = AdminHandler(self.scheduler, self.admission)
        self.agent = AgentHandler(self.scheduler)  # no admission: the agent's key checks are not the point
        for agent_id, key in (("a0", "K0"), ("a1", "K1"), ("p1", "P1"), ("p2", "P2")):
            set_current_key(key * 20)
            self.admission.on_register(agent_id, f"host-{agent_id}", [])
        set_current_key(None)
        for agent_id in ("a0", "a1"):
            self.admission.decide(agent_id, KeyState.ACCEPTED)
            self.scheduler.agent_seen(AgentInfo(id=agent_id, hostname=f"host-{agent_id}", ip=[],
                                                labels={"role": "web"}, session="s"))
        self.admin._jobs.save("deploy", {"script": "echo v1", "targets": ["a0"]})
        self.admin._jobs.save("deploy", {"script": "echo v2", "targets": ["a0"]})
        self.storage.save_group("web", {"selector": {"labels": {"role": "web"}}, "targets": []})
        self.schedule = self.admin.schedules.create({"job": "deploy", "cron": "@daily"})["schedule_id"]
        self.token = self.admin.tokens.create({"user": "alice", "role": "operator"})
        self.live = self.scheduler.submit(TaskSpec(script=b"sleep 60", targets=["a0", "a1"], parallel=2))
        self.settle()

    def settle(self) -> None:
        """Commit the setup (the only flush a test does, and never after the call it checks)."""
        self.storage.flush()
        assert not self.storage.dirty

    def reopened(self) -> Storage:
        return open_storage(self.path)

    def close(self) -> None:
        self.storage.close()


@pytest.fixture
def world(tmp_path):
    w = World(str(tmp_path / "master.db"))
    yield w
    w.close()


Check = Callable[[Storage], bool]
#: (handler, method) -> a scenario: makes the call, returns whether a reopened database shows its change
SCENARIOS: dict[tuple[str, str], Callable[[World], Check]] = {}


def scenario(handler: str, method: str):
    def register(fn: Callable[[World], Check]) -> Callable[[World], Check]:
        SCENARIOS[(handler, method)] = fn
        return fn
    return register


@scenario("admin", "add_task")
def _add_task(w: World) -> Check:
    task_id = w.admin.add_task({"script": "echo hi", "targets": ["a1"]})
    return lambda db: task_id in db.tasks


@scenario("admin", "cancel_task")
def _cancel_task(w: World) -> Check:
    assert w.admin.cancel_task(w.live.id)["state"] == State.CANCELLED

    return lambda db: (db.tasks[w.live.id].state is State.CANCELLED
                       and {t.state for t in db.tasks[w.live.id].targets.values()} == {State.CANCELLED})


@scenario("admin", "retry_task")
def _retry_task(w: World) -> Check:
    w.scheduler.cancel(w.live.id)  # both targets CANCELLED before they started
    w.settle()
    answer = w.admin.retry_task(w.live.id, {"only": ["CANCELLED"]})
    assert answer["retry_of"] == w.live.id and answer["targets"] == ["a0", "a1"]
    return lambda db: answer["task_id"] in db.tasks and db.tasks[answer["task_id"]].retry_of == w.live.id


@scenario("admin", "job_save")
def _job_save(w: World) -> Check:
    assert w.admin.job_save("fresh", {"script": "echo new", "targets": ["a1"]})["created"] is True
    return lambda db: [v["version"] for v in db.jobs.get("fresh", [])] == [1]


@scenario("admin", "job_rollback")
def _job_rollback(w: World) -> Check:
    assert w.admin.job_rollback("deploy", 1)["version"] == 3
    return lambda db: [v["script"] for v in db.jobs["deploy"]] == [b"echo v1", b"echo v2", b"echo v1"]


@scenario("admin", "job_run")
def _job_run(w: World) -> Check:
    task_id = w.admin.job_run("deploy", {"version": 1})["task_id"]

    return lambda db: task_id in db.tasks and (db.tasks[task_id].job, db.tasks[task_id].job_version) == (
        "deploy", 1)


@scenario("admin", "group_put")
def _group_put(w: World) -> Check:
    w.admin.group_put("pair", {"targets": ["a0", "a1"]})
    return lambda db: db.groups.get("pair") == {"selector": None, "targets": ["a0", "a1"]}


@scenario("admin", "token_create")
def _token_create(w: World) -> Check:
    made = w.admin.token_create({"user": "bob", "role": "viewer"}, {"user": "admin", "selector": None})
    return lambda db: db.tokens[made["token_id"]].user == "bob" and db.tokens[made["token_id"]].created_by == "admin"


@scenario("admin", "token_delete")
def _token_delete(w: World) -> Check:
    w.admin.token_delete(w.token["token_id"])
    return lambda db: w.token["token_id"] not in db.tokens


@scenario("admin", "audit_record")
def _audit_record(w: World) -> Check:
    w.admin.audit_record({"user": "alice", "action": "task.submit", "status": 201, "object": "t1"})
    return lambda db: [e["object"] for e in db.query_audit("alice", None, None, 10)] == ["t1"]


@scenario("admin", "schedule_create")
def _schedule_create(w: World) -> Check:
    made = w.admin.schedule_create({"job": "deploy", "cron": "*/5 * * * *", "timezone": "Asia/Shanghai"})
    return lambda db: db.schedules[made["schedule_id"]].timezone == "Asia/Shanghai"


@scenario("admin", "schedule_update")
def _schedule_update(w: World) -> Check:
    w.admin.schedule_update(w.schedule, {"enabled": False})
    return lambda db: db.schedules[w.schedule].enabled is False


@scenario("admin", "schedule_delete")
def _schedule_delete(w: World) -> Check:
    w.admin.schedule_delete(w.schedule)
    return lambda db: w.schedule not in db.schedules


@scenario("admin", "group_delete")
def _group_delete(w: World) -> Check:
    w.admin.group_delete("web")
    return lambda db: "web" not in db.groups


def _target(db: Storage, task_id: str, agent_id: str) -> TargetRecord:
    return db.tasks[task_id].targets[agent_id]


def _key_states(db: Storage) -> dict[str, str]:
    return {agent_id: record.state.value for agent_id, record in db.keys.items()}


@scenario("admin", "keys_accept")
def _keys_accept(w: World) -> Check:
    w.admin.keys_accept("p1")
    return lambda db: _key_states(db)["p1"] == "accepted"


@scenario("admin", "keys_reject")
def _keys_reject(w: World) -> Check:
    w.admin.keys_reject("a1")
    return lambda db: _key_states(db)["a1"] == "rejected"


@scenario("admin", "keys_delete")
def _keys_delete(w: World) -> Check:
    w.admin.keys_delete("p1")
    return lambda db: "p1" not in db.keys


@scenario("admin", "keys_decide_many")
def _keys_decide_many(w: World) -> Check:
    assert w.admin.keys_decide_many("accept", {"all_pending": True})["done"] == 2
    return lambda db: (_key_states(db)["p1"], _key_states(db)["p2"]) == ("accepted", "accepted")


@scenario("admin", "keys_delete_many")
def _keys_delete_many(w: World) -> Check:
    assert w.admin.keys_delete_many({"agent_ids": ["p1", "p2", "nobody"]})["done"] == 2
    return lambda db: not {"p1", "p2"} & set(db.keys)


@scenario("agent", "get_task")
def _get_task(w: World) -> Check:
    message = w.agent.get_task("a0")
    assert message["payload"]["id"] == w.live.id
    return lambda db: _target(db, w.live.id, "a0").state is State.RUNNING


@scenario("agent", "send")
def _send_result(w: World) -> Check:
    assert w.scheduler.next_task("a0") is w.live
    w.settle()
    answer = w.agent.send(ResultMessage(id=w.live.id, agent_id="a0", code=0, output=b"done\n").to_message())
    assert answer["ok"] and answer["applied"]

    return lambda db: (_target(db, w.live.id, "a0").state, _target(db, w.live.id, "a0").output) == (
        State.SUCCEED, b"done\n")


def test_every_public_method_is_declared_read_only_or_commits():
    """A new handler method must be classified here; a changing one must carry ``@commits``."""
    for cls, reads, mixed in ((AdminHandler, ADMIN_READS, ADMIN_MIXED), (AgentHandler, AGENT_READS, AGENT_MIXED)):
        for name in sorted(public_methods(cls)):
            method = getattr(cls, name)
            if name in reads:
                assert not changes_state(method), f"{cls.__name__}.{name} is declared read-only but commits"
            elif name in mixed:
                assert changes_state(getattr(cls, mixed[name])), f"{cls.__name__}.{mixed[name]} lacks @commits"
            else:
                assert changes_state(method), (f"{cls.__name__}.{name} is neither @commits nor declared read-only "
                                               "in this test: does its answer wait for its commit?")
    changing = {("admin", n) for n in public_methods(AdminHandler) - ADMIN_READS - set(ADMIN_MIXED)}
    changing |= {("agent", n) for n in public_methods(AgentHandler) - AGENT_READS}
    assert changing == set(SCENARIOS), "every changing method needs a durability scenario below"


@pytest.mark.parametrize("handler, method", sorted(SCENARIOS))
def test_a_change_is_on_disk_when_the_call_returns(world, handler, method):
    check = SCENARIOS[(handler, method)](world)
    reopened = world.reopened()  # another connection, as a master restarted after kill -9 would read
    try:
        assert check(reopened), f"{handler}.{method}: its change is not on disk when it returns"
    finally:
        reopened.close()


READ_CALLS: dict[tuple[str, str], Callable[[World], object]] = {
    ("admin", "get_agents"): lambda w: w.admin.get_agents(),
    ("admin", "get_result"): lambda w: w.admin.get_result({"task_id": w.live.id}),
    ("admin", "get_target"): lambda w: w.admin.get_target(w.live.id, "a0"),
    ("admin", "get_tasks"): lambda w: w.admin.get_tasks(),
    ("admin", "job_get"): lambda w: w.admin.job_get("deploy", 1),
    ("admin", "job_versions"): lambda w: w.admin.job_versions("deploy"),
    ("admin", "jobs_list"): lambda w: w.admin.jobs_list(),
    ("admin", "job_diff"): lambda w: w.admin.job_diff("deploy", 1, 2),
    ("admin", "ping"): lambda w: w.admin.ping(),
    ("admin", "group_get"): lambda w: w.admin.group_get("web"),
    ("admin", "groups_list"): lambda w: w.admin.groups_list(),
    ("admin", "keys_list"): lambda w: w.admin.keys_list(),
    ("admin", "metrics"): lambda w: w.admin.metrics(),
    ("admin", "task_events"): lambda w: w.admin.task_events(w.live.id),
    ("admin", "schedules_list"): lambda w: w.admin.schedules_list(),
    ("admin", "tokens_list"): lambda w: w.admin.tokens_list(),
    ("admin", "audit_query"): lambda w: w.admin.audit_query({"user": "alice"}),
    ("admin", "schedule_get"): lambda w: w.admin.schedule_get(w.schedule),
    ("agent", "watch_cancel"): lambda w: w.agent.watch_cancel("a0", w.live.id),
    ("agent", "ping"): lambda w: w.agent.ping(),
}


def test_every_read_only_method_has_a_call_below():
    assert set(READ_CALLS) == {("admin", n) for n in ADMIN_READS} | {("agent", n) for n in AGENT_READS}


@pytest.mark.parametrize("handler, method", sorted(READ_CALLS))
def test_a_read_only_method_leaves_nothing_to_commit(world, handler, method):
    """Guards the declared set: a method that saves something does not belong in it."""
    READ_CALLS[(handler, method)](world)
    assert not world.storage.dirty, f"{method} saved something: it changes state and needs @commits"


def test_an_agent_is_told_of_a_cancel_only_once_it_is_committed(world, monkeypatch):
    """watch_cancel wakes as soon as the cancel is made in memory; the agent kills its script on the answer, so
    the answer waits for the cancel's commit (else a failover could keep the target RUNNING, its script dead)."""
    world.scheduler.next_task("a0")
    world.settle()
    monkeypatch.setattr(world.storage, "_commit", lambda *batch: (_ for _ in ()).throw(OSError("disk")))
    monkeypatch.setattr(world.storage, "driver_errors", (OSError,))
    world.scheduler.cancel(world.live.id)
    with pytest.raises(NotDurable, match="not committed yet"):
        world.agent.watch_cancel("a0", world.live.id)
    monkeypatch.undo()
    assert world.agent.watch_cancel("a0", world.live.id) is True
    again = world.reopened()
    assert again.tasks[world.live.id].state.is_finished
    again.close()
