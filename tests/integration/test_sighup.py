"""SIGHUP reloads what can be reloaded and never kills a tier; /healthz answers up or down without a token."""
import hashlib
import hmac
import json
import signal
import time

from tests.integration.harness import Api, _port_open, scaled, wait_until
from tests.integration.receiver import Receiver


def _status(api, path="/task/targets"):
    return api.get(path)[0]


def test_sighup_rereads_the_token_file_and_kills_no_tier(stack):
    master = stack.master()
    web = stack.web()
    agents = stack.agents(1)
    old = stack.api
    assert _status(old) == 200
    new_token = "rotated-" + "x" * 24
    stack.token_file.write_text(f"# rotated\n{new_token}\n")
    for proc in (master, web, agents):
        proc.popen.send_signal(signal.SIGHUP)
    new = Api(stack.web_port, new_token)
    wait_until(lambda: _status(new) == 200, 10, what="the new token accepted")
    assert _status(old) == 401  # the removed token is refused from the next request on
    time.sleep(1)
    assert master.alive() and web.alive() and agents.alive()
    assert "token file" in web.log() and "read again" in web.log()
    assert "SIGHUP" in master.log() and "SIGHUP" in agents.log()
    # a bad file keeps the tokens read before: nobody is locked out by a broken edit
    stack.token_file.write_text("# nothing\n")
    web.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "stay in force" in web.log(), 10)
    assert _status(new) == 200 and web.alive()
    assert new.run("echo still", list(new.agents()))["state"] == "SUCCEED"


def test_sighup_rereads_the_webhook_secret(stack):
    receiver = Receiver()
    try:
        master = stack.master()
        stack.web()
        stack.agents(1)
        ids = stack.online_agents()
        secret_file = stack.state / "webhook.secret"
        secret_file.write_text("the-new-secret\n")
        master.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: "webhook secret read again" in master.log(), 10)
        stack.api.run("true", ids, notify=[{"url": receiver.url}])
        wait_until(lambda: receiver.calls, 10)
        call = receiver.calls[0]
        expected = "sha256=" + hmac.new(b"the-new-secret", call["body"], hashlib.sha256).hexdigest()
        assert call["headers"]["X-Mschedule-Signature"] == expected and json.loads(call["body"])["state"]
    finally:
        receiver.close()


def test_healthz_needs_no_token_and_says_only_up_or_down(stack):
    master = stack.master()
    stack.web()
    anonymous = Api(stack.web_port, None)
    assert anonymous.get("/healthz") == (200, {"status": "ok"})
    assert anonymous.get("/health")[0] == 401  # the details still need a token
    master.kill9()
    assert anonymous.get("/healthz") == (503, {"status": "down"})
    stack.master()
    wait_until(lambda: anonymous.get("/healthz")[0] == 200, 15, what="healthz up again")


def test_sighup_while_the_web_tier_waits_for_its_master_does_not_kill_it(stack):
    """The web tier waits up to --master-wait for the master before it serves; a SIGHUP then (a log rotation,
    systemd's reload) was the default action: the process died."""
    web = stack._start("web", ["appwebserver.py", "--master", stack.admin_endpoint, "--port", str(stack.web_port),
                               "--master-key", stack.keys.public_path, "--client-key", stack.keys.admin_secret_path,
                               "--token-file", str(stack.token_file), "--master-wait", "30"])
    time.sleep(scaled(2))  # started, waiting for a master that is not there
    for _ in range(20):
        web.popen.send_signal(signal.SIGHUP)
        time.sleep(0.01)
    time.sleep(0.5)
    assert web.alive(), web.log()
    stack.master()
    wait_until(lambda: _port_open(stack.web_port) and _status(stack.api) == 200, 30,
               what="the web tier serving once the master is up")


def test_an_agent_starting_many_instances_lives_through_sighup(tmp_path):
    """systemd does not restart a process a SIGHUP ended: an agent must take one from its first log line on,
    while it is still making its instances' ids and spools."""
    import subprocess

    from tests.integration.harness import PYTHON, ROOT

    proc = subprocess.Popen([PYTHON, "app.py", "--insecure", "--master", "tcp://127.0.0.1:1", "--instances", "3000",
                             "--state-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # its first line: the --insecure warning, before any instance is made
        assert "insecure" in first, first
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None, f"the agent died of a SIGHUP while starting (rc {proc.returncode})"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
