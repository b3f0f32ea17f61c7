"""Run the fault tests and write their figures into docs/reliability.md (``make reliability``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
TESTS = ["tests/integration/test_durability.py", "tests/integration/test_network_cut.py",
         "tests/integration/test_datacenters.py", "tests/integration/test_security.py",
         "tests/integration/test_resilience.py", "tests/integration/test_bad_input.py",
         "tests/integration/test_protocol_fuzz.py", "tests/integration/test_long_waits.py",
         "tests/integration/test_stall.py", "tests/integration/test_disk_full.py"]
BEGIN, END = "<!-- figures: written by scripts/reliability_report.py -->", "<!-- end figures -->"


def run_tests(figures: str) -> tuple[int, str]:
    env = {**os.environ, "MSCHEDULE_FIGURES": figures}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    return proc.returncode, summary[-1] if summary else proc.stdout[-500:]


def table(rows: list[dict]) -> str:
    keys = ["targets", "results_checked", "senders", "inputs_tried", "agents_lost", "cut_seconds", "lost",
            "run_twice", "duplicated", "http_errors", "master_died", "master_rss_mb", "bytes_captured",
            "script_text_found", "netem"]
    present = [k for k in keys if any(k in r for r in rows)]
    lines = ["| fault | " + " | ".join(k.replace("_", " ") for k in present) + " |",
             "|---|" + "---|" * len(present)]
    for r in rows:
        lines.append(f"| {r['test']} | " + " | ".join(str(r.get(k, "")) for k in present) + " |")
    return "\n".join(lines)


def main() -> int:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        figures = f.name
    try:
        code, summary = run_tests(figures)
        rows = [json.loads(line) for line in Path(figures).read_text().splitlines() if line.strip()]
    finally:
        os.unlink(figures)
    block = "\n".join([BEGIN, f"Produced {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
                       "`make reliability` on this machine; pytest said: `" + summary.strip() + "`.", "",
                       table(rows), END])
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + block + rest.split(END, 1)[1])
    print(block)
    return code


if __name__ == "__main__":
    sys.exit(main())
