import msgpack
import pytest

from mschedule.utils.exceptions import MessageError, ValidationError
from mschedule.utils.messages import (
    AgentInfo,
    Heartbeat,
    ResultMessage,
    TaskMessage,
    b64encode,
    heartbeat_message,
    register_message,
    split_message,
)
from mschedule.utils.states import State
from mschedule.utils.taskspec import TaskSpec


def test_register_and_heartbeat_round_trip():
    info = AgentInfo(id="a1", hostname="h", ip=["10.0.0.1"], labels={"dc": "bj"}, running="t1", session="s")
    kind, payload = split_message(register_message(info))
    assert kind == "register" and AgentInfo.from_payload(payload) == info
    kind, payload = split_message(heartbeat_message(info))
    assert kind == "heartbeat"  # not the design's typo "hearbeat"
    assert Heartbeat.from_payload(payload) == Heartbeat(id="a1", session="s", running="t1")


def test_a_heartbeat_is_small():
    """Hostname, addresses and labels travel in register only: a heartbeat is the id, session and task."""
    info = AgentInfo(id="a" * 32, hostname="web-" + "x" * 60, ip=["10.0.0.1", "192.168.1.20"],
                     labels={f"k{i}": "v" * 20 for i in range(10)}, session="s" * 32)
    assert set(heartbeat_message(info)["payload"]) == {"id", "session", "running", "stopping"}
    assert len(msgpack.packb(heartbeat_message(info))) < len(msgpack.packb(register_message(info))) / 3


def test_an_older_agents_full_heartbeat_still_parses():
    info = AgentInfo(id="a1", hostname="h", ip=["10.0.0.1"], running="t1", session="s")
    assert Heartbeat.from_payload(info.to_payload()) == Heartbeat(id="a1", session="s", running="t1")


def test_task_message_round_trip_is_base64():
    msg = TaskMessage(id="t", script=b"echo \xff", timeout=5, parallel=2, fail_rate=10, fail_count=1).to_message()
    assert msg["payload"]["script"] == b64encode(b"echo \xff")
    assert TaskMessage.from_message(msg).script == b"echo \xff"


def test_result_round_trip():
    result = ResultMessage(id="t", agent_id="a", code=3, output=b"out", timed_out=True)
    assert ResultMessage.from_payload(result.to_message()["payload"]) == result


@pytest.mark.parametrize("msg,field", [
    ("x", "message"), ({"payload": {}}, "type"), ({"type": "register"}, "payload"),
])
def test_malformed_envelopes(msg, field):
    with pytest.raises(MessageError, match=field):
        split_message(msg)


@pytest.mark.parametrize("payload,field", [
    ({"hostname": "h"}, "payload.id"), ({"id": "a"}, "payload.hostname"), ({"id": 3, "hostname": "h"}, "payload.id"),
    ({"id": "a", "hostname": "h", "ip": "1.2.3.4"}, "payload.ip"),
    ({"id": "a", "hostname": "h", "labels": {"k": 1}}, "payload.labels"),
])
def test_malformed_agent_payloads(payload, field):
    with pytest.raises(MessageError, match=field):
        AgentInfo.from_payload(payload)


def _hello(**fields):
    return {"id": "a" * 32, "hostname": "h", **fields}


@pytest.mark.parametrize("payload,field", [
    (_hello(id="a" * 65), "payload.id"), (_hello(id="../x"), "payload.id"), (_hello(id="a b"), "payload.id"),
    (_hello(hostname="h" * 254), "payload.hostname"), (_hello(hostname="h\nfake log line"), "payload.hostname"),
    (_hello(ip=["10.0.0.1"] * 65), "payload.ip"), (_hello(ip=["10.0.0.1", "x" * 300]), "payload.ip\\[1\\]"),
    (_hello(ip=["not-an-ip"]), "payload.ip\\[0\\]"),
    (_hello(labels={f"k{i}": "v" for i in range(65)}), "payload.labels"),
    (_hello(labels={"k" * 64: "v"}), "payload.labels"), (_hello(labels={"": "v"}), "payload.labels"),
    (_hello(labels={"role": "v" * 256}), "payload.labels"),
    (_hello(session="s" * 129), "payload.session"), (_hello(running="t" * 129), "payload.running"),
])
def test_oversized_agent_payloads_are_refused_naming_the_field(payload, field):
    with pytest.raises(MessageError, match=f"^{field}") as refused:
        AgentInfo.from_payload(payload)
    assert refused.value.field == field.split("\\")[0]


def test_agent_payloads_at_the_limits_pass():
    labels = {f"{i:02d}" + "k" * 61: "v" * 255 for i in range(64)}
    ips = ["10.0.0.1", "2001:db8::1"] * 32
    info = AgentInfo.from_payload(_hello(id="A-z_0.9" + "a" * 57, hostname="h" * 253, ip=ips, labels=labels,
                                         session="s" * 128, running="t" * 128))
    assert len(info.id) == 64 and len(info.hostname) == 253 and len(info.labels) == 64 and len(info.ip) == 64


@pytest.mark.parametrize("payload,field", [
    ({"agent_id": "a", "code": 0}, "payload.id"), ({"id": "t", "agent_id": "a", "code": "0"}, "payload.code"),
    ({"id": "t", "agent_id": "a", "code": True}, "payload.code"),
    ({"id": "t", "agent_id": "a", "code": 0, "output": "!!"}, "payload.output"),
])
def test_malformed_results(payload, field):
    with pytest.raises(MessageError, match=field):
        ResultMessage.from_payload(payload)


def test_state_is_a_plain_string():
    assert State.SUCCEED == "SUCCEED" and State.FAILED.is_finished and not State.RUNNING.is_finished


def test_taskspec_defaults():
    spec = TaskSpec.from_request({"script": "echo hi", "targets": ["a", "b", "a"]})
    assert spec == TaskSpec(script=b"echo hi", targets=["a", "b"], timeout=0, parallel=1, fail_rate=0, fail_count=-1)


@pytest.mark.parametrize("body,field", [
    ([], "body"), ({"targets": ["a"]}, "script"), ({"script": "", "targets": ["a"]}, "script"),
    ({"script": "x"}, "targets"), ({"script": "x", "targets": []}, "targets"),
    ({"script": "x", "targets": "a"}, "targets"), ({"script": "x", "targets": [1]}, r"targets\[0\]"),
    ({"script": "x", "targets": ["a"], "parallel": 0}, "parallel"),
    ({"script": "x", "targets": ["a"], "parallel": 1.5}, "parallel"),
    ({"script": "x", "targets": ["a"], "parallel": True}, "parallel"),
    ({"script": "x", "targets": ["a"], "fail_rate": -1}, "fail_rate"),
    ({"script": "x", "targets": ["a"], "fail_rate": 100.5}, "fail_rate"),
    ({"script": "x", "targets": ["a"], "fail_count": -2}, "fail_count"),
    ({"script": "x", "targets": ["a"], "timeout": -1}, "timeout"),
    ({"script": "x", "targets": ["a"], "timeout": "10"}, "timeout"),
    ({"script": "x", "targets": ["a"], "bogus": 1}, "bogus"),
])
def test_taskspec_rejects(body, field):
    with pytest.raises(ValidationError, match=f"^{field}"):
        TaskSpec.from_request(body)


def test_taskspec_script_size_limit():
    with pytest.raises(ValidationError, match="script: 11 bytes, larger than the limit of 10"):
        TaskSpec.from_request({"script": "x" * 11, "targets": ["a"]}, max_script_bytes=10)


def test_taskspec_script_is_text_or_stored_bytes():
    """The web tier passes the JSON body's script on as text; a job's stored script comes back as bytes."""
    assert TaskSpec.from_request({"script": "echo é", "targets": ["a"]}).script == "echo é".encode()
    assert TaskSpec.from_request({"script": b"echo \xff", "targets": ["a"]}).script == b"echo \xff"
