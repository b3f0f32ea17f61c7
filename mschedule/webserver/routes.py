"""HTTP API of the web tier. Every answer is JSON; every error is ``{"error": "...", "field": ...}``.

``field`` is the request field (a body member such as ``selector.labels``, a path or query parameter) the
error is about, or null when it is about the request as a whole; the master's errors bring theirs (see
:mod:`mschedule.transport.errors`), so a client never has to read it out of the message.

The web tier adapts, the master validates: a route turns its JSON body, path and query strings into values
(a query's number into a number) and hands them to the master, whose answer or error it passes on. The only
checks here are about HTTP and transport (a body that is not JSON, a value msgpack cannot carry).
"""
from __future__ import annotations

import asyncio
import base64
import codecs
import json
import logging
import socket
import time
from typing import Any

import zerorpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from mschedule.transport import TRANSPORT_ERRORS
from mschedule.utils.defaults import DEFAULT_MAX_SCRIPT_BYTES, MAX_RESULT_WAIT
from mschedule.utils.exceptions import MScheduleError, ValidationError
from mschedule.utils.selectors import matches, parse_label_filters
from mschedule.utils.validate import is_utf8
from mschedule.webserver.access import IDENTITY, access, action_of, actor, revoked
from mschedule.webserver.auth import TOKENS, TokenFile
from mschedule.webserver.metrics import METRICS, WebMetrics, measure
from mschedule.webserver.openapi import OPENAPI
from mschedule.webserver.rpc_bridge import MasterBridge
from mschedule.webserver.static import static_response

log = logging.getLogger(__name__)

BRIDGE = web.AppKey("bridge", MasterBridge)
STREAMS = web.AppKey("streams", dict)
MAX_SCRIPT_BYTES = web.AppKey("max_script_bytes", int)
RPC_WAIT_MARGIN = 10.0
"""Seconds an RPC with ``wait`` may take beyond the wait itself."""

routes = web.RouteTableDef()


class ApiError(Exception):
    """An HTTP error answer: ``status``, and the message and field of ``{"error", "field"}``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def master_error(exc: zerorpc.RemoteError) -> ApiError:
    """The HTTP answer to an error the master answered: its class's status (mschedule.utils.exceptions.ERRORS), its
    message and field; 502 for an error the master did not raise on purpose (a bug there)."""
    if isinstance(exc, MScheduleError):
        return ApiError(exc.http_status, exc.msg, getattr(exc, "field", None))
    return ApiError(502, f"master error: {exc.name}: {exc.msg}")


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; never a 500 with a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message, field = exc.reason, None
        if exc.status == 404:
            message = f"no such route: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 413:
            message, field = f"body: larger than the limit of {request.app[MAX_SCRIPT_BYTES] * 2} bytes", "body"
        return error_response(exc.status, message, field)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error in the web tier (see its log)")


async def call_master(request: web.Request, method: str, *args: Any, timeout: float | None = None) -> Any:
    """Call the master and map its failures to HTTP errors."""
    bridge = request.app[BRIDGE]
    try:
        return await bridge.call(method, *args, timeout=timeout)
    except zerorpc.RemoteError as exc:
        error = master_error(exc)
        if error.status == 502:
            log.error("master error on %s: %s: %s", method, exc.name, exc.msg)
        raise error from None
    except TRANSPORT_ERRORS as exc:
        action = action_of(request)
        if action is not None:
            # the request may have reached the master, which may have committed it and then lost its answer
            # (killed, fenced in a failover, slow to commit): the caller must not take it as not done
            again = ("send it again with the same Idempotency-Key: it is done once" if
                     request.headers.get("Idempotency-Key") else "check before retrying")
            raise ApiError(503, f"no answer from the master at {bridge.endpoint} ({type(exc).__name__}): this "
                                f"{action} may have been done; {again}") from None
        raise ApiError(503, f"master unreachable at {bridge.endpoint} ({type(exc).__name__}); "
                            "is appserver.py running?") from None


async def read_json(request: web.Request) -> Any:
    """The body's JSON value, checked to be one msgpack can carry to the master (see :func:`wire_check`)."""
    raw = await request.read()
    if not raw:
        raise ApiError(400, "body: empty, expected a JSON object", "body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body: not valid JSON ({exc})", "body") from None
    except RecursionError:  # [[[[...]]]] deeper than the parser's stack
        raise ApiError(400, "body: JSON nested too deeply", "body") from None
    wire_check(body)
    return body


#: the integers msgpack can pack
WIRE_INT_MIN, WIRE_INT_MAX = -(2 ** 63), 2 ** 64 - 1


def wire_check(value: Any, field: str = "") -> None:
    """Refuse, naming the field, a JSON value msgpack cannot carry to the master.

    JSON allows a lone surrogate (``"\\ud800"``), which is not UTF-8 text, and integers of any size;
    msgpack raises on packing either, which would be a 500 without a field. This is transport, not a
    rule of any request: what the value means and which range it must be in the master decides.
    ``field`` is the path so far: ``selector.labels.dc``, ``targets[0]``; empty for the body itself.
    """
    if isinstance(value, str):
        if not is_utf8(value):
            raise ApiError(400, f"{field or 'body'}: not valid UTF-8 text (a lone surrogate such as \\ud800)",
                           field or "body")
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if not WIRE_INT_MIN <= value <= WIRE_INT_MAX:
            raise ApiError(400, f"{field or 'body'}: integer out of range (more than 64 bits)", field or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{field}.{key}" if field else key
            if not is_utf8(key):
                shown = path.encode("utf-8", "backslashreplace").decode()
                raise ApiError(400, f"{shown}: field name not valid UTF-8 text (a lone surrogate such as \\ud800)",
                               shown)
            wire_check(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            wire_check(item, f"{field or 'body'}[{i}]")


def query_number(value: Any) -> Any:
    """A query string's number as a float; anything else as it came, for the master to name the error."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def rpc_wait(wait: Any) -> float:
    """How long the master may hold a call asked to ``wait``: transport only, the master checks the value."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 < wait < float("inf"):
        return 0.0
    return min(float(wait), MAX_RESULT_WAIT)


def decode_output(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", errors="replace")


def task_view(detail: dict) -> dict:
    """The master's task detail with its script and outputs decoded to text."""
    detail["script"] = decode_output(detail.get("script") or "")
    for target in detail.get("targets", {}).values():
        target["output"] = decode_output(target.get("output") or "")
    return detail


@routes.get("/")
async def console(request: web.Request) -> web.Response:
    """The web console (public: a page with no data in it; the API calls it makes need the token)."""
    return static_response("index.html")


@routes.get("/static/{name}")
async def console_file(request: web.Request) -> web.Response:
    return static_response(request.match_info["name"])


@routes.get("/api")
async def api_index(request: web.Request) -> web.Response:
    return web.json_response({
        "service": "mschedule web tier",
        "routes": sorted(f"{r.method} {r.resource.canonical}" for r in request.app.router.routes()
                         if r.method != "HEAD"),
        "openapi": "/openapi.json",
        "console": "/",
    })


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """200 when the web tier and both master endpoints answer (the agents' through a real round trip the
    master makes); 503 with the details otherwise."""
    master = await call_master(request, "ping")
    return web.json_response({"web": "ok", "master": master}, status=200 if master.get("ok") else 503)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """For load balancers and systemd, without a token: 200 ``{"status": "ok"}`` when the web tier and both
    master endpoints answer, 503 ``{"status": "down"}`` otherwise; nothing else (``/health`` has the details)."""
    try:
        up = bool((await call_master(request, "ping", timeout=5)).get("ok"))
    except ApiError:
        up = False
    return web.json_response({"status": "ok" if up else "down"}, status=200 if up else 503)


@routes.get("/task/targets")
async def targets(request: web.Request) -> web.Response:
    """Every known agent; ``?hostname=web-*&label=dc:bj`` keeps those that match (all must)."""
    try:
        selector = {"labels": parse_label_filters(request.query.getall("label", []))}
    except ValidationError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    if "hostname" in request.query:
        selector["hostname"] = request.query["hostname"]
    agents = await call_master(request, "get_agents")
    if request.query.get("hostname") is not None or selector["labels"]:
        agents = {a: info for a, info in agents.items() if matches(selector, info["hostname"], info["labels"])}
    return web.json_response(agents)


@routes.post("/task")
async def submit_task(request: web.Request) -> web.Response:
    """The body goes to the master as it came: the master validates it (one owner for the task's rules)."""
    task_id = await call_master(request, "add_task", await read_json(request), actor(request))
    log.info("task %s submitted over HTTP from %s", task_id, request.remote)
    return web.json_response({"task_id": task_id}, status=201)


def query_int(value: Any, field: str) -> Any:
    """A query string's whole number as an int; anything else as it came, for the master to name the error."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return value
        wire_check(value, field)
    return value


def _query_fields(request: web.Request) -> dict:
    """``?wait=&output_limit=`` as numbers where they are numbers."""
    fields = {}
    if "wait" in request.query:
        fields["wait"] = query_number(request.query["wait"])
    if "output_limit" in request.query:
        fields["output_limit"] = query_int(request.query["output_limit"], "output_limit")
    return fields


async def _task_result(request: web.Request, query: Any) -> web.Response:
    wait = query.get("wait") if isinstance(query, dict) else None
    detail = await call_master(request, "get_result", query, timeout=rpc_wait(wait) + RPC_WAIT_MARGIN)
    return web.json_response(task_view(detail))


@routes.post("/result")
async def result(request: web.Request) -> web.Response:
    """``{"task_id", "wait", "output_limit"}``; ``?wait=&output_limit=`` fill what the body leaves out."""
    body = await read_json(request)
    return await _task_result(request, {**_query_fields(request), **body} if isinstance(body, dict) else body)


@routes.get("/task/{task_id}")
async def task(request: web.Request) -> web.Response:
    return await _task_result(request, {"task_id": request.match_info["task_id"], **_query_fields(request)})


@routes.get("/task/{task_id}/target/{agent_id}")
async def task_target(request: web.Request) -> web.Response:
    """One target's whole output (for when ``output_limit`` cut it); a running one's so far (``partial``)."""
    target = await call_master(request, "get_target", request.match_info["task_id"], request.match_info["agent_id"])
    target["output"] = decode_output(target["output"])
    return web.json_response(target)


MAX_STREAMS = 100
"""Event streams (GET /task/{id}/events) one web tier serves at once: each holds one long poll to the master."""
STREAM_WRITE_TIMEOUT = 10.0
"""Seconds a stream's write may wait for a client that reads nothing: then the stream is closed, its slot free
(a client that stopped reading would otherwise hold one of MAX_STREAMS for as long as it stays connected)."""
STREAM_SEND_BUFFER = 64 * 1024
"""The kernel's send buffer of a stream's socket: without it, up to a few MB per stalled client wait in the
kernel (100 streams: hundreds of MB) and a write only blocks, and times out, once they are full."""
STREAM_WAIT = 15.0
"""Seconds each poll of a stream waits on the master; a quiet stream gets a keep-alive comment this often."""
STREAM_RECHECK = 5.0
"""Seconds between two checks that a stream's token is still valid: a stream lasts as long as its task, and a
revoked or expired token must stop reading it (the stream ends with an ``error`` event)."""


def _sse(event: dict) -> bytes:
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {json.dumps(event['data'])}\n\n".encode()


class _OutputText:
    """Output events' bytes as text, one UTF-8 decoder per target: a character split between two events is
    whole in the second (a gap resets it)."""

    def __init__(self) -> None:
        self._decoders: dict[str, tuple[codecs.IncrementalDecoder, int]] = {}

    def text(self, agent_id: str, offset: int, data: bytes) -> str:
        decoder, end = self._decoders.get(agent_id, (None, -1))
        if decoder is None or end != offset:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoders[agent_id] = (decoder, offset + len(data))
        return decoder.decode(data)


def _stream_events(answer: dict, text: _OutputText) -> tuple[list[dict], bool]:
    """The SSE events of one master answer (a snapshot first after a reset), and whether ``end`` is among them."""
    events = []
    if answer.get("reset"):
        snapshot = answer["snapshot"]
        for agent_id, target in snapshot["targets"].items():
            if "output" in target:
                target["output"] = text.text(agent_id, target["offset"], base64.b64decode(target["output"]))
        events.append({"id": answer["cursor"], "event": "snapshot", "data": snapshot})
    for event in answer["events"]:
        if event["event"] == "output":
            data = event["data"]
            data["data"] = text.text(data["agent_id"], data["offset"], base64.b64decode(data["data"]))
        events.append(event)
    return events, any(e["event"] == "end" for e in events)


@routes.get("/task/{task_id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of one task: ``snapshot`` (first, and again when the master's log moved past the
    client's ``Last-Event-ID``), ``target``, ``output``, ``task``, then ``end``, and the stream closes.

    The master owns the events (``task_events``, a long poll from a cursor); this route only carries them, one
    poll at a time, with a keep-alive comment when a poll comes back empty, and stops when the client is gone.
    """
    streams = request.app[STREAMS]
    if streams["open"] >= MAX_STREAMS:
        raise ApiError(503, f"streams: {MAX_STREAMS} event streams are open on this web tier; try again later")
    streams["open"] += 1  # taken before the first await, so that a burst of requests cannot all pass the check
    try:
        return await _stream_task_events(request, _cursor_header(request))
    finally:
        streams["open"] -= 1


def _cursor_header(request: web.Request) -> str | None:
    """``Last-Event-ID`` when it can be a cursor (short printable ASCII), else None: a fresh snapshot. Anything
    else (bytes that are not text, kilobytes) could not even travel to the master."""
    value = request.headers.get("Last-Event-ID")
    return value if value and len(value) <= 128 and value.isascii() and value.isprintable() else None


async def _stream_task_events(request: web.Request, cursor: str | None) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    text = _OutputText()
    checked = time.monotonic()
    # the first answer before the response starts: an unknown task is a JSON 404 like any other
    answer = await call_master(request, "task_events", task_id, cursor, 0)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        while True:
            events, ended = _stream_events(answer, text)
            payload = b"".join(_sse(e) for e in events) or b": keep-alive\n\n"
            try:
                await asyncio.wait_for(response.write(payload), STREAM_WRITE_TIMEOUT)
            except TimeoutError:
                log.info("events of task %s: the client read nothing for %.0f s; stream closed", task_id,
                         STREAM_WRITE_TIMEOUT)
                if request.transport is not None:
                    request.transport.abort()
                break
            if ended:
                break
            cursor = answer["cursor"]
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            if time.monotonic() - checked >= STREAM_RECHECK:
                checked = time.monotonic()
                refusal = await revoked(request)
                if refusal is not None:
                    log.info("events of task %s: the token is no longer valid (%s); stream closed", task_id, refusal)
                    await _write_quietly(response, _sse({"id": cursor, "event": "error",
                                                         "data": {"error": refusal, "field": "authorization"}}))
                    break
            answer = await call_master(request, "task_events", task_id, cursor, STREAM_WAIT,
                                       timeout=STREAM_WAIT + RPC_WAIT_MARGIN)
    except ApiError as exc:  # the response has started: the error goes as an event, then the stream ends
        await _write_quietly(response, _sse({"id": cursor or "", "event": "error",
                                             "data": {"error": exc.message, "field": exc.field}}))
    except (ConnectionResetError, ConnectionError):
        log.debug("events of task %s: client gone", task_id)
    return response


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError:
        pass


@routes.post("/task/{task_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    summary = await call_master(request, "cancel_task", task_id, actor(request))
    log.info("task %s cancel requested over HTTP from %s", task_id, request.remote)
    return web.json_response(summary)


@routes.post("/task/{task_id}/retry")
async def retry(request: web.Request) -> web.Response:
    """``{"only": ["FAILED", "CANCELLED"]}`` (optional): the master makes the new task and checks the body."""
    task_id = request.match_info["task_id"]
    body = await read_json(request) if request.body_exists else None
    answer = await call_master(request, "retry_task", task_id, body, actor(request))
    log.info("task %s retried as %s over HTTP from %s", task_id, answer["task_id"], request.remote)
    return web.json_response(answer, status=201)


@routes.get("/tasks")
async def tasks(request: web.Request) -> web.Response:
    """Newest first; ``?state=&job=&agent=&schedule=&limit=&before=`` (before: a row's ``created``, for the next
    page)."""
    limit = query_int(request.query["limit"], "limit") if "limit" in request.query else None
    filters = {k: request.query[k] for k in ("state", "job", "agent", "schedule") if k in request.query}
    if "before" in request.query:
        filters["before"] = query_number(request.query["before"])
    return web.json_response(await call_master(request, "get_tasks", limit, filters))


@routes.get("/jobs")
async def jobs(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "jobs_list"))


@routes.post("/job/")
async def job_without_name(request: web.Request) -> web.Response:
    raise ApiError(400, "name: empty (POST /job/{name})", "name")


@routes.post("/job/{name}")
async def job_save(request: web.Request) -> web.Response:
    body = await read_json(request)
    saved = await call_master(request, "job_save", request.match_info["name"], body)
    return web.json_response(saved, status=201 if saved["created"] else 200)


def _job_view(job: dict) -> dict:
    return {**job, "script": decode_output(job["script"])}


@routes.get("/job/{name}")
async def job_get(request: web.Request) -> web.Response:
    return web.json_response(_job_view(await call_master(request, "job_get", request.match_info["name"])))


@routes.get("/job/{name}/versions")
async def job_versions(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "job_versions", request.match_info["name"]))


def _version(text: str, field: str) -> int:
    try:
        version = int(text)
    except (TypeError, ValueError):
        raise ApiError(400, f"{field}: expected a version number", field) from None
    wire_check(version, field)
    return version


@routes.get("/job/{name}/versions/{version}")
async def job_version(request: web.Request) -> web.Response:
    version = _version(request.match_info["version"], "version")
    return web.json_response(_job_view(await call_master(request, "job_get", request.match_info["name"], version)))


@routes.get("/job/{name}/diff")
async def job_diff(request: web.Request) -> web.Response:
    old = _version(request.query.get("from"), "from")
    new = _version(request.query.get("to"), "to")
    return web.json_response(await call_master(request, "job_diff", request.match_info["name"], old, new))


@routes.post("/job/{name}/rollback")
async def job_rollback(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "body: expected a JSON object with version", "body")
    saved = await call_master(request, "job_rollback", request.match_info["name"], body.get("version"))
    return web.json_response(saved, status=201 if saved["created"] else 200)


@routes.post("/job/{name}/run")
async def job_run(request: web.Request) -> web.Response:
    body = await read_json(request) if request.body_exists else {}
    return web.json_response(await call_master(request, "job_run", request.match_info["name"], body, actor(request)),
                             status=201)


@routes.post("/schedules")
async def schedule_create(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "schedule_create", await read_json(request)), status=201)


@routes.get("/schedules")
async def schedules_list(request: web.Request) -> web.Response:
    """``?job=NAME``: only that job's schedules."""
    return web.json_response(await call_master(request, "schedules_list", request.query.get("job")))


@routes.patch("/schedule/{schedule_id}")
async def schedule_update(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await call_master(request, "schedule_update", request.match_info["schedule_id"], body))


@routes.post("/tokens")
async def token_create(request: web.Request) -> web.Response:
    """A new API token: its secret is in this answer only."""
    made = await call_master(request, "token_create", await read_json(request), actor(request))
    return web.json_response(made, status=201)


@routes.get("/tokens")
async def tokens_list(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "tokens_list"))


@routes.get("/audit")
async def audit(request: web.Request) -> web.Response:
    """Newest first; ``?user=&action=&since=&limit=&before=`` (``before``: the seq the next page is older than)."""
    filters: dict = {k: request.query[k] for k in ("user", "action") if k in request.query}
    if "since" in request.query:
        filters["since"] = query_number(request.query["since"])
    for name in ("limit", "before"):
        if name in request.query:
            filters[name] = query_int(request.query[name], name)
    return web.json_response(await call_master(request, "audit_query", filters))


@routes.get("/whoami")
async def whoami(request: web.Request) -> web.Response:
    """Who this token is: ``{user, role, token_id, selector}`` (the console shows it)."""
    return web.json_response(request.get(IDENTITY) or {"user": None, "role": "admin", "token_id": None,
                                                       "selector": None})


@routes.get("/keys")
async def keys_list(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "keys_list"))


def _forward(method: str, param: str):
    """A route that hands its one path parameter to one master method and answers what that returns."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(await call_master(request, method, request.match_info[param]))

    handler.__name__ = method
    return handler


routes.post("/keys/{agent_id}/accept")(_forward("keys_accept", "agent_id"))
routes.post("/keys/{agent_id}/reject")(_forward("keys_reject", "agent_id"))
routes.delete("/keys/{agent_id}")(_forward("keys_delete", "agent_id"))
routes.get("/schedule/{schedule_id}")(_forward("schedule_get", "schedule_id"))
routes.delete("/tokens/{token_id}")(_forward("token_delete", "token_id"))
routes.delete("/schedule/{schedule_id}")(_forward("schedule_delete", "schedule_id"))


def _keys_many(method: str, *args: str):
    """A route that hands its JSON body (``{"agent_ids": [...]}`` or ``{"all_pending": true}``) to the master,
    which checks it and answers one result per id."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(await call_master(request, method, *args, await read_json(request)))

    handler.__name__ = f"{method}_{'_'.join(args)}".rstrip("_")
    return handler


routes.post("/keys/accept")(_keys_many("keys_decide_many", "accept"))
routes.post("/keys/reject")(_keys_many("keys_decide_many", "reject"))
routes.post("/keys/delete")(_keys_many("keys_delete_many"))


@routes.get("/groups")
async def groups(request: web.Request) -> web.Response:
    return web.json_response(await call_master(request, "groups_list"))


@routes.put("/group/{name}")
async def group_put(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await call_master(request, "group_put", request.match_info["name"], body))


routes.get("/group/{name}")(_forward("group_get", "name"))
routes.delete("/group/{name}")(_forward("group_delete", "name"))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: the web tier's own, then the master's (its admin RPC ``metrics``), behind the token
    like every route (a scraper sends it as a bearer token). A master that does not answer leaves its part out
    and sets ``mschedule_web_master_up`` to 0: the scrape itself still succeeds."""
    bridge, own = request.app[BRIDGE], request.app[METRICS]
    master = ""
    try:
        master = await bridge.call("metrics")
    except zerorpc.RemoteError as exc:
        log.error("master error on metrics: %s: %s", exc.name, exc.msg)
    except TRANSPORT_ERRORS as exc:
        log.info("metrics: master unreachable at %s (%s)", bridge.endpoint, type(exc).__name__)
    own.master_up.set(1 if master else 0)
    return web.Response(body=(own.text() + master).encode(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def build_app(bridge: MasterBridge, max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES,
              tokens: TokenFile | frozenset[str] = frozenset()) -> web.Application:
    """The HTTP API; no tokens means no authentication (--insecure only)."""
    # a JSON-escaped script can be up to ~2x its size (\n, \", unicode escapes)
    app = web.Application(middlewares=[measure, access, json_errors],
                          client_max_size=max_script_bytes * 2 + 65536)
    app[BRIDGE] = bridge
    app[METRICS] = WebMetrics()
    app[MAX_SCRIPT_BYTES] = max_script_bytes
    app[STREAMS] = {"open": 0}
    app[TOKENS] = tokens if isinstance(tokens, TokenFile) else TokenFile(tokens=frozenset(tokens))
    app.add_routes(routes)
    return app
