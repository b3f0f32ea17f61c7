"""Who may talk to the master: CURVE keys, a ZAP handler, and agent admission like Salt's minion keys.

Every link is CURVE-encrypted; the ZAP handler decides at connection time:

- the admin endpoint (domain ``admin``) admits only the admin credential (the web tier, the ``keys`` CLI);
- the agents endpoint (domain ``agents``) admits any key that is not rejected.

ZAP names each connection's key as its User-Id, which the server stamps on every request
(``mschedule.transport.events.parse``); what a caller may do is decided per call from that key. An agent id
belongs to the key that first claimed it; a new key becomes *pending* when it registers and can do
nothing else until an operator accepts it (or ``--auto-accept``); a rejected key is refused at once, even
on a connection that is already open. At most ``max_pending`` keys wait at a time: beyond that a new key's
registration is refused (keys already known keep working), and the refusals are logged once per
``PENDING_FULL_LOG_EVERY`` seconds with a count, so a flood of new keys floods neither the state nor the log.
"""
from __future__ import annotations

import logging
import time

import gevent
import gevent.local
import zmq
from zmq.utils import z85

from mschedule.master.storage import KeyRecord, KeyState, Storage
from mschedule.utils.defaults import DEFAULT_MAX_PENDING, PENDING_FULL_LOG_EVERY
from mschedule.utils.exceptions import NotFound, Unauthorized
from mschedule.utils.keys import fingerprint

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
AGENTS_DOMAIN = "agents"
ADMIN_DOMAIN = "admin"

_peer = gevent.local.local()


def set_current_key(key: str | None) -> None:
    """Record the CURVE key of the caller whose request the current greenlet serves."""
    _peer.key = key


def current_key() -> str | None:
    return getattr(_peer, "key", None)


class PendingFull(Unauthorized):
    """A new key may not register now: ``max_pending`` keys already wait for a decision.

    Crosses RPC as an Unauthorized; logged by :class:`Admission` at most once per interval (a flood floods
    no log), so not by the RPC server.
    """

    log_level = logging.DEBUG


class Admission:
    """The key registry and the rules above."""

    def __init__(self, storage: Storage, admin_key: bytes, auto_accept: bool = False,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.storage = storage
        self.admin_key = admin_key.decode("ascii")
        self.auto_accept = auto_accept
        self.max_pending = max_pending
        self._rejected_keys = {r.key for r in storage.keys.values() if r.state is KeyState.REJECTED}
        #: agent ids of the pending keys (counted on every new key: kept, not recounted)
        self._pending = {r.agent_id for r in storage.keys.values() if r.state is KeyState.PENDING}
        #: one agent id per key, as one minion id per Salt key: otherwise one key could fill the pending list
        self._agent_of_key = {r.key: r.agent_id for r in storage.keys.values()}
        self._refused = 0  # new keys refused (pending full) since the last log line about it
        self._refused_since = 0.0
        self._refused_host = ""
        self._refused_logged = -PENDING_FULL_LOG_EVERY
        self._refused_flush: gevent.Greenlet | None = None

    # ---- ZAP: at connection time ------------------------------------------------------------
    def admit(self, domain: str, key: str) -> tuple[bool, str]:
        """Whether a CURVE client with ``key`` may connect; the reason when not."""
        if domain == ADMIN_DOMAIN:
            return (True, "") if key == self.admin_key else (False, "not the admin credential")
        if domain != AGENTS_DOMAIN:
            return False, f"unknown domain {domain!r}"
        if key in self._rejected_keys:
            return False, "key rejected"
        return True, ""

    # ---- per call ---------------------------------------------------------------------------
    def check_agent(self, agent_id: str) -> None:
        """Raise Unauthorized unless the caller holds ``agent_id``'s key and that key is accepted."""
        key = current_key()
        record = self.storage.keys.get(agent_id)
        if record is None or key is None or record.key != key:
            raise Unauthorized(f"key {fingerprint(key or '?')} may not act for agent {agent_id}", field="agent_id")
        if record.state is not KeyState.ACCEPTED:
            raise Unauthorized(f"agent {agent_id}: key {record.state.value}, not accepted", field="agent_id")

    def on_register(self, agent_id: str, hostname: str, ip: list[str]) -> KeyState:
        """A register or heartbeat from ``agent_id``: record a new key as pending (or accept it)."""
        key = current_key()
        if key is None:
            raise Unauthorized(f"agent {agent_id}: no authenticated key on this connection")
        record = self.storage.keys.get(agent_id)
        if record is not None and record.key != key:
            log.warning("key %s tried to act as agent %s, which belongs to key %s", fingerprint(key), agent_id,
                        fingerprint(record.key))
            raise Unauthorized(f"agent id {agent_id} belongs to another key", field="payload.id")
        if record is None:
            owned = self._agent_of_key.get(key)
            if owned is not None and owned != agent_id:
                raise Unauthorized(f"agent {agent_id}: this key already belongs to agent {owned} (one key, one "
                                   "agent: each agent instance makes its own)", field="payload.id")
            if not self.auto_accept and len(self._pending) >= self.max_pending:
                self._note_refused(hostname)
                raise PendingFull(f"agent {agent_id}: new key refused: {len(self._pending)} keys already wait for "
                                  f"an operator's decision (the master's --max-pending is {self.max_pending}); "
                                  "try again later")
            record = KeyRecord(agent_id=agent_id, key=key, hostname=hostname, ip=list(ip), first_seen=time.time())
            if self.auto_accept:
                record.state, record.decided = KeyState.ACCEPTED, time.time()
                log.warning("agent %s: key %s accepted automatically (--auto-accept)", agent_id, fingerprint(key))
            else:
                self._pending.add(agent_id)
                log.warning("agent %s: new key %s from %s is pending: accept it with "
                            "'appserver.py keys accept %s'", agent_id, fingerprint(key), hostname, agent_id)
            self._agent_of_key[key] = agent_id
            self.storage.save_key(record)
        elif record.state is KeyState.PENDING and (record.hostname, record.ip) != (hostname, list(ip)):
            record.hostname, record.ip = hostname, list(ip)
            self.storage.save_key(record)
        return record.state

    def on_heartbeat(self, agent_id: str) -> KeyState | None:
        """A heartbeat from ``agent_id``: the state of its key, or None when it has none (it must register,
        which records the key). A heartbeat carries no hostname, so it never creates a record."""
        key = current_key()
        if key is None:
            raise Unauthorized(f"agent {agent_id}: no authenticated key on this connection")
        record = self.storage.keys.get(agent_id)
        if record is None:
            return None
        if record.key != key:
            raise Unauthorized(f"agent id {agent_id} belongs to another key", field="payload.id")
        return record.state

    def _note_refused(self, hostname: str) -> None:
        """Count a refused new key; log at once if the last line is old enough, else within the interval."""
        now = time.monotonic()
        if not self._refused:
            self._refused_since = now
        self._refused += 1
        self._refused_host = hostname
        wait = self._refused_logged + PENDING_FULL_LOG_EVERY - now
        if wait <= 0:
            self._log_refused()
        elif self._refused_flush is None:
            self._refused_flush = gevent.spawn_later(wait, self._log_refused)

    def _log_refused(self) -> None:
        self._refused_flush = None
        if not self._refused:
            return
        now = time.monotonic()
        log.warning("refused %d new agent key(s) in %.0f s (the last from hostname %r): %d keys are pending, "
                    "--max-pending is %d; decide them with 'appserver.py keys list' and 'keys accept|reject' or "
                    "the console", self._refused, now - self._refused_since, self._refused_host,
                    len(self._pending), self.max_pending)
        self._refused, self._refused_logged = 0, now

    # ---- operator ---------------------------------------------------------------------------
    def list(self) -> list[dict]:
        return [r.to_dict() for r in sorted(self.storage.keys.values(), key=lambda r: (r.state, r.first_seen))]

    @property
    def pending_count(self) -> int:
        """How many keys wait for a decision (the metrics read it at every scrape: kept, not recounted)."""
        return len(self._pending)

    def pending_ids(self) -> list[str]:
        """The pending keys' agent ids, oldest first."""
        return sorted(self._pending, key=lambda a: (self.storage.keys[a].first_seen, a))

    def decide(self, agent_id: str, state: KeyState) -> KeyRecord:
        record = self._record(agent_id)
        record.state, record.decided = state, time.time()
        self._pending.discard(agent_id)
        if state is KeyState.REJECTED:
            self._rejected_keys.add(record.key)
        else:
            self._rejected_keys.discard(record.key)
        self.storage.save_key(record)
        log.warning("agent %s: key %s %s", agent_id, fingerprint(record.key), state.value)
        return record

    def delete(self, agent_id: str) -> None:
        record = self._record(agent_id)
        self._rejected_keys.discard(record.key)
        self._pending.discard(agent_id)
        if self._agent_of_key.get(record.key) == agent_id:
            del self._agent_of_key[record.key]
        self.storage.delete_key(agent_id)
        log.warning("agent %s: key %s deleted", agent_id, fingerprint(record.key))

    def _record(self, agent_id: str) -> KeyRecord:
        record = self.storage.keys.get(agent_id)
        if record is None:
            raise NotFound(f"no key for agent {agent_id}", field="agent_id")
        return record


class ZapHandler:
    """Answers ZAP requests of every CURVE socket of the master's zmq context, in a greenlet."""

    def __init__(self, context: zmq.Context, admission: Admission) -> None:
        self.admission = admission
        self.socket = context.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)
        self._greenlet = gevent.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart()
            except zmq.ZMQError:
                if self.socket.closed:
                    return
                raise
            try:
                reply = self._answer(frames)
            except Exception:  # a malformed request is refused, the handler lives on
                log.exception("ZAP request refused")
                reply = [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"internal error", b"", b""]
            self.socket.send_multipart(reply)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        if mechanism != b"CURVE" or not credentials:
            ok, reason = False, "CURVE required"
        else:
            key = z85.encode(credentials[0]).decode("ascii")
            ok, reason = self.admission.admit(domain.decode(), key)
            if not ok:
                log.warning("refused %s connection from %s (key %s): %s", domain.decode(), address.decode(),
                            fingerprint(key), reason)
        if not ok:
            return [version, request_id, b"400", reason.encode(), b"", b""]
        # the User-Id (the key) travels with every message of this connection
        return [version, request_id, b"200", b"OK", key.encode("ascii"), b""]

    def close(self) -> None:
        self._greenlet.kill(block=False)
        self.socket.close()
