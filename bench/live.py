"""Live output at scale: a task on 1,000 real agents, each printing a line a second for 60 s, with nobody
following it and with the web console (headless Chromium on the task's page) and the CLI
(``mschedule task ID --follow``) following it (``make bench-live``; ``BENCH_ARGS="--agents 200 --runs 1"``).

Measures, per run and mode, over the task's middle (all but its first 3 and last 7 seconds): the master's and
the web tier's CPU (% of one core) and RSS and the progress messages the master took per second (its own
counter); for the followed mode, the lines the CLI printed and its exit status. Writes its section of
bench/results.md (``--write``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import publish, spread  # noqa: E402
from bench.run import cpu_seconds, log, machine, rss_mb, start_fleet  # noqa: E402
from tests.integration.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.integration.harness import PYTHON, ROOT, Stack, wait_until  # noqa: E402

SECONDS = 60
MODES = ("nobody", "console+cli")


def script(seconds: int) -> str:
    """Prints a line a second without forking (bash builtins, a sleep that is a read with a timeout on a pipe
    nobody writes to): 1,000 scripts forking `sleep` and `hostname` every second load 2 cores so much that the
    agents miss their heartbeats, and that would measure the machine, not the output path."""
    return ("#!/bin/bash\nexec {fd}<> <(:)\n"
            f'for i in {{1..{seconds}}}; do echo "line $i of {seconds} from $HOSTNAME"; read -t 1 -u $fd; done\n'
            "exit 0\n")  # a read that times out returns 142


def count_lines(stream, counter: list[int]) -> None:
    for _ in stream:
        counter[0] += 1


def progress_total(stack: Stack) -> float:
    """The master's mschedule_master_progress_messages_total, summed over its labels."""
    req = urllib.request.Request(stack.api.base + "/metrics", headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "mschedule_master_progress_messages_total")


class Console:
    """Headless Chromium on the task's page (the console follows it over GET /task/{id}/events)."""

    def __init__(self, stack: Stack, task_id: str) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = self.browser.new_context(viewport={"width": 1300, "height": 850})
        context.add_init_script(f"sessionStorage.setItem('mschedule.token', {json.dumps(stack.token)})")
        self.page = context.new_page()
        self.page.goto(f"{stack.api.base}/#/task/{task_id}")

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


def one_mode(stack: Stack, ids: list[str], mode: str, seconds: int) -> dict:
    web = next(p for p in stack.procs if p.name == "web")
    master = next(p for p in reversed(stack.procs) if p.name == "master")
    window = seconds - 10.0
    task = stack.api.submit(script(seconds), ids, parallel=len(ids), timeout=seconds + 120)
    wait_until(lambda: stack.api.get(f"/task/{task}?output_limit=0", timeout=30)[1]["counts"]["RUNNING"]
               >= len(ids), 60, interval=0.5, what="every target running")
    console = cli = cli_log = None
    cli_lines = [0]
    try:
        if mode != "nobody":
            console = Console(stack, task)
            env = {"MSCHEDULE_URL": stack.api.base, "MSCHEDULE_TOKEN": stack.token, "PATH": "/usr/bin:/bin",
                   "HOME": str(stack.tmp)}
            cli_log = stack.tmp / f"cli-{task}.log"
            with open(cli_log, "w") as err:  # the CLI has its own copy of the descriptor
                cli = subprocess.Popen([PYTHON, "-m", "mschedule.cli", "task", task, "--follow"], cwd=ROOT,
                                       env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            threading.Thread(target=count_lines, args=(cli.stdout, cli_lines), daemon=True).start()
        time.sleep(3)
        c0 = {"master": cpu_seconds(master.pid), "web": cpu_seconds(web.pid)}
        p0, t0 = progress_total(stack), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        out = {"mode": mode, "agents": len(ids),
               "progress_per_s": round((progress_total(stack) - p0) / elapsed, 1),
               **{name: {"cpu_pct": round(100 * (cpu_seconds(proc.pid) - c0[name]) / elapsed, 1),
                         "rss_mb": round(rss_mb(proc.pid), 1)} for name, proc in (("master", master), ("web", web))}}
        if console is not None:
            out["console_lines_shown"] = console.page.evaluate(
                "() => document.body.innerText.split('line ').length - 1")
        done = stack.api.wait_task(task, seconds + 120)
        out["state"] = done["state"]
        if cli is not None:
            cli.wait(60)
            out["cli_exit"], out["cli_lines"] = cli.returncode, cli_lines[0]
            out["cli_polled"] = "polling instead" in cli_log.read_text()
        log(f"{mode}: {out}")
        return out
    finally:
        if console is not None:
            console.close()
        if cli is not None and cli.poll() is None:
            cli.kill()


BEGIN, END = "<!-- live: written by bench/live.py -->", "<!-- end live -->"


def report(runs: list[list[dict]], seconds: int) -> str:
    n = runs[0][0]["agents"]
    lines = [f"## Live output: {n:,} real agents each printing a line a second for {seconds} s", "",
             f"`make bench-live` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(runs)} runs; median "
             f"and range). {machine()}. Agents `app.py --instances 100`, heartbeat 3 s; measured over {seconds - 10} s "
             "in the middle of the task. Followed: the console open on the task in headless Chromium and "
             "`mschedule task ID --follow`, both on the task's event stream.", "",
             "| followers | progress messages/s at the master | master CPU % of a core | master RSS MB | "
             "web tier CPU % | web tier RSS MB |", "|---|---|---|---|---|---|"]
    for k, mode in enumerate(MODES):
        rows = [run[k] for run in runs]

        def col(tier: str, key: str, rows: list[dict] = rows) -> str:
            return spread([r[tier][key] for r in rows])

        lines.append(f"| {mode} | {spread([r['progress_per_s'] for r in rows])} | {col('master', 'cpu_pct')} | "
                     f"{col('master', 'rss_mb')} | {col('web', 'cpu_pct')} | {col('web', 'rss_mb')} |")
    followed = [run[1] for run in runs]
    lines += ["", f"With followers, every task ended {', '.join(sorted({r['state'] for r in followed}))}; the CLI "
              f"printed {spread([r.get('cli_lines') for r in followed])} lines (the hosts printed "
              f"{n * seconds:,}, and a summary row each) and exited {spread([r.get('cli_exit') for r in followed])}; "
              f"it fell back from the stream to polling in {sum(1 for r in followed if r.get('cli_polled'))} of "
              f"{len(followed)} runs."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=SECONDS, help="how long each script prints")
    parser.add_argument("--out", default=str(HERE / "live.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="mschedule-live-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.master(agent_timeout=10, heartbeat_interval=3.0)
            stack.web()
            ids = start_fleet(stack, args.agents, 100, interval=3.0)
            log(f"{len(ids)} agents online")
            for _ in range(args.runs):
                runs.append([one_mode(stack, ids, mode, args.seconds) for mode in MODES])
        finally:
            stack.close()
    publish(runs, args.out, report(runs, args.seconds), (BEGIN, END), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
