import os

from mschedule.agent.spool import INTERRUPTED_CODE, Spool
from mschedule.utils.messages import ResultMessage
from tests.modes import open_paths


def test_results_kept_until_removed_in_order(tmp_path):
    spool = Spool(str(tmp_path), "a1")
    first = ResultMessage(id="t1", agent_id="a1", code=0, output=b"\xffone")
    second = ResultMessage(id="t2", agent_id="a1", code=3, output=b"two", timed_out=True)
    spool.put(first)
    spool.put(second)
    assert Spool(str(tmp_path), "a1").pending() == [first, second]  # survives a restart, oldest first
    spool.remove("t1")
    assert spool.pending() == [second]


def test_unreadable_spool_file_is_dropped(tmp_path):
    spool = Spool(str(tmp_path), "a1")
    (tmp_path / "spool" / "junk.json").write_text("{not json")
    spool.put(ResultMessage(id="t", agent_id="a1", code=0))
    assert [r.id for r in spool.pending()] == ["t"]
    assert not (tmp_path / "spool" / "junk.json").exists()


def test_interrupted_script_is_reported_after_restart(tmp_path):
    spool = Spool(str(tmp_path), "a1")
    spool.mark_running("t9")
    again = Spool(str(tmp_path), "a1")
    assert again.recover_interrupted() == "t9"
    (result,) = again.pending()
    assert result.id == "t9" and result.code == INTERRUPTED_CODE and b"fate is unknown" in result.output
    assert again.recover_interrupted() is None  # reported once


def test_hostile_task_id_stays_inside_the_spool(tmp_path):
    spool = Spool(str(tmp_path), "a1")
    spool.put(ResultMessage(id="../../etc/x", agent_id="a1", code=0))
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["etcx.json"]


def test_spool_and_marker_are_private(tmp_path, permissive_umask):
    spool = Spool(str(tmp_path), "a1")
    spool.put(ResultMessage(id="t1", agent_id="a1", code=0, output=b"password=hunter2"))
    spool.mark_running("t2")
    assert sorted(os.listdir(tmp_path / "spool")) == ["t1.json"] and os.path.exists(spool.marker)
    assert open_paths(tmp_path) == {}


def test_open_spool_left_by_an_earlier_version_is_tightened(tmp_path):
    Spool(str(tmp_path), "a1").put(ResultMessage(id="t1", agent_id="a1", code=0))
    (tmp_path / "running").write_text("t2")
    for path, bits in ((tmp_path / "spool", 0o755), (tmp_path / "spool" / "t1.json", 0o644),
                       (tmp_path / "running", 0o644)):
        os.chmod(path, bits)
    Spool(str(tmp_path), "a1")
    assert open_paths(tmp_path) == {}
