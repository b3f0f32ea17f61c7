"""The audit trail: who did what, when, from where, and how it ended; recorded before the request is answered.

The web tier records every state-changing request, allowed or refused (mschedule/webserver/access.py), with
one admin call (``audit_record``) committed before it answers. Records live in the master's database
(``audit`` table), are never pruned by task retention (``--keep-audit-days`` is their own), and are also
appended as JSON lines to ``--audit-log`` for a SIEM. A record holds no secret: a task's detail is its target
count and its script's sha256, never its environment.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from mschedule.master.storage import Storage
from mschedule.utils.defaults import MAX_AUDIT_TEXT
from mschedule.utils.exceptions import ValidationError
from mschedule.utils.validate import describe, integer, number

log = logging.getLogger(__name__)

FIELDS = {"user": str, "token_id": str, "role": str, "action": str, "object": str, "client": str}
MAX_TEXT = MAX_AUDIT_TEXT
MAX_DETAIL = 4096
MAX_LIMIT = 1000


class AuditLog:
    def __init__(self, storage: Storage, path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.path = path
        self.clock = clock

    def record(self, entry: Any) -> dict:
        """Check one record from the web tier, give it its time, keep it, append it to the file."""
        if not isinstance(entry, dict):
            raise ValidationError(f"entry: expected an object, got {describe(entry)}", field="entry")
        unknown = sorted(set(entry) - set(FIELDS) - {"status", "detail"})
        if unknown:
            raise ValidationError(f"entry.{unknown[0]}: unknown field", field=f"entry.{unknown[0]}")
        clean: dict = {"time": self.clock()}
        for name in FIELDS:
            value = entry.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise ValidationError(f"entry.{name}: expected a string of at most {MAX_TEXT} characters",
                                      field=f"entry.{name}")
            clean[name] = value
        if not clean["action"]:
            raise ValidationError("entry.action: missing", field="entry.action")
        clean["user"] = clean["user"] or "(unauthenticated)"
        clean["status"] = integer(entry.get("status"), "entry.status", 100, 599)
        clean["outcome"] = ("refused" if clean["status"] in (401, 403) else
                            "done" if clean["status"] < 400 else "failed")
        detail = entry.get("detail") or {}
        try:  # strict JSON: bytes could not be stored, a NaN would make GET /audit JSON no browser reads
            size = len(json.dumps(detail, allow_nan=False)) if isinstance(detail, dict) else None
        except (TypeError, ValueError, RecursionError):
            size = None
        if size is None or size > MAX_DETAIL:
            raise ValidationError(f"entry.detail: expected an object of at most {MAX_DETAIL} bytes as strict JSON "
                                  "(text, finite numbers, true, false, null, arrays, objects)", field="entry.detail")
        clean["detail"] = detail
        self.storage.add_audit(clean)
        self._append(clean)
        return {"seq": clean["seq"]}

    def _append(self, entry: dict) -> None:
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        except OSError as exc:  # the database has it: the file is a copy for a SIEM
            log.error("audit: cannot append to %s: %s (the record is in the database)", self.path, exc)

    def query(self, filters: Any) -> list[dict]:
        filters = filters or {}
        if not isinstance(filters, dict):
            raise ValidationError("filters: expected an object", field="filters")
        user, action = filters.get("user"), filters.get("action")
        for name, value in (("user", user), ("action", action)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name}: expected a string, got {describe(value)}", field=name)
        since = number(filters.get("since"), "since", 0, 1e10, default=None, hint="Unix seconds")
        limit = integer(filters.get("limit"), "limit", 1, MAX_LIMIT, default=100)
        # the next page: records older than the oldest one shown (its seq); seqs only grow, so a page never repeats
        before = integer(filters.get("before"), "before", 1, 2 ** 62, default=None)
        return self.storage.query_audit(user, action, since, limit, before)

    def prune(self, keep_days: float | None) -> int:
        if not keep_days:
            return 0
        return self.storage.prune_audit(self.clock() - keep_days * 86400)
