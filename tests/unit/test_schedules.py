"""Cron ticks in a time zone across DST (cronsim, as Debian's cron), and the nicknames."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mschedule.master.schedules import ScheduleClock, cron_expression, ticks
from mschedule.utils.exceptions import ValidationError

BERLIN = ZoneInfo("Europe/Berlin")


def _next(cron, after, n=3):
    it = ticks(cron, "Europe/Berlin", after.timestamp())
    return [next(it).isoformat() for _ in range(n)]


def test_a_time_skipped_by_spring_forward_runs_once_just_after():
    assert _next("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN)) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_a_time_repeated_by_fall_back_runs_once_and_never_again_from_its_own_tick():
    ticks_ = _next("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN))
    assert ticks_[:2] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # the loop goes on from the tick it fired (its last_tick): the repeated hour does not fire it again
    fired = datetime.fromisoformat(ticks_[0])
    assert _next("30 2 * * *", fired, 1) == ["2026-10-26T02:30:00+01:00"]


def test_ticks_from_the_last_tick_strictly_increase_across_fall_back():
    it = ticks("*/30 * * * *", "Europe/Berlin", datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN).timestamp())
    stamps = [next(it).timestamp() for _ in range(6)]
    assert stamps == sorted(set(stamps)) and stamps[1] - stamps[0] == 1800


@pytest.mark.parametrize("nick, expr", [("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
                                        ("@midnight", "0 0 * * *"), ("@yearly", "0 0 1 1 *")])
def test_nicknames(nick, expr):
    assert cron_expression(nick) == expr


def test_bad_expressions():
    for bad in ("", "   ", None, 5, "x" * 201):
        with pytest.raises(ValidationError):
            cron_expression(bad)


def test_the_fast_clock_runs_from_its_start():
    clock = ScheduleClock(start=1000.0, speed=60)
    assert clock.real_seconds(60) == 1 and ScheduleClock.parse(None).start is None
    assert ScheduleClock.parse("1000:60").speed == 60
