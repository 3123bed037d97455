"""The suite's PNG from its results.json: matplotlib and the JSON only, so it also runs
from a virtualenv that has matplotlib but not bgpspeaker's dependencies.

    python -m bench.plot bench/results.json bench/latency.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["plot"]


def plot(results: dict[str, Any], path: str) -> None:
    """Latency distributions (CDF), churn lag over time, cold start against its anchor and
    memory by peers, in one PNG (panels without figures stay empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ((left, right), (lower_left, lower_right)) = plt.subplots(2, 2, figsize=(12, 9))
    if "latency" in results:
        _plot_latency(left, results["latency"])
    if "churn" in results:
        _plot_churn(right, results["churn"])
    if "startup" in results:
        _plot_startup(lower_left, results["startup"])
    if "memory" in results:
        _plot_memory(lower_right, results["memory"])
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_startup(axes: Any, rows: list[dict[str, Any]]) -> None:
    names = [name for name in rows[0] if name not in ("n", "rounds")]
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        medians = [row[name]["median_s"] for row in rows]
        low = [row[name]["median_s"] - row[name]["min_s"] for row in rows]
        high = [row[name]["max_s"] - row[name]["median_s"] for row in rows]
        positions = [i + offset * width for i in range(len(rows))]
        axes.bar(positions, medians, width, yerr=[low, high], capsize=3, label=name)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [f"N={row['n']}" for row in rows])
    axes.set_ylabel("process start -> all N in FRR (s)")
    axes.set_title("Cold start against its anchor (median, range over rounds)")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)


def _plot_memory(axes: Any, rows: list[dict[str, Any]]) -> None:
    kinds = sorted({kind for row in rows for kind in row["by_kind_rss_mb"]})
    labels = [f"{row['peers']} peer{'s' if row['peers'] > 1 else ''}{' + BFD' if row['bfd'] else ''}" for row in rows]
    bottom = [0.0] * len(rows)
    for kind in kinds:
        values = [row["by_kind_rss_mb"].get(kind, 0.0) for row in rows]
        axes.bar(labels, values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.plot(labels, [row["total_pss_mb"] for row in rows], "k_", markersize=30, label="PSS total")
    axes.set_ylabel("MB")
    axes.set_title(f"Memory at N={rows[0]['n']}: RSS by process kind")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)


def _plot_latency(left: Any, latency: dict[str, Any]) -> None:
    for name, samples in latency["samples"].items():
        ordered = sorted(samples)
        left.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    left.set_xlabel("ms until FRR's bestpath changed")
    left.set_ylabel("fraction of trials")
    left.set_title("Event latency (CDF)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)


def _plot_churn(right: Any, churn_result: dict[str, Any]) -> None:
    points = churn_result["points"]
    right.scatter([p[0] for p in points], [p[1] for p in points], s=4)
    right.set_xlabel("seconds into the churn run")
    right.set_ylabel("lag API server -> FRR (ms)")
    right.set_title(f"Churn: {churn_result['rate_per_s']:.0f} flips/s")
    right.grid(alpha=0.3)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
