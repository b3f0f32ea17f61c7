"""Idle long polls: which costs the master least at 10,000 agents (``make bench-polls``;
``BENCH_ARGS="--agents 5000 --runs 1"``).

Three ways an idle agent can keep its poll open, each on its own master with the same simulated fleet
(bench/fleet.py), measured over ``--window`` seconds once every agent has taken the pace the master gives:

- ``told`` (what mschedule does): heartbeats at the stretched interval, polls renewed at the stretched
  ``poll`` the master tells (``min(60, 20 s x interval / 3 s)``);
- ``fixed``: heartbeats at the stretched interval, polls renewed every 20 s whatever the fleet size (before);
- ``heartbeat``: no heartbeats, the poll renewed once an interval and standing in for the heartbeat (the
  master runs with a long ``--agent-timeout`` so that the agents stay online without heartbeats: this
  measures the messages' cost, not a finished design).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import POLL_MODES, start_fleet, usage  # noqa: E402
from bench.report import publish, spread  # noqa: E402
from mschedule.master.liveness import HeartbeatPolicy  # noqa: E402
from mschedule.utils.defaults import CONNECT_JITTER, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_POLL_WAIT  # noqa: E402
from tests.integration.harness import Stack  # noqa: E402

POLICY = HeartbeatPolicy()


def say(msg: str) -> None:
    print(f"[polls {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def one(tmp: Path, agents: int, mode: str, window: float) -> dict:
    stack = Stack(tmp)
    try:
        timeout = 3600 if mode == "heartbeat" else 10
        master = stack.master(agent_timeout=timeout, heartbeat_interval=DEFAULT_HEARTBEAT_INTERVAL)
        stack.web()  # to see the fleet online
        interval = POLICY.fleet_interval(agents)
        poll = {"told": POLICY.poll(interval), "fixed": DEFAULT_POLL_WAIT, "heartbeat": interval}[mode]
        fleet = start_fleet(stack, agents, interval=DEFAULT_HEARTBEAT_INTERVAL, jitter=CONNECT_JITTER,
                            poll_wait=poll, poll_mode=mode, wait=False)
        fleet.wait_online(stack, 120 + agents / 20)
        time.sleep(max(interval, poll) + 10)  # every agent is on the pace of this mode
        # at least one whole poll period: the polls of a fleet that started at once renew in waves
        window = max(window, poll * 1.1 + 2, interval * 1.1 + 2)
        before = fleet.status()
        use = usage({"master": [master.pid], "fleet": fleet.pids}, window)
        after = fleet.status()
        rate = {k: round((after.get(k, 0) - before.get(k, 0)) / window, 1) for k in ("heartbeats", "polls")}
        fleet.stop()
        out = {"mode": mode, "agents": agents, "interval_s": interval, "poll_s": poll, "window_s": round(window, 1),
               **use, "per_s": rate}
        say(str(out))
        return out
    finally:
        stack.close()


BEGIN, END = "<!-- polls: written by bench/polls.py -->", "<!-- end polls -->"


def report(runs: list[list[dict]], agents: int, window: float) -> str:
    lines = [f"## Idle long polls at {agents:,} agents: stretched renewal or a poll that is the heartbeat", "",
             f"`make bench-polls` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(runs)} runs; median "
             f"and range). Each mode on its own master, simulated agents, measured over at least {window:.0f} s "
             "and one whole poll period.", "",
             "| mode | heartbeat every (s) | poll renewed every (s) | heartbeats/s | polls/s | master CPU % of a core "
             "| master RSS MB |", "|---|---|---|---|---|---|---|"]
    for k, mode in enumerate(POLL_MODES):
        rows = [run[k] for run in runs]
        beat = "none" if mode == "heartbeat" else f"{rows[0]['interval_s']:g}"
        lines.append(f"| {mode} | {beat} | {rows[0]['poll_s']:g} | {spread([r['per_s']['heartbeats'] for r in rows])} "
                     f"| {spread([r['per_s']['polls'] for r in rows])} | "
                     f"{spread([r['master']['cpu_pct'] for r in rows])} | "
                     f"{spread([r['master']['rss_mb'] for r in rows])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--out", default=str(HERE / "polls.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    args = parser.parse_args()
    runs = []
    for k in range(args.runs):
        run = []
        for mode in POLL_MODES:
            say(f"run {k + 1}/{args.runs}: {mode}")
            with tempfile.TemporaryDirectory(prefix="mschedule-polls-") as tmp:
                run.append(one(Path(tmp), args.agents, mode, args.window))
        runs.append(run)
    publish(runs, args.out, report(runs, args.agents, args.window), (BEGIN, END), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
