"""Event latency: EndpointSlice change -> prefix best (and gone) in FRR, next to raw ExaBGP.

    sudo .venv/bin/python -m bench.event_latency [--trials 20]

Same topology, same run, same probe for both rows:
  bgpspeaker  the API server gets the EndpointSlice change; clock stops when FRR's bestpath changes.
  raw ExaBGP  one ExaBGP (started by our supervisor, no Kubernetes, no decision) gets the
              announce/withdraw line directly; same clock stop.
The probe is ``vtysh -c 'show bgp ipv4 unicast P/32 json'`` in a tight loop (~5-10 ms a call),
so both rows carry the same probe resolution. Prints a table; this is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bgpspeaker.commands import Attributes, announce_line, withdraw_line
from bgpspeaker.config import parse_config
from bgpspeaker.exabgp import ExabgpSupervisor
from bgpspeaker.peers import PeerRuntime
from tests.lab.kubeapi import endpoint_slice, service
from tests.lab.netns import Frr, Lab, enter_netns, wait_until
from tests.lab.topology import single_node


def is_best(frr: Frr, prefix: str) -> bool:
    data = json.loads(frr.vtysh(f"show bgp ipv4 unicast {prefix} json") or "{}")
    return any(path.get("bestpath", {}).get("overall") for path in data.get("paths", []))


def timed(action: Callable[[], None], frr: Frr, prefix: str, *, present: bool) -> float:
    started = time.monotonic()
    action()
    wait_until(
        lambda: is_best(frr, prefix) is present, timeout_s=10, desc=f"{prefix} present={present}", interval_s=0.0
    )
    return (time.monotonic() - started) * 1000


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"{name:<34} n={len(ordered):>3}  median {statistics.median(ordered):6.1f} ms  "
        f"p90 {p90:6.1f} ms  max {ordered[-1]:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    rows: list[str] = []
    with Lab("bench") as lab:
        topo = single_node(lab)
        frr, api, speaker = topo.frr, topo.api, topo.speaker
        node_ns = lab.namespaces[1]
        api.apply(service("default", "web", ips=["192.0.2.10"], policy="Local"))
        speaker.start()
        speaker.wait_event("peer_up", timeout_s=30)
        prefix = "192.0.2.10/32"
        up, down = [], []

        def endpoints(ready: bool) -> Callable[[], None]:
            eps = [("10.244.0.5", "node-a", True, True)] if ready else []
            return lambda: api.apply(endpoint_slice("default", "web-1", service_name="web", endpoints=eps))

        try:
            for _ in range(args.trials):
                up.append(timed(endpoints(True), frr, prefix, present=True))
                down.append(timed(endpoints(False), frr, prefix, present=False))
        except AssertionError:
            print(speaker.tail(60))
            raise
        speaker.close()
        api.stop()  # the namespaces and FRR stay for the raw ExaBGP rows
        rows += [summary("bgpspeaker: slice -> best", up), summary("bgpspeaker: slice -> gone", down)]

        # Raw ExaBGP anchor, same topology: our supervisor, commands written directly.
        enter_netns(node_ns)
        config = parse_config(
            {
                "apiVersion": "bgpspeaker.io/v1alpha1",
                "kind": "SpeakerConfig",
                "myASN": 64513,
                "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}],
            }
        )
        workdir = Path(tempfile.mkdtemp(prefix="bench-raw-"))
        exabgp = ExabgpSupervisor(
            PeerRuntime(config.peers[0]),
            router_id=ipaddress.IPv4Address("10.0.0.2"),
            workdir=workdir,
            on_ready=lambda: None,
        )
        exabgp.start()
        wait_until(lambda: exabgp.state.state == "up", timeout_s=30, desc="raw ExaBGP session up")
        peer, net = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network(prefix)
        raw_up, raw_down = [], []
        for _ in range(args.trials):
            raw_up.append(
                timed(
                    lambda: exabgp.execute([announce_line(peer, Attributes(), [net])]) and None,
                    frr,
                    prefix,
                    present=True,
                )
            )
            raw_down.append(
                timed(lambda: exabgp.execute([withdraw_line(peer, [net])]) and None, frr, prefix, present=False)
            )
        exabgp.stop()
        rows += [summary("raw ExaBGP: command -> best", raw_up), summary("raw ExaBGP: command -> gone", raw_down)]
        ratio_up = statistics.median(up) / statistics.median(raw_up)
        ratio_down = statistics.median(down) / statistics.median(raw_down)
        rows.append(f"median ratio bgpspeaker/raw: announce {ratio_up:.2f}x, withdraw {ratio_down:.2f}x")
    print(f"event latency, {os.cpu_count()} cores, FRR 8.4 bgpd, ExaBGP 5.0.15, {args.trials} trials each")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
