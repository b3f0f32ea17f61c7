"""Write-through SQL persistence for the master's in-memory :class:`Storage`, whatever the database.

The in-memory records stay the working set; every ``save_*`` snapshots a row into a pending batch
(later saves of the same row replace earlier ones), and :meth:`SQLStorage.flush` commits the batch.
Commits run on one dedicated thread with one connection, so the gevent loop keeps serving while the database
writes and fsyncs, and everything that piles up during one commit goes into the next (group commit).

The backends (mschedule/master/sqlite_storage.py, mschedule/master/postgres_storage.py) differ only in how they
connect, their schema's column types and their placeholder; every statement here is written once, with ``?``
placeholders and the upsert both databases share (``INSERT ... ON CONFLICT (key) DO UPDATE``).

What must be durable before it is acknowledged is flushed by the handler's ``@commits``
(mschedule/master/handler.py) after the call and before its answer: every admin call that changes state (a task, a
cancel, a job version, a group, a key decision), a dispatch (``get_task``'s answer) and a result (its ack).
Registrations and heartbeats are not flushed; a periodic flush catches up with them and with every other
change.
"""
from __future__ import annotations

import json
import logging
import time

from gevent.event import AsyncResult
from gevent.threadpool import ThreadPool

from mschedule.master import metrics
from mschedule.master.storage import (
    AgentRecord,
    KeyRecord,
    KeyState,
    ScheduleRecord,
    Storage,
    StorageError,
    TargetRecord,
    TaskRecord,
    TokenRecord,
)
from mschedule.utils.defaults import DEFAULT_LEASE
from mschedule.utils.greenlets import capture, unwrap
from mschedule.utils.states import State

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """A driver's error message on one line (PostgreSQL's span several)."""
    return " ".join(str(exc).split())


def upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """An insert that replaces the row of the same key (SQLite 3.24+ and PostgreSQL alike)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


UPSERT_AGENT = upsert("agents", ("id", "hostname", "ip", "labels", "registered", "heartbeat", "online", "session"),
                      ("id",))
UPSERT_TASK = upsert("tasks", ("id", "seq", "script", "timeout", "parallel", "fail_rate", "fail_count", "created",
                               "state", "started", "finished", "extra"), ("id",))
UPSERT_TARGET = upsert("targets", ("task_id", "agent_id", "pos", "state", "code", "output", "started", "finished",
                                   "timed_out", "truncated"), ("task_id", "agent_id"))
UPSERT_KEY = upsert("keys", ("agent_id", "key", "state", "hostname", "ip", "first_seen", "decided"), ("agent_id",))
UPSERT_GROUP = upsert("groups", ("name", "body"), ("name",))
UPSERT_SCHEDULE = upsert("schedules", ("id", "seq", "body"), ("id",))
UPSERT_TOKEN = upsert("tokens", ("id", "body"), ("id",))
# "user" is a reserved word in PostgreSQL: quoted wherever the column is named
INSERT_AUDIT = 'INSERT INTO audit (seq, time, "user", action, body) VALUES (?, ?, ?, ?, ?)'


class SQLStorage(Storage):
    """:class:`Storage` that writes through to a database; a backend says how to connect and what fails."""

    #: what the backend's driver raises when a statement or a commit fails
    driver_errors: tuple[type[BaseException], ...] = ()
    #: the backend's placeholder, put in place of each ``?`` of the statements above
    placeholder = "?"
    #: several masters share the database, one leading (mschedule/master/leadership.py)
    shared = False
    #: how a read of everything begins its transaction (one snapshot for all tables)
    snapshot = "BEGIN"

    def __init__(self, where: str) -> None:
        super().__init__()
        #: the database, as the operator named it (for messages; a backend leaves out any password)
        self.path = where
        self._pool = ThreadPool(1)
        self._statements: dict[str, str] = {}
        try:
            self._conn = self._run(self._open)
        except self.driver_errors as exc:
            self._pool.kill()
            raise StorageError(f"cannot open database {self.path}: {self.describe(exc)}", self.temporary(exc)) from exc
        except BaseException:
            self._pool.kill()
            raise
        self._agents: dict[str, tuple] = {}
        self._tasks: dict[str, tuple] = {}
        self._targets: dict[tuple[str, str], tuple] = {}
        self._keys: dict[str, tuple | None] = {}
        self._groups: dict[str, str | None] = {}
        self._schedules: dict[str, tuple | None] = {}
        self._tokens: dict[str, tuple | None] = {}
        self._audit: list[tuple] = []
        self._audit_seq = 0
        self._job_versions: list[tuple] = []
        self._deleted_tasks: list[str] = []
        self._seq = 0
        #: number of saves so far, and how many of them are known to be committed
        self._saved = 0
        self._durable = 0
        self._inflight: AsyncResult | None = None
        self.commits = 0

    def _run(self, fn, *args):
        """Run ``fn`` on the database thread; the calling greenlet waits, the loop goes on."""
        return unwrap(self._pool.apply(capture, (fn, *args)))

    def _open(self):
        """Connect (on the database thread), in autocommit mode, the schema's version checked (SQLite migrates it
        here; on PostgreSQL the leader does, in ``lead``)."""
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        raise NotImplementedError

    def temporary(self, exc: BaseException) -> bool:
        """Whether ``exc`` of the driver may go away by itself (the master's supervisor should try again)."""
        return False

    def describe(self, exc: BaseException) -> str:
        """The driver's error ``exc`` for a message: one line, nothing secret."""
        return one_line(exc)

    def _sql(self, statement: str) -> str:
        """``statement`` with the backend's placeholder."""
        if self.placeholder == "?":
            return statement
        if statement not in self._statements:
            self._statements[statement] = statement.replace("?", self.placeholder)
        return self._statements[statement]

    # ---- load -----------------------------------------------------------------------------
    def load(self) -> None:
        """Read everything back into memory (at start, before serving)."""
        agents, tasks, targets, keys, groups, jobs, schedules, tokens, audit_seq = self._run(self._read_all)
        self.tokens = {row[0]: TokenRecord.from_json(json.loads(row[1])) for row in tokens}
        self._audit_seq = audit_seq
        self.schedules = {row[0]: ScheduleRecord.from_json(json.loads(row[1])) for row in schedules}
        for name, version, created_at, message, sha256, script, params in jobs:
            self.jobs.setdefault(name, []).append({"name": name, "version": version, "created_at": created_at,
                                                   "message": message, "sha256": sha256, "script": script,
                                                   "params": json.loads(params)})
        self.groups = {name: json.loads(body) for name, body in groups}
        for row in keys:
            self.keys[row[0]] = KeyRecord(agent_id=row[0], key=row[1], state=KeyState(row[2]), hostname=row[3],
                                          ip=json.loads(row[4]), first_seen=row[5], decided=row[6])
        for row in agents:
            agent = AgentRecord(id=row[0], hostname=row[1], ip=json.loads(row[2]), labels=json.loads(row[3]),
                                registered=row[4] or 0.0, heartbeat=row[5] or 0.0, online=bool(row[6]),
                                session=row[7])
            self.agents[agent.id] = agent
        by_task: dict[str, dict[str, TargetRecord]] = {}
        for row in targets:
            by_task.setdefault(row[0], {})[row[1]] = TargetRecord(
                agent_id=row[1], state=State(row[3]), code=row[4], output=row[5] or b"", started=row[6],
                finished=row[7], timed_out=bool(row[8]), truncated=bool(row[9]))
        for row in tasks:
            extra = json.loads(row[11]) if len(row) > 11 and row[11] else {}
            task = TaskRecord(id=row[0], script=row[2], timeout=row[3], parallel=row[4], fail_rate=row[5],
                              fail_count=row[6], targets=by_task.get(row[0], {}), created=row[7],
                              state=State(row[8]), started=row[9], finished=row[10],
                              batches=[(v, m) for v, m in extra.get("batches", [])],
                              **{k: extra[k] for k in TaskRecord.EXTRA_FIELDS if extra.get(k) is not None})
            self.tasks[task.id] = task
            self._seq = max(self._seq, row[1])
        log.info("loaded %d agents and %d tasks from %s", len(self.agents), len(self.tasks), self.path)

    def _read_all(self) -> tuple:
        cur = self._conn.cursor()
        cur.execute(self.snapshot)  # one consistent view, whatever another process commits meanwhile
        try:
            return self._select_all(cur)
        finally:
            cur.execute("COMMIT")

    def _select_all(self, cur) -> tuple:
        agents = cur.execute("SELECT id, hostname, ip, labels, registered, heartbeat, online, session "
                             "FROM agents").fetchall()
        tasks = cur.execute("SELECT id, seq, script, timeout, parallel, fail_rate, fail_count, created, state, "
                            "started, finished, extra FROM tasks ORDER BY seq").fetchall()
        targets = cur.execute("SELECT task_id, agent_id, pos, state, code, output, started, finished, timed_out, "
                              "truncated FROM targets ORDER BY task_id, pos").fetchall()
        keys = cur.execute("SELECT agent_id, key, state, hostname, ip, first_seen, decided FROM keys").fetchall()
        groups = cur.execute("SELECT name, body FROM groups").fetchall()
        jobs = cur.execute("SELECT name, version, created_at, message, sha256, script, params FROM job_versions "
                           "ORDER BY name, version").fetchall()
        schedules = cur.execute("SELECT id, body FROM schedules ORDER BY seq").fetchall()
        tokens = cur.execute("SELECT id, body FROM tokens").fetchall()
        audit_seq = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
        return agents, tasks, targets, keys, groups, jobs, schedules, tokens, audit_seq

    # ---- write-through hooks --------------------------------------------------------------
    def save_agent(self, agent: AgentRecord) -> None:
        self._saved += 1
        self._agents[agent.id] = (agent.id, agent.hostname, json.dumps(agent.ip), json.dumps(agent.labels),
                                  agent.registered, agent.heartbeat, int(agent.online), agent.session)

    def add_task(self, task: TaskRecord) -> None:
        self._saved += 1
        self._seq += 1
        task_seq = self._seq
        self.tasks[task.id] = task
        self._tasks[task.id] = self._task_row(task, task_seq)
        for pos, target in enumerate(task.targets.values()):
            self._targets[(task.id, target.agent_id)] = self._target_row(task, target, pos)

    def save_task(self, task: TaskRecord) -> None:
        self._saved += 1
        # a row still pending insertion keeps its seq; otherwise this is an update (seq None)
        old = self._tasks.get(task.id)
        self._tasks[task.id] = self._task_row(task, old[1] if old else None)

    def save_target(self, task: TaskRecord, target: TargetRecord) -> None:
        self._saved += 1
        # a row still pending insertion keeps its position; otherwise this is an update (pos None)
        key = (task.id, target.agent_id)
        old = self._targets.get(key)
        self._targets[key] = self._target_row(task, target, old[2] if old else None)

    def save_key(self, record: KeyRecord) -> None:
        super().save_key(record)
        self._saved += 1
        self._keys[record.agent_id] = (record.agent_id, record.key, record.state.value, record.hostname,
                                       json.dumps(record.ip), record.first_seen, record.decided)

    def delete_key(self, agent_id: str) -> None:
        super().delete_key(agent_id)
        self._saved += 1
        self._keys[agent_id] = None  # a deletion

    def delete_task(self, task_id: str) -> None:
        super().delete_task(task_id)
        self._saved += 1
        self._tasks.pop(task_id, None)
        for key in [k for k in self._targets if k[0] == task_id]:
            del self._targets[key]
        self._deleted_tasks.append(task_id)

    def save_job_version(self, version: dict) -> None:
        super().save_job_version(version)
        self._saved += 1
        self._job_versions.append((version["name"], version["version"], version["created_at"], version["message"],
                                   version["sha256"], version["script"], json.dumps(version["params"])))

    def save_group(self, name: str, body: dict) -> None:
        super().save_group(name, body)
        self._saved += 1
        self._groups[name] = json.dumps(body)

    def delete_group(self, name: str) -> None:
        super().delete_group(name)
        self._saved += 1
        self._groups[name] = None

    def save_schedule(self, record: ScheduleRecord) -> None:
        super().save_schedule(record)
        self._saved += 1
        self._schedules[record.id] = (record.id, int(record.created * 1e6), json.dumps(record.to_json()))

    def delete_schedule(self, schedule_id: str) -> None:
        super().delete_schedule(schedule_id)
        self._saved += 1
        self._schedules[schedule_id] = None

    def save_token(self, record: TokenRecord) -> None:
        super().save_token(record)
        self._saved += 1
        self._tokens[record.token_id] = (record.token_id, json.dumps(record.to_json()))

    def delete_token(self, token_id: str) -> None:
        super().delete_token(token_id)
        self._saved += 1
        self._tokens[token_id] = None

    def add_audit(self, entry: dict) -> None:
        """Appended to the database only (the trail is read back from there, not kept in memory)."""
        self._saved += 1
        self._audit_seq += 1
        entry["seq"] = self._audit_seq
        self._audit.append((entry["seq"], entry["time"], entry["user"], entry["action"], json.dumps(entry)))

    def query_audit(self, user: str | None, action: str | None, since: float | None, limit: int,
                    before: int | None = None) -> list[dict]:
        """Newest first, read on the database thread (after the commits before it); ``before``: only records
        older than the one of this ``seq``."""
        sql, args = "SELECT body FROM audit WHERE TRUE", []
        for column, value in (('"user"', user), ("action", action)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        if before is not None:
            sql += " AND seq < ?"
            args.append(before)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        rows = self._run(lambda: self._conn.execute(self._sql(sql), args).fetchall())
        return [json.loads(row[0]) for row in rows]

    def prune_audit(self, before: float) -> int:
        return self._run(lambda: self._conn.execute(self._sql("DELETE FROM audit WHERE time < ?"), (before,)).rowcount)

    @staticmethod
    def _task_row(task: TaskRecord, seq: int | None) -> tuple:
        return (task.id, seq, task.script, task.timeout, task.parallel, task.fail_rate, task.fail_count,
                task.created, task.state.value, task.started, task.finished, json.dumps(task.extra))

    @staticmethod
    def _target_row(task: TaskRecord, target: TargetRecord, pos: int | None) -> tuple:
        return (task.id, target.agent_id, pos, target.state.value, target.code, target.output, target.started,
                target.finished, int(target.timed_out), int(target.truncated))

    # ---- commit ---------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._agents or self._tasks or self._targets or self._keys or self._groups or self._job_versions
                    or self._deleted_tasks or self._schedules or self._tokens or self._audit)

    def flush(self) -> None:
        """Return once every change saved before this call is committed to disk.

        Group commit: while one commit runs on the database thread, later changes pile up and go into the
        next one, led by whichever waiting caller gets there first; callers whose changes are in the
        running commit just wait for it.

        Raises:
            StorageError: the commit failed; its changes stay pending for the next flush.
        """
        wanted = self._saved
        while self._durable < wanted:
            if self._inflight is not None:
                self._inflight.get()
                continue
            self._commit_pending()

    def _commit_pending(self) -> None:
        upto = self._saved
        batch = (self._agents, self._tasks, self._targets, self._keys, self._groups, self._job_versions,
                 self._deleted_tasks, self._schedules, self._tokens, self._audit)
        self._agents, self._tasks, self._targets, self._keys, self._groups, self._schedules = {}, {}, {}, {}, {}, {}
        self._tokens, self._audit = {}, []
        self._job_versions, self._deleted_tasks = [], []
        done = self._inflight = AsyncResult()
        start = time.perf_counter()
        try:
            self._run(self._commit, *batch)
        except self.driver_errors as exc:
            metrics.DB_COMMIT_ERRORS.inc()
            # keep the lost batch, under anything saved since (which is newer)
            self._agents = {**batch[0], **self._agents}
            self._tasks = {**batch[1], **self._tasks}
            self._targets = {**batch[2], **self._targets}
            self._keys = {**batch[3], **self._keys}
            self._groups = {**batch[4], **self._groups}
            self._job_versions = batch[5] + self._job_versions
            self._deleted_tasks = batch[6] + self._deleted_tasks
            self._schedules = {**batch[7], **self._schedules}
            self._tokens = {**batch[8], **self._tokens}
            self._audit = batch[9] + self._audit
            self.last_error = f"{type(exc).__name__}: {self.describe(exc)}"
            error = StorageError(self.last_error)
            done.set_exception(error)
            raise error from exc
        finally:
            self._inflight = None
        self.last_error = None
        metrics.db_committed(time.perf_counter() - start)
        self._durable = max(self._durable, upto)
        self.commits += 1
        done.set(None)

    def _commit(self, agents: dict, tasks: dict, targets: dict[tuple[str, str], tuple],
                keys: dict[str, tuple | None], groups: dict[str, str | None], job_versions: list[tuple],
                deleted_tasks: list[str], schedules: dict[str, tuple | None], tokens: dict[str, tuple | None],
                audit: list[tuple]) -> None:
        cur = self._conn.cursor()
        q = self._sql

        def many(statement: str, rows) -> None:
            rows = list(rows)
            if rows:
                cur.executemany(q(statement), rows)

        cur.execute("BEGIN")
        try:
            many(UPSERT_AGENT, agents.values())
            # a task row saved without its seq (a state change) keeps the seq it was inserted with
            many(UPSERT_TASK, [r for r in tasks.values() if r[1] is not None])
            many("UPDATE tasks SET state = ?, started = ?, finished = ?, extra = ? WHERE id = ?",
                 [(r[8], r[9], r[10], r[11], r[0]) for r in tasks.values() if r[1] is None])
            many(UPSERT_TARGET, [r for r in targets.values() if r[2] is not None])
            many("UPDATE targets SET state = ?, code = ?, output = ?, started = ?, finished = ?, "
                 "timed_out = ?, truncated = ? WHERE task_id = ? AND agent_id = ?",
                 [(r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[0], r[1]) for r in targets.values() if r[2] is None])
            many(UPSERT_KEY, [r for r in keys.values() if r is not None])
            many("DELETE FROM keys WHERE agent_id = ?", [(k,) for k, r in keys.items() if r is None])
            many(UPSERT_GROUP, [(n, b) for n, b in groups.items() if b is not None])
            many("DELETE FROM groups WHERE name = ?", [(n,) for n, b in groups.items() if b is None])
            many("INSERT INTO job_versions (name, version, created_at, message, sha256, script, params) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", job_versions)
            many("DELETE FROM targets WHERE task_id = ?", [(t,) for t in deleted_tasks])
            many("DELETE FROM tasks WHERE id = ?", [(t,) for t in deleted_tasks])
            many(UPSERT_SCHEDULE, [r for r in schedules.values() if r is not None])
            many("DELETE FROM schedules WHERE id = ?", [(k,) for k, r in schedules.items() if r is None])
            many(UPSERT_TOKEN, [r for r in tokens.values() if r is not None])
            many("DELETE FROM tokens WHERE id = ?", [(k,) for k, r in tokens.items() if r is None])
            many(INSERT_AUDIT, audit)
            cur.execute("COMMIT")
        except BaseException:
            if self._in_transaction():  # the database may have rolled back by itself (SQLite on a full disk does)
                try:
                    cur.execute("ROLLBACK")
                except self.driver_errors:
                    log.debug("rollback after a failed commit failed too", exc_info=True)
            raise

    def abandon(self) -> None:
        """Let the connection and its thread go without a last commit."""
        try:
            self._run(self._conn.close)
        except BaseException:  # closing a broken connection may fail in any way; it is let go anyway
            log.debug("closing an abandoned connection failed", exc_info=True)
        self._pool.kill()

    def close(self) -> None:
        try:
            self.flush()
        except StorageError:
            log.exception("final commit to %s failed", self.path)
        self._run(self._conn.close)
        self._pool.kill()


def open_storage(db: str, lease: float | None = None, waiting=None, wait: bool = True,
                 identity: dict[str, str] | None = None, keys_dir: str | None = None) -> Storage:
    """The master's storage for ``--db``, loaded: ``:memory:`` keeps everything in memory only; a
    ``postgresql://`` URL is shared by the masters of a cluster (this call returns once this master leads, with
    ``waiting(holder)`` told if it has to stand by first, or StorageError at once if ``wait`` is false; ``lease``:
    mschedule/master/leadership.py; ``identity``: the keys every master of the cluster must share,
    mschedule/master/postgres_storage.py); anything else is an SQLite file.

    Raises:
        StorageError: the database cannot be opened, or the cluster refuses this master.
        SchemaRefused: it was written by a newer mschedule, or belongs to another application.
    """
    if db == ":memory:":
        return Storage()
    storage: SQLStorage
    if db.startswith(("postgresql://", "postgres://")):
        from mschedule.master.postgres_storage import PostgresStorage  # psycopg only where it is used

        storage = PostgresStorage(db, lease or DEFAULT_LEASE, identity, keys_dir)
    else:
        from mschedule.master.sqlite_storage import SQLiteStorage

        storage = SQLiteStorage(db)
    try:
        if storage.shared:
            storage.lead(waiting, wait)
        storage.load()
    except storage.driver_errors as exc:  # e.g. the database server went away while this master stood by
        storage.abandon()
        raise StorageError(f"database {storage.path}: {storage.describe(exc)}", storage.temporary(exc)) from exc
    except BaseException:  # refused (another cluster's keys, a newer schema): the lock and thread go with it
        storage.abandon()
        raise
    return storage
