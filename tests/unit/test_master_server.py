"""The master process's serving loops and health, in-process on ipc endpoints (insecure: no keys)."""
from __future__ import annotations

import os
import tempfile

import gevent
import pytest

from mschedule.master.server import MasterServer, MasterSettings, ServingLoopDied, _local_endpoint
from mschedule.transport import make_client


def _ipc() -> str:
    return f"ipc://{tempfile.gettempdir()}/mschedule-master-{os.urandom(6).hex()}"


@pytest.fixture
def master():
    server = MasterServer(MasterSettings(bind=_ipc(), admin_bind=_ipc(), agent_timeout=10))
    server.bind()
    runner = gevent.spawn(server.run)
    admin = make_client(server.admin_endpoint, timeout=3)
    yield server, runner, admin
    admin.close()
    server.stop()
    runner.join(timeout=5)


def test_health_is_a_round_trip_through_each_endpoint(master):
    server, _, admin = master
    answer = admin.ping()
    assert answer["ok"] and answer["endpoints"]["agents"]["ok"] and answer["endpoints"]["admin"]["ok"]
    assert answer["endpoints"]["agents"]["received"] >= 1  # the probe's own ping went through it
    server._agents._multiplexer._channel_dispatcher_task.kill()  # the agents' endpoint is now deaf
    answer = admin.ping()
    assert answer["ok"] is False and answer["endpoints"]["agents"]["ok"] is False
    assert "no answer" in answer["endpoints"]["agents"]["error"]


def test_a_loop_beyond_repair_makes_the_master_exit(master):
    server, runner, _ = master
    server._agents._events._socket.close()  # every receive now fails
    runner.join(timeout=20)
    assert runner.ready() and isinstance(runner.exception, ServingLoopDied)
    assert server._agents.stats.loop_restarts["dispatcher"] > 5


@pytest.mark.parametrize("bound,local", [("tcp://0.0.0.0:9000", "tcp://127.0.0.1:9000"),
                                         ("tcp://*:9000", "tcp://127.0.0.1:9000"),
                                         ("tcp://[::]:9000", "tcp://[::1]:9000"),
                                         ("tcp://10.1.2.3:9000", "tcp://10.1.2.3:9000"),
                                         ("ipc:///run/m.sock", "ipc:///run/m.sock")])
def test_probe_reaches_wildcard_binds_on_loopback(bound, local):
    assert _local_endpoint(bound) == local


def test_what_is_answered_inline_never_waits_for_a_commit():
    """Heartbeats, registrations and progress are answered in the accept loop; a result waits for its commit,
    so it must take zerorpc's spawned path (a commit inline would hold every other agent's call)."""
    from mschedule.master.server import answer_inline
    from mschedule.utils import messages

    for kind in (messages.HEARTBEAT, messages.REGISTER, messages.PROGRESS):
        assert answer_inline("send", [{"type": kind, "payload": {}}])
    assert not answer_inline("send", [{"type": messages.RESULT, "payload": {}}])
    assert not answer_inline("get_task", ["agent", 20])
    assert not answer_inline("send", ["not a message"])
    assert answer_inline("ping", [])
