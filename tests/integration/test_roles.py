"""Users, roles and the audit trail, through the real web tier and master."""
import time

from tests.integration.harness import Api, two_datacenters, wait_until


def _token(stack, **body) -> tuple[str, Api]:
    status, made = stack.api.post("/tokens", body)
    assert status == 201, made
    assert made["token"].startswith("ms_") and "digest" not in made
    return made["token_id"], Api(stack.web_port, made["token"])


def _audit(stack, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, rows = stack.api.get(f"/audit?{qs}")
    assert status == 200, rows
    return rows


def test_roles_decide_what_a_token_may_do_and_every_change_is_audited(stack):
    ids = stack.up(1)
    _, viewer = _token(stack, user="vera", role="viewer")
    _, operator = _token(stack, user="otto", role="operator")
    assert viewer.get("/task/targets")[0] == 200 and viewer.get("/whoami")[1]["role"] == "viewer"
    status, body = viewer.post("/task", {"script": "true", "targets": ids})
    assert status == 403 and "operator" in body["error"]
    refused = _audit(stack, user="vera")
    assert refused[0]["action"] == "task.submit" and refused[0]["outcome"] == "refused" and refused[0]["status"] == 403
    assert viewer.get("/audit")[0] == 403 and viewer.get("/tokens")[0] == 403  # admins only
    # an operator runs tasks but cannot decide keys or save jobs
    task = operator.run("echo hi", ids)
    assert task["state"] == "SUCCEED" and task["created_by"] == "otto"
    assert operator.post(f"/keys/{ids[0]}/accept")[0] == 403
    assert operator.post("/job/j", {"script": "true"})[0] == 403
    done = _audit(stack, user="otto", action="task.submit")[0]
    assert done["object"] == task["task_id"] and done["outcome"] == "done" and done["detail"]["targets"] == 1
    assert len(done["detail"]["script_sha256"]) == 64 and done["client"] == "127.0.0.1"
    assert _audit(stack, user="otto", action="key.accept")[0]["outcome"] == "refused"
    # pages: before= the seq of the last record shown; a cursor that is no number is a 400 naming it
    first, = _audit(stack, limit=1)
    older = _audit(stack, limit=3, before=first["seq"])
    assert [r["seq"] for r in older] == sorted((r["seq"] for r in older), reverse=True)
    assert older and all(r["seq"] < first["seq"] for r in older)
    for bad in ("x", "0", "1.5"):
        status, body = stack.api.get(f"/audit?before={bad}")
        assert status == 400 and body["field"] == "before", (bad, body)
    # cancel records who cancelled
    running = operator.submit("sleep 30", ids)
    wait_until(lambda: operator.get(f"/task/{running}")[1]["counts"]["RUNNING"] == 1, 10)
    assert operator.post(f"/task/{running}/cancel")[1]["cancelled_by"] == "otto"
    # the token file's tokens are admins; GET /tokens never shows a secret
    tokens = stack.api.get("/tokens")[1]
    assert {t["user"] for t in tokens} == {"vera", "otto"} and all("digest" not in t and "token" not in t
                                                                   for t in tokens)


def test_an_operator_s_selector_bounds_its_targets(stack):
    bj, sh = two_datacenters(stack)
    _, beijing = _token(stack, user="bo", role="operator", selector={"labels": {"dc": "bj"}})
    assert beijing.run("true", bj)["state"] == "SUCCEED"
    status, body = beijing.post("/task", {"script": "true", "targets": bj + sh})
    assert status == 403 and sh[0] in body["error"] and body["field"] == "targets"
    status, body = beijing.post("/task", {"script": "true", "selector": {"labels": {"dc": "sh"}}})
    assert status == 403 and sh[0] in body["error"]
    assert _audit(stack, user="bo", action="task.submit")[0]["outcome"] == "refused"
    assert stack.api.post("/tokens", {"user": "x", "role": "viewer", "selector": {"labels": {"dc": "bj"}}})[0] == 400


def test_deleted_and_expired_tokens_are_refused_from_the_next_request_on(stack):
    stack.up(1)
    token_id, alice = _token(stack, user="alice", role="admin")
    assert alice.get("/tokens")[0] == 200
    assert stack.api.request("DELETE", f"/tokens/{token_id}")[0] == 200
    assert alice.get("/task/targets")[0] == 401
    _, brief = _token(stack, user="brief", role="viewer", expires_in=1)
    assert brief.get("/task/targets")[0] == 200
    time.sleep(1.2)
    status, body = brief.get("/task/targets")
    assert status == 401 and "expired" in body["error"]
    assert Api(stack.web_port, "ms_" + "x" * 43).get("/task/targets")[0] == 401
    for bad, field in (({"user": "a b", "role": "viewer"}, "user"), ({"user": "a", "role": "root"}, "role"),
                       ({"user": "a", "role": "viewer", "expires_in": 0}, "expires_in"),
                       ({"user": "a", "role": "viewer", "extra": 1}, "extra"), ([], "body")):
        status, body = stack.api.post("/tokens", bad)
        assert status == 400 and body["field"] == field, (bad, body)


def test_the_audit_row_of_a_task_survives_a_master_kill(stack):
    master = stack.master()
    stack.web()
    stack.agents(1)
    ids = stack.online_agents()
    _, operator = _token(stack, user="otto", role="operator")
    task_id = operator.submit("true", ids)
    master.kill9()
    stack.master()
    wait_until(lambda: stack.api.get("/audit?user=otto")[0] == 200, 15)
    rows = _audit(stack, user="otto")
    assert [r["object"] for r in rows if r["action"] == "task.submit"] == [task_id]
    # the operator's token works after the restart too (tokens are in the database)
    assert operator.get(f"/task/{task_id}")[1]["created_by"] == "otto"


def test_the_first_admin_token_from_the_master_s_command_line_and_the_audit_log_file(stack, tmp_path):
    import json
    import subprocess

    from tests.integration.harness import PYTHON, ROOT

    log = tmp_path / "audit.jsonl"
    stack.master("--audit-log", str(log))
    stack.web()
    stack.agents(1)
    made = subprocess.run([PYTHON, "appserver.py", "--state-dir", str(stack.state), "--admin-bind",
                           stack.admin_endpoint, "tokens", "create", "--user", "root", "--role", "admin"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made
    admin = Api(stack.web_port, made.stdout.strip())
    assert admin.get("/whoami")[1]["user"] == "root"
    assert admin.run("true", stack.online_agents())["created_by"] == "root"
    listed = subprocess.run([PYTHON, "appserver.py", "--state-dir", str(stack.state), "--admin-bind",
                             stack.admin_endpoint, "tokens", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert "root" in listed.stdout and "admin" in listed.stdout and made.stdout.strip() not in listed.stdout
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["user"] == "root" and r["action"] == "task.submit" for r in lines)
    # what the master's own command line changed is in the trail too, before it printed the token
    created = [r for r in lines if r["action"] == "token.create"]
    assert created and created[0]["user"] == "appserver.py" and created[0]["detail"]["user"] == "root"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
