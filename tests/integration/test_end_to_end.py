"""End to end: Kubernetes objects in, routes in FRR out (real bgpspeaker, ExaBGP and bgpd)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from lab.kubeapi import endpoint_slice, service
from lab.netns import PathSampler, pid_alive, wait_until
from tests.integration.conftest import NODE, Topology

VIP = "192.0.2.10/32"
SPEAKER_NEXT_HOP = "10.0.0.2"


def best(topology: Topology, prefix: str) -> dict[str, Any] | None:
    """The best path FRR holds for ``prefix``, or None."""
    return topology.frr.best_paths().get(prefix)


def wait_best(topology: Topology, prefix: str, timeout_s: float = 15.0) -> dict[str, Any]:
    return wait_until(
        lambda: best(topology, prefix),
        timeout_s=timeout_s,
        desc=f"{prefix} best in FRR; speaker log: {topology.speaker.tail(5)}",
    )


def wait_gone(topology: Topology, prefix: str, timeout_s: float = 10.0) -> None:
    wait_until(lambda: best(topology, prefix) is None, timeout_s=timeout_s, desc=f"{prefix} gone from FRR")


def cluster_service(topology: Topology, name: str, ip: str, endpoint_node: str = "node-b") -> None:
    topology.api.apply(service("default", name, ips=[ip]))
    topology.api.apply(
        endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", endpoint_node, True, True)])
    )


def start(topology: Topology) -> None:
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")


def test_cluster_vip_is_announced_with_the_node_as_next_hop(topology: Topology) -> None:
    """A Cluster-policy VIP with a ready endpoint on another node is best in FRR via this node."""
    topology.api.apply(service("default", "web", ips=["192.0.2.10"]))
    start(topology)
    # Intermediate state: listed, no endpoints yet, nothing announced.
    topology.speaker.wait_event("reconcile_finished", desired=0)
    assert best(topology, VIP) is None
    topology.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    path = wait_best(topology, VIP)
    assert [hop["ip"] for hop in path["nexthops"]] == [SPEAKER_NEXT_HOP]
    assert path["path"] == "64513"
    announced = topology.speaker.wait_event("route_announced", prefix=VIP)
    assert announced["services"] == ["default/web"]
    assert announced["reason"] == "cluster_endpoint"


def test_local_vip_follows_the_local_endpoint(topology: Topology) -> None:
    """Local policy: announced only while this node runs a usable endpoint; withdrawn when it moves away."""
    topology.api.apply(service("default", "local", ips=["192.0.2.20"], policy="Local"))
    topology.api.apply(
        endpoint_slice("default", "local-1", service_name="local", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    # A canary applied afterwards: once it is best, the speaker has seen the Local objects too.
    cluster_service(topology, "canary", "192.0.2.99")
    start(topology)
    wait_best(topology, "192.0.2.99/32")
    assert best(topology, "192.0.2.20/32") is None, "Local VIP announced without a local endpoint"

    topology.api.apply(
        endpoint_slice("default", "local-1", service_name="local", endpoints=[("10.244.0.7", NODE, True, True)])
    )
    wait_best(topology, "192.0.2.20/32")

    topology.api.apply(
        endpoint_slice("default", "local-1", service_name="local", endpoints=[("10.244.1.9", "node-b", True, True)])
    )
    wait_gone(topology, "192.0.2.20/32")
    withdrawn = topology.speaker.wait_event("route_withdrawn", prefix="192.0.2.20/32")
    assert withdrawn["reason"] == "no_local_endpoints"
    assert withdrawn["services"] == ["default/local"]
    assert best(topology, "192.0.2.99/32") is not None


def test_terminating_but_serving_endpoint_keeps_the_route(topology: Topology) -> None:
    """ready=false, serving=true (a rollout) keeps the VIP; serving=false too withdraws it."""
    topology.api.apply(service("default", "roll", ips=["192.0.2.30"], policy="Local"))
    topology.api.apply(
        endpoint_slice("default", "roll-1", service_name="roll", endpoints=[("10.244.0.7", NODE, True, True)])
    )
    start(topology)
    wait_best(topology, "192.0.2.30/32")
    topology.api.apply(
        endpoint_slice("default", "roll-1", service_name="roll", endpoints=[("10.244.0.7", NODE, False, True)])
    )
    cluster_service(topology, "canary", "192.0.2.99")
    wait_best(topology, "192.0.2.99/32")
    assert best(topology, "192.0.2.30/32") is not None
    topology.api.apply(
        endpoint_slice("default", "roll-1", service_name="roll", endpoints=[("10.244.0.7", NODE, False, False)])
    )
    wait_gone(topology, "192.0.2.30/32")


def test_service_deleted_withdraws_its_vip(topology: Topology) -> None:
    """Deleting the Service withdraws its VIP, and the log says why."""
    cluster_service(topology, "web", "192.0.2.10")
    start(topology)
    wait_best(topology, VIP)
    topology.api.delete("services", "default/web")
    wait_gone(topology, VIP)
    assert topology.speaker.wait_event("route_withdrawn", prefix=VIP)["reason"] == "service_deleted"


def test_shared_vip_stays_while_any_service_qualifies(topology: Topology) -> None:
    """Two services on one IP: up while either qualifies, withdrawn when the last one stops."""
    topology.api.apply(service("default", "tcp", ips=["192.0.2.40"], policy="Local"))
    topology.api.apply(
        endpoint_slice("default", "tcp-1", service_name="tcp", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    cluster_service(topology, "udp", "192.0.2.40")
    start(topology)
    wait_best(topology, "192.0.2.40/32")
    announced = topology.speaker.wait_event("route_announced", prefix="192.0.2.40/32")
    assert announced["services"] == ["default/udp"]
    topology.api.delete("services", "default/udp")
    wait_gone(topology, "192.0.2.40/32")
    withdrawn = topology.speaker.wait_event("route_withdrawn", prefix="192.0.2.40/32")
    assert withdrawn["reason"] == "service_deleted"


def test_dropped_streams_and_410_relist_without_flapping(topology: Topology) -> None:
    """Cut watch streams and expire resourceVersions: relist, keep every route, no withdraw."""
    cluster_service(topology, "web", "192.0.2.10")
    cluster_service(topology, "api", "192.0.2.11")
    start(topology)
    wait_best(topology, VIP)
    wait_best(topology, "192.0.2.11/32")
    lists_before = len(topology.speaker.events("watch_listed"))
    with PathSampler(topology.frr, {VIP, "192.0.2.11/32"}) as sampler:
        topology.api.compact()  # every open stream ends with an in-stream 410
        # Changed while the speaker was relisting: must arrive through the relist or the new watch.
        cluster_service(topology, "late", "192.0.2.12")
        wait_until(
            lambda: len(topology.speaker.events("watch_listed")) >= lists_before + 3,
            timeout_s=15,
            desc="all three kinds relisted",
        )
        assert len(topology.speaker.events("watch_expired")) >= 3
        wait_best(topology, "192.0.2.12/32")
        # A stream dropped without expiry resumes from its resourceVersion (no relist).
        wait_until(lambda: topology.api.open_watches >= 3, timeout_s=10, desc="three watches open again")
        assert topology.api.drop_watches() >= 3
        topology.api.delete("services", "default/late")
        wait_gone(topology, "192.0.2.12/32")
    assert sampler.samples >= 5, sampler.samples
    assert sampler.missing == [], f"routes went missing during the relist: {sampler.missing[:5]}"
    withdrawn = [e["prefix"] for e in topology.speaker.events("route_withdrawn")]
    assert withdrawn == ["192.0.2.12/32"]
    assert len(topology.speaker.events("watch_listed")) == lists_before + 3


def test_exabgp_killed_is_restarted_and_routes_come_back(topology: Topology) -> None:
    """SIGKILL ExaBGP: the supervisor restarts it and replays every route."""
    cluster_service(topology, "web", "192.0.2.10")
    start(topology)
    wait_best(topology, VIP)
    first = topology.speaker.exabgp_pid()
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    restarted = topology.speaker.wait_event("exabgp_started", after=1, timeout_s=10)
    assert restarted["pid"] != first
    wait_until(
        lambda: best(topology, VIP) and pid_alive(restarted["pid"]),
        timeout_s=15,
        desc="route back through the new ExaBGP",
    )
    print(f"ExaBGP SIGKILL -> route best again: {time.monotonic() - killed_at:.2f} s")
    assert not pid_alive(first)
    assert topology.speaker.events("exabgp_exited", pid=first)


def test_sigterm_withdraws_and_leaves_no_process(topology: Topology) -> None:
    """SIGTERM: routes withdrawn, ExaBGP stopped, exit 0 within 10 s."""
    cluster_service(topology, "web", "192.0.2.10")
    start(topology)
    wait_best(topology, VIP)
    exabgp_pid = topology.speaker.exabgp_pid()
    code, took_s = topology.speaker.terminate(timeout_s=10)
    assert code == 0, topology.speaker.tail()
    assert took_s < 10
    wait_gone(topology, VIP, timeout_s=5)
    assert not pid_alive(exabgp_pid)
    withdrawn = topology.speaker.events("route_withdrawn", prefix=VIP)
    assert withdrawn and withdrawn[-1]["reason"] == "shutdown"
    assert withdrawn[-1]["confirmed"] is True


def test_frozen_exabgp_is_detected_by_the_ack_deadline(topology: Topology) -> None:
    """SIGSTOP ExaBGP: the next command goes unacknowledged, ExaBGP is killed, restarted, replayed."""
    cluster_service(topology, "web", "192.0.2.10")
    topology.speaker.start("--exabgp-ack-timeout", "2")
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")
    wait_best(topology, VIP)
    frozen = topology.speaker.exabgp_pid()
    os.kill(frozen, signal.SIGSTOP)
    cluster_service(topology, "api", "192.0.2.11")
    unresponsive = topology.speaker.wait_event("exabgp_unresponsive", timeout_s=10)
    assert unresponsive["pid"] == frozen
    restarted = topology.speaker.wait_event("exabgp_started", after=1, timeout_s=10)
    wait_best(topology, "192.0.2.11/32")
    wait_best(topology, VIP)
    assert not pid_alive(frozen)
    assert pid_alive(restarted["pid"])


DUAL_STACK_CONFIG = """\
apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
  - name: tor-a-v6
    peerAddress: fd00::1
    peerASN: 64512
"""


def test_dual_stack_vips_go_to_the_session_of_their_family(topology: Topology) -> None:
    """A /32 over the IPv4 session and a /128 over the IPv6 one, each with this node's address."""
    topology.speaker.config_path.write_text(DUAL_STACK_CONFIG)
    topology.api.apply(service("default", "dual", ips=["192.0.2.50", "2001:db8::50"]))
    topology.api.apply(
        endpoint_slice("default", "dual-1", service_name="dual", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a-v6")
    v6 = wait_until(lambda: topology.frr.best_paths("ipv6").get("2001:db8::50/128"), timeout_s=15, desc="/128 best")
    print("IPv6 next hops:", v6["nexthops"])
    assert [hop["ip"] for hop in v6["nexthops"] if hop.get("scope") == "global"] == ["fd00::2"]
    v4 = wait_best(topology, "192.0.2.50/32")
    assert v4["peerId"] == "10.0.0.2"
    assert set(topology.frr.best_paths("ipv6")) == {"2001:db8::50/128"}
    assert set(topology.frr.best_paths()) == {"192.0.2.50/32"}
    # Withdraw both when the endpoint goes.
    topology.api.apply(endpoint_slice("default", "dual-1", service_name="dual", endpoints=[]))
    wait_until(lambda: not topology.frr.best_paths("ipv6"), timeout_s=10, desc="/128 withdrawn")
    wait_gone(topology, "192.0.2.50/32")
