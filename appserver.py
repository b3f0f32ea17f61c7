"""mschedule master: ``python appserver.py --bind tcp://0.0.0.0:9000``."""
from __future__ import annotations

import zmq

from master import MasterServer
from utils.config import add_logging_flags, env, fail, new_parser, start_logging
from utils.defaults import DEFAULT_AGENT_TIMEOUT, DEFAULT_BIND, DEFAULT_MAX_SCRIPT_BYTES


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule master: keeps agents and tasks, hands tasks to agents.")
    parser.add_argument("--bind", default=env("BIND", DEFAULT_BIND),
                        help="zerorpc endpoint for agents and the web tier [MSCHEDULE_BIND]")
    parser.add_argument("--agent-timeout", type=float, default=env("AGENT_TIMEOUT", DEFAULT_AGENT_TIMEOUT, float),
                        help="seconds without heartbeat before an agent is offline [MSCHEDULE_AGENT_TIMEOUT]")
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
    server = MasterServer(args.bind, args.agent_timeout, max_script_bytes=args.max_script_bytes)
    try:
        server.bind()
    except zmq.ZMQError as exc:
        fail(f"cannot listen on {args.bind}: {exc}")
    server.run()


if __name__ == "__main__":
    main()
