"""The executor runs real /bin/sh scripts."""
import os
import time

import gevent
import pytest

from mschedule.agent import executor as executor_module
from mschedule.agent.executor import Executor, _shebang_argv
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



def test_a_bash_shebang_runs_bash_syntax(executor):
    script = b'#!/bin/bash\nset -eu\nwords=(one two three)\nif [[ ${#words[@]} == 3 && $0 == */script ]]; then\n' \
             b'  echo "ok ${words[1]}"\nfi\n'
    result = executor.run(script)
    assert result.code == 0 and result.output == b"ok two\n", result.output


def test_an_env_shebang_runs_python(executor):
    result = executor.run(b"#!/usr/bin/env python3\nimport sys\nprint('py', sys.version_info[0])\n")
    assert result.code == 0 and result.output == b"py 3\n", result.output


def test_without_a_shebang_sh_runs_it(executor):
    result = executor.run(b"echo $0")
    assert result.code == 0 and result.output.endswith(b"/script\n")


def test_a_missing_interpreter_is_127_with_a_clear_line(executor):
    result = executor.run(b"#!/no/such/interpreter -x\necho never\n")
    assert result.code == 127 and not result.timed_out
    assert result.output == b"[mschedule: cannot run the script: its #! interpreter '/no/such/interpreter' " \
                            b"does not exist]\n"
    assert executor.run(b"#!/usr/bin/env no-such-program-here\n").code == 127  # env says so itself
    empty = executor.run(b"#!\necho never\n")
    assert empty.code == 126 and b"cannot be executed" in empty.output, empty.output


def test_the_script_file_is_private_and_removed(executor):
    result = executor.run(b'stat -c "%a" "$0" "$(dirname "$0")"; echo "$0"')
    modes, path = result.output.split(b"\n")[:2], result.output.split(b"\n")[2]
    assert modes == [b"700", b"700"], result.output
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


def test_cancel_sends_term_first_so_a_trap_runs(executor):
    result = {}
    runner = gevent.spawn(lambda: result.update(r=executor.run(b"trap 'echo trapped; exit 3' TERM; echo up; sleep 60")))
    gevent.sleep(0.3)
    started = time.monotonic()
    executor.cancel()
    runner.join(timeout=5)
    outcome = result["r"]
    assert outcome.cancelled and not outcome.timed_out and outcome.code == 3
    assert outcome.output.startswith(b"up\n") and b"\ntrapped\n" in outcome.output  # sh may say "Terminated"
    assert b"[mschedule: cancelled;" in outcome.output
    assert time.monotonic() - started < 1.0  # the trap ended it: no wait for the SIGKILL grace


def test_cancel_kills_a_script_that_ignores_term_after_the_grace(executor):
    result = {}
    runner = gevent.spawn(lambda: result.update(r=executor.run(b"trap '' TERM; sleep 60")))
    gevent.sleep(0.3)
    started = time.monotonic()
    executor.cancel()
    runner.join(timeout=5)
    assert result["r"].cancelled and result["r"].code == 137
    assert 0.9 < time.monotonic() - started < 3  # kill_grace is 1 s here
    executor.cancel()  # nothing runs: nothing happens


def test_the_shebang_line_splits_as_the_kernel_splits_it():
    assert _shebang_argv(b"#!/bin/bash\necho") == ["/bin/bash"]
    assert _shebang_argv(b"#! /usr/bin/env  python3 -u \n") == ["/usr/bin/env", "python3 -u"]
    assert _shebang_argv(b"#!\n") == [""]


def test_on_a_noexec_directory_the_agent_runs_the_interpreter_itself(executor, monkeypatch):
    monkeypatch.setattr(executor_module, "_noexec", lambda directory: True)
    assert executor.run(b"#!/bin/bash\narr=(x y); echo ${arr[1]}\n").output == b"y\n"
    assert executor.run(b"#!/no/such/shell\n").code == 127
