"""How the agent takes the master's typed refusals (mschedule.transport.errors): a pending key is logged once and asked
again with backoff; a refused result is dropped, never resent; a master that forgot the agent is told again
at once. A fake link raises what the master's endpoint would."""
from __future__ import annotations

import logging

import pytest
import zerorpc

from mschedule.agent.backoff import Backoff
from mschedule.agent.worker import AgentWorker
from mschedule.transport import remote_error
from mschedule.utils.messages import ResultMessage


class FakeLink:
    """Stands for MasterLink: every call raises ``error``."""

    endpoint = "tcp://fake"

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls: list[str] = []

    def call(self, method, *args, timeout=None):
        self.calls.append(method)
        raise self.error


def failed_steps(worker: AgentWorker, count: int) -> list[float]:
    backoff, delays = Backoff(base=1, cap=30), []
    for _ in range(count):
        with pytest.raises(Exception) as failed:
            worker._step()
        delays.append(worker._retry_delay(failed.value, backoff))
    return delays


def test_a_pending_key_is_logged_once_and_asked_again_with_backoff(caplog):
    link = FakeLink(remote_error("KeyPending", "agent a1: key pending acceptance by an operator"))
    worker = AgentWorker("a1", "h", link)
    with caplog.at_level(logging.INFO, logger="mschedule.agent.worker"):
        delays = failed_steps(worker, 4)
    assert link.calls == ["send"] * 4 and all(d > 0 for d in delays) and delays[-1] > delays[0]
    lines = [r for r in caplog.records if r.name == "mschedule.agent.worker"]
    assert [r.levelno for r in lines] == [logging.WARNING], [r.getMessage() for r in lines]
    assert "key pending acceptance" in lines[0].getMessage() and "keys accept a1" in lines[0].getMessage()


@pytest.mark.parametrize("name", ["MessageError", "Unauthorized"])
def test_a_refused_result_is_dropped_and_logged(caplog, name):
    worker = AgentWorker("a1", "h", FakeLink(remote_error(name, "payload.code: expected int", None, "payload.code")))
    worker._keep(ResultMessage(id="t1", agent_id="a1", code=0))
    with caplog.at_level(logging.ERROR, logger="mschedule.agent.worker"):
        worker._deliver_results()
    assert worker._unsent == []
    assert any("task t1 result dropped" in r.getMessage() for r in caplog.records)


def test_a_result_the_master_did_not_answer_is_kept():
    worker = AgentWorker("a1", "h", FakeLink(zerorpc.LostRemote("gone")))
    worker._keep(ResultMessage(id="t1", agent_id="a1", code=0))
    with pytest.raises(zerorpc.LostRemote):
        worker._deliver_results()
    assert [r.id for r in worker._unsent] == ["t1"]


def test_a_master_that_does_not_know_the_agent_gets_a_register_at_once():
    worker = AgentWorker("a1", "h", FakeLink(remote_error("NotFound", "agent a1 is not registered", None, "agent_id")))
    worker._registered = True
    assert failed_steps(worker, 1) == [0.0] and worker._registered is False
