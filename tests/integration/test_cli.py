"""``mschedule`` (``python -m mschedule.cli``) against the real stack, as an operator runs it: a subprocess with
MSCHEDULE_URL/MSCHEDULE_TOKEN, HOME a temporary directory. One exit status per outcome (docs/cli.md)."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import time
import urllib.request

import pytest

from tests.integration.harness import PYTHON, ROOT, Stack, free_port, wait_until
from tests.integration.receiver import Receiver

CLI = [PYTHON, "-m", "mschedule.cli"]


def sigint_default() -> None:
    """A CLI the test interrupts must get SIGINT as a terminal's foreground job does: a test run started in the
    background (``make test &``, nohup) passes SIGINT on ignored, and Python then installs no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Master, web tier and two agents: cli-a (role=web) and cli-b (role=db)."""
    s = Stack(tmp_path_factory.mktemp("cli"))
    try:
        s.master()
        s.web()
        s.agents(1, extra=("--hostname", "cli-a", "--label", "role=web"))
        s.agents(1, extra=("--hostname", "cli-b", "--label", "role=db"))
        s.ids = {info["hostname"]: a for a, info in s.api.agents().items()}
        yield s
    finally:
        s.close()


def cli_env(stack: Stack | None, home, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCHEDULE_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    if stack is not None:
        env.update(MSCHEDULE_URL=stack.api.base, MSCHEDULE_TOKEN=stack.token)
    env.update(extra)
    return env


def mschedule(stack: Stack | None, home, *argv: str, stdin: str | None = None, timeout: float = 30,
              **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], cwd=ROOT, env=cli_env(stack, home, **env), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_exit_0_every_host_output_after_its_hostname_and_a_summary(fleet, tmp_path):
    done = mschedule(fleet, tmp_path, "run", "echo one; echo two", "--host", "cli-*", "--parallel", "2")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    for host in ("cli-a", "cli-b"):
        assert lines.index(f"{host}: one") + 1 == lines.index(f"{host}: two"), done.stdout
    header = next(i for i, line in enumerate(lines) if line.split() == ["HOST", "STATE", "CODE", "DURATION"])
    assert [row.split()[:3] for row in lines[header + 1:header + 3]] == [["cli-a", "SUCCEED", "0"],
                                                                         ["cli-b", "SUCCEED", "0"]]
    assert "SUCCEED" in lines[-1] and "succeed 2 failed 0" in lines[-1]
    # not a terminal: plain progress lines on stderr, no \r
    assert "\r" not in done.stderr and "2/2 done" in done.stderr.splitlines()[-1]
    task_id = lines[-1].split()[1]
    shown = mschedule(fleet, tmp_path, "task", task_id)
    assert shown.returncode == 0 and "cli-b: two" in shown.stdout.splitlines()
    listed = mschedule(fleet, tmp_path, "tasks", "--limit", "1")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:2] == [task_id, "SUCCEED"]


def test_exit_1_a_host_failed_without_limits_and_json(fleet, tmp_path):
    script = f'if [ "$MSCHEDULE_AGENT_ID" = {fleet.ids["cli-a"]} ]; then echo bad; exit 4; fi; echo good'
    done = mschedule(fleet, tmp_path, "run", script, "--host", "cli-*", "--parallel", "2",
                     "--fail-rate", "100", "--json")
    assert done.returncode == 1, done
    task = json.loads(done.stdout)  # only the final task
    # the task itself SUCCEED (no limit was breached): the counts tell the failure
    assert task["state"] == "SUCCEED" and task["counts"]["FAILED"] == 1 and task["counts"]["SUCCEED"] == 1
    assert task["targets"][fleet.ids["cli-a"]]["output"] == "bad\n" and task["targets"][fleet.ids["cli-a"]]["code"] == 4
    assert done.stderr == ""


def test_exit_2_aborted_by_the_failure_limits(fleet, tmp_path):
    done = mschedule(fleet, tmp_path, "run", "echo no; false", "--host", "cli-*", "--parallel", "1",
                     "--fail-count", "0")
    assert done.returncode == 2, done
    states = sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith("cli-")
                    and len(line.split()) >= 3 and line.split()[1] in ("FAILED", "CANCELLED"))
    assert states == ["CANCELLED", "FAILED"], done.stdout
    assert "task " in done.stdout.splitlines()[-1] and " FAILED" in done.stdout.splitlines()[-1]


def _newest_task(fleet: Stack) -> dict | None:
    status, tasks = fleet.api.get("/tasks?limit=1")
    return tasks[0] if status == 200 and tasks else None


def test_ctrl_c_detaches_then_follow_and_cancel_exit_2(fleet, tmp_path):
    before = (_newest_task(fleet) or {}).get("task_id")
    follower = subprocess.Popen([*CLI, "run", "echo started; sleep 30", "--host", "cli-a"], cwd=ROOT,
                                preexec_fn=sigint_default, env=cli_env(fleet, tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        task = wait_until(lambda: (t := _newest_task(fleet)) and t["task_id"] != before and t["state"] == "RUNNING"
                          and t, 15, what="the task running")
        # the task may run before the CLI has its POST's answer (a loaded machine): a Ctrl-C then interrupts the
        # submit, not the follow. Wait for the follow's first progress line (no terminal: a plain line on stderr)
        seen = ""
        deadline = time.monotonic() + 15
        while task["task_id"] not in seen and time.monotonic() < deadline:
            if select.select([follower.stderr], [], [], 0.2)[0]:
                seen += follower.stderr.readline()
        assert task["task_id"] in seen, seen
        follower.send_signal(signal.SIGINT)  # no terminal: detach, do not cancel
        out, err = follower.communicate(timeout=10)
        err = seen + err
    finally:
        follower.kill()
    assert follower.returncode == 130, (out, err)
    assert f"detached: task {task['task_id']} goes on; follow it with: mschedule task {task['task_id']} --follow" in err
    assert "Traceback" not in err
    assert fleet.api.get(f"/task/{task['task_id']}")[1]["state"] == "RUNNING"
    again = subprocess.Popen([*CLI, "task", task["task_id"], "--follow"], cwd=ROOT,
                             env=cli_env(fleet, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        cancelled = mschedule(fleet, tmp_path, "cancel", task["task_id"])
        assert cancelled.returncode == 0 and cancelled.stdout == f"task {task['task_id']} CANCELLED\n"
        out, err = again.communicate(timeout=15)
    finally:
        again.kill()
    assert again.returncode == 2, (out, err)
    assert "cli-a: started" in out.splitlines() and "CANCELLED" in out.splitlines()[-1]
    refused = mschedule(fleet, tmp_path, "cancel", "no-such-task")
    assert refused.returncode == 3 and refused.stderr.startswith("mschedule: task no-such-task not found")


def test_exit_3_bad_token_connection_refused_usage_and_refused_request(fleet, tmp_path):
    cases = {
        "bad token": mschedule(fleet, tmp_path, "agents", MSCHEDULE_TOKEN="wrong"),
        "connection refused": mschedule(None, tmp_path, "--url", f"http://127.0.0.1:{free_port()}", "agents"),
        "usage": mschedule(fleet, tmp_path, "run", "true", "--parallel", "many"),
        "selector matches nothing": mschedule(fleet, tmp_path, "run", "true", "--host", "nothing-*"),
    }
    for what, done in cases.items():
        assert done.returncode == 3, (what, done)
        assert "Traceback" not in done.stderr and done.stdout == "", (what, done)
    assert cases["bad token"].stderr.splitlines() == [
        "mschedule: authorization: missing or wrong bearer token (check --token, MSCHEDULE_TOKEN or "
        "'mschedule login')"]
    assert cases["connection refused"].stderr.startswith("mschedule: cannot reach the web tier at http://127.0.0.1:")
    assert "Connection refused" in cases["connection refused"].stderr
    assert cases["usage"].stderr.splitlines()[-1].startswith("mschedule: error: argument --parallel")
    assert cases["selector matches nothing"].stderr.splitlines() == [
        "mschedule: " + cases["selector matches nothing"].stderr.split("mschedule: ", 1)[1].strip()]
    assert "selector" in cases["selector matches nothing"].stderr


def test_login_writes_a_0600_file_that_later_commands_use(fleet, tmp_path):
    wrong = mschedule(None, tmp_path, "login", fleet.api.base, stdin="wrong-token\n")
    config = tmp_path / ".config" / "mschedule" / "cli.toml"
    assert wrong.returncode == 3 and not config.exists()
    done = mschedule(None, tmp_path, "login", fleet.api.base, stdin=fleet.token + "\n")
    assert done.returncode == 0, done
    assert done.stdout.startswith(f"logged in to {fleet.api.base} as token-file (admin);"), done.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and fleet.token in config.read_text()
    agents = mschedule(None, tmp_path, "agents", "--json")  # no URL nor token in the environment
    assert agents.returncode == 0, agents
    assert {info["hostname"] for info in json.loads(agents.stdout).values()} == {"cli-a", "cli-b"}
    xdg = tmp_path / "xdg"
    done = mschedule(None, tmp_path, "login", fleet.api.base, stdin=fleet.token + "\n", XDG_CONFIG_HOME=str(xdg))
    assert done.returncode == 0 and (xdg / "mschedule" / "cli.toml").exists()


def test_agents_label_filters(fleet, tmp_path):
    done = mschedule(fleet, tmp_path, "agents", "--label", "role=web")
    assert done.returncode == 0, done
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["ID", "HOSTNAME", "ONLINE", "BUSY", "LABELS", "HEARTBEAT"]
    assert [r.split()[:5] for r in rows[1:]] == [[fleet.ids["cli-a"], "cli-a", "yes", "no", "role=web"]]


def test_jobs_save_show_diff_run(fleet, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("echo v1\n")
    assert mschedule(fleet, tmp_path, "jobs", "save", "cli-job", "-f", str(script), "--host", "cli-b").returncode == 0
    script.write_text("echo v2\n")
    saved = mschedule(fleet, tmp_path, "jobs", "save", "cli-job", "-f", str(script), "-m", "second")
    assert saved.stdout == "job cli-job version 2 saved\n"
    shown = mschedule(fleet, tmp_path, "jobs", "show", "cli-job", "--version", "1")
    assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == "echo v1"
    diff = mschedule(fleet, tmp_path, "jobs", "diff", "cli-job", "1", "2")
    assert "-echo v1" in diff.stdout and "+echo v2" in diff.stdout and "parameter selector:" in diff.stdout
    ran = mschedule(fleet, tmp_path, "jobs", "run", "cli-job", "--version", "1")
    assert ran.returncode == 0 and "cli-b: v1" in ran.stdout.splitlines(), ran
    assert "cli-job" in mschedule(fleet, tmp_path, "jobs", "list").stdout


def test_retry_reruns_the_failed_hosts(fleet, tmp_path):
    failed = mschedule(fleet, tmp_path, "run", f'[ "$MSCHEDULE_AGENT_ID" != {fleet.ids["cli-a"]} ]', "--host", "cli-*",
                       "--parallel", "2", "--fail-rate", "100", "--json")
    assert failed.returncode == 1
    again = mschedule(fleet, tmp_path, "retry", json.loads(failed.stdout)["task_id"], "--failed", "--json")
    task = json.loads(again.stdout)
    assert again.returncode == 1 and list(task["targets"]) == [fleet.ids["cli-a"]]


def web_requests(fleet: Stack) -> dict[tuple[str, str], int]:
    """Requests the web tier has answered, by (method, route), from its GET /metrics."""
    req = urllib.request.Request(fleet.api.base + "/metrics", headers={"Authorization": f"Bearer {fleet.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    counts: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if line.startswith("mschedule_web_request_duration_seconds_count{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = (labels["method"], labels["route"])
            counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_run_shows_each_line_as_it_comes_over_the_event_stream(fleet, tmp_path):
    """"first" is on stdout while the target still runs, "second" after, exit 0; the CLI followed over one
    event stream: no POST /result poll, no output fetch (the stream carried the whole output)."""
    before = web_requests(fleet)
    proc = subprocess.Popen([*CLI, "run", "echo first; sleep 4; echo second", "--host", "cli-a"], cwd=ROOT,
                            env=cli_env(fleet, tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        shown = _read_until(proc.stdout.fileno(), "cli-a: first\n", 10)
        task = _newest_task(fleet)
        assert task["state"] == "RUNNING" and "second" not in shown, (task, shown)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    lines = (shown + out.decode()).splitlines()
    assert lines[:2] == ["cli-a: first", "cli-a: second"], lines
    after = web_requests(fleet)
    grew = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    assert grew.get(("GET", "/task/{task_id}/events")) == 1, grew
    assert ("POST", "/result") not in grew and ("GET", "/task/{task_id}/target/{agent_id}") not in grew, grew


def test_keys_accept_two_ids(stack, tmp_path):
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(2, wait=False)
    pending = wait_until(lambda: [k["agent_id"] for k in stack.api.get("/keys")[1] if k["state"] == "pending"]
                         if len(stack.api.get("/keys")[1]) == 2 else None, 15, what="two pending keys")
    listed = mschedule(stack, tmp_path, "keys", "list")
    assert listed.returncode == 0 and listed.stdout.count("pending") == 2
    done = mschedule(stack, tmp_path, "keys", "accept", *pending)
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[-1] == "2 done, 0 failed"
    assert {k["state"] for k in stack.api.get("/keys")[1]} == {"accepted"}
    partly = mschedule(stack, tmp_path, "keys", "reject", pending[0], "no-such-agent")
    assert partly.returncode == 1 and partly.stdout.splitlines()[-1] == "1 done, 1 failed"


def _read_until(fd: int, wanted: str, timeout: float) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{wanted!r} not shown; got {seen.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"{wanted!r} not shown before the end; got {seen.decode(errors='replace')!r}")
            seen += chunk
    return seen.decode(errors="replace")


def test_ctrl_c_on_a_terminal_asks_and_cancels(fleet, tmp_path):
    """On a terminal: the progress line is rewritten in place, and Ctrl-C asks; 'y' cancels and the CLI follows
    the task to its end (exit 2)."""
    master_fd, slave_fd = pty.openpty()
    proc = subprocess.Popen([*CLI, "run", "echo started; sleep 30", "--host", "cli-b"], cwd=ROOT,
                            preexec_fn=sigint_default, env=cli_env(fleet, tmp_path), stdin=slave_fd, stdout=slave_fd,
                            stderr=slave_fd)
    os.close(slave_fd)
    try:
        shown = _read_until(master_fd, "running 1", 15)
        assert "\r\x1b[K" in shown
        task_id = shown.split("task ", 1)[1].split()[0]
        proc.send_signal(signal.SIGINT)
        _read_until(master_fd, f"cancel task {task_id}? [y/N]", 10)
        os.write(master_fd, b"y\n")
        rest = _read_until(master_fd, "cancelled 1", 15)
        assert proc.wait(10) == 2, rest
        assert fleet.api.get(f"/task/{task_id}")[1]["state"] == "CANCELLED"
    finally:
        proc.kill()
        os.close(master_fd)


# ---- issue 15: environment, job parameters, schedules, notifications ----------------------------------------
def _task_count(fleet: Stack) -> int:
    status, tasks = fleet.api.get("/tasks?limit=1000")
    assert status == 200, tasks
    return len(tasks)


def test_run_env_reaches_the_script_and_the_summary_shows_it(fleet, tmp_path):
    done = mschedule(fleet, tmp_path, "run", 'echo "got $GREETING and $EMPTY."', "--host", "cli-a",
                     "--env", "GREETING=hello world", "--env", "EMPTY=")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert "cli-a: got hello world and ." in lines, done.stdout
    assert "env: EMPTY='' GREETING='hello world'" in lines, done.stdout
    shown = mschedule(fleet, tmp_path, "task", lines[-1].split()[1])
    assert "env: EMPTY='' GREETING='hello world'" in shown.stdout.splitlines(), shown


def test_env_and_param_errors_are_one_line_exit_3(fleet, tmp_path):
    """A malformed NAME=VALUE is refused before any request; a value the master refuses is its 400 in one line
    that names the field."""
    status, _ = fleet.api.post("/job/cli-checked", {"script": 'echo "v=$VERSION"', "selector": {"hostname": "cli-b"},
                                                    "params": [{"name": "VERSION", "choices": ["1.0", "1.2"],
                                                                "default": "1.0"}]})
    assert status in (200, 201)
    before = _task_count(fleet)
    malformed = [mschedule(fleet, tmp_path, "run", "true", "--host", "cli-a", "--env", "NOVALUE"),
                 mschedule(fleet, tmp_path, "jobs", "run", "cli-checked", "-p", "VERSION")]
    for done in malformed:
        assert done.returncode == 3 and done.stdout == "", done
        assert done.stderr.splitlines()[-1].startswith("mschedule: error: argument "), done
    refused = {"choice": mschedule(fleet, tmp_path, "jobs", "run", "cli-checked", "-p", "VERSION=9"),
               "unknown": mschedule(fleet, tmp_path, "jobs", "run", "cli-checked", "-p", "NOPE=1"),
               "reserved env": mschedule(fleet, tmp_path, "run", "true", "--host", "cli-a", "--env", "MSCHEDULE_X=1")}
    for what, done in refused.items():
        assert done.returncode == 3 and done.stdout == "", (what, done)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, (what, done)
    assert refused["choice"].stderr.startswith("mschedule: params.VERSION"), refused["choice"].stderr
    assert refused["unknown"].stderr.startswith("mschedule: params.NOPE"), refused["unknown"].stderr
    assert refused["reserved env"].stderr.startswith("mschedule: env.MSCHEDULE_X"), refused["reserved env"].stderr
    assert _task_count(fleet) == before  # none of them made a task


def test_jobs_save_declares_params_jobs_run_gives_them(fleet, tmp_path):
    script, declared = tmp_path / "job.sh", tmp_path / "params.json"
    script.write_text('echo "v=$VERSION mode=$MODE"\n')
    declared.write_text(json.dumps([{"name": "VERSION", "choices": ["1.0", "1.2"], "default": "1.0"},
                                    {"name": "MODE", "pattern": "[a-z]+", "default": "slow", "description": "how"}]))
    saved = mschedule(fleet, tmp_path, "jobs", "save", "cli-params", "-f", str(script), "--params-file", str(declared),
                      "--host", "cli-b")
    assert saved.returncode == 0, saved
    shown = mschedule(fleet, tmp_path, "jobs", "show", "cli-params").stdout.splitlines()
    assert shown[2:4] == ["# param VERSION: one of 1.0|1.2, default 1.0", "# param MODE: matching [a-z]+, default slow "
                                                                         "- how"], shown
    given = mschedule(fleet, tmp_path, "jobs", "run", "cli-params", "-p", "VERSION=1.2", "--param", "MODE=fast")
    assert given.returncode == 0, given
    assert "cli-b: v=1.2 mode=fast" in given.stdout.splitlines(), given.stdout
    assert "params: MODE=fast VERSION=1.2" in given.stdout.splitlines(), given.stdout
    assert not any(line.startswith("env: ") for line in given.stdout.splitlines())  # shown once, as params
    defaults = mschedule(fleet, tmp_path, "jobs", "run", "cli-params", "--json")
    assert defaults.returncode == 0, defaults
    task = json.loads(defaults.stdout)
    assert task["params"] == {"VERSION": "1.0", "MODE": "slow"}
    assert task["targets"][fleet.ids["cli-b"]]["output"] == "v=1.0 mode=slow\n"


def test_retry_of_a_task_with_a_secret_needs_it_again(fleet, tmp_path):
    status, _ = fleet.api.post("/job/cli-secret", {
        "script": f'[ "$TOKEN" = s3cret ] && [ "$MSCHEDULE_AGENT_ID" != {fleet.ids["cli-a"]} ]',
        "selector": {"hostname": "cli-*"}, "parallel": 2, "fail_rate": 100,
        "params": [{"name": "TOKEN", "secret": True, "required": True}]})
    assert status in (200, 201)
    failed = mschedule(fleet, tmp_path, "jobs", "run", "cli-secret", "-p", "TOKEN=s3cret")
    assert failed.returncode == 1, failed
    assert "params: TOKEN=***" in failed.stdout.splitlines() and "s3cret" not in failed.stdout, failed.stdout
    task_id = failed.stdout.splitlines()[-1].split()[1]
    without = mschedule(fleet, tmp_path, "retry", task_id, "--failed")
    assert without.returncode == 3 and len(without.stderr.splitlines()) == 1, without
    assert without.stderr.startswith("mschedule: params.TOKEN"), without.stderr
    again = mschedule(fleet, tmp_path, "retry", task_id, "--failed", "-p", "TOKEN=s3cret", "--json")
    task = json.loads(again.stdout)
    # the secret reached the script again: cli-a still fails, but for its id, not for the token
    assert again.returncode == 1 and list(task["targets"]) == [fleet.ids["cli-a"]], again
    assert task["params"] == {"TOKEN": "***"}


def test_schedules_create_list_show_disable_delete(fleet, tmp_path):
    status, _ = fleet.api.post("/job/cli-cron", {"script": "echo cron", "selector": {"hostname": "cli-a"},
                                                 "params": [{"name": "VERSION", "default": "1.0"}]})
    assert status in (200, 201)
    created = mschedule(fleet, tmp_path, "schedules", "create", "cli-cron", "--cron", "*/5 * * * *",
                        "--timezone", "Europe/Berlin", "-p", "VERSION=1.2", "--host", "cli-b")
    assert created.returncode == 0, created
    words = created.stdout.split()
    assert words[0] == "schedule" and words[2:5] == ["created:", "next", "run"], created.stdout
    schedule_id, next_run = words[1], words[5]
    assert next_run.endswith(("+01:00", "+02:00")) and next_run[14:16] in {f"{m:02d}" for m in range(0, 60, 5)}

    listed = mschedule(fleet, tmp_path, "schedules", "list", "--job", "cli-cron")
    assert listed.returncode == 0, listed
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "JOB", "CRON", "TIMEZONE", "NEXT", "RUN", "LAST", "STATE", "ENABLED"]
    assert rows[0].split() == [schedule_id, "cli-cron", "*/5", "*", "*", "*", "*", "Europe/Berlin", next_run, "-",
                               "yes"], rows
    assert mschedule(fleet, tmp_path, "schedules", "list", "--job", "no-such-job").stdout.splitlines()[1:] == []

    shown = mschedule(fleet, tmp_path, "schedules", "show", schedule_id)
    assert shown.returncode == 0, shown
    lines = shown.stdout.splitlines()
    assert lines[0] == f"schedule {schedule_id} (enabled)" and "params:      VERSION=1.2" in lines, lines
    at = lines.index("next runs:")
    assert [line.strip() for line in lines[at + 1:at + 6]][0] == next_run and len(lines[at + 1:at + 6]) == 5

    disabled = mschedule(fleet, tmp_path, "schedules", "disable", schedule_id)
    assert disabled.returncode == 0 and disabled.stdout == f"schedule {schedule_id} disabled\n", disabled
    listed = mschedule(fleet, tmp_path, "schedules", "list", "--job", "cli-cron")
    assert listed.stdout.splitlines()[1].split()[-1] == "no", listed.stdout
    edited = mschedule(fleet, tmp_path, "schedules", "edit", schedule_id, "--cron", "@daily", "--version", "1")
    assert edited.returncode == 0, edited
    assert "cron:        @daily (Europe/Berlin)" in edited.stdout.splitlines(), edited.stdout
    assert "job:         cli-cron (version 1)" in edited.stdout.splitlines(), edited.stdout
    edited = mschedule(fleet, tmp_path, "schedules", "edit", schedule_id, "--target", fleet.ids["cli-a"])
    assert f"targets:     {fleet.ids['cli-a']}" in edited.stdout.splitlines(), edited.stdout
    assert "selector:" not in edited.stdout  # hosts given replace both: --host cli-b is gone
    assert mschedule(fleet, tmp_path, "schedules", "edit", schedule_id, "--job-hosts").returncode == 0
    stored = fleet.api.get(f"/schedule/{schedule_id}")[1]
    assert (stored["targets"], stored["selector"]) == (None, None), stored  # not set: the job's own

    deleted = mschedule(fleet, tmp_path, "schedules", "delete", schedule_id)
    assert deleted.returncode == 0 and deleted.stdout == f"schedule {schedule_id} deleted\n", deleted
    assert schedule_id not in mschedule(fleet, tmp_path, "schedules", "list").stdout
    gone = mschedule(fleet, tmp_path, "schedules", "show", schedule_id)
    assert gone.returncode == 3 and len(gone.stderr.splitlines()) == 1 and "Traceback" not in gone.stderr, gone
    bad = mschedule(fleet, tmp_path, "schedules", "create", "cli-cron", "--cron", "61 * * * *")
    assert bad.returncode == 3 and bad.stderr.startswith("mschedule: cron"), bad



def test_a_task_a_schedule_fired_shows_the_schedule_and_its_params(stack, tmp_path):
    """The master's schedule clock runs 30 times faster (``--schedule-clock``): '* * * * *' fires every 2 s."""
    stack.master("--schedule-clock", f"{time.time():.3f}:30")
    stack.web()
    stack.agents(1, extra=("--hostname", "cron-a"))
    script, declared = tmp_path / "job.sh", tmp_path / "params.json"
    script.write_text('echo "v=$VERSION"\n')
    declared.write_text(json.dumps([{"name": "VERSION", "default": "1"}]))
    saved = mschedule(stack, tmp_path, "jobs", "save", "cron-job", "-f", str(script), "--params-file", str(declared),
                      "--host", "cron-a")
    assert saved.returncode == 0, saved
    created = mschedule(stack, tmp_path, "schedules", "create", "cron-job", "--cron", "* * * * *", "-p", "VERSION=2",
                        "--json")
    assert created.returncode == 0, created
    schedule_id = json.loads(created.stdout)["schedule_id"]

    def fired() -> list[dict]:
        listed = mschedule(stack, tmp_path, "tasks", "--schedule", schedule_id, "--json")
        return [t for t in json.loads(listed.stdout) if t["state"] == "SUCCEED"]

    task = wait_until(fired, 30, interval=0.5, what="a fired task that ended")[-1]
    assert mschedule(stack, tmp_path, "schedules", "disable", schedule_id).returncode == 0
    shown = mschedule(stack, tmp_path, "task", task["task_id"])
    lines = shown.stdout.splitlines()
    assert "cron-a: v=2" in lines and "params: VERSION=2" in lines, lines
    tick = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(task["schedule_tick"]))
    assert f"schedule: {schedule_id} (tick {tick})" in lines, lines
    listed = mschedule(stack, tmp_path, "tasks", "--schedule", schedule_id).stdout.splitlines()
    assert task["task_id"] in {row.split()[0] for row in listed[1:]}
    assert all(row.split()[-2:] == ["cron-job", "v1"] for row in listed[1:]), listed
    details = mschedule(stack, tmp_path, "schedules", "show", schedule_id).stdout.splitlines()
    runs = details[details.index("last runs:") + 2:]
    assert task["task_id"] in {row.split()[1] for row in runs if len(row.split()) == 3}, details


def test_notify_posts_the_outcome_and_task_shows_the_delivery(fleet, tmp_path):
    hook = Receiver()
    try:
        done = mschedule(fleet, tmp_path, "run", "true", "--host", "cli-a", "--notify", f"{hook.base}/ok")
        assert done.returncode == 0, done
        task_id = done.stdout.splitlines()[-1].split()[1]
        wait_until(lambda: hook.calls, 15, what="the notification")
        path, headers, body = hook.calls[0]["path"], hook.calls[0]["headers"], json.loads(hook.calls[0]["body"])
        assert path == "/ok" and body["task_id"] == task_id and body["state"] == "SUCCEED", hook.calls
        assert headers.get("X-Mschedule-Signature", "").startswith("sha256="), headers
        shown = wait_until(lambda: (s := mschedule(fleet, tmp_path, "task", task_id)) and "delivered" in s.stdout
                           and s, 15, interval=0.5, what="the delivery in the task")
        assert f"notify {hook.base}/ok: delivered (1 attempt, HTTP 200)" in shown.stdout.splitlines(), shown.stdout
        only = mschedule(fleet, tmp_path, "run", "true", "--host", "cli-a", "--notify", f"{hook.base}/failed",
                         "--notify", f"{hook.base}/cancelled", "--notify-on", "failed,cancelled")
        assert only.returncode == 0, only
        assert f"notify {hook.base}/failed: not sent (only on CANCELLED,FAILED)" in only.stdout.splitlines(), only
        assert f"notify {hook.base}/cancelled: not sent (only on CANCELLED,FAILED)" in only.stdout.splitlines(), only
        time.sleep(1)
    finally:
        hook.close()
    assert len(hook.calls) == 1, hook.calls  # none for the SUCCEED of the second task


def test_tokens_roles_whoami_and_the_audit_trail(fleet, tmp_path):
    """An admin (the web tier's file token) makes a viewer's token with the CLI; the viewer is who whoami says,
    may not run a task (one line, exit 3, naming the role), the refusal is in the audit trail, and once the
    token is deleted it is refused."""
    made = mschedule(fleet, tmp_path, "tokens", "create", "--user", "vera", "--role", "viewer", "--expires-in", "1h")
    assert made.returncode == 0, made
    token = made.stdout.strip()
    assert made.stdout == token + "\n" and token.startswith("ms_")  # only the token: TOKEN=$(...) captures it
    assert "shown this once" in made.stderr and token not in made.stderr
    listed = mschedule(fleet, tmp_path, "tokens", "list", "--json")
    assert listed.returncode == 0, listed
    [record] = [t for t in json.loads(listed.stdout) if t["user"] == "vera"]
    token_id = record["token_id"]
    assert record["role"] == "viewer" and record["created_by"] == "token-file" and token not in listed.stdout
    assert f"token {token_id} for vera (viewer), expires " in made.stderr
    table_rows = mschedule(fleet, tmp_path, "tokens", "list").stdout.splitlines()
    assert table_rows[0].split()[:3] == ["ID", "USER", "ROLE"]
    assert any(row.split()[:3] == [token_id, "vera", "viewer"] and "token-file" in row for row in table_rows)

    me = mschedule(fleet, tmp_path, "whoami", MSCHEDULE_TOKEN=token)
    assert me.returncode == 0, me
    assert me.stdout.splitlines() == ["user:     vera", "role:     viewer", f"token:    {token_id}", "selector: -"]
    before = _task_count(fleet)
    refused = mschedule(fleet, tmp_path, "run", "true", "--host", "cli-a", MSCHEDULE_TOKEN=token)
    assert refused.returncode == 3, refused
    assert refused.stderr == "mschedule: role: task.submit needs the operator role; vera's token is viewer\n"
    assert refused.stdout == "" and _task_count(fleet) == before
    not_admin = mschedule(fleet, tmp_path, "audit", MSCHEDULE_TOKEN=token)
    assert (not_admin.returncode, not_admin.stderr) == (3, "mschedule: role: read needs the admin role; vera's token "
                                                           "is viewer\n")

    audit = mschedule(fleet, tmp_path, "audit", "--user", "vera", "--since", "10m")
    assert audit.returncode == 0, audit
    lines = audit.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "USER", "ROLE", "ACTION", "OBJECT", "STATUS", "OUTCOME"]
    assert [line.split()[3:] for line in lines[1:]] == [["vera", "viewer", "task.submit", "-", "403", "refused"]]
    seq = int(lines[1].split()[0])
    older = json.loads(mschedule(fleet, tmp_path, "audit", "--before", str(seq), "--json").stdout)
    assert older and all(r["seq"] < seq for r in older)  # the next page
    records = json.loads(mschedule(fleet, tmp_path, "audit", "--action", "token.create", "--json").stdout)
    assert any(r["object"] == token_id and r["user"] == "token-file" and r["outcome"] == "done" for r in records)

    deleted = mschedule(fleet, tmp_path, "tokens", "delete", token_id)
    assert (deleted.returncode, deleted.stdout) == (0, f"token {token_id} deleted\n"), deleted
    gone = mschedule(fleet, tmp_path, "whoami", MSCHEDULE_TOKEN=token)
    assert gone.returncode == 3 and gone.stderr == (
        "mschedule: authorization: missing or wrong bearer token (check --token, MSCHEDULE_TOKEN or "
        "'mschedule login')\n"), gone
    again = mschedule(fleet, tmp_path, "tokens", "delete", token_id)
    assert (again.returncode, again.stderr) == (3, f"mschedule: token '{token_id}' not found\n"), again


def test_an_operators_token_runs_inside_its_selector_and_task_shows_who(fleet, tmp_path):
    made = mschedule(fleet, tmp_path, "tokens", "create", "--user", "olga", "--role", "operator",
                     "--label", "role=web")
    assert made.returncode == 0, made
    olga = made.stdout.strip()
    me = mschedule(fleet, tmp_path, "whoami", MSCHEDULE_TOKEN=olga)
    assert me.returncode == 0 and me.stdout.splitlines()[1::2] == ["role:     operator", "selector: labels=role=web"]
    outside = mschedule(fleet, tmp_path, "run", "true", "--host", "cli-b", MSCHEDULE_TOKEN=olga)
    assert outside.returncode == 3 and len(outside.stderr.splitlines()) == 1, outside
    assert outside.stderr.startswith("mschedule: ") and fleet.ids["cli-b"] in outside.stderr
    started = mschedule(fleet, tmp_path, "run", "sleep 30", "--host", "cli-a", "--detach", MSCHEDULE_TOKEN=olga)
    assert started.returncode == 0, started
    task_id = started.stdout.strip()
    cancelled = mschedule(fleet, tmp_path, "cancel", task_id)  # the admin's file token
    assert cancelled.returncode == 0, cancelled
    shown = mschedule(fleet, tmp_path, "task", task_id)
    assert shown.returncode == 0, shown
    assert "created by: olga" in shown.stdout.splitlines() and "cancelled by: token-file" in shown.stdout.splitlines()
    wait_until(lambda: fleet.api.get(f"/task/{task_id}")[1]["finished"] is not None, 15, what="the cancel")
