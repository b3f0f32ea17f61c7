"""Job versions, runs from a version, and the task history filters."""


def test_job_versions_diff_rollback_and_run(stack):
    ids = stack.up(2)
    api = stack.api
    status, saved = api.post("/job/deploy", {"script": "echo v1", "message": "first", "parallel": 2,
                                             "targets": ids})
    assert status == 201 and saved["version"] == 1
    status, same = api.post("/job/deploy", {"script": "echo v1", "message": "again", "parallel": 2, "targets": ids})
    assert status == 200 and same["created"] is False and same["version"] == 1  # identical: no new version
    status, saved = api.post("/job/deploy", {"script": "echo v2\necho more", "parallel": 1, "targets": ids})
    assert status == 201 and saved["version"] == 2
    status, job = api.get("/job/deploy")
    assert job["version"] == 2 and job["script"] == "echo v2\necho more" and len(job["sha256"]) == 64
    assert [v["version"] for v in api.get("/job/deploy/versions")[1]] == [1, 2]
    assert api.get("/job/deploy/versions/1")[1]["script"] == "echo v1"
    status, diff = api.get("/job/deploy/diff?from=1&to=2")
    assert "-echo v1" in diff["script_diff"] and "+echo v2" in diff["script_diff"]
    assert diff["params"] == [{"param": "parallel", "from": 2, "to": 1}]
    status, rolled = api.post("/job/deploy/rollback", {"version": 1})
    assert status == 201 and rolled["version"] == 3
    assert api.get("/job/deploy")[1]["script"] == "echo v1"
    status, run = api.post("/job/deploy/run", {"version": 2})
    assert status == 201 and run["version"] == 2
    result = api.wait_task(run["task_id"])
    assert result["job"] == "deploy" and result["job_version"] == 2
    assert {t["output"] for t in result["targets"].values()} == {"v2\nmore\n"}
    status, run = api.post("/job/deploy/run", {"targets": [ids[0]], "timeout": 5})  # overrides
    assert status == 201 and api.wait_task(run["task_id"])["total"] == 1
    assert [j["name"] for j in api.get("/jobs")[1]] == ["deploy"]
    assert api.get("/tasks?job=deploy")[1][0]["job_version"] == 3


def test_job_name_and_input_errors(stack):
    stack.up(1)
    api = stack.api
    assert api.post("/job/a%2Fb", {"script": "x"})[0] in (400, 404)
    status, body = api.post("/job/", {"script": "x"})
    assert status == 400 and body["error"].startswith("name: empty")
    status, body = api.post("/job/" + "x" * 101, {"script": "x"})
    assert status == 400 and body["error"].startswith("name:")
    assert api.get("/job/nope")[0] == 404
    assert api.get("/job/nope/diff?from=1&to=x")[0] == 400
    status, body = api.post("/job/j", {"script": "x", "paralel": 3})
    assert status == 400 and body["error"].startswith("paralel")


def test_task_history_filters_and_pages(stack):
    ids = stack.up(2)
    api = stack.api
    ok = [api.run("true", [ids[0]])["task_id"] for _ in range(3)]
    bad = api.run("exit 1", [ids[1]])["task_id"]
    assert [t["task_id"] for t in api.get("/tasks?state=FAILED")[1]] == [bad]
    assert [t["task_id"] for t in api.get(f"/tasks?agent={ids[0]}")[1]] == ok[::-1]
    first_page = api.get("/tasks?limit=2")[1]
    assert [t["task_id"] for t in first_page] == [bad, ok[2]]
    second = api.get(f"/tasks?limit=2&before={first_page[-1]['created']}")[1]
    assert [t["task_id"] for t in second] == [ok[1], ok[0]]
    assert api.get("/tasks?state=NOPE")[0] == 400
