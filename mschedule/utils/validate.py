"""Checks of one request field each, shared by the master's validators (tasks, jobs, groups, queries).

Every number has a documented range; a value outside it, a non-finite number (NaN, Infinity), a boolean or
a value of another type is a ValidationError whose message starts with the field's name (and whose
``field`` is that name). Text must be UTF-8: JSON can spell a lone surrogate (``"\\ud800"``), which no
script, hostname or label can be.
"""
from __future__ import annotations

import math
from typing import Any

from mschedule.utils.exceptions import ValidationError

_MISSING = object()


def describe(value: Any) -> str:
    """The JSON name of ``value``'s type; NaN and the infinities by name (they are numbers to Python)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", bytes: "bytes"}
    return names.get(type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _range(minimum: float, maximum: float, hint: str) -> str:
    return f"between {minimum} and {maximum}" + (f" ({hint})" if hint else "")


def number(value: Any, name: str, minimum: float, maximum: float, default: Any = _MISSING,
           hint: str = "") -> float:
    """A finite number in ``minimum..maximum``; ``default`` when absent (None), required without one."""
    if value is None and default is not _MISSING:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))):
        raise ValidationError(f"{name}: expected a number {_range(minimum, maximum, hint)}, got {describe(value)}",
                              field=name)
    if not minimum <= value <= maximum:
        raise ValidationError(f"{name}: must be {_range(minimum, maximum, hint)}, got {value!r}", field=name)
    return value


def integer(value: Any, name: str, minimum: int, maximum: int, default: Any = _MISSING, hint: str = "") -> int:
    """A whole number in ``minimum..maximum`` (``2.0`` counts as 2); ``default`` when absent (None)."""
    if value is None and default is not _MISSING:
        return default
    whole = int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(whole, bool) or not isinstance(whole, int):
        shown = "a fraction" if isinstance(value, float) and math.isfinite(value) else describe(value)
        raise ValidationError(f"{name}: expected an integer {_range(minimum, maximum, hint)}, got {shown}",
                              field=name)
    if not minimum <= whole <= maximum:
        raise ValidationError(f"{name}: must be {_range(minimum, maximum, hint)}, got {value!r}", field=name)
    return whole


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be UTF-8 encoded (no lone surrogate, as aiohttp and msgpack leave bad bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8(value: str, name: str) -> str:
    """``value`` if it is UTF-8 text; a ValidationError naming the field if it holds a lone surrogate."""
    if not is_utf8(value):
        raise ValidationError(f"{name}: not valid UTF-8 text (a lone surrogate such as \\ud800)", field=name)
    return value
