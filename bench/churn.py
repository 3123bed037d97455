"""Churn: endpoints flapping at a steady rate; lag between the API server and FRR over time.

K Local-policy services, each with one endpoint that moves between this node and
another, round robin, R flips a second (each service flips every K/R seconds). The
lag of a flip is the time of bgpd's first best-path selection after it that leaves
the prefix present (or gone) as the flip requires, from bgpd's own debug log
(``common.BestpathLog``: polling bgpd with vtysh would slow what is measured). A flip
not seen before that service's next flip counts as missed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import BestpathLog, percentiles, vip
from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, wait_until
from lab.topology import NODE, single_node


def measure(*, services: int = 50, rate_per_s: float = 10.0, seconds: float = 30.0) -> dict[str, Any]:
    with Lab("churn") as lab:
        topo = single_node(lab)
        frr, api, speaker = topo.frr, topo.api, topo.speaker
        try:
            where = {}
            for i in range(services):
                api.apply(service("churn", f"c{i}", ips=[vip(i)], policy="Local"))
                api.apply(_slice(i, NODE))
                where[i] = NODE
            speaker.log_level = "info"
            speaker.start()
            prefixes = {f"{vip(i)}/32" for i in range(services)}
            wait_until(lambda: prefixes <= set(frr.best_paths()), timeout_s=60, desc="churn services announced")

            bestpath = BestpathLog(frr, sorted(prefixes))
            flips: list[tuple[float, int, bool]] = []
            started = time.time()
            interval = 1.0 / rate_per_s
            index = 0
            while time.time() - started < seconds:
                due = started + len(flips) * interval
                time.sleep(max(0.0, due - time.time()))  # the flip schedule, not a synchronization
                i = index % services
                where[i] = "node-b" if where[i] == NODE else NODE
                flips.append((time.time(), i, where[i] == NODE))
                api.apply(_slice(i, where[i]))
                index += 1
            time.sleep(2.0)  # let the last flips land before reading the log
            bestpath.read()
            samples = [(at, prefix, best) for at, prefix, best in bestpath.seen if at >= started]
        finally:
            topo.close()
    return _lags(flips, samples, started=started, services=services, rate_per_s=rate_per_s, seconds=seconds)


def _slice(i: int, node: str) -> dict[str, Any]:
    return endpoint_slice("churn", f"c{i}-1", service_name=f"c{i}", endpoints=[("10.244.2.5", node, True, True)])


def _lags(
    flips: list[tuple[float, int, bool]],
    samples: list[tuple[float, str, bool]],
    *,
    started: float,
    services: int,
    rate_per_s: float,
    seconds: float,
) -> dict[str, Any]:
    next_flip: dict[int, float] = {}
    deadline_of = []
    for at, i, _ in reversed(flips):
        deadline_of.append(next_flip.get(i, float("inf")))
        next_flip[i] = at
    deadline_of.reverse()
    by_prefix: dict[str, list[tuple[float, bool]]] = {}
    for at, prefix, best in sorted(samples):
        by_prefix.setdefault(prefix, []).append((at, best))
    points: list[tuple[float, float]] = []
    missed = 0
    for (at, i, present), deadline in zip(flips, deadline_of, strict=True):
        prefix = f"{vip(i)}/32"
        seen = next(
            (t for t, best in by_prefix.get(prefix, []) if at <= t <= deadline and best is present),
            None,
        )
        if seen is None:
            missed += 1
        else:
            points.append((at - started, (seen - at) * 1000))
    lags = [lag for _, lag in points]
    windows = []
    for low in range(0, int(seconds) + 1, 5):
        bucket = [lag for t, lag in points if low <= t < low + 5]
        if bucket:
            windows.append({"t": low, "median": statistics.median(bucket), "max": max(bucket)})
    return {
        "services": services,
        "rate_per_s": rate_per_s,
        "seconds": seconds,
        "lag": percentiles(lags) if lags else {"n": 0, "median": 0, "p90": 0, "p99": 0, "max": 0},
        "missed": missed,
        "windows": windows,
        "points": points,
    }


if __name__ == "__main__":
    result = measure()
    print({k: v for k, v in result.items() if k != "points"})
