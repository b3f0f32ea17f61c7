"""The heartbeat interval rule (mschedule/master/liveness.py) and the scheduler's use of it."""
from __future__ import annotations

import pytest

from mschedule.master.liveness import JITTER, HeartbeatPolicy
from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage
from mschedule.utils.messages import AgentInfo, Heartbeat

POLICY = HeartbeatPolicy(base=3.0, max_rate=500.0, agent_timeout=10.0, poll_base=20.0)


@pytest.mark.parametrize("online,interval,deadline", [(1, 3.0, 10.0), (100, 3.0, 10.0), (1000, 3.0, 10.0),
                                                      (1500, 3.0, 10.0), (5000, 10.0, 33.3), (10000, 20.0, 66.7)])
def test_interval_stretches_so_the_fleet_sends_at_most_max_rate(online, interval, deadline):
    assert POLICY.fleet_interval(online) == pytest.approx(interval)
    assert online / POLICY.fleet_interval(online) <= 500.0 or online <= 1500
    assert POLICY.deadline(POLICY.fleet_interval(online)) == pytest.approx(deadline, abs=0.05)


def test_each_agent_gets_its_own_stable_jitter():
    given = {f"agent-{i}": POLICY.interval(10000, f"agent-{i}") for i in range(1000)}
    assert all(20.0 <= v < 20.0 * (1 + JITTER) for v in given.values())
    assert len(set(given.values())) > 50  # spread, not one value
    assert POLICY.interval(10000, "agent-7") == given["agent-7"]  # stable for one agent


def test_poll_grows_with_the_interval_up_to_the_cap():
    assert POLICY.poll(3.0) == 20.0
    assert POLICY.poll(6.0) == 40.0
    assert POLICY.poll(20.0) == 60.0


def test_detection_time_table():
    """The figures docs/deployment.md gives: seconds from an agent's death to its targets failing."""
    assert POLICY.detection_time(100) == pytest.approx(11.0)
    assert POLICY.detection_time(1000) == pytest.approx(11.0)
    assert POLICY.detection_time(10000) == pytest.approx(73.3, abs=0.05)


def test_the_scheduler_deadline_follows_what_each_agent_was_told():
    now = [1000.0]
    sched = Scheduler(Storage(), agent_timeout=10, clock=lambda: now[0], policy=POLICY)
    for i in range(3):
        sched.agent_seen(AgentInfo(id=f"a{i}", hostname="h"))
    sched.online = 10000  # as if the fleet were large: the interval stretches
    interval, poll = sched.pace("a0")
    assert interval >= 20.0 and poll == 60.0
    sched.online = 3  # the fleet shrank; a0 was told ~20 s and keeps that deadline until it hears again
    now[0] += 30
    sched.agent_heartbeat(Heartbeat(id="a1"))
    sched.agent_heartbeat(Heartbeat(id="a2"))
    lost = sched.check_agents()
    assert lost == []  # a0: 30 s silent, told ~20 s: deadline ~66 s
    now[0] += 40
    assert sched.check_agents() == ["a0", "a1", "a2"]


def test_a_heartbeat_from_an_unknown_agent_asks_it_to_register():
    sched = Scheduler(Storage(), agent_timeout=10, policy=POLICY)
    assert sched.agent_heartbeat(Heartbeat(id="nobody")) is False
    assert sched.storage.agents == {}
