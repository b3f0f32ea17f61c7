"""The OpenAPI 3 description of the HTTP API, served at /openapi.json (a test keeps it true to the routes).

The ranges are the master's (its defaults: ``--max-targets`` and ``--max-result-bytes`` may change them).
"""
from __future__ import annotations

from mschedule.utils.defaults import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MAX_TARGETS,
    DEFAULT_TASK_LIST,
    MAX_FAIL_RATE,
    MAX_RESULT_WAIT,
    MAX_TASK_LIST,
    MAX_TIME,
    MAX_TIMEOUT,
)

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERRORS = {"400": _ERROR, "401": _ERROR, "404": _ERROR, "503": _ERROR}


def _json(ref: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _op(summary: str, ok: dict, status: str = "200", body: str | None = None, params: list | None = None) -> dict:
    op: dict = {"summary": summary, "responses": {status: ok, **_ERRORS}}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": body}}}}
    if params:
        op["parameters"] = params
    return op


_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                    "description": "1 to 128 printable ASCII characters: the same request sent again with the same "
                                   "key answers the task it made (a 409 for another request)",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128}}

_WAIT_SCHEMA = {"type": "number", "minimum": 0, "maximum": int(MAX_RESULT_WAIT), "default": 0}
_OUTPUT_LIMIT_SCHEMA = {"type": "integer", "minimum": 0, "maximum": DEFAULT_MAX_RESULT_BYTES,
                        "description": "at most the master's --max-result-bytes"}
_WAIT = {"name": "wait", "in": "query", "required": False,
         "description": f"seconds (0 to {MAX_RESULT_WAIT:g}) to wait for the task to finish before answering",
         "schema": _WAIT_SCHEMA}
_OUTPUT_LIMIT = {"name": "output_limit", "in": "query", "required": False,
                 "description": "keep only the last this many bytes of each output (output_omitted says how many "
                                "were left out; GET /task/{task_id}/target/{agent_id} gives one output whole); "
                                "at most the master's --max-result-bytes",
                 "schema": _OUTPUT_LIMIT_SCHEMA}
_TEXT = "UTF-8 text (a lone surrogate such as \\ud800 is a 400)"
#: a task's parameters, also a job's defaults and a run's overrides
_TASK_PARAMS = {
    "targets": {"type": "array", "items": {"type": "string"}, "maxItems": DEFAULT_MAX_TARGETS,
                "description": "agent ids, or hostnames that each name one agent; with selector, the union of both; "
                               "at most the master's --max-targets"},
    "selector": {"$ref": "#/components/schemas/Selector"},
    "batch_by": {"type": "string", "description": "roll out one value of this label at a time"},
    "batch_order": {"type": "array", "items": {"type": "string"}, "maxItems": DEFAULT_MAX_TARGETS},
    "timeout": {"type": "number", "minimum": 0, "maximum": MAX_TIMEOUT, "default": 0,
                "description": f"seconds, at most {MAX_TIMEOUT} (7 days); 0 = none"},
    "parallel": {"type": "integer", "minimum": 1, "maximum": DEFAULT_MAX_TARGETS, "default": 1,
                 "description": "at most the master's --max-targets"},
    "fail_rate": {"type": "number", "minimum": 0, "maximum": MAX_FAIL_RATE, "default": 0,
                  "description": "percent of the targets"},
    "fail_count": {"type": "integer", "minimum": -1, "maximum": DEFAULT_MAX_TARGETS, "default": -1,
                   "description": "-1 = no count limit; at most the master's --max-targets"},
    "notify": {"type": "array", "maxItems": 10, "items": {"$ref": "#/components/schemas/Notify"},
               "description": "webhooks called when the task ends (docs/notifications.md)"},
}
_ENV = {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 32768},
        "description": "environment variables of the script: names [A-Z_][A-Z0-9_]*, not MSCHEDULE_*; values "
                       "text without NUL (an integer is taken as its decimal text), 64 KiB together"}
_MASKED_ENV = {"type": "object", "additionalProperties": {"type": "string"},
               "description": "as the script got them, a secret's value shown as ***"}
_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
_AGENT_ID = {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_SCHEDULE_ID = {"name": "schedule_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SCHEDULE_FIELDS = {
    "version": {"type": "integer", "nullable": True, "description": "null: the job's latest at each firing"},
    "cron": {"type": "string", "description": "five fields, or @hourly, @daily, @midnight, @weekly, @monthly, "
                                              "@yearly (cronsim, as Debian's cron across DST changes)"},
    "timezone": {"type": "string", "default": "UTC", "description": "an IANA name (zoneinfo)"},
    "targets": {"type": "array", "items": {"type": "string"}, "description": "default: the job's"},
    "selector": {"$ref": "#/components/schemas/Selector"},
    "params": {"type": "object", "additionalProperties": {"type": "string"},
               "description": "values of the job's parameters (a secret is answered as ***, and *** sent back "
                              "keeps its value)"},
    "overlap": {"type": "string", "enum": ["skip", "queue", "allow"], "default": "skip"},
    "catchup": {"type": "string", "enum": ["none", "last"], "default": "none"},
    "enabled": {"type": "boolean", "default": True},
    "notify": {"type": "array", "items": {"$ref": "#/components/schemas/Notify"},
               "description": "added to the job's own"},
    "description": {"type": "string", "maxLength": 1000},
}
_KEYS_MANY_OK = {"description": "one result per id (an unknown id fails alone; the others are done)",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyResults"}}}}
_KEY_SELECTION = "#/components/schemas/KeySelection"
_STATE = {"type": "string", "enum": ["WAITING", "RUNNING", "SUCCEED", "FAILED", "CANCELLED"]}

OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {"title": "mschedule", "version": "1",
             "description": "Run a shell script on many hosts. Every route but this document and the console's "
                            "files (/, /static/*) needs "
                            "'Authorization: Bearer <token>'."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "field"], "properties": {
                "error": {"type": "string", "description": "what is wrong, starting with the field's name"},
                "field": {"type": "string", "nullable": True,
                          "description": "the request field the error is about: a body member "
                                         "(selector.labels, targets[2]), or a path or query parameter "
                                         "(task_id, agent_id, name, version, wait); null when it is about the "
                                         "request as a whole (an unknown route, a wrong token)"}}},
            "TaskRequest": {
                "type": "object", "required": ["script"], "additionalProperties": False,
                "description": "every number outside its range, NaN, Infinity or a boolean is a 400 naming the "
                               f"field; every string is {_TEXT}",
                "properties": {
                    "script": {"type": "string", "description": "script, run with its #! interpreter, else /bin/sh; "
                                                                "CRLF line endings throughout become LF"},
                    **_TASK_PARAMS,
                    "env": _ENV,
                },
            },
            "TokenRequest": {"type": "object", "required": ["user", "role"], "additionalProperties": False,
                             "properties": {
                                 "user": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"},
                                 "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
                                 "expires_in": {"type": "number", "minimum": 1, "description": "seconds"},
                                 "selector": {"$ref": "#/components/schemas/Selector"}}},
            "ScheduleRequest": {"type": "object", "required": ["job", "cron"], "additionalProperties": False,
                                "properties": {"job": {"type": "string"}, **_SCHEDULE_FIELDS}},
            "ScheduleChange": {"type": "object", "additionalProperties": False, "properties": _SCHEDULE_FIELDS},
            "ScheduleId": {"type": "object", "required": ["schedule_id"],
                           "properties": {"schedule_id": {"type": "string"}}},
            "Schedule": {"type": "object", "properties": {
                "schedule_id": {"type": "string"}, "job": {"type": "string"}, **_SCHEDULE_FIELDS,
                "created": {"type": "number"},
                "next_run": {"type": "number", "nullable": True},
                "next_run_local": {"type": "string", "nullable": True},
                "last_tick": {"type": "number", "nullable": True,
                              "description": "the newest tick dealt with: fired, skipped or missed"},
                "queued_tick": {"type": "number", "nullable": True},
                "last_task_id": {"type": "string", "nullable": True}, "last_state": {**_STATE, "nullable": True},
                "fired": {"type": "integer"}, "skipped": {"type": "integer"}, "missed": {"type": "integer"},
                "next_runs": {"type": "array", "items": {"type": "string"},
                              "description": "GET /schedule/{id}: the next five, ISO 8601 in its time zone"},
                "runs": {"type": "array", "items": {"type": "object"}, "description": "{tick, task_id, state}"},
                "skips": {"type": "array", "items": {"type": "object"},
                          "description": "{tick, reason: overlap | missed | error: ..., count}"}}},
            "ScheduleList": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}},
            "Notify": {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
                "url": {"type": "string", "maxLength": 2048, "description": "http:// or https://"},
                "on": {"type": "array", "minItems": 1,
                       "items": {"type": "string", "enum": ["FAILED", "SUCCEED", "CANCELLED"]},
                       "default": ["CANCELLED", "FAILED", "SUCCEED"]}}},
            "Notification": {"type": "object", "properties": {
                "url": {"type": "string"}, "on": {"type": "array", "items": {"type": "string"}},
                "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                "attempts": {"type": "integer"}, "last_status": {"type": "integer", "nullable": True},
                "last_error": {"type": "string", "nullable": True},
                "next_attempt": {"type": "number", "nullable": True}}},
            "ParamDeclaration": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                "name": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}, "description": {"type": "string"},
                "default": {"type": "string", "description": "none for a secret"},
                "required": {"type": "boolean", "default": False},
                "choices": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                "pattern": {"type": "string", "description": "the whole value must match (Python re)"},
                "secret": {"type": "boolean", "default": False,
                           "description": "never shown, nor stored once the task ended; *** in the output"}}},
            "RetryRequest": {"type": "object", "properties": {"only": {
                "type": "array", "minItems": 1, "items": {"type": "string", "enum": ["FAILED", "CANCELLED"]},
                "default": ["FAILED", "CANCELLED"], "description": "the states of the targets to run again"},
                "params": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "the value of each secret of the task, given again"}}},
            "Retried": {"type": "object", "required": ["task_id", "retry_of", "targets"], "properties": {
                "task_id": {"type": "string"}, "retry_of": {"type": "string"},
                "targets": {"type": "array", "items": {"type": "string"}}}},
            "TaskId": {"type": "object", "required": ["task_id"], "properties": {"task_id": {"type": "string"}}},
            "ResultQuery": {"type": "object", "required": ["task_id"], "properties": {
                "task_id": {"type": "string"}, "wait": _WAIT_SCHEMA, "output_limit": _OUTPUT_LIMIT_SCHEMA}},
            "TaskSummary": {"type": "object", "properties": {
                "task_id": {"type": "string"}, "state": _STATE, "parallel": {"type": "integer"},
                "fail_rate": {"type": "number"}, "fail_count": {"type": "integer"}, "timeout": {"type": "number"},
                "created": {"type": "number"}, "started": {"type": "number", "nullable": True},
                "finished": {"type": "number", "nullable": True}, "total": {"type": "integer"},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "retry_of": {"type": "string", "nullable": True, "description": "the task this one retries"},
                "job": {"type": "string", "nullable": True}, "job_version": {"type": "integer", "nullable": True},
                "env": _MASKED_ENV, "secrets": {"type": "array", "items": {"type": "string"}},
                "params": {**_MASKED_ENV, "description": "the job parameters it ran with (secrets ***)"},
                "schedule_id": {"type": "string", "nullable": True},
                "schedule_tick": {"type": "number", "nullable": True, "description": "the tick it was fired for"},
                "notify": {"type": "array", "items": {"$ref": "#/components/schemas/Notify"}},
                "notifications": {"type": "array", "items": {"$ref": "#/components/schemas/Notification"}}}},
            "Task": {"allOf": [{"$ref": "#/components/schemas/TaskSummary"}, {"type": "object", "properties": {
                "script": {"type": "string"},
                "output_limit": {"type": "integer", "nullable": True,
                                 "description": "bytes kept of each output's tail, or null: whole outputs"},
                "targets": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Target"}}}}]},
            "Target": {"type": "object", "properties": {
                "hostname": {"type": "string", "nullable": True}, "state": _STATE,
                "code": {"type": "integer", "nullable": True}, "output": {"type": "string"},
                "started": {"type": "number", "nullable": True}, "finished": {"type": "number", "nullable": True},
                "timed_out": {"type": "boolean"}, "truncated": {"type": "boolean"},
                "output_bytes": {"type": "integer", "description": "size of the whole output"},
                "output_omitted": {"type": "integer", "description": "bytes left out by output_limit"},
                "partial": {"type": "boolean", "description": "true while the target runs: the output so far (the last "
                                                              "64 KiB the master received)"}}},
            "TargetResult": {"allOf": [{"$ref": "#/components/schemas/Target"}, {"type": "object", "properties": {
                "task_id": {"type": "string"}, "agent_id": {"type": "string"}}}]},
            "TaskList": {"type": "array", "items": {"$ref": "#/components/schemas/TaskSummary"}},
            "Agents": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "hostname": {"type": "string"}, "ip": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "online": {"type": "boolean"}, "busy": {"type": "boolean"},
                "running": {"type": "string", "nullable": True}, "heartbeat": {"type": "number"},
                "heartbeat_age": {"type": "number", "description": "seconds since the last heartbeat"},
                "registered": {"type": "number"}}}},
            "Key": {"type": "object", "properties": {
                "agent_id": {"type": "string"}, "key": {"type": "string"},
                "state": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
                "hostname": {"type": "string"}, "ip": {"type": "array", "items": {"type": "string"}},
                "first_seen": {"type": "number"}, "decided": {"type": "number", "nullable": True}}},
            "KeyList": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}},
            "KeySelection": {"type": "object", "additionalProperties": False, "properties": {
                "agent_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 10000},
                "all_pending": {"type": "boolean", "enum": [True],
                                "description": "every pending key, instead of agent_ids (accept and reject only)"}}},
            "KeyResults": {"type": "object", "properties": {
                "done": {"type": "integer"}, "failed": {"type": "integer"},
                "results": {"type": "array", "items": {"type": "object", "properties": {
                    "agent_id": {"type": "string"}, "ok": {"type": "boolean"},
                    "state": {"type": "string", "enum": ["accepted", "rejected"]}, "deleted": {"type": "boolean"},
                    "error": {"type": "string", "description": "why this id failed (e.g. no key for it)"}}}}}},
            "Any": {"type": "object"},
            "Selector": {"type": "object", "additionalProperties": False, "properties": {
                "hostname": {"type": "string", "description": "glob, e.g. web-*"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "group": {"type": "string"}}},
            "Group": {"type": "object", "properties": {
                "name": {"type": "string"}, "selector": {"$ref": "#/components/schemas/Selector"},
                "targets": {"type": "array", "items": {"type": "string"}},
                "members": {"type": "array", "items": {"type": "string"}}}},
            "Job": {"type": "object", "required": ["script"], "description": "the task's ranges hold", "properties": {
                "script": {"type": "string"}, "message": {"type": "string"}, **_TASK_PARAMS,
                "params": {"type": "array", "maxItems": 64, "items": {"$ref": "#/components/schemas/ParamDeclaration"},
                           "description": "the parameters a run gives, as environment variables of their names"}}},
            "GroupList": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/": {"get": {"summary": "the web console (HTML)", "security": [],
                      "responses": {"200": {"description": "the console's page",
                                            "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/static/{name}": {"get": {
            "summary": "the console's script and style sheet", "security": [], "parameters": [_NAME],
            "responses": {"200": {"description": "the file", "content": {"text/css": {"schema": {"type": "string"}},
                                  "application/javascript": {"schema": {"type": "string"}}}}, "404": _ERROR}}},
        "/api": {"get": _op("what this service is and its routes", _json("#/components/schemas/Any"))},
        "/health": {"get": _op("the web tier and the master answer", _json("#/components/schemas/Any"))},
        "/openapi.json": {"get": {**_op("this document", _json("#/components/schemas/Any")), "security": []}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics of the web tier and the master",
            "description": "The web tier's (mschedule_web_*) then the master's (mschedule_master_*), in the text "
                           "exposition format 0.0.4 (docs/metrics.md); a master that does not answer leaves its "
                           "part out and mschedule_web_master_up at 0. A scraper sends the API token as a bearer "
                           "token.",
            "responses": {"200": {"description": "the metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": _ERROR}}},
        "/task/targets": {"get": _op("every known agent, or those matching the filters",
                                     _json("#/components/schemas/Agents"), params=[
            {"name": "hostname", "in": "query", "schema": {"type": "string"}, "description": "glob"},
            {"name": "label", "in": "query", "schema": {"type": "string"}, "description": "key:value, repeatable"}])},
        "/groups": {"get": _op("named groups of agents", _json("#/components/schemas/GroupList"))},
        "/group/{name}": {
            "put": _op("create or replace a group", _json("#/components/schemas/Group"), params=[_NAME],
                       body="#/components/schemas/Group"),
            "get": _op("one group with its current members", _json("#/components/schemas/Group"), params=[_NAME]),
            "delete": _op("delete a group", _json("#/components/schemas/Any"), params=[_NAME]),
        },
        "/task": {"post": _op("submit a task", _json("#/components/schemas/TaskId", "created"), "201",
                              "#/components/schemas/TaskRequest", params=[_IDEMPOTENCY_KEY])},
        "/result": {"post": _op("one task with every target's result", _json("#/components/schemas/Task"),
                                body="#/components/schemas/ResultQuery", params=[_WAIT, _OUTPUT_LIMIT])},
        "/task/{task_id}": {"get": _op("one task with every target's result", _json("#/components/schemas/Task"),
                                       params=[_TASK_ID, _WAIT, _OUTPUT_LIMIT])},
        "/task/{task_id}/target/{agent_id}": {"get": _op(
            "one target of a task, with its whole output (so far, partial, while it runs)",
            _json("#/components/schemas/TargetResult"),
            params=[_TASK_ID, _AGENT_ID])},
        "/task/{task_id}/events": {"get": {
            "summary": "server-sent events of a task: snapshot, target, output, task, then end (docs/api.md)",
            "parameters": [_TASK_ID, {"name": "Last-Event-ID", "in": "header", "required": False,
                                      "description": "resume after this event (a fresh snapshot if it is too old)",
                                      "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "409": _ERROR, **_ERRORS}}},
        "/task/{task_id}/cancel": {"post": {**_op(
            "cancel a task: waiting targets never start, running scripts are killed",
            _json("#/components/schemas/TaskSummary"), params=[_TASK_ID]),
            "responses": {"200": _json("#/components/schemas/TaskSummary"), "409": _ERROR, **_ERRORS}}},
        "/task/{task_id}/retry": {"post": {**_op(
            "a new task with the same script and parameters on the targets that ended FAILED and/or CANCELLED",
            _json("#/components/schemas/Retried", "created"), "201", params=[_TASK_ID, _IDEMPOTENCY_KEY]),
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/RetryRequest"}}}},
            "responses": {"201": _json("#/components/schemas/Retried", "created"), "409": _ERROR, **_ERRORS}}},
        "/tasks": {"get": _op("recent tasks, newest first", _json("#/components/schemas/TaskList"), params=[
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_LIST, "default": DEFAULT_TASK_LIST}},
            {"name": "state", "in": "query", "schema": _STATE},
            {"name": "job", "in": "query", "schema": {"type": "string"}},
            {"name": "agent", "in": "query", "schema": {"type": "string"}},
            {"name": "schedule", "in": "query", "schema": {"type": "string"},
             "description": "only the tasks this schedule fired"},
            {"name": "before", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": MAX_TIME},
             "description": "created time (Unix seconds) of the last row of the previous page"}])},
        "/job/": {"post": {"summary": "an empty job name: always 400", "responses": {"400": _ERROR}}},
        "/healthz": {"get": {"summary": "up or down, without a token (for load balancers and systemd): 200 when the "
                                        "web tier and both master endpoints answer, 503 otherwise",
                             "security": [],
                             "responses": {"200": _json("#/components/schemas/Any"),
                                           "503": _json("#/components/schemas/Any")}}},
        "/tokens": {
            "post": _op("a new API token of a user with a role (admin): its secret is in this answer only",
                        _json("#/components/schemas/Any", "created"), "201", "#/components/schemas/TokenRequest"),
            "get": _op("every token (admin): id, user, role, created, expires, last used; never the secret",
                       _json("#/components/schemas/Any"))},
        "/tokens/{token_id}": {"delete": _op("revoke a token (admin): refused from the next request on",
                                             _json("#/components/schemas/Any"), params=[
                                                 {"name": "token_id", "in": "path", "required": True,
                                                  "schema": {"type": "string"}}])},
        "/audit": {"get": _op("the audit trail, newest first (admin)", _json("#/components/schemas/Any"), params=[
            {"name": "user", "in": "query", "schema": {"type": "string"}},
            {"name": "action", "in": "query", "schema": {"type": "string"}},
            {"name": "since", "in": "query", "schema": {"type": "number"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "before", "in": "query", "description": "the next page: records older than this seq",
             "schema": {"type": "integer", "minimum": 1}}])},
        "/whoami": {"get": _op("who this token is: user, role, token_id, selector", _json("#/components/schemas/Any"))},
        "/schedules": {
            "post": _op("schedule a job's runs on a cron expression",
                        _json("#/components/schemas/ScheduleId", "created"), "201",
                        "#/components/schemas/ScheduleRequest"),
            "get": _op("every schedule (?job=: one job's)", _json("#/components/schemas/ScheduleList"), params=[
                {"name": "job", "in": "query", "required": False, "schema": {"type": "string"}}])},
        "/schedule/{schedule_id}": {
            "get": _op("one schedule with its next five runs, its last runs and skips",
                       _json("#/components/schemas/Schedule"), params=[_SCHEDULE_ID]),
            "patch": _op("change a schedule (enabled: false disables it)", _json("#/components/schemas/Schedule"),
                         body="#/components/schemas/ScheduleChange", params=[_SCHEDULE_ID]),
            "delete": _op("delete a schedule (the tasks it fired stay)", _json("#/components/schemas/Any"),
                          params=[_SCHEDULE_ID])},
        "/jobs": {"get": _op("jobs, with their latest version", _json("#/components/schemas/Any"))},
        "/job/{name}": {
            "post": {**_op("save a new version (201; an identical save makes none: 200)",
                           _json("#/components/schemas/Any"), "201", "#/components/schemas/Job", params=[_NAME]),
                     "responses": {"201": _json("#/components/schemas/Any"), "200": _json("#/components/schemas/Any"),
                                   **_ERRORS}},
            "get": _op("the latest version", _json("#/components/schemas/Job"), params=[_NAME])},
        "/job/{name}/versions": {"get": _op("every version, oldest first", _json("#/components/schemas/Any"),
                                            params=[_NAME])},
        "/job/{name}/versions/{version}": {"get": _op("one version", _json("#/components/schemas/Job"), params=[
            _NAME, {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}])},
        "/job/{name}/diff": {"get": _op("unified diff of two versions' scripts and their changed parameters",
                                        _json("#/components/schemas/Any"), params=[
            _NAME, {"name": "from", "in": "query", "required": True, "schema": {"type": "integer"}},
            {"name": "to", "in": "query", "required": True, "schema": {"type": "integer"}}])},
        "/job/{name}/rollback": {"post": _op("a new version equal to an old one", _json("#/components/schemas/Any"),
                                             "201", "#/components/schemas/Any", params=[_NAME])},
        "/job/{name}/run": {"post": _op("start a task from a version (latest by default), with overrides",
                                        _json("#/components/schemas/TaskId", "created"), "201",
                                        "#/components/schemas/Any", params=[_NAME, _IDEMPOTENCY_KEY])},
        "/keys": {"get": _op("agent keys and their admission state", _json("#/components/schemas/KeyList"))},
        "/keys/{agent_id}/accept": {"post": _op("accept an agent's key", _json("#/components/schemas/Key"),
                                                params=[_AGENT_ID])},
        "/keys/{agent_id}/reject": {"post": _op("reject an agent's key: it stops working at once",
                                                _json("#/components/schemas/Key"), params=[_AGENT_ID])},
        "/keys/{agent_id}": {"delete": _op("forget an agent's key", _json("#/components/schemas/Any"),
                                           params=[_AGENT_ID])},
        "/keys/accept": {"post": _op("accept several keys in one commit: agent_ids, or all_pending",
                                     _KEYS_MANY_OK, body=_KEY_SELECTION)},
        "/keys/reject": {"post": _op("reject several keys in one commit: agent_ids, or all_pending",
                                     _KEYS_MANY_OK, body=_KEY_SELECTION)},
        "/keys/delete": {"post": _op("forget several keys in one commit (agent_ids)",
                                     _KEYS_MANY_OK, body=_KEY_SELECTION)},
    },
}
