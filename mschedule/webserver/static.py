"""The web console's files (``mschedule/webserver/static/``), read once and served from memory.

Only the files listed here are served, so no path in a request can reach anything else on disk.
"""
from __future__ import annotations

import functools
import os

from aiohttp import web

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_TYPES = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "application/javascript",
}
#: the page loads nothing but its own files and talks only to this web tier
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # a new version of the console is picked up at the next load
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return f.read()


def static_response(name: str) -> web.Response:
    content_type = CONTENT_TYPES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)
