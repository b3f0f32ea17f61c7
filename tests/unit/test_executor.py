"""The executor runs real /bin/sh scripts."""
import os
import time

import pytest

from mschedule.agent.executor import Executor
from mschedule.utils.defaults import TIMEOUT_EXIT_CODE
from tests.procs import alive


@pytest.fixture
def executor():
    return Executor(output_cap=4096, kill_grace=1.0)


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes(executor, code):
    result = executor.run(f"exit {code}".encode())
    assert result.code == code and not result.timed_out


def test_killed_by_signal_reports_128_plus_signal(executor):
    assert executor.run(b"kill -9 $$").code == 137


def test_stdout_and_stderr_merged_in_order(executor):
    script = b"echo one; echo two >&2; echo three; echo four >&2"
    assert executor.run(script).output == b"one\ntwo\nthree\nfour\n"


def test_multiline_script_with_quotes_and_binary_output(executor):
    script = b"x='a b'\nif [ \"$x\" = 'a b' ]; then\n  printf 'ok\\377\\n'\nfi\n"
    assert executor.run(script).output == b"ok\xff\n"


def test_timeout_kills_process_group_including_grandchildren(executor, tmp_path):
    marker = tmp_path / "pids"
    script = f"sleep 100 & echo $! > {marker}; (sleep 100; echo never) & wait".encode()
    started = time.monotonic()
    result = executor.run(script, timeout=0.5)
    assert result.timed_out and result.code == TIMEOUT_EXIT_CODE
    assert b"timed out after 0.5s" in result.output
    assert time.monotonic() - started < 5
    pid = int(marker.read_text())
    assert not alive(pid), "background sleep survived the timeout"


def test_timeout_kills_script_that_ignores_sigterm(executor):
    started = time.monotonic()
    result = executor.run(b"trap '' TERM; sleep 100", timeout=0.3)
    assert result.timed_out
    assert time.monotonic() - started < 5


def test_timeout_keeps_output_before_kill(executor):
    result = executor.run(b"echo before; sleep 100", timeout=0.5)
    assert result.output.startswith(b"before\n")


def test_zero_timeout_means_no_limit(executor):
    result = executor.run(b"sleep 0.3; echo done", timeout=0)
    assert result.code == 0 and result.output == b"done\n"


def test_output_cap_with_marker(executor):
    result = executor.run(b"head -c 100000 /dev/zero | tr '\\0' x")
    assert result.truncated
    assert result.output.startswith(b"x" * 4096)
    assert b"output truncated: 100000 bytes written, first 4096 kept" in result.output


def test_background_child_holding_output_does_not_hang(executor):
    started = time.monotonic()
    result = executor.run(b"sleep 30 & echo $! ; echo done")
    assert result.code == 0 and b"done" in result.output
    assert time.monotonic() - started < 5
    os.kill(int(result.output.split()[0]), 9)


def test_environment_passed(executor):
    assert executor.run(b"echo $MSCHEDULE_TASK_ID", env={"MSCHEDULE_TASK_ID": "t1"}).output == b"t1\n"


def test_stdin_is_empty(executor):
    assert executor.run(b"cat; echo end").output == b"end\n"

