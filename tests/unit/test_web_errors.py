"""Every error the web tier answers is ``{"error": message, "field": field-or-null}``, with the status of the
master error's class (mschedule.utils.exceptions.ERRORS); against the real app, with a bridge that answers what a test
tells it to."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mschedule.transport import remote_error
from mschedule.utils.exceptions import ERRORS
from mschedule.webserver import build_app


class FakeBridge:
    """Stands for MasterBridge: every call raises ``error`` (or answers ``value``)."""

    endpoint = "tcp://fake"

    def __init__(self, error: BaseException | None = None, value=None) -> None:
        self.error, self.value = error, value

    async def call(self, method, *args, timeout=None):
        if self.error is not None:
            raise self.error
        return self.value


def request(bridge, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async def go():
        async with TestClient(TestServer(build_app(bridge, max_script_bytes=1024))) as client:
            response = await client.request(method, path, **kwargs)
            return response.status, await response.json()

    return asyncio.run(go())


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_a_master_error_keeps_its_status_message_and_field(name):
    error = remote_error(name, "agent_id: no key for agent nope", None, "agent_id")
    status, body = request(FakeBridge(error), "POST", "/keys/nope/accept")
    assert status == ERRORS[name].http_status
    assert body == {"error": "agent_id: no key for agent nope", "field": "agent_id"}


def test_unauthorized_is_403():
    status, body = request(FakeBridge(remote_error("Unauthorized", "not you")), "GET", "/keys")
    assert (status, body) == (403, {"error": "not you", "field": None})


def test_an_unexpected_master_error_is_502_without_a_field():
    status, body = request(FakeBridge(remote_error("KeyError", "'x'", "Traceback ...")), "GET", "/keys")
    assert status == 502 and body == {"error": "master error: KeyError: 'x'", "field": None}


@pytest.mark.parametrize("method,path,kwargs,status,field", [
    ("GET", "/no/such/route", {}, 404, None),
    ("DELETE", "/tasks", {}, 405, None),
    ("POST", "/task", {"data": b"x" * 70000}, 413, "body"),
    ("POST", "/task", {"data": b"{not json"}, 400, "body"),
    ("POST", "/task", {"data": b'{"script": "\\ud800"}'}, 400, "script"),
    ("POST", "/task", {"data": b'{"script": "true", "targets": [99999999999999999999999]}'}, 400, "targets[0]"),
    ("GET", "/job/j/versions/one", {}, 400, "version"),
    ("GET", "/task/targets?label=nocolon", {}, 400, "label"),
    ("POST", "/job/", {"data": b"{}"}, 400, "name"),
])
def test_the_web_tiers_own_errors_name_their_field(method, path, kwargs, status, field):
    got, body = request(FakeBridge(value={}), method, path, **kwargs)
    assert got == status, body
    assert set(body) == {"error", "field"} and body["field"] == field, body
