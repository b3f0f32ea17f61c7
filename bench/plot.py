"""Plots for bench/results.md, run in bench/.venv-ansible (it has matplotlib):

    plot.py results.json fanout.png        fan-out seconds against N, mschedule and Ansible (bench/run.py)
    plot.py scale scale.json scale.png     master CPU and RSS against agents, every run (bench/scale.py)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, png_path: str) -> None:
    with open(results_path) as f:
        r = json.load(f)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    fan = r["fanout"]
    ax.plot([f["n"] for f in fan], [f["seconds"] for f in fan], "o-", label="mschedule (HTTP submit -> all done)")
    for module, style in (("command", "s--"), ("raw", "^--")):
        pts = [a for a in r.get("ansible", []) if a["module"] == module]
        if pts:
            ax.plot([a["n"] for a in pts], [a["seconds"] for a in pts], style, label=f"ansible -m {module} -f N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N hosts (targets), parallel = forks = N")
    ax.set_ylabel("seconds until every host is done")
    ax.set_title(f"Fan-out of `true`, {r['machine'].split(',')[0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)


def scale(results_path: str, png_path: str) -> None:
    with open(results_path) as f:
        runs = json.load(f)
    fig, cpu = plt.subplots(figsize=(7, 4.5), dpi=110)
    rss = cpu.twinx()
    for k, run in enumerate(runs):
        steps = run["sim"]["steps"]
        agents = [s["agents"] for s in steps]
        first = k == 0
        cpu.plot(agents, [s["master"]["cpu_pct"] for s in steps], "o-", color="tab:blue",
                 label="master CPU % of a core" if first else None)
        rss.plot(agents, [s["master"]["rss_mb"] for s in steps], "s--", color="tab:red",
                 label="master RSS MB" if first else None)
    cpu.axhline(40, color="tab:blue", alpha=0.3, linestyle=":")
    cpu.set_xlabel(f"online simulated agents ({len(runs)} runs)")
    cpu.set_ylabel("CPU % of one core", color="tab:blue")
    rss.set_ylabel("RSS MB", color="tab:red")
    cpu.set_ylim(bottom=0)
    rss.set_ylim(bottom=0)
    cpu.set_title("Idle master against fleet size (heartbeat stretched at 500/s)")
    cpu.grid(True, alpha=0.3)
    fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.88))
    fig.tight_layout()
    fig.savefig(png_path)


if __name__ == "__main__":
    if sys.argv[1] == "scale":
        scale(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2])
