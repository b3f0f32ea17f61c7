"""mschedule/master/waiters.py: an Event per key only while someone waits on it."""
import gevent

from mschedule.master.waiters import Waiters


def test_release_wakes_every_waiter_of_the_key_and_forgets_it():
    waiters = Waiters()
    woken = [gevent.spawn(waiters.wait, "k", 30) for _ in range(3)]
    other = gevent.spawn(waiters.wait, "other", 30)
    gevent.sleep(0)
    assert len(waiters) == 2 and waiters.waiting("k") == 3
    assert waiters.release("k") == 3
    assert len(waiters) == 1  # forgotten at once, before the woken greenlets even run
    gevent.wait(woken, timeout=1)
    assert [g.value for g in woken] == [True] * 3
    assert not other.ready() and waiters.waiting("other") == 1
    other.kill()
    assert len(waiters) == 0


def test_timeout_and_kill_leave_nothing_behind():
    waiters = Waiters()
    assert waiters.wait("k", 0.01) is False
    assert len(waiters) == 0
    killed = gevent.spawn(waiters.wait, "k", 30)
    gevent.sleep(0)
    killed.kill()
    assert len(waiters) == 0


def test_last_waiter_to_leave_removes_the_key():
    waiters = Waiters()
    short = gevent.spawn(waiters.wait, "k", 0.01)
    long = gevent.spawn(waiters.wait, "k", 30)
    short.join(1)
    assert short.value is False and waiters.waiting("k") == 1  # still held for the one left
    long.kill()
    assert len(waiters) == 0


def test_wait_after_release_waits_afresh():
    waiters = Waiters()
    assert waiters.release("k") == 0  # nobody waiting: nothing to do, nothing kept
    first = gevent.spawn(waiters.wait, "k", 30)
    gevent.sleep(0)
    waiters.release("k")
    assert waiters.wait("k", 0.01) is False  # a release is not remembered
    first.join(1)
    assert first.value is True and len(waiters) == 0


def test_zero_wait_returns_at_once_without_registering():
    waiters = Waiters()
    assert waiters.wait("k", 0) is False and waiters.wait("k", -1) is False
    assert len(waiters) == 0
