"""Schedules: a job run on a cron schedule, each tick fired at most once, and exactly once while the master runs.

The rules (docs/schedules.md):

- A schedule's ticks are its cron expression's times in its time zone (cronsim, which follows Debian's cron
  across DST changes: a time skipped by a spring-forward runs once, just after; one repeated by a fall-back
  runs once).
- The master deals with each tick once: it fires it, or records it skipped (``overlap: skip`` while the
  previous run still runs) or missed (seen too late). ``last_tick`` records the newest tick dealt with, and is
  saved *in the same commit* as the task the tick fires: after a crash either both exist or neither does,
  so a restarted master never fires a tick twice, and fires a tick it never fired if it is still in time.
- In time: a tick seen at most :data:`LATE` seconds after its time (a busy loop, a quick restart). A later
  one (the master was down or stopped, the clock jumped) is missed, unless ``catchup`` is ``last``: then the
  newest missed tick fires once if it is at most ``grace`` seconds old. Older ticks are only counted.
- ``overlap``: ``skip`` (the default) does not fire while the previous run of the schedule has a target
  waiting or running; ``queue`` fires one tick when the previous run ends (a newer tick replaces a queued
  one, which counts as skipped); ``allow`` always fires.
- A tick earlier than ``last_tick`` (the clock went back) is never fired again.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import gevent
import gevent.event
from cronsim import CronSim, CronSimError

from mschedule.master import metrics
from mschedule.master.jobs import Jobs
from mschedule.master.storage import Catchup, Overlap, ScheduleRecord, Storage, TaskRecord
from mschedule.utils.exceptions import MScheduleError, NotFound, ValidationError
from mschedule.utils.params import MASK, masked
from mschedule.utils.taskspec import TaskSpec, validate_notify
from mschedule.utils.validate import describe, utf8

log = logging.getLogger(__name__)

LATE = 60.0
"""Seconds after its time that a tick still fires as on time."""
DEFAULT_GRACE = 3600.0
"""How old the newest missed tick may be for ``catchup: last`` to fire it (the master's --schedule-grace)."""
MAX_WAKE = 1.0
"""Longest sleep of the firing loop (real seconds): it notices a queued tick's previous run ending, a clock
jump and a change made meanwhile within this."""
SETTLE_POLL = 0.2
"""Real seconds between two looks at a tick waiting for the agents to report after a start."""
KEPT = 20
"""Runs and skips each schedule keeps in its record (newest)."""
MAX_SCHEDULES = 10000
MAX_CRON = 200
MAX_COUNTED = 10000
"""Missed ticks counted one by one; beyond, the count says at least this many."""
ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
"""crontab(5)'s nicknames, as the expressions it defines them to be (cronsim parses five fields only)."""
FIELDS = ("job", "version", "cron", "timezone", "targets", "selector", "params", "overlap", "catchup", "enabled",
          "notify", "description")


def cron_expression(value: Any) -> str:
    """``value`` as the five-field expression cronsim parses (a nickname replaced by its definition)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CRON:
        raise ValidationError(f"cron: expected a cron expression such as '*/5 * * * *' or @daily, got "
                              f"{describe(value) if not isinstance(value, str) else repr(value[:50])}", field="cron")
    return ALIASES.get(value.strip().lower(), value.strip())


def zone(value: Any) -> ZoneInfo:
    if not isinstance(value, str) or not value or len(value) > 100:
        raise ValidationError(f"timezone: expected an IANA time zone such as Europe/Berlin, got {describe(value)}",
                              field="timezone")
    try:
        return ZoneInfo(utf8(value, "timezone"))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"timezone: unknown time zone {value!r} (IANA names such as Europe/Berlin or UTC)",
                              field="timezone") from None


def ticks(cron: str, tz: str, after: float) -> CronSim:
    """The schedule's ticks after ``after`` (Unix seconds), as aware datetimes in its time zone."""
    start = datetime.fromtimestamp(after, ZoneInfo(tz))
    return CronSim(cron_expression(cron), start)


class ScheduleClock:
    """The clock ticks are read from: the real one, or for tests (``--schedule-clock START:SPEED``) one that
    runs ``speed`` times faster from ``start``, the same across master restarts, so a minute passes in a
    second and every other part of the firing path stays the real one."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        self.start, self.speed = start, speed

    @classmethod
    def parse(cls, text: str | None) -> ScheduleClock:
        if not text:
            return cls()
        start, _, speed = text.partition(":")
        return cls(float(start), float(speed or 1))

    def now(self) -> float:
        real = time.time()
        return real if self.start is None else self.start + (real - self.start) * self.speed

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.speed


class Schedules:
    """Schedule records (``storage.schedules``), their checks, and the loop that fires them."""

    def __init__(self, storage: Storage, jobs: Jobs, submit: Callable[[TaskSpec], TaskRecord],
                 check: Callable[[TaskSpec], TaskSpec], clock: ScheduleClock | None = None,
                 grace: float = DEFAULT_GRACE, settle: float = 0.0) -> None:
        self.storage = storage
        self.jobs = jobs
        #: make a task of a spec (targets resolved and their keys checked), as a request's task is made
        self._submit = submit
        #: the targets check alone, for a schedule's create and edit
        self._check = check
        self.clock = clock or ScheduleClock()
        self.grace = grace
        self._changed = gevent.event.Event()
        #: schedule id -> its next tick (schedule clock), so the loop evaluates a cron expression only when a
        #: tick is due, not for every schedule at every wake; dropped when the schedule changes
        self._due: dict[str, float | None] = {}
        #: the tasks not ended when this master started (its records, restored): their agents may have finished
        #: them meanwhile (a result in the spool) or be about to run them, and report once they reconnect, within
        #: ``settle`` seconds (the agent timeout, after which a silent agent's targets fail); until then the
        #: ``overlap`` of the schedules they belong to waits
        self._unfinished_at_start = {t.id for t in storage.tasks.values() if not t.state.is_finished or t.running}
        self._settle_until = time.monotonic() + settle
        #: schedule id -> when (schedule clock) its tick was first left waiting for the agents after the start
        self._waiting: dict[str, float] = {}
        #: job name -> (its number of versions, the names secret in any of them), for :meth:`_kept_secrets`
        self._secret_names: dict[str, tuple[int, frozenset[str]]] = {}

    # ---- records ---------------------------------------------------------------------------
    def create(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise ValidationError(f"body: expected an object with job and cron, got {describe(body)}", field="body")
        if len(self.storage.schedules) >= MAX_SCHEDULES:
            raise ValidationError(f"body: {MAX_SCHEDULES} schedules exist, the most one master keeps", field="body")
        if not isinstance(body.get("job"), str):
            raise ValidationError("job: missing (the name of the job to run)", field="job")
        record = ScheduleRecord(id=uuid.uuid4().hex, job=body["job"], cron="", created=self.clock.now())
        self._apply(record, body)
        record.last_tick = record.created  # ticks from now on
        self.storage.save_schedule(record)
        self._changed.set()  # the loop computes its first tick (none is cached)
        log.info("schedule %s created: job %s, %r %s", record.id, record.job, record.cron, record.timezone)
        return {"schedule_id": record.id}

    def update(self, schedule_id: Any, body: Any) -> dict:
        record = self._get(schedule_id)
        if not isinstance(body, dict) or not body:
            raise ValidationError("body: expected an object with the fields to change", field="body")
        if "job" in body and body["job"] != record.job:
            raise ValidationError("job: a schedule's job cannot change (delete it and create another)", field="job")
        was_enabled = record.enabled
        if isinstance(body.get("params"), dict):  # a secret shown as *** and sent back unchanged keeps its value
            body = {**body, "params": {k: record.params[k] if v == MASK and k in record.params else v
                                       for k, v in body["params"].items()}}
        changed = ScheduleRecord.from_json(record.to_json())
        try:
            self._apply(changed, {**{k: v for k, v in record.to_json().items() if k in FIELDS}, **body})
        except ValidationError:
            # its job or hosts changed since, so that it cannot run: it may still be stopped (and is checked
            # again when enabled)
            if body != {"enabled": False}:
                raise
            changed.enabled = False
        if changed.enabled and not was_enabled:
            changed.last_tick = max(changed.last_tick or 0, self.clock.now())  # disabled ticks are not caught up
            if changed.queued_tick is not None:  # nor one that waited for overlap when it was disabled
                self._note(changed, changed.queued_tick, "overlap", 1)
                changed.queued_tick = None
        if (changed.cron, changed.timezone) != (record.cron, record.timezone):
            changed.queued_tick = None
        self.storage.schedules[record.id] = changed
        self.storage.save_schedule(changed)
        self._due.pop(record.id, None)
        self._waiting.pop(record.id, None)
        self._changed.set()
        log.info("schedule %s changed: %s", record.id, ", ".join(sorted(body)))
        return self.get(record.id)

    def delete(self, schedule_id: Any) -> dict:
        record = self._get(schedule_id)
        self.storage.delete_schedule(record.id)
        self._due.pop(record.id, None)
        self._waiting.pop(record.id, None)
        log.info("schedule %s deleted", record.id)
        return {"schedule_id": record.id, "deleted": True}

    def _get(self, schedule_id: Any) -> ScheduleRecord:
        if not isinstance(schedule_id, str) or not schedule_id:
            raise ValidationError("schedule_id: expected a non-empty string", field="schedule_id")
        record = self.storage.schedules.get(schedule_id)
        if record is None:
            raise NotFound(f"schedule {schedule_id} not found", field="schedule_id")
        return record

    def _apply(self, record: ScheduleRecord, body: dict) -> None:
        """Check ``body`` (every field of a schedule) and set it on ``record``; a run of it must be possible
        now: the job, version, parameters and targets are checked as a run of the job checks them."""
        unknown = sorted(set(body) - set(FIELDS) - {"schedule_id"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: {', '.join(FIELDS)})", field=unknown[0])
        cron = body.get("cron")
        tz = body.get("timezone") or "UTC"
        zone(tz)
        try:
            next(ticks(cron, tz, self.clock.now()))
        except CronSimError as exc:
            raise ValidationError(f"cron: {exc} in {cron!r} (five fields: minute hour day-of-month month "
                                  "day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)",
                                  field="cron") from None
        except StopIteration:
            raise ValidationError(f"cron: {cron!r} never fires in the next 50 years", field="cron") from None
        for name, kind in (("overlap", Overlap), ("catchup", Catchup)):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or value not in {k.value for k in kind}):
                raise ValidationError(f"{name}: expected one of {', '.join(k.value for k in kind)}", field=name)
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationError(f"enabled: expected true or false, got {describe(enabled)}", field="enabled")
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description) > 1000:
            raise ValidationError("description: expected a string of at most 1000 characters", field="description")
        utf8(description, "description")
        version = body.get("version")
        try:
            self.jobs.declarations(body["job"], version)
        except NotFound as exc:  # a body field, so a 400
            raise ValidationError(exc.message, field="job" if exc.field == "name" else exc.field) from None
        params = body.get("params") or {}
        if isinstance(params, dict):  # *** is how a kept secret is shown; as a value it would be the password
            for name in sorted(self._kept_secrets(body["job"], params)):
                if params.get(name) == MASK:
                    raise ValidationError(f"params.{name}: {MASK} stands for a secret's kept value, and this "
                                          "schedule keeps none for it: give the value", field=f"params.{name}")
        self._check(self._spec(body["job"], version, body.get("targets"), body.get("selector"), params,
                               validate_notify(body.get("notify"))))
        record.job, record.version, record.cron, record.timezone = body["job"], version, cron.strip(), tz
        record.targets, record.selector, record.params = body.get("targets"), body.get("selector"), dict(params)
        record.overlap = body.get("overlap") or Overlap.SKIP.value
        record.catchup = body.get("catchup") or Catchup.NONE.value
        record.enabled, record.notify, record.description = enabled, validate_notify(body.get("notify")), description

    def _spec(self, job: str, version: int | None, targets: Any, selector: Any, params: dict,
              notify: list[dict]) -> TaskSpec:
        run: dict = {"version": version, "params": params}
        if targets is not None:
            run["targets"] = targets
        if selector is not None:
            run["selector"] = selector
        try:
            spec, _ = self.jobs.spec_for_run(job, {k: v for k, v in run.items() if v is not None})
        except MScheduleError as exc:  # a version declaring a kept secret plain shows its value: never say it
            message = exc.message
            for name in self._kept_secrets(job, params) if isinstance(params, dict) else ():
                if isinstance(params.get(name), str) and params[name] and params[name] != MASK:
                    message = message.replace(params[name], MASK)
            if message == exc.message:
                raise
            raise type(exc)(message, field=exc.field) from None
        urls = {n["url"] for n in spec.notify}
        spec.notify = spec.notify + [n for n in notify if n["url"] not in urls]  # the job's, and the schedule's
        return spec

    # ---- answers ---------------------------------------------------------------------------
    def list(self, job: Any = None) -> list[dict]:
        if job is not None and not isinstance(job, str):
            raise ValidationError(f"job: expected a job name, got {describe(job)}", field="job")
        return [self._view(r) for r in self.storage.schedules.values() if job is None or r.job == job]

    def get(self, schedule_id: Any) -> dict:
        record = self._get(schedule_id)
        view = self._view(record)
        upcoming = []
        if record.enabled:
            it = ticks(record.cron, record.timezone, max(record.last_tick or 0, self.clock.now()))
            for _ in range(5):
                try:
                    upcoming.append(next(it).isoformat())
                except StopIteration:
                    break
        tasks = self.storage.tasks
        view["next_runs"] = upcoming
        view["runs"] = [{**run, "state": tasks[run["task_id"]].state if run["task_id"] in tasks else None}
                        for run in reversed(record.runs)]
        view["skips"] = list(reversed(record.skips))
        return view

    def _view(self, record: ScheduleRecord) -> dict:
        view = record.to_json()
        del view["id"], view["runs"], view["skips"]
        view["schedule_id"] = record.id
        view["params"] = masked(record.params, self._secrets(record))
        nxt = self._next(record) if record.enabled else None
        view["next_run"] = nxt.timestamp() if nxt else None
        view["next_run_local"] = nxt.isoformat() if nxt else None
        last = record.runs[-1] if record.runs else None
        task = self.storage.tasks.get(last["task_id"]) if last else None
        view["last_task_id"] = last["task_id"] if last else None
        view["last_state"] = task.state if task else None
        return view

    def _secrets(self, record: ScheduleRecord) -> set[str]:
        return self._kept_secrets(record.job, record.params)

    def _kept_secrets(self, job: Any, params: Any) -> set[str]:
        """The parameters whose values a schedule keeps as secrets: those secret in *any* version of its job.

        Not only the version it runs: a value given for a secret stays one when a later version of the job
        declares the parameter plain, or no longer declares it (versions are never removed).
        """
        versions = self.storage.jobs.get(job) if isinstance(job, str) else None
        if not versions:
            return set(params) if isinstance(params, dict) else set()  # unknown: show nothing
        known = self._secret_names.get(job)
        if known is None or known[0] != len(versions):  # versions are only ever added: their count says it all
            names = {d["name"] for version in versions for d in version["params"].get("params", []) if d["secret"]}
            known = self._secret_names[job] = (len(versions), frozenset(names))
        return set(known[1])

    def _next(self, record: ScheduleRecord) -> datetime | None:
        try:
            return next(ticks(record.cron, record.timezone, max(record.last_tick or 0, self.clock.now())))
        except StopIteration:
            return None

    # ---- firing ----------------------------------------------------------------------------
    def run(self) -> None:
        """The firing loop (a greenlet of the master): deal with every due tick, then sleep until the next."""
        while True:
            try:
                wake = self.fire_due()
            except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                log.exception("schedules: firing failed; retrying in %.0fs", MAX_WAKE)
                wake = MAX_WAKE
            self._changed.clear()
            self._changed.wait(timeout=max(0.01, min(MAX_WAKE, wake)))

    def fire_due(self) -> float:
        """Deal with every due tick of every enabled schedule, then commit once; returns the real seconds until
        the next tick.

        Nothing in here yields until that commit, so each tick's ``last_tick`` and task are saved together and
        one commit (one fsync) holds every tick of this wake: a hundred schedules on the same minute fire in
        about the time of one commit, not of a hundred."""
        now = self.clock.now()
        soonest = float("inf")
        for schedule_id in list(self.storage.schedules):
            # fetched anew each time (a change or delete made while the last wake committed replaced it)
            record = self.storage.schedules.get(schedule_id)
            if record is None or not record.enabled:
                continue
            self._fire_queued(record)
            nxt = self._due.get(record.id, now)
            if nxt is not None and nxt <= now:
                nxt = self._due[record.id] = self._deal(record, now)
            if nxt is not None:
                soonest = min(soonest, nxt - now)
        self.storage.flush()
        return self.clock.real_seconds(soonest) if soonest != float("inf") else MAX_WAKE

    def _deal(self, record: ScheduleRecord, now: float) -> float | None:
        """Deal with ``record``'s ticks up to ``now``; returns its next tick's time."""
        counted, newest, previous, nxt = 0, None, None, None
        for moment in ticks(record.cron, record.timezone, record.last_tick if record.last_tick is not None else now):
            t = moment.timestamp()
            if t > now:
                nxt = t
                break
            counted, newest, previous = counted + 1, t, newest  # only the newest may fire; the others are counted
            if counted >= MAX_COUNTED:  # a tick a minute for 70 days: count no further, jump to now
                start = datetime.fromtimestamp(now, ZoneInfo(record.timezone))
                newest, previous = next(CronSim(cron_expression(record.cron), start, reverse=True)).timestamp(), newest
                nxt = next(ticks(record.cron, record.timezone, now), None)
                nxt = nxt.timestamp() if nxt else None
                break
        if newest is None:
            return nxt
        missed = counted - 1
        late = self._waiting.get(record.id, now) - newest  # a tick left waiting is as late as when first seen
        if late > LATE and not (record.catchup == Catchup.LAST and late <= self.grace):
            self._waiting.pop(record.id, None)
            self._skip(record, newest, "missed", missed + 1)
            return nxt
        if record.overlap != Overlap.ALLOW and self._settling(record):
            self._waiting.setdefault(record.id, now)
            return now + self.clock.speed * SETTLE_POLL  # dealt with once the previous run's agents reported
        self._waiting.pop(record.id, None)
        if missed:  # recorded at the newest of the missed ticks, as when all are missed
            self._note(record, previous if previous is not None else newest, "missed", missed)
        self._fire(record, newest, catchup=late > LATE)
        return nxt

    def _previous_running(self, record: ScheduleRecord) -> bool:
        if not record.runs:
            return False
        task = self.storage.tasks.get(record.runs[-1]["task_id"])
        return task is not None and (not task.state.is_finished or task.running > 0)

    def _settling(self, record: ScheduleRecord) -> bool:
        """Whether the previous run had not ended when the master started and still has not, its agents not
        yet given the time to reconnect and report (a result kept in an agent's spool while the master was
        down, a target dispatched again)."""
        return (time.monotonic() < self._settle_until and bool(record.runs)
                and record.runs[-1]["task_id"] in self._unfinished_at_start and self._previous_running(record))

    def _fire(self, record: ScheduleRecord, tick: float, catchup: bool = False) -> None:
        if record.overlap != Overlap.ALLOW and self._previous_running(record):
            if record.overlap == Overlap.QUEUE:
                if record.queued_tick is not None:
                    self._note(record, record.queued_tick, "overlap", 1)
                record.queued_tick = tick
                record.last_tick = tick
                self.storage.save_schedule(record)
                return
            self._skip(record, tick, "overlap", 1)
            return
        self._start(record, tick, catchup)

    def _fire_queued(self, record: ScheduleRecord) -> None:
        if record.queued_tick is not None and not self._previous_running(record):
            tick, record.queued_tick = record.queued_tick, None
            self._start(record, tick, queued=True)

    def _start(self, record: ScheduleRecord, tick: float, catchup: bool = False, queued: bool = False) -> None:
        """Make the tick's task and record the tick: saved together, committed by :meth:`fire_due`."""
        record.last_tick = max(record.last_tick or 0, tick)
        try:
            spec = self._spec(record.job, record.version, record.targets, record.selector, record.params,
                              record.notify)
            kept = self._secrets(record)  # a value kept as a secret is masked and never stored by its task too
            spec.secrets = spec.secrets + [n for n in spec.env if n in kept and n not in spec.secrets]
            task = self._submit(spec)
        except MScheduleError as exc:  # the job or its targets changed since: the tick is dealt with, not run
            self._skip(record, tick, f"error: {exc}", 1)
            log.warning("schedule %s: tick %s not fired: %s", record.id, _iso(tick, record.timezone), exc)
            return
        task.job, task.job_version = record.job, record.version or len(self.storage.jobs[record.job])
        task.schedule_id, task.schedule_tick, task.created_by = record.id, tick, f"schedule:{record.id}"
        self.storage.save_task(task)
        record.fired += 1
        metrics.schedule_ticks("fired")
        record.runs = (record.runs + [{"tick": tick, "task_id": task.id}])[-KEPT:]
        self.storage.save_schedule(record)
        log.info("schedule %s: tick %s fired task %s%s", record.id, _iso(tick, record.timezone), task.id,
                 " (catch-up)" if catchup else " (queued)" if queued else "")

    def _note(self, record: ScheduleRecord, tick: float, reason: str, count: int) -> None:
        if reason == "missed":
            record.missed += count
        else:
            record.skipped += count
        metrics.schedule_ticks("missed" if reason == "missed" else "skipped", count)
        record.skips = (record.skips + [{"tick": tick, "reason": reason, "count": count}])[-KEPT:]

    def _skip(self, record: ScheduleRecord, tick: float, reason: str, count: int) -> None:
        self._note(record, tick, reason, count)
        record.last_tick = max(record.last_tick or 0, tick)
        self.storage.save_schedule(record)
        log.info("schedule %s: tick %s %s%s", record.id, _iso(tick, record.timezone),
                 "skipped: " if reason != "missed" else "", reason if count == 1 else f"{reason} ({count} ticks)")


def _iso(tick: float, tz: str) -> str:
    return datetime.fromtimestamp(tick, ZoneInfo(tz)).isoformat()
