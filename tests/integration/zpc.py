"""A raw zerorpc peer for protocol tests: plain pyzmq (no gevent, no zerorpc), so a test can send any event,
well-formed or not, exactly as bytes on the wire, with any CURVE key."""
from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import zmq


def new_id() -> bytes:
    return os.urandom(16).hex().encode()


class RawPeer:
    """One DEALER connection to a zerorpc server, CURVE when ``server_key`` is given (a fresh key pair
    unless ``keypair`` names one)."""

    def __init__(self, endpoint: str, server_key: bytes | None = None,
                 keypair: tuple[bytes, bytes] | None = None) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = self.sock.rcvhwm = 100000
        if server_key is not None:
            public, secret = keypair or zmq.curve_keypair()
            self.public = public
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = server_key
        self.sock.connect(endpoint)

    def send_frames(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def send_payload(self, obj: Any) -> None:
        self.send_frames([b"", msgpack.packb(obj, use_bin_type=True)])

    def send_event(self, name: Any, args: Any = (), **header: Any) -> bytes:
        header.setdefault("message_id", new_id())
        header.setdefault("v", 3)
        self.send_payload([header, name, list(args) if isinstance(args, tuple) else args])
        return header["message_id"]

    def call(self, name: str, *args: Any, timeout: float = 1.0) -> tuple[str, Any]:
        """A well-formed request; the (name, args) of its reply, skipping heartbeats and other channels' events.

        Raises:
            TimeoutError: no reply within ``timeout``.
        """
        mid = self.send_event(name, args)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise TimeoutError(f"no reply to {name} within {timeout}s")
            frames = self.sock.recv_multipart()
            header, rname, rargs = msgpack.unpackb(frames[-1], raw=False)
            if header.get("response_to") == mid.decode() or header.get("response_to") == mid:
                if rname not in ("_zpc_hb", "_zpc_more"):
                    return rname, rargs

    def drain(self) -> int:
        n = 0
        while self.sock.poll(0):
            self.sock.recv_multipart()
            n += 1
        return n

    def close(self) -> None:
        self.sock.close(0)
