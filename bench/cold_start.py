"""Cold start and mass delete: N LoadBalancer services -> all N prefixes in FRR, and back to 0.

    sudo .venv/bin/python -m bench.cold_start --n 1000 10000

bgpspeaker: the process starts with N services (and their EndpointSlices) already in
the API server; the clock runs from process start until FRR has received all N
prefixes from the node (``pfxRcd``; best-path selection follows ~50 ms later, checked
once at the end). Then all N services are deleted at once; clock until 0. Also
measured: RSS of bgpspeaker and of its ExaBGP child, and their CPU while idle.

raw ExaBGP (the limit of the design): our supervisor starts ExaBGP; the clock runs
from that start until all N are in FRR, the bulk announce commands (500 prefixes each)
written as soon as the API connects. Then one bulk withdraw of all N. Three rows:
ExaBGP as released, and through bgpspeaker's launcher (its reactor and copy patches)
with next-hop self and with an explicit next hop. Also measured there: one change with
all N announced, written straight to ExaBGP (FRR and ExaBGP's own per-change cost).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import time
from typing import Any

from bench.common import (
    BestpathLog,
    best_count,
    chunks,
    idle_cpu_percent,
    raw_exabgp,
    rss_mb,
    seed_services,
    vip,
    vips,
    wait_received,
)
from bgpspeaker.exabgp.commands import announce_line, withdraw_line
from bgpspeaker.routes import Attributes
from lab.netns import Lab, wait_until
from lab.topology import single_node


def bgpspeaker_cold_start(count: int, *, idle_s: float = 10.0) -> dict[str, Any]:
    """One lab: seed, start, measure, delete all, measure."""
    with Lab("cold") as lab:
        topo = single_node(lab, bookmark_interval_s=5.0)
        frr, api, speaker = topo.frr, topo.api, topo.speaker
        try:
            seed_started = time.monotonic()
            seed_services(api, count)
            seed_s = time.monotonic() - seed_started
            started = time.monotonic()
            speaker.log_level = "info"  # as in production: no per-route ExaBGP debug lines
            speaker.start()
            done = wait_received(frr, count, timeout_s=120)
            cold_s = done - started
            best = wait_until(lambda: (b := best_count(frr)) == count and b, timeout_s=30, desc="all best")
            pid = speaker.pid
            child = speaker.exabgp_pid()
            rss = rss_mb(pid), rss_mb(child)
            time.sleep(5.0)  # let the start-up tail (route log, Events) finish: idle means settled
            idle = idle_cpu_percent([pid, child], idle_s)
            change_ms = _single_changes(api, frr, trials=10)
            deleted = time.monotonic()
            for i in range(count):
                api.delete("services", f"bench/s{i}")
            delete_api_s = time.monotonic() - deleted
            gone = wait_received(frr, 0, timeout_s=120)
            return {
                "n": count,
                "cold_start_s": cold_s,
                "best": best,
                "delete_all_s": gone - deleted,
                "delete_api_s": delete_api_s,
                "seed_s": seed_s,
                "rss_speaker_mb": rss[0],
                "rss_exabgp_mb": rss[1],
                "idle_cpu_percent": idle,
                "one_change_ms": change_ms,
            }
        finally:
            topo.close()


def _single_changes(api: Any, frr: Any, *, trials: int) -> float:
    """Median ms for one service's endpoints to go and come back, with all N announced:
    the per-change cost at this scale (clock stop: bgpd's own best-path log)."""
    from lab.kubeapi import endpoint_slice

    prefix = f"{vip(0)}/32"
    here = [("10.244.1.5", "node-b", True, True)]
    gone, back = BestpathLog(frr, [prefix]).flips(
        prefix,
        [
            (lambda: api.apply(endpoint_slice("bench", "s0-1", service_name="s0", endpoints=[])), False),
            (lambda: api.apply(endpoint_slice("bench", "s0-1", service_name="s0", endpoints=here)), True),
        ],
        trials=trials,
    )
    return statistics.median(gone + back)


def raw_exabgp_cold_start(count: int, *, explicit_next_hop: bool = False, upstream: bool = False) -> dict[str, Any]:
    """Our supervisor and bulk commands, no Kubernetes: the floor for the design.
    ``upstream``: ExaBGP as released, without the launcher's speed patches (bgpspeaker.exabgp.launcher)."""
    with Lab("raw") as lab:
        topo = single_node(lab)
        frr = topo.frr
        topo.api.stop()
        exabgp = raw_exabgp(lab.namespaces[1], speed_patches=not upstream)
        prefixes = sorted(vips(count), key=ipaddress.ip_network)
        peer = exabgp.runtime.peer.peer_address
        try:
            started = time.monotonic()
            exabgp.start()
            exabgp.wait_ready(30)
            if not explicit_next_hop:
                # ExaBGP resolves `next-hop self` from the session's local address, known
                # only once it is connected: a route sent before fails (AttributeError in
                # Neighbor.ip_self). The relay's own start used to cover that gap; with the
                # relay in-process the API is there first. bgpspeaker sends explicit hops.
                wait_until(lambda: exabgp.status().state == "up", timeout_s=30, desc="session up")
            nets = [ipaddress.ip_network(p) for p in prefixes]
            hop = Attributes(next_hop=ipaddress.ip_address("10.0.0.2")) if explicit_next_hop else Attributes()
            exabgp.execute([announce_line(peer, hop, chunk) for chunk in _chunks(nets)])
            done = wait_received(frr, count, timeout_s=120)
            rss = rss_mb(exabgp.pid or 0)
            change_ms = _raw_single_changes(exabgp, frr, hop, trials=10)
            withdrawn = time.monotonic()
            exabgp.execute([withdraw_line(peer, chunk, next_hop=hop.next_hop) for chunk in _chunks(nets)])
            gone = wait_received(frr, 0, timeout_s=120)
            return {
                "n": count,
                "cold_start_s": done - started,
                "delete_all_s": gone - withdrawn,
                "rss_exabgp_mb": rss,
                "one_change_ms": change_ms,
            }
        finally:
            exabgp.stop()
            topo.close()


def _raw_single_changes(exabgp: Any, frr: Any, hop: Attributes, *, trials: int) -> float:
    """Median ms for one route to go and come back with all N announced, written straight
    to ExaBGP: what FRR and ExaBGP alone cost per change at this N."""
    peer = exabgp.runtime.peer.peer_address
    prefix = ipaddress.ip_network(f"{vip(0)}/32")
    gone, back = BestpathLog(frr, [str(prefix)]).flips(
        str(prefix),
        [
            (lambda: exabgp.execute([withdraw_line(peer, [prefix], next_hop=hop.next_hop)]), False),
            (lambda: exabgp.execute([announce_line(peer, hop, [prefix])]), True),
        ],
        trials=trials,
    )
    return statistics.median(gone + back)


def _chunks(nets: list[Any]) -> list[list[Any]]:
    return [list(c) for c in chunks(nets, 500)]


RAW_ROWS = (
    ("upstream ExaBGP, next-hop self", {"upstream": True}),
    ("ExaBGP + launcher, next-hop self", {}),
    ("ExaBGP + launcher, explicit hop", {"explicit_next_hop": True}),
)
"""The raw rows: ExaBGP 5.0.15 as released (the issue's anchor), and as bgpspeaker runs it
(``bgpspeaker.exabgp.launcher``), with next-hop self and with the explicit next hop bgpspeaker sends."""


def rows(count: int) -> list[dict[str, Any]]:
    """bgpspeaker and the raw ExaBGP rows at ``count``."""
    result = [{"who": "bgpspeaker", **bgpspeaker_cold_start(count)}]
    for who, options in RAW_ROWS:
        result.append({"who": who, **raw_exabgp_cold_start(count, **options)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for count in args.n:
        results.extend(rows(count))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"cold start, {os.cpu_count()} cores")
    for row in results:
        print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
