"""The master's disk fills up: the client hears the truth, /health says so, the log does not flood, and once
there is room again every change it was told about is committed. Found by trying to break the master: it
answered 502 'cannot rollback - no transaction is active' for tasks that existed and ran anyway."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.integration.figures import record
from tests.integration.harness import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a 3 MB tmpfs for the database needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_is_reported_and_nothing_is_lost_once_it_has_room(stack, small_disk):
    stack.db = small_disk / "master.db"
    (agent_id,) = stack.up(1)
    api = stack.api
    master = next(p for p in stack.procs if p.name == "master")
    script = "echo big #" + "x" * 200_000
    answers = []
    for i in range(60):
        status, body = api.post("/task", {"script": f"{script}{i}", "targets": [agent_id]})
        answers.append((status, body))
        if status != 201:
            break
    status, body = answers[-1]
    assert status == 503, answers[-1]  # not a 502 with SQLite's rollback error
    assert "could not be committed" in body["error"] and "full" in body["error"], body
    health_status, health = api.get("/health")
    assert health_status == 503 and health["master"]["endpoints"]["database"]["ok"] is False, health
    time.sleep(1)  # housekeeping's first failure: one traceback

    def housekeeping_lines() -> int:
        return sum(1 for line in master.log().splitlines() if "mschedule.master.housekeeping" in line)

    lines = housekeeping_lines()
    time.sleep(3)
    assert housekeeping_lines() - lines <= 1  # it fails every tick (15 times), but says so rarely
    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    wait_until(lambda: api.get("/health")[0] == 200, 10, what="commits to succeed again")
    told = [b["task_id"] for s, b in answers if s == 201]
    master.stop()  # a clean restart: what it has is what the disk has
    stack.master()
    listed = {t["task_id"] for t in api.get("/tasks?limit=1000")[1]}
    assert set(told) <= listed and len(listed) == len(answers)  # the 503's task too: it was made, as it said
    record("master's disk full (3 MB tmpfs), then room again", results_checked=len(answers), lost=0,
           http_errors=sum(1 for s, _ in answers if s >= 500))
