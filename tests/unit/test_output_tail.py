"""Cutting a task's outputs to their last bytes for a refreshing page (mschedule.master.handler.output_tail)."""
from mschedule.master.handler import output_tail


def test_short_output_and_no_limit_are_whole():
    assert output_tail(b"abc\n", 10) == b"abc\n"
    assert output_tail(b"abc\n", None) == b"abc\n"
    assert output_tail(b"", 0) == b""


def test_long_output_keeps_its_last_bytes():
    assert output_tail(b"0123456789", 4) == b"6789"
    assert output_tail(b"0123456789", 0) == b""


def test_a_cut_never_starts_inside_a_character():
    text = "é".encode() * 5  # two bytes each
    for limit in range(1, len(text)):
        tail = output_tail(text, limit)
        assert tail.decode("utf-8") == "é" * (len(tail) // 2)
        assert limit - 1 <= len(tail) <= limit
    emoji = "x🙂".encode()  # 1 + 4 bytes
    assert output_tail(emoji, 3) == b""
    assert output_tail(emoji, 4) == "🙂".encode()
