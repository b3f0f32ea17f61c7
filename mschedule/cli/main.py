"""``mschedule``: argument parsing and the commands. Every command is one or a few HTTP calls to the web
tier (the API of docs/api.md); what the flags mean and the exit statuses are in docs/cli.md.

Exit status: 0 done (for a followed task: every target SUCCEED); 1 a followed task ended with a FAILED target
(``keys``: some id refused); 2 a followed task was stopped (cancelled, or aborted by its failure limits so
that some targets never ran); 3 usage, authentication, connection error or a request the API refused;
130 detached from a task with Ctrl-C.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import re
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any

from mschedule import __version__
from mschedule.cli.client import (
    EXIT_ERROR,
    ApiError,
    Client,
    CliError,
    config_path,
    normalize_url,
    resolve_settings,
    write_config,
)
from mschedule.cli.follow import (
    EXIT_DETACHED,
    EXIT_FAILED,
    EventSource,
    Follower,
    PollSource,
    Progress,
    assigned,
    exit_status,
    table,
    task_over,
    when,
    with_details,
)

try:  # shell completion is optional at run time: without it every command still works
    import argcomplete
except ImportError:  # pragma: no cover - depends on the install
    argcomplete = None

#: a --json follow that fell back to polling long-polls this long per call (nothing is shown meanwhile)
JSON_WAIT = 30.0


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's exit status for a usage error (3, not argparse's 2, which means "stopped")."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"mschedule: error: {message}\n")


# ---- argument types --------------------------------------------------------------------------------------
def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def labels_of(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    return dict(pairs or [])


def assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--env`` and ``-p``: the value may be empty and may hold ``=``. Only the shape is
    checked here; what a name may be and what a value may hold is the master's rule (its 400 names the field)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def states_list(text: str) -> list[str]:
    """``--notify-on FAILED,SUCCEED``: upper-cased, in order, without repeats (the master checks the states)."""
    states = list(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not states:
        raise argparse.ArgumentTypeError(f"expected states separated by commas, got {text!r}")
    return states


#: seconds per unit of a duration (``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w``)
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def duration(text: str) -> int | float:
    """``--expires-in 3600``, ``12h``, ``7d``: seconds (an int when whole). Only the shape is checked here; the
    limits are the master's (its 400 names ``expires_in``)."""
    match = DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected seconds or a duration such as 90s, 15m, 12h, 7d, got {text!r}")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    return int(seconds) if seconds.is_integer() else seconds


def moment(text: str) -> tuple[str, float]:
    """``--since``: a duration back from now (``("ago", seconds)``: ``3600``, ``12h``, ``7d``) or a date and time
    (``("at", unix time)``: ``2026-12-01``, ``2026-12-01T10:30``, local time unless it names its offset)."""
    try:
        return "ago", float(duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        return "at", datetime.datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"expected a duration such as 12h or 7d, or a date and time such as "
                                         f"2026-12-01T10:30, got {text!r}") from None


# ---- what the flags mean in a request --------------------------------------------------------------------
def selection(args: argparse.Namespace, client: Client | None, require: bool = True) -> dict:
    """``targets`` and/or ``selector`` of a task body from the host flags.

    One ``--host`` glob, the ``--label``s and ``--group`` make the API's ``selector`` (all must match; the
    master resolves it at submit time); ``--target`` ids (or, soon, hostnames) go to ``targets``. The API's
    selector has one hostname glob, so several ``--host`` are resolved here, each with the labels
    (``GET /task/targets``), into ``targets``. ``--all`` is every agent online now.
    """
    hosts, labels, group = args.host or [], labels_of(args.label), args.group
    targets = list(dict.fromkeys(args.target or []))
    if getattr(args, "all", False):
        if hosts or labels or group or targets:
            raise CliError("--all: not together with --host, --label, --group or --target")
        agents = _client(client).get("/task/targets")
        online = sorted(a for a, info in agents.items() if info.get("online"))
        if not online:
            raise CliError("--all: no agent is online")
        return {"targets": online}
    selector: dict[str, Any] = {}
    if len(hosts) > 1:
        if group:
            raise CliError("--group: not together with several --host (give one glob, or use --target)")
        for glob in hosts:
            query = [("hostname", glob), *(("label", f"{k}:{v}") for k, v in labels.items())]
            found = sorted(_client(client).get("/task/targets", query=query))
            if not found:
                raise CliError(f"--host {glob}: matches no agent" + (" with those labels" if labels else ""))
            targets.extend(a for a in found if a not in targets)
    else:
        if hosts:
            selector["hostname"] = hosts[0]
        if labels:
            selector["labels"] = labels
    if group:
        selector["group"] = group
    body: dict[str, Any] = {}
    if targets:
        body["targets"] = targets
    if selector:
        body["selector"] = selector
    if require and not body:
        raise CliError("no hosts chosen: give --host, --label, --group, --target or --all")
    return body


#: flag attribute -> task field
PARAMS = (("parallel", "parallel"), ("fail_count", "fail_count"), ("fail_rate", "fail_rate"),
          ("timeout", "timeout"), ("batch_by", "batch_by"))


def parameters(args: argparse.Namespace) -> dict:
    """The task parameters given on the command line (the master's defaults apply to the others)."""
    return {field: getattr(args, attr) for attr, field in PARAMS if getattr(args, attr, None) is not None}


def assignments(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    """``--env``/``-p`` pairs as an object; a name given twice keeps its last value (as ``env A=1 A=2`` does)."""
    return dict(pairs or [])


def notify_of(args: argparse.Namespace) -> list[dict] | None:
    """The ``notify`` list of ``--notify URL`` (each URL once) and ``--notify-on``, which applies to every URL
    (left out: the master's default, every end state). None when no ``--notify`` was given."""
    urls = list(dict.fromkeys(getattr(args, "notify", None) or []))
    on = getattr(args, "notify_on", None)
    if on is not None and not urls:
        raise CliError("--notify-on: give --notify URL too")
    if not urls:
        return None
    return [{"url": url, "on": on} if on is not None else {"url": url} for url in urls]


def extras(args: argparse.Namespace, env: bool = False) -> dict:
    """``env`` (``--env``, a script's task only), ``params`` (``-p``) and ``notify`` of a body, when given.
    Worked out before any request, so that a bad combination costs none."""
    body: dict[str, Any] = {}
    if env and getattr(args, "env", None):
        body["env"] = assignments(args.env)
    if getattr(args, "param", None):
        body["params"] = assignments(args.param)
    notify = notify_of(args)
    if notify is not None:
        body["notify"] = notify
    return body


def read_script(args: argparse.Namespace) -> str:
    """The script: the SCRIPT argument, ``-f FILE``, or standard input for ``-`` / ``-f -``."""
    if args.script is not None and args.file is not None:
        raise CliError("give the script as an argument or with -f FILE, not both")
    source = args.file if args.file is not None else args.script
    if source is None:
        raise CliError("no script: give SCRIPT, -f FILE, or - to read standard input")
    if source == "-" or (args.file is not None and args.file == "-"):
        return sys.stdin.read()
    if args.file is None:
        return source
    try:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"-f {args.file}: {exc}") from None


def task_body(args: argparse.Namespace, client: Client | None) -> dict:
    """The ``POST /task`` body of ``mschedule run``."""
    more = extras(args, env=True)
    return {"script": read_script(args), **selection(args, client), **parameters(args), **more}


def retry_body(args: argparse.Namespace) -> dict:
    """``only`` the FAILED (and CANCELLED) targets; ``params``: secret values the old task no longer keeps."""
    return {"only": ["FAILED"] if args.failed else ["FAILED", "CANCELLED"], **extras(args)}


def _client(client: Client | None) -> Client:
    if client is None:
        raise CliError("internal: this needs the web tier")
    return client


def make_client(args: argparse.Namespace) -> Client:
    settings = resolve_settings(getattr(args, "url", None), getattr(args, "token", None))
    return Client(settings.url, settings.token)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ---- following a task ------------------------------------------------------------------------------------
def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _ask(question: str) -> bool:
    try:
        sys.stderr.write(question)
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except (KeyboardInterrupt, EOFError):
        sys.stderr.write("\n")
        return False


def _last(snapshots: Iterable[dict]) -> dict:
    last = None
    for last in snapshots:  # noqa: B007 - the last one is the answer
        pass
    return last


def follow(client: Client, task_id: str, as_json: bool = False) -> int:
    """Follow a task to its end (see :mod:`cli.follow`); the exit status it ended with.

    Ctrl-C on a terminal asks whether to cancel the task (yes: cancel, then follow it to its end); otherwise,
    or when the answer is no, the CLI detaches: it prints the task id and how to follow it, and exits 130.
    """
    progress = None if as_json else Progress(sys.stderr, sys.stderr.isatty())
    follower = Follower(client, task_id, progress=progress)
    # --json: the same stream, nothing shown; the final task is fetched whole below
    watch: Callable[[], dict] = (lambda: _last(EventSource(
        client, task_id, fallback=lambda: PollSource(client, task_id, wait=JSON_WAIT)))) if as_json else follower.run
    while True:
        try:
            task = watch()
            break
        except CliError as exc:  # the web tier went away meanwhile: the task goes on
            exc.message += f" (task {task_id} goes on: mschedule task {task_id} --follow)"
            raise
        except KeyboardInterrupt:
            if progress:
                progress.clear()
            sys.stderr.write("\n")
            if _interactive() and _ask(f"cancel task {task_id}? [y/N] "):
                try:
                    client.post(f"/task/{client.quote(task_id)}/cancel")
                    sys.stderr.write(f"task {task_id}: cancel requested; following it to its end\n")
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    sys.stderr.write(exc.message + "\n")
                continue
            sys.stderr.write(f"detached: task {task_id} goes on; follow it with: mschedule task {task_id} --follow\n")
            return EXIT_DETACHED
    if as_json:
        emit_json(client.get(f"/task/{client.quote(task_id)}"))
    else:
        print(follower.summary(with_details(client, task)))
    return exit_status(task)


def submitted(client: Client, task_id: str, args: argparse.Namespace) -> int:
    """After a submit: follow the task, or (``--detach``) print its id."""
    if args.detach:
        if args.json:
            emit_json({"task_id": task_id})
        else:
            print(task_id)
        return 0
    return follow(client, task_id, args.json)


# ---- commands --------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    client = make_client(args)
    body = task_body(args, client)
    return submitted(client, client.create("/task", body)["task_id"], args)


def cmd_task(args: argparse.Namespace) -> int:
    client = make_client(args)
    if args.follow:
        return follow(client, args.id, args.json)
    path = f"/task/{client.quote(args.id)}"
    if args.json:
        emit_json(client.get(path))
        return 0
    task = client.get(path)  # whole outputs in one answer (a target the master's cap cut is fetched alone)
    follower = Follower(client, args.id, source=lambda: [task])
    follower.run()
    print(follower.summary(task))
    if not task_over(task):
        print(f"(still going: mschedule task {args.id} --follow)")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    client = make_client(args)
    query = {"state": args.state, "job": args.job, "schedule": args.schedule, "limit": args.limit}
    tasks = client.get("/tasks", query=query)
    if args.json:
        emit_json(tasks)
        return 0
    rows = [[t["task_id"], t["state"], when(t.get("created")), t["total"], t["counts"].get("SUCCEED", 0),
             t["counts"].get("FAILED", 0), t["counts"].get("CANCELLED", 0),
             f"{t['job']} v{t['job_version']}" if t.get("job") else "-"] for t in tasks]
    print(table(["TASK", "STATE", "CREATED", "TOTAL", "SUCCEED", "FAILED", "CANCELLED", "JOB"], rows))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = make_client(args)
    summary = client.post(f"/task/{client.quote(args.id)}/cancel")
    if args.json:
        emit_json(summary)
    else:
        print(f"task {summary['task_id']} {summary['state']}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    client = make_client(args)
    answer = client.create(f"/task/{client.quote(args.id)}/retry", retry_body(args))
    return submitted(client, answer["task_id"], args)


def agents_query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``GET /task/targets`` filters: ``--host`` -> ``hostname``, each ``--label k=v`` -> ``label=k:v``."""
    query = [("hostname", args.host)] if args.host else []
    return query + [("label", f"{k}:{v}") for k, v in labels_of(args.label).items()]


def cmd_agents(args: argparse.Namespace) -> int:
    client = make_client(args)
    agents = client.get("/task/targets", query=agents_query(args))
    if args.json:
        emit_json(agents)
        return 0
    rows = [[a, i["hostname"], "yes" if i["online"] else "no", "yes" if i["busy"] else "no",
             ",".join(f"{k}={v}" for k, v in sorted(i["labels"].items())) or "-",
             f"{i['heartbeat_age']:.1f}s" if i.get("heartbeat_age") is not None else "-"]
            for a, i in sorted(agents.items(), key=lambda kv: (kv[1]["hostname"], kv[0]))]
    print(table(["ID", "HOSTNAME", "ONLINE", "BUSY", "LABELS", "HEARTBEAT"], rows))
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    """Ask for the token (getpass on a terminal, a line of standard input otherwise, or --token /
    MSCHEDULE_TOKEN), check it with a real call, then write the config file 0600."""
    url = normalize_url(args.login_url)
    token = getattr(args, "token", None) or _env_token()
    if not token:
        if sys.stdin.isatty():
            token = getpass.getpass(f"token for {url}: ")
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("login: no token given")
    me = Client(url, token).get("/whoami")  # the token and the master answer, or this raises
    path = config_path()
    write_config(path, url, token)
    print(f"logged in to {url} as {me.get('user')} ({me.get('role')}); settings written to {path}")
    return 0


def _env_token() -> str | None:
    return os.environ.get("MSCHEDULE_TOKEN") or None


def job_body(args: argparse.Namespace, client: Client | None) -> dict:
    """The ``POST /job/{name}`` body: the script of ``-f FILE``, the message, and the task parameters and
    hosts given (saved as the job's defaults)."""
    args.script = None
    more = extras(args)
    if args.params_file is not None:
        more["params"] = read_declarations(args.params_file)
    body: dict[str, Any] = {"script": read_script(args), **selection(args, client, require=False),
                            **parameters(args), **more}
    if args.message:
        body["message"] = args.message
    return body


def read_declarations(path: str) -> Any:
    """``--params-file``: the job's parameter declarations, a JSON array as the API takes it (the master checks
    each declaration; here only that the file is JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--params-file {path}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"--params-file {path}: not JSON: {exc}") from None


def job_run_body(args: argparse.Namespace, client: Client | None) -> dict:
    """The ``POST /job/{name}/run`` body: the version, the overrides given (hosts, task parameters), the job
    parameters (``-p``, checked by the master against the version's declarations) and notifications."""
    more = extras(args)
    body: dict[str, Any] = {**selection(args, client, require=False), **parameters(args), **more}
    if args.version is not None:
        body["version"] = args.version
    return body


def declaration_text(d: dict) -> str:
    """One declared job parameter of ``jobs show``: ``VERSION (required): one of 1.0|1.2, default 1.0 - text``."""
    flags = [flag for flag in ("required", "secret") if d.get(flag)]
    rules = []
    if d.get("choices"):
        rules.append(f"one of {'|'.join(d['choices'])}")
    if d.get("pattern") is not None:
        rules.append(f"matching {d['pattern']}")
    if d.get("default") is not None:
        rules.append(f"default {d['default']}")
    text = d["name"] + (f" ({', '.join(flags)})" if flags else "") + (f": {', '.join(rules)}" if rules else "")
    return text + (f" - {d['description']}" if d.get("description") else "")


def cmd_jobs(args: argparse.Namespace) -> int:
    client = make_client(args)
    action = args.jobs_action
    if action == "list":
        jobs = client.get("/jobs")
        if args.json:
            emit_json(jobs)
        else:
            print(table(["NAME", "VERSION", "SAVED", "MESSAGE"],
                        [[j["name"], j["version"], when(j.get("created_at")), j.get("message") or "-"] for j in jobs]))
        return 0
    name = client.quote(args.name)
    if action == "show":
        path = f"/job/{name}" if args.version is None else f"/job/{name}/versions/{args.version}"
        job = client.get(path)
        if args.json:
            emit_json(job)
        else:
            print(f"# job {job['name']} version {job['version']} saved {when(job.get('created_at'))}"
                  f"{': ' + job['message'] if job.get('message') else ''}")
            saved = job.get("params") or {}
            params = {k: v for k, v in saved.items() if v not in (None, []) and k != "params"}
            print(f"# parameters: {json.dumps(params, sort_keys=True)}")
            for declaration in saved.get("params") or []:
                print(f"# param {declaration_text(declaration)}")
            sys.stdout.write(job["script"] if job["script"].endswith("\n") else job["script"] + "\n")
        return 0
    if action == "save":
        saved = client.post(f"/job/{name}", job_body(args, client))
        if args.json:
            emit_json(saved)
        elif saved.get("created"):
            print(f"job {saved['name']} version {saved['version']} saved")
        else:
            print(f"job {saved['name']}: {saved.get('note') or 'unchanged'}")
        return 0
    if action == "diff":
        diff = client.get(f"/job/{name}/diff", query={"from": args.v1, "to": args.v2})
        if args.json:
            emit_json(diff)
            return 0
        for change in diff["params"]:
            print(f"parameter {change['param']}: {json.dumps(change['from'])} -> {json.dumps(change['to'])}")
        sys.stdout.write(diff["script_diff"])
        if not diff["params"] and not diff["script_diff"]:
            print(f"versions {diff['from']} and {diff['to']} are the same")
        return 0
    # run
    answer = client.create(f"/job/{name}/run", job_run_body(args, client))
    return submitted(client, answer["task_id"], args)


# ---- schedules ---------------------------------------------------------------------------------------------
#: flag attribute -> schedule field, sent when given (the master's defaults apply to the others)
SCHEDULE_FIELDS = (("cron", "cron"), ("timezone", "timezone"), ("overlap", "overlap"), ("catchup", "catchup"),
                   ("description", "description"))

HOST_FLAGS = ("host", "label", "group", "target")


def version_choice(text: str) -> int | str:
    """``--version N`` of ``schedules edit``, or ``latest`` (the latest version at each firing)."""
    if text == "latest":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number or 'latest', got {text!r}") from None


def schedule_body(args: argparse.Namespace, client: Client | None) -> dict:
    """The ``POST /schedules`` body of ``schedules create``: only what was given; without host flags the
    schedule runs on the job's own hosts."""
    body: dict[str, Any] = {"job": args.job, **extras(args)}
    body.update({field: getattr(args, attr) for attr, field in SCHEDULE_FIELDS if getattr(args, attr) is not None})
    if args.version is not None:
        body["version"] = args.version
    if args.disabled:
        body["enabled"] = False
    body.update(selection(args, client, require=False))
    return body


def schedule_patch(args: argparse.Namespace, client: Client | None) -> dict:
    """The ``PATCH /schedule/{id}`` body of ``schedules edit``: each field given replaces the schedule's (``-p``
    all its job parameters, ``--notify`` all its notifications, host flags its hosts: both ``targets`` and
    ``selector``, the one not given null); ``--version latest``, ``--no-params``, ``--no-notify`` and
    ``--job-hosts`` clear."""
    body: dict[str, Any] = {**extras(args)}
    body.update({field: getattr(args, attr) for attr, field in SCHEDULE_FIELDS if getattr(args, attr) is not None})
    if args.version is not None:
        body["version"] = None if args.version == "latest" else args.version
    if args.no_params:
        if "params" in body:
            raise CliError("--no-params: not together with -p")
        body["params"] = {}
    if args.no_notify:
        if "notify" in body:
            raise CliError("--no-notify: not together with --notify")
        body["notify"] = []
    hosts = any(getattr(args, flag) for flag in HOST_FLAGS)
    if args.job_hosts:
        if hosts:
            raise CliError("--job-hosts: not together with --host, --label, --group or --target")
        body.update(targets=None, selector=None)  # null: not set, the job's own (an empty list would be none)
    elif hosts:
        body.update({"targets": None, "selector": None, **selection(args, client, require=False)})
    if not body:
        raise CliError("schedules edit: nothing to change (give --cron, --timezone, hosts, -p, ... ; see --help)")
    return body


def _job_of(schedule: dict) -> str:
    return schedule["job"] if schedule.get("version") is None else f"{schedule['job']} v{schedule['version']}"


def _next_run(schedule: dict) -> str:
    if not schedule.get("enabled", True):
        return "disabled"
    return f"next run {schedule.get('next_run_local') or '-'}"


def schedule_text(schedule: dict) -> str:
    """``schedules show``: the schedule's settings, its next runs, its last runs and skips."""
    # the API masks a secret's value already; shown as it comes, not quoted as a shell word
    secrets = [name for name, value in (schedule.get("params") or {}).items() if value == "***"]
    lines = [f"schedule {schedule['schedule_id']} ({'enabled' if schedule.get('enabled') else 'disabled'})"]
    version = "the latest version at each run" if schedule.get("version") is None else f"version {schedule['version']}"
    lines.append(f"job:         {schedule['job']} ({version})")
    lines.append(f"cron:        {schedule['cron']} ({schedule.get('timezone') or 'UTC'})")
    lines.append(f"overlap:     {schedule.get('overlap')}; catchup: {schedule.get('catchup')}")
    if schedule.get("targets") or schedule.get("selector"):
        if schedule.get("targets"):
            lines.append(f"targets:     {','.join(schedule['targets'])}")
        if schedule.get("selector"):
            lines.append(f"selector:    {json.dumps(schedule['selector'], sort_keys=True)}")
    else:
        lines.append("hosts:       the job's own")
    if schedule.get("params"):
        lines.append(f"params:      {assigned(schedule['params'], secrets)}")
    for entry in schedule.get("notify") or []:
        on = entry.get("on")
        lines.append(f"notify:      {entry.get('url')}" + (f" (on {','.join(on)})" if on else ""))
    if schedule.get("description"):
        lines.append(f"description: {schedule['description']}")
    lines.append(f"created:     {when(schedule.get('created'))}")
    lines.append(f"fired {schedule.get('fired', 0)}, skipped {schedule.get('skipped', 0)}, "
                 f"missed {schedule.get('missed', 0)}")
    if "next_runs" in schedule:
        lines.append("next runs:" if schedule["next_runs"] else "next runs: none (disabled)")
        lines.extend(f"  {run}" for run in schedule["next_runs"])
    tz = schedule.get("timezone") or "UTC"
    if schedule.get("runs"):
        lines.append("last runs:")
        lines.extend("  " + row for row in table(
            ["TICK", "TASK", "STATE"],
            [[tick_text(r.get("tick"), tz), r.get("task_id"), r.get("state")] for r in schedule["runs"]]).splitlines())
    if schedule.get("skips"):
        lines.append("skips:")
        lines.extend("  " + row for row in table(
            ["TICK", "TICKS", "REASON"], [[tick_text(r.get("tick"), tz), r.get("count", 1), r.get("reason")]
                                          for r in schedule["skips"]]).splitlines())
    return "\n".join(lines)


def tick_text(tick: float | None, tz: str) -> str:
    """A tick as ISO 8601 in the schedule's time zone, as its next runs are shown (local time when this host does
    not know the zone)."""
    if tick is None:
        return "-"
    try:
        return datetime.datetime.fromtimestamp(tick, zoneinfo.ZoneInfo(tz)).isoformat()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return when(tick)


def cmd_schedules(args: argparse.Namespace) -> int:
    client = make_client(args)
    action = args.schedules_action
    if action == "list":
        schedules = client.get("/schedules", query={"job": args.job})
        if args.json:
            emit_json(schedules)
        else:
            print(table(["ID", "JOB", "CRON", "TIMEZONE", "NEXT RUN", "LAST STATE", "ENABLED"],
                        [[s["schedule_id"], _job_of(s), s["cron"], s.get("timezone"), s.get("next_run_local"),
                          s.get("last_state"), "yes" if s.get("enabled") else "no"] for s in schedules]))
        return 0
    if action == "create":
        body = schedule_body(args, client)
        answer = client.post("/schedules", body)
        if args.json:
            emit_json(answer)
        else:
            schedule = client.get(f"/schedule/{client.quote(answer['schedule_id'])}")
            print(f"schedule {answer['schedule_id']} created: {_next_run(schedule)}")
        return 0
    path = f"/schedule/{client.quote(args.id)}"
    if action == "show":
        schedule = client.get(path)
        if args.json:
            emit_json(schedule)
        else:
            print(schedule_text(schedule))
        return 0
    if action == "delete":
        answer = client.delete(path)
        if args.json:
            emit_json(answer)
        else:
            print(f"schedule {answer['schedule_id']} deleted")
        return 0
    body = {"enable": {"enabled": True}, "disable": {"enabled": False}}.get(action) or schedule_patch(args, client)
    schedule = client.patch(path, body)
    if args.json:
        emit_json(schedule)
    elif action == "edit":
        print(schedule_text(schedule))
    else:
        print(f"schedule {schedule['schedule_id']} {action}d" + (f": {_next_run(schedule)}" if action == "enable"
                                                                  else ""))
    return 0


def keys_body(args: argparse.Namespace) -> dict:
    if args.all_pending:
        if args.ids:
            raise CliError("--all-pending: not together with ids")
        return {"all_pending": True}
    if not args.ids:
        raise CliError(f"keys {args.keys_action}: give one or more agent ids, or --all-pending")
    return {"agent_ids": list(dict.fromkeys(args.ids))}


def cmd_keys(args: argparse.Namespace) -> int:
    client = make_client(args)
    if args.keys_action == "list":
        keys = client.get("/keys")
        if args.json:
            emit_json(keys)
        else:
            print(table(["AGENT_ID", "STATE", "HOSTNAME", "IP", "FIRST_SEEN"],
                        [[k["agent_id"], k["state"], k.get("hostname") or "-", ",".join(k.get("ip") or []) or "-",
                          when(k.get("first_seen"))] for k in keys]))
        return 0
    answer = client.post(f"/keys/{args.keys_action}", keys_body(args))
    if args.json:
        emit_json(answer)
    else:
        for result in answer["results"]:
            state = result.get("state") or result.get("error") or ""
            print(f"{result['agent_id']}: {'ok' if result['ok'] else 'failed'} {state}".rstrip())
        print(f"{answer['done']} done, {answer['failed']} failed")
    return EXIT_FAILED if answer["failed"] else 0


# ---- users, roles and the audit trail ----------------------------------------------------------------------
def token_body(args: argparse.Namespace) -> dict:
    """The ``POST /tokens`` body of ``tokens create``: user, role, ``expires_in`` seconds when given, and an
    operator's ``selector`` of ``--host``, ``--label`` and ``--group`` (which roles may have one is the
    master's rule)."""
    body: dict[str, Any] = {"user": args.user, "role": args.role}
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    selector: dict[str, Any] = {}
    if args.host:
        selector["hostname"] = args.host
    if args.label:
        selector["labels"] = labels_of(args.label)
    if args.group:
        selector["group"] = args.group
    if selector:
        body["selector"] = selector
    return body


def audit_query(args: argparse.Namespace, now: float | None = None) -> dict:
    """The ``GET /audit`` query: ``--since`` as Unix seconds (a duration counted back from ``now``)."""
    query: dict[str, Any] = {"user": args.user, "action": args.action, "limit": args.limit, "before": args.before}
    if args.since is not None:
        kind, value = args.since
        query["since"] = max(0.0, (time.time() if now is None else now) - value) if kind == "ago" else value
    return query


def selector_text(selector: dict | None) -> str:
    """An operator's selector on one line: ``hostname=web-* labels=dc=bj group=g``; ``-`` for none."""
    if not selector:
        return "-"
    parts = [f"hostname={selector['hostname']}"] if selector.get("hostname") else []
    if selector.get("labels"):
        parts.append("labels=" + ",".join(f"{k}={v}" for k, v in sorted(selector["labels"].items())))
    if selector.get("group"):
        parts.append(f"group={selector['group']}")
    return " ".join(parts) or json.dumps(selector, sort_keys=True)


def cmd_whoami(args: argparse.Namespace) -> int:
    me = make_client(args).get("/whoami")
    if args.json:
        emit_json(me)
        return 0
    print(f"user:     {me.get('user') or '- (the web tier runs --insecure: no tokens)'}")
    print(f"role:     {me.get('role')}")
    print(f"token:    {me.get('token_id') or '-'}")
    print(f"selector: {selector_text(me.get('selector'))}")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    client = make_client(args)
    action = args.tokens_action
    if action == "list":
        tokens = client.get("/tokens")
        if args.json:
            emit_json(tokens)
        else:
            rows = [[t["token_id"], t["user"], t["role"], when(t.get("created")),
                     when(t["expires"]) if t.get("expires") is not None else "never", when(t.get("last_used")),
                     t.get("created_by") or "-", selector_text(t.get("selector"))]
                    for t in sorted(tokens, key=lambda t: (t.get("created") or 0, t["token_id"]))]
            print(table(["ID", "USER", "ROLE", "CREATED", "EXPIRES", "LAST USED", "CREATED BY", "SELECTOR"], rows))
        return 0
    if action == "create":
        made = client.post("/tokens", token_body(args))
        if args.json:
            emit_json(made)
            return 0
        expires = f"expires {when(made['expires'])}" if made.get("expires") is not None else "never expires"
        sys.stderr.write(f"token {made['token_id']} for {made['user']} ({made['role']}), {expires}; the token is "
                         "shown this once (the master keeps only its hash): store it now\n")
        print(made["token"])
        return 0
    failed, answers = 0, []
    for token_id in dict.fromkeys(args.ids):  # each its own request: one missing id does not stop the others
        try:
            answer = client.delete(f"/tokens/{client.quote(token_id)}")
        except ApiError as exc:
            if exc.status != 404:
                raise  # not an admin, or the master is down: the same for every id
            print(f"mschedule: {exc.message}", file=sys.stderr)
            failed += 1
            continue
        answers.append(answer)
        if not args.json:
            print(f"token {answer['token_id']} deleted")
    if args.json:
        emit_json(answers)  # one JSON document: the ids deleted
    return EXIT_ERROR if failed else 0


def cmd_audit(args: argparse.Namespace) -> int:
    records = make_client(args).get("/audit", query=audit_query(args))
    if args.json:
        emit_json(records)
        return 0
    print(table(["SEQ", "TIME", "USER", "ROLE", "ACTION", "OBJECT", "STATUS", "OUTCOME"],
                [[r.get("seq"), when(r.get("time")), r.get("user"), r.get("role"), r.get("action"), r.get("object"),
                  r.get("status"), r.get("outcome")] for r in records]))
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    if argcomplete is None:
        raise CliError("completion needs argcomplete: pip install argcomplete==3.7.2")
    sys.stdout.write(argcomplete.shellcode(["mschedule"], shell=args.shell))
    return 0


# ---- completion of names from the web tier ----------------------------------------------------------------
def _remote_completer(path: str, pick: Callable[[Any], Iterable[str]]) -> Callable[..., list[str]]:
    """An argcomplete completer that asks the web tier (with the same URL and token); nothing on any error."""
    def complete(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        try:
            settings = resolve_settings(getattr(parsed_args, "url", None), getattr(parsed_args, "token", None))
            answer = Client(settings.url, settings.token, timeout=3).get(path)
            return [name for name in pick(answer) if name.startswith(prefix)]
        except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
            return []
    return complete


JOB_NAMES = _remote_completer("/jobs", lambda jobs: [j["name"] for j in jobs])
TASK_IDS = _remote_completer("/tasks", lambda tasks: [t["task_id"] for t in tasks])
AGENT_IDS = _remote_completer("/task/targets", lambda agents: list(agents))
SCHEDULE_IDS = _remote_completer("/schedules", lambda schedules: [s["schedule_id"] for s in schedules])
PENDING_KEYS = _remote_completer("/keys", lambda keys: [k["agent_id"] for k in keys if k["state"] == "pending"])
TOKEN_IDS = _remote_completer("/tokens", lambda tokens: [t["token_id"] for t in tokens])
#: the actions the audit trail records (docs/security.md), offered on TAB; --action sends any text as given
AUDIT_ACTIONS = ("task.submit", "task.cancel", "task.retry", "job.run", "job.save", "job.rollback", "key.accept",
                 "key.reject", "key.delete", "group.put", "group.delete", "schedule.create", "schedule.update",
                 "schedule.enable", "schedule.disable", "schedule.delete", "token.create", "token.delete")


def _choices_completer(choices: Iterable[str]) -> Callable[..., list[str]]:
    def complete(prefix: str, **_: Any) -> list[str]:
        return [c for c in choices if c.startswith(prefix)]
    return complete


def _completer(action: argparse.Action, completer: Callable[..., list[str]]) -> argparse.Action:
    action.completer = completer  # type: ignore[attr-defined]
    return action


# ---- the parser ------------------------------------------------------------------------------------------
def _connection_flags() -> argparse.ArgumentParser:
    """--url and --token, accepted before or after the command (SUPPRESS: a command's own default does not
    overwrite one given before it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="web tier URL (else MSCHEDULE_URL, else the config file of 'mschedule login')")
    common.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (else MSCHEDULE_TOKEN, else the "
                                                                   "config file)")
    return common


def _host_flags(p: argparse.ArgumentParser, all_flag: bool = True) -> None:
    g = p.add_argument_group("hosts")
    g.add_argument("--host", action="append", metavar="GLOB", help="hostname glob (repeatable: any of them)")
    g.add_argument("--label", action="append", type=label, metavar="K=V", help="label that must match (repeatable)")
    g.add_argument("--group", metavar="NAME", help="a group stored on the master")
    _completer(g.add_argument("--target", action="append", metavar="ID", help="agent id (repeatable)"), AGENT_IDS)
    if all_flag:
        g.add_argument("--all", action="store_true", help="every agent online now")


def _param_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task parameters (the master's defaults when left out)")
    g.add_argument("--parallel", type=int, metavar="N", help="at most N targets at once (default 1)")
    g.add_argument("--fail-count", type=int, metavar="N", help="abort after more than N failures (-1: no limit)")
    g.add_argument("--fail-rate", type=float, metavar="P",
                   help="abort when more than P%% of the targets failed (default 0: at the first failure; 100: never)")
    g.add_argument("--timeout", type=float, metavar="S", help="kill each script after S seconds (0: never)")
    g.add_argument("--batch-by", metavar="LABEL", help="roll out group by group of this label's values")


def _param_flag(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("-p", "--param", action="append", type=assignment, metavar="NAME=VALUE", help=help)


def _notify_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("notifications")
    g.add_argument("--notify", action="append", metavar="URL",
                   help="POST the outcome to URL when the task ends (repeatable)")
    g.add_argument("--notify-on", type=states_list, metavar="STATES",
                   help="only for these end states, e.g. FAILED,CANCELLED (default all: SUCCEED,FAILED,CANCELLED)")


def _schedule_flags(p: argparse.ArgumentParser, create: bool) -> None:
    """The flags of ``schedules create`` (and ``edit``, where each replaces the schedule's and none is required)."""
    p.add_argument("--cron", required=create, metavar="EXPR",
                   help="five fields ('*/5 * * * *') or @hourly, @daily, @weekly, @monthly, @yearly")
    p.add_argument("--timezone", metavar="TZ", help="the cron's time zone, e.g. Europe/Berlin (default UTC)")
    if create:
        p.add_argument("--version", type=int, metavar="N", help="this version (default the latest at each run)")
    else:
        p.add_argument("--version", type=version_choice, metavar="N|latest",
                       help="this version, or latest (the latest at each run)")
    p.add_argument("--overlap", choices=("skip", "queue", "allow"),
                   help="a run due while the last still goes: skip it (default), queue it, or allow both")
    p.add_argument("--catchup", choices=("none", "last"),
                   help="runs missed while the master was down: none (default) or the last of them")
    p.add_argument("--description", metavar="TEXT")
    _param_flag(p, "a job parameter's value (repeatable)" + ("" if create else "; replaces all of them"))
    _host_flags(p, all_flag=False)
    _notify_flags(p)
    if create:
        p.add_argument("--disabled", action="store_true", help="create it disabled (enable it later)")
    else:
        p.add_argument("--no-params", action="store_true", help="clear its job parameters")
        p.add_argument("--no-notify", action="store_true", help="clear its notifications")
        p.add_argument("--job-hosts", action="store_true", help="run on the job's own hosts again")
    p.add_argument("--json", action="store_true")


def _follow_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print only the final task as JSON")
    p.add_argument("--detach", action="store_true", help="print the task id and exit without following")


def build_parser() -> Parser:
    common = _connection_flags()
    parser = Parser(prog="mschedule", parents=[common],
                    description="Run scripts on many hosts through an mschedule web tier.",
                    epilog="exit status: 0 ok, 1 a target failed, 2 task cancelled or aborted, 3 usage, "
                           "authentication or connection error, 130 detached (see docs/cli.md)")
    parser.add_argument("--version", action="version", version=f"mschedule {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str, **kw: Any) -> Parser:
        p = sub.add_parser(name, parents=[common], help=help, description=help, **kw)
        p.set_defaults(func=func)
        return p

    p = command("run", cmd_run, "run a script on hosts and follow it to its end")
    p.add_argument("script", nargs="?", metavar="SCRIPT", help="the script's text, or - for standard input")
    p.add_argument("-f", "--file", metavar="FILE", help="read the script from FILE (- for standard input)")
    p.add_argument("--env", action="append", type=assignment, metavar="NAME=VALUE",
                   help="environment variable for the script (repeatable)")
    _host_flags(p)
    _param_flags(p)
    _notify_flags(p)
    _follow_flags(p)

    p = command("agents", cmd_agents, "list agents")
    p.add_argument("--host", metavar="GLOB", help="hostname glob")
    p.add_argument("--label", action="append", type=label, metavar="K=V", help="label that must match (repeatable)")
    p.add_argument("--json", action="store_true")

    p = command("tasks", cmd_tasks, "list tasks, newest first")
    p.add_argument("--state", type=str.upper, choices=("WAITING", "RUNNING", "SUCCEED", "FAILED", "CANCELLED"))
    _completer(p.add_argument("--job", metavar="NAME"), JOB_NAMES)
    _completer(p.add_argument("--schedule", metavar="ID", help="the tasks this schedule fired"), SCHEDULE_IDS)
    p.add_argument("--limit", type=int, metavar="N", help="at most N tasks (default 50)")
    p.add_argument("--json", action="store_true")

    p = command("task", cmd_task, "show one task (its hosts' output and summary)")
    _completer(p.add_argument("id", metavar="ID"), TASK_IDS)
    p.add_argument("--follow", action="store_true", help="follow it to its end, exit status as for run")
    p.add_argument("--json", action="store_true")

    p = command("cancel", cmd_cancel, "cancel a task")
    _completer(p.add_argument("id", metavar="ID"), TASK_IDS)
    p.add_argument("--json", action="store_true")

    p = command("retry", cmd_retry, "run a task again on its FAILED and CANCELLED targets, and follow it")
    _completer(p.add_argument("id", metavar="ID"), TASK_IDS)
    p.add_argument("--failed", action="store_true", help="only the FAILED targets")
    _param_flag(p, "a secret job parameter's value, given again (a task keeps none once it ended; repeatable)")
    _follow_flags(p)

    p = command("jobs", cmd_jobs, "stored, versioned scripts")
    jobs = p.add_subparsers(dest="jobs_action", required=True, metavar="ACTION")
    j = jobs.add_parser("list", parents=[common], help="every job's latest version")
    j.add_argument("--json", action="store_true")
    j = jobs.add_parser("show", parents=[common], help="a job's script and parameters")
    _completer(j.add_argument("name", metavar="NAME"), JOB_NAMES)
    j.add_argument("--version", type=int, metavar="N", help="this version (default the latest)")
    j.add_argument("--json", action="store_true")
    j = jobs.add_parser("save", parents=[common], help="save a new version from a file")
    _completer(j.add_argument("name", metavar="NAME"), JOB_NAMES)
    j.add_argument("-f", "--file", required=True, metavar="FILE", help="the script (- for standard input)")
    j.add_argument("-m", "--message", help="what changed")
    j.add_argument("--params-file", metavar="FILE",
                   help="the job parameters it declares: a JSON array of {name, default, required, choices, pattern, "
                        "secret, description}")
    _host_flags(j, all_flag=False)
    _param_flags(j)
    _notify_flags(j)
    j.add_argument("--json", action="store_true")
    j = jobs.add_parser("diff", parents=[common], help="what changed between two versions")
    _completer(j.add_argument("name", metavar="NAME"), JOB_NAMES)
    j.add_argument("v1", type=int, metavar="V1")
    j.add_argument("v2", type=int, metavar="V2")
    j.add_argument("--json", action="store_true")
    j = jobs.add_parser("run", parents=[common], help="run a job (its saved hosts and parameters, or these)")
    _completer(j.add_argument("name", metavar="NAME"), JOB_NAMES)
    j.add_argument("--version", type=int, metavar="N", help="this version (default the latest)")
    _param_flag(j, "a job parameter's value (repeatable; the declared defaults fill the rest)")
    _host_flags(j)
    _param_flags(j)
    _notify_flags(j)
    _follow_flags(j)

    p = command("schedules", cmd_schedules, "run jobs at the times of a cron expression")
    schedules = p.add_subparsers(dest="schedules_action", required=True, metavar="ACTION")
    c = schedules.add_parser("list", parents=[common], help="every schedule, its next run and last outcome")
    _completer(c.add_argument("--job", metavar="NAME", help="only this job's"), JOB_NAMES)
    c.add_argument("--json", action="store_true")
    c = schedules.add_parser("show", parents=[common], help="a schedule, its next five runs, its last runs and skips")
    _completer(c.add_argument("id", metavar="ID"), SCHEDULE_IDS)
    c.add_argument("--json", action="store_true")
    c = schedules.add_parser("create", parents=[common], help="run a job at the times of a cron expression")
    _completer(c.add_argument("job", metavar="JOB"), JOB_NAMES)
    _schedule_flags(c, create=True)
    c = schedules.add_parser("edit", parents=[common], help="change a schedule (what is given replaces the old)")
    _completer(c.add_argument("id", metavar="ID"), SCHEDULE_IDS)
    _schedule_flags(c, create=False)
    for action, text in (("enable", "enable a schedule (its next run from now)"),
                         ("disable", "disable a schedule (it keeps its settings and history)"),
                         ("delete", "delete a schedule (the tasks it fired stay)")):
        c = schedules.add_parser(action, parents=[common], help=text)
        _completer(c.add_argument("id", metavar="ID"), SCHEDULE_IDS)
        c.add_argument("--json", action="store_true")

    p = command("keys", cmd_keys, "agent keys waiting for a decision, accepted or rejected")
    keys = p.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    k = keys.add_parser("list", parents=[common], help="every key")
    k.add_argument("--json", action="store_true")
    for action in ("accept", "reject"):
        k = keys.add_parser(action, parents=[common], help=f"{action} keys (several in one commit)")
        _completer(k.add_argument("ids", nargs="*", metavar="ID"), PENDING_KEYS)
        k.add_argument("--all-pending", action="store_true", help=f"{action} every pending key")
        k.add_argument("--json", action="store_true")

    p = command("whoami", cmd_whoami, "who the token is: user, role, token id, an operator's selector")
    p.add_argument("--json", action="store_true")

    p = command("tokens", cmd_tokens, "API tokens of users and their roles (admin)")
    tokens = p.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    t = tokens.add_parser("list", parents=[common], help="every token (never its secret)")
    t.add_argument("--json", action="store_true")
    t = tokens.add_parser("create", parents=[common], help="a token for a user: printed on stdout, shown once")
    t.add_argument("--user", required=True, metavar="NAME", help="whose token it is")
    t.add_argument("--role", required=True, choices=("viewer", "operator", "admin"),
                   help="viewer reads; operator also runs tasks and jobs; admin does everything")
    t.add_argument("--expires-in", type=duration, metavar="DURATION",
                   help="expire after this long: seconds, or 15m, 12h, 7d, 2w (default never)")
    g = t.add_argument_group("an operator's selector (the only agents its tasks may reach; all must match)")
    g.add_argument("--host", metavar="GLOB", help="hostname glob")
    g.add_argument("--label", action="append", type=label, metavar="K=V", help="label that must match (repeatable)")
    g.add_argument("--group", metavar="NAME", help="a group stored on the master")
    t.add_argument("--json", action="store_true", help="print the API's whole answer (the token included)")
    t = tokens.add_parser("delete", parents=[common], help="revoke tokens: the next request with one is a 401")
    _completer(t.add_argument("ids", nargs="+", metavar="TOKEN_ID"), TOKEN_IDS)
    t.add_argument("--json", action="store_true")

    p = command("audit", cmd_audit, "the audit trail: every request that changed something or was refused, "
                                    "newest first (admin)")
    p.add_argument("--user", metavar="NAME", help="only this user's")
    _completer(p.add_argument("--action", metavar="ACTION", help="only this action, e.g. task.submit"),
               _choices_completer(AUDIT_ACTIONS))
    p.add_argument("--since", type=moment, metavar="DURATION|TIME",
                   help="only since then: a duration back from now (3600, 12h, 7d) or a time (2026-12-01T10:30)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N records (default 100)")
    p.add_argument("--before", type=int, metavar="SEQ", help="only records older than record SEQ: the next page "
                                                            "after a listing whose last record is SEQ")
    p.add_argument("--json", action="store_true")

    p = command("login", cmd_login, "check a token and store it with the URL in the config file")
    p.add_argument("login_url", metavar="URL")

    p = command("completion", cmd_completion, "print the shell code that enables completion: "
                                              "eval \"$(mschedule completion bash)\"")
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. Errors are one line on stderr, never a traceback."""
    parser = build_parser()
    if argcomplete is not None:
        argcomplete.autocomplete(parser)  # only acts when the shell asks for completions
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (3)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return args.func(args)
    except CliError as exc:
        print(f"mschedule: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_DETACHED
