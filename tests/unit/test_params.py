"""Parameter declarations, values and the stream mask (mschedule/utils/params.py, masking.py)."""
import pytest

from mschedule.utils.exceptions import ValidationError
from mschedule.utils.masking import StreamMask, mask
from mschedule.utils.params import resolve_params, validate_declarations, validate_env


def test_declarations_come_back_complete_and_resolve_with_defaults():
    decls = validate_declarations([{"name": "V", "default": "1"}, {"name": "T", "secret": True}])
    assert decls[0] == {"name": "V", "description": "", "default": "1", "required": False, "choices": None,
                        "pattern": None, "secret": False}
    assert validate_declarations(decls) == decls  # a stored declaration saves again unchanged (rollback)
    assert resolve_params(decls, {"T": "pw"}) == ({"V": "1", "T": "pw"}, ["T"])
    assert resolve_params(decls, None) == ({"V": "1"}, [])


def test_a_secret_value_is_not_repeated_in_an_error():
    decls = validate_declarations([{"name": "T", "secret": True, "choices": ["a"], "pattern": "^a$"}])
    with pytest.raises(ValidationError) as err:
        resolve_params(decls, {"T": "hunter2"})
    assert "hunter2" not in str(err.value) and err.value.field == "params.T"


def test_env_limits():
    assert validate_env({"A": 1}) == {"A": "1"}
    with pytest.raises(ValidationError):
        validate_env({f"V{i}": "x" for i in range(65)})
    with pytest.raises(ValidationError) as err:
        validate_env({f"V{i}": "x" * 30000 for i in range(3)})
    assert err.value.field == "env"


@pytest.mark.parametrize("cut", range(1, 12))
def test_stream_mask_holds_back_a_secret_split_anywhere(cut):
    text = b"before hunter2 after hunter"
    m = StreamMask(["hunter2"])
    out = m.feed(text[:cut]) + m.feed(text[cut:]) + m.close()
    assert out == b"before *** after hunter"
    assert mask(out, ["hunter2"]) == out  # masking again changes nothing


def test_the_longest_secret_is_masked_whole():
    assert mask(b"abcdef", ["abc", "abcdef"]) == b"***"
    assert StreamMask([]).feed(b"x") == b"x"


def test_stream_mask_reads_a_large_output_with_large_secrets_in_linear_time():
    """The agent's reader: 64 KiB reads, secrets at their 64 KiB limit. Trying every length of a secret's start
    at each read took about 20 ms a read (3 MB/s); a busy agent reads much faster than that."""
    import time
    m = StreamMask(["x" * 32767, "y" * 32000])
    begun = time.process_time()
    for i in range(100):  # the last byte might start a secret: held until the next read
        assert m.feed(b"z" * 65535 + b"y") == (b"y" if i else b"") + b"z" * 65535
    assert time.process_time() - begun < 0.5
    m = StreamMask(["abc" * 100])
    assert m.feed(b"-" + b"abc" * 50) == b"-" and m.feed(b"abc" * 50 + b"!") == b"***!"


def test_the_mask_is_refused_as_a_secret_s_value_in_a_run_and_a_retry():
    """*** is how every answer shows a secret: sent back (a task's params copied into a run or a retry), it
    would run the script with the password "***", and a restarted master would take it for a lost value."""
    from mschedule.master.handler import AdminHandler
    from mschedule.master.scheduler import Scheduler
    from mschedule.master.storage import Storage
    from mschedule.utils.messages import AgentInfo
    from mschedule.utils.states import State

    decls = validate_declarations([{"name": "PW", "secret": True}, {"name": "V"}])
    with pytest.raises(ValidationError) as err:
        resolve_params(decls, {"PW": "***"})
    assert err.value.field == "params.PW"
    assert resolve_params(decls, {"PW": "x", "V": "***"})[0] == {"PW": "x", "V": "***"}  # a plain value may
    scheduler = Scheduler(Storage(), agent_timeout=10)
    scheduler.agent_seen(AgentInfo(id="a0", hostname="h-a0", session="s1"))
    admin = AdminHandler(scheduler)
    admin.job_save("j", {"script": "true", "targets": ["a0"], "params": [{"name": "PW", "secret": True}]})
    task_id = admin.job_run("j", {"params": {"PW": "hunter2"}})["task_id"]
    task = scheduler.storage.tasks[task_id]
    for target in task.targets.values():
        task.set_target_state(target, State.FAILED)
    scheduler._finish(task, State.FAILED)
    with pytest.raises(ValidationError) as err:
        admin.retry_task(task_id, {"params": {"PW": "***"}})
    assert err.value.field == "params.PW"
    assert admin.retry_task(task_id, {"params": {"PW": "hunter2"}})["retry_of"] == task_id
