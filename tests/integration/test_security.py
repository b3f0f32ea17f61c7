"""Only authorized agents and operators: real processes, real CURVE handshakes, real key decisions."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import zerorpc
import zmq

from mschedule.transport import CurveClientKeys, make_client
from mschedule.utils.exceptions import Unauthorized
from tests.integration.figures import record
from tests.integration.harness import PYTHON, ROOT, Api, free_port, scaled, wait_until
from tests.modes import open_paths, umask

pytestmark = pytest.mark.slow


def _keys_cli(stack, *args):
    proc = subprocess.run([PYTHON, "appserver.py", "--state-dir", str(stack.state), "--admin-bind",
                           stack.admin_endpoint, "keys", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    return proc


def _pending(stack):
    status, keys = stack.api.get("/keys")
    assert status == 200, keys
    return [k for k in keys if k["state"] == "pending"]


def test_new_agent_waits_for_acceptance_then_works(stack, tmp_path):
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(1, wait=False, state_dir=str(tmp_path / "a"))
    pending = wait_until(lambda: _pending(stack), 15, what="the new key pending")
    agent_id = pending[0]["agent_id"]
    assert pending[0]["hostname"] and len(pending[0]["key"]) == 40
    assert stack.api.agents() == {}  # a pending agent is not an agent: it cannot be targeted
    status, body = stack.api.post("/task", {"script": "echo secret-script", "targets": [agent_id]})
    assert status == 400 and "unknown agent" in body["error"]
    proc = _keys_cli(stack, "accept", agent_id)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: stack.online_agents() == [agent_id], 15, what="accepted agent online")
    assert stack.api.run("echo works", [agent_id])["targets"][agent_id]["output"] == "works\n"
    listing = _keys_cli(stack, "list")
    assert listing.returncode == 0 and f"accepted  {agent_id}" in listing.stdout


def test_rejected_key_stops_working_at_once(stack, tmp_path):
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(1, wait=False)
    agent_id = wait_until(lambda: _pending(stack), 15, what="key pending")[0]["agent_id"]
    assert stack.api.post(f"/keys/{agent_id}/accept")[0] == 200
    wait_until(lambda: stack.online_agents() == [agent_id], 15, what="accepted agent online")
    runs = tmp_path / "runs"
    status, body = stack.api.post(f"/keys/{agent_id}/reject")
    assert status == 200 and body["state"] == "rejected"
    assert stack.api.agents()[agent_id]["online"] is False
    status, body = stack.api.post("/task", {"script": f"echo leaked > {runs}", "targets": [agent_id],
                                            "fail_rate": 100})
    assert status == 400 and "no accepted key" in body["error"]
    time.sleep(scaled(2))  # heartbeats and polls of the rejected agent are refused, it never comes back
    assert stack.api.agents()[agent_id]["online"] is False
    assert not runs.exists()
    status, body = stack.api.request("DELETE", f"/keys/{agent_id}")
    assert status == 200
    # deleted: the same key asks again and waits, like a new one
    wait_until(lambda: [k["agent_id"] for k in _pending(stack)] == [agent_id], 15, what="key pending again")


def test_a_rejected_agent_cannot_run_a_task_already_queued(stack, tmp_path):
    stack.master()
    stack.web()
    stack.agents(2)
    first, second = sorted(stack.online_agents())
    marker = tmp_path / "ran"
    task_id = stack.api.submit(f"sleep {scaled(1.5)}; echo $MSCHEDULE_AGENT_ID >> {marker}", [first, second],
                               parallel=1, fail_rate=100)
    time.sleep(scaled(0.3))
    runner = [a for a in (first, second) if stack.api.get(f"/task/{task_id}")[1]["targets"][a]["state"] == "RUNNING"]
    waiting = ({first, second} - set(runner)).pop()
    assert stack.api.post(f"/keys/{waiting}/reject")[0] == 200
    result = stack.api.wait_task(task_id, timeout=30)
    assert result["targets"][waiting]["state"] == "FAILED"
    assert "rejected" in result["targets"][waiting]["output"]
    assert marker.read_text().split() == runner  # the rejected agent never got the script


def test_another_key_cannot_claim_an_accepted_agent_id(stack):
    stack.master()
    stack.web()
    stack.agents(1)
    (victim,) = stack.online_agents()
    public, secret = zmq.curve_keypair()
    impostor = make_client(stack.master_endpoint, curve=CurveClientKeys(stack.keys.public, public, secret))
    try:
        hello = {"type": "register", "payload": {"id": victim, "hostname": "evil", "ip": []}}
        with pytest.raises(Unauthorized) as claimed:
            impostor.send(hello)
        assert "belongs to another key" in claimed.value.msg and claimed.value.field == "payload.id"
        with pytest.raises(zerorpc.RemoteError) as refused:
            impostor.get_task(victim, 0)
        assert refused.value.name == "Unauthorized"
        fake = {"type": "result", "payload": {"id": "x", "agent_id": victim, "code": 0, "output": ""}}
        with pytest.raises(Unauthorized) as faked:
            impostor.send(fake)
        assert faked.value.field == "agent_id" and "may not act for agent" in faked.value.msg
        for admin_call in ("add_task", "get_agents", "get_result", "keys_accept", "keys_list"):
            with pytest.raises(zerorpc.RemoteError) as missing:
                impostor(admin_call, {})
            assert missing.value.name == "ValidationError" and "no method" in missing.value.msg  # not on this endpoint
    finally:
        impostor.close()
    assert stack.api.agents()[victim]["hostname"] != "evil"


def test_agent_key_cannot_use_the_admin_endpoint(stack, tmp_path):
    stack.master()
    stack.web()
    state = tmp_path / "agent"
    stack.agents(1, state_dir=str(state))
    public = (state / "agent.key").read_bytes().strip()
    secret = (state / "agent.key_secret").read_bytes().strip()
    assert oct(os.stat(state / "agent.key_secret").st_mode & 0o777) == "0o600"
    client = make_client(stack.admin_endpoint, timeout=2, curve=CurveClientKeys(stack.keys.public, public, secret))
    try:
        with pytest.raises(zerorpc.TimeoutExpired):  # ZAP refuses the handshake: nothing gets through
            client.add_task({"script": "x", "targets": ["y"]})
    finally:
        client.close()


def test_wrong_master_key_gets_nothing(stack, tmp_path):
    stack.master()
    stack.web()
    wrong_master_public, _ = zmq.curve_keypair()
    proc = stack.agents(1, wait=False, extra=("--master-key", wrong_master_public.decode()))
    time.sleep(scaled(3))
    assert stack.api.agents() == {} and _pending(stack) == []  # it never even reached the master
    assert proc.alive()  # and it keeps trying, without dying
    public, secret = zmq.curve_keypair()
    client = make_client(stack.admin_endpoint, timeout=2, curve=CurveClientKeys(wrong_master_public, public, secret))
    try:
        with pytest.raises(zerorpc.TimeoutExpired):
            client.ping()
    finally:
        client.close()


def test_plain_client_cannot_talk_to_a_secure_master(stack):
    stack.master()
    client = make_client(stack.master_endpoint, timeout=2)
    try:
        with pytest.raises(zerorpc.TimeoutExpired):
            client.ping()
    finally:
        client.close()


def _relay(listen_port: int, target_port: int, captured: list, stop: threading.Event) -> threading.Thread:
    """A loopback TCP relay that records every byte passing through it."""
    server = socket.create_server(("127.0.0.1", listen_port))
    server.settimeout(0.2)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                captured.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def accept():
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        server.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("secure", [True, False])
def test_no_script_text_on_the_wire(stack, secure):
    relay_port = free_port()
    captured, stop = [], threading.Event()
    _relay(relay_port, stack.master_port, captured, stop)
    try:
        insecure = () if secure else ("--insecure",)
        stack.master(*insecure)
        if secure:
            stack.web()
        else:
            stack.web("--insecure")
            stack.api = Api(stack.web_port)
        stack.agents(1, master=f"tcp://127.0.0.1:{relay_port}", extra=insecure)
        (agent_id,) = stack.online_agents()
        secret_text = "TOP-SECRET-PASSWORD-" + os.urandom(6).hex()
        result = stack.api.run(f"echo {secret_text}", [agent_id])
        assert result["targets"][agent_id]["output"] == f"{secret_text}\n"
    finally:
        stop.set()
    wire = b"".join(captured)
    assert len(wire) > 1000  # the capture saw the agent's traffic
    import base64

    forms = [secret_text.encode(), base64.b64encode(f"echo {secret_text}".encode()),
             base64.b64encode(f"{secret_text}\n".encode())]
    seen = any(form in wire for form in forms)
    assert seen is (not secure), "script text on the wire" if secure else "the capture should see clear text"
    if secure:
        record("no clear text on the wire (CURVE)", bytes_captured=len(wire), script_text_found=0)


def test_http_needs_the_token(stack):
    stack.master()
    stack.web()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": stack.token},
                    {"Authorization": f"Basic {stack.token}"}):
        for method, path in (("GET", "/tasks"), ("GET", "/task/targets"), ("POST", "/task"), ("GET", "/keys"),
                             ("POST", "/keys/x/accept"), ("GET", "/health"), ("GET", "/api")):
            status, body = _raw(stack.web_port, method, path, headers)
            assert status == 401 and "bearer token" in body["error"], (method, path, headers)
    assert stack.api.get("/tasks")[0] == 200
    assert _raw(stack.web_port, "GET", "/openapi.json", {})[0] == 200  # the API description is public


def test_console_files_are_public_hold_no_data_and_are_locked_down(stack):
    import urllib.error
    import urllib.request

    stack.master()
    stack.web()

    def fetch(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{stack.web_port}{path}", timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    status, headers, body = fetch("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/console.js"' in body and stack.token.encode() not in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name, kind in (("console.js", "application/javascript"), ("console.css", "text/css")):
        status, headers, body = fetch(f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    # only the console's own files: nothing else under the package, and no way out of it
    for path in ("/static/static.py", "/static/..%2froutes.py", "/static/../routes.py", "/static/%2e%2e/auth.py",
                 "/static/"):
        status, headers, body = fetch(path)
        assert status == 404 and "error" in json.loads(body), path


def _raw(port, method, path, headers):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers,
                                 data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_too_many_targets_is_400_from_the_master(stack):
    """The master holds --max-targets; the web tier's old flag still starts, is ignored and says so."""
    stack.master("--max-targets", "3")
    web = stack.web("--max-targets", "1")
    status, body = stack.api.post("/task", {"script": "true", "targets": ["a", "b", "c", "d"]})
    assert status == 400 and body["error"].startswith("targets: 4 agents, more than the limit of 3"), body
    status, body = stack.api.post("/task", {"script": "true", "targets": ["a", "b"]})
    # the master's limit (3), not the web's (1)
    assert status == 400 and body["error"].startswith("targets[0]: unknown agent id or hostname 'a'"), body
    assert "--max-targets 1 is deprecated and ignored" in web.log()


def test_scripts_never_in_logs_at_info(stack):
    stack.master()
    stack.web()
    stack.agents(1)
    (agent_id,) = stack.online_agents()
    secret_text = "SECRET-" + os.urandom(6).hex()
    stack.api.run(f"echo {secret_text}", [agent_id])
    for proc in stack.procs:
        assert secret_text not in proc.log(), proc.name


def test_https_with_a_certificate(stack, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                           "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl is not available to make a test certificate")
    stack.master()
    stack.web("--tls-cert", str(cert), "--tls-key", str(key))
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    req = urllib.request.Request(f"https://127.0.0.1:{stack.web_port}/tasks",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == []


def test_state_is_private_whatever_the_umask(stack, tmp_path):
    """Scripts, outputs and secrets are readable by their user only: the master's db, -wal, -shm and
    keys, the agent's id, keys, spool and running marker. A state dir an earlier version left open is
    tightened at start."""
    os.chmod(stack.state, 0o755)
    os.chmod(stack.state / "keys", 0o755)
    for name in os.listdir(stack.state / "keys"):
        os.chmod(stack.state / "keys" / name, 0o644)
    stack.db = stack.state / "master.db"
    agent_state = tmp_path / "agent"
    with umask(0):  # the tiers inherit it: anything they create without a mode would be 0666 / 0777
        master = stack.master()
        stack.web()
        stack.agents(1, state_dir=str(agent_state))
    (agent_id,) = stack.online_agents()
    release = tmp_path / "release"
    task_id = stack.api.submit(f"echo password=hunter2; while [ ! -e {release} ]; do sleep 0.05; done",
                               [agent_id])
    wait_until(lambda: (agent_state / "running").exists(), 10, what="the running marker")
    assert {"master.db", "master.db-wal", "master.db-shm", "keys"} <= set(os.listdir(stack.state))
    assert open_paths(stack.state) == {} and open_paths(agent_state) == {}
    master.kill9()  # the result has to wait in the spool
    release.touch()
    wait_until(lambda: list((agent_state / "spool").glob("*.json")), 10, what="the result spooled")
    assert open_paths(agent_state) == {}
    assert f"{stack.state} was open to other users (mode 0755): now 0700" in master.log()
    with umask(0):
        stack.master()
    result = stack.api.wait_task(task_id)
    assert result["targets"][agent_id]["output"] == "password=hunter2\n"
    assert open_paths(stack.state) == {} and open_paths(agent_state) == {}


def test_half_sent_requests_do_not_hold_the_web_tier(stack):
    """Slow-loris: connections that never finish their headers were kept for an hour (aiohttp's default),
    until the web tier ran out of file descriptors and /health timed out."""
    import socket as socketlib

    stack.master()
    stack.web("--keepalive-timeout", "1")
    held = []
    for _ in range(50):
        s = socketlib.create_connection(("127.0.0.1", stack.web_port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(s)
    time.sleep(scaled(3))
    closed = 0
    for s in held:
        try:
            closed += s.recv(1) == b""
        except OSError:
            closed += 1
        s.close()
    assert closed == len(held)
    assert stack.api.get("/health")[0] == 200
