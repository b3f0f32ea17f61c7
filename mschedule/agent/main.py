"""mschedule agent: ``python app.py --master tcp://MASTER:9000``."""
from __future__ import annotations

import logging
import sys
import tomllib

from mschedule import __version__
from mschedule.agent.identity import StateDirError, resolve_state_dir
from mschedule.agent.runner import build_workers, ignore_sighup, run_workers
from mschedule.transport.guard import exit_unless_pinned
from mschedule.utils.config import add_logging_flags, env, fail, flag, new_parser, start_logging
from mschedule.utils.defaults import (
    BACKOFF_CAP,
    CONNECT_JITTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MASTER,
    DEFAULT_OUTPUT_CAP,
    DEFAULT_POLL_WAIT,
)
from mschedule.utils.exceptions import MessageError
from mschedule.utils.keys import KeyFileError, public_key_arg
from mschedule.utils.messages import check_labels


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--label {text!r}: expected key=value")
    return key.strip(), value.strip()


def apply_config(parser, path: str) -> dict[str, str]:
    """Use a TOML file's keys as flag defaults; returns its [labels] table.

    Raises:
        OSError: unreadable. ValueError: not TOML, an unknown key, or a label that is not a string.
    """
    with open(path, "rb") as f:
        config = tomllib.load(f)
    labels = config.pop("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("[labels] must map names to strings")
    known = {action.dest for action in parser._actions}
    unknown = sorted(k for k in config if k.replace("-", "_") not in known)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    parser.set_defaults(**{k.replace("-", "_"): v for k, v in config.items()})
    return {str(k): v for k, v in labels.items()}


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule agent: dials the master, pulls tasks and runs them (#! interpreter, else /bin/sh).")
    parser.add_argument("--version", action="version", version=f"mschedule-agent {__version__}")
    parser.add_argument("--master", default=env("MASTER", DEFAULT_MASTER),
                        help="master zerorpc endpoint; several masters of a cluster comma separated "
                             "(tcp://m1:9000,tcp://m2:9000): the agent follows whichever leads [MSCHEDULE_MASTER]")
    parser.add_argument("--master-key", default=env("MASTER_KEY", None),
                        help="the master's public key (Z85 text or a path to master.key); the agent talks to no "
                             "master without it [MSCHEDULE_MASTER_KEY]")
    parser.add_argument("--insecure", action="store_true", default=env("INSECURE", False, flag),
                        help="plain TCP, no keys: for local experiments only [MSCHEDULE_INSECURE]")
    parser.add_argument("--state-dir", default=env("STATE_DIR", None),
                        help="where the agent id is kept (default /var/lib/mschedule, "
                             "or ~/.mschedule when that is not writable) [MSCHEDULE_STATE_DIR]")
    parser.add_argument("--interval", type=float, default=env("INTERVAL", DEFAULT_HEARTBEAT_INTERVAL, float),
                        help="seconds between heartbeats [MSCHEDULE_INTERVAL]")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="label sent with register and heartbeat; repeatable [MSCHEDULE_LABELS, comma separated]")
    parser.add_argument("--hostname", default=env("HOSTNAME_OVERRIDE", None),
                        help="report this hostname instead of the system's; {i} is the instance number "
                             "[MSCHEDULE_HOSTNAME_OVERRIDE]")
    parser.add_argument("--instances", type=int, default=env("INSTANCES", 1, int),
                        help="independent agents in this process, ids under <state-dir>/<k>/ [MSCHEDULE_INSTANCES]")
    parser.add_argument("--poll-wait", type=float, default=env("POLL_WAIT", DEFAULT_POLL_WAIT, float),
                        help="seconds one long poll for a task may wait on the master [MSCHEDULE_POLL_WAIT]")
    parser.add_argument("--connect-jitter", type=float, default=env("CONNECT_JITTER", CONNECT_JITTER, float),
                        help="most seconds to wait, at random, before registering (at start and after losing the "
                             "master), so a fleet does not arrive at once [MSCHEDULE_CONNECT_JITTER]")
    parser.add_argument("--max-backoff", type=float, default=env("MAX_BACKOFF", BACKOFF_CAP, float),
                        help="longest wait between two reconnect attempts, seconds; keep it under the master's "
                             "--agent-timeout [MSCHEDULE_MAX_BACKOFF]")
    parser.add_argument("--output-cap", type=int, default=env("OUTPUT_CAP", DEFAULT_OUTPUT_CAP, int),
                        help="bytes of a script's output kept [MSCHEDULE_OUTPUT_CAP]")
    parser.add_argument("--config", default=env("CONFIG", None),
                        help="TOML file: a [labels] table, and any flag as a key (state_dir = ...); flags given on "
                             "the command line win [MSCHEDULE_CONFIG]")
    parser.add_argument("--check", action="store_true",
                        help="ask the master once whether it answers, print the result and exit 0 or 1")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    file_labels: dict[str, str] = {}
    if args.config:
        try:
            file_labels = apply_config(parser, args.config)
        except (OSError, ValueError) as exc:
            parser.error(f"--config {args.config}: {exc}")
        args = parser.parse_args(argv)  # flags on the command line override the file
    labels_env = env("LABELS", "")
    try:
        args.labels = {**file_labels,
                       **dict(parse_label(t) for t in [*filter(None, labels_env.split(",")), *args.label])}
        check_labels(args.labels, "--label")  # the master would refuse every register: say so now
    except (ValueError, MessageError) as exc:
        parser.error(str(exc))
    if not args.insecure and not args.master_key:
        parser.error("--master-key is required (or --insecure for a local experiment)")
    if args.max_backoff <= 0 or args.connect_jitter < 0:
        parser.error("--max-backoff must be > 0 and --connect-jitter >= 0")
    if args.interval <= 0 or args.instances < 1 or args.output_cap < 1 or not 0 < args.poll_wait <= 60:
        parser.error("--interval and --output-cap must be > 0, --instances >= 1, --poll-wait in (0, 60]")
    return args


def check_master(endpoint: str, master_key: bytes | None) -> int:
    """``--check``: one ping to the master; exit code 0 when it answers (with a throwaway key pair)."""
    import zmq

    from mschedule.transport import TRANSPORT_ERRORS, CurveClientKeys, MasterLink

    curve = CurveClientKeys(master_key, *zmq.curve_keypair()) if master_key else None
    link = MasterLink(endpoint, timeout=3, curve=curve)
    try:
        reply = link.call("ping")
    except TRANSPORT_ERRORS:
        sys.stderr.write(f"mschedule: master {endpoint} unreachable\n")
        return 1
    finally:
        link.close()
    sys.stdout.write(f"master {endpoint} ok: {reply}\n")
    return 0


def main(argv: list[str] | None = None) -> None:
    exit_unless_pinned()
    args = parse_args(argv)
    ignore_sighup()
    start_logging("agent", args)
    master_key = None
    if args.insecure:
        logging.getLogger("mschedule.agent").warning("agent runs --insecure: scripts and results travel in clear "
                                                     "text and anyone who can reach it can pose as the master")
    else:
        try:
            master_key = public_key_arg(args.master_key)
        except KeyFileError as exc:
            fail(f"--master-key: {exc}")
    if args.check:
        sys.exit(check_master(args.master, master_key))
    try:
        state_dir = resolve_state_dir(args.state_dir)
        workers = build_workers(args.master, state_dir, args.instances, args.hostname, args.labels,
                                args.interval, args.poll_wait, args.output_cap, master_key, args.max_backoff,
                                args.connect_jitter)
    except StateDirError as exc:
        fail(str(exc))
    run_workers(workers)


if __name__ == "__main__":
    main()
