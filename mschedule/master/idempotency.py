"""Idempotency keys: a request to make a task, sent again with the same key, answers the task it made.

A client that is not answered (a 503 from the web tier: the master slow, restarting, or failing over to
another master of a cluster) cannot know whether its task was made. With an ``Idempotency-Key`` header (any
text of 1 to 128 printable ASCII characters, e.g. a UUID; the web tier passes it on in the request's actor),
it sends the same request again: the master answers the task made the first time, and makes no second one.

- A key is the caller's own: the same key from two users is two keys.
- The key, with a SHA-256 of what the request asked for (the task's script, targets, limits, job and
  environment, with secrets' values left out), is kept in the task's record: durable with the task, after a
  restart and on the next leader too, and forgotten when retention prunes the task.
- The same key with another request is a 409 (``field: idempotency_key``): a client bug, never a silent
  replay of something else.
- Every request that makes a task takes one: ``POST /task``, ``POST /job/{name}/run``,
  ``POST /task/{id}/retry``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from typing import Any

from mschedule.master.storage import Storage, TaskRecord
from mschedule.utils.exceptions import Conflict, ValidationError
from mschedule.utils.params import masked
from mschedule.utils.taskspec import TaskSpec

KEY = re.compile(r"[\x21-\x7e]{1,128}")
"""What a key may be: 1 to 128 printable ASCII characters, no space."""


def request_key(actor: Any) -> str | None:
    """The idempotency key an actor carries, checked; None if it carries none."""
    key = actor.get("idempotency_key") if isinstance(actor, dict) else None
    if key is None:
        return None
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValidationError("idempotency_key: expected 1 to 128 printable ASCII characters (e.g. a UUID)",
                              field="idempotency_key")
    return key


def fingerprint(spec: TaskSpec, job: tuple[str, int | None] | None = None, retry_of: str | None = None) -> str:
    """SHA-256 of what a request asks for: secrets' values are not in it (it is stored)."""
    body = asdict(spec)
    body["script"] = hashlib.sha256(spec.script).hexdigest()
    body["env"] = masked(spec.env, spec.secrets)
    body["job"], body["retry_of"] = job, retry_of
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class RequestKeys:
    """The tasks made with a key, by (user, key): rebuilt from the tasks' records at start."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._tasks: dict[tuple[str | None, str], str] = {}
        for task in storage.tasks.values():
            if task.request_key:
                self._tasks[(task.request_key.get("user"), task.request_key["key"])] = task.id

    def made(self, user: str | None, key: str, digest: str) -> TaskRecord | None:
        """The task this key made, if it made one and it is still kept.

        Raises:
            Conflict: the key made a task for another request.
        """
        task_id = self._tasks.get((user, key))
        task = self.storage.get_task(task_id) if task_id is not None else None
        if task is None:
            self._tasks.pop((user, key), None)
            return None
        if task.request_key.get("sha256") != digest:
            raise Conflict(f"idempotency_key: key {key} made task {task.id} for another request; use a new key "
                           "for a new request", field="idempotency_key")
        return task

    def remember(self, task: TaskRecord, user: str | None, key: str, digest: str) -> None:
        """Record that ``key`` made ``task`` (saved with the task's record)."""
        task.request_key = {"user": user, "key": key, "sha256": digest}
        self._tasks[(user, key)] = task.id
        self.storage.save_task(task)
