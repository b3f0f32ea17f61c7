"""The master at fleet sizes up to 10,000 agents (``make bench-scale``; ``BENCH_ARGS="--runs 1"``).

One run measures, on this machine:

1. **Steady state against fleet size.** A master with production settings (heartbeat base 3 s,
   ``--max-heartbeat-rate 500``, ``--agent-timeout 10``) and a simulated fleet (bench/fleet.py, the agents'
   protocol without shells) grown to each of ``--sizes`` (1,000 / 2,000 / 5,000 / 10,000). At each size: seconds
   until the new agents are online, then (once every agent has been told the stretched interval) the master's
   CPU and RSS over at least two heartbeat intervals, then ``GET /task/targets`` (the whole fleet) 50 times.
2. **One task on the whole simulated fleet**: ``true`` with ``parallel`` = every agent, until every target ends.
3. **Master kill -9 and restart under the whole simulated fleet** while ``sleep 60`` runs on every agent:
   seconds until every agent has registered with the new master process (counted by the agents), admin
   endpoint latency (a ``get_tasks`` call every 0.2 s, 5 s: unanswered) from the moment the restarted master
   listens, and how the task ends (every target must succeed).
4. **Real agents** (``app.py --instances 100``, production flags) on a fresh stack: 3,000 started at once,
   seconds until all are online while ``GET /health`` is called every 0.5 s (it pings the master through its
   agents' endpoint); then with 1,000 of them left, ``true`` on all 1,000 (three times).

``--runs`` repeats it all (default 2); the report gives the median and the range. Results go to
``bench/scale.json``, the section of ``bench/results.md`` between its markers (``--write``) and a plot of master
CPU and RSS against agents in ``bench/scale.png`` (drawn in bench/.venv-ansible, which has matplotlib).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import FleetHandle, start_fleet, usage  # noqa: E402
from bench.report import percentile, spread, write_section  # noqa: E402
from bench.run import ANSIBLE_VENV, cpu_seconds, rss_mb, timed_task, wait_for  # noqa: E402
from bench.storm import AdminProbe  # noqa: E402
from mschedule.master.liveness import HeartbeatPolicy  # noqa: E402
from mschedule.utils.defaults import CONNECT_JITTER, DEFAULT_HEARTBEAT_INTERVAL  # noqa: E402
from tests.integration.harness import Stack, wait_until  # noqa: E402

SIZES = (1000, 2000, 5000, 10000)
POLICY = HeartbeatPolicy(base=DEFAULT_HEARTBEAT_INTERVAL)
"""The rule the benchmark's master applies: production defaults."""
AGENT_TIMEOUT = 10.0
TARGETS_CALLS = 50
RESTART_SLEEP = 60
REAL_PER_PROCESS = 100
REAL_FLAGS = ("--max-backoff", "5", "--connect-jitter", str(CONNECT_JITTER))


def say(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def new_master(stack: Stack):
    return stack.master(agent_timeout=AGENT_TIMEOUT, heartbeat_interval=DEFAULT_HEARTBEAT_INTERVAL)


def targets_latency(stack: Stack, calls: int) -> dict:
    took = []
    for _ in range(calls):
        t0 = time.perf_counter()
        status, body = stack.api.get("/task/targets", timeout=30)
        took.append(time.perf_counter() - t0)
        assert status == 200, body
    return {"calls": calls, "agents": len(body), "p50_ms": round(1000 * statistics.median(took), 1),
            "p99_ms": round(1000 * percentile(took, 0.99), 1), "max_ms": round(1000 * max(took), 1)}


def finish(stack: Stack, task_id: str, limit: float) -> dict:
    """The task once it has ended with no target running (or as it stands after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        status, done = stack.api.post("/result", {"task_id": task_id, "wait": 30, "output_limit": 0}, timeout=60)
        assert status == 200, done
        if (done["finished"] and done["counts"]["RUNNING"] == 0) or time.monotonic() > deadline:
            return done


def boots(fleets: list[FleetHandle]) -> dict[str, int]:
    """Agents registered with each master process, as the fleet processes counted them last (every 1 s)."""
    total: dict[str, int] = {}
    for fleet in fleets:
        for key, value in fleet.status().items():
            if key.startswith("boot:"):
                total[key[5:]] = total.get(key[5:], 0) + value
    return total


def simulated(tmp: Path, sizes: list[int], window: float) -> dict:
    stack = Stack(tmp)
    probe = None
    try:
        master = new_master(stack)
        web = stack.web()
        fleets: list[FleetHandle] = []
        ids: list[str] = []
        steps = []
        for n in sizes:
            t0 = time.monotonic()
            fleet = start_fleet(stack, n - len(ids), interval=DEFAULT_HEARTBEAT_INTERVAL, jitter=CONNECT_JITTER,
                                wait=False)
            fleets.append(fleet)
            ids += fleet.ids
            want = set(ids)
            online_s = wait_for(lambda want=want: want <= set(stack.online_agents()), 120 + n / 20, 1.0)
            interval = POLICY.fleet_interval(n)
            time.sleep(max(10.0, 1.5 * interval))  # every agent has been told the interval for n by now
            span = max(window, 2 * interval)
            use = usage({"master": [master.pid], "web": [web.pid],
                         "fleet": [p for f in fleets for p in f.pids]}, span)
            lat = targets_latency(stack, TARGETS_CALLS)
            steps.append({"agents": n, "online_s": online_s, "interval_s": round(interval, 2), "window_s": span,
                          **use, "targets": lat})
            say(f"{n} agents: online after {online_s} s, heartbeat {interval:g} s, {use}, /task/targets {lat}")
        n = len(ids)
        t0 = time.monotonic()
        done = finish(stack, stack.api.submit("true", ids, parallel=n), 600)
        fanout = {"agents": n, "seconds": round(time.monotonic() - t0, 2), "state": done["state"],
                  "counts": done["counts"]}
        say(f"true on all {n}: {fanout}")

        probe = AdminProbe(stack)
        task = stack.api.submit(f"sleep {RESTART_SLEEP}", ids, parallel=n, timeout=RESTART_SLEEP + 600)
        dispatched = wait_for(lambda: stack.api.get(f"/task/{task}?output_limit=0", timeout=30)[1]["counts"]
                              ["RUNNING"] >= n, 120, 1.0)
        old = set(boots(fleets))
        say(f"sleep {RESTART_SLEEP} running on all {n} after {dispatched} s: kill -9 the master, restart it")
        master.kill9()
        t_kill = time.monotonic()
        master = new_master(stack)
        t_listen, c_listen = time.monotonic(), cpu_seconds(master.pid)
        back = wait_for(lambda: sum(v for k, v in boots(fleets).items() if k not in old) >= n, 300, 0.5)
        online = wait_for(lambda: set(ids) <= set(stack.online_agents()), 60, 1.0)
        t_end = max(time.monotonic(), t_listen + 30)
        time.sleep(max(0.0, t_end - time.monotonic()))
        admin = probe.between(t_listen, t_end)
        restart_use = {"cpu_pct": round(100 * (cpu_seconds(master.pid) - c_listen) / (t_end - t_listen), 1),
                       "rss_mb": round(rss_mb(master.pid), 1)}
        ended = finish(stack, task, RESTART_SLEEP + 300)
        restart = {"agents": n, "listening_s": round(t_listen - t_kill, 1), "registered_s": back,
                   "online_after_s": online, "admin": admin, "master": restart_use, "state": ended["state"],
                   "failed": ended["counts"].get("FAILED", 0), "succeeded": ended["counts"].get("SUCCEED", 0)}
        say(f"restart: {restart}")
        for fleet in fleets:
            fleet.stop()
        return {"steps": steps, "fanout": fanout, "restart": restart}
    finally:
        if probe is not None:
            probe.stop()
        stack.close()


class WebProbe:
    """``GET /health`` every 0.5 s from a thread: each call's latency and status (5 s: no answer)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            t0 = time.perf_counter()
            try:
                status, _ = self.stack.api.get("/health", timeout=5)
            except OSError:
                status = 0
            self.samples.append((time.perf_counter() - t0, status))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        took = [s for s, _ in self.samples]
        return {"calls": len(took), "p50_ms": round(1000 * statistics.median(took), 1),
                "p99_ms": round(1000 * percentile(took, 0.99), 1), "max_ms": round(1000 * max(took), 1),
                "not_200": sum(1 for _, status in self.samples if status != 200)}


def real(tmp: Path, online_n: int, fanout_n: int, repeats: int) -> dict:
    stack = Stack(tmp)
    probe = None
    try:
        master = new_master(stack)
        stack.web()
        probe = WebProbe(stack)
        procs = []
        c0 = cpu_seconds(master.pid)
        t0 = time.monotonic()
        for start in range(0, online_n, REAL_PER_PROCESS):
            procs.append((stack.agents(min(REAL_PER_PROCESS, online_n - start), state_dir=str(tmp / f"real{start}"),
                                       wait=False, interval=DEFAULT_HEARTBEAT_INTERVAL, extra=REAL_FLAGS), start))
        online_s = wait_for(lambda: len(stack.online_agents()) >= online_n, 300, 1.0)
        time.sleep(10)
        cold_cpu = round(100 * (cpu_seconds(master.pid) - c0) / (time.monotonic() - t0), 1)
        web = probe.stop()
        probe = None
        out = {"agents": online_n, "online_s": online_s, "web": web,
               "master_start": {"cpu_pct": cold_cpu, "rss_mb": round(rss_mb(master.pid), 1)}}
        say(f"{online_n} real agents online after {online_s} s; GET /health {web}")
        keep = fanout_n // REAL_PER_PROCESS
        for proc, _ in procs[keep:]:
            proc.stop()
        wait_until(lambda: len(stack.online_agents()) <= fanout_n, 60, interval=1.0, what="the other agents gone")
        ids = sorted(stack.online_agents())[:fanout_n]
        runs = []
        for _ in range(repeats):
            seconds, body = timed_task(stack, ids, parallel=len(ids))
            assert body["state"] == "SUCCEED" and body["counts"]["SUCCEED"] == len(ids), body["counts"]
            runs.append(round(seconds, 2))
        out["fanout"] = {"agents": len(ids), "runs": runs, "seconds": statistics.median(runs)}
        say(f"true on {len(ids)} real agents: {runs}")
        return out
    finally:
        if probe is not None:
            probe.stop()
        stack.close()


BEGIN, END = "<!-- scale: written by bench/scale.py -->", "<!-- end scale -->"


def report(runs: list[dict], machine: str) -> str:
    def col(get) -> str:
        values = []
        for r in runs:
            try:
                values.append(get(r))
            except (KeyError, IndexError, TypeError):
                values.append(None)
        return spread(values)

    sizes = [s["agents"] for s in runs[0]["sim"]["steps"]]
    n = sizes[-1]
    lines = [f"## Scale: the master from {sizes[0]:,} to {n:,} agents", "",
             f"`make bench-scale` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(runs)} runs; median "
             f"and range). {machine}. Master with production settings (heartbeat base 3 s, "
             "`--max-heartbeat-rate 500`, `--agent-timeout 10`); simulated agents (bench/fleet.py) for the master "
             "alone, real agents (`app.py --instances 100`) below; everything shares this machine.", "",
             "Steady state, the simulated fleet grown step by step (CPU over at least two heartbeat intervals):", "",
             "| agents | online after (s) | heartbeat (s) | master CPU % of a core | master RSS MB | "
             "GET /task/targets p50 ms | p99 ms | fleet CPU % |", "|---|---|---|---|---|---|---|---|"]
    for k, size in enumerate(sizes):
        def step(key: str, sub: str | None = None, k: int = k):
            return col(lambda r: r["sim"]["steps"][k][key][sub] if sub else r["sim"]["steps"][k][key])
        lines.append(f"| {size:,} | {step('online_s')} | {step('interval_s')} | {step('master', 'cpu_pct')} | "
                     f"{step('master', 'rss_mb')} | {step('targets', 'p50_ms')} | {step('targets', 'p99_ms')} | "
                     f"{step('fleet', 'cpu_pct')} |")
    restart = lambda key, sub=None: col(lambda r: r["sim"]["restart"][key][sub] if sub  # noqa: E731
                                        else r["sim"]["restart"][key])
    lines += ["", "![master CPU and RSS against agents](scale.png)", "",
              "| target | measured | goal |", "|---|---|---|",
              f"| {n:,} simulated agents idle: master CPU % of a core | "
              f"{col(lambda r: r['sim']['steps'][-1]['master']['cpu_pct'])} | < 40 |",
              f"| same: master RSS MB | {col(lambda r: r['sim']['steps'][-1]['master']['rss_mb'])} | < 1,536 |",
              f"| same: `GET /task/targets` p99 ms ({TARGETS_CALLS} calls) | "
              f"{col(lambda r: r['sim']['steps'][-1]['targets']['p99_ms'])} | < 1,000 |",
              f"| `true` on all {n:,} simulated agents, `parallel: {n}` (s) | "
              f"{col(lambda r: r['sim']['fanout']['seconds'])} | < 15 |",
              f"| master kill -9 under {n:,}: seconds until it listens again | {restart('listening_s')} | |",
              f"| same: every agent registered with the new master (s, from when it listens) | "
              f"{restart('registered_s')} | < 120 |",
              f"| same: targets of `sleep {RESTART_SLEEP}` failed / succeeded | {restart('failed')} / "
              f"{restart('succeeded')} | 0 failed |",
              f"| same: admin `get_tasks` every 0.2 s over the first 30 s it listens: max ms | "
              f"{restart('admin', 'max_ms')} | < 2,000 |",
              f"| same: admin p99 ms / calls unanswered (5 s) | {restart('admin', 'p99_ms')} / "
              f"{restart('admin', 'unanswered')} | |",
              f"| same: master CPU % of a core / RSS MB over those 30 s | {restart('master', 'cpu_pct')} / "
              f"{restart('master', 'rss_mb')} | |",
              f"| {runs[0]['real']['agents']:,} real agents started at once: all online (s) | "
              f"{col(lambda r: r['real']['online_s'])} | < 300 |",
              f"| same: `GET /health` every 0.5 s meanwhile, max ms / not 200 | "
              f"{col(lambda r: r['real']['web']['max_ms'])} / {col(lambda r: r['real']['web']['not_200'])} | "
              "answers throughout |",
              f"| `true` on {runs[0]['real']['fanout']['agents']:,} real agents (s, median of 3 per run) | "
              f"{col(lambda r: r['real']['fanout']['seconds'])} | < 2.5 |"]
    return "\n".join(lines)


def plot(path_json: Path, path_png: Path) -> None:
    python = ANSIBLE_VENV / "bin" / "python"
    if python.exists():
        subprocess.run([str(python), str(HERE / "plot.py"), "scale", str(path_json), str(path_png)], check=False)
    else:
        say(f"no {python} (make bench installs it): no plot")


def main() -> int:
    from bench.run import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="simulated fleet sizes, ascending")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--window", type=float, default=30.0, help="least seconds over which CPU is measured")
    parser.add_argument("--real", type=int, default=3000, help="real agents started at once (0 skips)")
    parser.add_argument("--real-fanout", type=int, default=1000, help="real agents that run `true`")
    parser.add_argument("--out", default=str(HERE / "scale.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    parser.add_argument("--keep", help="keep the runs' state and logs in this directory")
    parser.add_argument("--report", action="store_true", help="only report what --out holds, measure nothing")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    out = Path(args.out)
    runs = json.loads(out.read_text()) if args.report else []
    for k in range(0 if args.report else args.runs):
        say(f"run {k + 1}/{args.runs}")
        with tempfile.TemporaryDirectory(prefix="mschedule-scale-") as tmp:
            base = Path(args.keep) / f"run{k + 1}" if args.keep else Path(tmp)
            (base / "sim").mkdir(parents=True, exist_ok=True)
            run = {"sim": simulated(base / "sim", sizes, args.window)}
            if args.real:
                (base / "real").mkdir(parents=True, exist_ok=True)
                run["real"] = real(base / "real", args.real, args.real_fanout, 3)
            runs.append(run)
    out.write_text(json.dumps(runs, indent=2) + "\n")
    complete = all("real" in r for r in runs)
    text = report(runs, machine()) if complete else json.dumps(runs, indent=2)
    if args.write and complete:
        write_section(BEGIN, END, text)
        plot(out, HERE / "scale.png")
    print(text)
    ok = all(r["sim"]["restart"]["failed"] == 0 and r["sim"]["fanout"]["state"] == "SUCCEED" for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
