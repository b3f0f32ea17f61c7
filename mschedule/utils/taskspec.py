"""A task request, validated once, by the master (the web tier hands it the JSON body as it came)."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mschedule.utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, DEFAULT_MAX_TARGETS, MAX_FAIL_RATE, MAX_TIMEOUT
from mschedule.utils.exceptions import ValidationError
from mschedule.utils.params import validate_env
from mschedule.utils.selectors import validate_selector
from mschedule.utils.states import State
from mschedule.utils.validate import describe, integer, number, utf8

TASK_FIELDS = ("script", "targets", "selector", "timeout", "parallel", "fail_rate", "fail_count", "batch_by",
               "batch_order", "env", "notify")
MAX_NOTIFY = 10
MAX_URL = 2048
NOTIFY_STATES = (State.FAILED, State.SUCCEED, State.CANCELLED)


@dataclass
class TaskSpec:
    """What an operator asks for: a script, its targets and the rollout limits."""

    script: bytes
    targets: list[str]
    timeout: float = 0
    parallel: int = 1
    fail_rate: float = 0
    fail_count: int = -1
    #: agents picked by hostname glob, labels and/or group, resolved by the master at submit time
    selector: dict | None = None
    #: roll out one value of this label at a time (datacenter by datacenter)
    batch_by: str | None = None
    batch_order: list[str] | None = None
    #: the script's environment variables (mschedule/utils/params.py); ``secrets`` names those shown as ***
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    #: of ``env``, the names that are the job's declared parameters (a job run)
    params: list[str] = field(default_factory=list)
    #: webhooks called when the task ends: [{"url", "on": [states]}]
    notify: list[dict] = field(default_factory=list)

    @classmethod
    def from_request(cls, body: Any, max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES,
                     max_targets: int = DEFAULT_MAX_TARGETS, require_targets: bool = True) -> TaskSpec:
        """Validate a task request.

        Args:
            body: the request as the web tier passed it on (decoded JSON, through msgpack). ``script`` is
                text; bytes are taken as they are (the master's own job store keeps scripts as bytes).
            max_script_bytes: largest script accepted.
            max_targets: most targets accepted in one task.
            require_targets: False for a job, whose targets may come with each run.

        Ranges (see docs/api.md): ``timeout`` 0..MAX_TIMEOUT seconds (0: none), ``parallel`` 1..max_targets,
        ``fail_rate`` 0..100 (percent), ``fail_count`` -1..max_targets (-1: no count limit); a value outside,
        non-finite, boolean or of another type is refused, and so is text that is not UTF-8.

        Raises:
            ValidationError: the message names the offending field.
        """
        if not isinstance(body, dict):
            raise ValidationError(f"body: expected a JSON object, got {describe(body)}", field="body")
        unknown = sorted(set(body) - set(TASK_FIELDS))
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: {', '.join(TASK_FIELDS)})", field=unknown[0])
        selector = validate_selector(body.get("selector"))
        batch_by, batch_order = _batching(body, max_targets)
        return cls(
            script=_script(body, max_script_bytes),
            targets=_targets(body, max_targets, required=require_targets and selector is None),
            selector=selector, batch_by=batch_by, batch_order=batch_order,
            timeout=number(body.get("timeout"), "timeout", 0, MAX_TIMEOUT, default=0, hint="seconds, 0: none"),
            parallel=integer(body.get("parallel"), "parallel", 1, max_targets, default=1),
            fail_rate=number(body.get("fail_rate"), "fail_rate", 0, MAX_FAIL_RATE, default=0, hint="percent"),
            fail_count=integer(body.get("fail_count"), "fail_count", -1, max_targets, default=-1,
                               hint="-1: no count limit"),
            env=validate_env(body.get("env")), notify=validate_notify(body.get("notify")),
        )


def validate_notify(raw: Any, name: str = "notify") -> list[dict]:
    """``[{"url": "https://...", "on": ["FAILED", ...]}]``: at most MAX_NOTIFY webhooks, each called when the
    task ends in one of its ``on`` states (default: every end)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_NOTIFY:
        raise ValidationError(f"{name}: expected an array of at most {MAX_NOTIFY} {{url, on}} objects, got "
                              f"{describe(raw) if not isinstance(raw, list) else f'{len(raw)} entries'}", field=name)
    out = []
    for i, entry in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(entry, dict):
            raise ValidationError(f"{where}: expected an object with url and on, got {describe(entry)}", field=where)
        unknown = sorted(set(entry) - {"url", "on"})
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}: unknown field (allowed: url, on)",
                                  field=f"{where}.{unknown[0]}")
        url = entry.get("url")
        if not isinstance(url, str) or len(url) > MAX_URL or any(c.isspace() for c in url) or not _http_url(url):
            raise ValidationError(f"{where}.url: expected an http:// or https:// URL of at most {MAX_URL} "
                                  "characters", field=f"{where}.url")
        utf8(url, f"{where}.url")
        on = entry.get("on", [s.value for s in NOTIFY_STATES])
        allowed = {s.value for s in NOTIFY_STATES}
        if not isinstance(on, list) or not on or not all(isinstance(s, str) and s in allowed for s in on):
            raise ValidationError(f"{where}.on: expected a non-empty array of {', '.join(sorted(allowed))}",
                                  field=f"{where}.on")
        out.append({"url": url, "on": sorted(set(on))})
    return out


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        return False


def _script(body: dict, max_script_bytes: int) -> bytes:
    raw = body.get("script")
    if raw is None:
        raise ValidationError("script: missing", field="script")
    if isinstance(raw, bytes):
        script = raw
    elif isinstance(raw, str):
        script = utf8(raw, "script").encode("utf-8")
    else:
        raise ValidationError(f"script: expected a string, got {describe(raw)}", field="script")
    if b"\r\n" in script and script.count(b"\n") == script.count(b"\r\n"):
        # saved on Windows: every line ends in CRLF, which sh would read as a "\r" at the end of each command
        # (and a #! line as an interpreter named "bash\r"). Only then is it changed: a script with some bare LF
        # was written on Unix, and any CR in it is meant
        script = script.replace(b"\r\n", b"\n")
    if not script.strip():
        raise ValidationError("script: empty", field="script")
    if len(script) > max_script_bytes:
        raise ValidationError(f"script: {len(script)} bytes, larger than the limit of {max_script_bytes}",
                              field="script")
    return script


def _batching(body: dict, max_targets: int) -> tuple[str | None, list[str] | None]:
    batch_by, order = body.get("batch_by"), body.get("batch_order")
    if batch_by is not None:
        if not isinstance(batch_by, str) or not batch_by:
            raise ValidationError("batch_by: expected a label name such as 'dc'", field="batch_by")
        utf8(batch_by, "batch_by")
    if order is not None:
        if batch_by is None:
            raise ValidationError("batch_order: needs batch_by", field="batch_order")
        if not isinstance(order, list) or not all(isinstance(v, str) for v in order) or len(set(order)) != len(order):
            raise ValidationError("batch_order: expected an array of distinct label values", field="batch_order")
        if len(order) > max_targets:
            raise ValidationError(f"batch_order: {len(order)} values, more than the limit of {max_targets}",
                                  field="batch_order")
        for i, value in enumerate(order):
            utf8(value, f"batch_order[{i}]")
    return batch_by, order


def _targets(body: dict, max_targets: int, required: bool = True) -> list[str]:
    raw = body.get("targets")
    if raw is None and not required:
        return []
    if raw is None:
        raise ValidationError("targets: missing (give targets, a selector, or both)", field="targets")
    if not isinstance(raw, list):
        raise ValidationError(f"targets: expected an array of agent ids, got {describe(raw)}", field="targets")
    if not raw and required:
        raise ValidationError("targets: empty", field="targets")
    if len(raw) > max_targets:
        raise ValidationError(f"targets: {len(raw)} agents, more than the limit of {max_targets}", field="targets")
    seen: dict[str, None] = {}
    for i, agent_id in enumerate(raw):
        if not isinstance(agent_id, str) or not agent_id:
            raise ValidationError(f"targets[{i}]: expected a non-empty agent id string", field=f"targets[{i}]")
        seen.setdefault(utf8(agent_id, f"targets[{i}]"), None)
    return list(seen)


def resolve_hostnames(targets: list[str], hostnames: Mapping[str, str]) -> list[str]:
    """``targets`` with each entry that is not a known agent id but the hostname of exactly one agent replaced
    by that agent's id (operators type hostnames, not uuids); duplicates after that are dropped.

    Args:
        targets: the validated ``targets`` of a request, agent ids and/or hostnames.
        hostnames: every known agent id and its hostname.

    Raises:
        ValidationError: ``targets[i]`` is a hostname of several agents (the message lists them), or neither a
            known agent id nor a hostname (the message names it, and close hostnames if there are any).
    """
    by_name: dict[str, list[str]] = {}
    for agent_id, hostname in hostnames.items():
        by_name.setdefault(hostname, []).append(agent_id)
    resolved: dict[str, None] = {}
    for i, entry in enumerate(targets):
        if entry in hostnames:
            resolved.setdefault(entry, None)
            continue
        ids = by_name.get(entry, [])
        if len(ids) == 1:
            resolved.setdefault(ids[0], None)
            continue
        field = f"targets[{i}]"
        if ids:
            shown = ", ".join(f"{a} ({hostnames[a]})" for a in ids[:10]) + (" ..." if len(ids) > 10 else "")
            raise ValidationError(f"{field}: hostname {entry!r} names {len(ids)} agents, give one of their ids: "
                                  f"{shown}", field=field)
        close = difflib.get_close_matches(entry, list(by_name), n=3)
        hint = f" (close hostnames: {', '.join(close)})" if close else ""
        raise ValidationError(f"{field}: unknown agent id or hostname {entry!r}{hint}", field=field)
    return list(resolved)
