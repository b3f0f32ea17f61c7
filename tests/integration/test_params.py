"""Job parameters and task environments: values reach the script as environment variables, bad values are a
400 naming the parameter, secrets are never shown (answers, output, the stored task once it ended)."""
import sqlite3

from tests.integration.harness import wait_until

SECRET = "s3cr3t-Hunter2-value"


def _job(api, ids, **extra):
    status, body = api.post("/job/deploy", {
        "script": 'echo "version=$VERSION env=$ENVIRONMENT"; echo "token=$TOKEN"; printf %s "$TOKEN" | wc -c',
        "targets": ids, "parallel": 2,
        "params": [{"name": "VERSION", "default": "1.0", "pattern": "^[0-9.]+$", "description": "release"},
                   {"name": "ENVIRONMENT", "choices": ["staging", "prod"], "required": True},
                   {"name": "TOKEN", "secret": True}], **extra})
    assert status == 201, body


def test_params_reach_the_script_as_environment_variables(stack):
    ids = stack.up(2)
    api = stack.api
    _job(api, ids)
    status, run = api.post("/job/deploy/run", {"params": {"VERSION": "1.2", "ENVIRONMENT": "prod"}})
    assert status == 201, run
    task = api.wait_task(run["task_id"])
    assert task["state"] == "SUCCEED"
    for target in task["targets"].values():
        assert target["output"].startswith("version=1.2 env=prod\ntoken=\n0\n")
    assert task["params"] == {"VERSION": "1.2", "ENVIRONMENT": "prod"} and task["secrets"] == []
    # the default fills a parameter not given
    status, run = api.post("/job/deploy/run", {"params": {"ENVIRONMENT": "staging"}})
    assert {t["output"].split("\n")[0] for t in api.wait_task(run["task_id"])["targets"].values()} == {
        "version=1.0 env=staging"}
    # a value is never pasted into the script: shell syntax in it stays text
    status, run = api.post("/task", {"script": 'echo "[$X]"', "targets": ids[:1], "env": {"X": "$(id) `id`; 1"}})
    assert status == 201
    assert [t["output"] for t in api.wait_task(run["task_id"])["targets"].values()] == ["[$(id) `id`; 1]\n"]


def test_bad_parameter_values_are_400_naming_the_parameter(stack):
    ids = stack.up(1)
    api = stack.api
    _job(api, ids)
    cases = [
        ({"ENVIRONMENT": "prod", "VERSION": "1.2; rm -rf /"}, "params.VERSION", "pattern"),
        ({"ENVIRONMENT": "dev"}, "params.ENVIRONMENT", "not one of"),
        ({}, "params.ENVIRONMENT", "required"),
        ({"ENVIRONMENT": "prod", "NOPE": "x"}, "params.NOPE", "unknown parameter"),
        ({"ENVIRONMENT": ["prod"]}, "params.ENVIRONMENT", "expected a string"),
        ({"ENVIRONMENT": "prod", "TOKEN": "a\u0000b"}, "params.TOKEN", "NUL"),
        ({"ENVIRONMENT": "prod", "TOKEN": "x" * 40000}, "params.TOKEN", "bytes"),
    ]
    for params, field, words in cases:
        status, body = api.post("/job/deploy/run", {"params": params})
        assert status == 400 and body["field"] == field and words in body["error"], (params, body)
    assert api.post("/job/deploy/run", {"params": "VERSION=1"})[1]["field"] == "params"
    # declarations are checked when the job is saved
    bad_declarations = [
        ([{"name": "lower"}], "params[0].name"),
        ([{"name": "MSCHEDULE_X"}], "params[0].name"),
        ([{"name": "A"}, {"name": "A"}], "params[1].name"),
        ([{"name": "A", "pattern": "("}], "params[0].pattern"),
        ([{"name": "A", "default": "x", "choices": ["y"]}], "params[0].default"),
        ([{"name": "A", "secret": True, "default": "pw"}], "params[0].default"),
        ([{"name": "A", "secret": "yes"}], "params[0].secret"),
        ([{"name": "A", "typo": 1}], "params[0].typo"),
        ({"name": "A"}, "params"),
        ([{"name": f"P{i}"} for i in range(65)], "params"),
    ]
    for declarations, field in bad_declarations:
        status, body = api.post("/job/other", {"script": "true", "params": declarations})
        assert status == 400 and body["field"] == field, (declarations, body)
    for env, field in (({"lower": "x"}, "env.lower"), ({"A": 1.5}, "env.A"), ({"A": True}, "env.A"),
                       ({"MSCHEDULE_TASK_ID": "x"}, "env.MSCHEDULE_TASK_ID"), ([], "env")):
        status, body = api.post("/task", {"script": "true", "targets": ids, "env": env})
        assert status == 400 and body["field"] == field, (env, body)
    # every endpoint still answers a real call
    assert api.run("echo ok", ids)["state"] == "SUCCEED"


def test_a_secret_is_masked_in_answers_output_and_the_stored_task(stack):
    ids = stack.up(2)
    api = stack.api
    _job(api, ids)
    status, run = api.post("/job/deploy/run", {"params": {"ENVIRONMENT": "prod", "TOKEN": SECRET}})
    assert status == 201
    task = api.wait_task(run["task_id"])
    assert task["state"] == "SUCCEED"
    assert task["env"]["TOKEN"] == "***" and task["params"]["TOKEN"] == "***" and task["secrets"] == ["TOKEN"]
    for target in task["targets"].values():  # printed, then masked; its length proves the script had it
        assert target["output"] == f"version=1.0 env=prod\ntoken=***\n{len(SECRET)}\n"
    for path in (f"/task/{run['task_id']}", "/tasks", f"/task/{run['task_id']}/target/{ids[0]}",
                 "/job/deploy"):
        status, body = api.get(path)
        assert status == 200 and SECRET not in str(body), path
    # the database and the logs hold no secret
    for path in stack.tmp.glob("master.db*"):  # never written, not even while the task ran (its WAL)
        assert SECRET.encode() not in path.read_bytes(), path
    with sqlite3.connect(stack.db) as db:
        for table in ("tasks", "targets"):
            assert not [r for r in db.execute(f"SELECT * FROM {table}") if SECRET in repr(r)], table
    assert SECRET not in stack.logs()


def test_a_secret_split_across_writes_is_masked_live_and_at_the_end(stack):
    """The agent masks the stream as it reads it: a secret printed in two halves a second and a half apart
    reaches the master's live output, the event stream and the result as ***."""
    ids = stack.up(1)
    api = stack.api
    status, _ = api.post("/job/split", {"script": 'half=${#TOKEN}; half=$((half / 2)); '
                                                  'printf "a %s" "$(printf %s "$TOKEN" | cut -c1-$half)"; sleep 1.5; '
                                                  'printf "%s b\\n" "$(printf %s "$TOKEN" | cut -c$((half + 1))-)"; '
                                                  'sleep 1.5; echo done',
                                        "targets": ids, "params": [{"name": "TOKEN", "secret": True}]})
    assert status == 201
    status, run = api.post("/job/split/run", {"params": {"TOKEN": SECRET}})
    seen = []
    while True:
        status, target = api.get(f"/task/{run['task_id']}/target/{ids[0]}")
        seen.append(target["output"])
        if not target["partial"]:
            break
    task = api.wait_task(run["task_id"])
    assert task["targets"][ids[0]]["output"] == "a *** b\ndone\n"
    assert any("***" in text for text in seen[:-1]), seen  # the live output had it, masked
    assert not any(SECRET[:len(SECRET) // 2] in text for text in seen), seen  # never its first half alone


def test_retry_reuses_params_and_asks_for_secrets_again(stack):
    ids = stack.up(1)
    api = stack.api
    status, _ = api.post("/job/flaky", {"script": 'echo "$VERSION $TOKEN"; test -e "$FLAG" || { touch "$FLAG"; '
                                                  'exit 1; }', "targets": ids,
                                        "params": [{"name": "VERSION"}, {"name": "FLAG"},
                                                   {"name": "TOKEN", "secret": True, "pattern": "^[a-z0-9-]+$"}]})
    assert status == 201
    flag = str(stack.tmp / "flag")
    status, run = api.post("/job/flaky/run", {"params": {"VERSION": "7", "FLAG": flag, "TOKEN": "tok-123456"}})
    first = api.wait_task(run["task_id"])
    assert first["state"] == "FAILED" and first["targets"][ids[0]]["output"] == "7 ***\n"
    status, body = api.post(f"/task/{run['task_id']}/retry")
    assert status == 400 and body["field"] == "params.TOKEN" and "again" in body["error"]
    status, body = api.post(f"/task/{run['task_id']}/retry", {"params": {"TOKEN": "BAD VALUE"}})
    assert status == 400 and body["field"] == "params.TOKEN" and "BAD VALUE" not in body["error"]
    status, body = api.post(f"/task/{run['task_id']}/retry", {"params": {"TOKEN": "tok-123456", "VERSION": "8"}})
    assert status == 400 and body["field"] == "params.VERSION"
    status, retried = api.post(f"/task/{run['task_id']}/retry", {"params": {"TOKEN": "tok-654321"}})
    assert status == 201, retried
    second = api.wait_task(retried["task_id"])
    assert second["state"] == "SUCCEED" and second["targets"][ids[0]]["output"] == "7 ***\n"
    assert second["params"] == {"VERSION": "7", "FLAG": flag, "TOKEN": "***"} and second["retry_of"] == run["task_id"]


def test_a_master_restart_fails_the_targets_still_waiting_for_a_secret(stack):
    """A secret's value is never written to the database, so a master killed while a task with a secret has
    targets waiting cannot start them afterwards: they fail saying why; the running one (whose agent has the
    value) ends as its script does, masked by its agent."""
    master = stack.master()
    stack.web()
    stack.agents(2)
    ids = sorted(stack.online_agents())
    status, _ = stack.api.post("/job/slow", {"script": 'sleep 2; echo "t=$TOKEN"', "targets": ids, "parallel": 1,
                                             "fail_rate": 100, "params": [{"name": "TOKEN", "secret": True}]})
    status, run = stack.api.post("/job/slow/run", {"params": {"TOKEN": SECRET}})
    assert status == 201
    wait_until(lambda: stack.api.get(f"/task/{run['task_id']}")[1]["counts"]["RUNNING"] == 1, 10)
    master.kill9()
    stack.master()
    task = stack.api.wait_task(run["task_id"], 30)
    states = sorted(t["state"] for t in task["targets"].values())
    assert states == ["FAILED", "SUCCEED"], task
    outputs = {t["state"]: t["output"] for t in task["targets"].values()}
    assert outputs["SUCCEED"] == "t=***\n" and "never stores a secret" in outputs["FAILED"]
    for path in stack.tmp.glob("master.db*"):
        assert SECRET.encode() not in path.read_bytes(), path
