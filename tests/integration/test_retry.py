"""Rerun the failed hosts: POST /task/{id}/retry, over HTTP with real agents."""
from tests.integration.harness import wait_until


def test_retry_runs_again_on_exactly_the_failed_host(stack):
    ids = stack.up(3)
    bad = ids[1]
    script = f'[ "$MSCHEDULE_AGENT_ID" = "{bad}" ] && {{ echo failing; exit 4; }}; echo fine'
    first = stack.api.run(script, ids, parallel=3, fail_rate=100, timeout=30)
    assert {a: t["state"] for a, t in first["targets"].items()} == {
        ids[0]: "SUCCEED", bad: "FAILED", ids[2]: "SUCCEED"}
    status, body = stack.api.post(f"/task/{first['task_id']}/retry")
    assert status == 201, body
    assert body["retry_of"] == first["task_id"] and body["targets"] == [bad]
    again = stack.api.wait_task(body["task_id"])
    assert list(again["targets"]) == [bad] and again["targets"][bad]["output"] == "failing\n"
    assert again["retry_of"] == first["task_id"] and again["script"] == script
    assert (again["parallel"], again["fail_rate"], again["timeout"]) == (3, 100, 30)
    status, listed = stack.api.get("/tasks?limit=1")
    assert status == 200 and listed[0]["task_id"] == body["task_id"] and listed[0]["retry_of"] == first["task_id"]

    status, body = stack.api.post(f"/task/{first['task_id']}/retry", {"only": ["SUCCEED"]})
    assert status == 400 and body["error"].startswith("only: expected FAILED and/or CANCELLED, got 'SUCCEED'")
    assert body.get("field", "only") == "only"
    status, body = stack.api.post(f"/task/{first['task_id']}/retry", {"only": ["CANCELLED"]})
    assert status == 400 and body["error"].startswith("task_id: nothing to retry"), body
    status, body = stack.api.post("/task/0123456789abcdef/retry")
    assert status == 404, body


def test_retry_of_a_running_task_is_409(stack):
    ids = stack.up(1)
    task_id = stack.api.submit("sleep 30", ids)
    wait_until(lambda: stack.api.get(f"/task/{task_id}")[1]["state"] == "RUNNING", 15, what="task running")
    status, body = stack.api.post(f"/task/{task_id}/retry")
    assert status == 409 and body["error"].startswith(f"task_id: task {task_id} has not finished"), body
    assert stack.api.post(f"/task/{task_id}/cancel")[0] == 200
