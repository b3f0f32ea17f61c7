"""The design's four messages (register, heartbeat, task, result), and ``progress``, built and parsed in one place.

Every message is ``{"type": <kind>, "payload": {...}}``. Scripts and outputs travel base64.
Parsing validates shape and types and raises :class:`MessageError` naming the field, so a bad
message gets an error answer and never reaches the master's state.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from mschedule.utils.exceptions import MessageError

REGISTER = "register"
HEARTBEAT = "heartbeat"
TASK = "task"
RESULT = "result"
PROGRESS = "progress"
AGENT_MESSAGES = frozenset({REGISTER, HEARTBEAT, RESULT, PROGRESS})

# What an agent may say about itself (register, heartbeat). Anyone holding a key can register, and a new
# key's record is kept (pending) and shown to operators, so the sizes are bounded where messages are parsed.
MAX_AGENT_ID = 64
"""An agent id: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (agents make a 32-character uuid4 hex); it travels in URLs."""
AGENT_ID_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_AGENT_ID}}}")
MAX_HOSTNAME = 253
"""A hostname: at most 253 characters (the longest DNS name), printable."""
MAX_IPS = 64
"""At most 64 addresses, each an IPv4 or IPv6 address in text form."""
MAX_IP_TEXT = 64
MAX_LABELS = 64
"""At most 64 labels; a key of 1 to 63 characters, a value of at most 255 (both strings)."""
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 255
MAX_ID_TEXT = 128
"""``session`` and ``running``: ids, at most 128 characters."""


def b64encode(data: bytes | str) -> str:
    """Base64 text of ``data`` (str is encoded as UTF-8 first)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, field_name: str) -> bytes:
    """Bytes of base64 ``text``; a MessageError naming ``field_name`` when it is not base64."""
    if not isinstance(text, str):
        raise MessageError(f"{field_name}: expected base64 text, got {type(text).__name__}", field=field_name)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MessageError(f"{field_name}: not valid base64 ({exc})", field=field_name) from None


def _require(payload: dict, name: str, kinds: type | tuple[type, ...], optional: bool = False) -> Any:
    if name not in payload or payload[name] is None:
        if optional:
            return None
        raise MessageError(f"payload.{name}: missing", field=f"payload.{name}")
    value = payload[name]
    # bool is an int subclass; a flag where a number is expected is a type error
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise MessageError(f"payload.{name}: expected {_kind_names(kinds)}, got bool", field=f"payload.{name}")
    if not isinstance(value, kinds):
        raise MessageError(f"payload.{name}: expected {_kind_names(kinds)}, got {type(value).__name__}",
                           field=f"payload.{name}")
    return value


def _optional_int(payload: dict, name: str, default: int) -> int:
    value = _require(payload, name, int, optional=True)
    return default if value is None else value


def _string_map(payload: dict, name: str) -> dict[str, str]:
    value = _require(payload, name, dict, optional=True) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MessageError(f"payload.{name}: expected an object of strings", field=f"payload.{name}")
    return value


def _strings(payload: dict, name: str) -> list[str]:
    value = _require(payload, name, list, optional=True) or []
    if not all(isinstance(v, str) for v in value):
        raise MessageError(f"payload.{name}: expected an array of strings", field=f"payload.{name}")
    return value


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(k.__name__ for k in kinds)


def split_message(msg: Any) -> tuple[str, dict]:
    """``(type, payload)`` of a message; MessageError when it is not ``{type, payload}``."""
    if not isinstance(msg, dict):
        raise MessageError(f"message: expected an object, got {type(msg).__name__}")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise MessageError("type: missing or not a string", field="type")
    payload = msg.get("payload")
    if not isinstance(payload, dict):
        raise MessageError("payload: missing or not an object", field="payload")
    return kind, payload


@dataclass
class AgentInfo:
    """What an agent says about itself in ``register`` and ``heartbeat``."""

    id: str
    hostname: str
    ip: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    #: id of the task the agent is running, or None
    running: str | None = None
    #: random id of the agent process; a new one means the agent restarted
    session: str | None = None
    #: last heartbeat of an agent shutting down cleanly: it takes no more work
    stopping: bool = False

    def to_payload(self) -> dict:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "ip": list(self.ip),
            "labels": dict(self.labels),
            "running": self.running,
            "session": self.session,
            "stopping": self.stopping,
        }

    @classmethod
    def from_payload(cls, payload: dict) -> AgentInfo:
        """Parse and bound-check a register or heartbeat payload (limits above); MessageError names the field."""
        agent_id = _require(payload, "id", str)
        if not agent_id:
            raise MessageError("payload.id: empty", field="payload.id")
        if not AGENT_ID_RE.fullmatch(agent_id):
            raise MessageError(f"payload.id: expected 1 to {MAX_AGENT_ID} of A-Z a-z 0-9 . _ - "
                               f"({len(agent_id)} characters given)", field="payload.id")
        hostname = _require(payload, "hostname", str)
        if len(hostname) > MAX_HOSTNAME:
            raise MessageError(f"payload.hostname: {len(hostname)} characters, more than {MAX_HOSTNAME}",
                               field="payload.hostname")
        if not hostname.isprintable():
            raise MessageError("payload.hostname: has a control character", field="payload.hostname")
        return cls(
            id=agent_id,
            hostname=hostname,
            ip=_ip_list(payload),
            labels=_labels(payload),
            running=_short_id(payload, "running"),
            session=_short_id(payload, "session"),
            stopping=bool(_require(payload, "stopping", bool, optional=True)),
        )


def _ip_list(payload: dict) -> list[str]:
    ips = _require(payload, "ip", list, optional=True) or []
    if len(ips) > MAX_IPS:
        raise MessageError(f"payload.ip: {len(ips)} addresses, more than {MAX_IPS}", field="payload.ip")
    for i, ip in enumerate(ips):
        if not isinstance(ip, str):
            raise MessageError("payload.ip: expected a list of strings", field="payload.ip")
        try:
            if len(ip) > MAX_IP_TEXT:
                raise ValueError(ip)
            ipaddress.ip_address(ip)
        except ValueError:
            raise MessageError(f"payload.ip[{i}]: not an IP address ({ip[:MAX_IP_TEXT]!r})",
                               field="payload.ip") from None
    return list(ips)


def _labels(payload: dict) -> dict[str, str]:
    return check_labels(_require(payload, "labels", dict, optional=True) or {})


def check_labels(labels: dict, name: str = "payload.labels") -> dict[str, str]:
    """``labels`` when they fit the limits above (the agent checks its own at start with ``name="--label"``)."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise MessageError(f"{name}: expected an object of strings", field=name)
    if len(labels) > MAX_LABELS:
        raise MessageError(f"{name}: {len(labels)} labels, more than {MAX_LABELS}", field=name)
    for key, value in labels.items():
        if not 1 <= len(key) <= MAX_LABEL_KEY:
            raise MessageError(f"{name}: key {key[:MAX_LABEL_KEY]!r}: {len(key)} characters, expected 1 to "
                               f"{MAX_LABEL_KEY}", field=name)
        if len(value) > MAX_LABEL_VALUE:
            raise MessageError(f"{name}: value of {key!r}: {len(value)} characters, more than {MAX_LABEL_VALUE}",
                               field=name)
    return dict(labels)


def _short_id(payload: dict, name: str) -> str | None:
    value = _require(payload, name, str, optional=True)
    if value is not None and len(value) > MAX_ID_TEXT:
        raise MessageError(f"payload.{name}: {len(value)} characters, more than {MAX_ID_TEXT}",
                           field=f"payload.{name}")
    return value


@dataclass
class Heartbeat:
    """What a heartbeat carries: who, which process, what it runs. Hostname, addresses and labels travel in
    ``register`` only (an agent registers again when they change): at 10,000 agents the heartbeat is most
    of what a master reads."""

    id: str
    session: str | None = None
    running: str | None = None
    stopping: bool = False

    def to_payload(self) -> dict:
        return {"id": self.id, "session": self.session, "running": self.running, "stopping": self.stopping}

    @classmethod
    def from_payload(cls, payload: dict) -> Heartbeat:
        """Parse a heartbeat payload (a full register-style payload of an older agent is fine: the rest is
        ignored); MessageError names the field."""
        agent_id = _require(payload, "id", str)
        if not AGENT_ID_RE.fullmatch(agent_id):
            raise MessageError(f"payload.id: expected 1 to {MAX_AGENT_ID} of A-Z a-z 0-9 . _ - "
                               f"({len(agent_id)} characters given)", field="payload.id")
        return cls(id=agent_id, session=_short_id(payload, "session"), running=_short_id(payload, "running"),
                   stopping=bool(_require(payload, "stopping", bool, optional=True)))


def register_message(info: AgentInfo) -> dict:
    return {"type": REGISTER, "payload": info.to_payload()}


def heartbeat_message(info: AgentInfo) -> dict:
    beat = Heartbeat(id=info.id, session=info.session, running=info.running, stopping=info.stopping)
    return {"type": HEARTBEAT, "payload": beat.to_payload()}


@dataclass
class TaskMessage:
    """A task as handed to an agent (script still base64 on the wire)."""

    id: str
    script: bytes
    timeout: float = 0
    parallel: int = 1
    fail_rate: float = 0
    fail_count: int = -1
    #: the script's environment variables, and the names of those whose values its output must not show
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    def to_message(self) -> dict:
        return {
            "type": TASK,
            "payload": {
                "id": self.id,
                "script": b64encode(self.script),
                "timeout": self.timeout,
                "parallel": self.parallel,
                "fail_rate": self.fail_rate,
                "fail_count": self.fail_count,
                "env": dict(self.env),
                "secrets": list(self.secrets),
            },
        }

    @classmethod
    def from_message(cls, msg: Any) -> TaskMessage:
        kind, payload = split_message(msg)
        if kind != TASK:
            raise MessageError(f"type: expected {TASK!r}, got {kind!r}", field="type")
        timeout = _require(payload, "timeout", (int, float), optional=True) or 0
        if timeout < 0:
            raise MessageError("payload.timeout: must be >= 0", field="payload.timeout")
        return cls(
            id=_require(payload, "id", str),
            script=b64decode(_require(payload, "script", str), "payload.script"),
            timeout=timeout,
            parallel=_optional_int(payload, "parallel", 1),
            fail_rate=_require(payload, "fail_rate", (int, float), optional=True) or 0,
            fail_count=_optional_int(payload, "fail_count", -1),
            env=_string_map(payload, "env"),
            secrets=_strings(payload, "secrets"),
        )


@dataclass
class ResultMessage:
    """What an agent reports when a script has ended."""

    id: str
    agent_id: str
    code: int
    output: bytes = b""
    timed_out: bool = False
    truncated: bool = False
    started: float | None = None
    finished: float | None = None

    def to_message(self) -> dict:
        return {
            "type": RESULT,
            "payload": {
                "id": self.id,
                "agent_id": self.agent_id,
                "code": self.code,
                "output": b64encode(self.output),
                "timed_out": self.timed_out,
                "truncated": self.truncated,
                "started": self.started,
                "finished": self.finished,
            },
        }

    @classmethod
    def from_payload(cls, payload: dict) -> ResultMessage:
        return cls(
            id=_require(payload, "id", str),
            agent_id=_require(payload, "agent_id", str),
            code=_require(payload, "code", int),
            output=b64decode(_require(payload, "output", str, optional=True) or "", "payload.output"),
            timed_out=bool(_require(payload, "timed_out", bool, optional=True)),
            truncated=bool(_require(payload, "truncated", bool, optional=True)),
            started=_require(payload, "started", (int, float), optional=True),
            finished=_require(payload, "finished", (int, float), optional=True),
        )


MAX_PROGRESS_BYTES = 64 * 1024
"""Most output bytes one ``progress`` message carries: an agent whose script wrote more since its last one sends
the last bytes, and the offset tells the master how many it missed."""
_MAX_PROGRESS_B64 = (MAX_PROGRESS_BYTES + 2) // 3 * 4


@dataclass
class ProgressMessage:
    """What a running script has written since the last one: ``data``, the bytes from ``offset`` (counted from
    the script's first byte of output) on. Best effort: the result carries the whole output."""

    id: str
    agent_id: str
    offset: int
    data: bytes

    def to_message(self) -> dict:
        return {"type": PROGRESS, "payload": {"id": self.id, "agent_id": self.agent_id, "offset": self.offset,
                                              "data": b64encode(self.data)}}

    @classmethod
    def from_payload(cls, payload: dict) -> ProgressMessage:
        """Parse a progress payload; MessageError names the field (ids, a negative offset, too much data)."""
        task_id = _short_id(payload, "id")
        if not task_id:
            raise MessageError("payload.id: missing or empty", field="payload.id")
        agent_id = _require(payload, "agent_id", str)
        if not AGENT_ID_RE.fullmatch(agent_id):
            raise MessageError(f"payload.agent_id: expected 1 to {MAX_AGENT_ID} of A-Z a-z 0-9 . _ - "
                               f"({len(agent_id)} characters given)", field="payload.agent_id")
        offset = _require(payload, "offset", int)
        if not 0 <= offset < 2 ** 63:
            raise MessageError("payload.offset: expected 0 or more", field="payload.offset")
        text = _require(payload, "data", str)
        if len(text) > _MAX_PROGRESS_B64:
            raise MessageError(f"payload.data: more than {MAX_PROGRESS_BYTES} bytes", field="payload.data")
        data = b64decode(text, "payload.data")
        if len(data) > MAX_PROGRESS_BYTES:
            raise MessageError(f"payload.data: more than {MAX_PROGRESS_BYTES} bytes", field="payload.data")
        return cls(id=task_id, agent_id=agent_id, offset=offset, data=data)
