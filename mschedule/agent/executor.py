"""Run one script the way an operator expects from a remote shell.

- the script goes to a private file (mode 0700, in a fresh 0700 directory: no argv size limit, stdin stays
  free), run in a new session, so it and every child share one process group: a script that starts with
  ``#!`` is executed itself, so the kernel runs the interpreter of its ``#!`` line as it would from a file
  (``#!/bin/bash``, ``#!/usr/bin/env python3``); any other script is run by ``/bin/sh``;
- stdout and stderr are one pipe, so the output keeps the order the script wrote it in;
- a timeout and a cancel (:meth:`Executor.cancel`) stop the whole process group the same way: SIGTERM (a
  script's ``trap ... TERM`` runs), then SIGKILL after a short grace;
- only the first ``output_cap`` bytes are kept; the rest is read and dropped, with a marker;
- while it runs, :meth:`Executor.progress` says what is new since a given offset (the last ``LIVE_WINDOW``
  bytes of the stream are kept for it), for the agent's live output.

Cooperative (gevent): heartbeats go on while a script runs. The script is started with the standard
library's ``subprocess`` (``vfork``: about 7x cheaper than ``gevent.subprocess``'s ``fork`` in a large agent
process) and its exit is awaited on a pidfd, so no SIGCHLD handler is involved. Nothing else in the
agent may start children through gevent, whose child watcher would reap ours.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.os
from gevent.socket import wait_read

from mschedule.utils.defaults import DEFAULT_OUTPUT_CAP, TIMEOUT_EXIT_CODE
from mschedule.utils.masking import StreamMask

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL of a timed-out or cancelled script's process group."""
NOT_FOUND_EXIT_CODE = 127
"""The shell's code for a command not found: the script's ``#!`` interpreter does not exist."""
NOT_EXECUTABLE_EXIT_CODE = 126
"""The shell's code for a command found but not executable."""
OUTPUT_GRACE = 1.0
"""Seconds to keep reading after the script exited, while background children still hold its output."""
READ_CHUNK = 65536
LIVE_WINDOW = 65536
"""Bytes of the newest output kept for :meth:`Executor.progress` (beside the first ``output_cap`` bytes)."""


@dataclass
class ExecResult:
    code: int
    output: bytes
    timed_out: bool
    truncated: bool
    started: float
    finished: float
    #: stopped by :meth:`Executor.cancel`
    cancelled: bool = False


class _OutputCollector:
    """Keeps the first ``cap`` bytes of a stream and counts the rest; and its last ``window`` bytes, for
    :meth:`since` (live output reads the newest bytes, which the cap may already drop)."""

    def __init__(self, cap: int, window: int = LIVE_WINDOW, secrets: list[str] | None = None) -> None:
        #: secrets are masked as the stream is read, so everything below (the kept bytes, the window, the
        #: offsets) is of the masked stream
        self._mask = StreamMask(secrets or [])
        self.cap = cap
        self.window = window
        self.chunks: list[bytes] = []
        self.kept = 0
        self.total = 0
        self._recent = bytearray()

    def feed(self, data: bytes) -> None:
        self._keep(self._mask.feed(data))

    def close(self) -> None:
        """The stream ended: release what the mask held back."""
        self._keep(self._mask.close())

    def _keep(self, data: bytes) -> None:
        self.total += len(data)
        self._recent += data
        if len(self._recent) > self.window:
            del self._recent[:len(self._recent) - self.window]
        room = self.cap - self.kept
        if room > 0:
            piece = data[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    @property
    def truncated(self) -> bool:
        return self.total > self.kept

    def since(self, offset: int, limit: int) -> tuple[int, bytes]:
        """``(start, data)``: the bytes written from ``offset`` on, at most the last ``limit`` of them (and only
        those still in the window): ``start`` > ``offset`` says how many were skipped."""
        start = max(offset, self.total - len(self._recent), self.total - limit)
        if start >= self.total:
            return self.total, b""
        return start, bytes(self._recent[start - (self.total - len(self._recent)):])

    def text(self) -> bytes:
        out = b"".join(self.chunks)
        if self.truncated:
            out += (f"\n[mschedule: output truncated: {self.total} bytes written, "
                    f"first {self.kept} kept]\n").encode()
        return out


def _read_all(fd: int, collector: _OutputCollector) -> None:
    while True:
        try:
            data = gevent.os.nb_read(fd, READ_CHUNK)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return
            raise
        if not data:
            return
        collector.feed(data)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether any live (non-zombie) process is left in the script's process group."""
    proc.poll()  # reap the shell itself
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # orphans that died may stay as zombies where PID 1 does not reap; they do not count
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == proc.pid and fields[0] != b"Z":
            return True
    return False


class _ExitWatch:
    """Waits cooperatively for a child's exit: on a pidfd (Linux 5.3+), else by polling."""

    POLL = 0.01

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def wait(self, timeout: float | None) -> int | None:
        """The exit status, or None if the child still runs after ``timeout`` seconds."""
        if self.pidfd is not None:
            try:
                wait_read(self.pidfd, timeout=timeout, timeout_exc=_StillRunning())
            except _StillRunning:
                return None
            return self.proc.wait()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            gevent.sleep(self.POLL)
        return self.proc.returncode

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class _StillRunning(Exception):
    pass


def _shebang_argv(script: bytes) -> list[str]:
    """The ``#!`` line's interpreter and optional argument, split as Linux does: at the first blank, the rest
    (stripped) one argument."""
    line = script[2:].split(b"\n", 1)[0].strip(b" \t")
    cut = next((i for i, c in enumerate(line) if c in b" \t"), len(line))
    interpreter, arg = line[:cut], line[cut:].strip(b" \t")
    return [os.fsdecode(interpreter)] + ([os.fsdecode(arg)] if arg else [])


def _noexec(directory: str) -> bool:
    """Whether ``directory`` is on a file system mounted noexec."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_NOEXEC)
    except (OSError, AttributeError):
        return False


def _exit_code(returncode: int) -> int:
    """The shell's convention: a process killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Executor:
    """Runs scripts one at a time; :meth:`kill` stops the running one (agent shutdown)."""

    def __init__(self, output_cap: int = DEFAULT_OUTPUT_CAP, kill_grace: float = KILL_GRACE) -> None:
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self._process: subprocess.Popen | None = None
        #: set by :meth:`cancel` while a script runs
        self._cancel: gevent.event.Event | None = None
        self._collector: _OutputCollector | None = None

    def progress(self, offset: int, limit: int) -> tuple[int, bytes] | None:
        """What the running script wrote from ``offset`` on (see :meth:`_OutputCollector.since`); None when no
        script runs."""
        collector = self._collector
        return collector.since(offset, limit) if collector is not None else None

    def run(self, script: bytes, timeout: float = 0, env: dict[str, str] | None = None,
            secrets: list[str] | None = None) -> ExecResult:
        """Run ``script``; ``timeout`` > 0 stops it (and its children) after that many seconds; each of
        ``secrets`` is replaced by ``***`` in its output.

        A script the system cannot start (its ``#!`` interpreter does not exist, or may not be executed)
        ends with 127 (126) and a line saying why, as a shell would, rather than an exception.
        """
        directory = tempfile.mkdtemp(prefix="mschedule-")  # 0700, only the agent's user; $TMPDIR or /tmp
        path = os.path.join(directory, "script")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
            with os.fdopen(fd, "wb") as f:
                f.write(script)
            if not script.startswith(b"#!"):
                return self._run_file([SHELL, path], timeout, env, secrets)
            # a directory mounted noexec (a hardened /tmp) refuses to execute the file: there the agent reads
            # the #! line as the kernel would, and runs the interpreter on the file itself
            argv = _shebang_argv(script) + [path] if _noexec(directory) else [path]
            return self._run_file(argv, timeout, env, secrets, interpreter=_shebang_argv(script)[0])
        finally:
            for remove, name in ((os.unlink, path), (os.rmdir, directory)):
                try:
                    remove(name)
                except OSError:
                    pass

    @staticmethod
    def _not_started(interpreter: str, exc: OSError) -> ExecResult:
        if exc.errno == errno.ENOENT:
            code, why = NOT_FOUND_EXIT_CODE, f"its #! interpreter {interpreter!r} does not exist"
        else:
            code, why = NOT_EXECUTABLE_EXIT_CODE, (f"its #! interpreter {interpreter!r} cannot be executed "
                                                   f"({exc.strerror})")
        log.warning("script not started: %s", why)
        now = time.time()
        return ExecResult(code=code, output=f"[mschedule: cannot run the script: {why}]\n".encode(),
                          timed_out=False, truncated=False, started=now, finished=now)

    def _run_file(self, argv: list[str], timeout: float, env: dict[str, str] | None, secrets: list[str] | None,
                  interpreter: str | None = None) -> ExecResult:
        """Run ``argv``; ``interpreter``: the script's ``#!`` one, whose failure to start is a result, not
        an error (any other failure to start, /bin/sh missing, is the caller's)."""
        started = time.time()
        collector = _OutputCollector(self.output_cap, secrets=secrets)
        home = os.path.expanduser("~")
        self._cancel = cancel = gevent.event.Event()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env={**os.environ, **(env or {})},
                cwd=home if os.path.isdir(home) else "/",
            )
        except OSError as exc:
            self._cancel = None
            if interpreter is None:
                raise
            return self._not_started(interpreter, exc)
        self._process, self._collector = proc, collector
        watch = _ExitWatch(proc)
        out_fd = proc.stdout.fileno()
        os.set_blocking(out_fd, False)
        reader = gevent.spawn(_read_all, out_fd, collector)
        try:
            returncode = self._wait(watch, cancel, timeout if timeout and timeout > 0 else None)
            cancelled = returncode is None and cancel.is_set()
            timed_out = returncode is None and not cancelled
            if returncode is None:
                returncode = self._kill_group(proc, watch)
            # children left in the background may still hold the pipe: read on briefly, then stop
            reader.join(timeout=OUTPUT_GRACE)
            if not reader.dead:
                reader.kill()
                collector.feed(b"\n[mschedule: background processes still hold the output; stopped reading]\n")
        finally:
            self._process = self._cancel = self._collector = None
            reader.kill()
            watch.close()
            proc.stdout.close()
            if proc.returncode is None:  # killed from outside (agent shutdown): do not leave a zombie
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        collector.close()
        output = collector.text()
        if timed_out:
            output += f"\n[mschedule: timed out after {timeout:g}s; process group killed]\n".encode()
        if cancelled:
            output += (f"\n[mschedule: cancelled; process group sent SIGTERM, and SIGKILL after "
                       f"{self.kill_grace:g}s if still running]\n").encode()
        code = TIMEOUT_EXIT_CODE if timed_out else _exit_code(returncode)
        return ExecResult(code=code, output=output, timed_out=timed_out, truncated=collector.truncated,
                          started=started, finished=time.time(), cancelled=cancelled)

    @staticmethod
    def _wait(watch: _ExitWatch, cancel: gevent.event.Event, timeout: float | None) -> int | None:
        """The exit status, or None after ``timeout`` or once :meth:`cancel` is called."""
        if cancel.is_set():
            return None
        exited = gevent.spawn(watch.wait, None)
        try:
            gevent.wait([exited, cancel], timeout=timeout, count=1)
            return exited.get() if exited.ready() else None
        finally:
            exited.kill()

    def _kill_group(self, proc: subprocess.Popen, watch: _ExitWatch) -> int:
        """SIGTERM the process group, give it ``kill_grace`` seconds to go, then SIGKILL what is left.

        The one way a script is stopped on purpose (its timeout, a cancel), so a ``trap ... TERM`` always runs.
        """
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline and _group_alive(proc):
            gevent.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        return watch.wait(None)

    def cancel(self) -> None:
        """Stop the running script as a timeout does (SIGTERM, then SIGKILL after ``kill_grace``), if any.

        Returns at once; :meth:`run` does the stopping and reports the result with ``cancelled`` set.
        """
        if self._cancel is not None:
            self._cancel.set()

    def kill(self) -> None:
        """Kill the running script's process group at once, if any (the agent stops)."""
        proc = self._process
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
