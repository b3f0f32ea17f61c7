"""Environment variables of a script: a task's ``env``, a job's declared ``params`` and the values a run gives.

A value reaches the script as an environment variable of the parameter's name, never pasted into the script
text, so no value can change what the script says (no quoting, no injection). A ``secret`` parameter's value
is shown as :data:`MASK` in every answer, and the agent replaces it by :data:`MASK` in the output it sends
(:mod:`mschedule.utils.masking`).
"""
from __future__ import annotations

import re
from typing import Any

from mschedule.utils.exceptions import ValidationError
from mschedule.utils.validate import describe, utf8

MASK = "***"
"""What a secret's value is shown as, in answers and in output."""
NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
"""An environment variable's (and so a parameter's) name."""
RESERVED_PREFIX = "MSCHEDULE_"
"""The agent sets ``MSCHEDULE_TASK_ID`` and ``MSCHEDULE_AGENT_ID``; nobody else may set a name with it."""
MAX_VARIABLES = 64
MAX_NAME = 128
MAX_VALUE_BYTES = 32 * 1024
MAX_ENV_BYTES = 64 * 1024
MAX_CHOICES = 100
MAX_PATTERN = 500
MAX_DESCRIPTION = 1000
DECLARATION_FIELDS = ("name", "description", "default", "required", "choices", "pattern", "secret")


def check_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise ValidationError(f"{field}: expected a variable name such as VERSION ([A-Z_][A-Z0-9_]*, at most "
                              f"{MAX_NAME} characters), got {name!r}" if isinstance(name, str) else
                              f"{field}: expected a variable name, got {describe(name)}", field=field)
    if name.startswith(RESERVED_PREFIX):
        raise ValidationError(f"{field}: names starting with {RESERVED_PREFIX} are the agent's own", field=field)
    return name


def check_value(value: Any, field: str) -> str:
    """A variable's value: text (an integer counts as its decimal text), UTF-8, no NUL, at most 32 KiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected a string, got {describe(value)}", field=field)
    utf8(value, field)
    if "\0" in value:
        raise ValidationError(f"{field}: contains a NUL character, which no environment variable can hold",
                              field=field)
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ValidationError(f"{field}: {len(value.encode())} bytes, more than {MAX_VALUE_BYTES}", field=field)
    return value


def validate_env(raw: Any, field: str = "env") -> dict[str, str]:
    """A task's ``env``: ``{NAME: value}``, at most 64 variables and 64 KiB together."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(f"{field}: expected an object of NAME: value, got {describe(raw)}", field=field)
    if len(raw) > MAX_VARIABLES:
        raise ValidationError(f"{field}: {len(raw)} variables, more than {MAX_VARIABLES}", field=field)
    env = {check_name(name, f"{field}.{name}" if isinstance(name, str) else field): None for name in raw}
    for name in env:
        env[name] = check_value(raw[name], f"{field}.{name}")
    size = sum(len(k) + len(v.encode()) + 2 for k, v in env.items())
    if size > MAX_ENV_BYTES:
        raise ValidationError(f"{field}: {size} bytes together, more than {MAX_ENV_BYTES}", field=field)
    return env


def _optional_text(decl: dict, key: str, field: str, limit: int) -> str | None:
    value = decl.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field}.{key}: expected a string, got {describe(value)}", field=f"{field}.{key}")
    if len(value) > limit:
        raise ValidationError(f"{field}.{key}: {len(value)} characters, more than {limit}", field=f"{field}.{key}")
    return utf8(value, f"{field}.{key}")


def _flag(decl: dict, key: str, field: str) -> bool:
    value = decl.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"{field}.{key}: expected true or false, got {describe(value)}", field=f"{field}.{key}")
    return value


def validate_declarations(raw: Any, field: str = "params") -> list[dict]:
    """A job version's ``params``: ``[{name, description, default, required, choices, pattern, secret}]``.

    Each comes back complete (every key present), so a stored declaration needs no defaults when read.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValidationError(f"{field}: expected an array of parameter declarations, got {describe(raw)}",
                              field=field)
    if len(raw) > MAX_VARIABLES:
        raise ValidationError(f"{field}: {len(raw)} parameters, more than {MAX_VARIABLES}", field=field)
    out: list[dict] = []
    seen: set[str] = set()
    for i, decl in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(decl, dict):
            raise ValidationError(f"{where}: expected an object with name, got {describe(decl)}", field=where)
        unknown = sorted(set(decl) - set(DECLARATION_FIELDS))
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(DECLARATION_FIELDS)})",
                                  field=f"{where}.{unknown[0]}")
        name = check_name(decl.get("name"), f"{where}.name")
        if name in seen:
            raise ValidationError(f"{where}.name: {name} is declared twice", field=f"{where}.name")
        seen.add(name)
        pattern = _optional_text(decl, "pattern", where, MAX_PATTERN)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValidationError(f"{where}.pattern: not a regular expression: {exc}",
                                      field=f"{where}.pattern") from None
        choices = decl.get("choices")
        if choices is not None:
            if (not isinstance(choices, list) or not choices or len(choices) > MAX_CHOICES
                    or not all(isinstance(c, str) for c in choices)):
                raise ValidationError(f"{where}.choices: expected 1 to {MAX_CHOICES} strings", field=f"{where}.choices")
            choices = [check_value(c, f"{where}.choices[{j}]") for j, c in enumerate(choices)]
        out.append({"name": name, "description": _optional_text(decl, "description", where, MAX_DESCRIPTION) or "",
                    "default": None, "required": _flag(decl, "required", where), "choices": choices,
                    "pattern": pattern, "secret": _flag(decl, "secret", where)})
        if decl.get("default") is not None:
            if out[-1]["secret"]:
                raise ValidationError(f"{where}.default: a secret parameter has no default (a job version is "
                                      "shown to every reader); give its value with each run or in the schedule",
                                      field=f"{where}.default")
            out[-1]["default"] = check_param(out[-1], decl["default"], f"{where}.default")
    return out


def check_param(decl: dict, value: Any, field: str) -> str:
    """``value`` of the declared parameter ``decl``, checked against its choices and pattern."""
    value = check_value(value, field)
    if decl["secret"] and value == MASK:  # what every answer shows for it: copied back, it is no password
        raise ValidationError(f"{field}: {MASK} is how a secret is shown, not its value: give the value", field=field)
    if decl["choices"] is not None and value not in decl["choices"]:
        shown = value if not decl["secret"] else MASK
        raise ValidationError(f"{field}: {shown!r} is not one of {', '.join(decl['choices'])}", field=field)
    if decl["pattern"] is not None and re.fullmatch(decl["pattern"], value) is None:
        shown = f"{value!r} does not" if not decl["secret"] else "the value does not"
        raise ValidationError(f"{field}: {shown} match the pattern {decl['pattern']}", field=field)
    return value


def resolve_params(declarations: list[dict], given: Any, field: str = "params") -> tuple[dict[str, str], list[str]]:
    """The variables a run of a job with ``declarations`` gets from the values ``given``, and which of them are
    secret: every given value is checked, defaults fill the rest, a required one without a value is refused.

    Raises:
        ValidationError: ``params.NAME`` for an unknown parameter, a missing required one, or a bad value.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ValidationError(f"{field}: expected an object of NAME: value, got {describe(given)}", field=field)
    by_name = {d["name"]: d for d in declarations}
    unknown = sorted(str(k) for k in given if k not in by_name)
    if unknown:
        declared = ", ".join(by_name) or "none"
        raise ValidationError(f"{field}.{unknown[0]}: unknown parameter (declared: {declared})",
                              field=f"{field}.{unknown[0]}")
    env: dict[str, str] = {}
    for name, decl in by_name.items():
        value = given.get(name)
        if value is None:
            value = decl["default"]
        if value is None:
            if decl["required"]:
                raise ValidationError(f"{field}.{name}: required parameter missing", field=f"{field}.{name}")
            continue
        env[name] = check_param(decl, value, f"{field}.{name}")
    return env, [d["name"] for d in declarations if d["secret"] and d["name"] in env]


def masked(env: dict[str, str], secrets: list[str]) -> dict[str, str]:
    """``env`` as answers show it: each secret's value replaced by :data:`MASK`."""
    return {name: MASK if name in secrets else value for name, value in env.items()}
