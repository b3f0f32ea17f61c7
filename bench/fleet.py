"""A lean simulated fleet, for measuring the master alone (``make bench-fleet``;
``BENCH_ARGS="--agents 5000 --procs 4"``).

Thousands of simulated agents in a few processes, each agent with its own CURVE key pair and its own zmq
connection to the master's agent endpoint, speaking the agent's protocol as the real agent does (zerorpc
events: ``send`` register, heartbeats with the agent's payload, long-poll ``get_task``, ``send`` result) but
answering a task at once (code 0, output ``ok\\n``) without forking a shell, and keeping no spool. A script that
is just ``sleep N`` is answered after N seconds, saying it runs the task in its heartbeats meanwhile (a task
that spans a master restart costs the fleet nothing either).

Why: with a 3 s heartbeat a real agent (one of ``app.py --instances 100``) costs about 167 us of CPU a second
and 450 KB, 2.5 times the CPU the master spends on it (67 us at 5,000 agents), so on this 2-core machine a fleet
of real agents leaves too little of it to read the master's own share. Most of an idle agent's cost is
zerorpc's client stack (a channel, a heartbeat greenlet and a buffered channel per call, gevent_zmq's sends);
a simulated agent has none of it and costs about 36 us of CPU a second and 65 KB (5,000 in 4 processes:
18 % of a core, 300 MB; the master 34 %). One process is a single thread: a heap of timers and an epoll of its
sockets' ``ZMQ_FD`` (no gevent, no zerorpc). What remains is about four context switches per call between
the thread and zmq's I/O thread, which does the CURVE work.

What each agent does, as mschedule/agent/worker.py does it:

- registers after a random part of the connect jitter (its socket connects then, like the real agent's lazy
  client), again after its backoff when that fails, and after a random part of the jitter when it loses the
  master (a heartbeat or a poll unanswered, a new ``master`` boot id in an answer), at once when a heartbeat's
  answer says ``known: false``;
- heartbeats every ``interval`` seconds (the answer's ``interval`` when it has one, 3 s before), each waiting
  ``max(1, min(interval, 5))`` for its answer, with ``messages.heartbeat_message`` (whatever the real agent sends);
- long-polls ``get_task(id, poll, session)`` (the answer's ``poll`` when it has one, 20 s before) with an RPC
  timeout 10 s longer, answers a task with a ``result`` and polls again once the result is acknowledged;
- tells the master it stops (a heartbeat with ``stopping``) on SIGTERM.

API for other benchmarks: :func:`start_fleet` gives a :class:`FleetHandle` (ids, processes to stop or kill -9,
their CPU and RSS, the workers' counters). CLI: starts a master and a web tier (tests/integration/harness.py),
the fleet, waits until every agent is online, measures the master over ``--window`` seconds, then a real
``app.py --instances 100`` process next to the fleet (per-agent CPU and RSS of each), then one task on every
simulated agent with ``parallel`` = all of them, and prints the figures.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import math
import os
import random
import re
import select
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from mschedule.utils import messages  # noqa: E402
from mschedule.utils.defaults import (  # noqa: E402
    BACKOFF_BASE,
    BACKOFF_CAP,
    CONNECT_JITTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_POLL_WAIT,
    RPC_TIMEOUT,
)
from mschedule.utils.keys import public_key_arg  # noqa: E402
from mschedule.utils.messages import AgentInfo, MessageError, ResultMessage, TaskMessage  # noqa: E402

if TYPE_CHECKING:
    from tests.integration.harness import Proc, Stack

log = logging.getLogger("fleet")

PER_PROCESS = 1250
"""Simulated agents per process by default (5,000 in 4 processes, 10,000 in 8)."""
POLL_RPC_MARGIN = 10.0
"""Seconds a long poll's RPC timeout exceeds the poll's own wait (mschedule/agent/worker.py's)."""
STOP_NOTICE_TIMEOUT = 2.0
"""Seconds a stopping fleet process waits for the master to take note of its agents' last heartbeats."""
STATUS_EVERY = 1.0
"""Seconds between two status files of a fleet process (a log line every 5th)."""
RESULT_OUTPUT = b"ok\n"
POLL_MODES = ("told", "fixed", "heartbeat")
"""How long a simulated agent's idle poll waits (bench/polls.py compares them): the ``poll`` the master tells
(stretched with the fleet), always ``--poll-wait``, or always ``--poll-wait`` with no heartbeats sent (a poll that
would double as the heartbeat, given the heartbeat interval as its wait; a master run with a long
--agent-timeout keeps such agents online)."""
SLEEP = re.compile(r"sleep ([0-9]{1,5}(?:\.[0-9]+)?)")
"""A script a simulated agent "runs" for its seconds (a task that spans a master restart); any other ends at once."""

_EVENTS, _RCVMORE, _POLLIN = int(zmq.EVENTS), int(zmq.RCVMORE), int(zmq.POLLIN)
_NOBLOCK, _SNDMORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
_pack = msgpack.Packer(use_bin_type=True).pack


# ---- one fleet process -------------------------------------------------------------------------
class Loop:
    """Timers (a heap) and readable sockets (an epoll of their ``ZMQ_FD``) of one single-threaded process.

    ``ZMQ_FD`` only says that a socket's state may have changed, and a send can consume that news: a reader
    drains its socket until ``ZMQ_EVENTS`` has no POLLIN, and is called again (:meth:`recheck`) after each of
    its sends.
    """

    def __init__(self) -> None:
        self._timers: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self._recheck: dict[int, Callable[[], None]] = {}

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn, args))

    def watch(self, fd: int, reader: Callable[[], None]) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = reader

    def recheck(self, fd: int) -> None:
        self._recheck[fd] = self._readers[fd]

    def run_once(self, max_wait: float) -> None:
        """Fire the timers that are due, then read what the sockets have, waiting at most until the next timer.

        Answers are read as they come. A loop that read them, or fired its timers, once per few milliseconds
        cost the fleet less but sent the master its heartbeats in bursts, which made the master cheaper than
        under a real fleet (by a fifth at 20 ms): what this tool measures would be wrong.
        """
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            fn(*args)
            self._drain_rechecks()
            now = time.monotonic()
        wait = max_wait if not timers else max(0.0, min(max_wait, timers[0][0] - now))
        for fd, _ in self._epoll.poll(wait):
            reader = self._readers.get(fd)
            if reader is not None:
                reader()
        self._drain_rechecks()

    def _drain_rechecks(self) -> None:
        while self._recheck:
            _, reader = self._recheck.popitem()
            reader()

    def close(self) -> None:
        self._epoll.close()


class Backoff:
    """mschedule/agent/backoff.py's rule (importing the agent package would load gevent and zerorpc here)."""

    def __init__(self, cap: float = BACKOFF_CAP) -> None:
        self.cap, self.failures = cap, 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, BACKOFF_BASE * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Fleet:
    """The simulated agents of one process, their shared loop, zmq context and counters."""

    def __init__(self, master: str, master_key: bytes, count: int, id_prefix: str, interval: float,
                 poll_wait: float, jitter: float, labels: dict[str, str], poll_mode: str = "told") -> None:
        self.master = master
        self.poll_mode = poll_mode
        self.master_key = master_key
        self.loop = Loop()
        self.ctx = zmq.Context(io_threads=1)
        self.ctx.max_sockets = count + 64
        self.counters: Counter[str] = Counter()
        self.registered = 0
        self._msg_base = os.urandom(16).hex().encode()
        self._msg_count = itertools.count(1)
        self.stopping = False
        self.agents = [SimAgent(self, f"{id_prefix}{k:05d}", f"{id_prefix}{k:05d}.sim", interval, poll_wait,
                                jitter, labels) for k in range(count)]

    def new_id(self) -> bytes:
        """A message id unique over the fleet (the master keys its open channels by it)."""
        return b"%08x" % next(self._msg_count) + self._msg_base

    def status(self) -> dict:
        """Counters, with ``boot:<id>``: how many agents are registered with that master process."""
        boots = Counter(f"boot:{a.boot}" for a in self.agents if a.registered and a.boot)
        return {"agents": len(self.agents), "registered": self.registered, "pid": os.getpid(),
                **dict(self.counters), **boots}

    def run(self, status_path: str | None) -> None:
        for agent in self.agents:
            agent.start()
        next_status, written = time.monotonic() + STATUS_EVERY, 0
        while not self.stopping:
            self.loop.run_once(0.5)
            if time.monotonic() >= next_status:
                next_status += STATUS_EVERY
                written += 1
                self._write_status(status_path, written % 5 == 0)
        self._stop()
        self._write_status(status_path, True)

    def _write_status(self, path: str | None, say: bool) -> None:
        status = self.status()
        if say:
            log.info("fleet %s", " ".join(f"{k}={v}" for k, v in status.items()))
        if path:
            with open(path + ".tmp", "w") as f:
                json.dump(status, f)
            os.replace(path + ".tmp", path)

    def _stop(self) -> None:
        """Every agent tells the master it stops; wait a little for the answers, then close."""
        for agent in self.agents:
            agent.stop()
        deadline = time.monotonic() + STOP_NOTICE_TIMEOUT
        while time.monotonic() < deadline and any(a.pending for a in self.agents if a.sock is not None):
            self.loop.run_once(0.1)
        for agent in self.agents:
            if agent.sock is not None:
                agent.sock.close(0)
        self.loop.close()
        self.ctx.term()


class SimAgent:
    """One simulated agent: callbacks on its fleet's loop, one DEALER socket with its own CURVE key pair."""

    def __init__(self, fleet: Fleet, agent_id: str, hostname: str, interval: float, poll_wait: float,
                 jitter: float, labels: dict[str, str]) -> None:
        self.fleet = fleet
        self.loop = fleet.loop
        self.info = AgentInfo(id=agent_id, hostname=hostname, ip=["127.0.0.1"], labels=dict(labels),
                              session=uuid.uuid4().hex)
        self.interval = interval
        self.poll_wait = poll_wait
        self.jitter = jitter
        self.sock: zmq.Socket | None = None
        self.fd = -1
        #: message id -> kind ("register", "heartbeat", "poll", "result", "stop") of the calls awaiting an answer
        self.pending: dict[bytes, str] = {}
        self.registered = False
        self.registering = False
        self.beating = False
        self.heartbeat_id: bytes | None = None
        self.poll_id: bytes | None = None
        self.result_id: bytes | None = None
        #: the result not yet acknowledged (a result message)
        self.result: dict | None = None
        self.boot: str | None = None
        self.backoff = Backoff()
        #: a heartbeat's method and arguments, packed once (what it says does not change)
        self._heartbeat_tail: bytes | None = None

    # ---- calls ------------------------------------------------------------------------------------
    def _connect(self) -> None:
        sock = self.fleet.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = self.fleet.master_key
        sock.connect(self.fleet.master)
        self.sock, self.fd = sock, sock.getsockopt(zmq.FD)
        self.loop.watch(self.fd, self.readable)

    def _call(self, method: str, args: list, kind: str, timeout: float, tail: bytes | None = None) -> bytes:
        """Send one zerorpc request event; its answer comes to :meth:`_on_event`, or :meth:`_expire` after
        ``timeout``. ``tail``: the method and arguments already packed (a heartbeat's never change)."""
        mid = self.fleet.new_id()
        self._send(b"\x93" + _pack({"message_id": mid, "v": 3}) + (tail or _pack(method) + _pack(args)))
        self.pending[mid] = kind
        self.loop.later(timeout, self._expire, mid)
        return mid

    def _send(self, frame: bytes) -> None:
        try:
            self.sock.send(b"", _SNDMORE_NOBLOCK)
            self.sock.send(frame, _NOBLOCK)
        except zmq.Again:  # the queue to a master that does not read is full: as good as unanswered
            self.fleet.counters["send_full"] += 1
        self.loop.recheck(self.fd)

    def readable(self) -> None:
        sock = self.sock
        if sock is None or sock.closed:
            return
        while sock.get(_EVENTS) & _POLLIN:
            frame = sock.recv(_NOBLOCK)
            while sock.get(_RCVMORE):  # [b"", event] from the master's ROUTER: the event is the last frame
                frame = sock.recv(_NOBLOCK)
            self._on_event(frame)

    def _on_event(self, frame: bytes) -> None:
        counters = self.fleet.counters
        try:
            header, name, args = msgpack.unpackb(frame, raw=False)
            mid = header.get("response_to")
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException):
            counters["malformed"] += 1
            return
        if isinstance(mid, str):
            mid = mid.encode()
        kind = self.pending.get(mid)
        if kind is None:
            if not self.fleet.stopping:
                counters["late"] += 1  # the answer to a call that timed out or was cut short
            return
        if name == "_zpc_hb":  # the master's channel heartbeat on a long call: answer it, as zerorpc does
            self._send(_pack(({"message_id": self.fleet.new_id(), "v": 3, "response_to": mid}, "_zpc_hb", (0,))))
            return
        if name == "_zpc_more":  # zerorpc's flow control on a spawned call: no answer needed
            return
        del self.pending[mid]
        if name == "OK":
            getattr(self, f"_ok_{kind}")(args[0] if args else None)
        elif name == "ERR":
            error = str(args[0]) if args else "?"
            counters[f"err_{kind}_{error}"] += 1
            if counters[f"err_{kind}_{error}"] <= 3:
                log.warning("agent %s: %s refused: %s", self.info.id, kind, args)
            getattr(self, f"_failed_{kind}")(error)
        else:
            counters["unexpected"] += 1

    def _expire(self, mid: bytes) -> None:
        kind = self.pending.pop(mid, None)
        if kind is None or self.fleet.stopping:
            return
        self.fleet.counters[f"timeout_{kind}"] += 1
        getattr(self, f"_failed_{kind}")(None)

    # ---- register ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._register_in(random.uniform(0, self.jitter))

    def _register_in(self, delay: float) -> None:
        if self.registering or self.fleet.stopping:
            return
        self.registering = True
        self.loop.later(delay, self._register)

    def _register(self) -> None:
        if self.fleet.stopping:
            return
        if self.sock is None:
            self._connect()  # the real agent's client is made at its first call, after the jitter
        self._call("send", [messages.register_message(self.info)], "register", RPC_TIMEOUT)

    def _ok_register(self, reply: Any) -> None:
        self.registering = False
        self.backoff.reset()
        if self._note(reply):
            self._cut_poll()  # the poll went to the old master: it will never be answered
        if not self.registered:
            self.registered = True
            self.fleet.registered += 1
        if not self.beating and self.fleet.poll_mode != "heartbeat":
            self.beating = True
            self.loop.later(self.interval, self._beat)
        self._resume()

    def _failed_register(self, error: str | None) -> None:
        self.registering = False
        self._register_in(self.backoff.next_delay())

    def _note(self, reply: Any) -> bool:
        """Take the pace the master gives (``interval``, ``poll``); True when the answer comes from another
        master process than the last one."""
        if not isinstance(reply, dict):
            return False
        interval, poll = reply.get("interval"), reply.get("poll")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
            self.interval = float(interval)
        told = isinstance(poll, (int, float)) and not isinstance(poll, bool) and poll > 0
        if told and self.fleet.poll_mode == "told":
            self.poll_wait = float(poll)
        boot = reply.get("master")
        restarted = boot is not None and self.boot is not None and boot != self.boot
        if boot is not None:
            self.boot = boot
        if restarted:
            self.fleet.counters["master_restarts_seen"] += 1
        return restarted

    def _lost(self) -> None:
        """The master stopped answering or restarted: register again after a random part of the jitter."""
        if self.registered:
            self.registered = False
            self.fleet.registered -= 1
        self._cut_poll()
        if self.result_id is not None:  # sent again after the register, as the real agent's spool is
            self.pending.pop(self.result_id, None)
            self.result_id = None
        self._register_in(random.uniform(0, self.jitter))

    def _cut_poll(self) -> None:
        if self.poll_id is not None:
            self.pending.pop(self.poll_id, None)
            self.poll_id = None

    # ---- heartbeat --------------------------------------------------------------------------------
    def _beat(self) -> None:
        if self.fleet.stopping:
            return
        if not self.registered or self.heartbeat_id is not None:
            self.loop.later(self.interval, self._beat)  # registering, or the last beat still waits
            return
        if self._heartbeat_tail is None:
            self._heartbeat_tail = _pack("send") + _pack([messages.heartbeat_message(self.info)])
        self.heartbeat_id = self._call("send", [], "heartbeat", max(1.0, min(self.interval, RPC_TIMEOUT)),
                                       self._heartbeat_tail)

    def _next_beat(self) -> None:
        """The next heartbeat ``interval`` after this one's answer, as the real agent's loop waits."""
        self.loop.later(self.interval, self._beat)

    def _ok_heartbeat(self, reply: Any) -> None:
        self.heartbeat_id = None
        self.fleet.counters["heartbeats"] += 1
        if self._note(reply):
            self._lost()
        elif isinstance(reply, dict) and reply.get("known") is False:
            self.fleet.counters["unknown"] += 1
            self._register_in(0)
        self._next_beat()

    def _failed_heartbeat(self, error: str | None) -> None:
        self.heartbeat_id = None
        if error is None:
            self._lost()
        self._next_beat()

    # ---- tasks ------------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Deliver the result not yet acknowledged, else long-poll for the next task (not while one "runs")."""
        if not self.registered or self.fleet.stopping or self.poll_id is not None or self.result_id is not None:
            return
        if self.info.running is not None and self.result is None:
            return
        if self.result is not None:
            self.result_id = self._call("send", [self.result], "result", RPC_TIMEOUT)
            return
        self.poll_id = self._call("get_task", [self.info.id, self.poll_wait, self.info.session], "poll",
                                  self.poll_wait + POLL_RPC_MARGIN)

    def _ok_poll(self, task: Any) -> None:
        self.poll_id = None
        self.fleet.counters["polls"] += 1
        if task is not None:
            try:
                message = TaskMessage.from_message(task)
            except MessageError:
                self.fleet.counters["malformed_task"] += 1
            else:
                self.fleet.counters["tasks"] += 1
                sleep = SLEEP.fullmatch(message.script.decode(errors="replace").strip())
                if sleep:  # "runs" (says so in its heartbeats and registers) until the sleep is over
                    self._set_running(message.id)
                    self.loop.later(float(sleep.group(1)), self._finish, message.id, time.time())
                    return
                self._finish(message.id, time.time())
                return
        self._resume()

    def _finish(self, task_id: str, started: float) -> None:
        self.result = ResultMessage(id=task_id, agent_id=self.info.id, code=0, output=RESULT_OUTPUT,
                                    started=started, finished=time.time()).to_message()
        self._resume()

    def _set_running(self, task_id: str | None) -> None:
        if self.info.running != task_id:
            self.info.running = task_id
            self._heartbeat_tail = None  # what a heartbeat says changed

    def _failed_poll(self, error: str | None) -> None:
        self.poll_id = None
        if error is None or error == "NotFound":  # unanswered, or a master that does not know us
            self._lost()
        else:
            self.loop.later(self.backoff.next_delay(), self._resume)

    def _ok_result(self, reply: Any) -> None:
        self.result_id = None
        self.result = None
        self._set_running(None)
        self.fleet.counters["results"] += 1
        if self._note(reply):
            self._lost()
        else:
            self._resume()

    def _failed_result(self, error: str | None) -> None:
        self.result_id = None
        if error is None:
            self._lost()  # kept: delivered after the next register
        elif error in ("MessageError", "Unauthorized"):
            self.result = None  # refused for good, as the real agent drops it
            self._set_running(None)
            self._resume()
        else:
            self.loop.later(self.backoff.next_delay(), self._resume)

    # ---- stop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Drop every call awaiting an answer and send the last heartbeat (``stopping``)."""
        self.pending.clear()
        if self.sock is None or not self.registered:
            return
        self.info.stopping = True
        self._call("send", [messages.heartbeat_message(self.info)], "stop", STOP_NOTICE_TIMEOUT)

    def _ok_stop(self, reply: Any) -> None:
        pass

    def _failed_stop(self, error: str | None) -> None:
        pass


def worker_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    labels = dict(label.split("=", 1) for label in args.label)
    fleet = Fleet(args.master, public_key_arg(args.master_key), args.agents, args.id_prefix, args.interval,
                  args.poll_wait, args.jitter, labels, args.poll_mode)

    def stop(signum: int, frame: Any) -> None:
        fleet.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("fleet process %d: %d simulated agents for %s", os.getpid(), args.agents, args.master)
    fleet.run(args.status)
    return 0


# ---- the API for benchmarks --------------------------------------------------------------------
@dataclass
class FleetHandle:
    """The processes of one simulated fleet (harness Procs, also closed by ``stack.close()``)."""

    procs: list[Proc]
    #: every agent id, interleaved across the processes (the first N targets spread like hosts would be)
    ids: list[str]
    status_paths: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        """SIGTERM: each agent tells the master it stops (up to 2 s), then the processes exit."""
        for proc in self.procs:
            if proc.alive():
                proc.popen.terminate()
        for proc in self.procs:
            proc.stop()

    def kill9(self) -> None:
        for proc in self.procs:
            proc.kill9()

    def cpu_seconds(self) -> float:
        from bench.run import cpu_seconds
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def rss_mb(self) -> float:
        from bench.run import rss_mb
        return sum(rss_mb(p.pid) for p in self.procs)

    def status(self) -> dict[str, int]:
        """The fleet processes' counters summed (written every 5 s): registered, heartbeats, tasks, results,
        timeouts and errors by kind."""
        total: Counter[str] = Counter()
        for path in self.status_paths:
            try:
                total.update({k: v for k, v in json.loads(path.read_text()).items() if k != "pid"})
            except (OSError, ValueError):
                pass
        return dict(total)

    def wait_online(self, stack: Stack, timeout: float | None = None) -> float:
        """Seconds until the master says every agent of this fleet is online; AssertionError after ``timeout``."""
        from tests.integration.harness import wait_until
        want, t0 = set(self.ids), time.monotonic()
        wait_until(lambda: want <= set(stack.online_agents()) or not self.alive(),
                   timeout or 60 + len(want) / 50, interval=1.0, what=f"{len(want)} simulated agents online")
        assert self.alive(), "a fleet process died: " + " ".join(p.log()[-2000:] for p in self.procs)
        return time.monotonic() - t0


_fleets = itertools.count()


def start_fleet(stack: Stack, n: int, per_process: int = PER_PROCESS, interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                poll_wait: float = DEFAULT_POLL_WAIT, jitter: float | None = None,
                labels: dict[str, str] | None = None, wait: bool = True, poll_mode: str = "told") -> FleetHandle:
    """Start ``n`` simulated agents against ``stack``'s master (it must run with --auto-accept, the harness
    default), ``per_process`` to a process; by default wait until the master has them all online.

    ``jitter`` (the most seconds an agent waits before its first register) defaults to the larger of the
    agent's default (2 s) and ``n`` / 1000 s. ``interval`` and ``poll_wait`` apply until the master's answers
    say otherwise. ``poll_mode``: one of :data:`POLL_MODES`.
    """
    from tests.integration.harness import Proc

    jitter = max(CONNECT_JITTER, n / 1000) if jitter is None else jitter
    fleet_no = next(_fleets)
    run = os.urandom(4).hex()
    procs, groups, paths = [], [], []
    for p, start in enumerate(range(0, n, per_process)):
        count = min(per_process, n - start)
        prefix = f"sim-{run}-{p:03d}-"
        status = stack.tmp / f"fleet{fleet_no}-{p}.status.json"
        args = ["bench/fleet.py", "--worker", "--master", stack.master_endpoint, "--master-key",
                stack.keys.public.decode(), "--agents", str(count), "--id-prefix", prefix,
                "--interval", str(interval), "--poll-wait", str(poll_wait), "--jitter", str(jitter),
                "--status", str(status), "--poll-mode", poll_mode]
        for key, value in (labels or {"fleet": "sim"}).items():
            args += ["--label", f"{key}={value}"]
        proc = Proc(f"fleet{fleet_no * 100 + p}", args, str(stack.tmp / f"fleet{fleet_no}-{p}.log"))
        stack.procs.append(proc)
        procs.append(proc)
        paths.append(status)
        groups.append([f"{prefix}{k:05d}" for k in range(count)])
    ids = [g[k] for k in range(max(len(g) for g in groups)) for g in groups if k < len(g)]
    handle = FleetHandle(procs, ids, paths)
    if wait:
        handle.wait_online(stack)
    return handle


# ---- the CLI: the master alone under a simulated fleet -----------------------------------------
def say(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def usage(pids: dict[str, list[int]], seconds: float) -> dict[str, dict[str, float]]:
    """CPU % of one core and RSS MB of each named group of processes over ``seconds``."""
    from bench.run import cpu_seconds, rss_mb
    before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {name: {"cpu_pct": round(100 * (sum(cpu_seconds(p) for p in group) - before[name]) / elapsed, 2),
                   "rss_mb": round(sum(rss_mb(p) for p in group), 1)} for name, group in pids.items()}


def bench(tmp: Path, agents: int, per_process: int, window: float, real: int, interval: float) -> dict:
    from tests.integration.harness import Stack

    stack = Stack(tmp)
    try:
        master = stack.master(agent_timeout=10, heartbeat_interval=interval)
        web = stack.web()
        say(f"starting {agents} simulated agents, {per_process} per process")
        t0 = time.monotonic()
        fleet = start_fleet(stack, agents, per_process, interval=interval, wait=False)
        fleet.wait_online(stack, 120 + agents / 20)
        online_s = round(time.monotonic() - t0, 1)
        say(f"all {agents} online after {online_s} s; settling 10 s")
        time.sleep(10)
        idle = usage({"master": [master.pid], "web": [web.pid], "fleet": fleet.pids}, window)
        say(f"idle over {window:.0f} s: {idle}; fleet {fleet.status()}")
        out: dict = {"agents": agents, "processes": len(fleet.procs), "per_process": per_process,
                     "interval": interval, "window_s": window, "online_s": online_s, "idle": idle}
        if real:
            say(f"starting a real agent process of {real} instances next to the fleet")
            proc = stack.agents(real, interval=interval, extra=("--connect-jitter", "2", "--max-backoff", "5"))
            time.sleep(10)
            both = usage({"master": [master.pid], "fleet": fleet.pids, "real": [proc.pid]}, window)
            say(f"with {real} real agents: {both}")
            out["with_real"] = both
            out["real_agents"] = real
            proc.stop()
        t1 = time.monotonic()
        task = stack.api.submit("true", fleet.ids, parallel=len(fleet.ids))
        status, done = stack.api.post("/result", {"task_id": task, "wait": 60, "output_limit": 0}, timeout=90)
        while not (done["finished"] and done["counts"]["RUNNING"] == 0) and time.monotonic() - t1 < 600:
            status, done = stack.api.post("/result", {"task_id": task, "wait": 30, "output_limit": 0}, timeout=60)
        out["task"] = {"state": done["state"], "counts": done["counts"], "seconds": round(time.monotonic() - t1, 2)}
        say(f"task on all {len(fleet.ids)}: {out['task']}; fleet {fleet.status()}")
        out["fleet_status"] = fleet.status()
        fleet.stop()
        return out
    finally:
        stack.close()


def per_agent(group: dict[str, float], n: int) -> str:
    """One agent's share of a group's CPU (microseconds of CPU a second: 10 is 0.001 % of a core) and RSS."""
    return f"{group['cpu_pct'] / n * 1e4:.0f} us of CPU a second, {group['rss_mb'] / n * 1024:.0f} KB"


def report(r: dict) -> str:
    n, idle = r["agents"], r["idle"]
    lines = [f"## Simulated fleet: {n} agents in {r['processes']} processes, heartbeat {r['interval']:g} s",
             "", f"All online {r['online_s']} s after start. Idle, over {r['window_s']:.0f} s:", "",
             "| process | CPU % of one core | RSS MB |", "|---|---|---|",
             f"| master | {idle['master']['cpu_pct']:.1f} | {idle['master']['rss_mb']:.0f} |",
             f"| web tier | {idle['web']['cpu_pct']:.1f} | {idle['web']['rss_mb']:.0f} |",
             f"| fleet ({r['processes']} processes) | {idle['fleet']['cpu_pct']:.1f} | "
             f"{idle['fleet']['rss_mb']:.0f} |", "",
             f"One simulated agent: {per_agent(idle['fleet'], n)}; the master per agent: "
             f"{per_agent(idle['master'], n)}."]
    if "with_real" in r:
        k, both = r["real_agents"], r["with_real"]
        lines += [f"One real agent (`app.py --instances {k}`, next to the fleet): {per_agent(both['real'], k)}; "
                  f"a simulated one in the same window: {per_agent(both['fleet'], n)}; "
                  f"ratio real/simulated CPU "
                  f"{(both['real']['cpu_pct'] / k) / max(both['fleet']['cpu_pct'] / n, 1e-9):.1f}x."]
    t = r["task"]
    lines += ["", f"`true` on all {n} with `parallel: {n}`: {t['state']} in {t['seconds']} s, {t['counts']}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=0, help="fleet processes (default: agents / 1250, rounded up)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds over which CPU is measured")
    parser.add_argument("--real", type=int, default=100,
                        help="instances of a real agent process measured next to the fleet (0 skips)")
    parser.add_argument("--interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--keep", help="keep state and logs in this directory")
    # one fleet process (started by start_fleet)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    parser.add_argument("--master-key", help=argparse.SUPPRESS)
    parser.add_argument("--id-prefix", default="sim-", help=argparse.SUPPRESS)
    parser.add_argument("--poll-wait", type=float, default=DEFAULT_POLL_WAIT, help=argparse.SUPPRESS)
    parser.add_argument("--jitter", type=float, default=CONNECT_JITTER, help=argparse.SUPPRESS)
    parser.add_argument("--label", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--status", help=argparse.SUPPRESS)
    parser.add_argument("--poll-mode", choices=POLL_MODES, default="told", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    procs = args.procs or math.ceil(args.agents / PER_PROCESS)
    per_process = math.ceil(args.agents / procs)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        result = bench(Path(args.keep), args.agents, per_process, args.window, args.real, args.interval)
    else:
        with tempfile.TemporaryDirectory(prefix="mschedule-fleet-") as tmp:
            result = bench(Path(tmp), args.agents, per_process, args.window, args.real, args.interval)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    t = result["task"]
    return 0 if t["state"] == "SUCCEED" and t["counts"].get("SUCCEED") == args.agents else 1


if __name__ == "__main__":
    sys.exit(main())
