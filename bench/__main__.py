"""The whole benchmark suite: one command, one table, one PNG.

    sudo .venv/bin/python -m bench [--trials 100] [--n 1000 10000] [--plot bench/latency.png]

1. Event latency: EndpointSlice change -> prefix best in FRR, and -> gone; bgpspeaker
   next to raw ExaBGP (same topology, same run, same probe).
2. Cold start: N services already in the API server -> all N in FRR; N deleted -> 0.
   bgpspeaker, raw ExaBGP (as released with next-hop self; through bgpspeaker's launcher
   with next-hop self and with an explicit next hop, as bgpspeaker sends),
   BIRD 2 (birdc configure), FRR (frr-reload.py), GoBGP (CLI).
3. Churn: endpoints flapping at a steady rate; lag API server -> FRR over time.
4. Footprint: RSS of bgpspeaker and its ExaBGP at the largest N; CPU while idle.
5. Allocation: N pending Services -> all allocated by ``bgpspeaker controller``; anchor: the writes alone.
Needs root (network namespaces), FRR, BIRD 2 and GoBGP (scripts/bench.sh installs them).
Prints figures; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench import allocation, anchors, churn, cold_start, event_latency
from bgpspeaker.logs import configure

ANCHOR_LIMITS = {"gobgp": 2000, "frr-reload": 2000}
"""Largest N each anchor runs at: GoBGP's CLI costs ~16 ms a route (one process each), and
frr-reload.py removes `network` lines one by one (72 s for 1,000 here)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    parser.add_argument("--plot", default="bench/latency.png")
    parser.add_argument("--json", default="bench/results.json")
    args = parser.parse_args()
    configure(log_format="console", level="warning")  # the raw ExaBGP rows run our supervisor in-process
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }

    latency = event_latency.measure(args.trials)
    results["latency"] = latency

    rows = []
    for count in args.n:
        rows.extend(cold_start.rows(count))
        available = anchors.available()
        for name, run in (("bird", anchors.bird), ("frr-reload", anchors.frr_reload), ("gobgp", anchors.gobgp)):
            if not available[name]:
                rows.append({"who": name, "n": count, "skipped": "not installed"})
            elif count > ANCHOR_LIMITS.get(name, count):
                rows.append({"who": name, "n": count, "skipped": f"run up to N={ANCHOR_LIMITS[name]}"})
            else:
                try:
                    rows.append({"who": name, **run(count)})
                except Exception as error:  # noqa: BLE001  # a bench reports and goes on
                    rows.append({"who": name, "n": count, "skipped": f"failed: {str(error)[:120]}"})
    results["cold_start"] = rows
    results["churn"] = churn.measure(seconds=args.churn_seconds)
    results["allocation"] = allocation.rows(max(args.n))

    Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results))
    plot(latency, results["churn"], args.plot)
    print(f"\nplot: {args.plot}   raw figures: {args.json}")


def _ms(value: float) -> str:
    return f"{value:7.1f}"


def report(results: dict[str, Any]) -> str:
    """The table."""
    lines = [f"bgpspeaker benchmarks — {results['machine']} — {results['when']}", ""]
    latency = results["latency"]
    lines.append("Event latency (ms), EndpointSlice change -> bgpd selects the best path (its own log); same topology")
    lines.append(f"  {'path':<34} {'n':>4} {'median':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    for name, stats in latency["rows"].items():
        lines.append(
            f"  {name:<34} {stats['n']:>4} {_ms(stats['median'])} {_ms(stats['p90'])} {_ms(stats['p99'])}"
            f" {_ms(stats['max'])}"
        )
    lines.append(
        f"  median ratio bgpspeaker/raw ExaBGP: announce {latency['ratio_up']:.2f}x, withdraw"
        f" {latency['ratio_down']:.2f}x"
    )
    lines.append("")
    lines.append("Cold start (s): N services -> all N received by FRR; delete all -> 0; one change: bgpd's log")
    lines.append(f"  {'who':<32} {'N':>6} {'announce':>9} {'delete':>8}   notes")
    for row in results["cold_start"]:
        if "skipped" in row:
            lines.append(f"  {row['who']:<32} {row['n']:>6} {'-':>9} {'-':>8}   {row['skipped']}")
            continue
        notes = []
        if "rss_speaker_mb" in row:
            notes.append(
                f"RSS {row['rss_speaker_mb']:.0f} + ExaBGP {row['rss_exabgp_mb']:.0f} MB,"
                f" idle CPU {row['idle_cpu_percent']:.1f}% of a core"
            )
        if "one_change_ms" in row:
            notes.append(f"one change at this N {row['one_change_ms']:.0f} ms")
        figures = f"{row['cold_start_s']:>9.2f} {row['delete_all_s']:>8.2f}"
        lines.append(f"  {row['who']:<32} {row['n']:>6} {figures}   {'; '.join(notes)}")
    churn_result = results["churn"]
    lines.append("")
    lines.append(
        f"Churn: {churn_result['services']} Local services, {churn_result['rate_per_s']:.0f} endpoint flips/s for"
        f" {churn_result['seconds']:.0f} s -> lag API server -> FRR (ms)"
    )
    stats = churn_result["lag"]
    lines.append(
        f"  n={stats['n']} median {stats['median']:.0f} p90 {stats['p90']:.0f} p99 {stats['p99']:.0f} max"
        f" {stats['max']:.0f}; missed (never observed) {churn_result['missed']}"
    )
    for window in churn_result["windows"]:
        lines.append(f"  t={window['t']:>4.0f}s  median {window['median']:6.0f}  max {window['max']:6.0f}")
    lines.extend(allocation.report_lines(results.get("allocation", [])))
    return "\n".join(lines)


def plot(latency: dict[str, Any], churn_result: dict[str, Any], path: str) -> None:
    """Latency distributions (CDF) and churn lag over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, samples in latency["samples"].items():
        ordered = sorted(samples)
        left.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    left.set_xlabel("ms until FRR's bestpath changed")
    left.set_ylabel("fraction of trials")
    left.set_title("Event latency (CDF)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    points = churn_result["points"]
    right.scatter([p[0] for p in points], [p[1] for p in points], s=4)
    right.set_xlabel("seconds into the churn run")
    right.set_ylabel("lag API server -> FRR (ms)")
    right.set_title(f"Churn: {churn_result['rate_per_s']:.0f} flips/s")
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
