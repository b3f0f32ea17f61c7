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


@pytest.mark.parametrize("flag", ["--agent-timeout", "--heartbeat-interval", "--max-heartbeat-rate", "--keep-days",
                                  "--schedule-grace", "--webhook-retry-base", "--webhook-retry-for",
                                  "--keep-audit-days", "--leader-lease"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_seconds_flag_that_is_not_a_finite_number_is_refused(flag, value, capsys):
    """NaN passes every `<`/`>` check (all comparisons are false): a master with --agent-timeout nan never found an
    agent offline; inf made timers that never fire."""
    with pytest.raises(SystemExit) as stop:
        master_main.parse_args([f"{flag}={value}"])
    assert stop.value.code == 2
    assert f"{flag}: expected a finite number" in capsys.readouterr().err
