"""Following a task to its end: progress, each host's output as it comes, the summary, the exit status.

Where the task's news comes from is one small piece, a *source*: an iterable of task snapshots (the
``POST /result`` answer, outputs left out) that ends once the task and every target have ended.
:class:`EventSource` reads ``GET /task/{id}/events`` (server-sent events): it keeps a snapshot up to date from
the events, yields it after each change, and hands each ``output`` event's bytes to the :class:`Follower`,
which prints each host's complete lines as they come. :class:`PollSource` long-polls ``POST /result``; the
event source falls back to it on a web tier that has no stream for it (503: too many streams; an older tier
without the route) or when the stream keeps breaking.

The stream's output is checked by byte offsets (:class:`LiveText`): a host's output is shown live only while
its events join up from offset 0; a skip (an event carries at most 16 KiB, a task's log at most 4 MiB, a
reconnect may restart from a snapshot of the last bytes) stops that, and the host's whole output is fetched
when it ends and shown from where the live lines stopped. A host that ended with all of its final output in
the stream (``output_streamed`` and ``output_bytes`` of its ``target`` event) costs no fetch.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from mschedule.cli.client import HTTP_MARGIN, ApiError, Client, CliError, _api_error

log = logging.getLogger(__name__)

ENDED = ("SUCCEED", "FAILED", "CANCELLED")
STATES = ("WAITING", "RUNNING", "SUCCEED", "FAILED", "CANCELLED")

#: exit statuses of a followed task (docs/cli.md, "Exit status")
EXIT_OK, EXIT_FAILED, EXIT_ABORTED, EXIT_DETACHED = 0, 1, 2, 130


def task_over(task: dict) -> bool:
    """The task ended and no target still runs (an aborted or cancelled task's running scripts end after it)."""
    return task.get("finished") is not None and task["counts"].get("RUNNING", 0) == 0


def exit_status(task: dict) -> int:
    """0: every target SUCCEED. 2: some target never ran to its end because the task was stopped (the task is
    CANCELLED, or the failure limits aborted it and cancelled targets that had not started). 1: otherwise
    at least one target FAILED (also when the limits were breached by the last targets to end, or when
    ``fail_rate`` let the task SUCCEED with failures)."""
    counts = task["counts"]
    if task["state"] == "CANCELLED" or counts.get("CANCELLED", 0) > 0:
        return EXIT_ABORTED
    if counts.get("SUCCEED", 0) == task["total"]:
        return EXIT_OK
    return EXIT_FAILED


class PollSource:
    """Task snapshots from ``POST /result`` long polls of ``wait`` seconds (outputs left out: ``output_limit``
    0); the web tier answers at once when the task ends, so the end is seen without delay."""

    def __init__(self, client: Client, task_id: str, wait: float = 1.0, pause: float = 0.3) -> None:
        self.client = client
        self.task_id = task_id
        self.wait = wait
        self.pause = pause

    def __iter__(self) -> Iterator[dict]:
        while True:
            task = self.client.post("/result", {"task_id": self.task_id, "wait": self.wait, "output_limit": 0},
                                    timeout=self.wait + HTTP_MARGIN)
            yield task
            if task_over(task):
                return
            if task.get("finished") is not None:
                time.sleep(self.pause)  # ended, scripts still being killed: the poll answers at once


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """Server-sent events, line by line, as the HTML standard says: ``event:``, ``data:`` (several lines are
    joined with newlines), ``id:`` (kept as :attr:`last_id`, also across events that do not set it, for
    ``Last-Event-ID``), lines starting with ``:`` are comments, an empty line ends an event; an event without
    data is not dispatched."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        """One line (its end of line may be left on); the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return SseEvent(event, "\n".join(data), self.last_id) if data else None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None  # "retry" and unknown fields are ignored


class LiveText:
    """One host's output as the stream brought it, checked by byte offset: bytes are taken while each event
    starts where the previous ended (from 0); a skip marks it ``cut`` and nothing more is taken. ``printed``:
    the offset just past the last complete line handed out.

    The web tier decodes each event to text; a character split between two events is whole in the second,
    which then starts up to 3 bytes before its ``offset``: such a start is taken as joined up."""

    SLACK = 3

    def __init__(self) -> None:
        self.end = 0
        self.printed = 0
        self.cut = False
        self.buffer = bytearray()
        self._printed_digest = hashlib.sha256()  # of the bytes handed out: is the final output their sequel?

    def add(self, offset: int, data: bytes) -> None:
        if self.cut:
            return
        if offset > self.end + self.SLACK or (offset > self.end and self.end == 0):
            self.cut = True
            return
        if offset < self.end:  # seen already (a snapshot after a reconnect repeats the last bytes)
            data = data[self.end - offset:]
        self.buffer += data
        self.end += len(data)

    def lines(self) -> list[str]:
        """The complete lines not handed out yet."""
        cut = self.buffer.rfind(b"\n") + 1
        if not cut:
            return []
        done = bytes(self.buffer[:cut])
        del self.buffer[:cut]
        self.printed += len(done)
        self._printed_digest.update(done)
        return done.decode("utf-8", errors="replace").splitlines()

    def rest(self) -> list[str]:
        """Everything not handed out, a last line without its newline too (the host ended)."""
        lines = self.lines()
        if self.buffer:
            lines.append(bytes(self.buffer).decode("utf-8", errors="replace"))
            self.printed += len(self.buffer)
            self._printed_digest.update(self.buffer)
            self.buffer.clear()
        return lines

    def continued_by(self, output: bytes) -> bool:
        """Whether ``output`` starts with exactly the bytes handed out so far."""
        return len(output) >= self.printed and hashlib.sha256(output[:self.printed]).digest() == \
            self._printed_digest.digest()


class StreamUnavailable(Exception):
    """The web tier has no event stream for us now (503, or a tier without the route): poll instead."""


class EventSource:
    """Task snapshots from ``GET /task/{id}/events`` (docs/api.md, "Live output"), in the shape of the
    ``POST /result`` answer without outputs; ``on_output(agent_id, offset, bytes)`` gets each output event.

    A dropped stream (a broken connection, no keep-alive within ``read_timeout``, an ``error`` event) is opened
    again with ``Last-Event-ID``: ``retries`` times in a row (an event other than a snapshot counts as the stream
    working again), ``backoff`` seconds doubling between; then, and at
    once on a 503 or a web tier without the route, the rest comes from ``fallback`` (a :class:`PollSource`). An
    unknown task (404) and the like are raised as the :class:`ApiError` they are."""

    def __init__(self, client: Client, task_id: str, on_output: Callable[[str, int, bytes], None] | None = None,
                 retries: int = 4, backoff: float = 0.5, read_timeout: float = 45.0,
                 fallback: Callable[[], Iterable[dict]] | None = None) -> None:
        self.client = client
        self.task_id = task_id
        self.on_output = on_output
        self.retries = retries
        self.backoff = backoff
        self.read_timeout = read_timeout
        self.fallback = fallback or (lambda: PollSource(client, task_id))
        self.parser = SseParser()
        self.task: dict | None = None
        #: streams opened (the first, then each reconnect)
        self.opened = 0
        self.last_kind = ""

    def __iter__(self) -> Iterator[dict]:
        failures = 0
        while True:
            try:
                for task in self._stream():
                    if self.last_kind != "snapshot":  # news, not a stream that only ever restarts
                        failures = 0
                    yield task
                return  # the end
            except StreamUnavailable as exc:
                log.info("task %s: %s; polling instead", self.task_id, exc)
                break
            except ApiError:
                raise
            except (OSError, http.client.HTTPException, CliError, ValueError) as exc:
                failures += 1
                if failures > self.retries:
                    log.info("task %s: the event stream broke %d times (%s); polling instead",
                             self.task_id, failures, exc)
                    break
                log.debug("task %s: event stream dropped (%s); reconnecting", self.task_id, exc)
            time.sleep(self.backoff * 2 ** (failures - 1))
        yield from self.fallback()

    def _open(self) -> http.client.HTTPResponse:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.client.token:
            headers["Authorization"] = f"Bearer {self.client.token}"
        if self.parser.last_id:
            headers["Last-Event-ID"] = self.parser.last_id
        url = f"{self.client.url}/task/{self.client.quote(self.task_id)}/events"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.read_timeout)
        except urllib.error.HTTPError as err:
            exc = _api_error(err)
            # 503: too many streams on this tier; 409: too many followed tasks on the master; an older tier
            if exc.status in (503, 409) or (exc.status == 404 and exc.message.startswith("no such route")):
                raise StreamUnavailable(f"no event stream ({exc.status}: {exc.message})") from None
            raise exc from None
        except urllib.error.URLError as exc:
            raise OSError(f"cannot reach the web tier at {self.client.url}: {exc.reason}") from None
        self.opened += 1
        return resp

    def _stream(self) -> Iterator[dict]:
        """The snapshots of one connection; returns (no exception) only after ``end``."""
        with self._open() as resp:
            while True:
                line = resp.readline()
                if not line:
                    raise OSError("the event stream closed before the task's end")
                event = self.parser.feed(line.decode("utf-8", errors="replace"))
                self.last_kind = event.event if event is not None else self.last_kind
                if event is not None and (task := self._apply(event.event, json.loads(event.data))) is not None:
                    yield task
                    if event.event == "end":
                        return

    def _apply(self, kind: str, data: dict) -> dict | None:
        """Bring the snapshot up to date with one event; the snapshot when it changed."""
        if kind == "error":
            raise OSError(f"the stream reported: {data.get('error')}")
        if kind == "snapshot":
            self.task = {**data["task"], "targets": {}}
            for agent_id, target in data["targets"].items():
                self.task["targets"][agent_id] = {k: v for k, v in target.items()
                                                  if k not in ("agent_id", "output", "offset")}
                if "output" in target:
                    self._output(agent_id, target["offset"], target["output"])
        elif self.task is None:
            return None  # the stream always starts with a snapshot
        elif kind == "target":
            self.task["targets"].setdefault(data["agent_id"], {}).update(
                {k: v for k, v in data.items() if k != "agent_id"})
        elif kind == "output":
            self._output(data["agent_id"], data["offset"], data["data"])
        elif kind in ("task", "end"):
            self.task.update({k: v for k, v in data.items() if k != "counts"})
        else:
            return None
        counts = dict.fromkeys(STATES, 0)  # by the targets: a target event comes without new task counts
        for target in self.task["targets"].values():
            counts[target["state"]] = counts.get(target["state"], 0) + 1
        self.task["counts"] = counts
        return self.task

    def _output(self, agent_id: str, offset: int, text: str) -> None:
        if self.on_output is not None:
            self.on_output(agent_id, offset, text.encode("utf-8", errors="surrogateescape"))


def _duration(target: dict) -> str:
    if target.get("started") is None or target.get("finished") is None:
        return "-"
    return f"{target['finished'] - target['started']:.1f}s"


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    """Columns padded to their widest cell; the last one is not padded."""
    rows = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summary_table(task: dict) -> str:
    names = host_names(task)
    rows = sorted(([names[a], t["state"], t.get("code"), _duration(t)] for a, t in task["targets"].items()),
                  key=lambda r: r[0])
    return table(["HOST", "STATE", "CODE", "DURATION"], rows)


def host_names(task: dict) -> dict[str, str]:
    """What to call each target: its hostname, with the agent id's start when two targets share one."""
    names = {a: t.get("hostname") or a for a, t in task["targets"].items()}
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {a: (f"{n}/{a[:8]}" if seen[n] > 1 else n) for a, n in names.items()}


def when(stamp: float | None) -> str:
    """A Unix time as local date and time; ``-`` for none."""
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


#: a value longer than this is cut in the human summary (``--json`` has it whole)
SHOWN_VALUE = 60


def assigned(values: dict[str, Any], secrets: Iterable[str] = ()) -> str:
    """``NAME=value`` pairs, each value as a shell word (``'a b'``); a secret's stays ``***`` as the API masks it."""
    secret = set(secrets)
    words = []
    for name, value in sorted(values.items()):
        text = str(value)
        if name in secret:
            words.append(f"{name}={text}")
            continue
        more = f"...({len(text.encode())} bytes)" if len(text) > SHOWN_VALUE else ""
        words.append(f"{name}={shlex.quote(text[:SHOWN_VALUE])}{more}")
    return " ".join(words)


def notification_text(n: dict) -> str:
    """One delivery: its URL, state, attempts and last answer (``notifications`` of a task summary)."""
    attempts = n.get("attempts") or 0
    parts = [f"{attempts} attempt{'' if attempts == 1 else 's'}"]
    if n.get("last_status") is not None:
        parts.append(f"HTTP {n['last_status']}")
    if n.get("last_error"):
        parts.append(str(n["last_error"]))
    if n.get("state") == "pending" and n.get("next_attempt") is not None:
        parts.append(f"next {when(n['next_attempt'])}")
    return f"{n.get('url')}: {n.get('state')} ({', '.join(parts)})"


#: the task summary's fields :func:`details` shows: the event stream's ``end`` has them (from 0.16 on; a ``task``
#: event, and an older master's ``end``, do not)
DETAIL_FIELDS = ("env", "secrets", "params", "schedule_id", "schedule_tick", "notify", "notifications",
                 "created_by", "cancelled_by")


def with_details(client: Client, task: dict) -> dict:
    """``task`` (the event stream's end) with the :data:`DETAIL_FIELDS` of its summary, fetched without outputs
    (``GET /task/{id}?output_limit=0``) when it lacks them (a master before 0.16). A failed fetch leaves them
    out: the task ended, and its summary is still worth showing."""
    if all(name in task for name in DETAIL_FIELDS):
        return task
    try:
        full = client.get(f"/task/{client.quote(task['task_id'])}", query={"output_limit": 0})
    except CliError as exc:
        log.info("task %s: no details for the summary: %s", task["task_id"], exc.message)
        return task
    return {**task, **{name: full[name] for name in DETAIL_FIELDS if name in full}}


def details(task: dict) -> list[str]:
    """What a task ran with beyond its script and hosts, the lines of what it has: who submitted it and who
    cancelled it (the audit trail's users: ``schedule:ID`` for a schedule's tick), its job parameters, the rest
    of its environment (a job run's parameters are in its environment too: shown once), the schedule that
    fired it, and its notifications: each delivery, and each URL without one (its ``on`` states: a running task
    notifies them when it ends in one, an ended one did not)."""
    lines = [f"{label}: {task[key]}" for key, label in (("created_by", "created by"), ("cancelled_by", "cancelled by"))
             if task.get(key)]
    secrets = task.get("secrets") or ()
    params = task.get("params") or {}
    env = {k: v for k, v in (task.get("env") or {}).items() if k not in params}
    if params:
        lines.append(f"params: {assigned(params, secrets)}")
    if env:
        lines.append(f"env: {assigned(env, secrets)}")
    if task.get("schedule_id"):
        tick = task.get("schedule_tick")
        lines.append(f"schedule: {task['schedule_id']}" + (f" (tick {when(tick)})" if tick is not None else ""))
    deliveries = task.get("notifications") or []
    lines.extend(f"notify {notification_text(n)}" for n in deliveries)
    made = {n.get("url") for n in deliveries}
    for entry in task.get("notify") or []:  # the master makes a delivery when the task ends in one of its states
        if entry.get("url") in made:
            continue
        on = ",".join(entry.get("on") or ())
        if task.get("finished") is not None:
            lines.append(f"notify {entry.get('url')}: not sent (only on {on})")
        else:
            lines.append(f"notify {entry.get('url')}" + (f" (on {on})" if on else ""))
    return lines


def counts_text(task: dict) -> str:
    return " ".join(f"{s.lower()} {task['counts'].get(s, 0)}" for s in STATES)


class Progress:
    """The progress display on ``stream`` (stderr): one line rewritten with ``\\r`` on a terminal, a plain line
    per change otherwise."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self.shown = ""
        self.start = time.monotonic()

    def line(self, task: dict) -> str:
        done = sum(task["counts"].get(s, 0) for s in ENDED)
        return f"task {task['task_id']} {task['state']} {done}/{task['total']} done: {counts_text(task)}"

    def update(self, task: dict) -> None:
        text = self.line(task)
        if self.tty:
            elapsed = time.monotonic() - self.start
            self.stream.write(f"\r\x1b[K{text} ({elapsed:.0f}s)")
            self.stream.flush()
            self.shown = text
        elif text != self.shown:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.shown = text

    def clear(self) -> None:
        """Take the progress line off the terminal before other text is written."""
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Follower:
    """Show a task as it goes: ``out`` gets each host's output, each line after its hostname (as ``pssh -i``
    and ``salt`` do): complete lines as they come with an :class:`EventSource`, else each host's whole output
    as it ends; then the summary table. ``progress`` gets the counts."""

    NOTE_REPLACED = "[mschedule cli: the lines above were this host's output so far; its final output follows]"

    def __init__(self, client: Client, task_id: str, out: TextIO | None = None, progress: Progress | None = None,
                 source: Callable[[], Iterable[dict]] | None = None) -> None:
        self.client = client
        self.task_id = task_id
        self.out = out or sys.stdout
        self.progress = progress
        self.source = source or (lambda: EventSource(client, task_id, on_output=self.feed))
        self.shown: set[str] = set()
        self.last: dict | None = None
        self.fetch_error = ""
        #: each host's output from the stream, kept across sources (a second :meth:`run` shows no line twice)
        self.live: dict[str, LiveText] = {}

    def feed(self, agent_id: str, offset: int, data: bytes) -> None:
        """An output event's bytes (``on_output`` of :class:`EventSource`)."""
        if agent_id not in self.shown:
            self.live.setdefault(agent_id, LiveText()).add(offset, data)

    def run(self) -> dict:
        """Follow until the task is over; the last snapshot. KeyboardInterrupt passes through, and a second
        call goes on where this one stopped (a host's output is shown once)."""
        for task in self.source():
            self.last = task
            self._show_live(task)
            self._show_ended(task)
            if self.progress:
                self.progress.update(task)
        if self.progress:
            self.progress.clear()
        return self.last

    def _write(self, name: str, lines: list[str]) -> None:
        if not lines:
            return
        if self.progress:
            self.progress.clear()
        self.out.write("".join(f"{name}: {line}\n" for line in lines))
        self.out.flush()

    def _show_live(self, task: dict) -> None:
        names = host_names(task)
        for agent_id, text in self.live.items():
            if agent_id not in self.shown and agent_id in names:
                self._write(names[agent_id], text.lines())

    def _show_ended(self, task: dict) -> None:
        names = host_names(task)
        ended = sorted((a for a, t in task["targets"].items() if t["state"] in ENDED and a not in self.shown),
                       key=lambda a: (task["targets"][a].get("finished") or 0, names[a]))
        for agent_id in ended:
            lines = self._rest(agent_id, task["targets"][agent_id])
            self.shown.add(agent_id)
            self._write(names[agent_id], lines)

    def _rest(self, agent_id: str, target: dict) -> list[str]:
        """The lines of an ended host not shown yet. From the stream alone when it carried the final output
        whole (joined up from 0 to ``output_bytes``); else the whole output is fetched and shown from where
        the live lines stopped (or, when the final output is not what was streamed, after a note)."""
        text = self.live.pop(agent_id, None)
        size = target.get("output_bytes")
        streamed = bool(target.get("output_streamed"))
        if text is not None and streamed and not text.cut and size is not None and text.end >= size:
            return text.rest()
        if size == 0 or (size is None and target.get("output_omitted", 1) == 0 and not target.get("output")):
            return text.rest() if text is not None else []
        output = self._output(agent_id, target)
        if output is None:
            return [f"[mschedule cli: cannot fetch this output: {self.fetch_error}]"]
        printed = text.printed if text is not None else 0
        if printed == 0:
            return output.splitlines()
        raw = output.encode("utf-8", errors="surrogateescape")
        # the master's word (output_streamed), or, where it did not say (a fallback to polling, an older
        # master, an agent lost mid-script), the output itself: it starts with what was shown
        if streamed or text.continued_by(raw):
            return raw[printed:].decode(errors="replace").splitlines()
        return [self.NOTE_REPLACED, *output.splitlines()]

    def _output(self, agent_id: str, target: dict) -> str | None:
        """The target's whole output: the snapshot's when nothing of it was left out (an empty output, or a
        snapshot with whole outputs), else fetched once; None when the fetch failed (``fetch_error``)."""
        if isinstance(target.get("output"), str) and target.get("output_omitted", 1) == 0:
            return target["output"]
        try:
            target = self.client.get(f"/task/{self.client.quote(self.task_id)}/target/{self.client.quote(agent_id)}")
        except ApiError as exc:
            self.fetch_error = exc.message
            return None
        return target.get("output") or ""

    def summary(self, task: dict) -> str:
        took = ""
        if task.get("started") is not None and task.get("finished") is not None:
            took = f" in {task['finished'] - task['started']:.1f}s"
        lines = ["", summary_table(task), *details(task),
                 f"task {task['task_id']} {task['state']}{took}: {counts_text(task)}"]
        return "\n".join(lines)
