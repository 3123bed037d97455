"""Per-node settings against real FRR: one speaker whose Node labels change sees the router
take the ASN and router ID its node group gets; a node selected by two peers of one router
runs neither, and recovers when its labels change back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.kubeapi import endpoint_slice, node, service
from lab.netns import Frr, Lab, wait_until
from lab.topology import NODE, SingleNode, single_node
from tests.integration.conftest import require_prerequisites

ROUTER = """frr defaults datacenter
log stdout informational
router bgp 64512
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.0.0.2 remote-as external
 neighbor 10.0.0.2 timers 1 3
 neighbor 10.0.0.2 timers connect 1
 address-family ipv4 unicast
  neighbor 10.0.0.2 activate
 exit-address-family
"""
# One router reached with two ASNs by node group (MetalLB: two BGPPeers), and a router ID
# for this one node by its hostname label.
SPEAKER = """apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
peers:
  - name: tor-r1
    peerAddress: 10.0.0.1
    peerASN: 64512
    myASN: 64601
    holdTime: 3s
    nodeSelectors: [{matchLabels: {rack: r1}}]
  - name: tor-g2
    peerAddress: 10.0.0.1
    peerASN: 64512
    myASN: 64602
    holdTime: 3s
    nodeSelectors: [{matchExpressions: [{key: group, operator: In, values: [g2]}]}]
nodeOverrides:
  - name: node-a-id
    nodeSelectors: [{matchLabels: {kubernetes.io/hostname: node-a}}]
    routerID: 10.1.1.1
"""
VIP = "192.0.2.10/32"


@pytest.fixture
def built() -> Iterator[SingleNode]:
    require_prerequisites()
    with Lab() as lab:
        topology = single_node(lab, frr_config=ROUTER, speaker_config=SPEAKER)
        try:
            yield topology
        finally:
            topology.close()


def session(frr: Frr) -> tuple[str | None, int | None, str | None, bool]:
    """(state, the ASN the router sees from the node, the node's router ID, VIP best)."""
    neighbor = frr.neighbor("10.0.0.2")
    return (
        neighbor.get("bgpState"),
        neighbor.get("remoteAs"),
        neighbor.get("remoteRouterId"),
        frr.best_path(VIP) is not None,
    )


def test_node_labels_choose_asn_and_router_id_and_a_double_match_runs_neither(built: SingleNode) -> None:
    """rack=r1 + hostname -> AS 64601 with router ID 10.1.1.1; r1 and g2 -> no session, one error;
    g2 only -> AS 64602 with the default router ID, and the conflict's end is logged."""
    frr, api, speaker = built.frr, built.api, built.speaker
    api.apply(node(NODE, labels={"rack": "r1", "kubernetes.io/hostname": NODE}))
    api.apply(service("default", "web", ips=["192.0.2.10"]))
    api.apply(endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)]))
    speaker.start()
    wait_until(
        lambda: session(frr) == ("Established", 64601, "10.1.1.1", True) or None,
        timeout_s=30,
        desc=f"AS 64601 / 10.1.1.1 with the VIP at the router; last: {session(frr)}; speaker: {speaker.tail(6)}",
    )

    api.apply(node(NODE, labels={"rack": "r1", "group": "g2", "kubernetes.io/hostname": NODE}))
    conflict = speaker.wait_event("peer_address_conflict")
    assert conflict["peers"] == ["tor-r1", "tor-g2"] and "10.0.0.1" in conflict["detail"]
    assert speaker.wait_event("session_stopping", peer="tor-r1")["reason"] == "node_not_selected"
    wait_until(
        lambda: session(frr)[0] != "Established" and not session(frr)[3],
        timeout_s=15,
        desc=f"no session and no VIP while both peers select the node; last: {session(frr)}",
    )
    assert not speaker.events("session_started", peer="tor-g2")

    api.apply(node(NODE, labels={"group": "g2"}))
    wait_until(
        lambda: session(frr) == ("Established", 64602, "10.0.0.2", True) or None,
        timeout_s=30,
        desc=f"AS 64602 / 10.0.0.2 with the VIP at the router; last: {session(frr)}; speaker: {speaker.tail(6)}",
    )
    assert speaker.wait_event("peer_address_conflict_resolved")["peers"] == ["tor-r1", "tor-g2"]
    assert len(speaker.events("peer_address_conflict")) == 1  # logged once while it lasted
