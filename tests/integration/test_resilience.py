"""Restarts and crashes of real processes: nothing hangs, ids survive, lost agents fail their targets."""
import os
import time

import pytest

from tests.integration.harness import scaled, wait_until

pytestmark = pytest.mark.slow


def test_restarted_agent_keeps_its_id_and_works(stack, tmp_path):
    stack.master()
    stack.web()
    state = str(tmp_path / "agent-state")
    first = stack.agents(1, state_dir=state)
    (agent_id,) = stack.online_agents()
    assert first.stop() == 0  # SIGTERM: clean exit
    stack.agents(1, state_dir=state, wait=False)
    wait_until(lambda: stack.api.agents()[agent_id]["online"] and len(stack.api.agents()) == 1, 15,
               what="the restarted agent back online under the same id")
    assert stack.api.run("echo again", [agent_id])["targets"][agent_id]["output"] == "again\n"


def test_instances_have_distinct_persistent_ids(stack, tmp_path):
    stack.master()
    stack.web()
    state = tmp_path / "multi"
    proc = stack.agents(3, state_dir=str(state))
    ids = sorted(stack.online_agents())
    assert len(ids) == 3
    assert sorted((state / str(k) / "agent_id").read_text().strip() for k in range(3)) == ids
    proc.stop()
    stack.agents(3, state_dir=str(state), wait=False)
    wait_until(lambda: sorted(stack.online_agents()) == ids and len(stack.api.agents()) == 3, 15,
               what="same three ids back")


def test_master_restart_under_running_agents(stack):
    master = stack.master()
    stack.web()
    stack.agents(3)
    ids = sorted(stack.online_agents())
    assert stack.api.run("true", ids, parallel=3)["state"] == "SUCCEED"
    master.kill9()
    status, body = stack.api.get("/task/targets")
    assert status == 503 and "master unreachable" in body["error"]
    stack.master()
    # agents reconnect (backoff, jitter) and re-register with the new, empty master
    wait_until(lambda: sorted(stack.online_agents()) == ids, 30, interval=0.2, what="agents re-registered")
    result = stack.api.run("echo after restart", ids, parallel=3)
    assert result["state"] == "SUCCEED"
    assert all(t["output"] == "after restart\n" for t in result["targets"].values())


def test_agents_started_before_the_master_connect_when_it_comes(stack):
    stack.agents(2, wait=False)
    time.sleep(scaled(1.5))
    stack.master()
    stack.web()
    ids = wait_until(lambda: len(stack.online_agents()) == 2 and stack.online_agents(), 30, interval=0.2,
                     what="agents registered")
    assert stack.api.run("true", ids, parallel=2)["state"] == "SUCCEED"


def test_killed_agent_fails_its_target_after_agent_timeout(stack, tmp_path):
    stack.master()
    stack.web()
    victim = stack.agents(1)
    (lost,) = stack.online_agents()
    stack.agents(2)
    others = sorted(set(stack.online_agents()) - {lost})
    started = tmp_path / "started"
    task_id = stack.api.submit(f"touch {started}-$MSCHEDULE_AGENT_ID; sleep {scaled(2)}", [lost, *others],
                               parallel=1, fail_count=1, fail_rate=100)
    wait_until(lambda: os.path.exists(f"{started}-{lost}"), 10, what="the script started on the victim")
    victim.kill9()
    result = stack.api.wait_task(task_id, timeout=60)
    target = result["targets"][lost]
    assert target["state"] == "FAILED"
    assert "agent offline: no heartbeat" in target["output"]
    assert result["state"] == "SUCCEED"  # one failure is within fail_count=1: the rollout went on
    assert all(result["targets"][a]["state"] == "SUCCEED" for a in others)
    assert stack.api.agents()[lost]["online"] is False


def test_agent_restarted_mid_script_fails_that_target(stack, tmp_path):
    stack.master("--agent-timeout", "30")  # long: the restart, not the timeout, must fail the target
    stack.web()
    state = str(tmp_path / "agent-state")
    proc = stack.agents(1, state_dir=state)
    (agent_id,) = stack.online_agents()
    started = tmp_path / "started"
    task_id = stack.api.submit(f"touch {started}; sleep 100", [agent_id], fail_rate=100)
    wait_until(started.exists, 10, what="script started")
    proc.kill9()
    proc._kill_group()
    stack.agents(1, state_dir=state, wait=False)
    result = stack.api.wait_task(task_id, timeout=30)
    assert result["targets"][agent_id]["state"] == "FAILED"
    assert "restarted while running" in result["targets"][agent_id]["output"]


def test_sigterm_to_agent_kills_running_script(stack, tmp_path):
    stack.master()
    stack.web()
    proc = stack.agents(1)
    (agent_id,) = stack.online_agents()
    pid_file = tmp_path / "pid"
    stack.api.submit(f"sleep 100 & echo $! > {pid_file}; wait", [agent_id])
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, what="script started")
    pid = int(pid_file.read_text())
    os.kill(proc.pid, 15)
    proc.popen.wait(15)
    assert proc.popen.returncode == 0

    def gone():
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(gone, 5, what="the script's child killed")
