"""Cancel stops a rollout within about a second: waiting targets never start, running scripts die."""
import os
import time

from tests.integration.harness import wait_until
from tests.procs import alive


def test_cancel_sleep_60_on_5_agents(stack, tmp_path):
    ids = stack.up(5)
    pids = tmp_path / "pids"
    pids.mkdir()
    task_id = stack.api.submit(f"echo started; sleep 60 & echo $! > {pids}/$MSCHEDULE_AGENT_ID; wait", ids,
                               parallel=2)
    wait_until(lambda: len(os.listdir(pids)) == 2, 15, what="two scripts running")
    started = time.monotonic()
    status, summary = stack.api.post(f"/task/{task_id}/cancel")
    assert status == 200 and summary["state"] == "CANCELLED"
    result = stack.api.wait_task(task_id, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"cancel took {elapsed:.2f}s"
    states = {a: t["state"] for a, t in result["targets"].items()}
    assert set(states.values()) == {"CANCELLED"}, states
    ran = sorted(os.listdir(pids))
    assert len(ran) == 2  # later targets never started
    for agent_id in ran:
        assert result["targets"][agent_id]["output"].startswith("started\n")  # the output it had produced
        pid = int((pids / agent_id).read_text())
        wait_until(lambda pid=pid: not alive(pid), 5, what=f"sleep {pid} killed")
    time.sleep(0.5)
    assert sorted(os.listdir(pids)) == ran
    status, again = stack.api.post(f"/task/{task_id}/cancel")
    assert status == 200 and again["state"] == "CANCELLED"  # idempotent


def test_cancel_errors(stack):
    ids = stack.up(1)
    done = stack.api.run("true", ids)
    status, body = stack.api.post(f"/task/{done['task_id']}/cancel")
    assert status == 409 and "already ended" in body["error"]
    assert stack.api.post("/task/nope/cancel")[0] == 404


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_scripts_of_an_aborted_task_run_on_without_a_watch_loop(stack):
    """One failure aborts the task while the other agent's script runs on: that agent's cancel watch must
    not turn into a loop of answers at once (it can never be cancelled now), which would keep the master
    busy until the script ends."""
    ids = stack.up(2)
    master = next(p for p in stack.procs if p.name == "master")
    task_id = stack.api.submit(f'if [ "$MSCHEDULE_AGENT_ID" = {ids[0]} ]; then sleep 1; exit 1; fi; sleep 5', ids,
                               parallel=2)
    wait_until(lambda: stack.api.get(f"/task/{task_id}")[1]["state"] == "FAILED", 10, what="the task aborted")
    time.sleep(0.3)
    before, started = _cpu_seconds(master.pid), time.monotonic()
    time.sleep(2)
    busy = (_cpu_seconds(master.pid) - before) / (time.monotonic() - started)
    result = stack.api.wait_task(task_id, timeout=15)
    assert result["targets"][ids[1]]["state"] == "SUCCEED"  # the running script kept its result
    assert busy < 0.2, f"master busy {busy:.0%} of the time while the aborted task's script ran on"


def test_cancel_sends_term_so_a_trap_runs(stack):
    """A cancel stops a script as a timeout does: SIGTERM first, so its trap's cleanup runs and is kept."""
    ids = stack.up(1)
    task_id = stack.api.submit("trap 'echo trapped; exit 3' TERM; echo up; sleep 60", ids)
    wait_until(lambda: stack.api.get(f"/task/{task_id}")[1]["targets"][ids[0]]["state"] == "RUNNING", 15,
               what="script running")
    time.sleep(0.7)  # the agent watches for a cancel after CANCEL_WATCH_DELAY; the trap is set by then
    status, _ = stack.api.post(f"/task/{task_id}/cancel")
    assert status == 200
    target = stack.api.wait_task(task_id, timeout=10)["targets"][ids[0]]
    assert target["state"] == "CANCELLED" and target["code"] == 3, target
    assert target["output"].startswith("up\n") and "\ntrapped\n" in target["output"], target["output"]
    assert "[mschedule: cancelled; process group sent SIGTERM" in target["output"]
