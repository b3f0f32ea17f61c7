"""Live output, the agent's side: the progress message's parser, the executor's view of what is new, and the
worker's throttled, best-effort sender."""
from __future__ import annotations

import base64

import gevent
import pytest

import mschedule.agent.worker as worker_module
from mschedule.agent.executor import Executor, _OutputCollector
from mschedule.agent.worker import AgentWorker
from mschedule.utils.exceptions import MessageError
from mschedule.utils.messages import MAX_PROGRESS_BYTES, ProgressMessage, split_message


# ---- the message ------------------------------------------------------------------------------
def test_progress_round_trip():
    msg = ProgressMessage(id="t1", agent_id="a1", offset=10, data=b"first\n").to_message()
    kind, payload = split_message(msg)
    assert kind == "progress"
    assert ProgressMessage.from_payload(payload) == ProgressMessage("t1", "a1", 10, b"first\n")


def _payload(**over):
    payload = {"id": "t1", "agent_id": "a1", "offset": 0, "data": base64.b64encode(b"x").decode()}
    payload.update(over)
    return {k: v for k, v in payload.items() if v is not ...}


@pytest.mark.parametrize("over, field", [
    ({"id": ...}, "payload.id"),
    ({"id": 5}, "payload.id"),
    ({"id": ""}, "payload.id"),
    ({"id": "t" * 129}, "payload.id"),
    ({"agent_id": ...}, "payload.agent_id"),
    ({"agent_id": "a/b"}, "payload.agent_id"),
    ({"offset": ...}, "payload.offset"),
    ({"offset": -1}, "payload.offset"),
    ({"offset": 1.5}, "payload.offset"),
    ({"offset": True}, "payload.offset"),
    ({"offset": 2 ** 63}, "payload.offset"),
    ({"data": ...}, "payload.data"),
    ({"data": 3}, "payload.data"),
    ({"data": "not base64!"}, "payload.data"),
    ({"data": base64.b64encode(b"x" * (MAX_PROGRESS_BYTES + 1)).decode()}, "payload.data"),
    ({"data": "A" * (4 * MAX_PROGRESS_BYTES)}, "payload.data"),
])
def test_a_malformed_progress_names_its_field(over, field):
    with pytest.raises(MessageError) as refused:
        ProgressMessage.from_payload(_payload(**over))
    assert refused.value.field == field


def test_the_largest_progress_parses():
    data = b"y" * MAX_PROGRESS_BYTES
    assert ProgressMessage.from_payload(_payload(data=base64.b64encode(data).decode())).data == data


# ---- the agent's side --------------------------------------------------------------------------
def test_collector_since_gives_what_is_new_and_the_last_bytes_when_more_arrived():
    c = _OutputCollector(cap=10, window=8)
    assert c.since(0, 100) == (0, b"")
    c.feed(b"abc")
    assert c.since(0, 100) == (0, b"abc")
    assert c.since(3, 100) == (3, b"")
    c.feed(b"defghijkl")  # 12 bytes in all; the window keeps the last 8
    assert c.since(3, 100) == (4, b"efghijkl")
    assert c.since(3, 2) == (10, b"kl")
    assert c.text() == b"abcdefghij" + c.text()[10:]  # the first cap bytes are still the result's


def test_executor_progress_only_while_a_script_runs():
    executor = Executor()
    assert executor.progress(0, 100) is None
    seen = []
    runner = gevent.spawn(executor.run, b"echo first; sleep 0.5; echo second")
    gevent.sleep(0.3)
    seen.append(executor.progress(0, 100))
    result = runner.get()
    assert seen == [(0, b"first\n")]
    assert result.output == b"first\nsecond\n"
    assert executor.progress(0, 100) is None


class RecordingLink:
    endpoint = "tcp://fake"

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict] = []
        self.fail = fail

    def call(self, method, *args, timeout=None):
        if method == "send" and args[0]["type"] == "progress":
            self.sent.append(args[0])
            if self.fail:
                raise RuntimeError("refused")
            return {"ok": True}
        raise AssertionError(f"unexpected call {method}")


def _run_with_progress(script: bytes, link: RecordingLink, interval: float = 0.2) -> list[dict]:
    worker = AgentWorker("a1", "h", link)
    saved = worker_module.PROGRESS_INTERVAL
    worker_module.PROGRESS_INTERVAL = interval
    try:
        reporter = gevent.spawn(worker._report_progress, "t1")
        worker.executor.run(script)
        reporter.kill()
    finally:
        worker_module.PROGRESS_INTERVAL = saved
    return [ProgressMessage.from_payload(m["payload"]) for m in link.sent]


def test_a_script_that_ends_before_the_first_tick_sends_no_progress():
    assert _run_with_progress(b"true", RecordingLink(), interval=1.0) == []


def test_progress_is_throttled_and_only_sent_when_there_is_new_output():
    # prints at once, then nothing for several ticks, then once more
    sent = _run_with_progress(b"echo first; sleep 1.1; echo second; sleep 0.5", RecordingLink(), interval=0.2)
    assert [(p.offset, p.data) for p in sent] == [(0, b"first\n"), (6, b"second\n")]


def test_a_failed_progress_is_dropped_not_resent():
    link = RecordingLink(fail=True)
    sent = _run_with_progress(b"echo first; sleep 0.7; echo second; sleep 0.5", link, interval=0.2)
    assert [p.data for p in sent] == [b"first\n", b"second\n"]
