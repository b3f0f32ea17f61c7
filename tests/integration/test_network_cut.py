"""A real network cut between agents and the master: agents in a network namespace behind a veth pair."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.integration.figures import record
from tests.integration.harness import free_port, scaled, wait_until

pytestmark = pytest.mark.slow


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns():
    """A namespace ``ns`` with a veth pair: 10.199.N.1 on our side (``host_if``), 10.199.N.2 inside."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip netns) to build a test network")
    name = f"ms{uuid.uuid4().hex[:8]}"
    host_if, ns_if = f"{name}a", f"{name}b"
    subnet = 1 + os.getpid() % 250
    if _ip("netns", "add", name, check=False).returncode != 0:
        pytest.skip("creating a network namespace is not allowed here")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"10.199.{subnet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"10.199.{subnet}.2/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield {"ns": name, "host_if": host_if, "master_ip": f"10.199.{subnet}.1"}
    finally:
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", name, check=False)


def test_link_down_20s_while_scripts_run_loses_nothing(stack, netns, tmp_path):
    port = free_port()
    remote = f"tcp://{netns['master_ip']}:{port}"
    stack.master_port = port
    # agent timeout longer than the cut: the outage must not fail the targets, only delay their results
    stack.master(bind=f"tcp://127.0.0.1:{port},{remote}", agent_timeout=60)
    stack.web()
    stack.agents(3, wrapper=("ip", "netns", "exec", netns["ns"]), master=remote)
    ids = sorted(stack.online_agents())
    assert len(ids) == 3
    runs = tmp_path / "runs"
    runs.mkdir()
    task_id = stack.api.submit(f"echo run >> {runs}/$MSCHEDULE_AGENT_ID; sleep {scaled(4)}; echo done", ids,
                               parallel=3)
    wait_until(lambda: len(os.listdir(runs)) == 3, 15, what="scripts running in the namespace")
    _ip("link", "set", netns["host_if"], "down")
    cut = scaled(20)
    time.sleep(cut)  # the scripts end during the cut: their results wait in the agents' spools
    status, during = stack.api.get(f"/task/{task_id}")
    assert during["counts"]["RUNNING"] == 3  # nothing arrived, nothing failed
    _ip("link", "set", netns["host_if"], "up")
    result = stack.api.wait_task(task_id, timeout=90)
    assert result["state"] == "SUCCEED", result["counts"]
    assert all(t["output"] == "done\n" for t in result["targets"].values())
    counts = {n: len(open(runs / n).read().splitlines()) for n in os.listdir(runs)}
    assert set(counts.values()) == {1}, counts
    for info in stack.api.agents().values():
        assert info["ip"] == [netns["master_ip"][:-1] + "2"]  # the agents' own address in the namespace
    record("network cut (veth down) while scripts run", cut_seconds=cut, targets=3, results_checked=3, lost=0,
           run_twice=0)
