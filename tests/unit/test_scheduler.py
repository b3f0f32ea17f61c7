"""The scheduling state machine, driven directly (no network, fake clock)."""
import time
from collections import deque

import gevent
import gevent.event
import pytest

from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage
from mschedule.utils.exceptions import NotFound, ValidationError
from mschedule.utils.messages import AgentInfo, ResultMessage
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sched(clock):
    return Scheduler(Storage(), agent_timeout=10, clock=clock)


def add_agents(sched, n, prefix="a"):
    ids = [f"{prefix}{i}" for i in range(n)]
    for agent_id in ids:
        sched.agent_seen(AgentInfo(id=agent_id, hostname=f"h-{agent_id}", session="s1"))
    return ids


def submit(sched, targets, **kw):
    return sched.submit(TaskSpec(script=b"true", targets=targets, **kw))


def finish(sched, task, agent_id, code=0):
    return sched.apply_result(ResultMessage(id=task.id, agent_id=agent_id, code=code))


def pull_all(sched, ids):
    """Every idle agent polls once; returns the agents that got this task."""
    return [a for a in ids if sched.next_task(a) is not None]


def test_window_never_exceeded(sched):
    ids = add_agents(sched, 5)
    task = submit(sched, ids, parallel=2)
    started = pull_all(sched, ids)
    assert len(started) == 2 and task.running == 2
    assert task.state is State.RUNNING
    peak = task.running
    while task.pending:
        running = [a for a in ids if task.targets[a].state is State.RUNNING]
        finish(sched, task, running[0])
        pull_all(sched, [a for a in ids if task.targets[a].state is State.WAITING])
        peak = max(peak, task.running)
    assert peak == 2
    assert task.state is State.SUCCEED
    assert task.counts[State.SUCCEED] == 5


def test_sliding_window_refills_one_slot_at_once(sched):
    ids = add_agents(sched, 4)
    task = submit(sched, ids, parallel=2)
    first = pull_all(sched, ids)
    finish(sched, task, first[0])
    assert len(pull_all(sched, [a for a in ids if a not in first])) == 1  # not a batch: one slot refilled
    assert task.running == 2


@pytest.mark.parametrize("fail_count,failures,aborted", [(1, 1, False), (1, 2, True), (0, 1, True), (2, 2, False),
                                                         (2, 3, True)])
def test_fail_count_boundary(sched, fail_count, failures, aborted):
    ids = add_agents(sched, 6)
    task = submit(sched, ids, parallel=6, fail_count=fail_count, fail_rate=100)
    pull_all(sched, ids)
    for agent_id in ids[:failures]:
        finish(sched, task, agent_id, code=1)
    assert (task.state is State.FAILED) == aborted


@pytest.mark.parametrize("fail_rate,failures,aborted", [(20, 2, False), (20, 3, True), (50, 5, False), (50, 6, True),
                                                        (0, 1, True), (100, 10, False)])
def test_fail_rate_boundary(sched, fail_rate, failures, aborted):
    ids = add_agents(sched, 10)
    task = submit(sched, ids, parallel=10, fail_rate=fail_rate)
    pull_all(sched, ids)
    for agent_id in ids[:failures]:
        finish(sched, task, agent_id, code=3)
    assert (task.state is State.FAILED) == aborted


def test_default_limits_stop_at_first_failure(sched):
    ids = add_agents(sched, 3)
    task = submit(sched, ids)  # parallel 1, fail_rate 0, fail_count -1
    pull_all(sched, ids)
    finish(sched, task, ids[0], code=1)
    assert task.state is State.FAILED
    assert [task.targets[a].state for a in ids] == [State.FAILED, State.CANCELLED, State.CANCELLED]
    assert pull_all(sched, ids) == []  # cancelled targets never run


def test_abort_cancels_waiting_and_keeps_running_results(sched):
    ids = add_agents(sched, 5)
    task = submit(sched, ids, parallel=3, fail_count=0, fail_rate=100)
    running = pull_all(sched, ids)
    finish(sched, task, running[0], code=2)
    assert task.state is State.FAILED
    assert task.counts[State.CANCELLED] == 2 and task.running == 2
    assert finish(sched, task, running[1], code=0)  # a running target still reports
    assert task.targets[running[1]].state is State.SUCCEED
    assert task.state is State.FAILED


def test_tolerated_failures_end_succeed(sched):
    ids = add_agents(sched, 4)
    task = submit(sched, ids, parallel=4, fail_rate=100)
    pull_all(sched, ids)
    for i, agent_id in enumerate(ids):
        finish(sched, task, agent_id, code=i % 2)
    assert task.state is State.SUCCEED
    assert task.counts[State.FAILED] == 2


def test_offline_agent_fails_running_and_waiting_targets(sched, clock):
    ids = add_agents(sched, 2)
    t1 = submit(sched, ids, parallel=2, fail_rate=100)
    t2 = submit(sched, [ids[0]], fail_rate=100)
    pull_all(sched, ids)
    clock.now += 5
    sched.agent_seen(AgentInfo(id=ids[1], hostname="h", session="s1"))
    clock.now += 6
    assert sched.check_agents() == [ids[0]]
    assert t1.targets[ids[0]].state is State.FAILED
    assert b"no heartbeat" in t1.targets[ids[0]].output
    assert t2.targets[ids[0]].state is State.FAILED  # was WAITING behind t1
    assert t2.state is State.SUCCEED  # fail_rate 100 tolerates it
    assert not sched.storage.agents[ids[0]].online
    finish(sched, t1, ids[1])
    assert t1.state is State.SUCCEED


def test_offline_failure_counts_toward_limits(sched, clock):
    ids = add_agents(sched, 3)
    task = submit(sched, ids, parallel=1)
    assert sched.next_task(ids[0]) is task
    clock.now += 11
    for other in ids[1:]:
        sched.agent_seen(AgentInfo(id=other, hostname="h", session="s1"))
    sched.check_agents()
    assert task.state is State.FAILED
    assert [task.targets[a].state for a in ids] == [State.FAILED, State.CANCELLED, State.CANCELLED]


def test_late_result_recorded_but_outcome_unchanged(sched, clock):
    ids = add_agents(sched, 1)
    task = submit(sched, ids, fail_rate=100)
    sched.next_task(ids[0])
    clock.now += 11
    sched.check_agents()
    assert task.state is State.SUCCEED  # the only target failed, tolerated
    assert not finish(sched, task, ids[0], code=0)
    assert task.targets[ids[0]].state is State.FAILED
    assert b"late result" in task.targets[ids[0]].output


def test_restarted_agent_fails_target_it_was_running(sched):
    ids = add_agents(sched, 1)
    task = submit(sched, ids, fail_rate=100)
    sched.next_task(ids[0])
    sched.agent_seen(AgentInfo(id=ids[0], hostname="h", session="s2", running=None))
    assert task.targets[ids[0]].state is State.FAILED
    assert b"restarted" in task.targets[ids[0]].output


def test_heartbeat_of_same_session_does_not_fail_running_target(sched):
    ids = add_agents(sched, 1)
    task = submit(sched, ids)
    sched.next_task(ids[0])
    sched.agent_seen(AgentInfo(id=ids[0], hostname="h", session="s1", running=None))  # in flight before dispatch
    assert task.targets[ids[0]].state is State.RUNNING


def test_lost_dispatch_reply_is_handed_out_again(sched):
    ids = add_agents(sched, 1)
    task = submit(sched, ids)
    assert sched.next_task(ids[0]) is task
    assert sched.next_task(ids[0]) is task  # the agent polls again: it never got it
    assert task.running == 1


def test_duplicate_result_applied_once(sched):
    ids = add_agents(sched, 2)
    task = submit(sched, ids, parallel=2, fail_rate=100)
    pull_all(sched, ids)
    assert finish(sched, task, ids[0], code=1)
    assert not finish(sched, task, ids[0], code=0)
    assert task.targets[ids[0]].code == 1 and task.failed == 1


def test_one_task_at_a_time_first_come_first_served(sched):
    ids = add_agents(sched, 1)
    t1 = submit(sched, ids)
    t2 = submit(sched, ids)
    assert sched.next_task(ids[0]) is t1
    finish(sched, t1, ids[0])
    assert sched.next_task(ids[0]) is t2


def test_full_window_does_not_block_later_task(sched):
    ids = add_agents(sched, 2)
    t1 = submit(sched, ids, parallel=1)
    t2 = submit(sched, [ids[1]])
    assert sched.next_task(ids[0]) is t1
    assert sched.next_task(ids[1]) is t2  # t1's window is full: ids[1] takes its next task


def test_offline_target_at_submit_fails_at_once(sched, clock):
    ids = add_agents(sched, 2)
    clock.now += 11
    sched.agent_seen(AgentInfo(id=ids[1], hostname="h", session="s1"))
    sched.check_agents()
    task = submit(sched, ids, fail_rate=100)
    assert task.targets[ids[0]].state is State.FAILED
    assert sched.next_task(ids[1]) is task


def test_unknown_target_rejected(sched):
    add_agents(sched, 1)
    with pytest.raises(ValidationError, match="unknown agent id 'nope'"):
        submit(sched, ["a0", "nope"])


def test_unregistered_agent_poll_raises_not_found(sched):
    with pytest.raises(NotFound):
        sched.next_task("ghost")


def test_result_for_unknown_task_ignored(sched):
    add_agents(sched, 1)
    assert not sched.apply_result(ResultMessage(id="nope", agent_id="a0", code=0))


def test_timed_out_result_fails_target(sched):
    ids = add_agents(sched, 1)
    task = submit(sched, ids)
    sched.next_task(ids[0])
    sched.apply_result(ResultMessage(id=task.id, agent_id=ids[0], code=124, timed_out=True))
    assert task.targets[ids[0]].state is State.FAILED and task.targets[ids[0]].timed_out


def test_stopping_agent_goes_offline_and_fails_its_targets(sched):
    ids = add_agents(sched, 2)
    task = submit(sched, ids, parallel=2, fail_rate=100)
    sched.next_task(ids[0])
    sched.agent_seen(AgentInfo(id=ids[0], hostname="h", session="s1", stopping=True))
    assert not sched.storage.agents[ids[0]].online
    assert b"agent stopped" in task.targets[ids[0]].output
    later = submit(sched, ids, fail_rate=100)
    assert later.targets[ids[0]].state is State.FAILED  # offline at submit
    assert sched.next_task(ids[0]) is None


def test_poll_from_an_old_process_gets_nothing(sched):
    ids = add_agents(sched, 1)
    sched.agent_seen(AgentInfo(id=ids[0], hostname="h", session="s2"))
    task = submit(sched, ids)
    assert sched.next_task(ids[0], session="s1") is None
    assert sched.next_task(ids[0], session="s2") is task


def labelled(sched, spec):
    """Agents from (id, hostname, labels) triples."""
    for agent_id, hostname, labels in spec:
        sched.agent_seen(AgentInfo(id=agent_id, hostname=hostname, labels=labels, session="s"))


FLEET = [("w1", "web-1", {"dc": "bj", "role": "web"}), ("w2", "web-2", {"dc": "sh", "role": "web"}),
         ("d1", "db-1", {"dc": "bj", "role": "db"}), ("x1", "misc", {})]


def test_selector_union_resolved_at_submit(sched):
    labelled(sched, FLEET)
    task = sched.submit(TaskSpec(script=b"true", targets=["x1"], selector={"hostname": "web-*"}))
    assert list(task.targets) == ["x1", "w1", "w2"]
    task = sched.submit(TaskSpec(script=b"true", targets=[], selector={"labels": {"dc": "bj", "role": "db"}}))
    assert list(task.targets) == ["d1"]
    labelled(sched, [("w3", "web-3", {})])
    assert "w3" not in task.targets  # later agents do not join


def test_selector_matching_nothing_is_an_error(sched):
    labelled(sched, FLEET)
    with pytest.raises(ValidationError) as raised:
        sched.submit(TaskSpec(script=b"true", targets=[], selector={"labels": {"dc": "mars"}}))
    # the selector as the operator wrote it (JSON), not a Python repr
    assert str(raised.value) == 'selector: matches no agent ({"labels": {"dc": "mars"}})'
    with pytest.raises(ValidationError, match="selector.group: no group named 'nope'"):
        sched.submit(TaskSpec(script=b"true", targets=[], selector={"group": "nope"}))


def test_group_selector_and_ids(sched):
    labelled(sched, FLEET)
    sched.storage.save_group("bj", {"selector": {"labels": {"dc": "bj"}}, "targets": ["x1"]})
    assert sched.group_members("bj") == ["x1", "w1", "d1"]
    task = sched.submit(TaskSpec(script=b"true", targets=[], selector={"group": "bj", "hostname": "web-*"}))
    assert list(task.targets) == ["w1"]


def test_batch_by_runs_one_value_at_a_time_in_order(sched):
    labelled(sched, FLEET)
    task = sched.submit(TaskSpec(script=b"true", targets=["w1", "w2", "d1", "x1"], parallel=5, fail_rate=100,
                                 batch_by="dc", batch_order=["sh"]))
    assert [(v, m) for v, m in task.batches] == [("sh", ["w2"]), ("bj", ["w1", "d1"]), (None, ["x1"])]
    assert pull_all(sched, ["w1", "d1", "x1"]) == []  # not their turn
    assert pull_all(sched, ["w2"]) == ["w2"]
    finish(sched, task, "w2")
    assert task.batch == 1
    assert pull_all(sched, ["w1", "d1", "x1"]) == ["w1", "d1"]  # parallel applies inside the batch
    finish(sched, task, "w1")
    assert pull_all(sched, ["x1"]) == []
    finish(sched, task, "d1")
    assert pull_all(sched, ["x1"]) == ["x1"]  # agents without the label go last
    finish(sched, task, "x1")
    assert task.state is State.SUCCEED


def test_failure_in_a_batch_stops_every_later_batch(sched):
    labelled(sched, FLEET)
    task = sched.submit(TaskSpec(script=b"true", targets=["w1", "w2", "d1"], parallel=5, batch_by="dc"))
    assert pull_all(sched, ["w1", "w2", "d1"]) == ["w1", "d1"]  # bj first (alphabetical)
    finish(sched, task, "w1", code=1)
    assert task.state is State.FAILED
    assert task.targets["w2"].state is State.CANCELLED


def test_cancel_stops_waiting_and_marks_running_cancelled(sched):
    ids = add_agents(sched, 4)
    task = submit(sched, ids, parallel=2, fail_rate=100)
    running = pull_all(sched, ids)
    assert not sched.watch_cancel(task.id, 0)
    sched.cancel(task.id)
    assert task.state is State.CANCELLED and task.counts[State.CANCELLED] == 2
    assert sched.watch_cancel(task.id, 0)
    assert pull_all(sched, [a for a in ids if a not in running]) == []
    finish(sched, task, running[0], code=137)
    assert task.targets[running[0]].state is State.CANCELLED
    assert sched.cancel(task.id) is task  # idempotent


def test_cancel_finished_task_is_a_conflict(sched):
    from mschedule.utils.exceptions import Conflict

    ids = add_agents(sched, 1)
    task = submit(sched, ids)
    sched.next_task(ids[0])
    finish(sched, task, ids[0])
    with pytest.raises(Conflict, match="already ended"):
        sched.cancel(task.id)


# ---- waiters: released and forgotten when their task ends ---------------------------------
def held_events(sched):
    """Every gevent Event the scheduler holds, wherever it keeps them (dicts of events, a registry)."""
    found, seen, stack = 0, set(), [v for k, v in vars(sched).items() if k not in ("storage", "clock")]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float)) or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, gevent.event.Event):
            found += 1
        elif isinstance(obj, dict):
            stack += obj.values()
        elif isinstance(obj, (list, tuple, set, deque)):
            stack += obj
        else:
            stack += [getattr(obj, name) for name in getattr(obj, "__slots__", ()) if hasattr(obj, name)]
            stack += getattr(obj, "__dict__", {}).values()
    return found


def end_task(sched, task, agent_id, how):
    """End a running single-target task the way ``how`` says (the target ``agent_id`` is RUNNING)."""
    if how == "cancel":
        sched.cancel(task.id)
        finish(sched, task, agent_id, code=137)
    else:
        finish(sched, task, agent_id, code=1 if how == "abort" else 0)
        if how == "prune":
            sched.prune(keep_tasks=0)


def test_no_waiter_outlives_its_task(sched):
    """100 tasks that each had a cancel watcher and a finish waiter, then a prune: nothing is left."""
    ids = add_agents(sched, 1)
    waiting = []
    try:
        for i in range(100):
            task = submit(sched, ids)
            assert sched.next_task(ids[0]) is task
            waiting += [gevent.spawn(sched.watch_cancel, task.id, 30), gevent.spawn(sched.wait_finished, task.id, 30)]
            gevent.sleep(0)  # both block on the task
            end_task(sched, task, ids[0], ("succeed", "abort", "cancel")[i % 3])
        sched.prune(keep_tasks=0)
        assert not sched.storage.tasks
        assert held_events(sched) == 0
        gevent.wait(waiting, timeout=1)
        assert sum(not g.ready() for g in waiting) == 0  # every waiter answered
    finally:
        gevent.killall(waiting)


@pytest.mark.parametrize("how", ["succeed", "abort", "cancel", "prune"])
def test_waiters_on_an_ending_task_all_return_at_once(sched, how):
    ids = add_agents(sched, 1)
    task = submit(sched, ids)
    sched.next_task(ids[0])
    watchers = [gevent.spawn(sched.watch_cancel, task.id, 30) for _ in range(5)]
    finishers = [gevent.spawn(sched.wait_finished, task.id, 30) for _ in range(5)]
    gevent.sleep(0)
    try:
        end_task(sched, task, ids[0], how)
        gevent.wait(watchers + finishers, timeout=1)
        assert sum(not g.ready() for g in watchers + finishers) == 0
        assert [w.value for w in watchers] == [how == "cancel"] * 5
        expected = {"succeed": State.SUCCEED, "abort": State.FAILED, "cancel": State.CANCELLED,
                    "prune": State.SUCCEED}[how]
        assert all(f.value is task and f.value.state is expected for f in finishers)  # the last state
        assert held_events(sched) == 0
    finally:
        gevent.killall(watchers + finishers)


def test_concurrent_polls_of_one_agent_all_wake(sched):
    """Two polls of one agent at once (the first's reply was lost): a new task wakes both, neither is left
    waiting out its timeout; both answer it (the lost-reply rule: the same task is handed out again)."""
    ids = add_agents(sched, 1)
    polls = [gevent.spawn(sched.wait_task, ids[0], 30, "s1") for _ in range(2)]
    gevent.sleep(0)
    try:
        task = submit(sched, ids)
        gevent.wait(polls, timeout=1)
        assert sum(not p.ready() for p in polls) == 0
        assert [p.value for p in polls] == [task, task]
        assert held_events(sched) == 0
    finally:
        gevent.killall(polls)


def test_polls_that_time_out_leave_nothing_behind():
    sched = Scheduler(Storage(), agent_timeout=10)  # a real clock: wait_task's deadline must pass
    ids = add_agents(sched, 1)
    assert sched.wait_task(ids[0], 0.05, "s1") is None
    task = submit(sched, ids)
    assert sched.next_task(ids[0]) is task
    assert sched.watch_cancel(task.id, 0.05) is False
    assert sched.wait_finished(task.id, 0.05) is task and task.state is State.RUNNING
    assert held_events(sched) == 0


def test_cancel_watch_of_an_aborted_task_is_held_not_answered_at_once(sched):
    """A task aborted by its limits while another agent's script runs on can never be cancelled; an answer at
    once would have that agent ask again at once, in a loop, until its script ends. The watch open at the
    abort answers at once; the next ones are held for their wait, like a watch of a running task."""
    ids = add_agents(sched, 2)
    task = submit(sched, ids, parallel=2)
    pull_all(sched, ids)
    watcher = gevent.spawn(sched.watch_cancel, task.id, 30)
    gevent.sleep(0)
    finish(sched, task, ids[0], code=1)
    assert task.state is State.FAILED and task.targets[ids[1]].state is State.RUNNING
    watcher.join(1)
    assert watcher.ready() and watcher.value is False
    started = time.monotonic()
    assert sched.watch_cancel(task.id, 0.2) is False
    assert time.monotonic() - started >= 0.15
    assert held_events(sched) == 0
