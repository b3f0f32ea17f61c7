"""Small gevent helpers shared by the agent and the master."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def capture(fn: Callable, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)``.

    Greenlets and thread-pool jobs that end in an exception are printed with a traceback by gevent's hub;
    running them through this keeps them quiet and hands the exception to whoever waits for the result.
    """
    try:
        return True, fn(*args, **kwargs)
    except Exception as exc:
        return False, exc


def unwrap(outcome: tuple[bool, Any]) -> Any:
    """The result of :func:`capture`, or its exception raised."""
    ok, value = outcome
    if not ok:
        raise value
    return value
