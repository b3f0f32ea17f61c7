"""One agent: registers, heartbeats, pulls tasks when idle, runs them, reports results."""
from __future__ import annotations

import logging
import random
import time
import uuid

import gevent
import gevent.event
import zerorpc

from mschedule.agent.backoff import Backoff
from mschedule.agent.executor import ExecResult, Executor
from mschedule.agent.spool import Spool
from mschedule.transport import TRANSPORT_ERRORS, MasterLink
from mschedule.utils import messages
from mschedule.utils.defaults import (
    BACKOFF_CAP,
    CONNECT_JITTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_POLL_WAIT,
    MAX_POLL_WAIT,
    RPC_TIMEOUT,
)
from mschedule.utils.exceptions import KeyPending, MessageError, NotFound, Unauthorized
from mschedule.utils.greenlets import capture, unwrap
from mschedule.utils.messages import MAX_PROGRESS_BYTES, AgentInfo, ProgressMessage, ResultMessage, TaskMessage

log = logging.getLogger(__name__)

POLL_RPC_MARGIN = 10.0
"""Seconds a long poll's RPC timeout exceeds the poll's own wait."""
CANCEL_WATCH_DELAY = 0.5
"""Seconds a script runs before its agent starts watching for a cancel."""
STOP_NOTICE_TIMEOUT = 2.0
"""Seconds a stopping agent waits for the master to take note."""
PROGRESS_INTERVAL = 1.0
"""Seconds between two progress messages of a running script (only when it wrote something new); a script
that ends sooner sends none."""


class AgentWorker:
    """One agent identity and its loops (heartbeat, work), as gevent greenlets."""

    def __init__(self, agent_id: str, hostname: str, link: MasterLink, ips: list[str] | None = None,
                 labels: dict[str, str] | None = None, interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 poll_wait: float = DEFAULT_POLL_WAIT, executor: Executor | None = None,
                 spool: Spool | None = None, max_backoff: float = BACKOFF_CAP,
                 connect_jitter: float = CONNECT_JITTER) -> None:
        self.info = AgentInfo(id=agent_id, hostname=hostname, ip=list(ips or []), labels=dict(labels or {}),
                              session=uuid.uuid4().hex)
        self.link = link
        self.interval = interval
        self.poll_wait = poll_wait
        self.max_backoff = max_backoff
        self.connect_jitter = connect_jitter
        #: wait a random part of connect_jitter before the next register (the first, and after losing the master)
        self._jitter_due = True
        self.executor = executor or Executor()
        self._registered = False
        self._pending_logged = False
        #: results not yet acknowledged; None keeps them in memory only (unit tests)
        self.spool = spool
        self._unsent: list[ResultMessage] = []
        self._stopped = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._step_greenlet: gevent.Greenlet | None = None
        #: the master process that answered last (its ``boot`` id)
        self._master_boot: str | None = None

    @property
    def _heartbeat_timeout(self) -> float:
        """A heartbeat waits about one interval for its answer: a master that is gone must not hold the
        heartbeat loop longer than that, or the agent looks silent to a master that is back."""
        return max(1.0, min(self.interval, RPC_TIMEOUT))

    @property
    def id(self) -> str:
        return self.info.id

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._work_loop), gevent.spawn(self._heartbeat_loop)]

    def stop(self) -> None:
        """Stop the loops, kill a running script's process group, and tell the master we are gone."""
        self._stopped.set()
        self.executor.kill()
        self._cut_poll()
        gevent.killall(self._greenlets, block=True, timeout=5)
        self.info.stopping = True
        try:
            self.link.call("send", messages.heartbeat_message(self.info), timeout=STOP_NOTICE_TIMEOUT)
        except (*TRANSPORT_ERRORS, zerorpc.RemoteError) as exc:
            log.info("agent %s: could not tell the master we stop (%s)", self.id, type(exc).__name__)

    def join(self) -> None:
        gevent.joinall(self._greenlets)

    # ---- messages -----------------------------------------------------------------------
    def _send(self, msg: dict, timeout: float | None = None) -> dict:
        """Send a message; a refusal raises the master's typed error (KeyPending, MessageError, Unauthorized)."""
        reply = self.link.call("send", msg, timeout=timeout)
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise MessageError(f"master refused {msg['type']}: unexpected answer {reply!r}")
        self._note_master(reply.get("master"))
        self._follow(reply)
        return reply

    def _follow(self, reply: dict) -> None:
        """Use the heartbeat interval and long-poll wait the master gives in its answers (mschedule/master/liveness.py):
        it stretches them as the fleet grows. Values out of any sane range are ignored."""
        interval, poll = reply.get("interval"), reply.get("poll")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and 0.05 <= interval <= 3600:
            self.interval = float(interval)
        if isinstance(poll, (int, float)) and not isinstance(poll, bool) and 0.1 <= poll <= MAX_POLL_WAIT:
            self.poll_wait = float(poll)

    def _note_master(self, boot: str | None) -> None:
        """A new master process (restarted in less than a heartbeat): a poll sent to the old one will
        never be answered, so end it and register again."""
        if boot is None or boot == self._master_boot:
            return
        if self._master_boot is not None:
            log.info("agent %s: the master restarted; registering again", self.id)
            self._lost_master()
            self._cut_poll()
        self._master_boot = boot

    def _lost_master(self) -> None:
        """Register again before the next poll, after a random part of connect_jitter."""
        self._registered = False
        self._jitter_due = True

    def _register(self) -> None:
        if self._jitter_due:
            self._jitter_due = False
            self._stopped.wait(random.uniform(0, self.connect_jitter))
        self._send(messages.register_message(self.info))
        if not self._registered:
            log.info("agent %s: registered with %s", self.id, self.link.endpoint)
        self._registered = True

    # ---- loops --------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        failing = False
        while not self._stopped.wait(self.interval):
            if not self._registered and not self.info.running:
                continue  # the work loop registers (and learns if the key is pending)
            try:
                if not self._registered:
                    # the work loop is busy with a script and will not register before it ends, which can be
                    # long after the master gave up on us: register from here (the message says what runs)
                    self._register()
                    continue
                reply = self._send(messages.heartbeat_message(self.info), timeout=self._heartbeat_timeout)
                if not reply.get("known", True):
                    log.info("agent %s: master does not know us (restarted?): registering", self.id)
                    self._register()
                if failing:
                    log.info("agent %s: heartbeat reaches the master again", self.id)
                failing = False
            except TRANSPORT_ERRORS as exc:
                if not failing:
                    log.warning("agent %s: heartbeat failed: %s", self.id, exc)
                failing = True
                self._lost_master()
                self._cut_poll()
            except KeyPending:  # the key was deleted and asks again: the work loop waits for the decision
                self._registered = False
            except (zerorpc.RemoteError, MessageError) as exc:
                log.error("agent %s: heartbeat refused: %s", self.id, exc)
            except Exception:  # a bug here must not silence the agent for good
                log.exception("agent %s: heartbeat failed unexpectedly", self.id)

    def _cut_poll(self) -> None:
        """The master stopped answering, or restarted: end the work loop's exchange with it (a long poll,
        or a result whose answer will never come) now rather than at its own timeout, so the work loop
        registers again as soon as the master is back. Everything cut short is safe to redo: results
        stay in the spool until acknowledged, polls hand the same task out again."""
        step = self._step_greenlet
        if step is not None and step is not gevent.getcurrent():
            step.kill(block=False)

    def _work_loop(self) -> None:
        backoff = Backoff(cap=self.max_backoff)
        while not self._stopped.is_set():
            try:
                task_msg = self._cuttable_step()
            except Exception as exc:  # sorted out in _retry_delay: even a bug must not stop the agent for good
                self._stopped.wait(self._retry_delay(exc, backoff))
                continue
            backoff.reset()
            if task_msg is not None:
                self._run(task_msg)

    def _retry_delay(self, exc: Exception, backoff: Backoff) -> float:
        """Log a failed step and say how long to wait before the next one."""
        if isinstance(exc, NotFound):
            self._lost_master()  # the master restarted and does not know us: register (after the jitter)
            return 0.0
        delay = backoff.next_delay()
        if isinstance(exc, KeyPending):
            if not self._pending_logged:
                log.warning("agent %s: %s; an operator accepts it with 'appserver.py keys accept %s'",
                            self.id, exc, self.id)
                self._pending_logged = True
            return delay
        if isinstance(exc, TRANSPORT_ERRORS):
            self._lost_master()
            log.warning("agent %s: master %s unreachable (%s); retry in %.1fs",
                        self.id, self.link.endpoint, type(exc).__name__, delay)
        elif isinstance(exc, (zerorpc.RemoteError, MessageError)):
            log.error("agent %s: %s; retry in %.1fs", self.id, exc, delay)
        else:
            log.error("agent %s: unexpected error; retry in %.1fs", self.id, delay, exc_info=exc)
        return delay

    def _cuttable_step(self) -> dict | None:
        """:meth:`_step` in a greenlet of its own, so that :meth:`_cut_poll` can end it."""
        step = self._step_greenlet = gevent.spawn(capture, self._step)
        try:
            outcome = step.get()
        finally:
            self._step_greenlet = None
        if isinstance(outcome, gevent.GreenletExit):
            raise zerorpc.LostRemote("cut short: the master stopped answering or restarted")
        return unwrap(outcome)

    def _step(self) -> dict | None:
        """Register if needed, deliver pending results, then long-poll for the next task."""
        if not self._registered:
            self._register()
        self._deliver_results()
        return self.link.call("get_task", self.id, self.poll_wait, self.info.session,
                              timeout=self.poll_wait + POLL_RPC_MARGIN)

    def _watch_cancel(self, task_id: str) -> None:
        """While a script runs, keep a long poll open that the master answers at once if the task is
        cancelled; then stop the script's process group as a timeout does, SIGTERM then SIGKILL (its result
        reports what it had written, a ``trap ... TERM``'s output included).

        Scripts that end within CANCEL_WATCH_DELAY never open one: most tasks are short, and a poll per
        script cost a third of the throughput; a cancel still reaches a long script within about a second.
        """
        if self._stopped.wait(CANCEL_WATCH_DELAY):
            return
        while not self._stopped.is_set():
            try:
                if self.link.call("watch_cancel", self.id, task_id, self.poll_wait,
                                  timeout=self.poll_wait + POLL_RPC_MARGIN):
                    log.warning("agent %s: task %s cancelled: stopping its script", self.id, task_id)
                    self.executor.cancel()
                    return
            except (*TRANSPORT_ERRORS, zerorpc.RemoteError) as exc:
                log.debug("agent %s: cancel watch for %s: %s", self.id, task_id, exc)
                self._stopped.wait(1.0)

    def _report_progress(self, task_id: str) -> None:
        """While a script runs, send what it wrote since the last message, every PROGRESS_INTERVAL when there is
        something new (the last MAX_PROGRESS_BYTES of it). Best effort: a message that fails or is refused is
        dropped and never spooled, since the result carries the whole output."""
        sent = 0
        while not self._stopped.wait(PROGRESS_INTERVAL):
            new = self.executor.progress(sent, MAX_PROGRESS_BYTES)
            if new is None:
                return
            offset, data = new
            if not data:
                continue
            sent = offset + len(data)
            msg = ProgressMessage(id=task_id, agent_id=self.id, offset=offset, data=data).to_message()
            try:
                self.link.call("send", msg, timeout=self._heartbeat_timeout)
            except Exception as exc:  # noqa: BLE001 - any failure drops this message, never the script
                log.debug("agent %s: progress of %s dropped: %s", self.id, task_id, exc)

    def _keep(self, result: ResultMessage) -> None:
        if self.spool is not None:
            try:
                self.spool.put(result)
                return
            except OSError as exc:
                log.error("agent %s: task %s result kept in memory only, spool failed: %s", self.id, result.id, exc)
        self._unsent.append(result)

    def _deliver_results(self) -> None:
        """Send every result not yet acknowledged (after each (re)connect and each script)."""
        if self.spool is not None:
            for result in self.spool.pending():
                self._deliver(result)
                self.spool.remove(result.id)
        while self._unsent:
            self._deliver(self._unsent[0])
            self._unsent.pop(0)

    def _deliver(self, result: ResultMessage) -> None:
        """Send one result; a transport error propagates (the result stays kept for the next try)."""
        try:
            reply = self._send(result.to_message())
            log.info("agent %s: task %s result delivered (code=%s, applied=%s)",
                     self.id, result.id, result.code, reply.get("applied"))
        except (MessageError, Unauthorized) as exc:  # refused for good: resending cannot help
            log.error("agent %s: task %s result dropped: %s", self.id, result.id, exc)

    def _mark(self, task_id: str | None) -> None:
        """Record (or clear) the running task on disk; a failure only costs the restart report."""
        if self.spool is None:
            return
        try:
            self.spool.mark_running(task_id) if task_id else self.spool.clear_running()
        except OSError as exc:
            log.error("agent %s: cannot update the running marker: %s", self.id, exc)

    def _run(self, task_msg: dict) -> None:
        try:
            task = TaskMessage.from_message(task_msg)
        except MessageError as exc:
            task_id = task_msg.get("payload", {}).get("id") if isinstance(task_msg, dict) else None
            log.error("agent %s: malformed task %s: %s", self.id, task_id, exc)
            if isinstance(task_id, str):
                self._keep(ResultMessage(id=task_id, agent_id=self.id, code=-1,
                                         output=f"[mschedule: agent refused a malformed task: {exc}]\n".encode()))
            return
        log.info("agent %s: task %s running (timeout=%s, script=%dB)", self.id, task.id, task.timeout, len(task.script))
        self.info.running = task.id
        self._mark(task.id)
        watcher = gevent.spawn(self._watch_cancel, task.id)
        reporter = gevent.spawn(self._report_progress, task.id)
        try:
            env = {**task.env, "MSCHEDULE_TASK_ID": task.id, "MSCHEDULE_AGENT_ID": self.id}
            outcome: ExecResult = self.executor.run(task.script, task.timeout, env=env,
                                                    secrets=[task.env[n] for n in task.secrets if n in task.env])
        except OSError as exc:
            log.error("agent %s: task %s could not start: %s", self.id, task.id, exc)
            now = time.time()
            outcome = ExecResult(code=127, output=f"[mschedule: could not start the script: {exc}]\n".encode(),
                                 timed_out=False, truncated=False, started=now, finished=now)
        finally:
            watcher.kill(block=False)
            reporter.kill(block=False)
            self.info.running = None
        log.info("agent %s: task %s exited code=%s%s", self.id, task.id, outcome.code,
                 " (timed out)" if outcome.timed_out else "")
        self._keep(ResultMessage(id=task.id, agent_id=self.id, code=outcome.code, output=outcome.output,
                                 timed_out=outcome.timed_out, truncated=outcome.truncated,
                                 started=outcome.started, finished=outcome.finished))
        self._mark(None)
