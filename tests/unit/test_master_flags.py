"""The master's flags that bound requests, with their environment fallbacks."""
import pytest

from mschedule.master import main as master_main
from mschedule.utils.defaults import DEFAULT_MAX_TARGETS


def test_max_targets_flag_and_env(monkeypatch):
    monkeypatch.delenv("MSCHEDULE_MAX_TARGETS", raising=False)
    assert master_main.parse_args([]).max_targets == DEFAULT_MAX_TARGETS
    assert master_main.parse_args(["--max-targets", "5"]).max_targets == 5
    monkeypatch.setenv("MSCHEDULE_MAX_TARGETS", "7")
    assert master_main.parse_args([]).max_targets == 7
    with pytest.raises(SystemExit):
        master_main.parse_args(["--max-targets", "0"])
