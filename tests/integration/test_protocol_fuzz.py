"""Well-formed and malformed zerorpc events on both master endpoints, from every kind of key.

The fault tests before this one sent garbage bytes; the master was silenced by one well-formed heartbeat
for a channel that did not exist. Here every class of event zerorpc's loops read is sent, from an
unaccepted key, an accepted agent key and the admin key, and after each class both endpoints must answer
a real call within 1 s while the real agents stay online.
"""
from __future__ import annotations

import time

import msgpack
import pytest

from tests.integration.figures import record
from tests.integration.harness import Stack, wait_until
from tests.integration.zpc import RawPeer, new_id

ZPC_NAMES = ["_zpc_hb", "_zpc_more", "STREAM", "STREAM_DONE", "OK", "ERR", "_zpc_inspect"]
OTHER_NAMES = ["_zerorpc_inspect", "_zerorpc_list", "_zerorpc_help", "no_such_method", "x" * 300, "ping", "send"]
AGENTS = 2


class Fleet:
    """A real stack plus raw peers: ``unaccepted`` and ``accepted`` on the agents' endpoint, ``admin`` on both."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.real_agents = stack.up(AGENTS)
        key = stack.keys.public
        agents_ep, admin_ep = stack.master_endpoint, stack.admin_endpoint
        admin_pair = (stack.keys.admin_public, stack.keys.admin_secret)
        self.unaccepted = RawPeer(agents_ep, key)
        self.accepted = RawPeer(agents_ep, key)
        self.accepted_id = "fuzz-" + new_id().decode()[:12]
        hello = {"type": "register", "payload": {"id": self.accepted_id, "hostname": "fuzz", "ip": []}}
        name, reply = self.accepted.call("send", hello, timeout=5)
        assert name == "OK" and reply[0]["ok"], reply  # the stack's master runs --auto-accept
        self.admin_on_agents = RawPeer(agents_ep, key, admin_pair)
        self.admin = RawPeer(admin_ep, key, admin_pair)
        self.agents_probe = RawPeer(agents_ep, key)
        self.admin_probe = RawPeer(admin_ep, key, admin_pair)
        self.running_task = stack.api.submit("sleep 600", [self.real_agents[0]])
        wait_until(lambda: stack.api.get(f"/task/{self.running_task}")[1]["counts"]["RUNNING"] == 1, 10,
                   what="a running task")
        self.peers = [self.unaccepted, self.accepted, self.admin_on_agents, self.admin, self.agents_probe,
                      self.admin_probe]

    def senders(self) -> dict[str, RawPeer]:
        return {"unaccepted key": self.unaccepted, "accepted agent key": self.accepted,
                "admin key (agents endpoint)": self.admin_on_agents, "admin key (admin endpoint)": self.admin}

    def assert_serving(self, what: str) -> int:
        """Both endpoints answer a real call within 1 s, the web tier too; returns the real agents lost."""
        for peer in self.peers:
            peer.drain()
        for probe in (self.agents_probe, self.admin_probe):
            start = time.monotonic()
            try:
                name, args = probe.call("ping", timeout=1.0)
            except TimeoutError:
                raise AssertionError(f"after {what}: the {'admin' if probe is self.admin_probe else 'agents'} "
                                     "endpoint does not answer\n" + self.stack.logs()) from None
            assert name == "OK" and args[0]["ok"], (what, name, args)
            assert time.monotonic() - start < 1.0
        status, health = self.stack.api.get("/health")
        assert status == 200, (what, health)
        assert self.stack.master_proc_alive(), what
        return sum(1 for a in self.real_agents if not self.stack.api.agents()[a]["online"])

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("fuzz"))
    fleet = None
    try:
        fleet = Fleet(stack)
        yield fleet
    finally:
        if fleet is not None:
            fleet.close()
        stack.close()


def _unknown_channels(peer: RawPeer, fleet: Fleet) -> int:
    """The event that silenced the master: a heartbeat (and every other name) for a channel that never was."""
    n = 0
    for name in ZPC_NAMES + OTHER_NAMES:
        for args in ([0], [], ["x"], [None, None, None]):
            peer.send_event(name, args, response_to=new_id())
            n += 1
    return n


def _closed_channels(peer: RawPeer, fleet: Fleet) -> int:
    """Late heartbeats and replies for a call that has ended (what a long wait leaves behind)."""
    n = 0
    for _ in range(5):
        mid = peer.send_event("ping", [])
        time.sleep(0.05)
        for name in ZPC_NAMES:
            peer.send_event(name, [0], response_to=mid)
            n += 1
    return n + 5


def _other_peers_channel(peer: RawPeer, fleet: Fleet) -> int:
    """Events naming a channel of another peer's call in progress (a long poll), which must end normally."""
    waiter = fleet.accepted if peer is not fleet.accepted else fleet.agents_probe
    mid = waiter.send_event("get_task", [fleet.accepted_id, 1.0, None])
    n = 0
    for name in ZPC_NAMES + ["get_task"]:
        for _ in range(20):
            peer.send_event(name, [0], response_to=mid)
            n += 1
    # the poll ends by itself (OK None, or an error for a waiter that is not that agent), never hangs
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if waiter.sock.poll(100):
            header, name, _ = msgpack.unpackb(waiter.sock.recv_multipart()[-1], raw=False)
            if header.get("response_to") in (mid, mid.decode()) and name in ("OK", "ERR"):
                return n
    raise AssertionError("a long poll did not end after another peer wrote on its channel")


def _header_types(peer: RawPeer, fleet: Fleet) -> int:
    headers = [[], 5, None, "header", b"bin", {}, {"v": 3}, {"message_id": 5}, {"message_id": [1]},
               {"message_id": {"a": 1}}, {"message_id": None}, {"message_id": ""}, {"message_id": "x" * 10000},
               {"message_id": new_id(), "v": "3"}, {"message_id": new_id(), "v": -1},
               {"message_id": new_id(), "v": 2 ** 40}, {"message_id": new_id(), "v": 1.5},
               {"message_id": new_id(), "v": True}, {"message_id": new_id(), "v": None},
               {"message_id": new_id(), "v": 3, "response_to": [1]},
               {"message_id": new_id(), "v": 3, "response_to": {"x": 1}},
               {"message_id": new_id(), "v": 3, "response_to": 7},
               {"message_id": new_id(), "v": 3, "response_to": "y" * 10000},
               {"message_id": new_id(), "v": 3, "mschedule.user": "forged"},
               {"message_id": new_id(), "v": 1}, {"message_id": new_id()}]
    for header in headers:
        for name in ("ping", "send", "_zpc_hb"):
            peer.send_payload([header, name, []])
    return len(headers) * 3


ARGS_METHODS = ("ping", "send", "get_task", "watch_cancel", "get_result", "add_task", "keys_accept", "get_agents",
                "job_save", "job_run", "retry_task", "schedule_create", "schedule_update", "schedule_get",
                "schedules_list", "schedule_delete")


def _args_shapes(peer: RawPeer, fleet: Fleet) -> int:
    shapes = [None, {}, {"a": 1}, "args", 5, [1, 2, 3, 4, 5], list(range(10000)), ["x" * 1_000_000],
              [{"type": "heartbeat"}], [{"type": "register", "payload": None}], [[[[[]]]]], [b"\xff" * 100]]
    for args in shapes:
        for name in ARGS_METHODS:
            peer.send_payload([{"message_id": new_id(), "v": 3}, name, args])
    return len(shapes) * len(ARGS_METHODS)


def _payload_shapes(peer: RawPeer, fleet: Fleet) -> int:
    good = msgpack.packb([{"message_id": new_id(), "v": 3}, "ping", []])
    payloads = [b"", b"\xc1", b"not msgpack at all", good[:-3], good + b"trailing", msgpack.packb(5),
                msgpack.packb("str"), msgpack.packb({"a": 1}), msgpack.packb([1, 2]), msgpack.packb([1, 2, 3, 4]),
                b"\x93\x81\xa3\xff\xfe\xfd\x01\xa4ping\x90",  # a header key that is not UTF-8
                b"\x93\x81\x01\x01\xa4ping\x90",  # a header with an integer key
                b"\x91" * 5000 + b"\xc0",  # nesting deeper than msgpack allows
                b"\x93\x80\xa4ping\xdd\xff\xff\xff\xff",  # an array announcing 4 billion items
                msgpack.packb([{"message_id": new_id(), "v": 3}, "ping", []]) * 50]
    for payload in payloads:
        peer.send_frames([b"", payload])
    return len(payloads)


def _frame_shapes(peer: RawPeer, fleet: Fleet) -> int:
    good = msgpack.packb([{"message_id": new_id(), "v": 3}, "ping", []])
    shapes = [[good], [b"x", good], [b"", b"", good], [b"a", b"b", b"", good], [b""], [b"", b""],
              [b""] * 50, [good, good], [b"", good, b""]]
    for frames in shapes:
        peer.send_frames(frames)
    return len(shapes)


def _duplicate_ids(peer: RawPeer, fleet: Fleet) -> int:
    n = 0
    for name, args in (("ping", []), ("get_result", [{"task_id": fleet.running_task, "wait": 0.5}]),
                       ("get_task", [fleet.accepted_id, 0.5, None])):
        mid = new_id()
        for _ in range(5):
            peer.send_payload([{"message_id": mid, "v": 3}, name, args])
            n += 1
    time.sleep(1)
    return n


def _event_names(peer: RawPeer, fleet: Fleet) -> int:
    names = ZPC_NAMES + OTHER_NAMES + ["", 5, None, ["ping"], {"n": 1}, b"ping"]
    for name in names:
        peer.send_payload([{"message_id": new_id(), "v": 3}, name, [0]])
    return len(names)


def _burst(peer: RawPeer, fleet: Fleet) -> int:
    n = 0
    for _ in range(1000):
        peer.send_event("_zpc_hb", [0], response_to=new_id())
        peer.send_event("ping", [])
        peer.send_frames([b"", b"\xc1garbage"])
        peer.send_payload([{"message_id": new_id(), "v": "x"}, "send", []])
        peer.send_payload([{"message_id": new_id(), "v": 3}, "send", [{"type": "heartbeat", "payload": {}}]])
        n += 5
    return n


CLASSES = {
    "unknown channel (every event name)": _unknown_channels,
    "closed channel": _closed_channels,
    "another peer's channel": _other_peers_channel,
    "wrong header types": _header_types,
    "missing, huge or ill-fitting args": _args_shapes,
    "msgpack of every wrong shape": _payload_shapes,
    "wrong frame counts": _frame_shapes,
    "duplicate message_id": _duplicate_ids,
    "unknown and reserved event names": _event_names,
    "burst of 5,000 mixed events": _burst,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CLASSES))
def test_protocol_fuzz(fleet, kind):
    tried, lost = 0, 0
    for sender, peer in fleet.senders().items():
        tried += CLASSES[kind](peer, fleet)
        lost = max(lost, fleet.assert_serving(f"{kind} from {sender}"))
    assert lost == 0, f"{lost} real agents went offline after {kind}"
    record(f"protocol fuzz: {kind}", senders=len(fleet.senders()), inputs_tried=tried, master_died=0,
           agents_lost=lost)
