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
