"""Draws docs/bench/latest.png from the results `cargo xtask bench` writes
(latest.json): one panel per workload, a bar per path, the value over each bar
and its ratio to B (direct to the pod)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"A today": "#b0b0b0", "B direct": "#4c72b0"}


def main(src: str, dst: str) -> None:
    with open(src) as f:
        res = json.load(f)
    workloads = res["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4.8))
    for ax, w in zip(axes, workloads):
        names = [p["path"] for p in w["paths"]]
        values = [p["value"] for p in w["paths"]]
        direct = next((p["value"] for p in w["paths"] if p["path"] == "B direct"), None)
        colors = [COLORS.get(n, "#dd8452") for n in names]
        bars = ax.bar(range(len(names)), values, color=colors)
        for bar, v in zip(bars, values):
            label = f"{v:,.0f}"
            if direct:
                label += f"\n{v / direct:.2f}x B"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(w["workload"], fontsize=10)
        ax.set_ylabel(w["unit"])
        ax.set_ylim(0, max(values) * 1.25 if values else 1)
    fig.suptitle(f"Today's path (A) vs direct (B) vs nginx (N) vs this ingress (C): {res['machine']}, "
                 f"kernel {res['kernel']}, {res['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
