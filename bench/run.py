"""mschedule benchmark: latency, fan-out, throughput and idle capacity, side by side with Ansible.

Run with ``make bench`` (it prepares bench/.venv-ansible with ansible-core and matplotlib). Everything runs
on loopback on this machine; results go to bench/results.md, bench/results.json and bench/fanout.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from tests.integration.harness import Proc, Stack, wait_until  # noqa: E402

ANSIBLE_VENV = HERE / ".venv-ansible"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- process measurement ---------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(procs: dict[str, Proc], seconds: float) -> dict[str, dict[str, float]]:
    """CPU % of one core and RSS of each process over ``seconds``."""
    before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {name: {"cpu_pct": 100 * (cpu_seconds(p.pid) - before[name]) / elapsed, "rss_mb": rss_mb(p.pid)}
            for name, p in procs.items()}


def wait_for(predicate: Callable[[], Any], limit: float, step: float = 0.5) -> float | None:
    """Seconds until ``predicate()`` holds, or None after ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if predicate():
                return round(time.monotonic() - t0, 1)
        except Exception:  # the web tier answers 503 while the master restarts
            pass
        time.sleep(step)
    return None


# ---- mschedule stacks ------------------------------------------------------------------------
def start_fleet(stack: Stack, agents: int, per_process: int, interval: float | None = None) -> list[str]:
    """Start ``agents`` agents in processes of ``per_process`` instances; ids interleaved across processes,
    so that the first N targets of a task are spread over the processes like hosts would be."""
    groups = []
    for start in range(0, agents, per_process):
        count = min(per_process, agents - start)
        state = stack.tmp / f"fleet{start}"
        stack.agents(count, state_dir=str(state), wait=False, interval=interval)
        groups.append((state, count))
    wait_until(lambda: len(stack.online_agents()) >= agents, 60 + agents / 20, interval=0.5,
               what=f"{agents} agents online")
    per_group = []
    for state, count in groups:
        if count == 1:
            per_group.append([(state / "agent_id").read_text().strip()])
        else:
            per_group.append([(state / str(k) / "agent_id").read_text().strip() for k in range(count)])
    ids = []
    for k in range(max(len(g) for g in per_group)):
        ids.extend(g[k] for g in per_group if k < len(g))
    return ids


def timed_task(stack: Stack, targets: list[str], script: str = "true", **kw) -> tuple[float, dict]:
    t0 = time.perf_counter()
    task_id = stack.api.submit(script, targets, **kw)
    status, body = stack.api.post("/result", {"task_id": task_id, "wait": 60}, timeout=90)
    elapsed = time.perf_counter() - t0
    assert status == 200, body
    return elapsed, body


def bench_latency(stack: Stack, agent: str, rounds: int) -> dict:
    samples = []
    for _ in range(5):
        timed_task(stack, [agent])  # warm-up
    for _ in range(rounds):
        elapsed, body = timed_task(stack, [agent])
        assert body["state"] == "SUCCEED", body
        samples.append(elapsed * 1000)
    samples.sort()
    return {"rounds": rounds, "p50_ms": statistics.median(samples),
            "p95_ms": samples[max(0, int(round(0.95 * len(samples))) - 1)], "max_ms": samples[-1]}


def bench_fanout(stack: Stack, ids: list[str], n: int, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        elapsed, body = timed_task(stack, ids[:n], parallel=n)
        assert body["state"] == "SUCCEED" and body["counts"]["SUCCEED"] == n, body["counts"]
        runs.append(elapsed)
    return {"n": n, "seconds": statistics.median(runs), "runs": runs}


def bench_throughput(stack: Stack, ids: list[str], tasks: int) -> dict:
    targets = [ids[i % len(ids)] for i in range(tasks)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        task_ids = list(pool.map(lambda a: stack.api.submit("true", [a]), targets))
        submitted = time.perf_counter() - t0
        states = list(pool.map(lambda t: stack.api.post("/result", {"task_id": t, "wait": 60}, timeout=90)[1]["state"],
                               task_ids))
    elapsed = time.perf_counter() - t0
    assert states.count("SUCCEED") == tasks, {s: states.count(s) for s in set(states)}
    return {"tasks": tasks, "agents": len(ids), "seconds": elapsed, "submit_seconds": submitted,
            "tasks_per_s": tasks / elapsed}


def bench_capacity(tmp: Path, agents: int, per_process: int, window: float) -> dict:
    (tmp / "capacity").mkdir()
    stack = Stack(tmp / "capacity")
    try:
        master = stack.master(agent_timeout=10, heartbeat_interval=3.0)
        web = stack.web()
        start_fleet(stack, agents, per_process, interval=3.0)
        single = stack.agents(1, interval=3.0)
        time.sleep(10)  # let registration settle: measure the steady state
        usage = measure({"master": master, "web": web, "agent": single}, window)
        online = len(stack.online_agents())
        return {"agents": agents + 1, "online": online, "window_s": window, **usage}
    finally:
        stack.close()


# ---- Ansible ---------------------------------------------------------------------------------
def ansible_version() -> str:
    out = subprocess.run([str(ANSIBLE_VENV / "bin" / "ansible"), "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.returncode == 0 else "unavailable"


def bench_ansible(work: Path, n: int, module: str, repeats: int) -> dict:
    inventory = work / f"inventory-{n}"
    python = ANSIBLE_VENV / "bin" / "python"
    inventory.write_text("".join(f"h{i} ansible_connection=local ansible_python_interpreter={python}\n"
                                 for i in range(n)))
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
           "ANSIBLE_REMOTE_TMP": str(work / "rtmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "minimal",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"}
    cmd = [str(ANSIBLE_VENV / "bin" / "ansible"), "all", "-i", str(inventory), "-m", module, "-a", "true",
           "-f", str(n)]
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work, timeout=600)
        runs.append(time.perf_counter() - t0)
        ok = proc.stdout.count("| CHANGED") + proc.stdout.count("| SUCCESS")
        if proc.returncode != 0 or ok != n:
            raise RuntimeError(f"ansible -m {module} -f {n} failed ({ok}/{n} ok): {proc.stdout[-800:]}"
                               f"{proc.stderr[-800:]}")
    return {"n": n, "module": module, "seconds": statistics.median(runs), "runs": runs}


# ---- report ----------------------------------------------------------------------------------
def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.1f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def report(r: dict) -> str:
    lines = [f"# mschedule benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: {r['machine']}", f"Peer: {r.get('ansible_version', 'not run')}", "",
             "All numbers from one run of `make bench` on this machine (loopback; agents as `--instances` "
             f"processes of {r['per_process']} agents each; medians of {r['repeats']} runs where repeated).", ""]
    lat = r["latency"]
    lines += ["## Latency: submit -> result complete, one agent running `true`", "",
              "| rounds | p50 ms | p95 ms | max ms | target |", "|---|---|---|---|---|",
              f"| {lat['rounds']} | {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | {lat['max_ms']:.1f} | "
              "p50 < 30, p95 < 100 |", ""]
    lines += ["## Fan-out: one task on N agents running `true`, `parallel: N`", "",
              "| N | mschedule s | ansible -m command s | ansible -m raw s | command / mschedule | raw / mschedule |",
              "|---|---|---|---|---|---|"]
    ans = {(a["n"], a["module"]): a["seconds"] for a in r.get("ansible", [])}
    for f in r["fanout"]:
        n, ms = f["n"], f["seconds"]
        cmd, raw = ans.get((n, "command")), ans.get((n, "raw"))
        lines.append(f"| {n} | {ms:.3f} | {_fmt(cmd)} | {_fmt(raw)} | {_ratio(cmd, ms)} | {_ratio(raw, ms)} |")
    lines += ["", "Targets: N=100 < 0.5 s, N=1000 < 5 s; at N=100 at least 30x faster than `-m command` "
              "and 4x faster than `-m raw`.", ""]
    tp = r["throughput"]
    lines += ["## Throughput: one-target tasks spread over agents, 8 concurrent HTTP clients", "",
              "| tasks | agents | seconds | tasks/s | target |", "|---|---|---|---|---|",
              f"| {tp['tasks']} | {tp['agents']} | {tp['seconds']:.2f} | {tp['tasks_per_s']:.0f} | >= 100 |", ""]
    cap = r.get("capacity")
    if cap:
        lines += [f"## Capacity: {cap['agents']} idle agents heartbeating every 3 s ({cap['online']} online), "
                  f"measured over {cap['window_s']:.0f} s", "",
                  "| process | CPU % of one core | RSS MB | target |", "|---|---|---|---|",
                  f"| master | {cap['master']['cpu_pct']:.1f} | {cap['master']['rss_mb']:.0f} | < 25 %, < 300 MB |",
                  f"| web tier (idle) | {cap['web']['cpu_pct']:.1f} | {cap['web']['rss_mb']:.0f} | |",
                  f"| one idle agent (own process) | {cap['agent']['cpu_pct']:.2f} | {cap['agent']['rss_mb']:.0f} "
                  "| < 40 MB |", ""]
    return "\n".join(lines)


BEGIN, END = "<!-- measured: written by bench/run.py -->", "<!-- end measured -->"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ratio(peer: float | None, ours: float) -> str:
    return "-" if peer is None else f"{peer / ours:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", default="10,100,1000", help="comma separated N")
    parser.add_argument("--per-process", type=int, default=50, help="agent instances per agent process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-rounds", type=int, default=50)
    parser.add_argument("--throughput-tasks", type=int, default=500)
    parser.add_argument("--capacity", type=int, default=2000, help="idle agents; 0 skips")
    parser.add_argument("--capacity-window", type=float, default=30)
    parser.add_argument("--ansible", default="10,100", help="N for the Ansible peer; empty skips")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    fanout = [int(x) for x in args.fanout.split(",") if x]
    results: dict = {"machine": machine(), "per_process": args.per_process, "repeats": args.repeats}
    tmp = Path(tempfile.mkdtemp(prefix="mschedule-bench-"))
    try:
        stack = Stack(tmp)
        try:
            stack.master(agent_timeout=10, heartbeat_interval=3.0)  # the default: agents heartbeat every 3 s
            stack.web()
            ids = start_fleet(stack, max(fanout + [100]), args.per_process, interval=3.0)
            log(f"{len(ids)} agents online")
            results["latency"] = bench_latency(stack, ids[0], args.latency_rounds)
            log(f"latency {results['latency']}")
            results["fanout"] = [bench_fanout(stack, ids, n, args.repeats) for n in fanout]
            log(f"fanout {[(f['n'], round(f['seconds'], 3)) for f in results['fanout']]}")
            results["throughput"] = bench_throughput(stack, ids[:100], args.throughput_tasks)
            log(f"throughput {results['throughput']['tasks_per_s']:.0f} tasks/s")
        finally:
            stack.close()
        if args.capacity:
            results["capacity"] = bench_capacity(tmp, args.capacity, args.per_process, args.capacity_window)
            log(f"capacity {results['capacity']}")
        if args.ansible and (ANSIBLE_VENV / "bin" / "ansible").exists():
            results["ansible_version"] = ansible_version()
            work = tmp / "ansible"
            work.mkdir()
            results["ansible"] = [bench_ansible(work, int(n), module, args.repeats)
                                  for n in args.ansible.split(",") for module in ("command", "raw")]
            log(f"ansible {[(a['n'], a['module'], round(a['seconds'], 2)) for a in results['ansible']]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results)
    write_section(BEGIN, END, text, out / "results.md", first=True)
    print(text)
    plot = ANSIBLE_VENV / "bin" / "python"
    if plot.exists():
        subprocess.run([str(plot), str(HERE / "plot.py"), str(out / "results.json"), str(out / "fanout.png")],
                       check=False)


if __name__ == "__main__":
    main()
