"""Attacks on a cluster of masters on PostgreSQL (docs/ha.md): PostgreSQL going away under them, failovers at bad
moments, calls to masters that must not answer.

Real processes, as tests/integration/test_ha.py starts them; skipped, saying why, where PostgreSQL is not
installed."""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests import pg
from tests.integration import masters as cluster_masters
from tests.integration.harness import Stack, wait_until
from tests.integration.masters import Masters


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test alone, which it may stop and start (tests/pg.py)."""
    cluster = pg.cluster_or_skip()
    yield cluster
    cluster.close()


def test_postgres_down_then_back_every_master_exits_to_be_restarted_and_state_is_intact(tmp_path, own_pg):
    stack = Stack(tmp_path)
    masters = Masters(stack, own_pg.database())
    try:
        leader, standby = masters.up()
        stack.agents(1, master=masters.agents_endpoints())
        agents = sorted(stack.online_agents())
        before = stack.api.run("echo before", agents, wait_for=30)
        own_pg.stop("fast")
        try:
            # both sessions are ended: the leader must stop serving, the standby must not stay waiting on a dead
            # session; each says why in one line and exits 75, which its supervisor restarts (2 is not restarted)
            for proc in (leader, standby):
                proc.popen.wait(15)
                assert proc.popen.returncode == 75, proc.log()
                assert "Traceback" not in proc.log(), proc.log()
            # a master (re)started while PostgreSQL is still down must exit 75 too, not 2: systemd does not
            # restart exit 2 (RestartPreventExitStatus=2), so the cluster would stay down after PostgreSQL is back
            again = masters.start("master1")
            again.popen.wait(30)
            assert again.popen.returncode == 75, again.log()
            lines = again.log().strip().splitlines()
            assert lines[-1].startswith("mschedule: cannot open database") and "Traceback" not in again.log(), lines
        finally:
            own_pg.start()
        back = masters.start("master2")
        wait_until(lambda: masters.leads("master2") or not back.alive(), 20, what="a master leading again")
        assert back.alive(), back.log()
        wait_until(lambda: set(stack.online_agents()) == set(agents), 30, what="the agent back")
        status, body = stack.api.get(f"/task/{before['task_id']}?output_limit=0")
        assert status == 200 and body["counts"]["SUCCEED"] == 1, body
        assert stack.api.run("echo after", agents, wait_for=30)["counts"]["SUCCEED"] == 1
    finally:
        stack.close()


def test_a_master_with_keys_of_its_own_refuses_to_join_the_cluster(tmp_path, pg_url):
    # an operator forgot to copy the first master's keys directory: the second master made its own pair. It stood
    # by, and on a failover took over with a key no agent and no web tier knows: every call timed out, silently
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url)
    try:
        first = masters.lead("master1")
        (tmp_path / "master2-state").mkdir()  # no copy of the keys: it creates a pair of its own
        stranger = masters.start("master2")
        stranger.popen.wait(20)
        assert stranger.popen.returncode == 2, stranger.log()
        lines = stranger.log().strip().splitlines()
        assert "Traceback" not in stranger.log() and lines[-1].startswith("mschedule: database postgresql://"), lines
        assert "the masters of its cluster have the master public key" in lines[-1], lines
        assert "copy keys/ from one of them to " in lines[-1] and "master2-state/keys" in lines[-1], lines
        assert first.alive() and masters.leads("master1")
        # one with the copy joins, as before
        shutil.rmtree(tmp_path / "master2-state")
        twin = masters.start("master2")
        wait_until(lambda: "standing by" in twin.log() or not twin.alive(), 20, what="the twin standing by")
        assert twin.alive(), twin.log()
    finally:
        stack.close()


def test_a_submit_answered_503_that_the_master_did_commit_says_it_may_have_been_done(tmp_path, pg_url, monkeypatch):
    # the leader's commit of a submit is held (a lock here; a slow PostgreSQL, or a reply lost in a failover) past
    # the web tier's timeout, then lands: the task runs, and the web tier's audit record after it commits too. The
    # web tier answered "master unreachable ...; is appserver.py running?": the caller, told nothing was done,
    # submits again, and the script runs twice
    import threading

    import psycopg

    monkeypatch.setattr(cluster_masters, "LEASE", 10.0)  # a commit held 4.5 s keeps the lease (the gate: 8 s)
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url, names=("master1",))
    try:
        masters.lead("master1")
        stack.web("--rpc-timeout", "3", master=masters.admin_endpoints())
        stack.agents(1, master=masters.agents_endpoints())
        agents = sorted(stack.online_agents())
        with psycopg.connect(pg_url, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")  # the leader's INSERT waits for it
            answer = {}
            key = {"Idempotency-Key": "submit-once-1"}
            thread = threading.Thread(target=lambda: answer.update(
                zip(("status", "body"), stack.api.post("/task", {"script": "echo once", "targets": agents},
                                                       headers=key), strict=True)))
            thread.start()
            time.sleep(4.5)  # the submit's call has timed out (3 s); the audit record's has not (3 s more)
            blocker.execute("COMMIT")  # both commits go through, well within the lease
            thread.join(15)
        assert answer["status"] == 503, answer
        status, tasks = stack.api.get("/tasks?limit=10")
        assert status == 200 and len(tasks) == 1, tasks  # it was committed after all
        assert stack.api.wait_task(tasks[0]["task_id"])["counts"]["SUCCEED"] == 1
        error = answer["body"]["error"]
        assert "may have been done; send it again with the same Idempotency-Key" in error, error
        assert "is appserver.py running" not in error
        # sent again, as the answer says: the task the first one made, and no second one
        again = stack.api.post("/task", {"script": "echo once", "targets": agents}, headers=key)
        assert again == (201, {"task_id": tasks[0]["task_id"]}), again
        assert len(stack.api.get("/tasks?limit=10")[1]) == 1
        status, body = stack.api.post("/task", {"script": "echo twice", "targets": agents}, headers=key)
        assert status == 409 and body["field"] == "idempotency_key", body
    finally:
        stack.close()


def test_a_master_whose_load_outlasts_the_lease_still_comes_up(tmp_path, pg_url):
    # reading a large state back takes longer than the lease (held here by a lock on tasks): the session is busy,
    # not idle, so it keeps the leader lock; but the watchdog, started after the load, measured the lease from
    # when the load was sent and exited 75 at once; started again it loads as long: it never came up
    import psycopg

    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url, names=("master1",))
    try:
        first = masters.lead("master1")
        first.stop()
        with psycopg.connect(pg_url, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")  # the load's SELECT waits for it
            again = masters.start("master1")
            wait_until(lambda: "leading: this master holds the leader lock" in again.log() or not again.alive(), 20,
                       what="the master leading again")
            time.sleep(LOAD_HELD)
            blocker.execute("COMMIT")
        wait_until(lambda: masters.leads("master1") or not again.alive(), 20, what="the master serving")
        time.sleep(1)
        assert again.alive(), again.log()
    finally:
        stack.close()


LOAD_HELD = cluster_masters.LEASE + 1


def test_three_masters_started_at_once_on_an_empty_database_one_leads(tmp_path, pg_cluster, pg_url, monkeypatch):
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url, names=("master1", "master2", "master3"))
    try:
        procs = []
        for name, lease in (("master1", 3.0), ("master2", 3.0), ("master3", 6.0)):  # one with another lease
            monkeypatch.setattr(cluster_masters, "LEASE", lease)
            procs.append(masters.start(name))
        wait_until(lambda: sum(masters.leads(n) for n in masters.ports) == 1
                   and sum("standing by" in p.log() for p in procs) == 2, 30, what="one leader, two standbys")
        time.sleep(2)
        assert all(p.alive() for p in procs), [p.log() for p in procs]
        assert sum(masters.leads(n) for n in masters.ports) == 1
        assert pg_cluster.sql(pg_url, "SELECT version FROM mschedule_schema") == [(2,)]
        assert "Traceback" not in "".join(p.log() for p in procs)
    finally:
        stack.close()


def test_a_sigstop_shorter_than_the_lease_keeps_the_leader(cluster):
    stack, masters = cluster
    stack.agents(1, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    leader = masters.procs["master1"]
    os.kill(leader.pid, signal.SIGSTOP)
    time.sleep(1.0)  # lease 3 s, the gate shuts after 2.4 s
    os.kill(leader.pid, signal.SIGCONT)
    assert stack.api.run("echo still here", agents, wait_for=30)["counts"]["SUCCEED"] == 1
    time.sleep(cluster_masters.LEASE)
    assert leader.alive() and masters.leads("master1") and not masters.leads("master2")
    assert "no longer leads" not in leader.log() and "leading:" not in masters.procs["master2"].log()


def test_kill9_while_results_are_reported_each_target_runs_once(cluster):
    # 10 targets all ending at the same moment: their results reach the leader as it is killed
    stack, masters = cluster
    stack.agents(10, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    ran = stack.tmp / "ran"
    ran.mkdir()
    task_id = stack.api.submit(f'sleep 2; echo ran >> "{ran}/$MSCHEDULE_AGENT_ID"; echo done', agents, parallel=10,
                               timeout=60)
    wait_until(lambda: len(list(ran.iterdir())) >= 3, 30, interval=0.01, what="the first scripts ending")
    masters.procs["master1"].kill9()
    done = stack.api.wait_task(task_id, timeout=60)
    assert done["counts"]["SUCCEED"] == 10, {a: (t["state"], t["output"][-200:]) for a, t in done["targets"].items()}
    assert all(t["output"] == "done\n" for t in done["targets"].values()), done["targets"]
    counts = {agent: (ran / agent).read_text().count("ran") for agent in agents}
    assert set(counts.values()) == {1}, counts


def test_key_decisions_survive_a_failover(tmp_path, pg_url):
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url, auto_accept=False)  # every new key waits for a decision
    try:
        first, second = masters.up()
        for _ in range(3):
            stack.agents(1, master=masters.agents_endpoints(), wait=False)
        pending = wait_until(lambda: [k["agent_id"] for k in stack.api.get("/keys")[1] if k["state"] == "pending"]
                             if len(stack.api.get("/keys")[1]) == 3 else None, 30, what="three keys pending")
        accepted, rejected, waiting = sorted(pending)
        assert stack.api.post(f"/keys/{accepted}/accept")[0] == 200
        assert stack.api.post(f"/keys/{rejected}/reject")[0] == 200
        wait_until(lambda: accepted in stack.online_agents(), 20, what="the accepted agent online")
        first.kill9()
        wait_until(lambda: masters.leads("master2"), 30, what="the standby leading")
        wait_until(lambda: accepted in stack.online_agents(), 30, what="the accepted agent online again")
        assert stack.api.run("echo ok", [accepted], wait_for=30)["counts"]["SUCCEED"] == 1
        states = {k["agent_id"]: k["state"] for k in stack.api.get("/keys")[1]}
        assert states == {accepted: "accepted", rejected: "rejected", waiting: "pending"}, states
        assert set(stack.online_agents()) == {accepted}
    finally:
        stack.close()


def test_a_schedule_fires_each_tick_at_most_once_across_failovers(tmp_path, pg_url):
    start, speed = time.time(), 30  # a minute in two seconds, the same clock on both masters
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url, extra=("--schedule-clock", f"{start:.3f}:{speed}"))
    try:
        first, second = masters.up()
        stack.agents(1, master=masters.agents_endpoints())
        agents = stack.online_agents()
        assert stack.api.post("/job/tick", {"script": "true", "targets": agents})[0] == 201
        status, created = stack.api.post("/schedules", {"job": "tick", "cron": "* * * * *", "catchup": "last",
                                                        "overlap": "allow"})
        assert status == 201, created
        sid = created["schedule_id"]

        def fired():
            status, tasks = stack.api.get(f"/tasks?schedule={sid}&limit=1000", timeout=5)
            return [t["schedule_tick"] for t in tasks] if status == 200 else None

        for leader, standby in (("master1", "master2"), ("master2", "master1")):
            count = len(wait_until(fired, 30, interval=0.02, what="a tick fired"))
            wait_until(lambda n=count: len(fired() or []) > n, 30, interval=0.02, what="the next tick")
            masters.procs[leader].kill9()  # a few ms after a tick's commit
            wait_until(lambda s=standby: masters.leads(s) and fired() is not None, 30, what="the standby serving")
            masters.start(leader)  # back, as a standby
            wait_until(lambda m=leader: "standing by" in masters.procs[m].log(), 20, what="a standby again")
        last = len(fired())
        wait_until(lambda: len(fired() or []) > last + 2, 30, what="ticks under the last leader")
        ticks = sorted(fired())
        assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
        assert all(t % 60 == 0 for t in ticks), ticks
    finally:
        stack.close()


def test_a_webhook_is_sent_only_for_an_end_that_is_committed(tmp_path, pg_url, monkeypatch):
    # the task's end is held from committing (a lock; a slow or failing database, a leader about to lose its
    # lease) when the leader dies: a webhook sent meanwhile told the receiver of an end the cluster never had; the
    # new leader ends the task again and sends another delivery, with another id the receiver cannot dedupe
    import psycopg

    from tests.integration.receiver import Receiver

    monkeypatch.setattr(cluster_masters, "LEASE", 10.0)  # the lock below is held well within the lease
    receiver = Receiver()
    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url)
    try:
        first, second = masters.up()
        stack.agents(1, master=masters.agents_endpoints())
        agents = sorted(stack.online_agents())
        ran = tmp_path / "ran"
        with psycopg.connect(pg_url, autocommit=True) as blocker:
            task_id = stack.api.submit(f'sleep 1; touch "{ran}"; echo hi', agents,
                                       notify=[{"url": receiver.url}])
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE targets IN EXCLUSIVE MODE")  # the result's commit waits for it
            wait_until(ran.exists, 20, what="the script ran")
            time.sleep(3)  # its result reached the leader, which ended the task in memory
            early = list(receiver.calls)
            first.kill9()  # its commit never lands
        assert early == [], f"a webhook for an end not committed: {early[0]['body'][:200]}"
        wait_until(lambda: masters.leads("master2"), 30, what="the standby leading")
        assert stack.api.wait_task(task_id, timeout=60)["counts"]["SUCCEED"] == 1
        wait_until(lambda: receiver.calls, 30, what="the webhook from the new leader")
        time.sleep(1)
        ids = {c["headers"]["X-Mschedule-Delivery"] for c in receiver.calls}
        assert len(ids) == 1, ids
    finally:
        stack.close()
        receiver.close()


def test_a_standby_frozen_past_its_session_exits_75_in_one_line(cluster):
    stack, masters = cluster
    standby = masters.procs["master2"]
    os.kill(standby.pid, signal.SIGSTOP)
    time.sleep(cluster_masters.LEASE + 1)  # PostgreSQL ends its silent session
    os.kill(standby.pid, signal.SIGCONT)
    standby.popen.wait(15)
    assert standby.popen.returncode == 75, standby.log()
    assert "Traceback" not in standby.log(), standby.log()
    assert standby.log().strip().splitlines()[-1].startswith("mschedule: database postgresql://"), standby.log()
    assert masters.leads("master1") and masters.procs["master1"].alive()


def test_a_sigstop_just_past_the_gate_but_within_the_session_hands_over_cleanly(cluster):
    # stopped 2.7 s: the gate shut at 2.4 s but PostgreSQL keeps the session until 3 s of silence. The leader must
    # not serve on resuming; it exits, which ends its session, and the standby takes over
    stack, masters = cluster
    stack.agents(1, master=masters.agents_endpoints())
    agents = sorted(stack.online_agents())
    leader = masters.procs["master1"]
    os.kill(leader.pid, signal.SIGSTOP)
    time.sleep(cluster_masters.LEASE * 0.9)
    os.kill(leader.pid, signal.SIGCONT)
    leader.popen.wait(10)
    assert leader.popen.returncode == 75, leader.log()
    wait_until(lambda: masters.leads("master2"), 30, what="the standby leading")
    # its registration, made just before the stop, may not have been committed (registrations are committed
    # by the periodic flush): the agent registers again with the new leader
    wait_until(lambda: _online(stack) == agents, 30, what="the agent online with the new leader")
    assert stack.api.run("echo after", agents, wait_for=60)["counts"]["SUCCEED"] == 1


def _online(stack: Stack) -> list[str] | None:
    try:
        return sorted(stack.online_agents())
    except (OSError, AssertionError):
        return None
