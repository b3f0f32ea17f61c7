"""Cron ticks in a time zone across DST (cronsim, as Debian's cron), and the nicknames."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mschedule.master.schedules import ScheduleClock, cron_expression, ticks
from mschedule.utils.exceptions import ValidationError

BERLIN = ZoneInfo("Europe/Berlin")


def _next(cron, after, n=3):
    it = ticks(cron, "Europe/Berlin", after.timestamp())
    return [next(it).isoformat() for _ in range(n)]


def test_a_time_skipped_by_spring_forward_runs_once_just_after():
    assert _next("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN)) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_a_time_repeated_by_fall_back_runs_once_and_never_again_from_its_own_tick():
    ticks_ = _next("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN))
    assert ticks_[:2] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # the loop goes on from the tick it fired (its last_tick): the repeated hour does not fire it again
    fired = datetime.fromisoformat(ticks_[0])
    assert _next("30 2 * * *", fired, 1) == ["2026-10-26T02:30:00+01:00"]


def test_ticks_from_the_last_tick_strictly_increase_across_fall_back():
    it = ticks("*/30 * * * *", "Europe/Berlin", datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN).timestamp())
    stamps = [next(it).timestamp() for _ in range(6)]
    assert stamps == sorted(set(stamps)) and stamps[1] - stamps[0] == 1800


@pytest.mark.parametrize("nick, expr", [("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
                                        ("@midnight", "0 0 * * *"), ("@yearly", "0 0 1 1 *")])
def test_nicknames(nick, expr):
    assert cron_expression(nick) == expr


def test_bad_expressions():
    for bad in ("", "   ", None, 5, "x" * 201):
        with pytest.raises(ValidationError):
            cron_expression(bad)


def test_the_fast_clock_runs_from_its_start():
    clock = ScheduleClock(start=1000.0, speed=60)
    assert clock.real_seconds(60) == 1 and ScheduleClock.parse(None).start is None
    assert ScheduleClock.parse("1000:60").speed == 60


class ManualClock(ScheduleClock):
    def __init__(self, now: float) -> None:
        super().__init__()
        self.t = now

    def now(self) -> float:
        return self.t


@pytest.fixture
def world():
    from mschedule.master.handler import AdminHandler
    from mschedule.master.scheduler import Scheduler
    from mschedule.master.storage import Storage
    from mschedule.utils.messages import AgentInfo

    storage = Storage()
    scheduler = Scheduler(storage, agent_timeout=10)
    scheduler.agent_seen(AgentInfo(id="a0", hostname="h-a0", session="s1"))
    clock = ManualClock(datetime(2026, 12, 1, 10, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    admin = AdminHandler(scheduler, schedule_clock=clock)
    admin.job_save("j", {"script": "true", "targets": ["a0"]})
    return admin, scheduler, clock


def _finish_all(scheduler):
    from mschedule.utils.states import State
    for task in scheduler.storage.tasks.values():
        if not task.state.is_finished:
            for target in task.targets.values():
                task.set_target_state(target, State.SUCCEED)
            scheduler._finish(task, State.SUCCEED)


def test_overlap_queue_fires_one_waiting_tick_when_the_previous_run_ends(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *", "overlap": "queue"})["schedule_id"]
    schedules = admin.schedules
    for _ in range(3):  # 10:01, 10:02, 10:03 while the first run never ends
        clock.t += 60
        schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 1 and record.queued_tick == record.last_tick and record.skipped == 1
    _finish_all(scheduler)
    schedules.fire_due()
    assert record.fired == 2 and record.queued_tick is None
    ticks_ = [t.schedule_tick for t in scheduler.storage.tasks.values()]
    assert ticks_ == sorted(set(ticks_)) and ticks_[-1] == record.last_tick  # the newest queued tick ran


def test_a_clock_going_back_never_fires_a_tick_again(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *", "overlap": "allow"})["schedule_id"]
    clock.t += 60
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 1
    clock.t -= 600  # ten minutes back
    for _ in range(5):
        clock.t += 60
        admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 1  # the ticks before the fired one are not due again
    clock.t += 360
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 2


def test_a_tick_that_cannot_run_is_recorded_and_the_next_one_tried(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *"})["schedule_id"]
    admin.job_save("j", {"script": "true", "targets": ["a0"], "params": [{"name": "X", "required": True}]})
    clock.t += 60
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 0 and record.skips[-1]["reason"].startswith("error: params.X")
    admin.schedule_update(sid, {"params": {"X": "1"}})
    clock.t += 60
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 1


@pytest.mark.parametrize("field", ["overlap", "catchup"])
@pytest.mark.parametrize("value", [[], {}, ["skip"], 1])
def test_an_overlap_or_catchup_of_another_type_is_a_400_naming_it(world, field, value):
    admin, scheduler, _ = world
    with pytest.raises(ValidationError) as exc:
        admin.schedule_create({"job": "j", "cron": "* * * * *", field: value})
    assert exc.value.field == field
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *"})["schedule_id"]
    with pytest.raises(ValidationError) as exc:
        admin.schedule_update(sid, {field: value})
    assert exc.value.field == field and scheduler.storage.schedules[sid].overlap == "skip"


@pytest.mark.parametrize("later", [[{"name": "PW"}], []], ids=["declared-plain", "no-longer-declared"])
def test_a_value_kept_as_a_secret_stays_masked_when_a_later_job_version_is_not_secret(world, later):
    admin, scheduler, clock = world
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW", "secret": True}]})
    sid = admin.schedule_create({"job": "s", "cron": "* * * * *", "params": {"PW": "hunter2"}})["schedule_id"]
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": later})
    assert admin.schedule_get(sid)["params"] == {"PW": "***"}
    assert admin.schedules_list()[-1]["params"] == {"PW": "***"}
    if later:  # still declared: the tick runs, and its task keeps the value as a secret
        clock.t += 60
        admin.schedules.fire_due()
        task = scheduler.storage.tasks[scheduler.storage.schedules[sid].runs[-1]["task_id"]]
        assert task.summary()["env"] == {"PW": "***"} and task.extra["env"] == {"PW": "***"}
        assert task.env == {"PW": "hunter2"}  # in memory, for the agent


def _during_next_flush(storage, action):
    """Run ``action`` inside the next commit of ``storage``, as a request served while the loop's commit yields."""
    flush = storage.flush

    def flushing():
        storage.flush = flush
        action()
        flush()
    storage.flush = flushing


def test_a_cron_changed_while_its_tick_commits_fires_on_the_new_cron(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "1 10 * * *", "overlap": "allow"})["schedule_id"]
    clock.t += 35  # 10:01:05: the daily tick is due
    _during_next_flush(scheduler.storage, lambda: admin.schedule_update(sid, {"cron": "* * * * *"}))
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 1 and scheduler.storage.schedules[sid].cron == "* * * * *"
    clock.t += 60  # 10:02:05: a tick of the new expression, not tomorrow's 10:01
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 2


def test_a_change_made_while_a_queued_tick_commits_is_kept(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *", "overlap": "queue"})["schedule_id"]
    for _ in range(2):  # 10:01 fires, 10:02 waits for it
        clock.t += 60
        admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].queued_tick is not None
    _finish_all(scheduler)
    clock.t += 60  # 10:03: the queued tick fires; a PATCH arrives while it commits
    _during_next_flush(scheduler.storage, lambda: admin.schedule_update(sid, {"description": "changed"}))
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.description == "changed"
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].description == "changed"


def test_a_catch_up_records_as_missed_a_tick_that_was_missed_not_the_one_it_fires(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *", "overlap": "allow"})["schedule_id"]
    clock.t += 150  # 10:03:00 is 0 s late, 10:02:00 and 10:01:00 were missed: the master was stopped
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    fired = record.runs[-1]["tick"]
    assert record.fired == 1 and record.missed == 2
    assert record.skips == [{"tick": fired - 60, "reason": "missed", "count": 2}]  # the newest missed one


def test_an_error_about_a_kept_secret_never_says_its_value(world):
    admin, scheduler, clock = world
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW", "secret": True}]})
    sid = admin.schedule_create({"job": "s", "cron": "* * * * *", "params": {"PW": "hunter2"}})["schedule_id"]
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW", "pattern": "[0-9]+"}]})
    for change in ({"description": "x"}, {"params": {"PW": "***"}}):  # the value kept, checked against v2
        with pytest.raises(ValidationError) as exc:
            admin.schedule_update(sid, change)
        assert exc.value.field == "params.PW" and "hunter2" not in str(exc.value) and "***" in str(exc.value)
    clock.t += 60
    admin.schedules.fire_due()  # the tick cannot run: its reason is recorded, without the value
    record = scheduler.storage.schedules[sid]
    assert record.fired == 0 and record.skips[-1]["reason"].startswith("error: params.PW")
    assert "hunter2" not in str(admin.schedule_get(sid))
    with pytest.raises(ValidationError):
        admin.schedule_create({"job": "s", "cron": "* * * * *", "params": ["PW"]})


def _restarted(scheduler, clock, settle):
    """A master started again on the same records: a new handler (and schedules) over the restored storage,
    its agents' timeout ``settle``."""
    from mschedule.master.handler import AdminHandler
    scheduler.restore()
    scheduler.agent_timeout = settle
    return AdminHandler(scheduler, schedule_clock=clock)


def _start_running(scheduler, task_id):
    from mschedule.utils.states import State
    task = scheduler.storage.tasks[task_id]
    for target in task.targets.values():
        task.set_target_state(target, State.RUNNING)


def test_after_a_start_overlap_waits_for_the_agents_of_a_run_that_was_running(world):
    """The master died while the previous run ran; its agent finished it meanwhile and reports once it
    reconnects, a moment after the start: the tick due at the start fires, it is not skipped for overlap."""
    import time
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *", "catchup": "last"})["schedule_id"]
    clock.t += 60
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    _start_running(scheduler, record.runs[-1]["task_id"])
    clock.t += 120  # down over a tick
    admin = _restarted(scheduler, clock, settle=0.5)
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 1 and record.skipped == 0  # undecided while the agent may still report
    _finish_all(scheduler)  # its result, from the agent's spool
    clock.t += 1  # the loop's next look
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 2 and record.skipped == 0 and record.missed == 1
    # a run that is really still running: after the settle time, overlap skips as ever
    _start_running(scheduler, record.runs[-1]["task_id"])
    clock.t += 60
    admin = _restarted(scheduler, clock, settle=0.3)
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].skipped == 0
    time.sleep(0.35)
    clock.t += 1
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].skipped == 1 and scheduler.storage.schedules[sid].fired == 2


def test_after_a_start_overlap_waits_for_a_previous_run_still_waiting_for_its_agent(world):
    """The master died before its agent heard of the previous run: it runs that run as soon as the agent
    reconnects; the tick due at the start is not skipped for it meanwhile."""
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *"})["schedule_id"]
    clock.t += 60
    admin.schedules.fire_due()
    clock.t += 60
    admin = _restarted(scheduler, clock, settle=0.5)
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].skipped == 0
    _finish_all(scheduler)
    clock.t += 1
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 2 and scheduler.storage.schedules[sid].skipped == 0


def test_the_mask_is_not_taken_as_a_secret_value_the_schedule_does_not_keep(world):
    admin, scheduler, _ = world
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW", "secret": True},
                                                                            {"name": "V"}]})
    with pytest.raises(ValidationError) as exc:  # a schedule's answer copied into a new one: no value to keep
        admin.schedule_create({"job": "s", "cron": "* * * * *", "params": {"PW": "***"}})
    assert exc.value.field == "params.PW"
    sid = admin.schedule_create({"job": "s", "cron": "* * * * *", "params": {"V": "***"}})["schedule_id"]
    assert scheduler.storage.schedules[sid].params == {"V": "***"}  # a plain value may be anything
    with pytest.raises(ValidationError) as exc:
        admin.schedule_update(sid, {"params": {"PW": "***", "V": "1"}})
    assert exc.value.field == "params.PW"
    admin.schedule_update(sid, {"params": {"PW": "hunter2"}})
    admin.schedule_update(sid, {"params": {"PW": "***", "V": "2"}})  # sent back: kept
    assert scheduler.storage.schedules[sid].params == {"PW": "hunter2", "V": "2"}


def test_a_parameter_made_secret_by_a_new_version_is_masked_at_once(world):
    admin, _, _ = world
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW"}]})
    sid = admin.schedule_create({"job": "s", "cron": "* * * * *", "params": {"PW": "plain"}})["schedule_id"]
    assert admin.schedule_get(sid)["params"] == {"PW": "plain"}
    admin.job_save("s", {"script": "echo $PW", "targets": ["a0"], "params": [{"name": "PW", "secret": True}]})
    assert admin.schedule_get(sid)["params"] == {"PW": "***"}


def test_a_tick_queued_before_a_schedule_was_disabled_does_not_fire_when_it_is_enabled_again(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "0 11 * * *", "overlap": "queue"})["schedule_id"]
    clock.t += 3600  # 11:00:30 today fires
    admin.schedules.fire_due()
    clock.t += 86400  # 11:00:30 tomorrow: the first run still runs: queued
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].queued_tick is not None
    admin.schedule_update(sid, {"enabled": False})
    _finish_all(scheduler)
    clock.t += 7 * 86400 - 3600  # a week later, at 10:00:30, enabled again
    admin.schedule_update(sid, {"enabled": True})
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 1 and record.queued_tick is None  # not a run for a tick of a week ago
    assert record.skipped == 1 and record.skips[-1]["reason"] == "overlap"
    clock.t += 3600
    admin.schedules.fire_due()
    assert scheduler.storage.schedules[sid].fired == 2  # today's 11:00 does


def test_a_schedule_its_job_no_longer_fits_can_still_be_disabled(world):
    admin, scheduler, _ = world
    sid = admin.schedule_create({"job": "j", "cron": "* * * * *"})["schedule_id"]
    admin.job_save("j", {"script": "true", "targets": ["a0"], "params": [{"name": "X", "required": True}]})
    assert admin.schedule_update(sid, {"enabled": False})["enabled"] is False  # stop it while it is fixed
    assert scheduler.storage.schedules[sid].enabled is False
    with pytest.raises(ValidationError) as exc:  # enabled again only once it can run
        admin.schedule_update(sid, {"enabled": True})
    assert exc.value.field == "params.X" and scheduler.storage.schedules[sid].enabled is False
    assert admin.schedule_update(sid, {"enabled": True, "params": {"X": "1"}})["enabled"] is True


def test_a_tick_left_waiting_for_the_agents_after_a_start_is_not_made_late_by_the_wait(world):
    admin, scheduler, clock = world
    sid = admin.schedule_create({"job": "j", "cron": "*/5 * * * *"})["schedule_id"]
    clock.t += 300  # 10:05:30 fires
    admin.schedules.fire_due()
    _start_running(scheduler, scheduler.storage.schedules[sid].runs[-1]["task_id"])
    clock.t += 300  # restarted at 10:10:30: 30 s after the tick, in time
    admin = _restarted(scheduler, clock, settle=5)
    admin.schedules.fire_due()
    clock.t += 45  # the agents report 45 s later (a large --agent-timeout): 75 s after the tick
    _finish_all(scheduler)
    admin.schedules.fire_due()
    record = scheduler.storage.schedules[sid]
    assert record.fired == 2 and record.missed == 0, record.skips  # judged as seen at the start: in time
