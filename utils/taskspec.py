"""A task request, validated once, by the master (the web tier hands it the JSON body as it came)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, DEFAULT_MAX_TARGETS
from utils.exceptions import ValidationError
from utils.selectors import validate_selector

TASK_FIELDS = ("script", "targets", "selector", "timeout", "parallel", "fail_rate", "fail_count", "batch_by",
               "batch_order")


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

        Raises:
            ValidationError: the message names the offending field.
        """
        if not isinstance(body, dict):
            raise ValidationError(f"body: expected a JSON object, got {_json_type(body)}")
        unknown = sorted(set(body) - set(TASK_FIELDS))
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: {', '.join(TASK_FIELDS)})")
        selector = validate_selector(body.get("selector"))
        batch_by, batch_order = _batching(body)
        return cls(
            script=_script(body, max_script_bytes),
            targets=_targets(body, max_targets, required=require_targets and selector is None),
            selector=selector, batch_by=batch_by, batch_order=batch_order,
            timeout=_number(body, "timeout", 0, minimum=0),
            parallel=_integer(body, "parallel", 1, minimum=1),
            fail_rate=_number(body, "fail_rate", 0, minimum=0, maximum=100),
            fail_count=_integer(body, "fail_count", -1, minimum=-1),
        )


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _script(body: dict, max_script_bytes: int) -> bytes:
    raw = body.get("script")
    if raw is None:
        raise ValidationError("script: missing", field="script")
    if isinstance(raw, bytes):
        script = raw
    elif isinstance(raw, str):
        try:
            script = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("script: not valid UTF-8 text (a lone surrogate such as \\ud800)",
                                  field="script") from None
    else:
        raise ValidationError(f"script: expected a string, got {_json_type(raw)}", field="script")
    if not script.strip():
        raise ValidationError("script: empty")
    if len(script) > max_script_bytes:
        raise ValidationError(f"script: {len(script)} bytes, larger than the limit of {max_script_bytes}")
    return script


def _batching(body: dict) -> tuple[str | None, list[str] | None]:
    batch_by, order = body.get("batch_by"), body.get("batch_order")
    if batch_by is not None and (not isinstance(batch_by, str) or not batch_by):
        raise ValidationError("batch_by: expected a label name such as 'dc'")
    if order is not None:
        if batch_by is None:
            raise ValidationError("batch_order: needs batch_by")
        if not isinstance(order, list) or not all(isinstance(v, str) for v in order) or len(set(order)) != len(order):
            raise ValidationError("batch_order: expected an array of distinct label values")
    return batch_by, order


def _targets(body: dict, max_targets: int, required: bool = True) -> list[str]:
    raw = body.get("targets")
    if raw is None and not required:
        return []
    if raw is None:
        raise ValidationError("targets: missing (give targets, a selector, or both)")
    if not isinstance(raw, list):
        raise ValidationError(f"targets: expected an array of agent ids, got {_json_type(raw)}")
    if not raw and required:
        raise ValidationError("targets: empty")
    if len(raw) > max_targets:
        raise ValidationError(f"targets: {len(raw)} agents, more than the limit of {max_targets}")
    seen: dict[str, None] = {}
    for i, agent_id in enumerate(raw):
        if not isinstance(agent_id, str) or not agent_id:
            raise ValidationError(f"targets[{i}]: expected a non-empty agent id string")
        seen.setdefault(agent_id, None)
    return list(seen)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _number(body: dict, name: str, default: float, minimum: float | None = None,
            maximum: float | None = None) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or value in (float("inf"), float("-inf")):
        raise ValidationError(f"{name}: expected a number, got {_json_type(value)}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{name}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name}: must be <= {maximum}, got {value}")
    return value


def _integer(body: dict, name: str, default: int, minimum: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{name}: expected an integer, got {_json_type(value)}")
    if value < minimum:
        raise ValidationError(f"{name}: must be >= {minimum}, got {value}")
    return value
