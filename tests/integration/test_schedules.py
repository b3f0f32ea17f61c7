"""Schedules: cron ticks fire a job's run once each, across master restarts; overlap and catch-up rules.

The master runs with ``--schedule-clock START:SPEED``, a schedule clock SPEED times faster than the real one
from START (the same START across restarts): a minute passes in a few seconds, and everything else on the
firing path is the real code.
"""
import time

from tests.integration.harness import wait_until


def _clock(speed: float) -> tuple[str, ...]:
    return ("--schedule-clock", f"{time.time():.3f}:{speed}")


def _fired(api, schedule_id):
    status, tasks = api.get(f"/tasks?schedule={schedule_id}&limit=1000")
    assert status == 200, tasks
    return sorted(tasks, key=lambda t: t["schedule_tick"])


def _job(api, ids, script="true", name="tick"):
    status, body = api.post(f"/job/{name}", {"script": script, "targets": ids})
    assert status == 201, body


def test_every_minute_fires_once_at_each_minute_boundary(stack):
    clock = _clock(30)  # a minute in two seconds
    stack.master(*clock)
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    _job(api, ids, 'echo "tick $MSCHEDULE_TASK_ID"')
    status, created = api.post("/schedules", {"job": "tick", "cron": "* * * * *", "catchup": "last"})
    assert status == 201, created
    sid = created["schedule_id"]
    status, schedule = api.get(f"/schedule/{sid}")
    assert status == 200 and schedule["enabled"] and len(schedule["next_runs"]) == 5
    first = schedule["next_run"]
    assert first % 60 == 0 and schedule["runs"] == []
    wait_until(lambda: len(_fired(api, sid)) >= 3, 30, what="three ticks")
    fired = _fired(api, sid)
    ticks = [t["schedule_tick"] for t in fired]
    assert ticks[:3] == [first, first + 60, first + 120], ticks  # each boundary once, the first one first
    assert len(set(ticks)) == len(ticks)
    for task in fired[:3]:
        done = api.wait_task(task["task_id"])
        assert done["state"] == "SUCCEED" and done["job"] == "tick" and done["schedule_id"] == sid
    status, schedule = api.get(f"/schedule/{sid}")
    assert schedule["fired"] >= 3 and schedule["runs"][0]["task_id"] in {t["task_id"] for t in _fired(api, sid)}
    assert schedule["runs"][0]["state"] in ("WAITING", "RUNNING", "SUCCEED")
    # disabled: no tick fires; enabled again: ticks from then on, none of the disabled time caught up
    status, body = api.request("PATCH", f"/schedule/{sid}", {"enabled": False})
    assert status == 200 and body["enabled"] is False and body["next_run"] is None
    count = len(_fired(api, sid))
    time.sleep(5)
    assert len(_fired(api, sid)) == count
    status, body = api.request("PATCH", f"/schedule/{sid}", {"enabled": True})
    wait_until(lambda: len(_fired(api, sid)) > count, 15)
    after = _fired(api, sid)[count:]
    assert after[0]["schedule_tick"] >= body["next_run"] - 60
    status, body = api.request("DELETE", f"/schedule/{sid}")
    assert status == 200 and body["deleted"] is True
    assert api.get(f"/schedule/{sid}")[0] == 404


def test_a_restart_across_a_boundary_fires_that_tick_once(stack):
    """kill -9 just after a tick fired: the restarted master does not fire it again. Down over the next
    boundary for longer than a minute of schedule time: catchup "last" fires that tick once on start, catchup
    "none" records it missed."""
    start, speed = time.time(), 30  # five minutes in ten seconds
    clock = ("--schedule-clock", f"{start:.3f}:{speed}")
    master = stack.master(*clock)
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    _job(api, ids)
    # overlap allow: the agent may not be back from the restarts yet, and a run still waiting for it would skip
    # the tick (overlap skip, the default) instead of showing the catch-up rule
    sid = api.post("/schedules", {"job": "tick", "cron": "*/5 * * * *", "catchup": "last",
                                  "overlap": "allow"})[1]["schedule_id"]
    none = api.post("/schedules", {"job": "tick", "cron": "*/5 * * * *", "catchup": "none",
                                   "overlap": "allow"})[1]["schedule_id"]
    wait_until(lambda: _fired(api, sid), 20, interval=0.02, what="the first tick")
    master.kill9()  # a few ms after the tick's commit
    master = stack.master(*clock)
    fired = _fired(api, sid)
    assert len(fired) == 1, fired
    t1 = fired[0]["schedule_tick"]
    assert api.get(f"/schedule/{sid}")[1]["last_tick"] == t1
    master.kill9()
    t2 = t1 + 300
    time.sleep(max(0.0, start + (t2 - start) / speed + 3.5 - time.time()))  # t2 passed 105 s ago, schedule time
    stack.master(*clock)
    wait_until(lambda: len(_fired(api, sid)) >= 2, 10, what="the caught-up tick")
    ticks = [t["schedule_tick"] for t in _fired(api, sid)]
    assert ticks[:2] == [t1, t2] and len(set(ticks)) == len(ticks), ticks
    none_view = api.get(f"/schedule/{none}")[1]
    none_ticks = [t["schedule_tick"] for t in _fired(api, none)]
    assert none_ticks[:1] == [t1] and t2 not in none_ticks, none_ticks
    assert none_view["missed"] == 1 and none_view["skips"][0] == {"tick": t2, "reason": "missed", "count": 1}


def test_overlap_skip_does_not_fire_while_the_previous_run_runs(stack):
    stack.master(*_clock(60))  # a tick a second
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    api = stack.api
    _job(api, ids, "sleep 2.5")
    sid = api.post("/schedules", {"job": "tick", "cron": "* * * * *", "overlap": "skip",
                                  "catchup": "last"})[1]["schedule_id"]
    wait_until(lambda: api.get(f"/schedule/{sid}")[1]["skipped"] >= 3, 30, what="three skipped ticks")
    schedule = api.get(f"/schedule/{sid}")[1]
    assert {s["reason"] for s in schedule["skips"]} == {"overlap"}
    fired = [api.wait_task(t["task_id"]) for t in _fired(api, sid)]
    runs = sorted((t["targets"][ids[0]]["started"], t["targets"][ids[0]]["finished"]) for t in fired)
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end - 0.05, runs  # never two runs at once


def test_schedule_input_errors_and_masked_secrets(stack):
    ids = stack.up(1)
    api = stack.api
    status, _ = api.post("/job/deploy", {"script": 'echo "$TOKEN"', "targets": ids,
                                         "params": [{"name": "TOKEN", "secret": True, "required": True},
                                                    {"name": "V", "choices": ["1", "2"]}]})
    cases = [
        ({"job": "deploy", "cron": "61 * * * *", "params": {"TOKEN": "x"}}, "cron"),
        ({"job": "deploy", "cron": "* * * *", "params": {"TOKEN": "x"}}, "cron"),
        ({"job": "deploy", "cron": 5, "params": {"TOKEN": "x"}}, "cron"),
        ({"job": "deploy", "cron": "@often", "params": {"TOKEN": "x"}}, "cron"),
        ({"job": "deploy", "cron": "@daily", "timezone": "Mars/Olympus", "params": {"TOKEN": "x"}}, "timezone"),
        ({"job": "deploy", "cron": "@daily", "timezone": "../../etc/passwd", "params": {"TOKEN": "x"}}, "timezone"),
        ({"job": "nope", "cron": "@daily"}, "job"),
        ({"cron": "@daily"}, "job"),
        ({"job": "deploy", "cron": "@daily", "version": 9, "params": {"TOKEN": "x"}}, "version"),
        ({"job": "deploy", "cron": "@daily"}, "params.TOKEN"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x", "V": "3"}}, "params.V"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "overlap": "sometimes"}, "overlap"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "catchup": "all"}, "catchup"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "enabled": "yes"}, "enabled"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "targets": ["no-such-host"]}, "targets[0]"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "notify": [{"url": "ftp://x"}]},
         "notify[0].url"),
        ({"job": "deploy", "cron": "@daily", "params": {"TOKEN": "x"}, "every": 5}, "every"),
        ("@daily", "body"),
    ]
    for body, field in cases:
        status, answer = api.post("/schedules", body)
        assert status == 400 and answer["field"] == field, (body, answer)
    status, created = api.post("/schedules", {"job": "deploy", "cron": "@daily", "timezone": "Europe/Berlin",
                                              "params": {"TOKEN": "tok-secret-1", "V": "2"}})
    assert status == 201
    sid = created["schedule_id"]
    status, schedule = api.get(f"/schedule/{sid}")
    assert schedule["params"] == {"TOKEN": "***", "V": "2"} and "tok-secret-1" not in str(api.get("/schedules"))
    assert all(run.endswith(("+01:00", "+02:00")) and "T00:00:00" in run for run in schedule["next_runs"])
    # a secret sent back as *** keeps its value; the listing filters by job
    status, body = api.request("PATCH", f"/schedule/{sid}", {"params": {"TOKEN": "***", "V": "1"}, "cron": "@hourly"})
    assert status == 200 and body["params"] == {"TOKEN": "***", "V": "1"} and body["cron"] == "@hourly"
    assert api.request("PATCH", f"/schedule/{sid}", {"job": "other"})[1]["field"] == "job"
    assert api.request("PATCH", f"/schedule/{sid}", {"cron": "bad"})[1]["field"] == "cron"
    assert api.request("PATCH", "/schedule/nope", {"enabled": False})[0] == 404
    assert [s["schedule_id"] for s in api.get("/schedules?job=deploy")[1]] == [sid]
    assert api.get("/schedules?job=other")[1] == []
    assert api.run("echo ok", ids)["state"] == "SUCCEED"  # the endpoints still answer real calls
