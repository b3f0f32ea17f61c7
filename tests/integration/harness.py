"""Start the real master, web tier and agents as processes on free loopback ports, and talk HTTP to them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from mschedule.master.server import MasterKeys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable
TIME_FACTOR = float(os.environ.get("MSCHEDULE_TEST_TIME_FACTOR", "1"))

#: fast liveness for tests: heartbeat every 0.5 s, offline after 3 s of silence
AGENT_INTERVAL = 0.5
AGENT_TIMEOUT = 3.0
#: reconnect attempts at least this often, well inside the agent timeout (a restarted master's grace)
AGENT_MAX_BACKOFF = 1.0
#: registrations spread over at most this, well inside the agent timeout
AGENT_CONNECT_JITTER = 0.3


def scaled(seconds: float) -> float:
    return seconds * TIME_FACTOR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout`` (scaled)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """One tier's process; its output goes to a log file shown when a test fails."""

    def __init__(self, name: str, args: list[str], log_path: str, wrapper: tuple[str, ...] = (),
                 python: str | None = PYTHON, cwd: str = ROOT, env: dict[str, str] | None = None) -> None:
        """``args``: a script of the checkout and its flags, run by ``python`` in ``cwd``; with ``python`` None,
        ``args[0]`` is the program itself (an installed console script)."""
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen([*wrapper, *([python] if python else []), *args], cwd=cwd, env=env,
                                      stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group (scripts the agent started included)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        self._log.close()
        return self.popen.returncode

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(10)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")


class Api:
    """A tiny JSON-over-HTTP client (urllib, so tests need nothing beyond the standard library)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                timeout: float = 30, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload)
            except ValueError:
                return err.code, payload.decode(errors="replace")

    def get(self, path: str, **kw) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> tuple[int, Any]:
        return self.request("POST", path, body, **kw)

    def agents(self) -> dict:
        status, body = self.get("/task/targets")
        assert status == 200, body
        return body

    def submit(self, script: str, targets: list[str], **kw) -> str:
        status, body = self.post("/task", {"script": script, "targets": targets, **kw})
        assert status == 201, body
        return body["task_id"]

    def wait_task(self, task_id: str, timeout: float = 30) -> dict:
        """The task once finished with no target running, polling with the API's own ``wait``."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            status, body = self.post("/result", {"task_id": task_id, "wait": 5})
            assert status == 200, body
            if body["finished"] and body["counts"]["RUNNING"] == 0:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} not finished after {timeout}s: {body}")
            time.sleep(0.1)

    def run(self, script: str, targets: list[str], wait_for: float = 30, **kw) -> dict:
        """Submit and wait until finished; ``kw`` are task fields (``timeout`` is the script's)."""
        return self.wait_task(self.submit(script, targets, **kw), wait_for)


class Stack:
    """Factory for the tiers of one test; ``close`` stops everything it started."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.procs: list[Proc] = []
        self.master_port = free_port()
        self.admin_port = free_port()
        self.web_port = free_port()
        self.db = tmp_path / "master.db"
        # the master's keys exist before any tier starts, so agents can be started before the master
        self.state = tmp_path / "master-state"
        self.keys = MasterKeys.load_or_create(str(self.state))
        self.token = "test-token-" + os.urandom(8).hex()
        self.token_file = tmp_path / "tokens"
        self.token_file.write_text(f"# tokens for this test\n{self.token}\n")
        self.api = Api(self.web_port, self.token)
        self._agent_count = 0

    @property
    def master_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.master_port}"

    @property
    def admin_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.admin_port}"

    def _start(self, name: str, args: list[str], wrapper: tuple[str, ...] = ()) -> Proc:
        proc = Proc(name, args, str(self.tmp / f"{name}.log"), wrapper)
        self.procs.append(proc)
        return proc

    def master(self, *extra: str, agent_timeout: float = AGENT_TIMEOUT, bind: str | None = None,
               auto_accept: bool = True, heartbeat_interval: float | None = None) -> Proc:
        """The master; agents are told to heartbeat every ``heartbeat_interval`` (the tests' fast 0.5 s by
        default; benchmarks pass the production 3 s)."""
        proc = self._start("master", [
            "appserver.py", "--bind", bind or self.master_endpoint, "--admin-bind", self.admin_endpoint,
            "--state-dir", str(self.state), "--db", str(self.db), "--agent-timeout", str(scaled(agent_timeout)),
            "--heartbeat-interval", str(heartbeat_interval or scaled(AGENT_INTERVAL)),
            *(["--auto-accept"] if auto_accept else []), *extra])
        wait_until(lambda: _port_open(self.master_port) or not proc.alive(), 10, what="master port")
        assert proc.alive(), proc.log()
        return proc

    def web(self, *extra: str, master: str | None = None) -> Proc:
        proc = self._start("web", ["appwebserver.py", "--master", master or self.admin_endpoint,
                                   "--port", str(self.web_port), "--master-key", self.keys.public_path,
                                   "--client-key", self.keys.admin_secret_path,
                                   "--token-file", str(self.token_file), *extra])
        wait_until(lambda: _port_open(self.web_port) or not proc.alive(), 15, what="web port")
        assert proc.alive(), proc.log()
        return proc

    def agents(self, instances: int = 1, state_dir: str | None = None, wait: bool = True,
               extra: tuple[str, ...] = (), interval: float | None = None, wrapper: tuple[str, ...] = (),
               master: str | None = None) -> Proc:
        """Start one agent process with ``instances`` agents; by default wait until all are online."""
        self._agent_count += 1
        state_dir = state_dir or str(self.tmp / f"agents{self._agent_count}")
        before = set(self.online_agents()) if wait else set()
        interval = scaled(AGENT_INTERVAL) if interval is None else interval
        proc = self._start(f"agent{self._agent_count}", [
            "app.py", "--master", master or self.master_endpoint, "--master-key", self.keys.public_path,
            "--state-dir", state_dir,
            "--instances", str(instances), "--interval", str(interval),
            "--max-backoff", str(scaled(AGENT_MAX_BACKOFF)), "--connect-jitter", str(scaled(AGENT_CONNECT_JITTER)),
            *extra], wrapper)
        if wait:
            wait_until(lambda: len(set(self.online_agents()) - before) >= instances or not proc.alive(),
                       20 + instances / 50,
                       what=f"{instances} agents online")
            assert proc.alive(), proc.log()
        return proc

    def master_proc_alive(self) -> bool:
        return any(p.name == "master" and p.alive() for p in self.procs)

    def online_agents(self) -> list[str]:
        return [a for a, info in self.api.agents().items() if info["online"]]

    def up(self, instances: int) -> list[str]:
        """Master, web tier and one agent process with ``instances`` agents; returns their ids."""
        self.master()
        self.web()
        self.agents(instances)
        return sorted(self.online_agents())

    def close(self) -> None:
        # agents first (they can still tell a live master they stop), then web tiers, then masters
        order = {"agent": 0, "web": 1, "master": 2}
        for proc in sorted(reversed(self.procs), key=lambda p: order.get(p.name.rstrip("0123456789"), 0)):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.log()[-6000:]}" for p in self.procs)


def two_datacenters(stack) -> tuple[list[str], list[str]]:
    """A master, a web tier and one agent labelled dc=bj, one dc=sh: their ids."""
    stack.master()
    stack.web()
    stack.agents(1, extra=("--label", "dc=bj"))
    stack.agents(1, extra=("--label", "dc=sh"))
    agents = stack.api.agents()
    bj, sh = ([a for a, info in agents.items() if info["labels"].get("dc") == dc] for dc in ("bj", "sh"))
    return bj, sh


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
