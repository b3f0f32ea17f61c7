"""mschedule web tier: ``python appwebserver.py --master tcp://127.0.0.1:9000 --port 8080``."""
from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

from utils.config import add_logging_flags, env, fail, new_parser, start_logging
from utils.defaults import DEFAULT_MASTER, DEFAULT_MAX_SCRIPT_BYTES, DEFAULT_WEB_HOST, DEFAULT_WEB_PORT, RPC_TIMEOUT
from utils.rpc import TRANSPORT_ERRORS
from webserver import MasterBridge, build_app

log = logging.getLogger("webserver")


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule web tier: HTTP API in front of the master.")
    parser.add_argument("--master", default=env("MASTER", DEFAULT_MASTER),
                        help="master zerorpc endpoint [MSCHEDULE_MASTER]")
    parser.add_argument("--host", default=env("WEB_HOST", DEFAULT_WEB_HOST), help="HTTP address [MSCHEDULE_WEB_HOST]")
    parser.add_argument("--port", type=int, default=env("WEB_PORT", DEFAULT_WEB_PORT, int),
                        help="HTTP port [MSCHEDULE_WEB_PORT]")
    parser.add_argument("--max-script-bytes", type=int,
                        default=env("MAX_SCRIPT_BYTES", DEFAULT_MAX_SCRIPT_BYTES, int),
                        help="largest script accepted [MSCHEDULE_MAX_SCRIPT_BYTES]")
    parser.add_argument("--rpc-timeout", type=float, default=env("RPC_TIMEOUT", RPC_TIMEOUT, float),
                        help="seconds a call to the master may take before the answer is 503 [MSCHEDULE_RPC_TIMEOUT]")
    parser.add_argument("--master-wait", type=float, default=env("MASTER_WAIT", 10.0, float),
                        help="seconds to wait for the master at start before giving up [MSCHEDULE_MASTER_WAIT]")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.rpc_timeout <= 0 or args.master_wait < 0:
        parser.error("--rpc-timeout must be > 0 and --master-wait >= 0")
    return args


async def wait_for_master(bridge: MasterBridge, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            await bridge.call("ping", timeout=max(0.5, min(2.0, deadline - time.monotonic())))
            return True
        except TRANSPORT_ERRORS:
            if time.monotonic() >= deadline:
                return False


async def serve(args) -> None:
    bridge = MasterBridge(args.master, timeout=args.rpc_timeout)
    bridge.start()
    try:
        if not await wait_for_master(bridge, args.master_wait):
            fail(f"master {args.master} unreachable (no answer within {args.master_wait:g}s)")
        runner = web.AppRunner(build_app(bridge, args.max_script_bytes), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
        log.info("web tier on http://%s:%d/ (master %s)", args.host, args.port, args.master)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            log.info("web tier stopping")
        finally:
            await runner.cleanup()
    finally:
        bridge.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_logging("web", args)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
