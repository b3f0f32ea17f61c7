"""Bearer tokens for the HTTP API: every route but the API description, the console's files and ``/healthz``
needs one. The ``--token-file`` is read at start and again on SIGHUP (:class:`TokenFile`)."""
from __future__ import annotations

import logging
import secrets

from aiohttp import web

log = logging.getLogger(__name__)

#: the API description, the console's own files and the bare up-or-down health hold no data: no token needed
PUBLIC_PATHS = frozenset({"/", "/openapi.json", "/healthz"})
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


class TokenFile:
    """The tokens of ``--token-file``; :meth:`reload` reads the file again (SIGHUP), keeping the tokens it had
    when the file cannot be read or holds none, so a bad edit locks nobody out. No path: no authentication
    (``--insecure``) and an empty set."""

    def __init__(self, path: str | None = None, tokens: frozenset[str] | None = None) -> None:
        self.path = path
        self.tokens = tokens if tokens is not None else (load_tokens(path) if path else frozenset())

    def reload(self) -> None:
        if self.path is None:
            log.info("SIGHUP: no --token-file to read again (--insecure)")
            return
        try:
            tokens = load_tokens(self.path)
        except TokenFileError as exc:
            log.error("SIGHUP: %s; the %d tokens read before stay in force", exc, len(self.tokens))
            return
        added, removed = len(tokens - self.tokens), len(self.tokens - tokens)
        self.tokens = tokens
        log.warning("SIGHUP: token file %s read again: %d tokens (%d new, %d removed)", self.path, len(tokens),
                    added, removed)


TOKENS = web.AppKey("tokens", TokenFile)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
