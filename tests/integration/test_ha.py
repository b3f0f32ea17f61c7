"""Several masters on one PostgreSQL: one leads, a standby takes over when it dies or freezes (docs/ha.md).

Real processes: a throwaway PostgreSQL cluster (tests/pg.py), two masters sharing one key pair, a web tier and
agents that know both masters' endpoints. Skipped, saying why, where PostgreSQL is not installed."""
from __future__ import annotations

import os
import shutil
import signal
import time

import gevent
import pytest
import zerorpc

from mschedule.transport import CurveClientKeys, make_client
from tests.integration.harness import Stack, scaled, wait_until
from tests.integration.masters import LEASE, Masters


def _task(stack: Stack, task_id: str) -> dict | None:
    try:
        status, body = stack.api.get(f"/task/{task_id}?output_limit=0", timeout=5)
    except OSError:
        return None
    return body if status == 200 else None


def test_kill9_of_the_leader_mid_rollout_every_target_runs_once_and_succeeds(cluster):
    stack, masters = cluster
    web = next(p for p in stack.procs if p.name == "web")
    stack.agents(20, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    assert len(agents) == 20
    ran = stack.tmp / "ran"
    ran.mkdir()
    task_id = stack.api.submit(f'sleep 1; echo ran >> "{ran}/$MSCHEDULE_AGENT_ID"', agents, parallel=5, timeout=60)
    wait_until(lambda: (_task(stack, task_id) or {}).get("counts", {}).get("SUCCEED", 0) >= 5, 30,
               what="a quarter of the rollout done")
    masters.procs["master1"].kill9()
    killed = time.monotonic()
    wait_until(lambda: masters.leads("master2") and _task(stack, task_id), 30, interval=0.1,
               what="the standby serving")
    took = time.monotonic() - killed
    assert took < 15, f"the standby served {took:.1f}s after the leader's kill -9"
    done = stack.api.wait_task(task_id, timeout=90)
    assert done["counts"]["SUCCEED"] == 20, done["counts"]
    counts = {agent: (ran / agent).read_text().count("ran") if (ran / agent).exists() else 0 for agent in agents}
    assert set(counts.values()) == {1}, f"runs per agent (each script must run exactly once): {counts}"
    assert web.alive() and web.popen.returncode is None  # the same web tier all along
    status, health = stack.api.get("/health")
    assert status == 200 and health["master"]["endpoints"]["database"]["leader"]["pid"] == \
        masters.procs["master2"].pid, health  # which master leads, as an operator asks
    assert "no longer leads" not in masters.procs["master2"].log()


def test_a_frozen_leader_resumed_after_its_session_ended_does_not_serve(cluster):
    stack, masters = cluster
    old = masters.procs["master1"]
    stack.agents(2, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    os.kill(old.pid, signal.SIGSTOP)
    try:
        # PostgreSQL ends the silent session after the lease; the standby takes the lock, loads, listens
        wait_until(lambda: masters.leads("master2") and _task_ok(stack), 30, interval=0.1,
                   what="the standby leading while the old leader is frozen")
        first = stack.api.run("echo under the new leader", agents, wait_for=60)
        assert first["counts"]["SUCCEED"] == 2
        # a call queued for the old leader while it is frozen: its answer would come from a stale master
        keys = stack.keys
        client = make_client(f"tcp://127.0.0.1:{masters.ports['master1'][0]}", timeout=8,
                             curve=CurveClientKeys(keys.public, keys.admin_public, keys.admin_secret))
        call = gevent.spawn(client, "ping")
        gevent.sleep(0.5)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    try:
        with pytest.raises((zerorpc.TimeoutExpired, zerorpc.LostRemote)):
            call.get(timeout=15)
    finally:
        client.close()
    old.popen.wait(15)
    assert old.popen.returncode == 75, old.log()
    assert "this master no longer leads" in old.log()
    again = stack.api.run("echo still served", agents, wait_for=60)  # the new leader's state is intact
    assert again["counts"]["SUCCEED"] == 2
    status, listed = stack.api.get("/tasks?limit=10")
    assert status == 200 and first["task_id"] in [t["task_id"] for t in listed], listed


def _task_ok(stack: Stack) -> bool:
    try:
        return stack.api.get("/task/targets", timeout=5)[0] == 200
    except OSError:
        return False


def test_masters_exit_75_in_one_line_when_postgresql_goes_away(tmp_path):
    """The database stopped under a leader and a standby: neither goes on (the leader cannot commit, the standby
    cannot wait for the lock); both say why in one line and exit 75, which systemd restarts."""
    from tests import pg

    server = pg.cluster_or_skip()
    stack = Stack(tmp_path)
    try:
        masters = Masters(stack, server.database())
        leader, standby = masters.lead("master1"), masters.stand_by("master2")
        server.close()
        for proc in (leader, standby):
            proc.popen.wait(scaled(LEASE * 3))
            assert proc.popen.returncode == 75, proc.log()
            assert "Traceback" not in proc.log(), proc.log()
        assert "no longer leads" in leader.log()
        assert standby.log().strip().splitlines()[-1].startswith("mschedule: database postgresql://"), standby.log()
    finally:
        stack.close()
        server.close()


def test_a_standby_lives_through_sighup(cluster):
    """systemctl reload sends SIGHUP: a standby, waiting for the lock, must not die of it (systemd would not
    start again a process a SIGHUP ended)."""
    stack, masters = cluster
    standby = masters.procs["master2"]
    for _ in range(3):
        os.kill(standby.pid, signal.SIGHUP)
        time.sleep(0.3)
    assert standby.alive(), standby.log()
    assert "SIGHUP: nothing to read again yet" in standby.log()
    masters.procs["master1"].kill9()
    wait_until(lambda: masters.leads("master2") and _task_ok(stack), 30, interval=0.1, what="the standby leading")


def test_the_cli_submits_through_a_failover_and_the_task_runs_once(cluster, tmp_path):
    """`mschedule run` right after the leader's kill -9: the web tier holds the request until a master listens,
    up to its call timeout, then answers 503, and the CLI sends the same request again with its Idempotency-Key
    (tests/unit/test_cli.py checks that part): whichever way it went, the script runs once on each host."""
    from tests.integration.test_cli import mschedule

    stack, masters = cluster
    stack.agents(2, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    ran = tmp_path / "ran"
    ran.mkdir()
    time.sleep(1)  # the registrations committed (the periodic commit, every 0.2 s), as in a fleet running a while
    masters.procs["master1"].kill9()
    done = mschedule(stack, tmp_path, "run", f'echo once >> "{ran}/$MSCHEDULE_AGENT_ID"',
                     *(f"--target={a}" for a in agents), timeout=90)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert sorted(p.read_text() for p in ran.iterdir()) == ["once\n", "once\n"]
    status, tasks = stack.api.get("/tasks?limit=10")
    assert status == 200 and len(tasks) == 1, tasks


def test_a_new_leader_with_another_webhook_secret_says_so(tmp_path, pg_url):
    """Receivers check X-Mschedule-Signature: a master that leads with a webhook secret other than the previous
    leader's has every webhook refused. The cluster keeps a fingerprint of the leader's, and the next leader
    compares (a SIGHUP that rotates the secret on purpose records the new one)."""
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url)
    try:
        first = masters.lead("master1")
        second_state = tmp_path / "master2-state"
        shutil.copytree(stack.state / "keys", second_state / "keys")
        (second_state / "webhook.secret").write_text("not the cluster's\n")
        masters.stand_by("master2")
        first.kill9()
        wait_until(lambda: masters.leads("master2"), 20, what="the standby leading")
        log = masters.procs["master2"].log()
        assert "webhook secret" in log and "is not the one the cluster's previous leader signed with" in log, log
        # the first one, back as a standby with the file copied as docs/ha.md says, then leading: no warning
        shutil.copy(second_state / "webhook.secret", tmp_path / "master1-state" / "webhook.secret")
        again = masters.stand_by("master1")
        masters.procs["master2"].kill9()
        wait_until(lambda: masters.leads("master1"), 20, what="the first master leading again")
        assert "previous leader signed with" not in again.log(), again.log()
    finally:
        stack.close()
