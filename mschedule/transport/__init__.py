"""The RPC transport: zerorpc 0.6.3 with the patches mschedule needs, each with a contract test
(tests/unit/test_transport.py) against a real zerorpc peer.

What is patched, and why (shared/ZERORPC-NOTES.md has the measurements):

- receiving and routing (:mod:`mschedule.transport.dispatch`, :mod:`mschedule.transport.events`): one supervised
  loop per socket parses every message into the shape zerorpc assumes, stamps the ZAP User-Id, and drops what it cannot
  route with a counter; zerorpc's own loop died on the first event it could not route;
- sending on servers (:class:`mschedule.transport.events.DirectSender`): no sender greenlet;
- serving (:class:`mschedule.transport.server.RpcServer`): quick calls inline, arguments checked against the method,
  no introspection methods, a supervised accepting loop;
- calling (:class:`mschedule.transport.client.SafeClient`): a call's channel is closed whatever ends it;
- errors (:mod:`mschedule.transport.errors`, through zerorpc's public middleware hooks): an expected error crosses with
  the field it is about and is raised on the calling side as its own class (``NotFound``, ...).

The patches are written against zerorpc's internals, so :func:`require_pinned_zerorpc` refuses any other
release (the entry points call it first and exit with one line).
"""
from mschedule.transport.client import (
           TRANSPORT_ERRORS,
           CurveClientKeys,
           MasterLink,
           SafeClient,
           close_quietly,
           make_client,
)
from mschedule.transport.errors import RemoteError, remote_error
from mschedule.transport.guard import PINNED_ZERORPC, TransportVersionError, exit_unless_pinned, require_pinned_zerorpc
from mschedule.transport.server import RpcServer, make_curve_server
from mschedule.transport.stats import TransportStats

__all__ = ["PINNED_ZERORPC", "TRANSPORT_ERRORS", "CurveClientKeys", "MasterLink", "RemoteError", "RpcServer",
           "SafeClient", "TransportStats", "TransportVersionError", "close_quietly", "exit_unless_pinned",
           "make_client", "make_curve_server", "remote_error", "require_pinned_zerorpc"]
