"""The CLI without a server: what each flag becomes in the request, the exit-status mapping, the config file
and how a followed task is shown (tests/integration/test_cli.py runs it against the real stack)."""
from __future__ import annotations

import datetime
import fnmatch
import http.server
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from mschedule.cli import main as cli
from mschedule.cli.client import ApiError, Client, CliError, config_path, read_config, resolve_settings, write_config
from mschedule.cli.follow import EventSource, Follower, Progress, SseParser, details, exit_status, when, with_details


class FakeClient:
    """Answers ``GET /task/targets`` (with its filters applied as the web tier does) and target outputs."""

    def __init__(self, agents: dict | None = None, outputs: dict | None = None) -> None:
        self.agents = agents or {}
        self.outputs = outputs or {}
        self.calls: list[tuple] = []

    def get(self, path, query=None, **kw):
        self.calls.append(("GET", path, query))
        if path == "/task/targets":
            pairs = list(query or [])
            glob = dict(pairs).get("hostname")
            wanted = dict(v.split(":", 1) for k, v in pairs if k == "label")
            return {a: i for a, i in self.agents.items()
                    if (glob is None or fnmatch.fnmatchcase(i["hostname"], glob))
                    and all(i["labels"].get(k) == v for k, v in wanted.items())}
        agent_id = path.rsplit("/", 1)[1]
        return {"output": self.outputs.get(agent_id, "")}

    def quote(self, part):
        return part


AGENTS = {"a1": {"hostname": "web-1", "labels": {"dc": "bj"}, "online": True},
          "a2": {"hostname": "web-2", "labels": {"dc": "sh"}, "online": True},
          "a3": {"hostname": "db-1", "labels": {"dc": "bj"}, "online": False}}


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_run_flags_become_the_post_task_body():
    args = parse("run", "echo hi", "--host", "web-*", "--label", "dc=bj", "--label", "role=db", "--group", "g",
                 "--target", "a9", "--target", "a9", "--parallel", "3", "--fail-count", "0", "--fail-rate", "50",
                 "--timeout", "9", "--batch-by", "dc")
    assert cli.task_body(args, None) == {
        "script": "echo hi", "targets": ["a9"],
        "selector": {"hostname": "web-*", "labels": {"dc": "bj", "role": "db"}, "group": "g"},
        "parallel": 3, "fail_count": 0, "fail_rate": 50.0, "timeout": 9.0, "batch_by": "dc"}
    # only what was given: the master's defaults apply to the rest
    assert cli.task_body(parse("run", "true", "--target", "a1"), None) == {"script": "true", "targets": ["a1"]}


def test_several_host_globs_are_resolved_with_the_labels_into_targets():
    client = FakeClient(AGENTS)
    args = parse("run", "true", "--host", "web-*", "--host", "db-*", "--label", "dc=bj", "--target", "a7")
    assert cli.selection(args, client) == {"targets": ["a7", "a1", "a3"]}
    assert [c[2] for c in client.calls] == [[("hostname", "web-*"), ("label", "dc:bj")],
                                            [("hostname", "db-*"), ("label", "dc:bj")]]
    with pytest.raises(CliError, match="--host nope-\\*: matches no agent"):
        cli.selection(parse("run", "true", "--host", "web-*", "--host", "nope-*"), client)
    with pytest.raises(CliError, match="--group"):
        cli.selection(parse("run", "true", "--host", "a", "--host", "b", "--group", "g"), client)


def test_all_is_every_online_agent_and_alone():
    assert cli.selection(parse("run", "true", "--all"), FakeClient(AGENTS)) == {"targets": ["a1", "a2"]}
    with pytest.raises(CliError, match="--all: not together"):
        cli.selection(parse("run", "true", "--all", "--host", "x"), FakeClient(AGENTS))
    with pytest.raises(CliError, match="no agent is online"):
        cli.selection(parse("run", "true", "--all"), FakeClient({}))


def test_a_run_needs_hosts_and_exactly_one_script(tmp_path, monkeypatch):
    with pytest.raises(CliError, match="no hosts chosen"):
        cli.task_body(parse("run", "true"), None)
    with pytest.raises(CliError, match="not both"):
        cli.read_script(parse("run", "true", "-f", "x"))
    with pytest.raises(CliError, match="no script"):
        cli.read_script(parse("run", "--all"))
    script = tmp_path / "s.sh"
    script.write_text("echo from file\n")
    assert cli.read_script(parse("run", "-f", str(script))) == "echo from file\n"
    with pytest.raises(CliError, match="-f .*missing"):
        cli.read_script(parse("run", "-f", str(tmp_path / "missing")))
    for argv in (("run", "-"), ("run", "-f", "-")):
        monkeypatch.setattr("sys.stdin", io.StringIO("echo from stdin\n"))
        assert cli.read_script(parse(*argv)) == "echo from stdin\n"


@pytest.mark.parametrize("argv", [["run", "true", "--label", "novalue"], ["run", "--parallel", "x"], ["nosuch"],
                                  [], ["keys"], ["completion", "tcsh"]])
def test_usage_errors_exit_3_with_one_line(argv, capsys):
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "mschedule: error:" in err and "Traceback" not in err


def test_errors_after_parsing_exit_3_without_a_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("MSCHEDULE_URL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["agents"]) == 3
    assert capsys.readouterr().err == ("mschedule: no web tier URL: give --url, set MSCHEDULE_URL, or run "
                                       "'mschedule login URL'\n")
    assert cli.main(["--url", "ftp://x", "agents"]) == 3
    assert "--url: expected http(s)://host:port" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert cli.main(["run", "--help"]) == 0
    assert "--fail-rate" in capsys.readouterr().out


def test_url_and_token_before_or_after_the_command():
    for argv in (["--url", "h:1", "--token", "t", "agents"], ["agents", "--url", "h:1", "--token", "t"]):
        args = parse(*argv)
        assert (args.url, args.token) == ("h:1", "t")
    assert not hasattr(parse("agents"), "url")


@pytest.mark.parametrize("state,counts,status", [
    ("SUCCEED", {"SUCCEED": 2}, 0),
    ("SUCCEED", {"SUCCEED": 1, "FAILED": 1}, 1),  # fail_rate 100: the task SUCCEED, a target did not
    ("FAILED", {"SUCCEED": 1, "FAILED": 1}, 1),  # limits breached by the last target: nothing was stopped
    ("FAILED", {"FAILED": 1, "CANCELLED": 1}, 2),  # aborted: a target never ran
    ("CANCELLED", {"SUCCEED": 1, "CANCELLED": 1}, 2),
    ("CANCELLED", {"SUCCEED": 2}, 2),  # cancelled as its last scripts ended
])
def test_exit_status_mapping(state, counts, status):
    total = sum(counts.values())
    assert exit_status({"state": state, "total": total, "counts": counts}) == status


def test_retry_keys_agents_and_jobs_bodies():
    assert cli.retry_body(parse("retry", "t1")) == {"only": ["FAILED", "CANCELLED"]}
    assert cli.retry_body(parse("retry", "t1", "--failed")) == {"only": ["FAILED"]}
    assert cli.keys_body(parse("keys", "accept", "a1", "a2", "a1")) == {"agent_ids": ["a1", "a2"]}
    assert cli.keys_body(parse("keys", "reject", "--all-pending")) == {"all_pending": True}
    with pytest.raises(CliError):
        cli.keys_body(parse("keys", "accept"))
    assert cli.agents_query(parse("agents", "--host", "web-*", "--label", "dc=bj")) == [
        ("hostname", "web-*"), ("label", "dc:bj")]
    assert cli.job_run_body(parse("jobs", "run", "deploy", "--version", "2", "--label", "dc=bj",
                                  "--parallel", "5"), None) == {
        "version": 2, "selector": {"labels": {"dc": "bj"}}, "parallel": 5}
    assert cli.job_run_body(parse("jobs", "run", "deploy"), None) == {}


def test_env_params_and_notify_become_body_fields():
    args = parse("run", "echo $A", "--target", "a1", "--env", "A=1", "--env", "B=x=y", "--env", "EMPTY=",
                 "--env", "A=2", "--notify", "https://h/1", "--notify", "https://h/2", "--notify", "https://h/1",
                 "--notify-on", "failed, Cancelled,FAILED")
    assert cli.task_body(args, None) == {
        "script": "echo $A", "targets": ["a1"], "env": {"A": "2", "B": "x=y", "EMPTY": ""},  # the last A wins
        "notify": [{"url": "https://h/1", "on": ["FAILED", "CANCELLED"]},
                   {"url": "https://h/2", "on": ["FAILED", "CANCELLED"]}]}
    # --notify-on left out: the master's default (every end state)
    assert cli.task_body(parse("run", "true", "--target", "a1", "--notify", "https://h"), None)["notify"] == [
        {"url": "https://h"}]
    assert cli.job_run_body(parse("jobs", "run", "deploy", "-p", "VERSION=1.2", "--param", "MODE=fast",
                                  "--notify", "https://h", "--notify-on", "SUCCEED"), None) == {
        "params": {"VERSION": "1.2", "MODE": "fast"}, "notify": [{"url": "https://h", "on": ["SUCCEED"]}]}
    assert cli.retry_body(parse("retry", "t1", "-p", "TOKEN=s3cret")) == {
        "only": ["FAILED", "CANCELLED"], "params": {"TOKEN": "s3cret"}}
    with pytest.raises(CliError, match="--notify-on: give --notify URL too"):
        cli.task_body(parse("run", "true", "--target", "a1", "--notify-on", "FAILED"), None)


@pytest.mark.parametrize("argv,flag", [
    (["run", "true", "--all", "--env", "NOVALUE"], "--env"),
    (["run", "true", "--all", "--env", "=value"], "--env"),
    (["jobs", "run", "deploy", "-p", "VERSION"], "-p/--param"),
    (["jobs", "run", "deploy", "--param", "=1"], "-p/--param"),
    (["retry", "t1", "-p", "TOKEN"], "-p/--param"),
    (["run", "true", "--all", "--notify", "https://h", "--notify-on", ","], "--notify-on"),
])
def test_a_malformed_assignment_is_a_usage_error_before_any_request(argv, flag, capsys, monkeypatch):
    monkeypatch.setattr(cli, "make_client", lambda args: pytest.fail("a request was made"))
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"mschedule: error: argument {flag}: expected "), err


def test_schedules_create_and_edit_bodies():
    args = parse("schedules", "create", "deploy", "--cron", "*/5 * * * *", "--timezone", "Europe/Berlin",
                 "--version", "3", "--label", "role=web", "--target", "a1", "-p", "VERSION=1.2", "--overlap", "queue",
                 "--catchup", "last", "--disabled", "--notify", "https://h", "--notify-on", "failed",
                 "--description", "every 5 min")
    assert cli.schedule_body(args, None) == {
        "job": "deploy", "cron": "*/5 * * * *", "timezone": "Europe/Berlin", "version": 3,
        "targets": ["a1"], "selector": {"labels": {"role": "web"}}, "params": {"VERSION": "1.2"},
        "overlap": "queue", "catchup": "last", "enabled": False, "description": "every 5 min",
        "notify": [{"url": "https://h", "on": ["FAILED"]}]}
    # only what was given: the master's defaults, the job's own hosts and version
    assert cli.schedule_body(parse("schedules", "create", "deploy", "--cron", "@daily"), None) == {
        "job": "deploy", "cron": "@daily"}
    edit = cli.schedule_patch
    assert edit(parse("schedules", "edit", "s1", "--cron", "0 3 * * *", "--version", "latest"), None) == {
        "cron": "0 3 * * *", "version": None}
    assert edit(parse("schedules", "edit", "s1", "--version", "2", "--description", ""), None) == {
        "version": 2, "description": ""}
    # hosts given replace both: a --host does not leave the old targets beside it
    assert edit(parse("schedules", "edit", "s1", "--host", "web-*"), None) == {
        "targets": None, "selector": {"hostname": "web-*"}}
    assert edit(parse("schedules", "edit", "s1", "--job-hosts", "--no-params", "--no-notify"), None) == {
        "targets": None, "selector": None, "params": {}, "notify": []}
    for argv, message in ((["s1"], "nothing to change"), (["s1", "--no-params", "-p", "A=1"], "--no-params"),
                          (["s1", "--no-notify", "--notify", "https://h"], "--no-notify"),
                          (["s1", "--job-hosts", "--target", "a1"], "--job-hosts")):
        with pytest.raises(CliError, match=message):
            edit(parse("schedules", "edit", *argv), None)


@pytest.mark.parametrize("argv,error", [
    (["schedules", "create", "deploy"], "the following arguments are required: --cron"),
    (["schedules", "edit", "s1", "--version", "x"], "argument --version: expected a version number or 'latest'"),
    (["schedules", "create", "deploy", "--cron", "@daily", "--overlap", "never"], "argument --overlap: invalid"),
    (["schedules", "create", "deploy", "--cron", "@daily", "--all"], "unrecognized arguments: --all"),
    (["schedules", "enable"], "the following arguments are required: ID"),
    (["schedules"], "the following arguments are required: ACTION"),
])
def test_schedules_usage_errors_exit_3(argv, error, capsys, monkeypatch):
    """--all is not offered: it would freeze the agents online at create time into every later run."""
    monkeypatch.setattr(cli, "make_client", lambda args: pytest.fail("a request was made"))
    assert cli.main(argv) == 3
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"mschedule: error: {error}")


SCHEDULE = {"schedule_id": "s1", "job": "deploy", "version": None, "cron": "*/5 * * * *", "timezone": "Europe/Berlin",
            "enabled": True, "overlap": "skip", "catchup": "none", "targets": [], "selector": None,
            "params": {"VERSION": "1.2", "TOKEN": "***"}, "notify": [{"url": "https://h", "on": ["FAILED"]}],
            "description": "", "created": 0, "next_run": 300, "next_run_local": "1970-01-01T01:05:00+01:00",
            "last_tick": None, "last_task_id": None, "last_state": None, "fired": 2, "skipped": 1, "missed": 0,
            "next_runs": ["1970-01-01T01:05:00+01:00", "1970-01-01T01:10:00+01:00"],
            "runs": [{"tick": 0, "task_id": "t9", "state": "SUCCEED"}],
            "skips": [{"tick": 300, "reason": "overlap", "count": 1}, {"tick": 0, "reason": "missed", "count": 12}]}


def test_schedule_ids_complete_from_the_web_tier(monkeypatch):
    asked = []
    monkeypatch.setenv("MSCHEDULE_URL", "http://sched:1")
    monkeypatch.setattr(Client, "get", lambda self, path, **kw: asked.append((self.url, path)) or [
        {"schedule_id": "5c1d"}, {"schedule_id": "77aa"}])
    assert cli.SCHEDULE_IDS("5", parse("schedules", "show", "x")) == ["5c1d"]
    assert asked == [("http://sched:1", "/schedules")]
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    schedules = next(a for a in commands["schedules"]._actions if a.dest == "schedules_action").choices
    for action in ("show", "edit", "enable", "disable", "delete"):
        ids = next(a for a in schedules[action]._actions if a.dest == "id")
        assert ids.completer is cli.SCHEDULE_IDS, action
    monkeypatch.setattr(Client, "get", lambda self, path, **kw: (_ for _ in ()).throw(CliError("down")))
    assert cli.SCHEDULE_IDS("", parse("schedules", "show", "x")) == []  # nothing, never a traceback


def test_schedules_show_text():
    lines = cli.schedule_text(SCHEDULE).splitlines()
    assert lines[:3] == ["schedule s1 (enabled)", "job:         deploy (the latest version at each run)",
                         "cron:        */5 * * * * (Europe/Berlin)"]
    assert "hosts:       the job's own" in lines and "params:      TOKEN=*** VERSION=1.2" in lines
    assert "notify:      https://h (on FAILED)" in lines and "fired 2, skipped 1, missed 0" in lines
    at = lines.index("next runs:")
    assert lines[at + 1:at + 3] == ["  1970-01-01T01:05:00+01:00", "  1970-01-01T01:10:00+01:00"]
    at = lines.index("last runs:")
    assert lines[at + 1].split() == ["TICK", "TASK", "STATE"]
    assert lines[at + 2].split() == ["1970-01-01T01:00:00+01:00", "t9", "SUCCEED"]  # in the schedule's zone
    assert [line.split() for line in lines[-2:]] == [["1970-01-01T01:05:00+01:00", "1", "overlap"],
                                                     ["1970-01-01T01:00:00+01:00", "12", "missed"]]
    pinned = cli.schedule_text({**SCHEDULE, "version": 2, "enabled": False, "targets": ["a1"], "next_runs": [],
                                "runs": [], "skips": []}).splitlines()
    assert pinned[0] == "schedule s1 (disabled)" and pinned[1] == "job:         deploy (version 2)"
    assert "targets:     a1" in pinned and pinned[-1] == "next runs: none (disabled)"


def test_jobs_show_a_declared_parameter_on_one_line():
    assert cli.declaration_text({"name": "VERSION", "description": "what to deploy", "default": "1.0",
                                 "required": False, "choices": ["1.0", "1.2"], "pattern": None, "secret": False}) == \
        "VERSION: one of 1.0|1.2, default 1.0 - what to deploy"
    assert cli.declaration_text({"name": "TOKEN", "description": "", "default": None, "required": True,
                                 "choices": None, "pattern": "[a-z0-9]+", "secret": True}) == \
        "TOKEN (required, secret): matching [a-z0-9]+"
    assert cli.declaration_text({"name": "X"}) == "X"


def test_job_save_body(tmp_path):
    script = tmp_path / "deploy.sh"
    script.write_text("make deploy\n")
    args = parse("jobs", "save", "deploy", "-f", str(script), "-m", "first", "--host", "web-*", "--timeout", "60")
    assert cli.job_body(args, None) == {"script": "make deploy\n", "message": "first",
                                        "selector": {"hostname": "web-*"}, "timeout": 60.0}
    declared = tmp_path / "params.json"
    declared.write_text('[{"name": "VERSION", "default": "1.0"}]')
    args = parse("jobs", "save", "deploy", "-f", str(script), "--params-file", str(declared),
                 "--notify", "https://h", "--notify-on", "FAILED")
    assert cli.job_body(args, None) == {"script": "make deploy\n", "params": [{"name": "VERSION", "default": "1.0"}],
                                        "notify": [{"url": "https://h", "on": ["FAILED"]}]}
    declared.write_text("VERSION=1.0")
    with pytest.raises(CliError, match="--params-file .*params.json: not JSON"):
        cli.job_body(args, None)
    with pytest.raises(CliError, match="--params-file .*missing.json: "):
        cli.job_body(parse("jobs", "save", "deploy", "-f", str(script), "--params-file",
                           str(tmp_path / "missing.json")), None)


def test_settings_flag_then_environment_then_the_config_file(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert config_path(env) == str(tmp_path / "mschedule" / "cli.toml")
    assert config_path({"HOME": "/nonexistent"}).endswith("/.config/mschedule/cli.toml")
    write_config(config_path(env), "http://file:1", "file-token")
    assert read_config(config_path(env)) == {"url": "http://file:1", "token": "file-token"}
    s = resolve_settings(None, None, env)
    assert (s.url, s.token) == ("http://file:1", "file-token")
    s = resolve_settings(None, None, {**env, "MSCHEDULE_URL": "env:2", "MSCHEDULE_TOKEN": "env-token"})
    assert (s.url, s.token) == ("http://env:2", "env-token")
    s = resolve_settings("https://flag:3/", None, {**env, "MSCHEDULE_TOKEN": "env-token"})
    assert (s.url, s.token) == ("https://flag:3", "env-token")
    (tmp_path / "mschedule" / "cli.toml").write_text("url = [not toml")
    with pytest.raises(CliError, match="cannot read"):
        resolve_settings(None, None, env)


def test_the_config_file_is_0600_whatever_the_umask(tmp_path, permissive_umask):
    path = tmp_path / "cfg" / "mschedule" / "cli.toml"
    write_config(str(path), "http://h:1", 'to"ken\u00e9')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert read_config(str(path))["token"] == 'to"ken\u00e9'


def snapshot(states: dict[str, str], hostnames: dict[str, str], state: str = "RUNNING", finished=None) -> dict:
    counts = {s: list(states.values()).count(s) for s in ("WAITING", "RUNNING", "SUCCEED", "FAILED", "CANCELLED")}
    return {"task_id": "t1", "state": state, "total": len(states), "counts": counts, "finished": finished,
            "started": 10.0, "targets": {a: {"hostname": hostnames[a], "state": s, "code": 0 if s == "SUCCEED" else 1,
                                             "started": 10.0, "finished": 12.5 if s != "RUNNING" else None}
                                         for a, s in states.items()}}


def test_each_ended_host_output_is_shown_once_after_its_hostname():
    names = {"a1": "web-1", "a2": "web-1", "a3": "db-1"}
    snapshots = [snapshot({"a1": "RUNNING", "a2": "RUNNING", "a3": "SUCCEED"}, names),
                 snapshot({"a1": "SUCCEED", "a2": "FAILED", "a3": "SUCCEED"}, names, "SUCCEED", 13.0)]
    client = FakeClient(outputs={"a1": "one\ntwo\n", "a2": "boom", "a3": ""})
    out, err = io.StringIO(), io.StringIO()
    follower = Follower(client, "t1", out=out, progress=Progress(err, tty=False), source=lambda: snapshots)
    snapshots[1]["targets"]["a2"].update(output="boom\n", output_omitted=0)  # whole in the snapshot: not fetched
    task = follower.run()
    assert out.getvalue() == "web-1/a1: one\nweb-1/a1: two\nweb-1/a2: boom\n"
    assert [c[1] for c in client.calls] == ["/task/t1/target/a3", "/task/t1/target/a1"]
    assert err.getvalue().splitlines() == [
        "task t1 RUNNING 1/3 done: waiting 0 running 2 succeed 1 failed 0 cancelled 0",
        "task t1 SUCCEED 3/3 done: waiting 0 running 0 succeed 2 failed 1 cancelled 0"]
    summary = follower.summary(task).splitlines()
    assert summary.pop(0) == ""  # a blank line between the outputs and the table
    assert summary[0].split() == ["HOST", "STATE", "CODE", "DURATION"]
    assert summary[1].split() == ["db-1", "SUCCEED", "0", "2.5s"]
    assert summary[-1] == "task t1 SUCCEED in 3.0s: waiting 0 running 0 succeed 2 failed 1 cancelled 0"


def test_the_summary_shows_params_env_schedule_and_notifications_when_present():
    task = snapshot({"a1": "SUCCEED"}, {"a1": "web-1"}, "SUCCEED", 13.0)
    plain = Follower(FakeClient(), "t1").summary(task).splitlines()
    task.update(env={"VERSION": "1.2", "TOKEN": "***", "NOTE": "a b", "BIG": "x" * 100}, secrets=["TOKEN"],
                params={"VERSION": "1.2", "TOKEN": "***"}, schedule_id="s1", schedule_tick=None,
                notify=[{"url": "https://h/1", "on": ["FAILED"]}], notifications=[])
    lines = Follower(FakeClient(), "t1").summary(task).splitlines()
    assert lines[:len(plain) - 1] == plain[:-1] and lines[-1] == plain[-1]  # the table first, the state last
    assert lines[len(plain) - 1:-1] == [
        "params: TOKEN=*** VERSION=1.2",
        f"env: BIG={'x' * 60}...(100 bytes) NOTE='a b'",  # a job parameter is in the env too: shown once
        "schedule: s1",
        "notify https://h/1: not sent (only on FAILED)",  # the task SUCCEED
    ]
    running = {**task, "finished": None}
    assert details(running)[-1] == "notify https://h/1 (on FAILED)"  # not ended: what it will notify
    task["notifications"] = [
        {"url": "https://h/1", "on": ["FAILED"], "state": "delivered", "attempts": 1, "last_status": 200,
         "last_error": None, "next_attempt": None},
        {"url": "https://h/2", "on": ["FAILED"], "state": "pending", "attempts": 2, "last_status": None,
         "last_error": "connection refused", "next_attempt": 0}]
    task["notify"].extend([{"url": "https://h/2", "on": ["FAILED"]}, {"url": "https://h/3", "on": ["FAILED"]}])
    lines = Follower(FakeClient(), "t1").summary(task).splitlines()
    assert lines[-4:-1] == ["notify https://h/1: delivered (1 attempt, HTTP 200)",
                            f"notify https://h/2: pending (2 attempts, connection refused, next {when(0)})",
                            "notify https://h/3: not sent (only on FAILED)"]  # the task SUCCEED
    # a task from before issue 15, or one without any of it: nothing more than before
    task.update(env={}, params={}, secrets=[], schedule_id=None, notify=[], notifications=[])
    assert Follower(FakeClient(), "t1").summary(task).splitlines() == plain


def test_a_followed_task_gets_its_details_from_the_summary_without_outputs():
    """The event stream's task has no env, params, schedule nor notifications: one GET without outputs adds
    them (all of them, so nothing is fetched for a task that has them); a failed GET leaves them out."""
    class Answering(FakeClient):
        def get(self, path, query=None, **kw):
            self.calls.append(("GET", path, query))
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    streamed = snapshot({"a1": "SUCCEED"}, {"a1": "h"}, "SUCCEED", 13.0)
    client = Answering()
    client.answer = {**streamed, "env": {"A": "1"}, "secrets": [], "params": {}, "schedule_id": None,
                     "schedule_tick": None, "notify": [], "notifications": [], "created_by": "alice",
                     "cancelled_by": None, "script": "not taken"}
    task = with_details(client, streamed)
    assert client.calls == [("GET", "/task/t1", {"output_limit": 0})]
    assert task["env"] == {"A": "1"} and "script" not in task and task["targets"] is streamed["targets"]
    assert with_details(client, task) is task and len(client.calls) == 1
    client.answer = CliError("cannot reach the web tier")
    assert with_details(client, streamed) is streamed


def test_progress_on_a_terminal_is_one_line_rewritten():
    err = io.StringIO()
    progress = Progress(err, tty=True)
    progress.update(snapshot({"a1": "RUNNING"}, {"a1": "h"}))
    progress.update(snapshot({"a1": "RUNNING"}, {"a1": "h"}))
    progress.clear()
    assert "\n" not in err.getvalue() and err.getvalue().count("\r\x1b[K") == 3


def test_shell_completion_completes_commands_and_flags(tmp_path):
    """argcomplete's own protocol (what the code of 'mschedule completion bash' runs on TAB)."""
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    for line, expected in (("mschedule jobs s", {"show", "save"}), ("mschedule run --fail-", {"--fail-count",
                                                                                             "--fail-rate"}),
                           ("mschedule schedules e", {"edit", "enable"})):
        env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": " ", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
        subprocess.run([sys.executable, "-m", "mschedule.cli"], env=env, check=True, timeout=30,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        assert set(out.read_text().split()) == expected


# ---- following over server-sent events -------------------------------------------------------------------
def test_the_sse_parser_joins_data_lines_skips_comments_and_keeps_the_last_id():
    parser = SseParser()
    stream = [": keep-alive", "", "id: e-1", "event: output", "data: {\"a\":", "data:1}", "", "data: x\r\n",
              "\n", "event: nodata", "id", "", "retry: 100", "id: bad\0id", "data:  two spaces", ""]
    events = [e for line in stream if (e := parser.feed(line)) is not None]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("output", '{"a":\n1}', "e-1"),
        ("message", "x", "e-1"),  # an event without an id keeps the last one, for Last-Event-ID
        ("message", " two spaces", ""),  # "id" alone empties it; an id with NUL is ignored; no data: no event
    ]
    assert parser.last_id == ""


def sse(events: list[tuple[str, dict]], start: int = 1) -> bytes:
    return b"".join(f"id: ep-{i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
                    for i, (kind, data) in enumerate(events, start))


TASK = {"task_id": "t1", "state": "RUNNING", "total": 2, "started": 10.0, "finished": None,
        "counts": {"WAITING": 0, "RUNNING": 2, "SUCCEED": 0, "FAILED": 0, "CANCELLED": 0}}


def target(agent_id: str, state: str, **kw) -> dict:
    return {"agent_id": agent_id, "hostname": f"h{agent_id[-1]}", "state": state, "code": kw.pop("code", None),
            "started": 10.0, "finished": kw.pop("finished", None), "timed_out": False,
            "output_bytes": kw.pop("output_bytes", None), **kw}


SNAPSHOT = {"task": TASK, "targets": {"a1": {**target("a1", "RUNNING"), "output": "one\ntw", "offset": 0},
                                      "a2": target("a2", "RUNNING")}}
FIRST = [("snapshot", SNAPSHOT), ("output", {"agent_id": "a1", "offset": 6, "data": "o\nthr"})]
REST = [("output", {"agent_id": "a2", "offset": 40000, "data": "late\n"}),  # skipped 40000 bytes: cut
        ("output", {"agent_id": "a1", "offset": 10, "data": "ree\n"}),  # "r" seen already: the new part only
        ("target", target("a1", "SUCCEED", code=0, finished=12.0, output_bytes=14, output_streamed=True)),
        ("target", target("a2", "FAILED", code=1, finished=13.0, output_bytes=40005, output_streamed=True)),
        ("end", {**TASK, "state": "FAILED", "finished": 13.0})]


class StreamServer:
    """A web tier on a free loopback port that answers GET /task/t1/events from a list of (status, body) and
    records each request's Last-Event-ID; POST /result answers ``result``."""

    def __init__(self, answers: list[tuple[int, bytes]], result: dict | None = None) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.seen.append((self.path, self.headers.get("Last-Event-ID")))
                status, body = owner.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if status == 200 else "application/json")
                self.end_headers()
                self.wfile.write(body)  # then the connection closes: a dropped stream unless it ended

            def do_POST(self):
                owner.seen.append((self.path, None))
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps(result).encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_events_become_snapshots_and_live_lines_and_a_dropped_stream_resumes_with_last_event_id():
    with StreamServer([(200, sse(FIRST)), (200, sse(REST, start=3))]) as server:
        client = FakeClient(outputs={"a2": "x" * 40000 + "late\n"})
        client.url, client.token = server.url, "tok"
        out = io.StringIO()
        follower = Follower(client, "t1", out=out)
        seen: list[str] = []
        follower.source = lambda: (seen.append(f"{t['counts']['RUNNING']}/{t['state']}") or t
                                   for t in EventSource(client, "t1", on_output=follower.feed, backoff=0.01))
        task = follower.run()
    # the first stream closed before the end: opened again from its last id
    assert server.seen == [("/task/t1/events", None), ("/task/t1/events", "ep-2")]
    assert seen == ["2/RUNNING", "2/RUNNING", "2/RUNNING", "2/RUNNING", "1/RUNNING", "0/RUNNING", "0/FAILED"]
    assert task["counts"] == {"WAITING": 0, "RUNNING": 0, "SUCCEED": 1, "FAILED": 1, "CANCELLED": 0}
    assert task["targets"]["a1"] == {"hostname": "h1", "state": "SUCCEED", "code": 0, "started": 10.0,
                                     "finished": 12.0, "timed_out": False, "output_bytes": 14,
                                     "output_streamed": True}
    # a1: whole lines as they came, no fetch; a2: its stream skipped bytes, so its whole output is fetched
    assert out.getvalue() == "h1: one\nh1: two\nh1: three\nh2: " + "x" * 40000 + "late\n"
    assert [c[1] for c in client.calls] == ["/task/t1/target/a2"]


def test_a_host_whose_stream_had_a_gap_is_shown_from_where_its_live_lines_stopped():
    follower = Follower(FakeClient(outputs={"a1": "one\ntwo\nthree\nfour\n"}), "t1", out=io.StringIO())
    follower.feed("a1", 0, b"one\ntw")
    follower._show_live({"targets": {"a1": {"hostname": "h", "state": "RUNNING"}}})
    follower.feed("a1", 100, b"four\n")  # a skip: nothing more is taken live
    ended = {"targets": {"a1": {"hostname": "h", "state": "SUCCEED", "output_bytes": 19, "output_streamed": True}}}
    follower._show_ended(ended)
    assert follower.out.getvalue() == "h: one\nh: two\nh: three\nh: four\n"  # no line twice, none missing


def test_a_host_shown_live_is_not_shown_twice_when_the_master_did_not_say_it_streamed_it_all():
    """After a fallback to polling (or from an older master, or a host lost with its agent) the target says
    nothing of output_streamed: the fetched output that starts with the lines shown continues them; one that
    does not is shown whole after a note."""
    follower = Follower(FakeClient(outputs={"a1": "one\ntwo\nthree\n", "a2": "other\nthan shown\n"}), "t1",
                        out=io.StringIO())
    follower.feed("a1", 0, b"one\ntwo\n")
    follower.feed("a2", 0, b"first\n")
    running = {"hostname": "h", "state": "RUNNING"}
    follower._show_live({"targets": {"a1": running, "a2": {**running, "hostname": "k"}}})
    ended = {"hostname": "h", "state": "SUCCEED", "output_bytes": None, "output_omitted": 1}
    follower._show_ended({"targets": {"a1": ended, "a2": {**ended, "hostname": "k"}}})
    assert follower.out.getvalue().splitlines() == [
        "h: one", "h: two", "k: first", "h: three", f"k: {Follower.NOTE_REPLACED}", "k: other", "k: than shown"]


def test_a_503_or_an_older_web_tier_falls_back_to_polling():
    result = {**TASK, "state": "SUCCEED", "finished": 12.0, "counts": {**TASK["counts"], "RUNNING": 0}, "targets": {}}
    for status, error in ((503, "streams: 100 event streams are open on this web tier; try again later"),
                          (404, "no such route: GET /task/t1/events")):
        answers = [(status, json.dumps({"error": error}).encode())]
        with StreamServer(answers, result) as server:
            client = Client(server.url, None)
            snapshots = list(EventSource(client, "t1"))
        assert [s["state"] for s in snapshots] == ["SUCCEED"] and [p for p, _ in server.seen] == [
            "/task/t1/events", "/result"], status
    with StreamServer([(404, json.dumps({"error": "task t9 not found"}).encode())]) as server:
        with pytest.raises(ApiError, match="task t9 not found"):
            list(EventSource(Client(server.url, None), "t1"))


def test_a_stream_that_keeps_breaking_falls_back_to_polling_after_its_retries():
    result = {**TASK, "state": "SUCCEED", "finished": 12.0, "counts": {**TASK["counts"], "RUNNING": 0}, "targets": {}}
    with StreamServer([(200, sse(FIRST[:1]))] * 3, result) as server:
        snapshots = list(EventSource(Client(server.url, None), "t1", retries=2, backoff=0.01))
    assert [p for p, _ in server.seen] == ["/task/t1/events"] * 3 + ["/result"]
    assert [h for _, h in server.seen[:3]] == [None, "ep-1", "ep-1"]
    assert [s["state"] for s in snapshots] == ["RUNNING"] * 3 + ["SUCCEED"]


# ---- users, roles and the audit trail (issue 16) ------------------------------------------------------------
def test_tokens_create_body_durations_and_an_operators_selector():
    args = parse("tokens", "create", "--user", "alice", "--role", "operator", "--expires-in", "12h",
                 "--host", "web-*", "--label", "dc=bj", "--label", "role=web", "--group", "g")
    assert cli.token_body(args) == {"user": "alice", "role": "operator", "expires_in": 43200,
                                    "selector": {"hostname": "web-*", "labels": {"dc": "bj", "role": "web"},
                                                 "group": "g"}}
    # only what was given: no expiry, no selector (which roles may have one is the master's rule)
    assert cli.token_body(parse("tokens", "create", "--user", "vera", "--role", "viewer")) == {
        "user": "vera", "role": "viewer"}
    for text, seconds in (("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800),
                          ("2w", 1209600), ("1.5h", 5400), (" 7D ", 604800), ("0.5", 0.5)):
        assert cli.duration(text) == seconds, text
        assert type(cli.duration(text)) is type(seconds), text


@pytest.mark.parametrize("argv,error", [
    (["tokens", "create", "--user", "a", "--role", "root"], "argument --role: invalid choice: 'root'"),
    (["tokens", "create", "--role", "viewer"], "the following arguments are required: --user"),
    (["tokens", "create", "--user", "a", "--role", "viewer", "--expires-in", "soon"],
     "argument --expires-in: expected seconds or a duration such as 90s, 15m, 12h, 7d, got 'soon'"),
    (["tokens", "create", "--user", "a", "--role", "viewer", "--expires-in", "-5"], "argument --expires-in"),
    (["tokens", "create", "--user", "a", "--role", "operator", "--label", "dc"], "argument --label: expected KEY"),
    (["tokens", "delete"], "the following arguments are required: TOKEN_ID"),
    (["tokens"], "the following arguments are required: ACTION"),
    (["audit", "--since", "yesterday"], "argument --since: expected a duration such as 12h or 7d, or a date"),
    (["audit", "--limit", "many"], "argument --limit: invalid int value"),
    (["whoami", "extra"], "unrecognized arguments: extra"),
])
def test_tokens_audit_and_whoami_usage_errors_exit_3_before_any_request(argv, error, capsys, monkeypatch):
    monkeypatch.setattr(Client, "request", lambda *a, **kw: pytest.fail("no request for a usage error"))
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert f"mschedule: error: {error}" in err and "Traceback" not in err


def test_audit_query_since_a_duration_or_a_time():
    args = parse("audit", "--user", "vera", "--action", "task.submit", "--since", "1h", "--limit", "5")
    assert cli.audit_query(args, now=10000.0) == {"user": "vera", "action": "task.submit", "limit": 5,
                                                  "before": None, "since": 6400.0}
    assert cli.audit_query(parse("audit", "--since", "2026-12-01T10:30:00+00:00"), now=0) == {
        "user": None, "action": None, "limit": None, "before": None, "since": 1796121000.0}
    local = parse("audit", "--since", "2026-12-01").since  # no offset: local time, as the table shows times
    assert local == ("at", datetime.datetime(2026, 12, 1).timestamp())
    assert cli.audit_query(parse("audit", "--since", "7d"), now=5.0)["since"] == 0.0  # not before 1970
    assert cli.audit_query(parse("audit")) == {"user": None, "action": None, "limit": None, "before": None}
    assert cli.audit_query(parse("audit", "--before", "41"))["before"] == 41


class Answers:
    """``Client.request`` answering from a dict ``(method, path) -> answer`` (an exception is raised)."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.calls: list[tuple] = []

    def __call__(self, method, path, body=None, query=None, **kw):
        self.calls.append((method, path, body, query))
        answer = self.answers[(method, path)]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture()
def answering(monkeypatch):
    monkeypatch.setenv("MSCHEDULE_URL", "http://sched:1")
    monkeypatch.setenv("MSCHEDULE_TOKEN", "ms_x")

    def install(answers: dict) -> Answers:
        fake = Answers(answers)
        monkeypatch.setattr(Client, "request", lambda self, *args, **kw: fake(*args, **kw))
        return fake
    return install


def test_tokens_create_prints_only_the_token_on_stdout(answering, capsys):
    fake = answering({("POST", "/tokens"): {"token_id": "9f1c", "token": "ms_secret", "user": "vera",
                                            "role": "viewer", "created": 0.0, "expires": None}})
    assert cli.main(["tokens", "create", "--user", "vera", "--role", "viewer"]) == 0
    out, err = capsys.readouterr()
    assert out == "ms_secret\n"  # TOKEN=$(mschedule tokens create ...) captures it alone
    assert err == ("token 9f1c for vera (viewer), never expires; the token is shown this once (the master keeps "
                   "only its hash): store it now\n")
    assert fake.calls == [("POST", "/tokens", {"user": "vera", "role": "viewer"}, None)]


def test_whoami_tokens_list_and_audit_tables(answering, capsys):
    answering({
        ("GET", "/whoami"): {"user": "olga", "role": "operator", "token_id": "77aa",
                             "selector": {"hostname": "web-*", "labels": {"dc": "bj"}}},
        ("GET", "/tokens"): [
            {"token_id": "77aa", "user": "olga", "role": "operator", "created": 20.0, "expires": 86420.0,
             "last_used": None, "selector": {"group": "g"}, "created_by": "token-file"},
            {"token_id": "9f1c", "user": "vera", "role": "viewer", "created": 10.0, "expires": None,
             "last_used": 30.0, "selector": None, "created_by": None}],
        ("GET", "/audit"): [{"seq": 2, "time": 40.0, "user": "vera", "token_id": "9f1c", "role": "viewer",
                             "action": "task.submit", "object": None, "client": "127.0.0.1", "status": 403,
                             "outcome": "refused", "detail": {}}]})
    assert cli.main(["whoami"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "user:     olga", "role:     operator", "token:    77aa", "selector: hostname=web-* labels=dc=bj"]
    assert cli.main(["tokens", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "ID" and [c for c in lines[0].split("  ") if c] == [
        "ID", "USER", "ROLE", "CREATED", "EXPIRES", "LAST USED", "CREATED BY", "SELECTOR"]
    assert lines[1].split()[:3] == ["9f1c", "vera", "viewer"] and "never" in lines[1]  # oldest first
    assert lines[2].endswith("token-file  group=g") and when(86420.0) in lines[2]
    assert cli.main(["audit", "--user", "vera"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "USER", "ROLE", "ACTION", "OBJECT", "STATUS", "OUTCOME"]
    assert lines[1] == f"2    {when(40.0)}  vera  viewer  task.submit  -       403     refused"


def test_tokens_delete_each_id_and_a_403_is_one_line_exit_3(answering, capsys):
    fake = answering({("DELETE", "/tokens/a1"): {"token_id": "a1", "deleted": True},
                      ("DELETE", "/tokens/nope"): ApiError(404, "token 'nope' not found", "token_id"),
                      ("DELETE", "/tokens/b2"): {"token_id": "b2", "deleted": True}})
    assert cli.main(["tokens", "delete", "a1", "nope", "b2", "a1"]) == 3  # every id tried; one refused
    out, err = capsys.readouterr()
    assert out == "token a1 deleted\ntoken b2 deleted\n" and err == "mschedule: token 'nope' not found\n"
    assert [c[1] for c in fake.calls] == ["/tokens/a1", "/tokens/nope", "/tokens/b2"]
    assert cli.main(["tokens", "delete", "a1", "b2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"token_id": "a1", "deleted": True},
                                                   {"token_id": "b2", "deleted": True}]
    refused = ApiError(403, "role: token.delete needs the admin role; vera's token is viewer")
    fake = answering({("DELETE", "/tokens/a1"): refused, ("GET", "/audit"): refused})
    assert cli.main(["tokens", "delete", "a1", "b2"]) == 3
    assert capsys.readouterr().err == "mschedule: role: token.delete needs the admin role; vera's token is viewer\n"
    assert len(fake.calls) == 1  # the role is the same for every id: stop at the first
    assert cli.main(["audit"]) == 3
    assert capsys.readouterr().err == "mschedule: role: token.delete needs the admin role; vera's token is viewer\n"


def test_token_ids_and_audit_actions_complete(monkeypatch):
    monkeypatch.setenv("MSCHEDULE_URL", "http://sched:1")
    monkeypatch.setattr(Client, "get", lambda self, path, **kw: [{"token_id": "77aa"}, {"token_id": "9f1c"}])
    assert cli.TOKEN_IDS("7", parse("tokens", "delete", "x")) == ["77aa"]
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    tokens = next(a for a in commands["tokens"]._actions if a.dest == "tokens_action").choices
    assert next(a for a in tokens["delete"]._actions if a.dest == "ids").completer is cli.TOKEN_IDS
    action = next(a for a in commands["audit"]._actions if a.dest == "action")
    assert action.completer("task.c") == ["task.cancel"]


def test_a_task_shows_who_submitted_and_who_cancelled_it():
    task = snapshot({"a1": "CANCELLED"}, {"a1": "web-1"}, "CANCELLED", 13.0)
    assert details(task) == []  # a task from before issue 16
    task.update(created_by="schedule:5c1d", cancelled_by="olga")
    assert details(task) == ["created by: schedule:5c1d", "cancelled by: olga"]


def test_a_task_request_is_sent_again_with_the_same_key_while_the_master_fails_over(monkeypatch, capsys):
    from mschedule.cli import client as cli_client
    from mschedule.cli.client import ApiError, Unreachable

    answers = [ApiError(503, "no answer from the master ...: this task.submit may have been done; send it again "
                             "with the same Idempotency-Key: it is done once"),
               Unreachable("cannot reach the web tier at http://sched:1: Connection refused"), {"task_id": "t1"}]
    calls = []

    def request(self, method, path, body=None, query=None, timeout=None, headers=None):
        calls.append((method, path, headers))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(Client, "request", request)
    monkeypatch.setattr(cli_client.time, "sleep", lambda seconds: None)
    assert Client("http://sched:1", "ms_x").create("/task", {"script": "true"}) == {"task_id": "t1"}
    keys = {headers["Idempotency-Key"] for _, _, headers in calls}
    assert len(calls) == 3 and len(keys) == 1 and len(keys.pop()) == 32  # one key for every try
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("; sending it again in 1s (the same request: it is done once)")
    assert err[1].startswith("mschedule: cannot reach the web tier") and err[1].endswith("again in 2s (the same "
                                                                                          "request: it is done once)")
    # what retrying cannot mend is raised at once; and a 503 past the retry time too
    answers[:] = [ApiError(400, "script: expected text", "script")]
    with pytest.raises(ApiError):
        Client("http://sched:1", "ms_x").create("/task", {})
    answers[:] = [ApiError(503, "down")] * 3
    with pytest.raises(ApiError, match="down"):
        Client("http://sched:1", "ms_x").create("/task", {}, retry_for=0.5)
