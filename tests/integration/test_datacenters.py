"""Two datacenters in network namespaces, routed through the master's side: dc-by-dc rollouts for real.

The root namespace plays the master's network; each datacenter is a namespace behind its own veth pair
and subnet, and its agents reach the master only by the master's address on that link. One link gets
40 ms of delay and 1 % loss with tc netem where the kernel has it.
"""
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.integration.figures import record
from tests.integration.harness import free_port, scaled, wait_until

pytestmark = pytest.mark.slow


def _run(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@pytest.fixture
def datacenters():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip netns) to build the test network")
    tag = uuid.uuid4().hex[:6]
    base = 2 * (os.getpid() % 120) + 1
    dcs = {}
    try:
        for index, name in enumerate(("bj", "sh")):
            ns, host_if, ns_if = f"dc{name}{tag}", f"v{name}{tag}a", f"v{name}{tag}b"
            subnet = f"10.198.{base + index}"
            if _run("ip", "netns", "add", ns, check=False).returncode != 0:
                pytest.skip("creating a network namespace is not allowed here")
            dcs[name] = {"ns": ns, "host_if": host_if, "master_ip": f"{subnet}.1", "agent_ip": f"{subnet}.2"}
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", ns)
            _run("ip", "addr", "add", f"{subnet}.1/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            _run("ip", "-n", ns, "addr", "add", f"{subnet}.2/30", "dev", ns_if)
            _run("ip", "-n", ns, "link", "set", ns_if, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "route", "add", "default", "via", f"{subnet}.1")
            dcs[name]["ns_if"] = ns_if
        # the far datacenter: 40 ms each way and 1 % loss, where the kernel has netem
        sh = dcs["sh"]
        netem = [_run("ip", "netns", "exec", sh["ns"], "tc", "qdisc", "add", "dev", sh["ns_if"], "root", "netem",
                      "delay", "40ms", "loss", "1%", check=False),
                 _run("tc", "qdisc", "add", "dev", sh["host_if"], "root", "netem", "delay", "40ms", "loss", "1%",
                      check=False)]
        sh["netem"] = all(p.returncode == 0 for p in netem)
        sh["netem_error"] = " ".join(p.stderr.strip() for p in netem if p.returncode)
        yield dcs
    finally:
        for dc in dcs.values():
            _run("ip", "link", "del", dc["host_if"], check=False)
            _run("ip", "netns", "del", dc["ns"], check=False)


def test_rollout_across_two_datacenters(stack, datacenters, tmp_path):
    bj, sh = datacenters["bj"], datacenters["sh"]
    port = free_port()
    stack.master_port = port
    binds = ",".join(f"tcp://{ip}:{port}" for ip in ("127.0.0.1", bj["master_ip"], sh["master_ip"]))
    stack.master(bind=binds, agent_timeout=30)  # longer than the 15 s cut below: it delays, it does not fail
    stack.web()
    for name, dc in datacenters.items():
        stack.agents(2, wrapper=("ip", "netns", "exec", dc["ns"]), master=f"tcp://{dc['master_ip']}:{port}",
                     extra=("--hostname", f"{name}-{{i}}", "--label", f"dc={name}"), wait=False)
    wait_until(lambda: len(stack.online_agents()) == 4, 40, interval=0.2, what="agents of both datacenters")
    agents = stack.api.agents()
    ids = {}
    for agent_id, info in agents.items():
        dc = info["labels"]["dc"]
        assert info["ip"] == [datacenters[dc]["agent_ip"]]  # each agent reports its own datacenter address
        ids.setdefault(dc, []).append(agent_id)

    # 1. datacenter by datacenter, measured by the scripts' own clocks
    spans = tmp_path / "spans"
    spans.mkdir()
    script = (f"s=$(date +%s.%N); sleep {scaled(0.5)}; "
              f'echo "$s $(date +%s.%N)" > {spans}/$MSCHEDULE_AGENT_ID')
    result = stack.api.run(script, ids["bj"] + ids["sh"], parallel=2, batch_by="dc", batch_order=["bj", "sh"])
    assert result["state"] == "SUCCEED", result["counts"]
    when = {a: [float(x) for x in (spans / a).read_text().split()] for a in ids["bj"] + ids["sh"]}
    assert max(when[a][1] for a in ids["bj"]) <= min(when[a][0] for a in ids["sh"])

    # 2. cut the far datacenter's link for 15 s while its scripts run: nothing lost, nothing twice
    runs = tmp_path / "runs"
    runs.mkdir()
    task_id = stack.api.submit(f"echo run >> {runs}/$MSCHEDULE_AGENT_ID; sleep {scaled(3)}; echo done", ids["sh"],
                               parallel=2)
    wait_until(lambda: len(os.listdir(runs)) == 2, 20, what="scripts running in sh")
    _run("ip", "link", "set", sh["host_if"], "down")
    cut = scaled(15)
    time.sleep(cut)
    _run("ip", "link", "set", sh["host_if"], "up")
    if sh["netem"]:  # a link set down loses its qdisc on some kernels: put the latency back
        _run("tc", "qdisc", "replace", "dev", sh["host_if"], "root", "netem", "delay", "40ms", "loss", "1%",
             check=False)
    cut_result = stack.api.wait_task(task_id, timeout=90)
    assert cut_result["state"] == "SUCCEED", cut_result
    assert all(t["output"] == "done\n" for t in cut_result["targets"].values())
    assert {len((runs / a).read_text().split()) for a in ids["sh"]} == {1}

    # 3. a failing datacenter stops the rollout before the next one starts
    ran = tmp_path / "ran"
    bad = "|".join(ids["bj"])
    failing = stack.api.run(f"echo $MSCHEDULE_AGENT_ID >> {ran}; case $MSCHEDULE_AGENT_ID in {bad}) exit 1;; esac",
                            ids["bj"] + ids["sh"], parallel=2, batch_by="dc", batch_order=["bj", "sh"], fail_count=0)
    assert failing["state"] == "FAILED"
    assert {failing["targets"][a]["state"] for a in ids["sh"]} == {"CANCELLED"}
    assert set(ran.read_text().split()) <= set(ids["bj"])
    record("two datacenters in namespaces: dc-by-dc, 15 s cut, failing dc", targets=4, results_checked=8,
           cut_seconds=cut, lost=0, run_twice=0,
           netem="40ms 1% on sh" if sh["netem"] else f"unavailable: {sh['netem_error'][:60]}")
