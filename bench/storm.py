"""Reconnect storm: thousands of real agents connect at once, then the master is killed -9 and restarted
under them (``make bench-storm``; ``BENCH_ARGS="--agents 3000 --runs 2"``).

Prints, per run: time until every agent is online (cold start) and until every agent has registered with
the restarted master, the admin endpoint's latency over the 30 s after each (a plain-zmq admin client
calling ``get_tasks`` every 0.2 s),
agents that flapped offline, targets failed by the restart (a ``sleep`` on every agent spans the kill:
must be 0), and the master's CPU and RSS. Agents run with production settings (heartbeat every 3 s,
--agent-timeout 10, --max-backoff 5, --connect-jitter 2), 100 per process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.report import percentile, publish, spread  # noqa: E402
from bench.run import cpu_seconds, rss_mb, wait_for  # noqa: E402
from tests.integration.harness import Stack, wait_until  # noqa: E402
from tests.integration.zpc import RawPeer  # noqa: E402

PER_PROCESS = 100
WINDOW = 30.0
"""Seconds after a start or restart over which the admin latency and the master's CPU are measured."""
AGENT_FLAGS = ("--max-backoff", "5", "--connect-jitter", "2")


def log(msg: str) -> None:
    print(f"[storm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class AdminProbe:
    """Calls the admin endpoint every 0.2 s from a thread and records each call's latency (5 s: no answer)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peer = self._peer()
        while not self._stop.wait(0.2):
            start = time.monotonic()
            try:
                peer.call("get_tasks", 1, timeout=5.0)
                took = time.monotonic() - start
            except TimeoutError:
                took = 5.0
                peer.close()
                peer = self._peer()
            self.samples.append((start, took))
        peer.close()

    def _peer(self) -> RawPeer:
        keys = self.stack.keys
        return RawPeer(self.stack.admin_endpoint, keys.public, (keys.admin_public, keys.admin_secret))

    def between(self, t0: float, t1: float) -> dict:
        took = sorted(s for at, s in self.samples if t0 <= at <= t1)
        if not took:
            return {"calls": 0}
        return {"calls": len(took), "p50_ms": round(1000 * statistics.median(took), 1),
                "p99_ms": round(1000 * percentile(took, 0.99), 1),
                "max_ms": round(1000 * took[-1], 1), "unanswered": sum(1 for s in took if s >= 5.0)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def online_count(stack: Stack) -> int:
    try:
        return len(stack.online_agents())
    except Exception:  # the web tier answers 503 while the master is down
        return -1


def registrations(stack: Stack) -> int:
    """How many times the stack's agents have registered (each logs it, once per master it registers with)."""
    return sum(p.log().count(": registered with ") for p in stack.procs if p.name.startswith("agent"))


class CpuMeter:
    def __init__(self, pid: int) -> None:
        self.pid, self.t0, self.c0 = pid, time.monotonic(), cpu_seconds(pid)

    def read(self) -> dict:
        elapsed = time.monotonic() - self.t0
        return {"cpu_pct": round(100 * (cpu_seconds(self.pid) - self.c0) / elapsed, 1),
                "rss_mb": round(rss_mb(self.pid), 1)}


def one_run(tmp: Path, agents: int, sleep: float) -> dict:
    stack = Stack(tmp)
    probe = None
    try:
        master = stack.master(agent_timeout=10, heartbeat_interval=3.0)
        stack.web()
        probe = AdminProbe(stack)
        log(f"starting {agents} agents, {PER_PROCESS} per process")
        t0 = time.monotonic()
        meter = CpuMeter(master.pid)
        for start in range(0, agents, PER_PROCESS):
            stack.agents(min(PER_PROCESS, agents - start), state_dir=str(tmp / f"fleet{start}"), wait=False,
                         interval=3.0, extra=AGENT_FLAGS)
        cold = wait_for(lambda: online_count(stack) >= agents, 300)
        time.sleep(max(0.0, WINDOW - (time.monotonic() - t0)))
        cold_usage = meter.read()
        cold_admin = probe.between(t0, time.monotonic())
        log(f"cold start: all online after {cold}s, admin {cold_admin}, master {cold_usage}")
        time.sleep(15)
        meter = CpuMeter(master.pid)
        time.sleep(20)
        steady = meter.read()
        log(f"steady: master {steady}")
        ids = sorted(stack.api.agents())
        task = stack.api.submit(f"sleep {sleep}", ids, parallel=len(ids), timeout=sleep + 600)
        wait_until(lambda: stack.api.get(f"/task/{task}", timeout=30)[1]["counts"]["RUNNING"] >= len(ids), 180,
                   interval=1, what="every target running")
        log("every target running: kill -9 the master and restart it")
        offline_before = master.log().count("offline: no heartbeat")
        registered_before = registrations(stack)
        master.kill9()
        t1 = time.monotonic()
        master = stack.master(agent_timeout=10, heartbeat_interval=3.0)
        meter = CpuMeter(master.pid)
        after = wait_for(lambda: registrations(stack) - registered_before >= agents, 300)
        time.sleep(max(0.0, WINDOW - (time.monotonic() - t1)))
        restart_usage = meter.read()
        restart_admin = probe.between(t1, time.monotonic())
        log(f"restart: every agent registered with the new master after {after}s, admin {restart_admin}, "
            f"master {restart_usage}")
        status, done = stack.api.post("/result", {"task_id": task, "wait": 60}, timeout=90)
        deadline = time.monotonic() + sleep + 300
        while not (done["finished"] and done["counts"]["RUNNING"] == 0) and time.monotonic() < deadline:
            status, done = stack.api.post("/result", {"task_id": task, "wait": 30, "output_limit": 0}, timeout=60)
        counts = done["counts"]
        flapped = offline_before + master.log().count("offline: no heartbeat")
        log(f"task {done['state']}: {counts}; agents declared offline during the run: {flapped}")
        return {"agents": agents, "cold_online_s": cold, "cold_admin": cold_admin, "cold_master": cold_usage,
                "steady_master": steady, "restart_registered_s": after, "restart_admin": restart_admin,
                "restart_master": restart_usage, "task_state": done["state"],
                "targets_failed": counts.get("FAILED", 0), "targets_succeeded": counts.get("SUCCEED", 0),
                "offline_events": flapped}
    finally:
        if probe is not None:
            probe.stop()
        stack.close()


BEGIN, END = "<!-- storm: written by bench/storm.py -->", "<!-- end storm -->"


def report(runs: list[dict]) -> str:
    """The storm section of bench/results.md: medians with the run-to-run range in brackets."""
    def col(key: str, sub: str | None = None) -> str:
        values = [r[key].get(sub) if sub else r[key] for r in runs]
        return spread([round(v, 1) for v in values if v is not None])

    agents = runs[0]["agents"]
    lines = [f"## Reconnect storm: {agents} real agents ({PER_PROCESS} per process), master kill -9 and restart "
             "under them", "",
             f"`make bench-storm` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(runs)} runs; median and "
             "range). Agents with production settings (heartbeat 3 s, `--agent-timeout 10`, `--connect-jitter 2`); "
             "the master, the web tier and every agent share this 2-core machine. Admin latency: a `get_tasks` call "
             "every 0.2 s over the 30 s after the start or restart.", "",
             "| | cold start | after kill -9 and restart |", "|---|---|---|",
             f"| every agent back (s) | {col('cold_online_s')} (online) | {col('restart_registered_s')} (registered "
             "again) |",
             f"| admin p50 ms | {col('cold_admin', 'p50_ms')} | {col('restart_admin', 'p50_ms')} |",
             f"| admin p99 ms | {col('cold_admin', 'p99_ms')} | {col('restart_admin', 'p99_ms')} |",
             f"| admin max ms | {col('cold_admin', 'max_ms')} | {col('restart_admin', 'max_ms')} |",
             f"| admin calls unanswered (5 s) | {col('cold_admin', 'unanswered')} | "
             f"{col('restart_admin', 'unanswered')} |",
             f"| master CPU % of a core | {col('cold_master', 'cpu_pct')} | {col('restart_master', 'cpu_pct')} |",
             f"| master RSS MB | {col('cold_master', 'rss_mb')} | {col('restart_master', 'rss_mb')} |", "",
             f"Steady state between them: master {col('steady_master', 'cpu_pct')} % of a core, "
             f"{col('steady_master', 'rss_mb')} MB. A `sleep` on all {agents} agents spanned the kill: "
             f"targets failed {col('targets_failed')}, succeeded {col('targets_succeeded')}; agents declared offline "
             f"during a run {col('offline_events')}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=60.0, help="the script's sleep, spanning the restart")
    parser.add_argument("--out", default=str(HERE / "storm.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    parser.add_argument("--keep", help="keep the runs' state and logs in this directory")
    args = parser.parse_args()
    runs = []
    for k in range(args.runs):
        log(f"run {k + 1}/{args.runs}")
        if args.keep:
            path = Path(args.keep) / f"run{k + 1}"
            path.mkdir(parents=True, exist_ok=True)
            runs.append(one_run(path, args.agents, args.sleep))
            continue
        with tempfile.TemporaryDirectory(prefix="mschedule-storm-") as tmp:
            runs.append(one_run(Path(tmp), args.agents, args.sleep))
    publish(runs, args.out, report(runs), (BEGIN, END), args.write)
    return 0 if all(r["targets_failed"] == 0 and r["restart_registered_s"] is not None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
