"""Event latency: EndpointSlice change -> prefix best (and gone) in FRR, next to raw ExaBGP.

    sudo .venv/bin/python -m bench.event_latency [--trials 100]

Same topology, same run, same clock stop for both rows:
  bgpspeaker  the API server gets the EndpointSlice change; clock stops when FRR's bestpath changes.
  raw ExaBGP  one ExaBGP (started by our supervisor, no Kubernetes, no decision) gets the
              announce/withdraw line directly; same clock stop.
The clock stops at the timestamp bgpd itself logs for the best-path selection
(``debug bgp bestpath P``, microseconds; ``common.BestpathLog``), read from its log file.
Polling bgpd with vtysh instead changes what is measured: a vtysh command in flight when
the UPDATE arrives delays bgpd's best-path run by ~70 ms. Prints a table; this is not a
pass/fail test.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
from collections.abc import Callable
from typing import Any

from bench.common import BestpathLog, percentiles, raw_exabgp
from bgpspeaker.exabgp.commands import announce_line, withdraw_line
from bgpspeaker.routes import Attributes
from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, wait_until
from lab.topology import single_node


def measure(trials: int, *, speaker_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Both rows, ``trials`` each: {"rows": {name: percentiles}, "samples": {...}, "ratio_up", "ratio_down"}."""
    samples: dict[str, list[float]] = {}
    with Lab("bench") as lab:
        topo = single_node(lab)
        frr, api, speaker = topo.frr, topo.api, topo.speaker
        node_ns = lab.namespaces[1]
        api.apply(service("default", "web", ips=["192.0.2.10"], policy="Local"))
        speaker.log_level = "info"
        speaker.start(*speaker_args)
        speaker.wait_event("peer_up", timeout_s=30)
        prefix = "192.0.2.10/32"

        def endpoints(ready: bool) -> Callable[[], object]:
            eps: list[tuple[str, str, bool | None, bool | None]] = (
                [("10.244.0.5", "node-a", True, True)] if ready else []
            )
            return lambda: api.apply(endpoint_slice("default", "web-1", service_name="web", endpoints=eps))

        bestpath = BestpathLog(frr, [prefix])
        try:
            up, down = bestpath.flips(prefix, [(endpoints(True), True), (endpoints(False), False)], trials=trials)
        except AssertionError:
            print(speaker.tail(60))
            raise
        speaker.close()
        api.stop()  # the namespaces and FRR stay for the raw ExaBGP rows
        samples["bgpspeaker: slice -> best"] = up
        samples["bgpspeaker: slice -> gone"] = down

        # Raw ExaBGP anchor, same topology: our supervisor, commands written directly.
        exabgp = raw_exabgp(node_ns)
        exabgp.start()
        wait_until(lambda: exabgp.state.state == "up", timeout_s=30, desc="raw ExaBGP session up")
        peer, net = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network(prefix)
        hop = Attributes(next_hop=ipaddress.ip_address("10.0.0.2"))
        raw_up, raw_down = bestpath.flips(
            prefix,
            [
                (lambda: exabgp.execute([announce_line(peer, hop, [net])]), True),
                (lambda: exabgp.execute([withdraw_line(peer, [net], next_hop=hop.next_hop)]), False),
            ],
            trials=trials,
        )
        exabgp.stop()
        samples["raw ExaBGP: command -> best"] = raw_up
        samples["raw ExaBGP: command -> gone"] = raw_down
    return {
        "rows": {name: percentiles(values) for name, values in samples.items()},
        "samples": samples,
        "ratio_up": statistics.median(up) / statistics.median(raw_up),
        "ratio_down": statistics.median(down) / statistics.median(raw_down),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--speaker-arg", action="append", default=[], help="extra argument for bgpspeaker run")
    args = parser.parse_args()
    result = measure(args.trials, speaker_args=tuple(args.speaker_arg))
    print(f"event latency, {os.cpu_count()} cores, FRR 8.4 bgpd, ExaBGP 5.0.15, {args.trials} trials each")
    for name, stats in result["rows"].items():
        print(
            f"{name:<34} n={stats['n']:>3}  median {stats['median']:6.1f}  p90 {stats['p90']:6.1f}"
            f"  p99 {stats['p99']:6.1f}  max {stats['max']:6.1f} ms"
        )
    print(f"median ratio bgpspeaker/raw: announce {result['ratio_up']:.2f}x, withdraw {result['ratio_down']:.2f}x")


if __name__ == "__main__":
    main()
