import os
import stat

import pytest

from mschedule.agent import identity
from mschedule.agent.runner import instance_hostname, instance_state_dir
from tests.modes import open_paths


def test_agent_id_created_once_and_kept(tmp_path):
    first = identity.load_or_create_agent_id(str(tmp_path))
    assert len(first) == 32 and int(first, 16) >= 0
    assert identity.load_or_create_agent_id(str(tmp_path)) == first
    assert (tmp_path / "agent_id").read_text().strip() == first


def test_distinct_dirs_get_distinct_ids(tmp_path):
    ids = {identity.load_or_create_agent_id(str(tmp_path / str(k))) for k in range(5)}
    assert len(ids) == 5


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        locked = "/proc/mschedule-cannot-exist"
    else:
        locked = str(tmp_path / "locked")
        os.mkdir(locked)
        os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(identity.StateDirError, match="not writable"):
        identity.resolve_state_dir(locked)


def test_state_dir_created(tmp_path):
    path = identity.resolve_state_dir(str(tmp_path / "a" / "b"))
    assert os.path.isdir(path)


@pytest.mark.parametrize("address,usable", [
    ("127.0.0.1", False), ("127.5.0.1", False), ("169.254.1.1", False), ("224.0.0.1", False),
    ("239.168.0.255", False), ("240.0.0.1", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("10.1.2.3", True), ("192.168.0.1", True), ("8.8.8.8", True), ("192.0.2.2", True),
    ("not-an-ip", False), ("::1", False),
])
def test_ip_filter(address, usable):
    assert identity.is_usable_ipv4(address) is usable


def test_local_addresses_are_all_usable():
    for address in identity.local_ipv4_addresses():
        assert identity.is_usable_ipv4(address)


def test_instance_layout():
    assert instance_state_dir("/s", 0, 1) == "/s"
    assert instance_state_dir("/s", 3, 5) == "/s/3"
    assert instance_hostname("web-{i}", 2) == "web-2"
    assert instance_hostname(None, 2) == identity.hostname()


def test_agent_id_and_instance_dir_are_private(tmp_path, permissive_umask):
    identity.load_or_create_agent_id(str(tmp_path / "0"))
    assert open_paths(tmp_path / "0") == {}


def test_open_agent_id_is_tightened(tmp_path):
    first = identity.load_or_create_agent_id(str(tmp_path / "0"))
    os.chmod(tmp_path / "0", 0o755)
    os.chmod(tmp_path / "0" / "agent_id", 0o644)
    assert identity.load_or_create_agent_id(str(tmp_path / "0")) == first
    assert open_paths(tmp_path / "0") == {}
