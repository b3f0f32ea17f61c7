"""Plot fan-out seconds against N for mschedule and Ansible (run in bench/.venv-ansible, which has matplotlib)."""
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
