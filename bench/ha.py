"""PostgreSQL beside SQLite, and failover between two masters on PostgreSQL (``make bench-ha``).

Two parts, one run:

- ``backends``: one master on SQLite, then one on PostgreSQL (a throwaway cluster with fsync on: tests/pg.py), each
  with the same web tier and 100 real agents, measured with bench/run.py's own functions: latency (submit ->
  result of ``true`` on one agent), fan-out (one task on 100 agents, ``parallel: 100``, median of 3) and
  throughput (500 one-target tasks over 100 agents, 8 concurrent HTTP clients). The backends alternate,
  ``--runs`` times each, so that a change of the machine's load falls on both.
- ``failover``: two masters on one PostgreSQL database (each its own ports and state directory with a copy of the
  same keys, as docs/ha.md says and tests/integration/test_ha.py does), a web tier and agents that know both
  endpoints, all with the production timings (heartbeat every 3 s, offline after 10 s, agents' reconnect
  backoff up to 5 s). ``--failover-rounds`` times: kill -9 the leader, then seconds until (a) the standby
  listens, (b) ``GET /task/targets`` through the web tier answers 200, (c) a task on every agent, submitted
  right after (b), has succeeded everywhere; the killed master is started again and stands by before the next
  round. Then once a frozen leader: SIGSTOP until the standby serves, SIGCONT, and the old leader must exit
  with code 75 (it no longer leads): its session ends only after ``--leader-lease``, so that is the wait.

The raw runs go to bench/ha.json; ``--write`` puts the report into bench/results.md. ``--quick`` is a smoke run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
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

from bench.report import publish, spread  # noqa: E402
from bench.run import bench_fanout, bench_latency, bench_throughput, machine, start_fleet, timed_task  # noqa: E402
from tests.integration.harness import Proc, Stack, _port_open, free_port, wait_until  # noqa: E402
from tests.pg import Cluster, unavailable  # noqa: E402

BEGIN, END = "<!-- measured: written by bench/ha.py -->", "<!-- end measured ha -->"
PER_PROCESS = 50
#: the production timings (mschedule/utils/defaults.py): what an operator's fleet fails over with
HEARTBEAT, AGENT_TIMEOUT, BACKOFF, JITTER = 3.0, 10.0, 5.0, 2.0
#: no wait of the failover part lasts longer than this
LIMIT = 60.0


def say(msg: str) -> None:
    print(f"[ha {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# ---- part 1: the same measurements on each backend -------------------------------------------------------
def backend_run(tmp: Path, db: str | None, args: argparse.Namespace) -> dict:
    """One master (on ``db``, else its SQLite file), web tier and ``args.agents`` agents; bench/run.py's figures."""
    stack = Stack(tmp)
    try:
        stack.master(*(["--db", db] if db else []), agent_timeout=AGENT_TIMEOUT, heartbeat_interval=HEARTBEAT)
        stack.web()
        ids = start_fleet(stack, args.agents, PER_PROCESS, interval=HEARTBEAT)
        started = load()
        latency = bench_latency(stack, ids[0], args.latency_rounds)
        fanout = bench_fanout(stack, ids, args.fanout, 3)
        throughput = bench_throughput(stack, ids[:100], args.tasks)
        return {"latency": latency, "fanout": fanout, "throughput": throughput, "load_before": started,
                "load_after": load(), "master_errors": _errors(stack)}
    finally:
        stack.close()


# ---- part 2: failover --------------------------------------------------------------------------------------
class Masters:
    """The masters of one cluster on one database, each with its own ports and a state directory holding a copy
    of the cluster's keys; every start of one has its own log (``<name>.<k>.log``)."""

    def __init__(self, stack: Stack, db: str, lease: float, names: tuple[str, ...] = ("master1", "master2")) -> None:
        self.stack, self.db, self.lease = stack, db, lease
        self.ports = {name: (free_port(), free_port()) for name in names}
        self.procs: dict[str, Proc] = {}
        self.starts = 0

    def start(self, name: str) -> Proc:
        bind, admin = self.ports[name]
        state = self.stack.tmp / f"{name}-state"
        if not state.exists():
            shutil.copytree(self.stack.state / "keys", state / "keys")
        self.starts += 1
        proc = Proc(name, ["appserver.py", "--bind", f"tcp://127.0.0.1:{bind}",
                           "--admin-bind", f"tcp://127.0.0.1:{admin}", "--state-dir", str(state), "--db", self.db,
                           "--leader-lease", str(self.lease), "--agent-timeout", str(AGENT_TIMEOUT),
                           "--heartbeat-interval", str(HEARTBEAT), "--auto-accept"],
                    str(self.stack.tmp / f"{name}.{self.starts}.log"))
        self.stack.procs.append(proc)
        self.procs[name] = proc
        return proc

    def leads(self, name: str) -> bool:
        """It listens: only the leader does."""
        return _port_open(self.ports[name][0])

    def leader(self) -> str:
        return next(name for name in self.ports if self.leads(name))

    def other(self, name: str) -> str:
        return next(n for n in self.ports if n != name)

    def stands_by(self, name: str) -> bool:
        proc = self.procs[name]
        return "standing by" in proc.log() or not proc.alive()

    def endpoints(self, which: int) -> str:
        return ",".join(f"tcp://127.0.0.1:{ports[which]}" for ports in self.ports.values())


def _serves(stack: Stack) -> bool:
    try:
        return stack.api.get("/task/targets", timeout=5)[0] == 200
    except OSError:
        return False


def _until(predicate, t0: float, limit: float = LIMIT, step: float = 0.05) -> float | None:
    """Seconds from ``t0`` until ``predicate()`` holds, or None after ``limit`` seconds from now."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def _all_run(stack: Stack, agents: list[str], t0: float) -> tuple[float | None, dict]:
    """Seconds from ``t0`` until a task on every agent has succeeded everywhere (None: it did not), its counts."""
    try:
        _, body = timed_task(stack, agents, parallel=len(agents))
    except (AssertionError, OSError) as exc:
        return None, {"error": str(exc)[:300]}
    ok = body["state"] == "SUCCEED" and body["counts"]["SUCCEED"] == len(agents)
    return (time.monotonic() - t0 if ok else None), body["counts"]


def failover(tmp: Path, db: str, args: argparse.Namespace) -> dict:
    stack = Stack(tmp)
    masters = Masters(stack, db, args.lease)
    rounds: list[dict] = []
    frozen: dict = {}
    try:
        first = masters.start("master1")
        wait_until(lambda: masters.leads("master1") or not first.alive(), 30, what="the first master leading")
        assert first.alive(), first.log()
        second = masters.start("master2")
        wait_until(lambda: masters.stands_by("master2"), 30, what="the second master standing by")
        assert second.alive() and not masters.leads("master2"), second.log()
        stack.web(master=masters.endpoints(1))
        stack.agents(args.failover_agents, master=masters.endpoints(0), interval=HEARTBEAT,
                     extra=("--max-backoff", str(BACKOFF), "--connect-jitter", str(JITTER)))
        agents = sorted(stack.online_agents())
        assert len(agents) == args.failover_agents, agents
        assert _all_run(stack, agents, time.monotonic())[0] is not None, "a task on every agent before any kill"
        for k in range(args.failover_rounds):
            leader = masters.leader()
            standby = masters.other(leader)
            proc = masters.procs[leader]
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(10)
            listens = _until(lambda s=standby: masters.leads(s), t0)
            serves = _until(lambda: _serves(stack), t0)
            ran, counts = _all_run(stack, agents, t0)
            masters.start(leader)
            standing = _until(lambda name=leader: masters.stands_by(name), time.monotonic(), 30)
            rounds.append({"killed": leader, "listens_s": listens, "serves_s": serves, "all_ran_s": ran,
                           "counts": counts, "restarted_standing_by_s": standing,
                           "restarted_alive": masters.procs[leader].alive(), "load": load()})
            say(f"failover round {k + 1}/{args.failover_rounds}: {rounds[-1]}")
            time.sleep(2)  # the restarted standby settles; the agents' sessions with the new leader too
        frozen = freeze(stack, masters, agents)
        say(f"frozen leader: {frozen}")
        return {"agents": len(agents), "lease_s": args.lease, "rounds": rounds, "frozen": frozen,
                "master_errors": _errors(stack)}
    finally:
        for proc in masters.procs.values():  # a stopped master would not stop on SIGTERM
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)
        stack.close()


def freeze(stack: Stack, masters: Masters, agents: list[str]) -> dict:
    """SIGSTOP the leader until the standby serves, SIGCONT it: the times, and how the old leader ended."""
    leader = masters.leader()
    standby = masters.other(leader)
    old = masters.procs[leader]
    t0 = time.monotonic()
    os.kill(old.pid, signal.SIGSTOP)
    try:
        listens = _until(lambda: masters.leads(standby), t0)
        serves = _until(lambda: _serves(stack), t0)
    finally:
        os.kill(old.pid, signal.SIGCONT)
        resumed = time.monotonic()
    ended: list[float] = []

    def watch() -> None:  # the exit is timed while the task runs
        try:
            old.popen.wait(30)
        except subprocess.TimeoutExpired:
            return
        ended.append(time.monotonic() - resumed)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ran, counts = _all_run(stack, agents, t0)
    watcher.join(30)
    exited = ended[0] if ended else None
    return {"frozen": leader, "listens_s": listens, "serves_s": serves, "all_ran_s": ran, "counts": counts,
            "old_exit_code": old.popen.returncode, "old_exited_after_cont_s": exited,
            "old_says_no_longer_leads": "this master no longer leads" in old.log()}


def _errors(stack: Stack) -> list[str]:
    """The masters' log lines at ERROR or worse, and tracebacks (at most 40)."""
    lines = []
    for proc in stack.procs:
        if proc.name.startswith("master"):
            lines += [f"{Path(proc.log_path).name}: {line}" for line in proc.log().splitlines()
                      if any(word in line for word in ("ERROR", "CRITICAL", "Traceback"))]
    return lines[:40]


# ---- report ------------------------------------------------------------------------------------------------
def _stats(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return "n/a"
    text = f"{min(got):.1f} / {statistics.median(got):.1f} / {max(got):.1f}"
    return text + (f" ({missing} of {len(values)} did not)" if missing else "")


def report(result: dict) -> str:
    runs = result["backends"]
    lines = [f"## PostgreSQL beside SQLite, and failover (`make bench-ha`, {time.strftime('%Y-%m-%d', time.gmtime())})",
             "", f"Machine: {result['machine']}. Load average (1 min) {result['load_start']} at the start, "
             f"{result['load_end']} at the end; between {min(result['loads'])} and {max(result['loads'])} "
             "during the measurements.", ""]
    if max(result["loads"]) > 2.5:
        lines += ["The machine was busy beyond this benchmark (load above its 2 cores) during part of the run: "
                  "the absolute figures are pessimistic; the comparison holds as far as both backends saw the "
                  "same load (they alternate).", ""]
    by = {name: [r[name] for r in runs] for name in ("sqlite", "postgresql")}
    n = runs[0]["sqlite"]["fanout"]["n"]
    tasks, agents = runs[0]["sqlite"]["throughput"]["tasks"], runs[0]["sqlite"]["throughput"]["agents"]
    rounds = runs[0]["sqlite"]["latency"]["rounds"]
    lines += [f"One master, a web tier and {result['agents']} agents (processes of {PER_PROCESS}) on each backend; "
              f"PostgreSQL {result['pg_version']} on the same machine with fsync on. {len(runs)} runs per backend, "
              "alternating: median (min-max) over the runs.", "",
              f"| backend | latency p50 ms | p95 ms | max ms ({rounds} rounds) | fan-out N={n} s | "
              f"throughput tasks/s ({tasks} tasks, {agents} agents) |", "|---|---|---|---|---|---|"]
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        rs = by[name]
        lines.append(f"| {label} | {spread([r['latency']['p50_ms'] for r in rs])} | "
                     f"{spread([r['latency']['p95_ms'] for r in rs])} | "
                     f"{spread([r['latency']['max_ms'] for r in rs])} | "
                     f"{_spread3([r['fanout']['seconds'] for r in rs])} | "
                     f"{spread([r['throughput']['tasks_per_s'] for r in rs])} |")
    fo = result["failover"]
    rs = fo["rounds"]
    lines += ["", f"Failover: two masters on one PostgreSQL database (`--leader-lease {fo['lease_s']:g}`), a web "
              f"tier and {fo['agents']} agents knowing both endpoints, production timings (heartbeat every "
              f"{HEARTBEAT:g} s, agents' reconnect backoff up to {BACKOFF:g} s). Seconds from the leader's end "
              f"until: min / median / max over {len(rs)} kill -9 rounds.", "",
              "| seconds until | kill -9 of the leader | frozen leader (SIGSTOP, 1 round) |", "|---|---|---|"]
    fr = fo["frozen"]
    for key, what in (("listens_s", "the standby listens"), ("serves_s", "`GET /task/targets` through the web "
                                                                       "tier answers 200"),
                      ("all_ran_s", f"a task on all {fo['agents']} agents (submitted then) succeeded everywhere")):
        one = fr.get(key)
        lines.append(f"| {what} | {_stats([r[key] for r in rs])} | {'n/a' if one is None else f'{one:.1f}'} |")
    standing = [r["restarted_standing_by_s"] for r in rs]
    said = "saying it no longer leads" if fr.get("old_says_no_longer_leads") else "WITHOUT saying it no longer leads"
    exited = fr.get("old_exited_after_cont_s")
    lines += ["", f"The killed master, started again, stood by after {_stats(standing)} s (min / median / max). "
              f"The frozen leader, resumed once the standby served, exited with code {fr.get('old_exit_code')} "
              f"(75 expected) {'n/a' if exited is None else f'{exited:.1f}'} s after SIGCONT, {said}. The standby "
              f"can take over a frozen leader only once PostgreSQL has ended its silent session, after the lease "
              f"({fo['lease_s']:g} s): most of that wait. Between the standby listening and the web tier reaching it "
              "lies the clients' reconnect backoff to a master that did not listen (1 s doubling to 4 s, "
              "mschedule/transport/client.py FOLLOW_RECONNECT_MS)."]
    errors = fo["master_errors"] + [e for r in runs for b in r.values() for e in b["master_errors"]]
    lines += ["", f"Lines at ERROR or worse in the masters' logs: {len(errors)}"
              + (" (the old leader's, when it found it no longer led)." if errors and all(
                  "no longer leads" in e for e in errors) else ".")]
    return "\n".join(lines)


def _spread3(values: list[float]) -> str:
    """spread() to a thousandth: fan-out medians are well under a second."""
    ms = spread([v * 1000 for v in values])
    return ms if ms == "n/a" else f"{ms} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per backend")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--latency-rounds", type=int, default=50)
    parser.add_argument("--fanout", type=int, default=100, help="N")
    parser.add_argument("--tasks", type=int, default=500, help="throughput tasks")
    parser.add_argument("--failover-rounds", type=int, default=5)
    parser.add_argument("--failover-agents", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0, help="--leader-lease of the failover masters")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 run, 5 rounds, N=10, 50 tasks, "
                                                             "1 failover round, 5 agents")
    parser.add_argument("--out", default=str(HERE / "ha.json"))
    parser.add_argument("--write", action="store_true", help="put the figures into bench/results.md")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.agents, args.latency_rounds, args.fanout, args.tasks = 1, 10, 5, 10, 50
        args.failover_rounds, args.failover_agents = 1, 5
    why = unavailable()
    if why:
        say(f"cannot run: {why}")
        return 2
    result: dict = {"machine": machine(), "agents": args.agents, "load_start": load(), "backends": []}
    cluster = Cluster(fsync=True)
    try:
        result["pg_version"] = cluster.sql(cluster.admin_url, "SHOW server_version")[0][0]
        for k in range(args.runs):
            run = {}
            for name in ("sqlite", "postgresql"):
                say(f"run {k + 1}/{args.runs}: {name}")
                with tempfile.TemporaryDirectory(prefix="mschedule-ha-") as tmp:
                    run[name] = backend_run(Path(tmp), cluster.database() if name == "postgresql" else None, args)
                say(f"{name}: latency p50 {run[name]['latency']['p50_ms']:.1f} ms, fan-out "
                    f"{run[name]['fanout']['seconds']:.3f} s, {run[name]['throughput']['tasks_per_s']:.0f} tasks/s")
            result["backends"].append(run)
        say("failover")
        with tempfile.TemporaryDirectory(prefix="mschedule-ha-") as tmp:
            result["failover"] = failover(Path(tmp), cluster.database(), args)
    finally:
        cluster.close()
    result["load_end"] = load()
    result["loads"] = ([b[x] for r in result["backends"] for b in r.values() for x in ("load_before", "load_after")]
                       + [r["load"] for r in result["failover"]["rounds"]])
    publish(result, args.out, report(result), (BEGIN, END), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
