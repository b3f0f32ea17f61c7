"""A tier's state is private to its user: 0700 directories, 0600 files, whatever the umask."""
import logging
import os

from mschedule.utils import statedir
from mschedule.utils.keys import load_or_create_keypair
from tests.modes import mode, open_paths


def test_new_state_dir_is_private(tmp_path, permissive_umask):
    path = statedir.resolve_state_dir(str(tmp_path / "state"))
    assert mode(path) == "0o700"


def test_open_state_dir_is_tightened_with_one_warning(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    with caplog.at_level(logging.WARNING, logger="mschedule.utils.statedir"):
        statedir.resolve_state_dir(str(state))
        statedir.resolve_state_dir(str(state))  # already private: nothing more to say
    assert mode(state) == "0o700"
    assert [r.getMessage() for r in caplog.records] == [f"{state} was open to other users (mode 0755): now 0700"]


def test_new_key_pairs_are_private(tmp_path, permissive_umask):
    load_or_create_keypair(str(tmp_path / "keys"), "master")
    load_or_create_keypair(str(tmp_path / "keys"), "admin")
    assert open_paths(tmp_path / "keys") == {}
    assert sorted(os.listdir(tmp_path / "keys")) == ["admin.key", "admin.key_secret", "master.key", "master.key_secret"]


def test_open_key_files_are_tightened_when_loaded(tmp_path):
    keys = tmp_path / "keys"
    public, secret = load_or_create_keypair(str(keys), "master")
    os.chmod(keys, 0o755)
    for name in os.listdir(keys):
        os.chmod(keys / name, 0o644)
    assert load_or_create_keypair(str(keys), "master") == (public, secret)
    assert open_paths(keys) == {}


def test_stale_temporary_file_does_not_lend_its_mode(tmp_path, permissive_umask):
    target = tmp_path / "file"
    (tmp_path / "file.tmp").write_bytes(b"half")
    os.chmod(tmp_path / "file.tmp", 0o666)
    statedir.write_private(str(target), b"whole")
    assert target.read_bytes() == b"whole" and mode(target) == "0o600"
    assert not (tmp_path / "file.tmp").exists()


def test_private_file_is_created_empty_or_tightened(tmp_path, permissive_umask):
    new = tmp_path / "new.db"
    statedir.private_file(str(new))
    assert new.read_bytes() == b"" and mode(new) == "0o600"
    old = tmp_path / "old.db"
    old.write_bytes(b"data")
    os.chmod(old, 0o644)
    statedir.private_file(str(old))
    assert old.read_bytes() == b"data" and mode(old) == "0o600"


def test_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (tmp_path / "link").symlink_to(outside)
    assert statedir.tighten(str(tmp_path / "link")) is False
    assert mode(outside) == "0o644"
