"""mschedule master: ``python appserver.py --bind tcp://0.0.0.0:9000``."""
from __future__ import annotations

import os
import sqlite3

import zmq

from master import MasterServer
from master.sqlite_storage import open_storage
from utils.config import add_logging_flags, env, fail, new_parser, start_logging
from utils.defaults import DEFAULT_AGENT_TIMEOUT, DEFAULT_BIND, DEFAULT_MAX_SCRIPT_BYTES
from utils.statedir import StateDirError, resolve_state_dir


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule master: keeps agents and tasks, hands tasks to agents.")
    parser.add_argument("--bind", default=env("BIND", DEFAULT_BIND),
                        help="zerorpc endpoint(s) for agents and the web tier, comma separated [MSCHEDULE_BIND]")
    parser.add_argument("--agent-timeout", type=float, default=env("AGENT_TIMEOUT", DEFAULT_AGENT_TIMEOUT, float),
                        help="seconds without heartbeat before an agent is offline [MSCHEDULE_AGENT_TIMEOUT]")
    parser.add_argument("--state-dir", default=env("STATE_DIR", None),
                        help="where master.db lives (default /var/lib/mschedule, or ~/.mschedule when that is "
                             "not writable) [MSCHEDULE_STATE_DIR]")
    parser.add_argument("--db", default=env("DB", None),
                        help="SQLite file (default <state-dir>/master.db); ':memory:' keeps nothing across "
                             "restarts [MSCHEDULE_DB]")
    parser.add_argument("--max-script-bytes", type=int,
                        default=env("MAX_SCRIPT_BYTES", DEFAULT_MAX_SCRIPT_BYTES, int),
                        help="largest script accepted [MSCHEDULE_MAX_SCRIPT_BYTES]")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.agent_timeout <= 0:
        parser.error("--agent-timeout must be > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_logging("master", args)
    try:
        db = args.db or os.path.join(resolve_state_dir(args.state_dir), "master.db")
        storage = open_storage(db)
    except StateDirError as exc:
        fail(str(exc))
    except sqlite3.Error as exc:
        fail(f"cannot open database {db}: {exc}")
    server = MasterServer(args.bind, args.agent_timeout, storage=storage, max_script_bytes=args.max_script_bytes)
    try:
        server.bind()
    except zmq.ZMQError as exc:
        fail(f"cannot listen on {args.bind}: {exc}")
    server.run()


if __name__ == "__main__":
    main()
