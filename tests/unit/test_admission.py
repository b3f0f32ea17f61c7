"""Admission's bound on pending keys, without processes: the count, the refusal and its log lines."""
from __future__ import annotations

import logging

import gevent
import pytest

from mschedule.master import admission
from mschedule.master import main as master_main
from mschedule.master.admission import Admission, PendingFull, set_current_key
from mschedule.master.storage import KeyRecord, KeyState, Storage


def _register(adm: Admission, agent_id: str, key: str | None = None) -> KeyState:
    set_current_key(key or f"key-of-{agent_id}")
    return adm.on_register(agent_id, f"host-{agent_id}", [])


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "new agent key(s) in" in r.getMessage()]


def test_new_keys_beyond_the_cap_are_refused_and_logged_once_per_interval(monkeypatch, caplog):
    monkeypatch.setattr(admission, "PENDING_FULL_LOG_EVERY", 0.2)
    caplog.set_level(logging.WARNING, logger="mschedule.master.admission")
    adm = Admission(Storage(), b"admin", max_pending=2)
    assert [_register(adm, a) for a in ("a0", "a1")] == [KeyState.PENDING, KeyState.PENDING]
    for i in range(50):
        with pytest.raises(PendingFull, match="--max-pending is 2"):
            _register(adm, f"x{i}")
    assert sorted(adm.storage.keys) == ["a0", "a1"]
    assert _register(adm, "a0") is KeyState.PENDING  # a known key is no new key
    lines = _refusal_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("refused 1 new agent key(s)")
    gevent.sleep(0.35)  # the rest of the flood: one line with its count, once the interval is over
    lines = _refusal_lines(caplog)
    assert len(lines) == 2 and lines[1].startswith("refused 49 new agent key(s)") and "'host-x49'" in lines[1]
    gevent.sleep(0.3)
    assert len(_refusal_lines(caplog)) == 2  # nothing more to say, nothing said


def test_a_decision_or_a_deletion_frees_a_slot_and_the_count_survives_a_restart():
    storage = Storage()
    storage.keys["old"] = KeyRecord(agent_id="old", key="key-of-old")  # pending, from before a restart
    adm = Admission(storage, b"admin", max_pending=2)
    assert _register(adm, "b") is KeyState.PENDING
    with pytest.raises(PendingFull):
        _register(adm, "c")
    adm.decide("old", KeyState.REJECTED)
    assert _register(adm, "c") is KeyState.PENDING
    adm.delete("b")
    assert _register(adm, "d") is KeyState.PENDING
    with pytest.raises(PendingFull):
        _register(adm, "e")


def test_the_cap_does_not_apply_to_auto_accept_and_zero_refuses_every_new_key():
    auto = Admission(Storage(), b"admin", auto_accept=True, max_pending=0)
    assert _register(auto, "a") is KeyState.ACCEPTED
    closed = Admission(Storage(), b"admin", max_pending=0)
    with pytest.raises(PendingFull):
        _register(closed, "a")


def test_max_pending_flag_env_fallback_and_bounds(monkeypatch, capsys):
    assert master_main.parse_args([]).max_pending == 1000
    assert master_main.parse_args(["--max-pending", "5"]).max_pending == 5
    monkeypatch.setenv("MSCHEDULE_MAX_PENDING", "7")
    assert master_main.parse_args([]).max_pending == 7
    with pytest.raises(SystemExit):
        master_main.parse_args(["--max-pending", "-1"])
    assert "--max-pending must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        master_main.parse_args(["--help"])
    assert "MSCHEDULE_MAX_PENDING" in capsys.readouterr().out.replace("\n", " ")


def test_one_key_holds_one_agent_id():
    """One unaccepted key registering a thousand agent ids would fill the pending list by itself."""
    from mschedule.utils.exceptions import Unauthorized

    adm = Admission(Storage(), b"admin-key", max_pending=1000)
    assert _register(adm, "first", key="k1") is KeyState.PENDING
    for i in range(5):
        with pytest.raises(Unauthorized, match="already belongs to agent first"):
            _register(adm, f"other{i}", key="k1")
    assert [r.agent_id for r in adm.storage.keys.values()] == ["first"]
    assert _register(adm, "first", key="k1") is KeyState.PENDING  # its own id: fine
    adm.delete("first")
    assert _register(adm, "second", key="k1") is KeyState.PENDING  # a deleted key may claim another id
