"""Following a task to its end: progress, each host's output as the host ends, the summary, the exit status.

Where the task's news comes from is one small piece, a *source*: an iterable of task snapshots (the
``POST /result`` answer, outputs left out) that ends once the task and every target have ended.
:class:`PollSource` long-polls; a source reading ``GET /task/{id}/events`` (server-sent events) can replace it
by yielding the same snapshots, and nothing else here changes.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from mschedule.cli.client import HTTP_MARGIN, ApiError, Client

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
    """Show a task as it goes: ``out`` gets each ended host's output, each line after its hostname (as
    ``pssh -i`` and ``salt`` do), then the summary table; ``progress`` gets the counts."""

    def __init__(self, client: Client, task_id: str, out: TextIO | None = None, progress: Progress | None = None,
                 source: Callable[[], Iterable[dict]] | None = None) -> None:
        self.client = client
        self.task_id = task_id
        self.out = out or sys.stdout
        self.progress = progress
        self.source = source or (lambda: PollSource(client, task_id))
        self.shown: set[str] = set()
        self.last: dict | None = None

    def run(self) -> dict:
        """Follow until the task is over; the last snapshot. KeyboardInterrupt passes through, and a second
        call goes on where this one stopped (a host's output is shown once)."""
        for task in self.source():
            self.last = task
            self._show_ended(task)
            if self.progress:
                self.progress.update(task)
        if self.progress:
            self.progress.clear()
        return self.last

    def _show_ended(self, task: dict) -> None:
        names = host_names(task)
        ended = sorted((a for a, t in task["targets"].items() if t["state"] in ENDED and a not in self.shown),
                       key=lambda a: (task["targets"][a].get("finished") or 0, names[a]))
        for agent_id in ended:
            output = self._output(agent_id, task["targets"][agent_id])
            self.shown.add(agent_id)
            if not output:
                continue
            if self.progress:
                self.progress.clear()
            name = names[agent_id]
            self.out.write("".join(f"{name}: {line}\n" for line in output.splitlines()))
            self.out.flush()

    def _output(self, agent_id: str, target: dict) -> str:
        """The target's whole output: the snapshot's when nothing of it was left out (an empty output, or a
        snapshot with whole outputs), else fetched once."""
        if isinstance(target.get("output"), str) and target.get("output_omitted", 1) == 0:
            return target["output"]
        try:
            target = self.client.get(f"/task/{self.client.quote(self.task_id)}/target/{self.client.quote(agent_id)}")
        except ApiError as exc:
            return f"[mschedule cli: cannot fetch this output: {exc.message}]"
        return target.get("output") or ""

    def summary(self, task: dict) -> str:
        took = ""
        if task.get("started") is not None and task.get("finished") is not None:
            took = f" in {task['finished'] - task['started']:.1f}s"
        return f"\n{summary_table(task)}\ntask {task['task_id']} {task['state']}{took}: {counts_text(task)}"
