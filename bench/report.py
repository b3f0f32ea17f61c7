"""What the benchmarks share to report: a median with its run-to-run range, and a section of results.md."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"


def spread(values: list[float | None]) -> str:
    """``median (min-max)`` of the values measured (None: not measured), to a tenth; the value where all are the
    same; ``n/a`` where none was measured."""
    values = [round(v, 1) for v in values if v is not None]
    if not values:
        return "n/a"
    if min(values) == max(values):
        return f"{values[0]:g}"
    return f"{round(statistics.median(values), 1):g} ({min(values):g}-{max(values):g})"


def percentile(samples: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.99 for p99) of a non-empty list."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered))) - 1))]


def write_section(begin: str, end: str, text: str, path: Path = RESULTS, first: bool = False) -> None:
    """Replace what stands between the ``begin`` and ``end`` markers of ``path`` with ``text``, keeping the
    hand-written notes around it; a section not there yet goes first (``first``) or last."""
    block = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    elif first:
        new = block + "\n" + old
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def publish(runs: list, out: str | Path, text: str, markers: tuple[str, str], write: bool) -> None:
    """What every benchmark does at its end: the raw runs to ``out`` (JSON), the report ``text`` into its
    section of results.md (between ``markers``) when asked, and the text on stdout."""
    Path(out).write_text(json.dumps(runs, indent=2) + "\n")
    if write:
        write_section(*markers, text)
    print(text)
