"""Live output, the master's side (master/live.py): the bounds of tails and event logs, cursors and snapshots,
and what the scheduler keeps of a target lost with its agent."""
from __future__ import annotations

import base64

import gevent
import pytest

from mschedule.master.handler import AgentHandler
from mschedule.master.live import EventLog, LiveOutput
from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage
from mschedule.master.waiters import Waiters
from mschedule.utils.exceptions import Conflict, MessageError
from mschedule.utils.messages import AgentInfo, ProgressMessage, ResultMessage
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec


# ---- tails ----------------------------------------------------------------------------------------
def test_a_tail_keeps_its_last_bytes_skips_resends_and_accepts_gaps():
    live = LiveOutput(Waiters(), tail_bytes=8, budget_bytes=1 << 20)
    assert live.feed("t", "a", 0, b"abcd")
    assert not live.feed("t", "a", 0, b"abcd")  # a resend
    assert live.feed("t", "a", 2, b"cdef")  # overlaps: only "ef" is new
    assert live.tail("t", "a") == (b"abcdef", 6)
    assert live.feed("t", "a", 100, b"XYZ")  # a gap (messages lost): kept, the total says so
    assert live.tail("t", "a") == (b"bcdefXYZ", 103)
    assert live.drop("t", "a") == (b"bcdefXYZ", 103)
    assert live.tail("t", "a") is None and len(live) == 0


def test_all_tails_together_stay_within_the_budget():
    live = LiveOutput(Waiters(), tail_bytes=65536, budget_bytes=64 * 4096)
    for i in range(200):
        live.feed("t", f"a{i}", 0, b"x" * 65536)
    assert max(len(live.tail("t", f"a{i}")[0]) for i in range(64, 200)) <= 4096
    assert all(live.tail("t", f"a{i}")[1] == 65536 for i in range(200))


# ---- event logs -------------------------------------------------------------------------------------
def test_an_event_log_keeps_its_last_events_and_bytes():
    log = EventLog(max_events=5, max_bytes=100)
    for i in range(10):
        log.append("target", {"i": i})
    assert [e[0] for e in log.events] == [6, 7, 8, 9, 10]
    assert log.after(log.cursor(5)) == list(log.events)
    assert log.after(log.cursor(4)) is None  # event 5 is gone: the client needs a snapshot
    assert log.after(log.cursor(10)) == []
    assert log.after(log.cursor(11)) is None
    assert log.after("other-3") is None and log.after(None) is None and log.after("garbage") is None
    for _ in range(3):
        log.append("output", {"data": b""}, 40)
    assert log.bytes <= 100 and sum(e[3] for e in log.events) == log.bytes


@pytest.fixture
def world():
    sched = Scheduler(Storage(), agent_timeout=10)
    for agent_id in ("a0", "a1"):
        sched.agent_seen(AgentInfo(id=agent_id, hostname=f"h-{agent_id}", session="s1"))
    task = sched.submit(TaskSpec(script=b"x", targets=["a0", "a1"], parallel=2, fail_count=5, fail_rate=100))
    return sched, task


def test_poll_gives_a_snapshot_then_each_change_then_the_end(world):
    sched, task = world
    first = sched.live.poll(task, None, 0)
    assert first["reset"] and set(first["snapshot"]["targets"]) == {"a0", "a1"}
    cursor = first["cursor"]
    sched.next_task("a0", "s1")
    sched.apply_progress(ProgressMessage(task.id, "a0", 0, b"first\n"))
    answer = sched.live.poll(task, cursor, 0)
    kinds = [(e["event"], e["data"].get("state")) for e in answer["events"]]
    assert kinds == [("task", "RUNNING"), ("target", "RUNNING"), ("output", None)]
    assert base64.b64decode(answer["events"][2]["data"]["data"]) == b"first\n"
    assert not answer["reset"]
    # a reconnect with the last id resumes, with nothing missed
    assert sched.live.poll(task, answer["events"][0]["id"], 0)["events"] == answer["events"][1:]
    sched.next_task("a1", "s1")
    sched.apply_result(ResultMessage(id=task.id, agent_id="a0", code=0, output=b"first\nsecond\n"))
    sched.apply_result(ResultMessage(id=task.id, agent_id="a1", code=1))
    rest = sched.live.poll(task, answer["cursor"], 0)["events"]
    assert [e["event"] for e in rest] == ["target", "output", "target", "target", "task", "end"]
    # what a0 printed after its last progress comes with its result: the events carry its whole output
    assert (rest[1]["data"]["offset"], base64.b64decode(rest[1]["data"]["data"])) == (6, b"second\n")
    assert rest[2]["data"]["output_streamed"] and rest[2]["data"]["output_bytes"] == 13
    assert rest[-1]["data"]["state"] == "SUCCEED"
    again = sched.live.poll(task, rest[-1]["id"], 30)  # at once: nothing will come after the end
    assert [e["event"] for e in again["events"]] == ["end"] and not again["reset"]
    assert len(sched.live) == 0  # no tail outlives its target


def test_the_end_says_what_the_task_ran_with_secrets_masked():
    sched = Scheduler(Storage(), agent_timeout=10)
    sched.agent_seen(AgentInfo(id="a0", hostname="h", session="s1"))
    task = sched.submit(TaskSpec(script=b"x", targets=["a0"], env={"REGION": "bj", "TOKEN": "hunter2"},
                                 secrets=["TOKEN"], notify=[{"url": "http://127.0.0.1:9/hook"}]))
    task.created_by = "otto"
    cursor = sched.live.poll(task, None, 0)["cursor"]
    sched.next_task("a0", "s1")
    sched.apply_result(ResultMessage(id=task.id, agent_id="a0", code=0))
    end = sched.live.poll(task, cursor, 0)["events"][-1]
    assert end["event"] == "end"
    data = end["data"]
    assert data["env"] == {"REGION": "bj", "TOKEN": "***"} and data["secrets"] == ["TOKEN"]
    assert data["created_by"] == "otto" and data["notify"][0]["url"] == "http://127.0.0.1:9/hook"
    assert "hunter2" not in repr(end)
    for name in ("params", "schedule_id", "schedule_tick", "notifications", "cancelled_by"):
        assert name in data


def test_a_poll_waits_until_something_happens(world):
    sched, task = world
    cursor = sched.live.poll(task, None, 0)["cursor"]
    sched.live.coalesce = 0
    waiting = gevent.spawn(sched.live.poll, task, cursor, 5)
    gevent.sleep(0.05)
    assert not waiting.ready()
    sched.next_task("a0", "s1")
    answer = waiting.get(timeout=1)
    assert [e["event"] for e in answer["events"]] == ["task", "target"]
    assert len(sched.waiters) == 0


def test_a_finished_task_answers_a_snapshot_and_its_end_without_keeping_a_log(world):
    sched, task = world
    sched.cancel(task.id)
    answer = sched.live.poll(task, None, 30)
    assert answer["reset"] and [e["event"] for e in answer["events"]] == ["end"]
    assert sched.live.followed() == 0


def test_too_many_followed_tasks_is_a_conflict(world):
    sched, task = world
    sched.live.max_logs = 1
    sched.live.poll(task, None, 0)
    other = sched.submit(TaskSpec(script=b"x", targets=["a0"]))
    with pytest.raises(Conflict):
        sched.live.poll(other, None, 0)


def test_all_event_logs_together_stay_within_their_budget(world):
    """256 followed tasks of 4 MiB each would be 1 GiB: the logs share LOG_BUDGET_BYTES instead."""
    sched, first = world
    live = sched.live
    live.max_log_bytes, live.log_budget_bytes = 1 << 20, 1 << 20  # 8 logs: 128 KiB each
    tasks = [first] + [sched.submit(TaskSpec(script=b"x", targets=["a0"])) for _ in range(7)]
    for task in tasks:
        live.poll(task, None, 0)
    for task in tasks:
        log = live._logs[task.id]
        for offset in range(0, 200_000, 10_000):
            log.append("output", {"agent_id": "a0", "offset": offset, "data": b"x" * 10_000}, 10_000)
    assert live.followed() == 8
    assert all(log.bytes <= 131072 for log in live._logs.values())  # each wrote 200,000
    assert sum(log.bytes for log in live._logs.values()) <= 1 << 20


def test_a_lost_agent_keeps_the_output_that_reached_the_master():
    clock = type("C", (), {"now": 1000.0, "__call__": lambda self: self.now})()
    sched = Scheduler(Storage(), agent_timeout=10, clock=clock)
    sched.agent_seen(AgentInfo(id="a0", hostname="h", session="s1"))
    task = sched.submit(TaskSpec(script=b"x", targets=["a0"]))
    sched.next_task("a0", "s1")
    sched.apply_progress(ProgressMessage(task.id, "a0", 0, b"first\n"))
    clock.now += 60
    assert sched.check_agents() == ["a0"]
    target = task.targets["a0"]
    assert target.state is State.FAILED
    assert target.output.endswith(b"first\n[mschedule: agent offline: no heartbeat for 60.0s]\n")
    assert len(sched.live) == 0


def test_progress_for_a_target_not_running_is_ignored(world):
    sched, task = world
    assert not sched.apply_progress(ProgressMessage(task.id, "a0", 0, b"x"))  # WAITING
    assert not sched.apply_progress(ProgressMessage("nope", "a0", 0, b"x"))
    assert len(sched.live) == 0


def test_the_master_refuses_a_malformed_progress_naming_its_field():
    handler = AgentHandler(Scheduler(Storage(), agent_timeout=10))
    msg = ProgressMessage(id="t1", agent_id="a1", offset=0, data=b"x").to_message()
    msg["payload"]["offset"] = -5
    with pytest.raises(MessageError) as refused:
        handler.send(msg)
    assert refused.value.field == "payload.offset"


def test_the_master_takes_progress_for_an_unknown_task_as_not_applied():
    handler = AgentHandler(Scheduler(Storage(), agent_timeout=10))
    answer = handler.send(ProgressMessage(id="t1", agent_id="a1", offset=0, data=b"x").to_message())
    assert answer["ok"] and answer["applied"] is False


def test_a_result_that_does_not_continue_the_stream_is_not_streamed(world):
    """An output the agent's cap cut no longer matches what the events carried: no last ``output`` event,
    ``output_streamed`` false, so a follower fetches it (fails before the final-output events: no such field)."""
    sched, task = world
    cursor = sched.live.poll(task, None, 0)["cursor"]
    sched.next_task("a0", "s1")
    sched.apply_progress(ProgressMessage(task.id, "a0", 0, b"first\n"))
    sched.apply_result(ResultMessage(id=task.id, agent_id="a0", code=0, output=b"fir[cut]\n", truncated=True))
    events = sched.live.poll(task, cursor, 0)["events"]
    assert [e["event"] for e in events][-2:] == ["output", "target"]  # the progress, then the end: nothing more
    assert events[-1]["data"]["output_streamed"] is False and events[-1]["data"]["output_bytes"] == 9
