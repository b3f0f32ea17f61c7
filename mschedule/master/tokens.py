"""API tokens: each belongs to a user and has a role; the master keeps them (hashed) and says who a token is.

- ``viewer`` reads; ``operator`` also submits, cancels and retries tasks, runs jobs and enables or disables
  schedules; ``admin`` does everything (keys, groups, saving jobs, schedules, tokens). The rule of which HTTP
  call needs which role is the web tier's (mschedule/webserver/access.py); who a token is, is this module's.
- A token is shown once, when it is made: the master stores only its SHA-256, so a read of its database gives
  no usable token. It is ``ms_`` and 32 random bytes (URL-safe base64).
- ``expires_in`` seconds make it expire; ``DELETE`` revokes it at once: the next request with it is a 401.
- The web tier's ``--token-file`` tokens are not here: they are admin tokens of the user ``token-file``.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from mschedule.master.storage import Role, Storage, TokenRecord
from mschedule.utils.defaults import TOKEN_PREFIX
from mschedule.utils.exceptions import NotFound, Unauthenticated, ValidationError
from mschedule.utils.selectors import validate_selector
from mschedule.utils.validate import describe, number

log = logging.getLogger(__name__)

PREFIX = TOKEN_PREFIX
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_TOKENS = 10000
MAX_EXPIRES_IN = 10 * 365 * 86400
LAST_USED_PRECISION = 60.0
"""A token's ``last_used`` is saved again only when it moved by more than this many seconds."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    """The token records (``storage.tokens``, by id), and who a presented token is."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock
        self._by_digest = {record.digest: record for record in storage.tokens.values()}

    def create(self, body: Any, created_by: str | None = None) -> dict:
        if not isinstance(body, dict):
            raise ValidationError(f"body: expected an object with user and role, got {describe(body)}", field="body")
        unknown = sorted(set(body) - {"user", "role", "expires_in", "selector"})
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (allowed: user, role, expires_in, selector)",
                                  field=unknown[0])
        user = body.get("user")
        if not isinstance(user, str) or not USER.fullmatch(user):
            raise ValidationError("user: expected a user name of 1 to 64 letters, digits and . _ @ -", field="user")
        role = body.get("role")
        if not isinstance(role, str) or role not in {r.value for r in Role}:
            raise ValidationError(f"role: expected one of {', '.join(r.value for r in Role)}", field="role")
        expires_in = number(body.get("expires_in"), "expires_in", 1, MAX_EXPIRES_IN, default=None, hint="seconds")
        selector = validate_selector(body.get("selector"))
        if selector is not None and role != Role.OPERATOR:
            raise ValidationError("selector: only an operator's token is restricted to a selector (a viewer "
                                  "runs nothing, an admin everything)", field="selector")
        if len(self.storage.tokens) >= MAX_TOKENS:
            raise ValidationError(f"body: {MAX_TOKENS} tokens exist, the most one master keeps", field="body")
        secret = PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        record = TokenRecord(token_id=uuid.uuid4().hex[:16], user=user, role=role, digest=digest(secret),
                             created=now, expires=now + expires_in if expires_in else None, selector=selector,
                             created_by=created_by)
        self.storage.save_token(record)
        self._by_digest[record.digest] = record
        log.warning("token %s created for %s (%s)%s", record.token_id, user, role,
                    f" by {created_by}" if created_by else "")
        return {**record.view(), "token": secret}

    def list(self) -> list[dict]:
        return [record.view() for record in self.storage.tokens.values()]

    def delete(self, token_id: Any) -> dict:
        if not isinstance(token_id, str) or token_id not in self.storage.tokens:
            raise NotFound(f"token {token_id!r} not found", field="token_id")
        record = self.storage.tokens[token_id]
        self.storage.delete_token(token_id)
        self._by_digest.pop(record.digest, None)
        log.warning("token %s of %s revoked", token_id, record.user)
        return {"token_id": token_id, "deleted": True}

    def authenticate(self, token: Any) -> dict:
        """Who ``token`` is: ``{user, role, token_id, selector}``.

        Raises:
            Unauthenticated: not a token of this master, or expired (a revoked one is not here any more).
        """
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 200:
            raise Unauthenticated("authorization: missing or wrong bearer token")
        record = self._by_digest.get(digest(token))
        if record is None:
            raise Unauthenticated("authorization: missing or wrong bearer token")
        now = self.clock()
        if record.expires is not None and now >= record.expires:
            raise Unauthenticated(f"authorization: token {record.token_id} expired")
        if record.last_used is None or now - record.last_used > LAST_USED_PRECISION:
            record.last_used = now
            self.storage.save_token(record)  # committed by the next commit, not waited for
        return record.identity()
