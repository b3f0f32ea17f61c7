"""Which agents a selector picks: ``{"hostname": glob, "labels": {k: v}, "group": name}``, all must match."""
from __future__ import annotations

import fnmatch
from typing import Any

from mschedule.utils.exceptions import ValidationError
from mschedule.utils.validate import utf8

SELECTOR_FIELDS = ("hostname", "labels", "group")


def validate_selector(raw: Any, field: str = "selector", allow_group: bool = True) -> dict | None:
    """A clean selector, or None when absent. Raises ValidationError naming the field (also for text that
    is not UTF-8)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError(f"{field}: expected an object with hostname, labels and/or group", field=field)
    allowed = SELECTOR_FIELDS if allow_group else ("hostname", "labels")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValidationError(f"{field}.{unknown[0]}: unknown field (allowed: {', '.join(allowed)})",
                              field=f"{field}.{unknown[0]}")
    if not raw:
        raise ValidationError(f"{field}: empty, it would match every agent", field=field)
    hostname = raw.get("hostname")
    if hostname is not None:
        if not isinstance(hostname, str) or not hostname:
            raise ValidationError(f"{field}.hostname: expected a non-empty glob such as 'web-*'",
                                  field=f"{field}.hostname")
        utf8(hostname, f"{field}.hostname")
    labels = raw.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()):
            raise ValidationError(f"{field}.labels: expected an object of strings", field=f"{field}.labels")
        for key, value in labels.items():
            utf8(key, f"{field}.labels")
            utf8(value, f"{field}.labels.{key}")
    group = raw.get("group")
    if group is not None:
        if not isinstance(group, str) or not group:
            raise ValidationError(f"{field}.group: expected a group name", field=f"{field}.group")
        utf8(group, f"{field}.group")
    return {k: v for k, v in raw.items() if v is not None}


def matches(selector: dict, hostname: str, labels: dict[str, str]) -> bool:
    """Hostname glob and labels (the group part is resolved by the master)."""
    pattern = selector.get("hostname")
    if pattern is not None and not fnmatch.fnmatchcase(hostname, pattern):
        return False
    return all(labels.get(k) == v for k, v in selector.get("labels", {}).items())


def parse_label_filters(values: list[str]) -> dict[str, str]:
    """``?label=dc:bj&label=role:web`` -> ``{"dc": "bj", "role": "web"}``."""
    out = {}
    for value in values:
        key, sep, wanted = value.partition(":")
        if not sep or not key:
            raise ValidationError(f"label: expected key:value, got {value!r}", field="label")
        out[key] = wanted
    return out
