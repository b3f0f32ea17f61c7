"""Contract tests of every patch mschedule/transport/ makes to zerorpc's internals, against real zerorpc peers on a
random ipc endpoint, in zerorpc's own test style (a server run in a greenlet of the test)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tomllib

import gevent
import msgpack
import pytest
import zerorpc
import zmq
from prometheus_client import CollectorRegistry
from zerorpc import gevent_zmq
from zerorpc.channel import Channel, ChannelMultiplexer
from zerorpc.events import Event, Events

from mschedule.transport import (
    PINNED_ZERORPC,
    MasterLink,
    RpcServer,
    SafeClient,
    TransportVersionError,
    require_pinned_zerorpc,
)
from mschedule.transport import supervise as supervise_module
from mschedule.transport.errors import FIELD_HEADER, REMOTE_ERRORS, RemoteError
from mschedule.transport.events import USER_HEADER, parse
from mschedule.transport.metrics import RPC_CALLS, RPC_ERRORS, UNKNOWN_METHOD
from mschedule.transport.stats import TransportStats
from mschedule.transport.supervise import LoopGaveUp, supervise
from mschedule.utils.exceptions import ERRORS, MScheduleError, NotFound, Unauthorized, ValidationError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_ipc_endpoint() -> str:
    return f"ipc://{tempfile.gettempdir()}/mschedule-test-{os.urandom(6).hex()}"


class Methods:
    def __init__(self) -> None:
        self.slow_calls = 0

    def add(self, a, b):
        return a + b

    def slow(self, seconds):
        self.slow_calls += 1
        gevent.sleep(seconds)
        return "done"

    def fail(self):
        raise ValueError("boom")

    def refuse(self, where):
        raise ValidationError(f"x: bad ({where})", field="x")

    def missing(self, where):
        raise NotFound(f"thing {where} not found", field="thing")

    def private(self, where):
        raise PrivateRefusal("not you")


class PrivateRefusal(Unauthorized):
    """A subclass only one tier knows: it crosses as the class of the shared table it belongs to."""




@pytest.fixture
def served():
    """A running RpcServer and a SafeClient connected to it."""
    endpoint = random_ipc_endpoint()
    methods = Methods()
    server = RpcServer(methods, "test", inline=lambda name, args: name == "add" or args == ["inline"], heartbeat=1)
    server.bind(endpoint)
    server.start()
    client = SafeClient(timeout=3, heartbeat=1)
    client.connect(endpoint)
    yield server, client, endpoint, methods
    client.close()
    server.stop()
    server.close()


def raw_dealer(endpoint: str):
    """A gevent zmq DEALER of the same context, for sending events zerorpc's own client never would."""
    sock = zerorpc.Context.get_instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


def test_zerorpc_internals_we_patch_are_there():
    """If any of these moves, the patches no longer apply: the version guard exists for this."""
    assert PINNED_ZERORPC == "0.6.3"
    assert callable(ChannelMultiplexer._channel_dispatcher)
    assert "_active_channels" in ChannelMultiplexer.__init__.__code__.co_names
    assert "_queue" in Channel.__init__.__code__.co_names
    assert callable(gevent_zmq.Socket._on_state_changed)
    assert "_recv" in Events.__init__.__code__.co_names and "_send" in Events.__init__.__code__.co_names
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert f"zerorpc=={PINNED_ZERORPC}" in dependencies


def test_version_guard_refuses_other_zerorpc(monkeypatch):
    monkeypatch.setenv("MSCHEDULE_FAKE_ZERORPC_VERSION", "0.6.4")
    with pytest.raises(TransportVersionError, match="0.6.4"):
        require_pinned_zerorpc()
    with pytest.raises(TransportVersionError):
        SafeClient()


@pytest.mark.parametrize("entry", ["appserver.py", "app.py", "appwebserver.py"])
def test_entry_points_refuse_other_zerorpc_in_one_line(entry):
    env = {**os.environ, "MSCHEDULE_FAKE_ZERORPC_VERSION": "9.9"}
    proc = subprocess.run([sys.executable, entry, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "zerorpc 9.9" in proc.stderr and "0.6.3" in proc.stderr


def test_calls_inline_and_spawned(served):
    server, client, _, _ = served
    assert client.add(2, 3) == 5  # answered inline
    assert client.slow(0) == "done"  # through zerorpc's per-call greenlets
    with pytest.raises(zerorpc.RemoteError) as err:
        client.fail()
    assert err.value.name == "ValueError"
    assert client.open_channels == 0


def test_many_concurrent_inline_replies_all_arrive(served):
    """DirectSender sends from the answering greenlet and then checks the socket's state (gevent_zmq's private
    _on_state_changed), or a receive waiting for a readiness edge it consumed would hang."""
    _, client, _, _ = served
    calls = [gevent.spawn(client.add, i, 1) for i in range(300)]
    gevent.joinall(calls, timeout=10)
    assert [c.value for c in calls] == [i + 1 for i in range(300)]


def test_arguments_that_do_not_fit_are_refused_before_running(served):
    server, client, _, methods = served
    with pytest.raises(zerorpc.RemoteError) as err:
        client.slow(1, 2, 3)
    assert err.value.name == "ValidationError" and "do not fit" in err.value.msg
    assert methods.slow_calls == 0
    with pytest.raises(zerorpc.RemoteError) as err:
        client("_zerorpc_inspect")
    assert err.value.name == "ValidationError" and "no method" in err.value.msg


@pytest.mark.parametrize("where", ["spawned", "inline"])
def test_expected_errors_reach_the_client_typed_with_name_message_and_field(served, where):
    """Both answering paths: zerorpc's spawned call (through its server_inspect_exception hook) and ours."""
    _, client, _, _ = served
    with pytest.raises(ValidationError) as err:
        client.refuse(where)
    assert isinstance(err.value, zerorpc.RemoteError) and isinstance(err.value, RemoteError)
    assert (err.value.name, err.value.msg, err.value.field) == ("ValidationError", f"x: bad ({where})", "x")
    assert err.value.traceback is None and err.value.message == err.value.msg
    with pytest.raises(NotFound) as err:
        client.missing(where)
    assert (err.value.name, err.value.field, err.value.http_status) == ("NotFound", "thing", 404)
    with pytest.raises(Unauthorized) as err:
        client.private(where)
    assert (err.value.name, err.value.msg, err.value.field) == ("Unauthorized", "not you", None)
    assert client.open_channels == 0


def test_refusals_reach_the_client_typed_with_their_field(served):
    _, client, _, _ = served
    with pytest.raises(ValidationError) as err:
        client.slow(1, 2, 3)
    assert (err.value.name, err.value.field) == ("ValidationError", "method") and "do not fit" in err.value.msg
    with pytest.raises(ValidationError) as err:
        client("no_such_method")
    assert (err.value.name, err.value.field) == ("ValidationError", "method") and "no method" in err.value.msg


def test_unexpected_errors_stay_plain_remote_errors(served):
    _, client, _, _ = served
    with pytest.raises(RemoteError) as err:
        client.fail()
    assert not isinstance(err.value, MScheduleError)
    assert err.value.name == "ValueError" and err.value.field is None and "boom" in err.value.traceback


def rpc_counts() -> dict[tuple, float]:
    """The RPC counters of the fixture's endpoint ("test"), as {(kind, method[, error]): value}."""
    registry = CollectorRegistry()
    registry.register(RPC_CALLS)
    registry.register(RPC_ERRORS)
    counts = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("endpoint") == "test":
                counts[(family.name, *labels.values())] = sample.value
    return counts


def test_every_call_and_every_error_is_counted_once_on_each_path(served):
    """Inline, spawned and refused calls each count once by method; each error answer once by its name. A call to
    a method the server has not is counted under one label, not under the name it gave (cardinality)."""
    _, client, _, _ = served
    before = rpc_counts()
    stranger = "no_such_method_" + os.urandom(4).hex()
    assert client.add(1, 2) == 3  # inline
    assert client.slow(0) == "done"  # spawned
    for call, error in ((lambda: client.refuse("inline"), ValidationError),
                        (lambda: client.missing("spawned"), NotFound), (client.fail, zerorpc.RemoteError),
                        (lambda: client.slow(1, 2, 3), ValidationError), (lambda: client(stranger), ValidationError)):
        with pytest.raises(error):
            call()
    after = rpc_counts()
    moved = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert moved == {
        ("mschedule_master_rpc_calls", "add"): 1, ("mschedule_master_rpc_calls", "slow"): 2,
        ("mschedule_master_rpc_calls", "refuse"): 1, ("mschedule_master_rpc_calls", "missing"): 1,
        ("mschedule_master_rpc_calls", "fail"): 1, ("mschedule_master_rpc_calls", UNKNOWN_METHOD): 1,
        ("mschedule_master_rpc_errors", "refuse", "ValidationError"): 1,
        ("mschedule_master_rpc_errors", "missing", "NotFound"): 1,
        ("mschedule_master_rpc_errors", "fail", "ValueError"): 1,
        ("mschedule_master_rpc_errors", "slow", "ValidationError"): 1,
        ("mschedule_master_rpc_errors", UNKNOWN_METHOD, "ValidationError"): 1,
    }
    assert not any(stranger in key for key in after)


def test_every_shared_error_name_has_its_remote_class():
    assert set(REMOTE_ERRORS) == set(ERRORS)
    for name, cls in ERRORS.items():
        assert issubclass(REMOTE_ERRORS[name], cls) and issubclass(REMOTE_ERRORS[name], zerorpc.RemoteError)


@pytest.mark.parametrize("method,where", [("refuse", "spawned"), ("refuse", "inline"), ("no_such_method", None)])
def test_the_field_travels_in_the_err_header_beside_zerorpcs_own_args(served, method, where):
    """The wire (README, Messages): zerorpc's ERR (name, message, None), the field in the header, for any peer."""
    _, _, endpoint, _ = served
    sock = raw_dealer(endpoint)
    args = [where] if where else []
    sock.send_multipart([b"", msgpack.packb([{"message_id": "e1", "v": 3}, method, args])])
    with gevent.Timeout(3):
        while True:
            header, name, reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
            if name == "ERR":
                break
    assert reply[0] == "ValidationError" and reply[2] is None
    assert header[FIELD_HEADER] == ("x" if where else "method")
    sock.close()


def test_client_closes_its_channel_whatever_ends_the_call(served):
    server, client, _, _ = served
    with pytest.raises(TypeError):
        client.add({1, 2}, 3)  # msgpack cannot pack a set
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.2):
            client.slow(2)
    with pytest.raises(zerorpc.TimeoutExpired):
        client("slow", 2, timeout=0.2)
    assert client.open_channels == 0
    gevent.sleep(2.5)  # leaked heartbeats of zerorpc 0.6.3 would now kill this greenlet with LostRemote
    assert client.add(1, 1) == 2


def test_events_for_unknown_channels_are_dropped_and_counted(served):
    """The event that silenced the master: zerorpc's dispatcher died formatting it."""
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    for name in ("_zpc_hb", "OK", "ERR", "STREAM", "_zpc_more"):
        payload = msgpack.packb([{"message_id": "m" + os.urandom(4).hex(), "v": 3, "response_to": "nobody"},
                                 name, [1]])
        sock.send_multipart([b"", payload])
    gevent.sleep(0.2)
    assert server.stats.dropped["unknown_channel"] == 5
    assert client.add(1, 2) == 3
    assert server.stats.loop_restarts == {}
    sock.close()


def test_late_heartbeat_of_a_finished_call_is_dropped_on_both_sides(served):
    server, client, _, _ = served
    for _ in range(5):
        assert client.slow(1.2) == "done"  # heartbeats (1 s) cross the reply
    gevent.sleep(1.5)
    assert client.add(1, 1) == 2
    assert server.stats.loop_restarts == {} and client.stats.loop_restarts == {}


def test_malformed_events_are_dropped_and_counted(served):
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    bad = [b"\xc1", msgpack.packb([1, 2]), msgpack.packb([[], "add", []]),
           msgpack.packb([{"message_id": [1]}, "add", []]),
           msgpack.packb([{"message_id": "a", "v": "3"}, "add", [1, 2]]), msgpack.packb([{"message_id": "b"}, 5, []]),
           msgpack.packb([{"message_id": "c", "response_to": {}}, "_zpc_hb", []])]
    for payload in bad:
        sock.send_multipart([b"", payload])
    sock.send_multipart([b"", b"", b"", b"x"])
    gevent.sleep(0.2)
    assert server.stats.dropped["malformed"] == len(bad) + 1
    assert client.add(1, 2) == 3
    sock.close()


def test_parsed_event_is_what_zerorpc_expects():
    """Identities stay zmq.Frame (zerorpc's Event.__str__ reads .bytes), the user header cannot be forged."""
    payload = msgpack.packb([{"message_id": "abc", "v": 3, USER_HEADER: "forged"}, "ping", []])
    event = parse([zmq.Frame(b"peer"), zmq.Frame(b""), zmq.Frame(payload)], router=True)
    assert isinstance(event, Event) and isinstance(event.identity[0], zmq.Frame)
    assert "ping" in event.__str__(ignore_args=True)
    assert event.header[USER_HEADER] is None


def test_duplicate_message_id_closes_only_its_own_channel(served):
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    payload = msgpack.packb([{"message_id": "dup", "v": 3}, "slow", [0.3]])
    for _ in range(3):
        sock.send_multipart([b"", payload])
    gevent.sleep(0.8)
    assert server.stats.dropped["duplicate_message_id"] >= 1
    assert client.add(1, 2) == 3
    assert not server._multiplexer.active_channels
    sock.close()


def test_a_channel_flooded_by_its_peer_does_not_block_the_dispatcher(served):
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    sock.send_multipart([b"", msgpack.packb([{"message_id": "flood", "v": 3}, "slow", [1]])])
    gevent.sleep(0.1)
    for i in range(500):
        sock.send_multipart([b"", msgpack.packb([{"message_id": f"f{i}", "v": 3, "response_to": "flood"}, "x", []])])
    gevent.sleep(0.3)
    assert client.add(2, 2) == 4
    sock.close()


def test_dispatcher_that_dies_is_restarted_and_counted(served):
    server, client, _, _ = served
    mux = server._multiplexer
    real = mux._socket

    class BrokenOnce:
        """A receive that fails once, as a socket error would: outside the per-event guard."""

        failed = False

        def recv_multipart(self, **kwargs):
            if not BrokenOnce.failed:
                BrokenOnce.failed = True
                raise zmq.ZMQError(zmq.EFAULT)
            return real.recv_multipart(**kwargs)

    mux._socket = BrokenOnce()
    try:
        assert client.add(1, 1) == 2
        assert server.stats.loop_restarts["dispatcher"] == 1
    finally:
        mux._socket = real


def test_supervise_restarts_then_gives_up(monkeypatch):
    monkeypatch.setattr(supervise_module, "RESTART_WINDOW", 60.0)
    stats = TransportStats("t")
    runs = []

    def broken():
        runs.append(1)
        raise RuntimeError("always")

    given_up = []
    gevent.spawn(supervise, "loop", broken, stats, given_up.append).join(timeout=10)
    assert len(runs) == supervise_module.MAX_RESTARTS + 1
    assert stats.loop_restarts["loop"] == len(runs)
    assert given_up == ["t loop"]
    with pytest.raises(LoopGaveUp):
        supervise("loop", broken, TransportStats("u"))


def test_master_link_keeps_its_socket_through_short_failures():
    """An agent's link (relink_after > 0) keeps its connection through failures shorter than that, so a slow
    master is not answered with a fresh CURVE handshake per timeout; the web tier's (0) relinks at once."""
    endpoint = random_ipc_endpoint()  # nobody listens: every call times out
    patient, hasty = MasterLink(endpoint, timeout=0.1, relink_after=30), MasterLink(endpoint, timeout=0.1)
    for link in (patient, hasty):
        with pytest.raises(zerorpc.TimeoutExpired):
            link.call("ping")
        first = link._client
        with pytest.raises(zerorpc.TimeoutExpired):
            link.call("ping")
        if link is patient:
            assert link._client is first and first is not None
        else:
            assert first is None  # replaced after the first failure, made again by the next call
        link.close()


def _recv_reply(sock, mid: str, timeout: float = 3.0):
    """The (name, args) answering request ``mid`` on a raw socket, skipping heartbeats; None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with gevent.Timeout(max(0.01, deadline - time.monotonic())):
                frames = sock.recv_multipart()
        except gevent.Timeout:
            return None
        header, name, args = msgpack.unpackb(frames[-1], raw=False)
        if header.get("response_to") == mid and name not in ("_zpc_hb", "_zpc_more"):
            return name, args
    return None


def _recv_replies(sock, mids: list[str], timeout: float = 3.0) -> dict:
    """The (name, args) answering each request of ``mids``, read in one pass."""
    answers: dict = {}
    deadline = time.monotonic() + timeout
    while len(answers) < len(mids) and time.monotonic() < deadline:
        try:
            with gevent.Timeout(max(0.01, deadline - time.monotonic())):
                frames = sock.recv_multipart()
        except gevent.Timeout:
            break
        header, name, args = msgpack.unpackb(frames[-1], raw=False)
        if header.get("response_to") in mids and name not in ("_zpc_hb", "_zpc_more"):
            answers[header["response_to"]] = (name, args)
    return answers


def test_a_credit_that_would_pin_the_reply_is_dropped(served):
    """A `_zpc_more` granting zero or negative credit on one's own call made zerorpc's reply wait forever
    (the call and its memory held for good): found by trying to break the master."""
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    for credit in (-1, 0, "9" * 50, 10 ** 9, None):
        mid = "pin" + os.urandom(4).hex()
        sock.send_multipart([b"", msgpack.packb([{"message_id": mid, "v": 3}, "slow", [0.2]])])
        gevent.sleep(0.05)  # the call's channel is open
        sock.send_multipart([b"", msgpack.packb([{"message_id": "c" + mid, "v": 3, "response_to": mid},
                                                 "_zpc_more", [credit]])])
        assert _recv_reply(sock, mid) == ("OK", ["done"]), credit
    assert server.stats.dropped["malformed"] == 5
    sock.close()


def test_only_protocol_version_3_is_served(served):
    """Version 1 and 2 requests make zerorpc's server heartbeat passive: a call that cannot answer never ends."""
    server, client, endpoint, _ = served
    sock = raw_dealer(endpoint)
    for header in ({"message_id": "v1", "v": 1}, {"message_id": "v2", "v": 2}, {"message_id": "none"}):
        sock.send_multipart([b"", msgpack.packb([header, "add", [1, 2]])])
    gevent.sleep(0.3)
    assert server.stats.dropped["malformed"] == 3 and not sock.poll(0)
    assert client.add(1, 2) == 3
    sock.close()


def test_a_caller_may_hold_only_so_many_calls():
    endpoint = random_ipc_endpoint()
    server = RpcServer(Methods(), "capped", max_calls_per_peer=3, heartbeat=1)
    server.bind(endpoint)
    server.start()
    sock = raw_dealer(endpoint)
    other = SafeClient(timeout=3, heartbeat=1)
    other.connect(endpoint)
    try:
        mids = [f"cap{i}" for i in range(5)]
        for mid in mids:
            sock.send_multipart([b"", msgpack.packb([{"message_id": mid, "v": 3}, "slow", [0.5]])])
        answers = _recv_replies(sock, mids)
        names = sorted(a[0] for a in answers.values())
        assert names == ["ERR", "ERR", "OK", "OK", "OK"], answers
        assert server.stats.dropped["too_many_calls"] == 2
        assert other.slow(0) == "done"  # another caller is not affected
        assert not server._in_progress  # every count released when its call ended
    finally:
        other.close()
        sock.close()
        server.stop()
        server.close()


def test_refused_calls_do_not_flood_the_log(served, caplog):
    """Any key can send refused calls in a loop; each kind of refusal is one line per 10 s."""
    server, client, _, _ = served
    with caplog.at_level("INFO", logger="mschedule.transport.server"):
        for _ in range(200):
            with pytest.raises(zerorpc.RemoteError):
                client("no_such_method")
            with pytest.raises(zerorpc.RemoteError):
                client.refuse("here")
    refused = [r for r in caplog.records if "rpc refused" in r.getMessage()]
    assert len(refused) == 2, [r.getMessage() for r in refused]


def test_a_shut_gate_takes_nothing_and_sends_nothing():
    """A master that may no longer lead (mschedule/master/leadership.py) shuts its endpoints' gate: a request is
    dropped unread, and a reply made before the gate shut is not sent."""
    endpoint = random_ipc_endpoint()
    methods = Methods()
    gate = {"open": True}
    server = RpcServer(methods, "test", inline=lambda name, args: name == "add", heartbeat=1,
                       gate=lambda: gate["open"])
    server.bind(endpoint)
    server.start()
    client = SafeClient(timeout=1.5, heartbeat=1)
    client.connect(endpoint)
    try:
        assert client("add", 1, 2) == 3
        slow = gevent.spawn(client, "slow", 0.5)
        gevent.sleep(0.2)  # running now
        gate["open"] = False
        with pytest.raises(zerorpc.TimeoutExpired):
            slow.get()  # its reply was made after the gate shut: not sent
        before = methods.slow_calls
        for method, args in (("add", (1, 2)), ("slow", (0,))):
            with pytest.raises(zerorpc.TimeoutExpired):
                client(method, *args)
        assert methods.slow_calls == before  # nothing was run either
        assert server.stats.dropped["not_leading"] >= 3
    finally:
        client.close()
        server.stop()
        server.close()


def _tcp_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _serve(endpoint: str, methods) -> RpcServer:
    server = RpcServer(methods, "test", heartbeat=1)
    server.bind(endpoint)
    server.start()
    return server


def test_a_client_of_several_masters_reaches_the_one_that_listens():
    from mschedule.transport.client import make_client

    standby, leader = _tcp_endpoint(), _tcp_endpoint()  # the standby does not listen
    server = _serve(leader, Methods())
    client = make_client(f"{standby},{leader}", timeout=2, heartbeat=1)
    try:  # the first call at once, while the handshake is under way
        assert [client("add", i, 1) for i in range(20)] == [i + 1 for i in range(20)]  # none sent to the standby
    finally:
        client.close()
        server.stop()
        server.close()


def test_a_client_of_several_masters_follows_a_new_leader_and_replays_nothing():
    from mschedule.transport.client import make_client

    first_ep, second_ep = _tcp_endpoint(), _tcp_endpoint()
    first = _serve(first_ep, Methods())
    client = make_client(f"{first_ep},{second_ep}", timeout=1, heartbeat=1)
    try:
        gevent.sleep(0.3)
        assert client("add", 1, 1) == 2
        first.stop()
        first.close()  # the leader is gone; nobody listens
        gevent.sleep(1)  # and the client has seen its connection close
        begun = time.monotonic()
        with pytest.raises(zerorpc.TimeoutExpired):
            client("slow", 0)  # made while no master listened: must never reach the next one
        # it fails once it could not be sent (1 s), not a reply timeout after that: a caller tries again sooner
        assert time.monotonic() - begun < 1.6
        methods = Methods()
        second = _serve(second_ep, methods)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client("add", 2, 2) == 4
                break
            except zerorpc.TimeoutExpired:
                assert time.monotonic() < deadline, "the client never reached the new leader"
        gevent.sleep(1)
        assert methods.slow_calls == 0, "a request that failed before the new leader listened was replayed on it"
        second.stop()
        second.close()
    finally:
        client.close()
