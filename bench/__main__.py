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
6. Cold start against its anchor, alternated (``bench.startup``): bgpspeaker (and, with
   ``--before DIR``, another source tree) and ExaBGP through our launcher with explicit
   next hops, one after the other, ``--startup-repeat`` rounds: ratios and their spread.
7. Memory at the largest N with 1, 2 and 4 peers (and 2 peers with BFD): every process.
8. BFD under load (``bench.bfd_steady``): cold start, mass delete, mass create, churn.
``--sections`` runs some of them; results.json is written after each one.
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

from bench import allocation, anchors, bfd_steady, churn, cold_start, event_latency, startup
from bench.plot import plot
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
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--startup-repeat", type=int, default=3)
    parser.add_argument("--before", default="", help="another source tree to alternate with in the startup section")
    args = parser.parse_args()
    configure(log_format="console", level="warning")  # the raw ExaBGP rows run our supervisor in-process
    output = Path(args.json)
    results: dict[str, Any] = json.loads(output.read_text()) if output.exists() else {}
    results |= {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    largest = max(args.n)
    for section in args.sections:  # each one's figures are saved as soon as it ends
        if section == "latency":
            results["latency"] = event_latency.measure(args.trials)
        elif section == "cold_start":
            results["cold_start"] = _cold_start_rows(args.n)
        elif section == "churn":
            results["churn"] = churn.measure(seconds=args.churn_seconds)
        elif section == "allocation":
            results["allocation"] = allocation.rows(largest)
        elif section == "startup":
            before = Path(args.before) if args.before else None
            results["startup"] = startup.cold_start_rows(args.n, args.startup_repeat, before)
        elif section == "memory":
            rows = [startup.memory_row(largest, peers) for peers in (1, 2, 4)]
            results["memory"] = [*rows, startup.memory_row(largest, 2, bfd=True)]
        elif section == "bfd":
            results["bfd"] = {"n": largest, "rows": bfd_steady.measure(largest, args.churn_seconds)}
        results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        output.write_text(json.dumps(results, indent=1))
    print(report(results))
    try:
        plot(results, args.plot)
    except ImportError:  # matplotlib comes with the bench extra (scripts/bench.sh)
        print(f"\nno matplotlib here: python -m bench.plot {args.json} {args.plot} where it is installed")
    else:
        print(f"\nplot: {args.plot}   raw figures: {args.json}")


SECTIONS = ("latency", "cold_start", "churn", "allocation", "startup", "memory", "bfd")


def _cold_start_rows(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
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
    return rows


def _ms(value: float) -> str:
    return f"{value:7.1f}"


def report(results: dict[str, Any]) -> str:
    """The table (the sections present in ``results``)."""
    lines = [f"bgpspeaker benchmarks — {results['machine']} — {results['when']}"]
    for key, section in (
        ("latency", _latency_lines),
        ("cold_start", _cold_start_lines),
        ("churn", _churn_lines),
        ("allocation", allocation.report_lines),
        ("startup", _startup_lines),
        ("memory", _memory_lines),
        ("bfd", _bfd_lines),
    ):
        if key in results:
            lines.append("")
            lines.extend(line for line in section(results[key]) if line)  # type: ignore[operator]
    return "\n".join(lines)


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    lines = []
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
    return lines


def _cold_start_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["Cold start (s): N services -> all N received by FRR; delete all -> 0; one change: bgpd's log"]
    lines.append(f"  {'who':<32} {'N':>6} {'announce':>9} {'delete':>8}   notes")
    for row in rows:
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
    return lines


def _churn_lines(churn_result: dict[str, Any]) -> list[str]:
    lines = [
        f"Churn: {churn_result['services']} Local services, {churn_result['rate_per_s']:.0f} endpoint flips/s for"
        f" {churn_result['seconds']:.0f} s -> lag API server -> FRR (ms)"
    ]
    stats = churn_result["lag"]
    lines.append(
        f"  n={stats['n']} median {stats['median']:.0f} p90 {stats['p90']:.0f} p99 {stats['p99']:.0f} max"
        f" {stats['max']:.0f}; missed (never observed) {churn_result['missed']}"
    )
    for window in churn_result["windows"]:
        lines.append(f"  t={window['t']:>4.0f}s  median {window['median']:6.0f}  max {window['max']:6.0f}")
    return lines


def _startup_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Cold start against its anchor, alternated in one run (s; ratio = ours / the anchor of the same round)",
        "  anchor: ExaBGP through our launcher, explicit next hop, the same routes in one bulk",
        f"  {'who':<12} {'N':>6} {'median':>7} {'range':>11}   ratio (range)",
    ]
    for row in rows:
        for name, figures in row.items():
            if name in ("n", "rounds"):
                continue
            spread = f"{figures['min_s']:.2f}-{figures['max_s']:.2f}"
            ratio = (
                f"{figures['ratio_median']:.2f}x ({figures['ratio_min']:.2f}-{figures['ratio_max']:.2f})"
                if "ratio_median" in figures
                else ""
            )
            lines.append(f"  {name:<12} {row['n']:>6} {figures['median_s']:>7.2f} {spread:>11}   {ratio}")
    return lines


def _memory_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["Memory at N services, all announced: every process summed (MB)"]
    lines.append(f"  {'peers':>5} {'BFD':>4} {'N':>6} {'RSS':>6} {'PSS':>6}   RSS by process kind")
    for row in rows:
        kinds = ", ".join(f"{kind} {mb:.1f}" for kind, mb in row["by_kind_rss_mb"].items())
        lines.append(
            f"  {row['peers']:>5} {'yes' if row['bfd'] else 'no':>4} {row['n']:>6} {row['total_rss_mb']:>6.0f}"
            f" {row['total_pss_mb']:>6.0f}   {kinds}"
        )
    return lines


def _bfd_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"BFD under load, 300 ms x 3 (N={result['n']}): gaps between the speaker's packets at the router (ms)",
        f"  {'phase':<16} {'max gap':>8} {'p99':>6}  Down (speaker/router)  speaker CPU s  longest pass ms",
    ]
    for row in result["rows"]:
        lines.append(
            f"  {row['phase']:<16} {row['max_gap_ms']:>8.0f} {row['p99_gap_ms']:>6.0f}"
            f"  {row['speaker_bfd_down_events']:>6}/{row['router_session_down_total']:<14}"
            f" {row['speaker_cpu_s']:>13.2f}  {row['longest_reconcile_pass_ms']:>15.0f}"
        )
    return lines


if __name__ == "__main__":
    main()
