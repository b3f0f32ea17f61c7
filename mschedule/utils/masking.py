"""Secret values replaced by ``***`` in a script's output, as CI systems mask theirs.

The agent masks the stream as it reads it (:class:`StreamMask`), so what it sends live and in its result, and
the byte offsets both count, are of the masked stream; the master masks a result once more (:func:`mask`,
which changes nothing already masked) so its stored output holds no secret whatever the agent did.
"""
from __future__ import annotations

from collections.abc import Iterable

from mschedule.utils.params import MASK

_MASK = MASK.encode()


def _needles(secrets: Iterable[str]) -> list[bytes]:
    """Each secret's bytes, longest first (a secret that contains another is masked whole)."""
    return sorted({s.encode() for s in secrets if s}, key=len, reverse=True)


def _replace(data: bytes, needles: list[bytes]) -> bytes:
    for needle in needles:
        if needle in data:
            data = data.replace(needle, _MASK)
    return data


def mask(data: bytes, secrets: Iterable[str]) -> bytes:
    """``data`` with every occurrence of each secret replaced by ``***``."""
    return _replace(data, _needles(secrets))


class StreamMask:
    """Masks a stream that arrives in pieces: a secret split across two reads is masked too.

    :meth:`feed` returns what can be released now; it holds back the longest end of the stream that could be
    the start of a secret, until the next piece says whether it is one. :meth:`close` releases the rest.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._needles = _needles(secrets)
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if not self._needles:
            return data
        data = _replace(self._held + data, self._needles)
        keep = self._partial(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep]

    def close(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _partial(self, data: bytes) -> int:
        """Length of the longest end of ``data`` that is a proper start of some secret.

        Only the places in the tail where a secret's first byte occurs are tried (a ``find`` each), longest
        first: trying every length would copy and compare O(n^2) bytes per read, 20 ms for a 64 KiB read
        with a 32 KiB secret.
        """
        longest = 0
        for needle in self._needles:
            tail = data[len(data) - min(len(needle) - 1, len(data)):]
            first = needle[:1]
            i = tail.find(first)
            while i != -1 and len(tail) - i > longest:
                if needle.startswith(tail[i:]):
                    longest = len(tail) - i
                    break
                i = tail.find(first, i + 1)
        return longest
