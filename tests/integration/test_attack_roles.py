"""Attacks on users, roles and the audit trail through the real web tier and master: requests a stranger or a
low role could send to escape the trail, break it, or reach outside its token."""
import http.client
import json

from tests.integration.harness import Api, two_datacenters, wait_until


def _token(stack, **body) -> tuple[str, Api]:
    status, made = stack.api.post("/tokens", body)
    assert status == 201, made
    return made["token"], Api(stack.web_port, made["token"])


def _raw(port: int, method: str, path: str, token: str | None = None, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, bytes]:
    """One request sent as given (a path or header urllib would refuse or rewrite)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        if token:
            conn.putheader("Authorization", "Bearer " + token)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _audit(stack, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, rows = stack.api.get(f"/audit?{qs}")
    assert status == 200, rows
    return rows


def test_every_refused_request_is_recorded_whatever_its_path_or_body_holds(stack):
    """The web tier builds the record from the request: a 300-character id, a lone surrogate, a NaN, a number of
    100 digits or long parameter names must not make the master refuse it (no record, a 503 or a 500), and the
    trail must stay strict JSON (a NaN in it broke the console's Audit view for every admin)."""
    stack.master()
    stack.web()
    viewer_token, viewer = _token(stack, user="vera", role="viewer")
    port = stack.web_port
    asks = [
        ("POST", f"/task/{'a' * 300}/cancel", None, 403),
        ("DELETE", f"/tokens/{'t' * 300}", None, 403),
        ("POST", "/tokens", b'{"user": "x", "role": "admin", "expires_in": NaN}', 403),
        ("POST", "/tokens", b'{"user": "\\ud800", "role": "admin"}', 403),
        ("POST", "/tokens", b'{"user": "x", "role": "admin", "expires_in": 1' + b"0" * 100 + b"}", 403),
        ("POST", "/tokens", json.dumps({"user": "u" * 5000, "role": "admin"}).encode(), 403),
        ("POST", "/job/j/run", json.dumps({"params": {f"p{i}" * 30: 1 for i in range(64)}}).encode(), 403),
        ("POST", "/job/j/run", b'{"params": {"\\ud800": 1}}', 403),
    ]
    for method, path, body, status in asks:
        assert _raw(port, method, path, viewer_token, body)[0] == status, (method, path[:30], body and body[:40])
    raw_status, raw_rows = _raw(port, "GET", f"/audit?user=vera&limit={len(asks)}", stack.token)
    rows = json.loads(raw_rows, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} in the audit")))
    assert raw_status == 200 and len(rows) == len(asks)
    assert all(r["status"] == 403 and r["outcome"] == "refused" for r in rows)
    assert all(len(r["object"] or "") <= 256 for r in rows)
    # an admin's own failures are recorded too, with the status they got
    assert _raw(port, "POST", f"/task/{'a' * 300}/cancel", stack.token)[0] == 404
    assert _audit(stack, action="task.cancel", limit=1)[0]["status"] == 404
    assert viewer.get("/whoami")[0] == 200


def test_a_bearer_token_that_is_not_utf8_is_a_401_not_a_500(stack):
    stack.master()
    stack.web()
    for token in ("\u00ff\u00fe", "ms_\u00ff" + "x" * 40):  # sent as latin-1 bytes: not UTF-8
        status, body = _raw(stack.web_port, "GET", "/task/targets", token)
        assert status == 401, body
    assert stack.api.get("/task/targets")[0] == 200


def test_a_role_that_is_not_a_string_is_a_400_naming_role(stack):
    stack.master()
    stack.web()
    for role in (["viewer"], {"x": 1}):
        status, body = stack.api.post("/tokens", {"user": "a", "role": role})
        assert (status, body["field"]) == (400, "role"), body


def test_an_audit_record_the_master_cannot_keep_as_json_is_a_400_over_raw_rpc(stack):
    """The admin RPC takes any msgpack value: bytes in the detail crashed the store (a TypeError, a traceback
    in the master's log), a NaN was kept and made GET /audit invalid JSON."""
    from tests.integration.zpc import RawPeer

    stack.master()
    stack.web()
    keys = stack.keys
    peer = RawPeer(stack.admin_endpoint, keys.public, (keys.admin_public, keys.admin_secret))
    try:
        for detail in ({"a": b"\xff"}, {"a": float("nan")}, {"a": [float("inf")]}):
            name, args = peer.call("audit_record", {"action": "x", "status": 200, "detail": detail}, timeout=5)
            assert (name, args[0], args[1].split(":")[0]) == ("ERR", "ValidationError", "entry.detail"), args
    finally:
        peer.close()
    status, raw = _raw(stack.web_port, "GET", "/audit", stack.token)
    assert status == 200 and b"NaN" not in raw and b"Infinity" not in raw


def test_an_operator_cannot_cancel_a_task_outside_its_selector(stack):
    """The selector bounds what an operator's token may touch: cancelling stops scripts on every target, so a
    task reaching outside it is as much a 403 as submitting or retrying one."""
    bj, sh = two_datacenters(stack)
    _, beijing = _token(stack, user="bo", role="operator", selector={"labels": {"dc": "bj"}})
    theirs = stack.api.submit("sleep 30", sh + bj)
    status, body = beijing.post(f"/task/{theirs}/cancel")
    assert status == 403 and body["field"] == "targets" and sh[0] in body["error"], body
    assert stack.api.get(f"/task/{theirs}")[1]["state"] != "CANCELLED"
    row = _audit(stack, user="bo", action="task.cancel")[0]
    assert (row["outcome"], row["object"]) == ("refused", theirs)
    mine = beijing.submit("sleep 30", bj)
    assert beijing.post(f"/task/{mine}/cancel")[1]["cancelled_by"] == "bo"
    assert stack.api.post(f"/task/{theirs}/cancel")[0] == 200


def test_an_anonymous_flood_fills_neither_the_trail_nor_the_web_tier_s_log(stack):
    """2000 requests with random ms_ tokens: each a 401, the master answers the real ones all along, the trail
    gets nothing and the web tier's log a few lines that count the others (it wrote one line each)."""
    import os
    import secrets
    import time
    from concurrent.futures import ThreadPoolExecutor

    stack.master()
    web = stack.web()
    before = len(_audit(stack, limit=1000))
    size = os.path.getsize(web.log_path)

    def flood(_: int) -> set[int]:
        conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=30)
        statuses = set()
        for _ in range(250):
            conn.request("POST", "/tokens", body=b'{"user": "x", "role": "admin"}',
                         headers={"Authorization": "Bearer ms_" + secrets.token_urlsafe(32)})
            response = conn.getresponse()
            response.read()
            statuses.add(response.status)
        conn.close()
        return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = set().union(*pool.map(flood, range(8)))
        answered = stack.api.get("/task/targets")[0]
    assert statuses == {401} and answered == 200
    assert len(_audit(stack, limit=1000)) == before
    grown = os.path.getsize(web.log_path) - size
    assert grown < 4000 * (1 + (time.monotonic() - started) / 10), f"{grown} bytes of log for 2000 refusals"


def test_an_event_stream_ends_once_its_token_is_revoked(stack):
    """Every request is checked, but an event stream is one request that can last as long as its task: a
    revoked viewer kept reading a running task's output for as long as it ran."""
    import time

    ids = stack.up(1)
    made = stack.api.post("/tokens", {"user": "vera", "role": "viewer"})[1]
    task = stack.api.submit("for i in $(seq 1 200); do echo line $i; sleep 0.1; done", ids)
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=30)
    conn.request("GET", f"/task/{task}/events", headers={"Authorization": "Bearer " + made["token"]})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline()  # the stream runs
    assert stack.api.request("DELETE", f"/tokens/{made['token_id']}")[0] == 200
    revoked = time.monotonic()
    tail = b""
    while time.monotonic() - revoked < 12:
        line = response.readline()
        if not line:
            break
        tail = (tail + line)[-2000:]
    conn.close()
    assert time.monotonic() - revoked < 12, "the stream still ran 12 s after its token was revoked"
    assert b"event: error" in tail and b"authorization" in tail, tail


def test_a_bulk_key_decision_s_record_names_the_agents_it_decided(stack):
    """POST /keys/accept {"all_pending": true} accepts keys nobody named in the request: its record had no object
    and an empty detail, so the trail could not say which agents were let in."""
    stack.master(auto_accept=False)
    stack.web()
    stack.agents(2, wait=False)

    def pending() -> list[str]:
        return sorted(k["agent_id"] for k in stack.api.get("/keys")[1] if k["state"] == "pending")

    ids = wait_until(lambda: len(pending()) == 2 and pending(), 20, what="two keys pending")
    assert stack.api.post("/keys/accept", {"all_pending": True})[0] == 200
    row = _audit(stack, action="key.accept", limit=1)[0]
    assert sorted(row["detail"]["agents"]) == ids and row["detail"]["done"] == 2, row
    assert stack.api.post("/keys/delete", {"agent_ids": ids[:1]})[0] == 200
    assert _audit(stack, action="key.delete", limit=1)[0]["detail"]["agents"] == ids[:1]
