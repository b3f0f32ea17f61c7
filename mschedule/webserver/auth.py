"""Bearer tokens for the HTTP API: every route but the API description needs one."""
from __future__ import annotations

import hmac
import logging
import secrets

from aiohttp import web

log = logging.getLogger(__name__)

TOKENS = web.AppKey("tokens", frozenset)
#: the API description and the console's own files hold no data: they are served without a token
PUBLIC_PATHS = frozenset({"/", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)


class TokenFileError(Exception):
    pass


def load_tokens(path: str) -> frozenset[str]:
    """Tokens from a file, one per line; blank lines and ``#`` comments are ignored.

    Raises:
        TokenFileError: unreadable, or no token in it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            tokens = frozenset(line.strip() for line in f if line.strip() and not line.lstrip().startswith("#"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc}") from None
    if not tokens:
        raise TokenFileError(f"token file {path} holds no token")
    return tokens


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def token_ok(header: str | None, tokens: frozenset[str]) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    offered = header[len("Bearer "):].strip().encode()
    # compare with every token, always, in constant time per comparison
    return any([hmac.compare_digest(offered, token.encode()) for token in tokens])


@web.middleware
async def require_token(request: web.Request, handler) -> web.StreamResponse:
    tokens = request.app[TOKENS]
    if tokens and not is_public(request.path) and not token_ok(request.headers.get("Authorization"), tokens):
        log.warning("401 %s %s from %s", request.method, request.path, request.remote)
        return web.json_response({"error": "authorization: missing or wrong bearer token", "field": None}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="mschedule"'})
    return await handler(request)
