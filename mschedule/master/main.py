"""mschedule master: ``python appserver.py``; agent keys: ``python appserver.py keys list|accept|reject|delete``
(accept, reject and delete take several agent ids, or ``--all-pending`` for accept and reject); API tokens:
``python appserver.py tokens list|create|delete``; a database into another (SQLite to PostgreSQL and back):
``python appserver.py db copy SOURCE --db TARGET``."""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from typing import Any

import gevent

from mschedule import __version__
from mschedule.master import MasterKeys, MasterServer
from mschedule.master.leadership import EXIT_NOT_LEADING, Leadership
from mschedule.master.migrations import SchemaRefused
from mschedule.master.notifications import DEFAULT_RETRY_BASE, DEFAULT_RETRY_FOR
from mschedule.master.schedules import DEFAULT_GRACE, ScheduleClock
from mschedule.master.server import BindError, MasterSettings, ServingLoopDied
from mschedule.master.sql_storage import SQLStorage, open_storage
from mschedule.master.storage import StorageError
from mschedule.transport.guard import exit_unless_pinned
from mschedule.utils.config import add_logging_flags, env, fail, flag, new_parser, start_logging
from mschedule.utils.defaults import (
    DEFAULT_ADMIN_BIND,
    DEFAULT_AGENT_TIMEOUT,
    DEFAULT_BIND,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEASE,
    DEFAULT_MAX_HEARTBEAT_RATE,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MAX_SCRIPT_BYTES,
    DEFAULT_MAX_TARGETS,
)
from mschedule.utils.statedir import StateDirError, resolve_state_dir

KEY_ACTIONS = ("list", "accept", "reject", "delete")

SECONDS_FLAGS = ("agent_timeout", "heartbeat_interval", "max_heartbeat_rate", "keep_days", "schedule_grace",
                 "webhook_retry_base", "webhook_retry_for", "keep_audit_days", "leader_lease", "expires_in")
"""The master's float flags (seconds, days, a rate): each must be a finite number."""

MAX_LEASE = 86400.0
"""The longest --leader-lease (a day): a frozen leader holds off every standby that long."""


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule master: keeps agents and tasks, hands tasks to agents.")
    parser.add_argument("--version", action="version", version=f"mschedule-master {__version__}")
    parser.add_argument("--bind", default=env("BIND", DEFAULT_BIND),
                        help="agents' endpoint(s), comma separated [MSCHEDULE_BIND]")
    parser.add_argument("--admin-bind", default=env("ADMIN_BIND", DEFAULT_ADMIN_BIND),
                        help="admin endpoint(s) for the web tier and 'keys', comma separated [MSCHEDULE_ADMIN_BIND]")
    parser.add_argument("--agent-timeout", type=float, default=env("AGENT_TIMEOUT", DEFAULT_AGENT_TIMEOUT, float),
                        help="seconds without heartbeat before an agent is offline [MSCHEDULE_AGENT_TIMEOUT]")
    parser.add_argument("--heartbeat-interval", type=float,
                        default=env("HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL, float),
                        help="seconds between two heartbeats of each agent in a small fleet; agents are told it "
                             "[MSCHEDULE_HEARTBEAT_INTERVAL]")
    parser.add_argument("--max-heartbeat-rate", type=float,
                        default=env("MAX_HEARTBEAT_RATE", DEFAULT_MAX_HEARTBEAT_RATE, float),
                        help="most heartbeats per second from the whole fleet: beyond it agents are told a longer "
                             "interval and --agent-timeout stretches with it [MSCHEDULE_MAX_HEARTBEAT_RATE]")
    parser.add_argument("--state-dir", default=env("STATE_DIR", None),
                        help="where master.db and keys/ live (default /var/lib/mschedule, or ~/.mschedule when "
                             "that is not writable) [MSCHEDULE_STATE_DIR]")
    parser.add_argument("--db", default=env("DB", None),
                        help="SQLite file (default <state-dir>/master.db); ':memory:' keeps nothing across "
                             "restarts; postgresql://USER@HOST:PORT/DBNAME is shared by several masters, one "
                             "leading and the others standing by (docs/ha.md) [MSCHEDULE_DB]")
    parser.add_argument("--leader-lease", type=float, default=env("LEADER_LEASE", DEFAULT_LEASE, float),
                        help="with PostgreSQL: seconds a leader may go without a round trip to the database "
                             "before it stops serving, and after which PostgreSQL ends its silent session so a "
                             "standby takes over [MSCHEDULE_LEADER_LEASE]")
    parser.add_argument("--max-script-bytes", type=int,
                        default=env("MAX_SCRIPT_BYTES", DEFAULT_MAX_SCRIPT_BYTES, int),
                        help="largest script accepted [MSCHEDULE_MAX_SCRIPT_BYTES]")
    parser.add_argument("--max-result-bytes", type=int,
                        default=env("MAX_RESULT_BYTES", DEFAULT_MAX_RESULT_BYTES, int),
                        help="most output bytes in one task's answer; above it each output keeps its tail "
                             "[MSCHEDULE_MAX_RESULT_BYTES]")
    parser.add_argument("--max-targets", type=int, default=env("MAX_TARGETS", DEFAULT_MAX_TARGETS, int),
                        help="most targets in one task (and in a group); also the largest parallel and "
                             "fail_count [MSCHEDULE_MAX_TARGETS]")
    parser.add_argument("--keep-tasks", type=int, default=env("KEEP_TASKS", None, int),
                        help="keep at most this many tasks; older finished ones (and their outputs) are pruned "
                             "[MSCHEDULE_KEEP_TASKS]")
    parser.add_argument("--keep-days", type=float, default=env("KEEP_DAYS", None, float),
                        help="prune finished tasks older than this many days [MSCHEDULE_KEEP_DAYS]")
    parser.add_argument("--schedule-grace", type=float, default=env("SCHEDULE_GRACE", DEFAULT_GRACE, float),
                        help="seconds: a schedule with catchup 'last' fires its newest missed tick (master down, "
                             "stopped, clock jump) once if it is at most this old [MSCHEDULE_SCHEDULE_GRACE]")
    parser.add_argument("--schedule-clock", default=env("SCHEDULE_CLOCK", None), help=argparse.SUPPRESS)
    parser.add_argument("--webhook-secret-file", default=env("WEBHOOK_SECRET_FILE", None),
                        help="the secret that signs webhook bodies (X-Mschedule-Signature); created if missing "
                             "(default <state-dir>/webhook.secret) [MSCHEDULE_WEBHOOK_SECRET_FILE]")
    parser.add_argument("--public-url", default=env("PUBLIC_URL", None),
                        help="the web console's address, for the task links in webhook bodies, e.g. "
                             "https://mschedule.example.com [MSCHEDULE_PUBLIC_URL]")
    parser.add_argument("--webhook-retry-base", type=float,
                        default=env("WEBHOOK_RETRY_BASE", DEFAULT_RETRY_BASE, float),
                        help="seconds before a failed webhook's first retry; each next one waits twice as long, "
                             "at most 10 minutes [MSCHEDULE_WEBHOOK_RETRY_BASE]")
    parser.add_argument("--webhook-retry-for", type=float, default=env("WEBHOOK_RETRY_FOR", DEFAULT_RETRY_FOR, float),
                        help="seconds after its first attempt that a webhook is given up [MSCHEDULE_WEBHOOK_RETRY_FOR]")
    parser.add_argument("--audit-log", default=env("AUDIT_LOG", None),
                        help="also append every audit record to this file as a JSON line, for a SIEM "
                             "[MSCHEDULE_AUDIT_LOG]")
    parser.add_argument("--keep-audit-days", type=float, default=env("KEEP_AUDIT_DAYS", None, float),
                        help="prune audit records older than this many days (default: keep all; task retention "
                             "never prunes them) [MSCHEDULE_KEEP_AUDIT_DAYS]")
    parser.add_argument("--user", help="with 'tokens create': the token's user")
    parser.add_argument("--role", choices=("viewer", "operator", "admin"), help="with 'tokens create': its role")
    parser.add_argument("--expires-in", type=float, help="with 'tokens create': seconds until it expires")
    parser.add_argument("--auto-accept", action="store_true", default=env("AUTO_ACCEPT", False, flag),
                        help="accept every new agent key at once (labs only) [MSCHEDULE_AUTO_ACCEPT]")
    parser.add_argument("--max-pending", type=int, default=env("MAX_PENDING", DEFAULT_MAX_PENDING, int),
                        help="most agent keys waiting for a decision; a new key beyond it is refused until some "
                             "are accepted, rejected or deleted [MSCHEDULE_MAX_PENDING]")
    parser.add_argument("--insecure", action="store_true", default=env("INSECURE", False, flag),
                        help="plain TCP, no keys: for local experiments only [MSCHEDULE_INSECURE]")
    parser.add_argument("command", nargs="*", metavar="keys|tokens|db ACTION [ID ...]",
                        help="manage agent keys on a running master: keys list | keys accept|reject|delete ID "
                             "[ID ...] | keys accept|reject --all-pending; API tokens: tokens list | tokens create "
                             "--user NAME --role ROLE [--expires-in S] | tokens delete TOKEN_ID; with every master "
                             "stopped: db copy SOURCE copies the database SOURCE into --db, which must be empty "
                             "(SQLite to PostgreSQL and back)")
    parser.add_argument("--all-pending", action="store_true",
                        help="with 'keys accept' or 'keys reject': every key waiting for a decision")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    for name in SECONDS_FLAGS:  # NaN passes every comparison below (all are false); inf: timers that never fire
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            parser.error(f"--{name.replace('_', '-')}: expected a finite number, got {value}")
    if args.agent_timeout <= 0 or args.heartbeat_interval <= 0 or args.max_heartbeat_rate <= 0:
        parser.error("--agent-timeout, --heartbeat-interval and --max-heartbeat-rate must be > 0")
    if args.agent_timeout < 2 * args.heartbeat_interval:
        parser.error("--agent-timeout must be at least twice --heartbeat-interval (two missed heartbeats)")
    if args.max_result_bytes < 1 or args.max_targets < 1:
        parser.error("--max-result-bytes and --max-targets must be >= 1")
    if args.max_pending < 0:
        parser.error("--max-pending must be >= 0")
    if (args.keep_tasks is not None and args.keep_tasks < 1) or (args.keep_days is not None and args.keep_days <= 0):
        parser.error("--keep-tasks must be >= 1 and --keep-days > 0")
    if args.webhook_retry_base <= 0 or args.webhook_retry_for < 0:
        parser.error("--webhook-retry-base must be > 0 and --webhook-retry-for >= 0")
    if args.public_url is not None and not args.public_url.startswith(("http://", "https://")):
        parser.error("--public-url: expected an http:// or https:// address")
    if not 2 <= args.leader_lease <= MAX_LEASE:  # NaN too; PostgreSQL takes its timeouts in int milliseconds
        parser.error(f"--leader-lease must be between 2 and {MAX_LEASE:g} seconds")
    if args.schedule_grace < 0:
        parser.error("--schedule-grace must be >= 0")
    try:
        ScheduleClock.parse(args.schedule_clock)
    except ValueError:
        parser.error("--schedule-clock: expected START:SPEED (Unix seconds and a factor)")
    if args.keep_audit_days is not None and args.keep_audit_days <= 0:
        parser.error("--keep-audit-days must be > 0")
    if args.command and args.command[0] == "db":
        if len(args.command) != 3 or args.command[1] != "copy":
            parser.error("usage: appserver.py db copy SOURCE --db TARGET (every master of both stopped)")
    elif args.command and args.command[0] == "tokens":
        check_tokens_command(parser, args)
    elif args.command or args.all_pending:
        check_keys_command(parser, args)
    return args


def check_tokens_command(parser, args) -> None:
    """``tokens list``, ``tokens create --user NAME --role ROLE [--expires-in S]``, ``tokens delete ID``."""
    command = args.command
    action = command[1] if len(command) > 1 else None
    if action == "list" and len(command) == 2:
        return
    if action == "create" and len(command) == 2 and args.user and args.role:
        return
    if action == "delete" and len(command) == 3:
        return
    parser.error("usage: appserver.py tokens list | tokens create --user NAME --role viewer|operator|admin "
                 "[--expires-in SECONDS] | tokens delete TOKEN_ID")


def check_keys_command(parser, args) -> None:
    """``keys list``, ``keys accept|reject|delete ID [ID ...]``, ``keys accept|reject --all-pending``."""
    command = args.command
    if len(command) < 2 or command[0] != "keys" or command[1] not in KEY_ACTIONS:
        parser.error("usage: appserver.py keys list | keys accept|reject|delete AGENT_ID [AGENT_ID ...] | "
                     "keys accept|reject --all-pending")
    action, ids = command[1], command[2:]
    if action == "list" and (ids or args.all_pending):
        parser.error("keys list takes no agent id and no --all-pending")
    if action == "delete" and args.all_pending:
        parser.error("--all-pending is for keys accept and keys reject (delete takes agent ids)")
    if action != "list" and bool(ids) == args.all_pending:
        parser.error(f"keys {action}: give agent ids{' or --all-pending' if action != 'delete' else ''}"
                     f"{' (not both)' if ids else ''}")


def admin_call(args, state_dir: str, *call: Any) -> Any:
    """One call to the running master's admin endpoint with the admin credential of ``state_dir``."""
    from mschedule.transport import TRANSPORT_ERRORS, CurveClientKeys, make_client

    curve = None
    if not args.insecure:
        keys = MasterKeys.load_or_create(state_dir)
        curve = CurveClientKeys(keys.public, keys.admin_public, keys.admin_secret)
    client = make_client(args.admin_bind.split(",")[0].strip(), timeout=30, curve=curve)
    try:
        return client(*call)
    except TRANSPORT_ERRORS:
        fail(f"master admin endpoint {args.admin_bind} unreachable", code=1)
    except Exception as exc:  # zerorpc.RemoteError: the master's answer, e.g. a bad request
        fail(getattr(exc, "msg", str(exc)), code=1)
    finally:
        client.close()


CLI_USER = "appserver.py"
"""The audit trail's user for what is done with the master's own command line (its host's admin credential)."""


def audit_cli(args, state_dir: str, action: str, obj: str | None, detail: dict | None = None) -> None:
    """Record a change made from the master's command line before telling the operator it is done, as the web
    tier does for HTTP (the record's client is the master's host)."""
    admin_call(args, state_dir, "audit_record", {"user": CLI_USER, "role": "admin", "action": action, "object": obj,
                                                 "client": "master-host", "status": 200, "detail": detail or {}})


def tokens_command(args, state_dir: str) -> int:
    """``tokens ...`` on the master's host: how the first admin gets a token (the secret is printed once)."""
    action = args.command[1]
    if action == "list":
        for token in admin_call(args, state_dir, "tokens_list"):
            expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(token["expires"])) if token["expires"] else "never"
            sys.stdout.write(f"{token['token_id']}  {token['user']:20} {token['role']:9} expires {expires}\n")
        return 0
    if action == "create":
        body = {"user": args.user, "role": args.role}
        if args.expires_in:
            body["expires_in"] = args.expires_in
        made = admin_call(args, state_dir, "token_create", body, {"user": CLI_USER, "selector": None})
        audit_cli(args, state_dir, "token.create", made["token_id"], {"user": made["user"], "role": made["role"]})
        sys.stderr.write(f"token {made['token_id']} for {made['user']} ({made['role']}); shown once:\n")
        sys.stdout.write(made["token"] + "\n")
        return 0
    admin_call(args, state_dir, "token_delete", args.command[2])
    audit_cli(args, state_dir, "token.delete", args.command[2])
    sys.stdout.write(f"deleted   {args.command[2]}\n")
    return 0


def keys_command(args, state_dir: str) -> int:
    """``keys ...``: one call to the running master's admin endpoint with the admin credential.

    accept, reject and delete take several ids (or --all-pending) in one call, which the master commits
    once; each id gets a line, and the exit code is 1 when any of them failed.
    """
    action, ids = args.command[1], args.command[2:]
    if action == "list":
        call: tuple = ("keys_list",)
    else:
        body = {"all_pending": True} if args.all_pending else {"agent_ids": ids}
        call = ("keys_delete_many", body) if action == "delete" else ("keys_decide_many", action, body)
    reply = admin_call(args, state_dir, *call)
    if action != "list":
        done = [r["agent_id"] for r in reply["results"] if r["ok"]]
        audit_cli(args, state_dir, f"key.{action}", None, {"agents": done[:32], "done": reply["done"],
                                                           "failed": reply["failed"]})
    if action == "list":
        for key in reply:
            sys.stdout.write(f"{key['state']:9} {key['agent_id']}  {key['hostname']:20} {','.join(key['ip']):16} "
                             f"{key['key']}\n")
        return 0
    for result in reply["results"]:
        if result["ok"]:
            sys.stdout.write(f"{result.get('state', 'deleted'):9} {result['agent_id']}\n")
        else:
            sys.stderr.write(f"mschedule: {result['agent_id']}: {result['error']}\n")
    if not reply["results"]:
        sys.stderr.write("mschedule: no key is pending\n")
    return 1 if reply["failed"] else 0


def db_command(args, state_dir: str) -> int:
    """``db copy SOURCE``: every record of SOURCE into ``--db`` (docs/ha.md, "move from SQLite")."""
    from mschedule.master.dbcopy import copy_database

    source, target = args.command[2], args.db or os.path.join(state_dir, "master.db")
    try:
        copied = copy_database(source, target)
    except (StorageError, SchemaRefused) as exc:
        fail(str(exc))
    sys.stdout.write("copied " + ", ".join(f"{n} {kind}" for kind, n in copied.items()) + "\n")
    return 0


def main(argv: list[str] | None = None) -> None:
    exit_unless_pinned()
    args = parse_args(argv)
    start_logging("master", args)
    try:
        state_dir = resolve_state_dir(args.state_dir)
    except StateDirError as exc:
        fail(str(exc))
    if args.command and args.command[0] == "db":
        sys.exit(db_command(args, state_dir))
    if args.command:
        sys.exit(tokens_command(args, state_dir) if args.command[0] == "tokens" else keys_command(args, state_dir))
    # SIGHUP's default kills, and systemd does not restart a process a SIGHUP ended: a `systemctl reload` of a
    # standby (which may wait for hours) or of a master loading a large database must find it alive
    early_hup = gevent.signal_handler(signal.SIGHUP, lambda: logging.getLogger("mschedule.master").warning(
        "SIGHUP: nothing to read again yet (the master is starting or standing by)"))
    try:
        keys = None if args.insecure else MasterKeys.load_or_create(state_dir)
    except OSError as exc:
        fail(f"cannot create the master's keys in {state_dir}/keys: {exc.strerror}")
    db = args.db or os.path.join(state_dir, "master.db")
    try:
        identity = ({"master_key": keys.public.decode(), "admin_key": keys.admin_public.decode()} if keys
                    else {"master_key": "insecure", "admin_key": "insecure"})
        storage = open_storage(db, lease=args.leader_lease, identity=identity,
                               keys_dir=keys.directory if keys else None)
    except StorageError as exc:  # a database server that does not answer yet: the supervisor tries again
        fail(str(exc), code=EXIT_NOT_LEADING if exc.temporary else 2)
    except SchemaRefused as exc:
        fail(str(exc))
    settings = MasterSettings(
        bind=args.bind, admin_bind=args.admin_bind, agent_timeout=args.agent_timeout,
        heartbeat_interval=args.heartbeat_interval, max_heartbeat_rate=args.max_heartbeat_rate,
        max_script_bytes=args.max_script_bytes, max_result_bytes=args.max_result_bytes, max_targets=args.max_targets,
        auto_accept=args.auto_accept, max_pending=args.max_pending, keep_tasks=args.keep_tasks,
        keep_days=args.keep_days, schedule_grace=args.schedule_grace, schedule_clock=args.schedule_clock,
        webhook_secret_file=args.webhook_secret_file or os.path.join(state_dir, "webhook.secret"),
        public_url=args.public_url, webhook_retry_base=args.webhook_retry_base,
        webhook_retry_for=args.webhook_retry_for, audit_log=args.audit_log, keep_audit_days=args.keep_audit_days)
    leadership = Leadership(storage) if isinstance(storage, SQLStorage) and storage.shared else None
    try:
        server = MasterServer(settings, storage=storage, keys=keys, leadership=leadership)
    except (OSError, ValueError) as exc:  # the webhook secret's file cannot be read or made
        fail(f"cannot read or create the webhook secret {settings.webhook_secret_file}: {exc}")
    try:
        server.bind()
    except BindError as exc:
        fail(str(exc))
    early_hup.cancel()  # the server's own handler takes over in run()
    try:
        server.run()
    except ServingLoopDied as exc:
        fail(str(exc), code=70)


if __name__ == "__main__":
    main()
