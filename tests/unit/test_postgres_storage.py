"""PostgreSQL as the shared store of several masters: the leader lock, its lease, and what a lost session fences.

A throwaway cluster (tests/pg.py); skipped, saying why, where PostgreSQL is not installed."""
import subprocess
import time

import gevent
import pytest

from mschedule.master.leadership import Leadership
from mschedule.master.migrations import LATEST, SchemaTooNew
from mschedule.master.sql_storage import open_storage
from mschedule.master.storage import AgentRecord, StorageError
from tests.integration.harness import PYTHON, ROOT


def test_a_second_master_stands_by_until_the_leaders_session_ends(pg_url):
    first = open_storage(pg_url)
    first.add_agent(AgentRecord(id="a1", hostname="h1"))
    first.flush()
    told = []
    second = gevent.spawn(open_storage, pg_url, None, told.append)
    gevent.sleep(2.5)
    assert not second.ready(), "the second master took the lock while the first held it"
    assert len(told) == 1 and "mschedule-master" in told[0]  # who leads, as pg_stat_activity names it
    first.close()  # the leader's session ends: the lock is free
    taken = second.get(timeout=5)
    try:
        assert "a1" in taken.agents  # the new leader loaded what the old one committed
    finally:
        taken.close()


def test_postgres_ends_a_silent_leaders_session_and_its_later_writes_fail(pg_url):
    first = open_storage(pg_url, lease=2)
    gevent.sleep(3.5)  # frozen, as far as the database can tell: nothing sent for longer than the lease
    second = gevent.spawn(open_storage, pg_url, 2)
    taken = second.get(timeout=5)  # without the session's idle timeout this waits for good
    try:
        first.add_agent(AgentRecord(id="late", hostname="h"))
        with pytest.raises(StorageError):
            first.flush()  # the old leader's batch cannot land on the new leader's state
        assert "late" not in open_storage(":memory:").agents
    finally:
        taken.close()
        first._pool.kill()


def test_the_gate_closes_before_the_lease_can_end_and_the_watchdog_fences(pg_url):
    storage = open_storage(pg_url, lease=2)
    lost = []
    leadership = Leadership(storage, on_lost=lost.append)
    try:
        leadership.start()
        assert leadership.serving()
        # a SIGSTOP, as the process sees it: the loop does not run (time.sleep does not yield), the clock goes on
        time.sleep(2 - leadership.margin + 0.1)
        assert not leadership.serving(), "a leader went on serving past its lease minus the margin"
        time.sleep(leadership.margin + 1.5)  # PostgreSQL has ended the silent session by now
        gevent.sleep(1)
        assert len(lost) == 1, lost  # the watchdog saw the lease gone, or the renewal found the session gone
        with pytest.raises(StorageError, match="no longer holds the leader lock"):
            storage.ping()  # fenced: nothing more is sent on the session
    finally:
        leadership.stop()
        storage._pool.kill()
        storage._conn.close()


def test_a_leader_keeps_its_lease_while_it_renews_it(pg_url):
    storage = open_storage(pg_url, lease=2)
    lost = []
    leadership = Leadership(storage, on_lost=lost.append)
    leadership.start()
    try:
        gevent.sleep(5)  # two and a half leases
        assert lost == [] and leadership.serving()
    finally:
        leadership.stop()
        storage.close()


def test_a_postgres_database_newer_than_the_master_is_refused_in_one_line(pg_cluster, pg_url, tmp_path):
    open_storage(pg_url).close()
    pg_cluster.sql(pg_url, "UPDATE mschedule_schema SET version = %s", LATEST + 1)
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST + 1}, newer than this master's {LATEST}"):
        open_storage(pg_url)
    proc = subprocess.run([PYTHON, "appserver.py", "--insecure", "--db", pg_url, "--state-dir", str(tmp_path),
                           "--bind", "tcp://127.0.0.1:0", "--admin-bind", "tcp://127.0.0.1:0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"mschedule: database {pg_url} has schema version {LATEST + 1}, "
                                                f"newer than this master's {LATEST}: it was written by a newer "
                                                "mschedule; upgrade this one, or give it another --db"]


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    from tests.integration.harness import free_port

    url = f"postgresql://ops:hunter2@127.0.0.1:{free_port()}/mschedule"
    proc = subprocess.run([PYTHON, "appserver.py", "--insecure", "--db", url, "--state-dir", str(tmp_path),
                           "--bind", "tcp://127.0.0.1:0", "--admin-bind", "tcp://127.0.0.1:0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 75  # a server that does not answer may yet: systemd starts the master again
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("mschedule: cannot open database postgresql://ops:***@127.0.0.1:"), lines
    assert "hunter2" not in proc.stderr


def test_a_master_with_other_keys_is_refused_at_once_even_as_a_standby(pg_url, tmp_path):
    ours = {"master_key": "A" * 40, "admin_key": "B" * 40}
    leader = open_storage(pg_url, identity=ours)  # the first leader's keys become the cluster's
    try:
        with pytest.raises(StorageError, match="leads on this database"):
            open_storage(pg_url, wait=False, identity=ours)  # same keys: it would stand by
        with pytest.raises(StorageError, match=f"the master public key {'A' * 40}, this one has {'C' * 40}"):
            open_storage(pg_url, identity={"master_key": "C" * 40, "admin_key": "B" * 40})  # no waiting first
        proc = subprocess.run([PYTHON, "appserver.py", "--db", pg_url, "--state-dir", str(tmp_path / "other"),
                               "--bind", "tcp://127.0.0.1:0", "--admin-bind", "tcp://127.0.0.1:0"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)  # a master whose keys/ was not copied
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"mschedule: database {pg_url}: the masters of its cluster have the master public "
                               f"key {'A' * 40}, this one has ") and "copy keys/" in last
    finally:
        leader.close()


def _appserver(tmp_path, db: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "appserver.py", "--insecure", "--db", db, "--state-dir", str(tmp_path),
                           "--bind", "tcp://127.0.0.1:0", "--admin-bind", "tcp://127.0.0.1:0", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_a_database_of_another_application_is_refused_in_one_line_and_left_alone(pg_cluster, pg_url, tmp_path):
    # tables of our names (not our columns) and no schema version: CREATE TABLE IF NOT EXISTS kept them, and the
    # master died on a missing column with a traceback
    pg_cluster.sql(pg_url, "CREATE TABLE tasks (id SERIAL PRIMARY KEY, title TEXT)")
    pg_cluster.sql(pg_url, "INSERT INTO tasks (title) VALUES ('buy milk')")
    proc = _appserver(tmp_path, pg_url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"mschedule: database {pg_url} has no mschedule schema version but already has tables named tasks: it "
        "belongs to another application; give the master a database of its own (CREATE DATABASE mschedule)"]
    assert pg_cluster.sql(pg_url, "SELECT to_regclass('mschedule_schema'), to_regclass('agents')") == [(None, None)]
    assert pg_cluster.sql(pg_url, "SELECT title FROM tasks") == [("buy milk",)]


@pytest.mark.parametrize("db", [
    "postgresql://ops@127.0.0.1:{port}/mschedule?password=hunter2",  # a parameter, not the user part
    "postgresql://ops:hunter2@[::1/mschedule",  # malformed: libpq quotes the whole URL back
    "postgresql://ops:hunter2@127.0.0.1:{port}/mschedule?sslmode=bogus",
])
def test_no_form_of_a_bad_database_url_prints_its_password(tmp_path, db):
    from tests.integration.harness import free_port

    proc = _appserver(tmp_path, db.format(port=free_port()))
    assert proc.returncode in (2, 75), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mschedule: cannot open database postgresql://"), lines
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("lease", ["nan", "inf", "1e7", "1.5"])
def test_a_leader_lease_out_of_range_is_one_usage_line(tmp_path, lease):
    # NaN passed the ">= 2" check and inf has no upper bound: both crashed with a traceback in int(lease * 1000)
    proc = _appserver(tmp_path, "postgresql://ops@127.0.0.1:1/mschedule", "--leader-lease", lease)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith("--leader-lease must be between 2 and 86400 seconds") or \
        last.endswith(f"--leader-lease: expected a finite number, got {lease}"), last
    assert "Traceback" not in proc.stderr
