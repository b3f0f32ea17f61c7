"""The whole job path, from HTTP to /bin/sh on every target and back, with real processes."""
import os
import time

from tests.integration.harness import scaled


def _intervals(log_dir):
    """(start, end) of every script run, from the timestamps the scripts wrote themselves."""
    spans = []
    for name in os.listdir(log_dir):
        start, end = (float(x) for x in open(os.path.join(log_dir, name)).read().split())
        spans.append((start, end))
    return spans


def _max_overlap(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_hello_on_every_agent(stack):
    ids = stack.up(3)
    result = stack.api.run('echo "hello from $MSCHEDULE_AGENT_ID"; echo "err line" >&2; echo ünïcode', ids,
                           parallel=3)
    assert result["state"] == "SUCCEED"
    assert result["counts"]["SUCCEED"] == 3
    for agent_id, target in result["targets"].items():
        assert target["state"] == "SUCCEED" and target["code"] == 0
        assert target["output"] == f"hello from {agent_id}\nerr line\nünïcode\n"
        assert target["hostname"] and target["started"] <= target["finished"]


def test_parallel_window_measured_by_scripts(stack, tmp_path):
    ids = stack.up(5)
    log_dir = tmp_path / "spans"
    log_dir.mkdir()
    script = (f'start=$(date +%s.%N); sleep {scaled(0.5)}; '
              f'echo "$start $(date +%s.%N)" > {log_dir}/$MSCHEDULE_AGENT_ID')
    result = stack.api.run(script, ids, parallel=2)
    assert result["state"] == "SUCCEED"
    spans = _intervals(log_dir)
    assert len(spans) == 5
    assert _max_overlap(spans) == 2  # the window is used, and never exceeded


def test_fail_count_aborts_and_cancels_the_rest(stack, tmp_path):
    ids = stack.up(5)
    ran = tmp_path / "ran"
    ran.mkdir()
    failing = ids[:2]
    script = (f'touch {ran}/$MSCHEDULE_AGENT_ID; case "$MSCHEDULE_AGENT_ID" in '
              f'{failing[0]}|{failing[1]}) echo boom; exit 3;; esac; echo fine')
    result = stack.api.run(script, ids, parallel=1, fail_count=1, fail_rate=100)
    assert result["state"] == "FAILED"
    states = {a: t["state"] for a, t in result["targets"].items()}
    assert states == {ids[0]: "FAILED", ids[1]: "FAILED", ids[2]: "CANCELLED", ids[3]: "CANCELLED",
                      ids[4]: "CANCELLED"}
    assert result["targets"][ids[0]]["code"] == 3 and result["targets"][ids[0]]["output"] == "boom\n"
    assert sorted(os.listdir(ran)) == sorted(failing)  # cancelled targets never ran


def test_default_limits_stop_at_first_failure(stack):
    ids = stack.up(3)
    result = stack.api.run("exit 1", ids)
    assert result["state"] == "FAILED"
    assert result["counts"] == {"WAITING": 0, "RUNNING": 0, "SUCCEED": 0, "FAILED": 1, "CANCELLED": 2}


def test_timeout_kills_the_whole_process_group(stack, tmp_path):
    ids = stack.up(1)
    pid_file = tmp_path / "bg.pid"
    result = stack.api.run(f"echo started; sleep 100 & echo $! > {pid_file}; wait", ids, timeout=1)
    target = result["targets"][ids[0]]
    assert result["state"] == "FAILED" and target["state"] == "FAILED"
    assert target["timed_out"] is True and target["code"] == 124
    assert target["output"].startswith("started\n") and "timed out after 1s" in target["output"]
    pid = int(pid_file.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"


def test_heartbeats_go_on_while_a_script_runs(stack):
    ids = stack.up(1)
    # longer than the master's agent timeout (3 s): the agent must stay online throughout
    result = stack.api.run(f"sleep {scaled(4.5)}; echo done", ids)
    assert result["state"] == "SUCCEED", result
    assert stack.api.agents()[ids[0]]["online"]


def test_tasks_queue_first_come_first_served(stack, tmp_path):
    ids = stack.up(1)
    order = tmp_path / "order"
    first = stack.api.submit(f"sleep {scaled(0.3)}; echo 1 >> {order}", ids)
    second = stack.api.submit(f"echo 2 >> {order}", ids)
    third = stack.api.submit(f"echo 3 >> {order}", ids)
    for task_id in (first, second, third):
        assert stack.api.wait_task(task_id)["state"] == "SUCCEED"
    assert order.read_text().split() == ["1", "2", "3"]


def test_task_list_and_lookup(stack):
    ids = stack.up(1)
    older = stack.api.run("true", ids)["task_id"]
    newer = stack.api.run("true", ids)["task_id"]
    status, tasks = stack.api.get("/tasks")
    assert status == 200
    assert [t["task_id"] for t in tasks[:2]] == [newer, older]
    assert "targets" not in tasks[0]
    status, one = stack.api.get(f"/task/{older}")
    assert status == 200 and one["targets"][ids[0]]["state"] == "SUCCEED"


def test_output_limit_keeps_the_tail_and_one_target_gives_it_whole(stack):
    ids = stack.up(2)
    task_id = stack.api.run("seq 1 20000", ids)["task_id"]
    whole = "".join(f"{i}\n" for i in range(1, 20001))
    status, cut = stack.api.get(f"/task/{task_id}?output_limit=100")
    assert status == 200, cut
    for target in cut["targets"].values():
        assert target["output"] == whole[-100:] and whole.endswith(target["output"])
        assert target["output_bytes"] == len(whole) and target["output_omitted"] == len(whole) - 100
    status, cut = stack.api.post("/result", {"task_id": task_id, "output_limit": 0})
    assert status == 200 and {t["output"] for t in cut["targets"].values()} == {""}
    status, full = stack.api.get(f"/task/{task_id}")
    assert all(t["output"] == whole and t["output_omitted"] == 0 for t in full["targets"].values())

    status, one = stack.api.get(f"/task/{task_id}/target/{ids[1]}")
    assert status == 200, one
    assert one["agent_id"] == ids[1] and one["task_id"] == task_id and one["state"] == "SUCCEED"
    assert one["output"] == whole and one["output_bytes"] == len(whole) and one["output_omitted"] == 0

    for query in ("output_limit=-1", "output_limit=lots", "output_limit=1.5"):
        status, body = stack.api.get(f"/task/{task_id}?{query}")
        assert status == 400 and body["error"].startswith("output_limit: "), (query, body)
    status, body = stack.api.post("/result", {"task_id": task_id, "output_limit": True})
    assert status == 400 and body["error"].startswith("output_limit: ")
    status, body = stack.api.get(f"/task/{task_id}/target/nobody")
    assert status == 404 and body["error"] == f"task {task_id} has no target nobody"
    status, body = stack.api.get(f"/task/nothing/target/{ids[0]}")
    assert status == 404 and body["error"] == "task nothing not found"


def test_outputs_over_the_result_budget_keep_an_equal_tail_each(stack):
    stack.master("--max-result-bytes", "50000")
    stack.web()
    stack.agents(2)
    ids = sorted(stack.online_agents())
    task_id = stack.api.run("seq 1 20000", ids)["task_id"]  # 108894 bytes each, 217788 together
    whole = "".join(f"{i}\n" for i in range(1, 20001))
    status, detail = stack.api.get(f"/task/{task_id}")
    assert status == 200 and detail["output_limit"] == 25000
    for target in detail["targets"].values():
        assert target["output"] == whole[-25000:]
        assert target["output_bytes"] == len(whole) and target["output_omitted"] == len(whole) - 25000
    # a caller's limit holds where it is smaller than the share, not where it is larger; one target is whole
    assert stack.api.get(f"/task/{task_id}?output_limit=10")[1]["output_limit"] == 10
    assert stack.api.get(f"/task/{task_id}?output_limit=40000")[1]["output_limit"] == 25000
    assert stack.api.get(f"/task/{task_id}/target/{ids[0]}")[1]["output"] == whole
    # under the budget nothing is cut
    small = stack.api.run("echo small", ids)
    assert small["output_limit"] is None and {t["output"] for t in small["targets"].values()} == {"small\n"}


def test_targets_view(stack):
    ids = stack.up(2)
    agents = stack.api.agents()
    assert sorted(agents) == ids
    for info in agents.values():
        assert set(info) >= {"hostname", "ip", "labels", "online", "busy", "heartbeat"}
        assert info["online"] is True and info["busy"] is False
        assert "127.0.0.1" not in info["ip"]


def test_labels_reported(stack):
    stack.master()
    stack.web()
    stack.agents(1, extra=("--label", "dc=bj", "--label", "role=web"))
    (info,) = stack.api.agents().values()
    assert info["labels"] == {"dc": "bj", "role": "web"}


def test_long_wait_does_not_block_other_requests(stack):
    ids = stack.up(1)
    task_id = stack.api.submit(f"sleep {scaled(3)}", ids)
    import threading

    waited = {}

    def long_wait():
        started = time.monotonic()
        waited["status"], waited["body"] = stack.api.post("/result", {"task_id": task_id, "wait": 30})
        waited["seconds"] = time.monotonic() - started

    threads = [threading.Thread(target=long_wait) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    status, _ = stack.api.get("/tasks")
    quick = time.monotonic() - started
    for t in threads:
        t.join(60)
    assert status == 200
    assert quick < scaled(1.5), f"/tasks took {quick:.2f}s while long waits were pending"
    assert waited["status"] == 200 and waited["body"]["state"] == "SUCCEED"


def test_wait_answers_when_the_task_ends_or_at_the_cap(stack):
    ids = stack.up(1)
    slow = stack.api.submit(f"sleep {scaled(3)}", ids)
    started = time.monotonic()
    status, body = stack.api.get(f"/task/{slow}?wait=0.5")
    assert status == 200 and body["state"] == "RUNNING"  # the cap came first: current state
    assert 0.4 < time.monotonic() - started < scaled(2.5)
    status, body = stack.api.post("/result", {"task_id": slow, "wait": 30})
    assert body["state"] == "SUCCEED"
    assert time.monotonic() - started < scaled(10)  # answered when it ended, not at the 30 s cap


def test_scripts_as_operators_write_them(stack):
    """A #! line picks the interpreter, CRLF line endings (saved on Windows) run, a missing interpreter is 127."""
    ids = stack.up(1)
    bash = stack.api.run("#!/bin/bash\r\nwords=(a b c)\r\n[[ ${#words[@]} == 3 ]] && echo \"bash ${words[2]}\"\r\n",
                         ids)
    assert bash["state"] == "SUCCEED" and bash["targets"][ids[0]]["output"] == "bash c\n", bash
    assert "\r" not in bash["script"]  # stored as it runs
    python = stack.api.run("#!/usr/bin/env python3\nprint('python', 6 * 7)\n", ids)
    assert python["targets"][ids[0]]["output"] == "python 42\n"
    missing = stack.api.run("#!/opt/nowhere/bin/ruby\nputs 1\n", ids)["targets"][ids[0]]
    assert missing["state"] == "FAILED" and missing["code"] == 127
    assert "its #! interpreter '/opt/nowhere/bin/ruby' does not exist" in missing["output"]


def test_an_idempotency_key_makes_one_task_through_the_web_tier(stack):
    ids = stack.up(1)
    body = {"script": "true", "targets": ids}
    key = {"Idempotency-Key": "deploy-2026-12-01-1"}
    first = stack.api.post("/task", body, headers=key)
    assert first[0] == 201, first
    assert stack.api.post("/task", body, headers=key) == first  # the same answer, no second task
    assert stack.api.post("/task", {**body, "script": "false"}, headers=key)[1]["field"] == "idempotency_key"
    for bad in ("has space", "x" * 129):
        status, answer = stack.api.post("/task", body, headers={"Idempotency-Key": bad})
        assert status == 400 and answer["field"] == "idempotency_key", answer
    assert stack.api.post("/job/j", {"script": "true", "targets": ids})[0] in (200, 201)
    run = stack.api.post("/job/j/run", {}, headers={"Idempotency-Key": "run-1"})
    assert run[0] == 201 and stack.api.post("/job/j/run", {}, headers={"Idempotency-Key": "run-1"}) == run
    tasks = stack.api.get("/tasks?limit=10")[1]
    assert len(tasks) == 2, tasks
