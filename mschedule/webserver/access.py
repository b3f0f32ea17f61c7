"""Who may call what, and the audit record of every call that changes something.

One middleware (:func:`access`) does, for every request but the public paths:

1. **Who**: the bearer token is one of ``--token-file`` (an admin of the user ``token-file``) or one the
   master made (``authenticate``: user, role, token id, and an operator's selector). None: 401.
2. **May they**: :data:`POLICY` names each state-changing route's action and the least role it needs
   (``viewer`` < ``operator`` < ``admin``); every read is a viewer's, but ``/tokens`` and ``/audit`` are an
   admin's. Too low: 403 saying what is needed. An operator's selector is the master's to check (it resolves
   the targets): a task reaching outside is its 403.
3. **Recorded**: a request of an action, allowed or refused (403) and whatever its outcome, is recorded with the
   master (``audit_record``, committed) *before* it is answered; if that fails the answer is 503. Requests
   without a valid token are logged (one line per REFUSAL_LOG_EVERY seconds), not recorded, so an anonymous
   flood can fill neither the trail nor the log.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import zerorpc
from aiohttp import web

from mschedule.transport import TRANSPORT_ERRORS
from mschedule.utils.defaults import MAX_AUDIT_TEXT, TOKEN_PREFIX
from mschedule.utils.validate import is_utf8
from mschedule.webserver.auth import TOKENS, is_public

log = logging.getLogger(__name__)

IDENTITY = web.RequestKey("identity", dict)
TOKEN = web.RequestKey("token", str)
RANK = {"viewer": 0, "operator": 1, "admin": 2}
FILE_USER = "token-file"


@dataclass(frozen=True)
class Rule:
    action: str
    role: str


POLICY: dict[tuple[str, str], Rule] = {
    ("POST", "/task"): Rule("task.submit", "operator"),
    ("POST", "/task/{task_id}/cancel"): Rule("task.cancel", "operator"),
    ("POST", "/task/{task_id}/retry"): Rule("task.retry", "operator"),
    ("POST", "/job/{name}/run"): Rule("job.run", "operator"),
    ("POST", "/job/{name}"): Rule("job.save", "admin"),
    ("POST", "/job/"): Rule("job.save", "admin"),
    ("POST", "/job/{name}/rollback"): Rule("job.rollback", "admin"),
    ("POST", "/keys/{agent_id}/accept"): Rule("key.accept", "admin"),
    ("POST", "/keys/{agent_id}/reject"): Rule("key.reject", "admin"),
    ("DELETE", "/keys/{agent_id}"): Rule("key.delete", "admin"),
    ("POST", "/keys/accept"): Rule("key.accept", "admin"),
    ("POST", "/keys/reject"): Rule("key.reject", "admin"),
    ("POST", "/keys/delete"): Rule("key.delete", "admin"),
    ("PUT", "/group/{name}"): Rule("group.put", "admin"),
    ("DELETE", "/group/{name}"): Rule("group.delete", "admin"),
    ("POST", "/schedules"): Rule("schedule.create", "admin"),
    ("PATCH", "/schedule/{schedule_id}"): Rule("schedule.update", "admin"),
    ("DELETE", "/schedule/{schedule_id}"): Rule("schedule.delete", "admin"),
    ("POST", "/tokens"): Rule("token.create", "admin"),
    ("DELETE", "/tokens/{token_id}"): Rule("token.delete", "admin"),
}
"""Every route that changes state. A route not here is a read (``POST /result`` included): a viewer's, except
:data:`ADMIN_READS`."""
ADMIN_READS = frozenset({"/tokens", "/audit"})
OBJECT_KEYS = ("task_id", "schedule_id", "token_id", "agent_id", "name")
MAX_TEXT = MAX_AUDIT_TEXT
MAX_PARAM_NAMES = 32
"""Most parameter names a record lists (each cut to 64 characters): the detail stays under the master's 4 KB."""
WIRE_INT = 2 ** 63


def _text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` as UTF-8 text (a lone surrogate written as ``\\ud800``) of at most ``limit`` characters.

    A record is built from what the request holds; one the master refuses (too long) or msgpack cannot carry
    (a surrogate) would leave the request unrecorded and answered 503 or 500: cut it rather than lose it."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _scalar(value: Any) -> Any:
    """A body's value as a record may hold it: text cut, a number msgpack and strict JSON can carry, else its
    text (``NaN``, ``Infinity`` and integers of more than 64 bits are not JSON a browser reads)."""
    if isinstance(value, str):
        return _text(value, 64)
    if isinstance(value, bool) or (isinstance(value, int) and -WIRE_INT <= value < WIRE_INT):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _text(repr(value), 32)


def _rule(request: web.Request, body: Any) -> Rule | None:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    rule = POLICY.get((request.method, canonical))
    if rule is None and canonical in ADMIN_READS:
        return Rule("read", "admin")
    if rule is not None and rule.action == "schedule.update" and isinstance(body, dict) and set(body) == {"enabled"}:
        # enabling or disabling is an operator's; changing what a schedule runs is an admin's
        return Rule("schedule.enable" if body["enabled"] is True else "schedule.disable", "operator")
    return rule


def action_of(request: web.Request) -> str | None:
    """The action a request asks for (``task.submit``...), or None for a read."""
    resource = request.match_info.route.resource
    rule = POLICY.get((request.method, resource.canonical if resource is not None else request.path))
    return rule.action if rule is not None else None


def _file_identity(token: str, tokens: frozenset[str]) -> dict | None:
    offered = token.encode()
    if any([hmac.compare_digest(offered, t.encode()) for t in tokens]):
        return {"user": FILE_USER, "role": "admin", "token_id": "file:" + hashlib.sha256(offered).hexdigest()[:12],
                "selector": None}
    return None


def actor(request: web.Request) -> dict | None:
    """What a route hands the master as the caller: ``{user, selector}`` (None with --insecure), and the
    request's ``Idempotency-Key`` header as ``idempotency_key`` (the master checks it and keeps the rule:
    mschedule/master/idempotency.py)."""
    identity = request.get(IDENTITY)
    key = request.headers.get("Idempotency-Key")
    if identity is None:
        return None if key is None else {"user": None, "selector": None, "idempotency_key": key}
    who = {"user": identity["user"], "selector": identity["selector"]}
    return who if key is None else {**who, "idempotency_key": key}


async def _body(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError):
        return None  # the route answers the bad body


def _detail(rule: Rule, body: Any, response: web.StreamResponse | None = None) -> dict:
    """A short, secret-free description of what was asked (and, for a bulk key decision, which agents it
    decided: ``all_pending`` names none)."""
    if rule.action.startswith("key.") and isinstance(response, web.Response):
        decided = _bulk_results(response)
        if decided is not None:
            return decided
    if not isinstance(body, dict):
        return {}
    if rule.action == "task.submit":
        script = body.get("script")
        detail: dict = {"targets": len(body["targets"]) if isinstance(body.get("targets"), list) else 0,
                        "selector": isinstance(body.get("selector"), dict)}
        if isinstance(script, str):
            detail["script_sha256"] = hashlib.sha256(script.encode("utf-8", "replace")).hexdigest()
        return detail
    if rule.action in ("job.run", "task.retry") and isinstance(body.get("params"), dict):
        names = sorted(_text(str(k), 64) for k in body["params"])  # names only, never values
        return {"params": names[:MAX_PARAM_NAMES], **({"params_count": len(names)} if len(names) > MAX_PARAM_NAMES
                                                      else {})}
    if rule.action == "token.create":
        return {k: _scalar(body.get(k)) for k in ("user", "role", "expires_in")
                if isinstance(body.get(k), (str, int, float))}
    return {}


def _bulk_results(response: web.Response) -> dict | None:
    """``{agents, done, failed}`` of a bulk key answer (``{"done", "failed", "results": [{agent_id, ok}]}``); None
    for any other answer. At most MAX_PARAM_NAMES agents are named (``done`` counts them all)."""
    if response.content_type != "application/json" or not response.body:
        return None
    try:
        answer = json.loads(response.body)
    except (ValueError, TypeError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        return None
    agents = [_text(str(r.get("agent_id")), 64) for r in answer["results"] if isinstance(r, dict) and r.get("ok")]
    return {"agents": agents[:MAX_PARAM_NAMES], "done": _scalar(answer.get("done")),
            "failed": _scalar(answer.get("failed"))}


def _object(request: web.Request, response: web.StreamResponse | None) -> str | None:
    for key in OBJECT_KEYS:
        if key in request.match_info:
            return _text(request.match_info[key])
    if isinstance(response, web.Response) and response.content_type == "application/json" and response.body:
        try:
            answer = json.loads(response.body)
        except (ValueError, TypeError):
            return None
        if isinstance(answer, dict):
            for key in OBJECT_KEYS:
                if isinstance(answer.get(key), str):
                    return _text(answer[key])
    return None


def _error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="mschedule"'} if status == 401 else None
    return web.json_response({"error": message, "field": None}, status=status, headers=headers)


@web.middleware
async def access(request: web.Request, handler) -> web.StreamResponse:
    """Who, may they, recorded (the module's docstring); a failure of its own is a JSON 500, never a traceback."""
    try:
        return await _access(request, handler)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s: access check failed", request.method, request.path)
        return _error(500, "internal error in the web tier's access check (see its log)")


async def _access(request: web.Request, handler) -> web.StreamResponse:
    tokens = request.app[TOKENS].tokens
    if not tokens or is_public(request.path):  # --insecure: nobody is asked
        return await handler(request)
    from mschedule.webserver.routes import BRIDGE, MAX_SCRIPT_BYTES  # routes imports this module

    header = request.headers.get("Authorization") or ""
    token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
    if not is_utf8(token):  # bytes that are not UTF-8 (aiohttp keeps them as surrogates): no token of ours
        return _refused(request, "authorization: missing or wrong bearer token")
    identity = _file_identity(token, tokens) if token else None
    bridge = request.app[BRIDGE]
    if identity is None and token.startswith(TOKEN_PREFIX):  # anything else is no token the master made
        try:
            identity = await bridge.call("authenticate", token)
        except zerorpc.RemoteError as exc:
            if exc.name != "Unauthenticated":
                log.error("authenticate failed on the master: %s: %s", exc.name, exc.msg)
                return _error(502, f"master error: {exc.name}")
            return _refused(request, exc.msg)
        except TRANSPORT_ERRORS:
            return _error(503, f"master unreachable at {bridge.endpoint}: cannot check the token")
    if identity is None:
        return _refused(request, "authorization: missing or wrong bearer token")
    request[IDENTITY] = identity
    request[TOKEN] = token
    too_large = None
    response: web.StreamResponse
    try:
        body = await _body(request) if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    except web.HTTPRequestEntityTooLarge as exc:  # the route could not read it either: answered here
        body, too_large = None, exc
    rule = _rule(request, body)
    if too_large is not None:
        response = web.json_response({"error": f"body: larger than the limit of {request.app[MAX_SCRIPT_BYTES] * 2} "
                                               "bytes", "field": "body"}, status=413)
    elif rule is not None and RANK.get(identity["role"], -1) < RANK[rule.role]:
        response = _error(403, f"role: {rule.action} needs the {rule.role} role; "
                                                   f"{identity['user']}'s token is {identity['role']}")
    else:
        response = await handler(request)
    if rule is None or rule.action == "read":
        return response
    entry = {"user": identity["user"], "token_id": identity["token_id"], "role": identity["role"],
             "action": rule.action, "object": _object(request, response), "client": request.remote,
             "status": response.status, "detail": _detail(rule, body, response)}
    try:
        await bridge.call("audit_record", entry)
    except zerorpc.RemoteError as exc:
        if exc.name == "NotDurable":  # kept by the master, committed with the change once its disk has room
            log.error("audit record of %s %s by %s not committed yet: %s", rule.action, entry["object"],
                      entry["user"], exc.msg)
            return response
        return _audit_failed(rule, entry, response, exc)
    except TRANSPORT_ERRORS as exc:
        return _audit_failed(rule, entry, response, exc)
    return response


async def revoked(request: web.Request) -> str | None:
    """The 401 message once the request's token is no longer valid (revoked, expired, gone from the token
    file), else None; for a request that outlives the check made when it came (an event stream), which asks
    again now and then. A master that cannot answer revokes nothing: the stream's own next call will fail."""
    identity = request.get(IDENTITY)
    if identity is None:  # --insecure
        return None
    from mschedule.webserver.routes import BRIDGE  # routes imports this module

    token = request.get(TOKEN, "")
    if str(identity.get("token_id", "")).startswith("file:"):
        if _file_identity(token, request.app[TOKENS].tokens) is None:
            return "authorization: the token was removed from the token file"
        return None
    try:
        await request.app[BRIDGE].call("authenticate", token)
    except zerorpc.RemoteError as exc:
        return exc.msg if exc.name == "Unauthenticated" else None
    except TRANSPORT_ERRORS:
        return None
    return None


def _audit_failed(rule: Rule, entry: dict, response: web.StreamResponse, exc: Exception) -> web.Response:
    log.error("audit record of %s %s by %s not committed: %s", rule.action, entry["object"], entry["user"], exc)
    undone = response.status in (400, 401, 403, 404, 405, 409, 413)
    return _error(503, f"audit: the record of this {rule.action} could not be committed; the action "
                       f"{'was not done' if undone else 'may have been done'}: check before retrying")


REFUSAL_LOG_EVERY = 10.0
"""Seconds between two WARNING lines about 401s: anyone can send them in a loop, and one line each filled the
disk (about 100 bytes per request, thousands a second); the next line says how many were not logged."""


class _RefusalLog:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.last = -REFUSAL_LOG_EVERY
        self.skipped = 0

    def warn(self, request: web.Request) -> None:
        now = self.clock()
        if now - self.last < REFUSAL_LOG_EVERY:
            self.skipped += 1
            return
        self.last, skipped, self.skipped = now, self.skipped, 0
        log.warning("401 %s %s from %s%s", request.method, request.path[:200], request.remote,
                    f" (and {skipped} more 401s in the last {REFUSAL_LOG_EVERY:.0f}s, not logged)" if skipped else "")


_REFUSALS = _RefusalLog()


def _refused(request: web.Request, message: str) -> web.Response:
    _REFUSALS.warn(request)
    return _error(401, message)
