"""Agents heartbeat at the interval the master gives them, and the master's deadline stretches with it."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def max_heartbeat_age(stack, agents: list[str], seconds: float) -> float:
    worst, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = stack.api.agents()
        worst = max(worst, *(info[a]["heartbeat_age"] for a in agents))
        time.sleep(0.1)
    return worst


def test_agents_follow_the_interval_the_master_gives(stack):
    """A master allowing one heartbeat a second for its whole fleet tells 3 agents (started with --interval
    0.5) to heartbeat every 3 s or so; they do, and none is declared offline although the agent timeout is
    3 s: it stretches with the interval."""
    stack.master("--max-heartbeat-rate", "1")
    stack.web()
    stack.agents(3)
    agents = sorted(stack.online_agents())
    time.sleep(2)  # every agent has had an answer with the stretched interval
    worst = max_heartbeat_age(stack, agents, 8)
    assert 2.0 < worst < 4.5, worst
    assert sorted(stack.online_agents()) == agents
    done = stack.api.run("echo paced", agents)
    assert done["state"] == "SUCCEED"


def test_a_small_fleet_keeps_the_base_interval(stack):
    agents = stack.up(3)
    assert max_heartbeat_age(stack, agents, 3) < 1.2
