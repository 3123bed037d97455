"""Unnumbered peering against real FRR: a link-local peerAddress with ``interface`` (ExaBGP's
``source-interface``, SO_BINDTODEVICE as ExaBGP's unprivileged user) comes up, and an IPv6
VIP reaches the router with the global next hop ``ipv6NextHop`` names. Without the binding
ExaBGP's connect() to fe80::1 fails with EINVAL (a link-local address needs a link).

The router peers with ``neighbor fe80::2 interface IFNAME``. FRR 8.4's interface-only form
(``neighbor IFNAME interface remote-as``, MetalLB's unnumbered e2e) stays Idle, "Waiting for
Peer IPv6 LLA": it learns the peer's address from Router Advertisements, which a node
running only bgpspeaker does not send.

    ns "tor" (FRR + zebra, AS 64512) fe80::1 fd00::1 ==veth== fe80::2 fd00::2 ns "node" (AS 64513)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, run_in, wait_until
from lab.topology import Peering, _speaker_side
from tests.integration.conftest import require_prerequisites

VIP = "2001:db8::10"


def router(interface: str) -> str:
    return f"""frr defaults datacenter
log stdout informational
router bgp 64512
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor fe80::2 remote-as 64513
 neighbor fe80::2 interface {interface}
 neighbor fe80::2 timers 1 3
 neighbor fe80::2 timers connect 1
 address-family ipv6 unicast
  neighbor fe80::2 activate
 exit-address-family
"""


def speaker(interface: str) -> str:
    return f"""apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
peers:
  - name: tor-ll
    peerAddress: fe80::1
    interface: {interface}
    peerASN: 64512
    holdTime: 3s
    ipv6NextHop: fd00::2
"""


@pytest.fixture
def link_local() -> Iterator[Peering]:
    require_prerequisites()
    with Lab() as lab:
        tor, node_ns = lab.netns("tor"), lab.netns("node")
        tor_if, node_if = lab.link(tor, ["fe80::1/64", "fd00::1/64"], node_ns, ["fe80::2/64", "fd00::2/64"])
        for ns, ifname, mine in ((tor, tor_if, "fe80::1"), (node_ns, node_if, "fe80::2")):
            # Only the configured link-local address: the kernel's EUI-64 one would be the
            # source the kernel picks, which the other side does not expect.
            for address in json.loads(
                lab.run("ip", "-j", "-n", ns, "-6", "addr", "show", "dev", ifname, "scope", "link")
            )[0]["addr_info"]:
                if address.get("local", mine) != mine:
                    lab.run("ip", "-n", ns, "-6", "addr", "del", f"{address['local']}/64", "dev", ifname)
        frr = lab.frr(tor, router(tor_if), zebra=True)
        # bgpd read its config before zebra told it about the interface: start it again.
        wait_until(lambda: tor_if in frr.vtysh("show interface brief"), timeout_s=10, desc="zebra knows the link")
        frr.restart_bgpd()
        peering = _speaker_side(lab, node_ns, {"tor": frr}, speaker(node_if))
        try:
            yield peering
        finally:
            peering.close()


def test_link_local_peer_with_interface(link_local: Peering) -> None:
    """fe80::1 on the node's interface: Established, and the VIP's next hop is fd00::2."""
    peering = link_local
    frr = peering.routers["tor"]
    peering.api.apply(service("default", "web", ips=[VIP]))
    peering.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    peering.speaker.start()

    def up() -> bool | None:
        return frr.neighbor("fe80::2").get("bgpState") == "Established" or None

    try:
        wait_until(up, timeout_s=30, desc="link-local session Established")
    except AssertionError:  # FRR's and the node's view, for the failure message
        neighbor = frr.neighbor("fe80::2")
        facts = {k: neighbor.get(k) for k in ("bgpState", "lastResetDueTo", "hostLocal", "hostForeign")}
        addresses = run_in(peering.node_ns, "ip", "-6", "addr").stdout
        raise AssertionError(f"{facts}\n{addresses}\n{peering.speaker.tail(12)}") from None
    path = wait_until(lambda: frr.best_path(f"{VIP}/128"), timeout_s=15, desc=f"{VIP}/128 best at the router")
    hops = {hop.get("ip") for hop in path.get("nexthops", [])}
    assert "fd00::2" in hops
