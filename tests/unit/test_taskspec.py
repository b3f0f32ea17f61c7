"""Every numeric field of a request has a range, every string is UTF-8 text; the error names the field."""
import pytest

from mschedule.master.handler import AdminHandler
from mschedule.master.jobs import Jobs
from mschedule.master.scheduler import Scheduler
from mschedule.master.storage import Storage
from mschedule.utils.defaults import MAX_TASK_LIST, MAX_TIMEOUT
from mschedule.utils.exceptions import Conflict, NotFound, ValidationError
from mschedule.utils.messages import AgentInfo, ResultMessage
from mschedule.utils.taskspec import TaskSpec, resolve_hostnames

NAN, INF = float("nan"), float("inf")
LONE = "\ud800"


def spec(max_targets=50, **fields):
    return TaskSpec.from_request({"script": "true", "targets": ["a"], **fields}, max_targets=max_targets)


def test_the_bounds_themselves_are_accepted():
    assert spec(timeout=0).timeout == 0 and spec(timeout=MAX_TIMEOUT).timeout == MAX_TIMEOUT == 7 * 86400
    assert spec(parallel=1).parallel == 1 and spec(parallel=50).parallel == 50 and spec(parallel=2.0).parallel == 2
    assert spec(fail_count=-1).fail_count == -1 and spec(fail_count=50).fail_count == 50
    assert spec(fail_rate=0).fail_rate == 0 and spec(fail_rate=100).fail_rate == 100
    assert spec(timeout=0.5, fail_rate=12.5).timeout == 0.5


@pytest.mark.parametrize("fields,message", [
    ({"parallel": 1e30}, "parallel: must be between 1 and 50, got 1e+30"),
    ({"parallel": 51}, "parallel: must be between 1 and 50, got 51"),
    ({"parallel": NAN}, "parallel: expected an integer between 1 and 50, got NaN"),
    ({"parallel": INF}, "parallel: expected an integer between 1 and 50, got Infinity"),
    ({"timeout": 1e300}, "timeout: must be between 0 and 604800 (seconds, 0: none), got 1e+300"),
    ({"timeout": MAX_TIMEOUT + 1}, "timeout: must be between 0 and 604800"),
    ({"timeout": 99999999999999999999999}, "timeout: must be between 0 and 604800"),
    ({"timeout": NAN}, "timeout: expected a number between 0 and 604800 (seconds, 0: none), got NaN"),
    ({"timeout": INF}, "timeout: expected a number between 0 and 604800 (seconds, 0: none), got Infinity"),
    ({"timeout": -INF}, "timeout: expected a number between 0 and 604800 (seconds, 0: none), got -Infinity"),
    ({"timeout": True}, "timeout: expected a number between 0 and 604800 (seconds, 0: none), got boolean"),
    ({"fail_rate": NAN}, "fail_rate: expected a number between 0 and 100 (percent), got NaN"),
    ({"fail_rate": False}, "fail_rate: expected a number between 0 and 100 (percent), got boolean"),
    ({"fail_count": 51}, "fail_count: must be between -1 and 50 (-1: no count limit), got 51"),
    ({"fail_count": 1e30}, "fail_count: must be between -1 and 50"),
    ({"fail_count": NAN}, "fail_count: expected an integer between -1 and 50 (-1: no count limit), got NaN"),
    ({"fail_count": True}, "fail_count: expected an integer between -1 and 50 (-1: no count limit), got boolean"),
    ({"script": LONE}, "script: not valid UTF-8 text"),
    ({"targets": ["a", LONE]}, "targets[1]: not valid UTF-8 text"),
    ({"selector": {"hostname": LONE}}, "selector.hostname: not valid UTF-8 text"),
    ({"selector": {"labels": {"dc": LONE}}}, "selector.labels.dc: not valid UTF-8 text"),
    ({"selector": {"labels": {LONE: "x"}}}, "selector.labels: not valid UTF-8 text"),
    ({"selector": {"group": LONE}}, "selector.group: not valid UTF-8 text"),
    ({"batch_by": LONE}, "batch_by: not valid UTF-8 text"),
    ({"batch_by": "dc", "batch_order": ["bj", LONE]}, "batch_order[1]: not valid UTF-8 text"),
    ({"batch_by": "dc", "batch_order": [str(i) for i in range(51)]}, "batch_order: 51 values, more than the limit"),
])
def test_out_of_range_non_finite_bool_and_bad_text_are_refused(fields, message):
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    assert str(caught.value).startswith(message), caught.value
    assert caught.value.field == message.split(":")[0]
    assert "got number" not in str(caught.value)


@pytest.fixture
def admin():
    storage = Storage()
    scheduler = Scheduler(storage, agent_timeout=10)
    scheduler.agent_seen(AgentInfo(id="a0", hostname="h-a0", session="s1"))
    return AdminHandler(scheduler, max_result_bytes=1000, max_targets=3)


def test_the_master_holds_max_targets(admin):
    with pytest.raises(ValidationError, match="^targets: 4 agents, more than the limit of 3"):
        admin.add_task({"script": "true", "targets": ["a0", "b", "c", "d"]})
    with pytest.raises(ValidationError, match="^parallel: must be between 1 and 3"):
        admin.add_task({"script": "true", "targets": ["a0"], "parallel": 4})
    with pytest.raises(ValidationError, match="^targets: 4 agents, more than the limit of 3"):
        admin.group_put("g", {"targets": ["a0", "b", "c", "d"]})
    assert admin.add_task({"script": "true", "targets": ["a0"], "parallel": 3, "fail_count": 3})


@pytest.mark.parametrize("query,field", [
    ({"wait": -1}, "wait"), ({"wait": 61}, "wait"), ({"wait": 1e300}, "wait"), ({"wait": INF}, "wait"),
    ({"output_limit": -1}, "output_limit"), ({"output_limit": 1001}, "output_limit"),
    ({"output_limit": 1.5}, "output_limit"), ({"output_limit": NAN}, "output_limit"),
])
def test_result_query_ranges(admin, query, field):
    """Checked before the task is looked up: the answer is the 400, not the unknown task's 404."""
    with pytest.raises(ValidationError, match=f"^{field}: ") as caught:
        admin.get_result({"task_id": "nothing", **query})
    assert caught.value.field == field and "got number" not in str(caught.value)


def test_result_query_bounds_are_accepted(admin):
    for query in ({"wait": 0}, {"wait": 60}, {"output_limit": 0}, {"output_limit": 1000}):
        with pytest.raises(NotFound):
            admin.get_result({"task_id": "nothing", **query})


@pytest.mark.parametrize("limit,filters,field", [
    (MAX_TASK_LIST + 1, None, "limit"),
    (None, {"before": NAN}, "before"), (None, {"before": INF}, "before"), (None, {"before": 1e300}, "before"),
    (None, {"before": -1}, "before"), (None, {"before": True}, "before"), (None, {"before": "x"}, "before"),
    (None, {"job": 5}, "job"), (None, {"agent": ["a"]}, "agent"),
])
def test_task_list_ranges(admin, limit, filters, field):
    with pytest.raises(ValidationError, match=f"^{field}: ") as caught:
        admin.get_tasks(limit, filters)
    assert caught.value.field == field


def test_task_list_bounds_are_accepted(admin):
    assert admin.get_tasks() == [] and admin.get_tasks(MAX_TASK_LIST, {"before": 0}) == []


@pytest.mark.parametrize("name,body,field", [
    ("job", {"script": "true", "message": LONE}, "message"),
    ("job", {"script": "true", "timeout": 1e300}, "timeout"),
    ("job", {"script": "true", "parallel": 4}, "parallel"),
    (LONE, {"script": "true"}, "name"),
])
def test_job_bodies(name, body, field):
    jobs = Jobs(Storage(), max_script_bytes=100, max_targets=3)
    with pytest.raises(ValidationError, match=f"^{field}: ") as caught:
        jobs.save(name, body)
    assert caught.value.field == field


def test_job_run_overrides_have_the_same_ranges():
    jobs = Jobs(Storage(), max_script_bytes=100, max_targets=3)
    jobs.save("job", {"script": "true", "targets": ["a"]})
    with pytest.raises(ValidationError, match="^timeout: expected a number between 0 and 604800.*got NaN"):
        jobs.spec_for_run("job", {"timeout": NAN})
    with pytest.raises(ValidationError, match="^fail_count: must be between -1 and 3"):
        jobs.spec_for_run("job", {"fail_count": 4})
    with pytest.raises(ValidationError, match="^version: expected a version number"):
        jobs.rollback("job", "1")


def test_a_hostname_of_one_agent_resolves_to_its_id():
    hostnames = {"id-a": "web-1", "id-b": "web-2", "id-c": "db-1"}
    assert resolve_hostnames(["web-2", "id-a", "web-1", "db-1"], hostnames) == ["id-b", "id-a", "id-c"]


def test_a_hostname_of_several_agents_is_refused_with_the_candidates():
    hostnames = {"id-a": "web-1", "id-b": "web-1", "id-c": "db-1"}
    with pytest.raises(ValidationError, match=r"^targets\[1\]: hostname 'web-1' names 2 agents") as caught:
        resolve_hostnames(["db-1", "web-1"], hostnames)
    assert caught.value.field == "targets[1]"
    assert "id-a (web-1)" in str(caught.value) and "id-b (web-1)" in str(caught.value)


def test_an_unknown_name_is_refused_naming_it_and_close_hostnames():
    hostnames = {"id-a": "web-1", "id-b": "web-2"}
    with pytest.raises(ValidationError, match=r"^targets\[0\]: unknown agent id or hostname 'web-3'") as caught:
        resolve_hostnames(["web-3"], hostnames)
    assert caught.value.field == "targets[0]" and "close hostnames: web-" in str(caught.value)
    with pytest.raises(ValidationError, match=r"^targets\[0\]: unknown agent id or hostname 'zzz'$"):
        resolve_hostnames(["zzz"], hostnames)


def test_tasks_and_job_runs_take_hostnames_and_store_agent_ids(admin):
    admin._scheduler.agent_seen(AgentInfo(id="a1", hostname="twin", session="s1"))
    admin._scheduler.agent_seen(AgentInfo(id="a2", hostname="twin", session="s1"))
    task_id = admin.add_task({"script": "true", "targets": ["h-a0"]})
    assert list(admin._storage.tasks[task_id].targets) == ["a0"]
    with pytest.raises(ValidationError, match=r"^targets\[0\]: hostname 'twin' names 2 agents") as caught:
        admin.add_task({"script": "true", "targets": ["twin"]})
    assert caught.value.field == "targets[0]"
    admin.job_save("job", {"script": "true", "targets": ["h-a0"]})
    run = admin.job_run("job")
    assert list(admin._storage.tasks[run["task_id"]].targets) == ["a0"]
    with pytest.raises(ValidationError, match=r"^targets\[0\]: unknown agent id or hostname 'nope'"):
        admin.job_run("job", {"targets": ["nope"]})


def _ended(admin, codes: dict[str, int], **fields) -> str:
    """A task on the agents of ``codes``, each ended with its exit code."""
    sched = admin._scheduler
    for agent_id in codes:
        if agent_id not in admin._storage.agents:
            sched.agent_seen(AgentInfo(id=agent_id, hostname=f"h-{agent_id}", session="s1"))
    task_id = admin.add_task({"script": "run", "targets": list(codes), "parallel": len(codes), **fields})
    for agent_id, code in codes.items():
        assert sched.next_task(agent_id).id == task_id
        sched.apply_result(ResultMessage(id=task_id, agent_id=agent_id, code=code, output=b""))
    return task_id


def test_retry_runs_the_failed_targets_with_the_same_parameters(admin):
    task_id = _ended(admin, {"a0": 0, "a1": 1, "a2": 0}, timeout=7, fail_rate=100, fail_count=2)
    answer = admin.retry_task(task_id)
    assert answer["retry_of"] == task_id and answer["targets"] == ["a1"]
    new = admin._storage.tasks[answer["task_id"]]
    assert (new.script, new.timeout, new.parallel, new.fail_rate, new.fail_count) == (b"run", 7, 3, 100, 2)
    assert list(new.targets) == ["a1"] and new.summary()["retry_of"] == task_id
    assert admin.get_tasks(1)[0]["retry_of"] == task_id


@pytest.mark.parametrize("body,message", [
    ({"only": ["SUCCEED"]}, "only: expected FAILED and/or CANCELLED, got 'SUCCEED'"),
    ({"only": []}, "only: expected a non-empty array"), ({"only": "FAILED"}, "only: expected a non-empty array"),
    ({"only": [["FAILED"]]}, "only: expected FAILED and/or CANCELLED, got array"),
    ({"what": 1}, "what: unknown field"), ([], "body: expected an object"),
])
def test_retry_refuses_a_bad_body(admin, body, message):
    task_id = _ended(admin, {"a0": 1})
    with pytest.raises(ValidationError) as caught:
        admin.retry_task(task_id, body)
    assert str(caught.value).startswith(message) and caught.value.field == message.split(":")[0]


def test_retry_of_a_running_unknown_or_clean_task(admin):
    running = admin.add_task({"script": "run", "targets": ["a0"]})
    with pytest.raises(Conflict, match="^task_id: task .* has not finished") as caught:
        admin.retry_task(running)
    assert caught.value.field == "task_id"
    admin._scheduler.next_task("a0")
    admin.cancel_task(running)  # CANCELLED, its script still runs: retrying now would miss it
    with pytest.raises(Conflict, match="1 targets still running"):
        admin.retry_task(running)
    with pytest.raises(NotFound):
        admin.retry_task("nothing")
    clean = _ended(admin, {"a1": 0})
    with pytest.raises(ValidationError, match="^task_id: nothing to retry") as caught:
        admin.retry_task(clean, {"only": ["FAILED"]})
    assert caught.value.field == "task_id"


def test_a_script_with_crlf_line_endings_throughout_is_stored_with_lf():
    assert spec(script="#!/bin/bash\r\necho a\r\necho b").script == b"#!/bin/bash\necho a\necho b"
    assert spec(script=b"echo a\r\n").script == b"echo a\n"  # a job's stored script too
    mixed = "printf 'a\\r\\n' > f\necho 'x\r\n'\n"  # some bare LF: written on Unix, its CR is meant
    assert spec(script=mixed).script == mixed.encode()
