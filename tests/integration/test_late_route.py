"""A node with no route to its router at start: its routes go out when the session comes up,
and nothing is sent before that for ExaBGP to refuse.

With no route to the peer the speaker finds no source address, so its routes carry
``next-hop self``, which ExaBGP 5.0.15 can fill in only once connected (before that it
refuses the command: ``Neighbor.ip_self``, ``local-address`` None). Sent anyway, every
pass and retry (1, 2, 5, 10, 30 s) logged ``exabgp_command_failed`` at error level until
the session came up: a node whose uplink gets its address late (DHCP) looked broken.
"""

from __future__ import annotations

import json
import subprocess
import time

from lab.kubeapi import endpoint_slice, service
from lab.netns import wait_until
from tests.integration.conftest import Topology

VIP = "192.0.2.30/32"
NODE_ADDRESS = "10.0.0.2/24"
NODE = "10.0.0.2"


def uplink(netns: str) -> str:
    """The node's interface holding (or meant to hold) ``NODE_ADDRESS``."""
    links = json.loads(subprocess.run(["ip", "-n", netns, "-j", "addr"], capture_output=True, check=True).stdout)
    (name,) = [link["ifname"] for link in links if any(a.get("local") == NODE for a in link["addr_info"])]
    return name


def test_routes_reach_the_router_when_a_late_session_comes_up(topology: Topology) -> None:
    node_ns = topology.speaker.netns
    dev = uplink(node_ns)
    subprocess.run(["ip", "-n", node_ns, "addr", "del", NODE_ADDRESS, "dev", dev], check=True)
    topology.api.apply(service("default", "late", ips=[VIP.removesuffix("/32")]))
    topology.api.apply(
        endpoint_slice("default", "late-1", service_name="late", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    started = time.monotonic()
    topology.speaker.start()
    degraded = topology.speaker.wait_event("peer_degraded", timeout_s=20, peer="tor-a")
    assert "no route to 10.0.0.1" in degraded["problem"], degraded
    # The speaker lists and decides (the route is desired) while the session is down; a few
    # seconds pass, as a slow DHCP would take (the retry timer would have grown meanwhile).
    topology.speaker.wait_event("reconcile_finished", timeout_s=20)
    wait_until(lambda: time.monotonic() - started >= 4.0, timeout_s=10, desc="4 s without a route to the router")
    assert topology.frr.best_paths().get(VIP) is None

    subprocess.run(["ip", "-n", node_ns, "addr", "add", NODE_ADDRESS, "dev", dev], check=True)
    established_at = wait_until(
        lambda: topology.frr.neighbor(NODE).get("bgpState") == "Established" and time.monotonic(),
        timeout_s=30,
        desc="the session Established at the router",
    )
    received_at = wait_until(
        lambda: topology.frr.best_paths().get(VIP) is not None and time.monotonic(),
        timeout_s=40,
        desc=f"{VIP} best at the router; speaker log: {topology.speaker.tail(8)}",
    )
    late_s = received_at - established_at
    print(f"{VIP} best {late_s:.2f} s after the session was Established")
    assert late_s < 1.5, late_s
    # Nothing was sent that ExaBGP had to refuse: no error lines for a session not up yet.
    assert not topology.speaker.events("exabgp_command_failed"), topology.speaker.events("exabgp_command_failed")[:2]
