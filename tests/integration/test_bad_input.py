"""Bad input gets a clear 4xx naming the field and loses nothing; bad setups fail with one clear line."""
import json
import os
import socket
import subprocess

import pytest
import zerorpc
import zmq

from mschedule.transport import CurveClientKeys, make_client
from mschedule.utils.exceptions import MessageError
from tests.integration.harness import PYTHON, ROOT, free_port


@pytest.fixture
def running(module_stack):
    return module_stack, module_stack.online_agents()


@pytest.mark.parametrize("body,field", [
    ({"targets": ["AGENT"]}, "script"),
    ({"script": 5, "targets": ["AGENT"]}, "script"),
    ({"script": "", "targets": ["AGENT"]}, "script"),
    ({"script": "true"}, "targets"),
    ({"script": "true", "targets": []}, "targets"),
    ({"script": "true", "targets": "AGENT"}, "targets"),
    ({"script": "true", "targets": ["no-such-agent"]}, "targets[0]"),
    ({"script": "true", "targets": ["AGENT"], "parallel": 0}, "parallel"),
    ({"script": "true", "targets": ["AGENT"], "parallel": "2"}, "parallel"),
    ({"script": "true", "targets": ["AGENT"], "fail_rate": 101}, "fail_rate"),
    ({"script": "true", "targets": ["AGENT"], "fail_rate": -1}, "fail_rate"),
    ({"script": "true", "targets": ["AGENT"], "timeout": -5}, "timeout"),
    ({"script": "true", "targets": ["AGENT"], "fail_count": -3}, "fail_count"),
    ({"script": "true", "targets": ["AGENT"], "paralell": 2}, "paralell"),
    (["true"], "body"),
])
def test_bad_task_fields(running, body, field):
    stack, (agent_id,) = running
    body = json.loads(json.dumps(body).replace("AGENT", agent_id))
    before = stack.api.get("/tasks")[1]
    status, answer = stack.api.post("/task", body)
    assert status == 400, answer
    assert answer["error"].startswith(field) and answer["field"] == field, answer
    assert stack.api.get("/tasks")[1] == before  # nothing was created


HUGE = 99999999999999999999999  # beyond the 64 bits msgpack carries to the master
LONE = "\ud800"  # a lone surrogate: valid JSON ("\\ud800"), not UTF-8 text


@pytest.fixture(scope="module")
def job(module_stack):
    """A saved job for the job routes' cases."""
    status, answer = module_stack.api.post("/job/bad-input", {"script": "true"})
    assert status in (200, 201), answer
    return "bad-input"


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/task", {"script": LONE, "targets": ["AGENT"]}, "script"),
    ("POST", "/task", {"script": "true", "targets": [LONE]}, "targets[0]"),
    ("POST", "/task", {"script": "true", "selector": {"hostname": LONE}}, "selector.hostname"),
    ("POST", "/task", {"script": "true", "selector": {"labels": {"dc": LONE}}}, "selector.labels.dc"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "batch_by": LONE}, "batch_by"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "timeout": HUGE}, "timeout"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "fail_count": HUGE}, "fail_count"),
    ("POST", "/result", {"task_id": LONE}, "task_id"),
    ("POST", "/result", {"task_id": "x", "output_limit": HUGE}, "output_limit"),
    ("GET", f"/task/x?output_limit={HUGE}", None, "output_limit"),
    ("POST", "/job/bad-input", {"script": LONE}, "script"),
    ("POST", "/job/bad-input", {"script": "true", "message": LONE}, "message"),
    ("POST", "/job/bad-input", {"script": "true", "parallel": HUGE}, "parallel"),
    ("POST", "/job/bad-input/run", {"timeout": HUGE}, "timeout"),
    ("POST", "/job/bad-input/rollback", {"version": HUGE}, "version"),
    ("GET", f"/job/bad-input/versions/{HUGE}", None, "version"),
    ("GET", f"/job/bad-input/diff?from=1&to={HUGE}", None, "to"),
    ("PUT", "/group/bad-input", {"selector": {"hostname": LONE}}, "selector.hostname"),
    ("PUT", "/group/bad-input", {"targets": [HUGE]}, "targets[0]"),
])
def test_what_msgpack_cannot_carry_is_400(running, job, method, path, body, field):
    """Lone surrogates and integers beyond 64 bits cannot travel to the master: a 400 naming the field, not 500."""
    stack, (agent_id,) = running
    raw = None if body is None else json.dumps(body).replace("AGENT", agent_id).encode()
    before = stack.api.get("/tasks")[1]
    status, answer = stack.api.request(method, path, raw=raw)
    assert status == 400, answer
    assert answer["error"].startswith(field) and answer["field"] == field, answer
    assert stack.api.get("/tasks")[1] == before


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "parallel": 1e30}, "parallel"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "parallel": 10001}, "parallel"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "timeout": 1e300}, "timeout"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "timeout": 7 * 86400 + 1}, "timeout"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "timeout": float("nan")}, "timeout"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "timeout": float("inf")}, "timeout"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "fail_rate": float("nan")}, "fail_rate"),
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "fail_count": 10001}, "fail_count"),
    ("POST", "/result", {"task_id": "x", "wait": 61}, "wait"),
    ("POST", "/result", {"task_id": "x", "wait": 1e300}, "wait"),
    ("GET", "/task/x?wait=inf", None, "wait"),
    ("GET", f"/task/x?output_limit={64 * 1024 * 1024 + 1}", None, "output_limit"),
    ("GET", "/tasks?before=nan", None, "before"),
    ("GET", "/tasks?before=inf", None, "before"),
    ("GET", "/tasks?before=-1", None, "before"),
    ("POST", "/job/bad-input", {"script": "true", "timeout": 1e300}, "timeout"),
    ("POST", "/job/bad-input", {"script": "true", "parallel": 1e30}, "parallel"),
    ("POST", "/job/bad-input/run", {"targets": ["AGENT"], "timeout": float("nan")}, "timeout"),
    ("POST", "/job/bad-input/run", {"targets": ["AGENT"], "parallel": 10001}, "parallel"),
    ("PUT", "/group/bad-input", {"targets": ["AGENT"] + [f"x{i}" for i in range(10000)]}, "targets"),
])
def test_out_of_range_fields_are_400(running, job, method, path, body, field):
    """Every number has a range (README): outside it, NaN, Infinity: a 400 naming the field and the range."""
    stack, (agent_id,) = running
    raw = None if body is None else json.dumps(body).replace("AGENT", agent_id).encode()
    before = stack.api.get("/tasks")[1]
    status, answer = stack.api.request(method, path, raw=raw)
    assert status == 400, answer
    assert answer["error"].startswith(f"{field}: ") and answer["field"] == field, answer
    assert "got number" not in answer["error"], answer  # NaN was "expected a number, got number"
    assert stack.api.get("/tasks")[1] == before
    assert stack.api.get("/job/bad-input/versions")[1][-1]["version"] == 1  # no job version either


def test_a_task_still_runs_after_the_bad_input(running):
    """The refusals above (this module's stack saw them all) left master, web tier and agent whole."""
    stack, (agent_id,) = running
    assert all(proc.alive() for proc in stack.procs)
    result = stack.api.run("echo still fine", [agent_id])
    assert result["state"] == "SUCCEED" and result["targets"][agent_id]["output"] == "still fine\n"


@pytest.mark.parametrize("raw", [b"", b"not json", b"{\"script\": ", b"\xff\xfe"])
def test_not_json(running, raw):
    stack, _ = running
    status, answer = stack.api.request("POST", "/task", raw=raw)
    assert status == 400 and answer["error"].startswith("body") and answer["field"] == "body", answer


def test_oversized_body_is_413_json(running):
    stack, (agent_id,) = running
    raw = json.dumps({"script": "#" * (3 * 1024 * 1024), "targets": [agent_id]}).encode()
    status, answer = stack.api.request("POST", "/task", raw=raw)
    assert status == 413 and "body" in answer["error"] and answer["field"] == "body", answer


def test_script_over_limit_is_400(running):
    stack, (agent_id,) = running
    status, answer = stack.api.post("/task", {"script": "#" * (1024 * 1024 + 1), "targets": [agent_id]})
    assert status == 400 and answer["error"].startswith("script: 1048577 bytes"), answer


def test_unknown_task_is_404(running):
    stack, _ = running
    assert stack.api.get("/task/0123456789abcdef")[0] == 404
    status, answer = stack.api.post("/result", {"task_id": "nope"})
    assert status == 404 and "nope" in answer["error"]


@pytest.mark.parametrize("body,field", [({}, "task_id"), ({"task_id": 3}, "task_id"), ([], "body"),
                                        ({"task_id": "x", "wait": "soon"}, "wait"),
                                        ({"task_id": "x", "wait": -1}, "wait")])
def test_bad_result_queries(running, body, field):
    stack, _ = running
    status, answer = stack.api.post("/result", body)
    assert status == 400 and answer["error"].startswith(field) and answer["field"] == field, answer


@pytest.mark.parametrize("method,path,body,status,field", [
    ("POST", "/task", {"script": "true", "targets": ["AGENT"], "parallel": 0}, 400, "parallel"),
    ("POST", "/task", {"script": "true", "targets": ["nope"]}, 400, "targets[0]"),
    ("POST", "/task", {"script": "true", "selector": {"group": "no-such-group"}}, 400, "selector.group"),
    ("POST", "/task", {"script": "true", "selector": {"hostname": "nothing-is-called-this-*"}}, 400, "selector"),
    ("POST", "/task", {"script": "true", "selector": {"color": "red"}}, 400, "selector.color"),
    ("POST", "/job/bad-input", ["true"], 400, "body"),
    ("POST", "/job/bad-input", {"script": "true", "message": 5}, 400, "message"),
    ("POST", "/job/bad-input/run", {"version": 99}, 404, "version"),
    ("POST", "/job/bad-input/run", {"colour": 1}, 400, "colour"),
    ("GET", "/job/no-such-job", None, 404, "name"),
    ("PUT", "/group/bad-input", {}, 400, "body"),
    ("PUT", "/group/bad-input", {"targets": ["nope"]}, 400, "targets"),
    ("PUT", "/group/bad-input", {"members": []}, 400, "members"),
    ("GET", "/group/no-such-group", None, 404, "name"),
    ("POST", "/keys/nope/accept", None, 404, "agent_id"),
    ("DELETE", "/keys/nope", None, 404, "agent_id"),
    ("POST", "/keys/accept", {"agent_ids": []}, 400, "agent_ids"),
    ("GET", "/task/nope", None, 404, "task_id"),
    ("POST", "/task/nope/cancel", None, 404, "task_id"),
    ("GET", "/task/nope/target/AGENT", None, 404, "task_id"),
    ("GET", "/tasks?state=DONE", None, 400, "state"),
    ("GET", "/nowhere", None, 404, None),
])
def test_every_error_names_its_field(running, job, method, path, body, status, field):
    """The field the master's error is about crosses RPC and is the answer's ``field``; nothing parses text."""
    stack, (agent_id,) = running
    path = path.replace("AGENT", agent_id)
    raw = None if body is None else json.dumps(body).replace("AGENT", agent_id).encode()
    got, answer = stack.api.request(method, path, raw=raw)
    assert (got, answer.get("field")) == (status, field), answer
    assert set(answer) == {"error", "field"} and answer["error"], answer


def test_unknown_route_and_method_are_json(running):
    stack, _ = running
    status, answer = stack.api.get("/nowhere")
    assert status == 404 and "no such route" in answer["error"] and answer["field"] is None
    status, answer = stack.api.request("DELETE", "/tasks")
    assert status == 405 and "not allowed" in answer["error"] and answer["field"] is None
    assert stack.api.get("/tasks?limit=zero")[0] == 400


def test_master_unreachable_is_503(stack):
    master = stack.master()
    stack.web("--rpc-timeout", "1.5")
    master.stop()
    status, answer = stack.api.get("/task/targets")
    assert status == 503 and "master unreachable" in answer["error"]
    status, answer = stack.api.post("/task", {"script": "true", "targets": ["x"]})
    assert status == 503


def test_bad_agent_messages_do_not_hurt_the_master(running):
    stack, (agent_id,) = running
    public, secret = zmq.curve_keypair()  # a stranger's key: connected, but not that agent
    client = make_client(stack.master_endpoint, curve=CurveClientKeys(stack.keys.public, public, secret))
    try:
        bad = [("garbage", None), (42, None), (None, None), ([], None), ({"type": "register"}, "payload"),
               ({"type": "register", "payload": {}}, "payload.id"),
               ({"type": "hearbeat", "payload": {"id": agent_id, "hostname": "h"}}, "type"),
               ({"type": "result", "payload": {"id": "t", "agent_id": agent_id, "code": "zero"}}, "payload.code"),
               ({"type": "result", "payload": {"id": "t", "agent_id": agent_id, "code": 0, "output": "%%%"}},
                "payload.output"),
               ({"type": "register", "payload": {"id": agent_id, "hostname": "h", "labels": [1]}},
                "payload.labels"),
               ({"type": "heartbeat", "payload": {"id": "not an id!"}}, "payload.id"),
               ({"type": "heartbeat", "payload": {"id": agent_id, "session": 5}}, "payload.session")]
        for msg, field in bad:  # refused with a typed error naming the field, as the agent gets it
            with pytest.raises(MessageError) as refused:
                client.send(msg)
            assert refused.value.name == "MessageError" and refused.value.msg, msg
            assert refused.value.field == field, (msg, refused.value.field, refused.value.msg)
        for call in (lambda: client.get_task(5, 0), lambda: client.add_task("x"), lambda: client.get_result(3),
                     lambda: client.no_such_method(), lambda: client.get_task(agent_id, 0)):
            with pytest.raises(zerorpc.RemoteError):
                call()
    finally:
        client.close()
    result = stack.api.run("echo still fine", [agent_id])
    assert result["targets"][agent_id]["output"] == "still fine\n"
    assert stack.api.agents()[agent_id]["hostname"] != "h"  # the bad heartbeat changed nothing


def _run_cli(*args, timeout=30):
    return subprocess.run([PYTHON, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_master_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _run_cli("appserver.py", "--bind", f"tcp://127.0.0.1:{port}", "--db", ":memory:",
                        "--admin-bind", f"tcp://127.0.0.1:{free_port()}", "--state-dir", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"mschedule: cannot listen on tcp://127.0.0.1:{port}: "
                                                f"Address already in use (addr='tcp://127.0.0.1:{port}')"]


def test_master_unusable_db_is_one_clear_line(tmp_path):
    proc = _run_cli("appserver.py", "--bind", f"tcp://127.0.0.1:{free_port()}", "--db", str(tmp_path / "no" / "x.db"),
                    "--admin-bind", f"tcp://127.0.0.1:{free_port()}", "--state-dir", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(f"mschedule: cannot open database {tmp_path}/no/x.db")
    assert "Traceback" not in proc.stderr


def test_web_port_in_use_is_one_clear_line(stack):
    stack.master()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _run_cli("appwebserver.py", "--master", stack.admin_endpoint, "--port", str(port), "--master-key",
                        stack.keys.public_path, "--client-key", stack.keys.admin_secret_path, "--token-file",
                        str(stack.token_file))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mschedule: cannot listen on 127.0.0.1:{port}")


def test_web_with_unreachable_master_is_one_clear_line():
    proc = _run_cli("appwebserver.py", "--insecure", "--master", f"tcp://127.0.0.1:{free_port()}", "--port",
                    str(free_port()),
                    "--master-wait", "1")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("mschedule: master") and "unreachable" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_agent_check_against_unreachable_master():
    proc = _run_cli("app.py", "--insecure", "--master", f"tcp://127.0.0.1:{free_port()}", "--check")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"mschedule: master {proc.args[4]} unreachable"


def test_agent_check_against_running_master(stack):
    stack.master()
    proc = _run_cli("app.py", "--master", stack.master_endpoint, "--master-key", stack.keys.public_path, "--check")
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_agent_unwritable_state_dir_is_one_clear_line(tmp_path):
    target = "/proc/mschedule-no" if os.geteuid() == 0 else "/mschedule-no"
    proc = _run_cli("app.py", "--state-dir", target, "--master", f"tcp://127.0.0.1:{free_port()}", "--master-key",
                    "x" * 40)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"mschedule: state dir {target} is not writable"]


def test_bad_flags_fail_fast():
    proc = _run_cli("app.py", "--label", "novalue")
    assert proc.returncode == 2 and "key=value" in proc.stderr
