"""The wheel as an operator installs it: built from this checkout, installed by deploy/install-agent.sh into a
fresh virtualenv outside the checkout, and a task run end to end through the four console scripts it provides
(mschedule-master, mschedule-web, mschedule-agent and mschedule), none of them started from the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.integration.harness import PYTHON, ROOT, Api, Proc, free_port, wait_until

pytestmark = pytest.mark.slow


def clean_env(home) -> dict[str, str]:
    """The environment of a shell on a host that has never seen the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSCHEDULE_", "PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    return env


def test_the_wheel_runs_a_task_through_its_console_scripts(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)
    # built from a copy of what the build reads, so that setuptools' build/ and egg-info stay out of the checkout
    src = tmp_path / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "mschedule", "deploy"):
        path = os.path.join(ROOT, part)
        if os.path.isdir(path):
            shutil.copytree(path, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / part)
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300, env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("mschedule-*.whl")

    # the master first: its public key goes to the agent's install
    prefix, etc, state = tmp_path / "opt", tmp_path / "etc", tmp_path / "master-state"
    base_python = getattr(sys, "_base_executable", None) or "python3"
    install = subprocess.run(
        ["sh", os.path.join(ROOT, "deploy", "install-agent.sh"), "--prefix", str(prefix), "--etc", str(etc),
         "--python", base_python, "--no-systemd", "--master", "tcp://127.0.0.1:1", "--master-key", "x" * 40,
         "--label", "role=wheel", str(wheel)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    bin_dir = prefix / "bin"
    for name in ("mschedule-master", "mschedule-web", "mschedule-agent", "mschedule"):
        out = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=30)
        assert out.returncode == 0 and out.stdout.startswith(name + " "), (name, out.stdout, out.stderr)
    assert (prefix / "share" / "mschedule" / "systemd" / "mschedule-agent.service").is_file()
    assert "[labels]" in (etc / "agent.toml").read_text()

    master_port, admin_port, web_port = free_port(), free_port(), free_port()
    procs: list[Proc] = []
    try:
        def start(name: str, args: list[str]) -> Proc:
            proc = Proc(name, [str(bin_dir / args[0]), *args[1:]], str(tmp_path / f"{name}.log"), python=None,
                        cwd=str(tmp_path), env=env)
            procs.append(proc)
            return proc

        master = start("master", ["mschedule-master", "--state-dir", str(state), "--db", str(tmp_path / "m.db"),
                                  "--bind", f"tcp://127.0.0.1:{master_port}",
                                  "--admin-bind", f"tcp://127.0.0.1:{admin_port}", "--auto-accept",
                                  "--agent-timeout", "3", "--heartbeat-interval", "0.5"])
        key = state / "keys" / "master.key"
        wait_until(lambda: key.exists() or not master.alive(), 20, what="the master's key")
        assert master.alive(), master.log()
        token = os.urandom(8).hex()
        (tmp_path / "tokens").write_text(token + "\n")
        web = start("web", ["mschedule-web", "--master", f"tcp://127.0.0.1:{admin_port}", "--port", str(web_port),
                            "--master-key", str(key), "--client-key", str(state / "keys" / "admin.key_secret"),
                            "--token-file", str(tmp_path / "tokens")])
        agent = start("agent", ["mschedule-agent", "--master", f"tcp://127.0.0.1:{master_port}", "--master-key",
                                str(key), "--state-dir", str(tmp_path / "agent-state"), "--config",
                                str(etc / "agent.toml"), "--hostname", "wheel-host", "--interval", "0.5"])
        api = Api(web_port, token)

        def online() -> bool:
            try:
                status, agents = api.get("/task/targets", timeout=5)
            except OSError:
                return False
            return status == 200 and any(a["online"] for a in agents.values())

        wait_until(lambda: online() or not (web.alive() and agent.alive()), 60, interval=0.5, what="agent online")
        assert web.alive() and agent.alive(), web.log() + agent.log()

        cli_env = {**env, "MSCHEDULE_URL": f"http://127.0.0.1:{web_port}", "MSCHEDULE_TOKEN": token}
        run = subprocess.run([str(bin_dir / "mschedule"), "run", "echo hello from the wheel", "--label", "role=wheel"],
                             capture_output=True, text=True, env=cli_env, cwd=tmp_path, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "wheel-host: hello from the wheel" in run.stdout
    finally:
        for proc in reversed(procs):
            proc.stop()
