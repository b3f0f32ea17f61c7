"""mschedule console benchmark: the web console in Debian's Chromium against a fleet of 1000 agents.

Measures what an operator waits for (the agents view drawn, a filter applied, ticking every agent, a
1000-host task shown to its end) and what an open page costs the master. Run with ``make bench-console``;
prints a Markdown table and writes it to bench/console.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.run import log, machine, measure, start_fleet  # noqa: E402
from tests.integration.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.integration.harness import Stack  # noqa: E402


def timed_ms(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def in_page_ms(page, script: str, rounds: int) -> float:
    """Median time of a synchronous piece of page script (the console renders synchronously on input)."""
    return statistics.median(page.evaluate(f"() => {{ const t = performance.now(); {script}; "
                                           "return performance.now() - t; }") for _ in range(rounds))


def bench(stack: Stack, agents: int, rounds: int, idle_window: float) -> dict:
    from playwright.sync_api import sync_playwright

    ids = start_fleet(stack, agents, 50, interval=3.0)
    log(f"{len(ids)} agents online")
    r: dict = {"agents": len(ids)}
    raw = json.dumps(stack.api.agents()).encode()
    r["targets_kb"] = len(raw) / 1024
    r["targets_ms"] = timed_ms(stack.api.agents, rounds)
    procs = {"master": next(p for p in stack.procs if p.name == "master"),
             "web": next(p for p in stack.procs if p.name == "web")}
    r["idle_no_page"] = measure(procs, idle_window)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1300, "height": 850})
        context.add_init_script(f"sessionStorage.setItem('mschedule.token', {json.dumps(stack.token)})")
        page = context.new_page()
        rows = page.locator("#agents tbody tr[data-agent]")

        t0 = time.perf_counter()
        page.goto(stack.api.base + "/")
        rows.nth(len(ids) - 1).wait_for(state="attached", timeout=60000)
        r["agents_view_first_ms"] = (time.perf_counter() - t0) * 1000
        r["agents_render_ms"] = in_page_ms(
            page, "document.getElementById('agent-filter').dispatchEvent(new Event('input'))", rounds)
        r["select_all_ms"] = in_page_ms(page, "document.getElementById('select-all').click()", rounds)
        r["idle_agents_page"] = measure(procs, idle_window)

        task_id = stack.api.submit("echo $PPID", ids, parallel=len(ids))
        t0 = time.perf_counter()
        page.goto(f"{stack.api.base}/#/task/{task_id}")
        page.wait_for_selector("#view[data-done=yes]", timeout=120000)
        r["task_view_done_s"] = time.perf_counter() - t0
        raw = json.dumps(stack.api.get(f"/task/{task_id}")[1]).encode()
        r["task_kb"] = len(raw) / 1024
        r["task_get_ms"] = timed_ms(lambda: stack.api.get(f"/task/{task_id}"), rounds)

        # a page left open on a long task that still runs on every host
        long_id = stack.api.submit("sleep 600", ids, parallel=len(ids))
        page.goto(f"{stack.api.base}/#/task/{long_id}")
        page.locator("#targets tbody tr").nth(len(ids) - 1).wait_for(state="attached", timeout=60000)
        r["running_task_page"] = measure(procs, idle_window)
        stack.api.post(f"/task/{long_id}/cancel")
        browser.close()
    return r


def report(r: dict) -> str:
    def cpu(key: str) -> str:
        return f"{r[key]['master']['cpu_pct']:.1f} % / {r[key]['web']['cpu_pct']:.1f} %"

    return "\n".join([
        "| measure | value |",
        "|---|---|",
        f"| agents online | {r['agents']} |",
        f"| GET /task/targets: size, median time | {r['targets_kb']:.0f} KB, {r['targets_ms']:.0f} ms |",
        f"| agents view: page load to {r['agents']} rows drawn | {r['agents_view_first_ms']:.0f} ms |",
        f"| agents view: redraw (a filter keystroke, or a refresh) | {r['agents_render_ms']:.0f} ms |",
        f"| tick every agent (select-all) | {r['select_all_ms']:.0f} ms |",
        f"| task on {r['agents']} hosts: page open to every result shown | {r['task_view_done_s']:.2f} s |",
        f"| GET /task/{{id}} of that task: size, median time | {r['task_kb']:.0f} KB, {r['task_get_ms']:.0f} ms |",
        f"| master / web CPU, no page open | {cpu('idle_no_page')} |",
        f"| master / web CPU, agents view open (refresh every 2 s) | {cpu('idle_agents_page')} |",
        f"| master / web CPU, task view open on a running {r['agents']}-host task | {cpu('running_task_page')} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--window", type=float, default=20, help="seconds over which CPU is measured")
    parser.add_argument("--out", default=str(HERE / "console.md"))
    args = parser.parse_args()
    if chromium_path() is None:
        sys.exit("no Chromium: `make browser` installs Debian's chromium package (as root)")
    with tempfile.TemporaryDirectory(prefix="mschedule-console-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.master(agent_timeout=10, heartbeat_interval=3.0)
            stack.web()
            results = bench(stack, args.agents, args.rounds, args.window)
        finally:
            stack.close()
    text = (f"# Console benchmark\n\n{time.strftime('%Y-%m-%d')}, {machine()}; `make bench-console`.\n\n"
            f"{report(results)}\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
