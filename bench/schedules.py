"""Schedules and webhooks under load (``make bench-schedules``; ``BENCH_ARGS="--runs 1"``).

Three measurements, each ``--runs`` times:

- ``loop``: the schedule loop's cost in the master process, in-process: one wake of ``fire_due`` with
  10,000 idle schedules (nothing due: the cost every wake pays).
- ``ticks``: a real master, web tier and 100 real agents; 100 schedules ``* * * * *`` (each on its own agent,
  ``overlap: allow``) on a schedule clock 20 times faster than the real one (``--schedule-clock``: a minute
  in 3 s), for ``--ticks`` minutes of schedule time. Counts every tick fired exactly once (tasks per
  schedule and tick), how late each task was created after its tick (real seconds), and the master's CPU.
- ``webhooks``: the same stack; 300 tasks end at once, each with a webhook to a loopback receiver; half the
  tasks' URLs go to a receiver that answers after 5 s. How long after its task ended each delivery to the
  fast receiver arrived, and the latency of ``GET /task/targets`` meanwhile.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import usage  # noqa: E402
from bench.report import percentile, publish, spread  # noqa: E402
from tests.integration.harness import Stack, wait_until  # noqa: E402
from tests.integration.receiver import Receiver  # noqa: E402

BEGIN, END = "<!-- bench/schedules.py: begin -->", "<!-- bench/schedules.py: end -->"
SPEED = 20
AGENTS = 100


def say(msg: str) -> None:
    print(f"[schedules {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loop_cost(schedules: int = 10000, wakes: int = 20) -> float:
    """Median milliseconds of one fire_due with ``schedules`` idle schedules (in this process)."""
    from mschedule.master.jobs import Jobs
    from mschedule.master.schedules import Schedules
    from mschedule.master.storage import Storage

    storage = Storage()
    jobs = Jobs(storage, 1 << 20)
    jobs.save("j", {"script": "true", "targets": ["a"]})
    loop = Schedules(storage, jobs, submit=None, check=lambda spec: spec)
    for _ in range(schedules):
        loop.create({"job": "j", "cron": "*/5 * * * *"})
    loop.fire_due()  # computes and caches each next tick once
    samples = []
    for _ in range(wakes):
        start = time.perf_counter()
        loop.fire_due()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _stack(tmp: Path, *extra: str) -> tuple[Stack, list[str]]:
    stack = Stack(tmp)
    stack.master(*extra, "--webhook-retry-base", "1", agent_timeout=10, heartbeat_interval=3)
    stack.web()
    stack.agents(AGENTS, interval=3)
    return stack, sorted(stack.online_agents())


def ticks(tmp: Path, minutes: int) -> dict:
    start = time.time()
    stack, ids = _stack(tmp, "--schedule-clock", f"{start:.3f}:{SPEED}")
    api = stack.api
    try:
        sids = []
        for i, agent in enumerate(ids):
            assert api.post(f"/job/j{i}", {"script": "true", "targets": [agent]})[0] == 201
            status, made = api.post("/schedules", {"job": f"j{i}", "cron": "* * * * *", "overlap": "allow"})
            assert status == 201, made
            sids.append(made["schedule_id"])
        first = api.get(f"/schedule/{sids[-1]}")[1]["next_run"]
        last = first + 60 * (minutes - 1)
        real = lambda tick: start + (tick - start) / SPEED  # noqa: E731 - the schedule clock's inverse
        time.sleep(max(0.0, real(first) - time.time()))
        master = next(p for p in stack.procs if p.name == "master")
        cpu = usage({"master": [master.pid]}, real(last) - time.time() + 0.5)["master"]
        time.sleep(1.5)
        late, counts = [], []
        for sid in sids:
            fired = api.get(f"/tasks?schedule={sid}&limit=1000")[1]
            in_window = [t for t in fired if first <= t["schedule_tick"] <= last]
            counts.append(len(in_window) == minutes and len({t["schedule_tick"] for t in in_window}) == minutes)
            late += [t["created"] - real(t["schedule_tick"]) for t in in_window]
        return {"schedules": len(sids), "minutes": minutes, "exactly_once": all(counts),
                "late_p50_ms": statistics.median(late) * 1000, "late_p99_ms": percentile(late, 0.99) * 1000,
                "late_max_ms": max(late) * 1000, "master_cpu_pct": cpu["cpu_pct"]}
    finally:
        stack.close()


def webhooks(tmp: Path, tasks: int = 300) -> dict:
    stack, ids = _stack(tmp)
    fast, slow = Receiver(), Receiver(delay=5)
    api = stack.api
    try:
        gate = tmp / "gate"
        submitted = []
        for i in range(tasks):
            url = (fast if i % 2 == 0 else slow).url + f"?task={i}"
            submitted.append(api.submit(f"while [ ! -e {gate} ]; do sleep 0.05; done", [ids[i % len(ids)]],
                                        notify=[{"url": url}]))
        wait_until(lambda: sum(1 for a in api.agents().values() if a["busy"]) == len(ids), 30)
        gate.touch()  # every running script ends within 50 ms; the rest follow at once
        probes: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                api.get("/task/targets")
                probes.append((time.monotonic() - t0) * 1000)
                time.sleep(0.1)

        prober = threading.Thread(target=probe)
        opened = time.monotonic()
        prober.start()
        wait_until(lambda: len(fast.calls) >= tasks // 2, 120, what="fast deliveries")
        time.sleep(max(0.0, 10 - (time.monotonic() - opened)))  # and on while the slow receiver's are in flight
        stop.set()
        prober.join()
        delays = []
        for call in fast.calls:
            body = json.loads(call["body"])
            delays.append(call["at"] - body["finished"])
        return {"tasks": tasks, "fast_p50_ms": statistics.median(delays) * 1000,
                "fast_p99_ms": percentile(delays, 0.99) * 1000, "fast_max_ms": max(delays) * 1000,
                "slow_received": len(slow.calls), "targets_p99_ms": percentile(probes, 0.99),
                "targets_max_ms": max(probes)}
    finally:
        fast.close()
        slow.close()
        stack.close()


def report(runs: list[dict]) -> str:
    def col(section: str, key: str) -> str:
        return spread([r[section][key] for r in runs])

    t, w = runs[0]["ticks"], runs[0]["webhooks"]
    once = "yes" if all(r["ticks"]["exactly_once"] for r in runs) else "NO"
    return "\n".join([
        f"## Schedules and webhooks ({len(runs)} runs, median (min-max); `make bench-schedules`)",
        "",
        "| what | measured |",
        "|---|---|",
        f"| one wake of the schedule loop, 10,000 idle schedules | {col('loop', 'ms')} ms |",
        f"| {t['schedules']} schedules `* * * * *` on {AGENTS} real agents, {t['minutes']} minutes of schedule time "
        f"(clock x{SPEED}): every tick fired exactly once | {once} |",
        f"| same: task created after its tick, p50 / p99 / max | {col('ticks', 'late_p50_ms')} / "
        f"{col('ticks', 'late_p99_ms')} / {col('ticks', 'late_max_ms')} ms |",
        f"| same: master CPU (100 ticks every 3 s real) | {col('ticks', 'master_cpu_pct')} % of a core |",
        f"| {w['tasks']} tasks ending at once, each with a webhook, half to a receiver that answers after 5 s: "
        f"delivery to the fast receiver after its task ended, p50 / p99 / max | {col('webhooks', 'fast_p50_ms')} / "
        f"{col('webhooks', 'fast_p99_ms')} / {col('webhooks', 'fast_max_ms')} ms |",
        f"| same: `GET /task/targets` every 0.1 s for the first 10 s, p99 / max | "
        f"{col('webhooks', 'targets_p99_ms')} / {col('webhooks', 'targets_max_ms')} ms |",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--ticks", type=int, default=10, help="minutes of schedule time")
    parser.add_argument("--out", default=str(HERE / "schedules.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    args = parser.parse_args()
    runs = []
    for k in range(args.runs):
        say(f"run {k + 1}/{args.runs}: loop")
        run = {"loop": {"ms": loop_cost()}}
        say(f"run {k + 1}/{args.runs}: ticks")
        with tempfile.TemporaryDirectory(prefix="mschedule-schedules-") as tmp:
            run["ticks"] = ticks(Path(tmp), args.ticks)
        say(f"run {k + 1}/{args.runs}: webhooks")
        with tempfile.TemporaryDirectory(prefix="mschedule-schedules-") as tmp:
            run["webhooks"] = webhooks(Path(tmp))
        runs.append(run)
        say(json.dumps(run))
    publish(runs, args.out, report(runs), (BEGIN, END), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
