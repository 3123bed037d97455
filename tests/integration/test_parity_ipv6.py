"""MetalLB's IPv6 BGP scenarios against FRR over an IPv6 session (docs/metallb-parity.md).

The single-node topology (router fd00::1, node fd00::2, with 10.0.0.1/10.0.0.2 on the same
link): the speaker's only session runs over IPv6 and carries IPv4 too, the reverse of the
IPv6-over-IPv4 case in test_peering.py. IPv4 NLRI over an IPv6 session go as plain IPv4
unicast with an IPv4 NEXT_HOP attribute (the node's IPv4 address on the link, found by
bgpspeaker.peers), which FRR 8.4 accepts without the extended-next-hop capability
(RFC 8950 is only needed for an IPv6 next hop on IPv4 NLRI).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.bfdrouter import bfd_profile_block, frr_with_bfd
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from lab.netns import Frr, Lab, PathSampler, wait_until
from lab.speaker import SpeakerProcess
from lab.topology import SingleNode, single_node
from tests.integration.conftest import NODE, require_prerequisites

PASSWORD = "v6-md5-secret"


def router(*, asn: int, families: tuple[str, ...], extra: str = "", neighbor: str = "fd00::2") -> str:
    """FRR with one neighbor (default: the node's IPv6 address), activated in ``families``."""
    lines = [
        "frr defaults datacenter",
        "hostname tor-v6",
        "log stdout informational",
        f"router bgp {asn}",
        " bgp router-id 10.0.0.1",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        f" neighbor {neighbor} remote-as 64513",
        f" neighbor {neighbor} timers 1 3",
        f" neighbor {neighbor} timers connect 1",
        *(f" {line}" for line in extra.splitlines() if line.strip()),
    ]
    for family in families:
        lines += [f" address-family {family} unicast", f"  neighbor {neighbor} activate", " exit-address-family"]
    return "\n".join(lines) + "\n"


def speaker(peer_asn: int, peer_extra: str = "", extra: str = "", *, peer: str = "fd00::1") -> str:
    return (
        "apiVersion: bgpspeaker.io/v1alpha1\n"
        "kind: SpeakerConfig\n"
        "myASN: 64513\n"
        "routerID: 10.0.0.2\n"
        "peers:\n"
        "  - name: tor-v6\n"
        f"    peerAddress: {peer}\n"
        f"    peerASN: {peer_asn}\n" + peer_extra + extra
    )


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_prerequisites()
    with Lab("v6") as built:
        yield built


def lb_service(topology: SingleNode, name: str, ips: list[str], *, node: str = "node-b", **kwargs: Any) -> None:
    topology.api.apply(service("default", name, ips=ips, **kwargs))
    topology.api.apply(
        endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", node, True, True)])
    )


def path_of(frr: Frr, prefix: str) -> dict[str, Any] | None:
    return frr.best_path(prefix)


def wait_attrs(frr: Frr, prefix: str, want: dict[str, Any], *, timeout_s: float = 20.0) -> dict[str, Any]:
    """Wait until ``prefix`` is best with every (dotted key -> value) of ``want``; report the last path."""

    def view(path: dict[str, Any] | None) -> dict[str, Any]:
        if path is None:
            return {}
        hops = [hop["ip"] for hop in path.get("nexthops", []) if hop.get("scope", "global") == "global"]
        return {
            "nexthop": hops[0] if hops else None,
            "locPrf": path.get("locPrf"),
            "community": path.get("community", {}).get("string"),
            "largeCommunity": path.get("largeCommunity", {}).get("string"),
            "peer": path.get("peer", {}).get("peerId"),
        }

    seen: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        path = path_of(frr, prefix)
        seen[0] = view(path)
        return path if path is not None and all(seen[0].get(k) == v for k, v in want.items()) else None

    try:
        found = wait_until(check, timeout_s=timeout_s, desc=f"{prefix} best with {want}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen: {seen[0]}") from None
    assert found is not None  # wait_until returns a truthy value
    return found


BOTH_FAMILIES_IBGP = """    families: [ipv4, ipv6]
advertisements:
  - name: tagged
    serviceSelectors: [{matchLabels: {app: tagged}}]
    communities: ["64512:100", "large:64512:1:1"]
    localPref: 200
  - name: aggregated
    serviceSelectors: [{matchLabels: {app: aggregated}}]
    aggregationLength: 24
    aggregationLengthV6: 120
    communities: ["64512:200", "large:64512:2:2"]
    localPref: 150
"""


@pytest.mark.parametrize(
    ("router_side", "node_side"),
    [("fd00::1", "fd00::2"), ("10.0.0.1", "10.0.0.2")],
    ids=["ipv6-session", "ipv4-session"],
)
def test_both_families_over_one_session_with_attributes_and_aggregation(
    lab: Lab, router_side: str, node_side: str
) -> None:
    """iBGP over one session (IPv6, then IPv4) carrying both families: the IPv4 VIP arrives
    with the node's IPv4 next hop (10.0.0.2, not an IPv6 or mapped one), the IPv6 VIP with
    fd00::2; communities, large communities and local-pref on both families;
    aggregationLength 24 and aggregationLengthV6 120 announce the covering prefixes only,
    with their own attributes."""
    topology = single_node(
        lab,
        frr_config=router(asn=64513, families=("ipv4", "ipv6"), neighbor=node_side),
        speaker_config=speaker(64513, BOTH_FAMILIES_IBGP, peer=router_side),
    )
    try:
        lb_service(topology, "web", ["192.0.2.10", "2001:db8::10"], labels={"app": "tagged"})
        lb_service(topology, "batch", ["198.51.100.7", "2001:db8:1::7"], labels={"app": "aggregated"})
        topology.speaker.start()
        tagged = {"locPrf": 200, "community": "64512:100", "largeCommunity": "64512:1:1", "peer": node_side}
        v4 = wait_attrs(topology.frr, "192.0.2.10/32", {"nexthop": "10.0.0.2", **tagged})
        v6 = wait_attrs(topology.frr, "2001:db8::10/128", {"nexthop": "fd00::2", **tagged})
        print(f"over the {node_side} session: IPv4", v4["nexthops"], "IPv6", v6["nexthops"])
        aggregated = {"locPrf": 150, "community": "64512:200", "largeCommunity": "64512:2:2"}
        wait_attrs(topology.frr, "198.51.100.0/24", {"nexthop": "10.0.0.2", **aggregated})
        wait_attrs(topology.frr, "2001:db8:1::/120", {"nexthop": "fd00::2", **aggregated})
        assert set(topology.frr.best_paths("ipv4")) == {"192.0.2.10/32", "198.51.100.0/24"}
        assert set(topology.frr.best_paths("ipv6")) == {"2001:db8::10/128", "2001:db8:1::/120"}
        assert topology.frr.neighbor(node_side)["bgpState"] == "Established"
    finally:
        topology.close()


def test_ipv4_over_an_ipv6_session_without_an_ipv4_address_is_dropped_with_a_reason(lab: Lab) -> None:
    """No IPv4 address on the node's interface toward the IPv6 peer: there is no next hop to
    give IPv4 routes, so the session carries IPv6 only, the speaker says why, and the IPv6
    VIP still arrives."""
    topology = single_node(
        lab,
        frr_config=router(asn=64513, families=("ipv4", "ipv6")),
        speaker_config=speaker(64513, "    families: [ipv4, ipv6]\n"),
    )
    try:
        shown = json.loads(lab.run("ip", "-j", "-n", topology.speaker.netns, "-4", "addr", "show", "to", "10.0.0.2"))
        lab.run("ip", "-n", topology.speaker.netns, "addr", "del", "10.0.0.2/24", "dev", shown[0]["ifname"])
        lb_service(topology, "web", ["192.0.2.10", "2001:db8::10"])
        topology.speaker.start()
        wait_attrs(topology.frr, "2001:db8::10/128", {"nexthop": "fd00::2"})
        degraded = topology.speaker.wait_event("peer_degraded", peer="tor-v6")
        assert degraded["problem"].startswith("ipv4 dropped: no IPv4 address"), degraded
        assert topology.frr.neighbor("fd00::2")["bgpState"] == "Established"
        assert topology.frr.best_path("192.0.2.10/32") is None
    finally:
        topology.close()


MD5_GR_LOCAL = """    gracefulRestart: 120s
    passwordFile: PASSWORD_FILE
shutdown: {mode: keep}
"""


def test_md5_graceful_restart_and_local_policy_over_an_ipv6_session(lab: Lab) -> None:
    """eBGP over IPv6 with MD5 and graceful restart: a Local VIP is announced while this node
    has the endpoint and withdrawn when it moves away; a restart of the speaker (keep) never
    takes the VIP out of FRR's table (stale, then refreshed)."""
    topology = single_node(
        lab,
        frr_config=router(
            asn=64512,
            families=("ipv6",),
            extra=f"bgp graceful-restart\nneighbor fd00::2 password {PASSWORD}",
        ),
        speaker_config=speaker(64512),
    )
    password_file = lab.root / "tor-v6.password"
    password_file.write_text(PASSWORD + "\n")
    topology.speaker.config_path.write_text(speaker(64512, MD5_GR_LOCAL.replace("PASSWORD_FILE", str(password_file))))
    prefix = "2001:db8::20/128"
    try:
        lb_service(topology, "local", ["2001:db8::20"], policy="Local", node=NODE)
        topology.speaker.start()
        wait_attrs(topology.frr, prefix, {"nexthop": "fd00::2"})
        neighbor = topology.frr.neighbor("fd00::2")
        assert neighbor["bgpState"] == "Established"
        assert neighbor.get("gracefulRestartInfo", {}).get("remoteGrMode") == "Restart", neighbor.get(
            "gracefulRestartInfo"
        )

        topology.api.apply(
            endpoint_slice("default", "local-1", service_name="local", endpoints=[("10.244.1.5", "node-b", True, True)])
        )
        wait_until(lambda: path_of(topology.frr, prefix) is None, timeout_s=15, desc="Local VIP withdrawn")
        topology.api.apply(
            endpoint_slice("default", "local-1", service_name="local", endpoints=[("10.244.1.5", NODE, True, True)])
        )
        wait_attrs(topology.frr, prefix, {"nexthop": "fd00::2"})

        with PathSampler(topology.frr, {prefix}, afi="ipv6") as sampler:
            code, _stop_s = topology.speaker.terminate()
            assert code == 0, topology.speaker.tail()
            wait_until(
                lambda: any(p.get("stale") for p in topology.frr.json(f"show bgp ipv6 unicast {prefix} json")["paths"]),
                timeout_s=15,
                desc="FRR keeps the VIP as stale",
            )
            topology.speaker.start()
            topology.speaker.wait_event("end_of_rib_sent", timeout_s=30)
            wait_until(
                lambda: (path := path_of(topology.frr, prefix)) is not None and not path.get("stale"),
                timeout_s=10,
                desc="the VIP refreshed (not stale) after our End-of-RIB",
            )
        assert sampler.samples > 10 and sampler.fewest == 1, sampler.missing[:3]
        assert PASSWORD not in topology.speaker.log_path.read_text()
    finally:
        topology.close()


BFD_BGPD = """frr defaults datacenter
hostname tor-v6
log stdout informational
router bgp 64512
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor fd00::2 remote-as 64513
 neighbor fd00::2 timers 30 90
 neighbor fd00::2 timers connect 1
 neighbor fd00::2 bfd profile fast
 address-family ipv6 unicast
  neighbor fd00::2 activate
 exit-address-family
"""
BFD_SPEAKER = """    holdTime: 90s
    bfdProfile: fast
bfdProfiles:
  - name: fast
    receiveInterval: 300ms
    transmitInterval: 300ms
    detectMultiplier: 3
"""


def test_bfd_over_an_ipv6_session_takes_bgp_down_and_brings_it_back(lab: Lab) -> None:
    """BFD with a profile over an IPv6 session (MetalLB's IPv6 BFD entries): FRR's bfdd sees
    the speaker up at 300 ms; the node going dark takes the VIP out of FRR within seconds
    although the hold time is 90 s; light again, BFD and the VIP come back."""
    tor, node_ns = lab.netns("tor"), lab.netns("node")
    lab.link(tor, ["10.0.0.1/24", "fd00::1/64"], node_ns, ["10.0.0.2/24", "fd00::2/64"])
    frr = frr_with_bfd(lab, tor, BFD_BGPD, bfd_profile_block())
    api = FakeKubeApi(netns=node_ns).start()
    prefix = "2001:db8::30/128"
    try:
        api.apply(node(NODE))
        api.apply(service("default", "web", ips=["2001:db8::30"]))
        api.apply(endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", NODE, True, True)]))
        speaker_process = SpeakerProcess(
            netns=node_ns,
            workdir=lab.root / "speaker",
            config=speaker(64512, BFD_SPEAKER),
            kubeconfig=api.kubeconfig(),
            node_name=NODE,
        )
        try:
            speaker_process.start()
            wait_attrs(frr, prefix, {"nexthop": "fd00::2"}, timeout_s=30)
            peer = wait_until(
                lambda: (p := frr.bfd_peer("fd00::2")) and p.get("status") == "up" and p,
                timeout_s=20,
                desc=f"FRR's BFD peer fd00::2 up: {frr.bfd_peers()}",
            )
            assert peer["receive-interval"] == 300 and peer["transmit-interval"] == 300, peer
            speaker_process.wait_event("bfd_up", peer="tor-v6", timeout_s=10)

            rules = lab.root / "dark.nft"
            rules.write_text(
                "table inet v6dark {\n"
                " chain in { type filter hook input priority -10; ip6 saddr fd00::1 drop; }\n"
                " chain out { type filter hook output priority -10; ip6 daddr fd00::1 drop; }\n"
                "}\n"
            )
            darkened = time.monotonic()
            lab.run("ip", "netns", "exec", node_ns, "nft", "-f", str(rules))
            speaker_process.wait_event("bfd_down", peer="tor-v6", timeout_s=10)
            wait_until(lambda: frr.best_path(prefix) is None, timeout_s=10, desc="FRR drops the VIP (its BFD)")
            gone_s = time.monotonic() - darkened
            print(f"IPv6 BFD: VIP gone from FRR {gone_s:.2f} s after the node went dark (hold time 90 s)")
            assert gone_s < 5.0, gone_s

            lab.run("ip", "netns", "exec", node_ns, "nft", "delete", "table", "inet", "v6dark")
            speaker_process.wait_event("bfd_up", peer="tor-v6", after=1, timeout_s=20)
            wait_attrs(frr, prefix, {"nexthop": "fd00::2"}, timeout_s=30)
        finally:
            speaker_process.close()
    finally:
        api.stop()
