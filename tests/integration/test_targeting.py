"""Labels, selectors, groups and datacenter-by-datacenter rollouts, over HTTP with real agents."""
import pytest

from tests.integration.harness import scaled


@pytest.fixture
def fleet(stack, tmp_path):
    """Two 'datacenters' of two agents each, plus one unlabelled agent."""
    stack.master()
    stack.web()
    stack.agents(2, extra=("--hostname", "web-bj-{i}", "--label", "dc=bj", "--label", "role=web"))
    stack.agents(2, extra=("--hostname", "web-sh-{i}", "--label", "dc=sh", "--label", "role=web"))
    config = tmp_path / "agent.toml"
    config.write_text('hostname = "misc"\n[labels]\nrole = "misc"\n')
    stack.agents(1, extra=("--config", str(config)))
    agents = stack.api.agents()
    by_host = {info["hostname"]: agent_id for agent_id, info in agents.items()}
    return stack, by_host


def test_labels_and_filters(fleet):
    stack, by_host = fleet
    agents = stack.api.agents()
    assert agents[by_host["misc"]]["labels"] == {"role": "misc"}  # from the config file
    assert agents[by_host["web-bj-0"]]["labels"] == {"dc": "bj", "role": "web"}
    status, picked = stack.api.get("/task/targets?hostname=web-*&label=dc:sh")
    assert status == 200 and sorted(i["hostname"] for i in picked.values()) == ["web-sh-0", "web-sh-1"]
    assert stack.api.get("/task/targets?label=nocolon")[0] == 400


def test_selector_task_and_errors(fleet):
    stack, by_host = fleet
    status, body = stack.api.post("/task", {"script": "hostname", "selector": {"labels": {"dc": "bj"}}})
    assert status == 201
    result = stack.api.wait_task(body["task_id"])
    assert sorted(t["hostname"] for t in result["targets"].values()) == ["web-bj-0", "web-bj-1"]
    assert result["selector"] == {"labels": {"dc": "bj"}}
    status, body = stack.api.post("/task", {"script": "true", "selector": {"hostname": "nothing-*"}})
    assert status == 400 and body["error"].startswith("selector: matches no agent")
    status, body = stack.api.post("/task", {"script": "true", "selector": {"colour": "red"}})
    assert status == 400 and body["error"].startswith("selector.colour")
    status, body = stack.api.post("/task", {"script": "true"})
    assert status == 400 and body["error"].startswith("targets: missing")


def test_groups(fleet):
    stack, by_host = fleet
    status, group = stack.api.request("PUT", "/group/web-sh", {"selector": {"hostname": "web-sh-*"},
                                                                "targets": [by_host["misc"]]})
    assert status == 200 and sorted(group["members"]) == sorted([by_host["misc"], by_host["web-sh-0"],
                                                                 by_host["web-sh-1"]])
    assert [g["name"] for g in stack.api.get("/groups")[1]] == ["web-sh"]
    status, body = stack.api.post("/task", {"script": "true", "selector": {"group": "web-sh"}})
    assert status == 201 and stack.api.wait_task(body["task_id"])["total"] == 3
    assert stack.api.request("DELETE", "/group/web-sh")[0] == 200
    assert stack.api.get("/group/web-sh")[0] == 404
    status, body = stack.api.request("PUT", "/group/bad", {"selector": {"group": "x"}})
    assert status == 400


def test_batch_by_dc_rolls_out_one_datacenter_at_a_time(fleet, tmp_path):
    stack, by_host = fleet
    spans = tmp_path / "spans"
    spans.mkdir()
    script = (f"s=$(date +%s.%N); sleep {scaled(0.4)}; "
              f'echo "$s $(date +%s.%N)" > {spans}/$MSCHEDULE_AGENT_ID')
    ids = [by_host[h] for h in ("web-bj-0", "web-bj-1", "web-sh-0", "web-sh-1", "misc")]
    result = stack.api.run(script, ids, parallel=2, batch_by="dc", batch_order=["sh", "bj"], fail_rate=100)
    assert result["state"] == "SUCCEED"
    assert [b["value"] for b in result["batches"]] == ["sh", "bj", None]
    # the scripts' own clocks: when each one really ran
    when = {host: tuple(float(x) for x in (spans / by_host[host]).read_text().split())
            for host in ("web-bj-0", "web-bj-1", "web-sh-0", "web-sh-1", "misc")}
    sh_end = max(when["web-sh-0"][1], when["web-sh-1"][1])
    bj_start = min(when["web-bj-0"][0], when["web-bj-1"][0])
    assert sh_end <= bj_start  # bj started only after sh had finished
    assert max(when["web-bj-0"][1], when["web-bj-1"][1]) <= when["misc"][0]


def test_failing_datacenter_stops_the_rollout(fleet, tmp_path):
    stack, by_host = fleet
    marker = tmp_path / "ran"
    ids = [by_host[h] for h in ("web-bj-0", "web-bj-1", "web-sh-0", "web-sh-1")]
    bj = [by_host["web-bj-0"], by_host["web-bj-1"]]
    script = f'echo $MSCHEDULE_AGENT_ID >> {marker}; case $MSCHEDULE_AGENT_ID in {bj[0]}|{bj[1]}) exit 1;; esac'
    result = stack.api.run(script, ids, parallel=2, batch_by="dc", fail_count=0, fail_rate=100)
    assert result["state"] == "FAILED"
    assert {result["targets"][by_host[h]]["state"] for h in ("web-sh-0", "web-sh-1")} == {"CANCELLED"}
    assert set(marker.read_text().split()) <= set(bj)  # sh never ran


def test_targets_by_hostname(fleet):
    """A hostname of one agent stands for its id; a hostname of several, or an unknown name, is a 400."""
    stack, by_host = fleet
    status, body = stack.api.post("/task", {"script": "hostname", "targets": ["web-sh-1", by_host["misc"]]})
    assert status == 201, body
    result = stack.api.wait_task(body["task_id"])
    assert sorted(result["targets"]) == sorted([by_host["web-sh-1"], by_host["misc"]])  # stored as agent ids
    stack.agents(2, extra=("--hostname", "twin"))  # two instances of one process: one hostname
    status, body = stack.api.post("/task", {"script": "true", "targets": ["misc", "twin"]})
    assert status == 400 and body["error"].startswith("targets[1]: hostname 'twin' names 2 agents"), body
    status, body = stack.api.post("/task", {"script": "true", "targets": ["web-sh-7"]})
    assert status == 400 and body["error"].startswith("targets[0]: unknown agent id or hostname 'web-sh-7'"), body
    assert "web-sh-0" in body["error"]  # a close hostname is suggested
