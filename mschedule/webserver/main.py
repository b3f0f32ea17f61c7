"""mschedule web tier: ``python appwebserver.py --master tcp://127.0.0.1:9000 --port 8080``."""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time

from aiohttp import web

from mschedule import __version__
from mschedule.transport import TRANSPORT_ERRORS, CurveClientKeys, exit_unless_pinned
from mschedule.utils.config import add_logging_flags, env, fail, flag, new_parser, start_logging
from mschedule.utils.defaults import (
    DEFAULT_ADMIN,
    DEFAULT_MAX_SCRIPT_BYTES,
    DEFAULT_WEB_HOST,
    DEFAULT_WEB_PORT,
    RPC_TIMEOUT,
)
from mschedule.utils.keys import KeyFileError, client_keypair_arg, public_key_arg
from mschedule.webserver import MasterBridge, build_app
from mschedule.webserver.auth import TokenFile, TokenFileError

log = logging.getLogger("mschedule.webserver")


def parse_args(argv: list[str] | None = None):
    parser = new_parser("mschedule web tier: HTTP API in front of the master.")
    parser.add_argument("--version", action="version", version=f"mschedule-web {__version__}")
    parser.add_argument("--master", default=env("MASTER", DEFAULT_ADMIN),
                        help="the master's admin endpoint; several masters of a cluster comma separated "
                             "(tcp://m1:9001,tcp://m2:9001): the web tier follows whichever leads [MSCHEDULE_MASTER]")
    parser.add_argument("--master-key", default=env("MASTER_KEY", None),
                        help="the master's public key (Z85 text or a path to master.key) [MSCHEDULE_MASTER_KEY]")
    parser.add_argument("--client-key", default=env("CLIENT_KEY", None),
                        help="the admin credential: path to admin.key_secret from the master's keys/ "
                             "[MSCHEDULE_CLIENT_KEY]")
    parser.add_argument("--token-file", default=env("TOKEN_FILE", None),
                        help="file of HTTP bearer tokens, one per line [MSCHEDULE_TOKEN_FILE]")
    parser.add_argument("--tls-cert", default=env("TLS_CERT", None), help="serve HTTPS with this certificate "
                        "(PEM) [MSCHEDULE_TLS_CERT]")
    parser.add_argument("--tls-key", default=env("TLS_KEY", None), help="the certificate's key [MSCHEDULE_TLS_KEY]")
    parser.add_argument("--max-targets", type=int, default=None,
                        help="deprecated and ignored: the master checks targets, give it --max-targets")
    parser.add_argument("--insecure", action="store_true", default=env("INSECURE", False, flag),
                        help="plain TCP to the master and no HTTP tokens: local experiments only [MSCHEDULE_INSECURE]")
    parser.add_argument("--host", default=env("WEB_HOST", DEFAULT_WEB_HOST), help="HTTP address [MSCHEDULE_WEB_HOST]")
    parser.add_argument("--port", type=int, default=env("WEB_PORT", DEFAULT_WEB_PORT, int),
                        help="HTTP port [MSCHEDULE_WEB_PORT]")
    parser.add_argument("--max-script-bytes", type=int,
                        default=env("MAX_SCRIPT_BYTES", DEFAULT_MAX_SCRIPT_BYTES, int),
                        help="largest script accepted [MSCHEDULE_MAX_SCRIPT_BYTES]")
    parser.add_argument("--rpc-timeout", type=float, default=env("RPC_TIMEOUT", RPC_TIMEOUT, float),
                        help="seconds a call to the master may take before the answer is 503 [MSCHEDULE_RPC_TIMEOUT]")
    parser.add_argument("--keepalive-timeout", type=float, default=env("KEEPALIVE_TIMEOUT", 15.0, float),
                        help="seconds an HTTP connection may stay idle, or take to send its request line and "
                             "headers, before it is closed [MSCHEDULE_KEEPALIVE_TIMEOUT]")
    parser.add_argument("--master-wait", type=float, default=env("MASTER_WAIT", 10.0, float),
                        help="seconds to wait for the master at start before giving up [MSCHEDULE_MASTER_WAIT]")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.rpc_timeout <= 0 or args.master_wait < 0:
        parser.error("--rpc-timeout must be > 0, --master-wait >= 0")
    if args.keepalive_timeout <= 0:
        parser.error("--keepalive-timeout must be > 0")
    if not args.insecure and not (args.master_key and args.client_key and args.token_file):
        parser.error("--master-key, --client-key and --token-file are required (or --insecure for a local experiment)")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return args


def security(args) -> tuple[CurveClientKeys | None, TokenFile, ssl.SSLContext | None]:
    """The admin credential, the HTTP tokens and the TLS context the flags ask for; one clear line if not."""
    curve, tokens, tls = None, TokenFile(), None
    try:
        if not args.insecure:
            curve = CurveClientKeys(public_key_arg(args.master_key), *client_keypair_arg(args.client_key))
            tokens = TokenFile(args.token_file)
        if args.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
    except (KeyFileError, TokenFileError) as exc:
        fail(str(exc))
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load TLS certificate {args.tls_cert}: {exc}")
    if args.insecure:
        log.warning("web tier runs --insecure: no HTTP tokens, plain TCP to the master")
    return curve, tokens, tls


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
    curve, tokens, tls = security(args)
    if args.max_targets is not None:
        log.warning("--max-targets %d is deprecated and ignored by the web tier: the master validates tasks, "
                    "give the master --max-targets (or MSCHEDULE_MAX_TARGETS)", args.max_targets)
    # from the start, not once serving: a SIGHUP while waiting for the master (a log rotation) killed the process
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, tokens.reload)
    bridge = MasterBridge(args.master, timeout=args.rpc_timeout, curve=curve)
    bridge.start()
    try:
        if not await wait_for_master(bridge, args.master_wait):
            fail(f"master {args.master} unreachable (no answer within {args.master_wait:g}s)")
        # a connection that has not sent a whole request within --keepalive-timeout is closed (aiohttp's own
        # default, an hour, let half-sent requests hold file descriptors until none was left)
        runner = web.AppRunner(build_app(bridge, args.max_script_bytes, tokens), access_log=None,
                               keepalive_timeout=args.keepalive_timeout)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
        log.info("web tier on %s://%s:%d/ (master %s)", "https" if tls else "http", args.host, args.port,
                 args.master)
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
    exit_unless_pinned()
    args = parse_args(argv)
    start_logging("web", args)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
