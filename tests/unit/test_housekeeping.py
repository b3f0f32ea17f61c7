"""The housekeeper notices its own stalls and clock jumps before it blames agents (fake clocks)."""
from __future__ import annotations

import pytest

from mschedule.master.housekeeping import Housekeeper
from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage
from mschedule.utils.messages import AgentInfo


class Clocks:
    def __init__(self) -> None:
        self.mono, self.wall = 1000.0, 1_700_000_000.0

    def advance(self, mono: float, wall: float | None = None) -> None:
        self.mono += mono
        self.wall += mono if wall is None else wall


@pytest.fixture
def world():
    clocks = Clocks()
    scheduler = Scheduler(Storage(), agent_timeout=10, clock=lambda: clocks.wall)
    for name in ("a", "b"):
        scheduler.agent_seen(AgentInfo(id=name, hostname=name, ip=[], labels={}, session="s"))
    keeper = Housekeeper(scheduler, scheduler.storage, monotonic=lambda: clocks.mono, wall=lambda: clocks.wall)
    return clocks, scheduler, keeper


def online(scheduler) -> set[str]:
    return {a.id for a in scheduler.storage.agents.values() if a.online}


def run_ticks(clocks, keeper, seconds: float, step: float = 0.2, wall_step: float | None = None) -> None:
    for _ in range(round(seconds / step)):
        clocks.advance(step, wall_step)
        keeper.tick()


def deadline(scheduler) -> float:
    """An agent not yet told an interval by this master: the fleet's deadline (10 s for a small fleet)."""
    return scheduler.deadline("a")


def test_silent_agent_goes_offline_on_a_calm_master(world):
    clocks, scheduler, keeper = world
    run_ticks(clocks, keeper, deadline(scheduler) + 0.4)
    assert online(scheduler) == set()


def test_a_stall_longer_than_the_timeout_gives_the_restart_grace(world):
    clocks, scheduler, keeper = world
    clocks.advance(30)  # SIGSTOP for 30 s
    keeper.tick()
    assert online(scheduler) == {"a", "b"} and keeper.stalls == 1
    run_ticks(clocks, keeper, deadline(scheduler) - 1)
    assert online(scheduler) == {"a", "b"}  # a full deadline from the end of the stall
    run_ticks(clocks, keeper, 1.4)
    assert online(scheduler) == set()  # and silent agents still go, once it has passed


def test_late_ticks_do_not_count_but_a_dead_agent_still_ages(world):
    clocks, scheduler, keeper = world
    for _ in range(5):
        clocks.advance(1.8)  # an overloaded master: each tick 1.6 s late
        keeper.tick()
    assert online(scheduler) == {"a", "b"}
    for _ in range(100):
        clocks.advance(1.8)
        keeper.tick()
    assert online(scheduler) == set()  # 0.2 s of every 1.8 s counts: still offline in the end


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
def test_a_wall_clock_step_is_not_silence(world, jump):
    clocks, scheduler, keeper = world
    run_ticks(clocks, keeper, 2)
    clocks.advance(0.2, jump + 0.2)  # NTP step or a manual date change, or a host suspend (wall only)
    keeper.tick()
    assert online(scheduler) == {"a", "b"} and keeper.clock_jumps == 1
    run_ticks(clocks, keeper, deadline(scheduler) - 3)
    assert online(scheduler) == {"a", "b"}
    run_ticks(clocks, keeper, 2)
    assert online(scheduler) == set()  # ages go on from where they were before the step


def test_heartbeats_keep_agents_online_through_it_all(world):
    clocks, scheduler, keeper = world
    for _ in range(50):
        clocks.advance(3)
        for name in ("a", "b"):
            scheduler.agent_seen(AgentInfo(id=name, hostname=name, ip=[], labels={}, session="s"))
        keeper.tick()
    assert online(scheduler) == {"a", "b"}


def test_a_large_fleet_gets_the_time_to_come_back(world):
    """3,000 agents reconnecting to a restarted master need longer than one agent timeout to all get through
    (bench/storm.py); the grace grows by a second per REGISTRATIONS_PER_SECOND online agents."""
    from mschedule.master.scheduler import REGISTRATIONS_PER_SECOND

    clocks, scheduler, keeper = world
    for i in range(2000):
        scheduler.agent_seen(AgentInfo(id=f"n{i}", hostname="h", ip=[], labels={}, session="s"))
    clocks.advance(30)
    keeper.tick()  # a stall: the same grace as a restart
    extra = 2002 / REGISTRATIONS_PER_SECOND
    run_ticks(clocks, keeper, deadline(scheduler) + extra - 1)
    assert len(online(scheduler)) == 2002
    run_ticks(clocks, keeper, 2)
    assert online(scheduler) == set()
