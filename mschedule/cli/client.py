"""The CLI's HTTP client (standard library only) and where its URL and token come from.

Every failure becomes a :class:`CliError` with one line of text and the exit status it means, so that
``main`` can print it without a traceback: the operator reads what went wrong, not where.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

#: exit status of a usage, authentication, connection or refused-request error
EXIT_ERROR = 3
#: seconds an HTTP call may take beyond the long-poll wait it asked for
HTTP_MARGIN = 15.0


class CliError(Exception):
    """A failure shown as ``mschedule: <message>`` on stderr, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ApiError(CliError):
    """The web tier answered an error: its HTTP ``status`` and the ``field`` it names (None: the request)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class Unreachable(CliError):
    """The web tier could not be reached (refused, timed out, reset)."""


CREATE_RETRY_FOR = 30.0
"""Seconds a request that makes a task (:meth:`Client.create`) is sent again while the web tier answers 503 or
cannot be reached: a master restarting, or a cluster failing over to another master (docs/ha.md). Every try
carries the same Idempotency-Key, so the task is made once however many tries reach the master."""


def config_path(env: dict[str, str] | None = None) -> str:
    """``$XDG_CONFIG_HOME/mschedule/cli.toml``, ``~/.config/mschedule/cli.toml`` when it is unset or empty."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "mschedule", "cli.toml")


def read_config(path: str) -> dict:
    """The config file's ``url`` and ``token``; ``{}`` when there is no file. A file that is not TOML is an error
    (a silently ignored config would send the operator's commands somewhere else)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    return {k: data[k] for k in ("url", "token") if isinstance(data.get(k), str)}


def write_config(path: str, url: str, token: str) -> None:
    """Write ``url`` and ``token`` to ``path``, mode 0600 from its first byte (it holds a credential), its
    directory 0700; replaced atomically so a failed write never leaves half a file."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        # json.dumps of a str is a valid TOML basic string (non-ASCII as \uXXXX)
        os.write(fd, f"# written by mschedule login\nurl = {json.dumps(url)}\ntoken = {json.dumps(token)}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class Settings:
    url: str
    token: str | None
    source: str


def resolve_settings(url: str | None, token: str | None, env: dict[str, str] | None = None) -> Settings:
    """The web tier's URL and token: flag, then ``MSCHEDULE_URL``/``MSCHEDULE_TOKEN``, then the config file;
    each value on its own (a ``--url`` with the file's token works)."""
    env = os.environ if env is None else env
    path = config_path(env)
    url = url or env.get("MSCHEDULE_URL") or None
    token = token or env.get("MSCHEDULE_TOKEN") or None
    source = "flags/environment"
    if url is None or token is None:
        stored = read_config(path)
        if url is None and "url" in stored:
            source = path
        url = url or stored.get("url")
        token = token or stored.get("token")
    if not url:
        raise CliError("no web tier URL: give --url, set MSCHEDULE_URL, or run 'mschedule login URL'")
    return Settings(normalize_url(url), token, source)


def normalize_url(url: str) -> str:
    """``host:8080`` -> ``http://host:8080``; no trailing slash."""
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"--url: expected http(s)://host:port, got {url!r}")
    return url.rstrip("/")


class Client:
    """JSON over HTTP to the web tier, with the bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, query: dict | list | None = None,
                timeout: float | None = None, headers: dict[str, str] | None = None) -> Any:
        """The answer's JSON. Raises ApiError for an HTTP error, CliError when the web tier cannot be reached."""
        target = self.url + path
        if query:
            pairs = query.items() if isinstance(query, dict) else query
            target += "?" + urllib.parse.urlencode([(k, v) for k, v in pairs if v is not None])
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(target, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise _api_error(err) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = "timed out"
            raise Unreachable(f"cannot reach the web tier at {self.url}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(f"{method} {path}: the answer is not JSON (is {self.url} an mschedule web tier?)") from None

    def get(self, path: str, query: dict | list | None = None, **kw: Any) -> Any:
        return self.request("GET", path, query=query, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def create(self, path: str, body: Any = None, retry_for: float = CREATE_RETRY_FOR) -> Any:
        """POST a request that makes a task, with an Idempotency-Key, sent again with the same key while the
        answer is a 503 or the web tier cannot be reached, for up to ``retry_for`` seconds (each wait said on
        stderr): the master makes the task once (mschedule/master/idempotency.py)."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        deadline = time.monotonic() + retry_for
        delay = 1.0
        while True:
            try:
                return self.request("POST", path, body, headers=headers)
            except (ApiError, Unreachable) as exc:
                if (isinstance(exc, ApiError) and exc.status != 503) or time.monotonic() + delay > deadline:
                    raise
                sys.stderr.write(f"mschedule: {exc.message}; sending it again in {delay:g}s (the same request: "
                                 "it is done once)\n")
                time.sleep(delay)
                delay = min(2 * delay, 8.0)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def quote(self, part: str) -> str:
        """One path segment (a task id, a job name) made safe for the URL."""
        return urllib.parse.quote(part, safe="")


def _api_error(err: urllib.error.HTTPError) -> ApiError:
    raw = err.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message, field = body["error"], body.get("field")
    else:
        message, field = f"HTTP {err.code} {err.reason}", None
    if err.code == 401:
        message = f"{message} (check --token, MSCHEDULE_TOKEN or 'mschedule login')"
    return ApiError(err.code, message, field if isinstance(field, str) else None)
