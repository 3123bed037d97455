"""Peering and advertisement options against real FRR: MD5, timers, multihop, MP-BGP,
per-peer attributes, aggregation, selectors, annotations and live reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.kubeapi import endpoint_slice, node, secret, service
from lab.netns import Frr, Lab, wait_until
from lab.topology import Peering, routed_hop, two_tors
from tests.integration.conftest import NODE, require_prerequisites


def frr_config(asn: int, router_id: str, neighbor: str, remote_as: int, *extra: str, ipv6: bool = False) -> str:
    """A bgpd.conf with one neighbor (the node), fast connect retries, and ``extra`` neighbor lines."""
    lines = [
        "frr defaults datacenter",
        "log stdout informational",
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        f" neighbor {neighbor} remote-as {remote_as}",
        f" neighbor {neighbor} timers connect 1",
        *(f" neighbor {neighbor} {line}" for line in extra),
        " address-family ipv4 unicast",
        f"  neighbor {neighbor} activate",
        " exit-address-family",
    ]
    if ipv6:
        lines += [" address-family ipv6 unicast", f"  neighbor {neighbor} activate", " exit-address-family"]
    return "\n".join(lines) + "\n"


HEADER = """apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
"""


def cluster_service(peering: Peering, name: str, ip: str, **kwargs: Any) -> None:
    """A Cluster-policy LoadBalancer service with one ready endpoint on node-b."""
    peering.api.apply(service("default", name, ips=[ip], **kwargs))
    peering.api.apply(
        endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", "node-b", True, True)])
    )


def wait_path(frr: Frr, prefix: str, *, timeout_s: float = 15.0, **want: Any) -> dict[str, Any]:
    """Poll until ``prefix`` is best in ``frr`` with every key in ``want`` equal; report the last path seen."""
    seen: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        path = frr.best_path(prefix)
        seen[0] = path
        if path is None:
            return None
        return path if all(_get(path, key) == value for key, value in want.items()) else None

    try:
        return wait_until(check, timeout_s=timeout_s, desc=f"{prefix} best in {frr.netns} with {want}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last path seen: {seen[0]}") from None


def wait_absent(frr: Frr, prefix: str, *, timeout_s: float = 10.0) -> None:
    wait_until(lambda: frr.best_path(prefix) is None, timeout_s=timeout_s, desc=f"{prefix} gone from {frr.netns}")


def _get(path: dict[str, Any], dotted: str) -> Any:
    value: Any = path
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def established(frr: Frr, address: str) -> bool:
    return frr.neighbor(address).get("bgpState") == "Established"


def wait_established(peering: Peering, frr: Frr, address: str, timeout_s: float = 20.0) -> dict[str, Any]:
    return wait_until(
        lambda: established(frr, address) and frr.neighbor(address),
        timeout_s=timeout_s,
        desc=f"{address} Established at {frr.netns}; speaker: {peering.speaker.tail(8)}",
    )


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_prerequisites()
    with Lab() as built:
        yield built


# -- two routers, different advertisements ----------------------------------------------

RACK_CONFIG = (
    HEADER
    + """serviceAnnotations: true
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
    families: [ipv4, ipv6]
  - name: tor-b
    peerAddress: 10.0.1.1
    peerASN: 64513
    passwordSecret: {name: bgp-auth, namespace: kube-system, key: tor-b}
advertisements:
  - name: public
    serviceSelectors: [{matchLabels: {exposure: public}}]
    peers: [tor-a]
    communities: ["64512:100", "no-export", "large:64512:1:1"]
    med: MED
    asPathPrepend: 2
  - name: aggregated
    serviceSelectors: [{matchLabels: {exposure: aggregated}}]
    peers: [tor-a]
    aggregationLength: 24
  - name: internal
    peers: [tor-b]
    localPref: 200
"""
)
TOR_B_PASSWORD = b"tor-b-md5-key"


def rack(lab: Lab, config: str, *, tor_b_hold: str = "") -> Peering:
    peering = two_tors(
        lab,
        tor_a=frr_config(64512, "10.0.0.1", "10.0.0.2", 64513, ipv6=True),
        tor_b=frr_config(64513, "10.0.1.1", "10.0.1.2", 64513, f"password {TOR_B_PASSWORD.decode()}"),
        speaker_config=config,
    )
    peering.api.apply(secret("kube-system", "bgp-auth", {"tor-b": TOR_B_PASSWORD}))
    return peering


def test_two_peers_get_their_own_attributes(lab: Lab) -> None:
    """eBGP tor-a: communities, large community, MED, prepend, /24 aggregate and an IPv6 VIP over the IPv4
    session with the node's global IPv6 next hop; iBGP tor-b (MD5 from a Secret): local-pref 200."""
    peering = rack(lab, RACK_CONFIG.replace("MED", "10"))
    tor_a, tor_b = peering.routers["tor-a"], peering.routers["tor-b"]
    try:
        cluster_service(peering, "web", "192.0.2.10", labels={"exposure": "public"})
        cluster_service(peering, "web6", "2001:db8::10", labels={"exposure": "public"})
        cluster_service(peering, "batch", "198.51.100.7", labels={"exposure": "aggregated"})
        cluster_service(
            peering,
            "tagged",
            "192.0.2.20",
            labels={"exposure": "public"},
            annotations={"bgpspeaker.io/communities": "64512:999"},
        )
        cluster_service(
            peering, "typo", "192.0.2.30", labels={"exposure": "public"}, annotations={"bgpspeaker.io/med": "ten"}
        )
        peering.speaker.start()

        path = wait_path(
            tor_a,
            "192.0.2.10/32",
            community__string="64512:100 no-export",
            largeCommunity__string="64512:1:1",
            metric=10,
            aspath__string="64513 64513 64513",
        )
        print(f"tor-a 192.0.2.10/32: {path['community']} {path['largeCommunity']} med {path['metric']}")
        v6 = wait_path(tor_a, "2001:db8::10/128")
        hops = [hop["ip"] for hop in v6["nexthops"]]
        assert hops[0] == "fd00::2", hops  # the node's global IPv6, not ::ffff:10.0.0.2
        wait_path(tor_a, "198.51.100.0/24")
        assert tor_a.best_path("198.51.100.7/32") is None
        wait_path(tor_a, "192.0.2.20/32", community__string="64512:100 64512:999 no-export")
        wait_path(tor_a, "192.0.2.30/32", metric=10)  # the bad annotation is ignored, the VIP stays
        invalid = peering.speaker.wait_event("service_annotation_invalid", service="default/typo")
        assert "bgpspeaker.io/med" in invalid["detail"]

        internal = wait_path(tor_b, "192.0.2.10/32", locPrf=200)
        assert internal["aspath"]["string"] == "Local" and "community" not in internal
        wait_path(tor_b, "198.51.100.7/32", locPrf=200)
        assert tor_b.neighbor("10.0.1.2")["bgpState"] == "Established"
        log_text = peering.speaker.log_path.read_text()
        assert TOR_B_PASSWORD.decode() not in log_text
    finally:
        peering.close()


def test_reload_changes_one_peer_without_resetting_the_other(lab: Lab) -> None:
    """A new MED re-announces on tor-a without a reset; a new tor-b hold time resets only tor-b;
    a broken file keeps the running config."""
    peering = rack(lab, RACK_CONFIG.replace("MED", "10"))
    tor_a, tor_b = peering.routers["tor-a"], peering.routers["tor-b"]
    try:
        cluster_service(peering, "web", "192.0.2.10", labels={"exposure": "public"})
        peering.speaker.start()
        wait_path(tor_a, "192.0.2.10/32", metric=10)
        wait_path(tor_b, "192.0.2.10/32", locPrf=200)
        a_before = tor_a.neighbor("10.0.0.2")["connectionsEstablished"]
        b_before = tor_b.neighbor("10.0.1.2")["connectionsEstablished"]

        changed = RACK_CONFIG.replace("MED", "20").replace(
            "    passwordSecret:", "    holdTime: 30s\n    passwordSecret:"
        )
        started = time.monotonic()
        peering.speaker.reload(changed)
        wait_path(tor_a, "192.0.2.10/32", metric=20)
        med_s = time.monotonic() - started
        wait_until(
            lambda: (
                tor_b.neighbor("10.0.1.2").get("connectionsEstablished", 0) > b_before
                and established(tor_b, "10.0.1.2")
            ),
            timeout_s=20,
            desc="tor-b re-established with the new hold time",
        )
        wait_path(tor_b, "192.0.2.10/32", locPrf=200)
        peer_b = tor_b.neighbor("10.0.1.2")
        assert peer_b["bgpTimerHoldTimeMsecs"] == 9000  # min(ours 30 s, FRR's datacenter 9 s)
        print(f"reload: new MED at tor-a after {med_s:.2f} s; tor-b re-established")
        assert tor_a.neighbor("10.0.0.2")["connectionsEstablished"] == a_before
        assert tor_a.neighbor("10.0.0.2")["bgpState"] == "Established"

        peering.speaker.reload(changed.replace("myASN: 64513", "myASN: nope"))
        failed = peering.speaker.wait_event("config_reload_failed")
        assert any(problem.startswith("myASN:") for problem in failed["problems"])
        assert tor_a.best_path("192.0.2.10/32") is not None
        assert tor_a.neighbor("10.0.0.2")["connectionsEstablished"] == a_before
        assert tor_b.neighbor("10.0.1.2")["connectionsEstablished"] == b_before + 1

        without_b = changed.split("  - name: tor-b")[0] + "advertisements: []\n"
        peering.speaker.reload(without_b)
        wait_absent(tor_b, "192.0.2.10/32")
        assert peering.speaker.wait_event("session_stopping", peer="tor-b")["reason"] == "peer_removed"
        assert peering.speaker.wait_event("route_withdrawn", peers=["tor-b"])["reason"] == "peer_removed"
        wait_path(tor_a, "192.0.2.10/32", metric=None)  # no advertisements: the default, plain
        assert tor_a.neighbor("10.0.0.2")["connectionsEstablished"] == a_before
    finally:
        peering.close()


# -- one router: MD5 and timers -----------------------------------------------------------

SINGLE = (
    HEADER
    + """peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
"""
)


def tor_a_only(lab: Lab, config: str, *frr_extra: str) -> Peering:
    return two_tors(
        lab,
        tor_a=frr_config(64512, "10.0.0.1", "10.0.0.2", 64513, *frr_extra),
        tor_b=frr_config(64513, "10.0.1.1", "10.0.1.9", 64513),  # no neighbor for us: idle
        speaker_config=config,
    )


def test_md5_wrong_password_is_reported_then_fixed_by_rotating_the_file(lab: Lab) -> None:
    """Wrong MD5 password: no session and one clear log line; the right one, written to the same file: up."""
    peering = tor_a_only(lab, "", "password right-password")
    password_file = lab.root / "speaker" / "tor-a.password"
    password_file.write_text("wrong-password\n")
    peering.speaker.config_path.write_text(SINGLE + f"    passwordFile: {password_file}\n")
    tor_a = peering.routers["tor-a"]
    try:
        cluster_service(peering, "web", "192.0.2.10")
        peering.speaker.start()
        failing = peering.speaker.wait_event("peer_not_established", timeout_s=20, peer="tor-a")
        assert "MD5" in failing["hint"]
        assert not established(tor_a, "10.0.0.2")
        assert len(peering.speaker.events("peer_not_established")) == 1  # once, not per retry

        password_file.write_text("right-password\n")  # the file poll notices; no SIGHUP
        wait_path(tor_a, "192.0.2.10/32", timeout_s=20)
        log_text = peering.speaker.log_path.read_text()
        assert "right-password" not in log_text and "wrong-password" not in log_text
    finally:
        peering.close()


def test_hold_and_keepalive_timers_reach_frr(lab: Lab) -> None:
    """holdTime 6s is what FRR negotiates; keepaliveTime 1s makes keepalives arrive every second
    (ExaBGP alone would send one every 2 s)."""
    peering = tor_a_only(lab, SINGLE + "    holdTime: 6s\n    keepaliveTime: 1s\n")
    tor_a = peering.routers["tor-a"]
    try:
        peering.speaker.start()
        neighbor = wait_established(peering, tor_a, "10.0.0.2")
        assert neighbor["bgpTimerHoldTimeMsecs"] == 6000, neighbor
        first = tor_a.neighbor("10.0.0.2")["messageStats"]["keepalivesRecv"]
        started = time.monotonic()
        time.sleep(5.0)  # a measurement window, not synchronization
        received = tor_a.neighbor("10.0.0.2")["messageStats"]["keepalivesRecv"] - first
        rate = received / (time.monotonic() - started)
        print(f"keepalives received: {received} in 5 s ({rate:.2f}/s)")
        assert received >= 4, received
    finally:
        peering.close()


# -- eBGP multihop ----------------------------------------------------------------------

FAR_CONFIG = (
    HEADER
    + """peers:
  - name: far
    peerAddress: 10.0.3.2
    peerASN: 64514
"""
)


def test_ebgp_multihop_across_a_routed_hop(lab: Lab) -> None:
    """A router two hops away: with TTL 1 (the eBGP default) no session and a hint; ebgpMultiHop 2: up."""
    peering = routed_hop(
        lab,
        far=frr_config(64514, "10.0.3.2", "10.0.2.2", 64513, "ebgp-multihop 2"),
        speaker_config=FAR_CONFIG,
    )
    far = peering.routers["far"]
    try:
        cluster_service(peering, "web", "192.0.2.10")
        peering.speaker.start()
        failing = peering.speaker.wait_event("peer_not_established", timeout_s=20, peer="far")
        assert "ebgpMultiHop" in failing["hint"]
        assert not established(far, "10.0.2.2")

        peering.speaker.reload(FAR_CONFIG + "    ebgpMultiHop: 2\n")
        path = wait_path(far, "192.0.2.10/32", timeout_s=20)
        assert [hop["ip"] for hop in path["nexthops"]] == ["10.0.2.2"]
    finally:
        peering.close()


# -- node selectors ------------------------------------------------------------------------

SELECTORS_CONFIG = (
    HEADER
    + """peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
  - name: tor-b
    peerAddress: 10.0.1.1
    peerASN: 64513
    nodeSelectors: [{matchLabels: {rack: r1}}]
advertisements:
  - name: zonal
    peers: [tor-a]
    nodeSelectors: [{matchLabels: {zone: z1}}]
  - name: rack
    peers: [tor-b]
"""
)


def test_peer_and_advertisement_node_selectors_follow_label_changes(lab: Lab) -> None:
    """tor-b peers only with rack=r1 nodes; the zonal advertisement to tor-a only from zone=z1 nodes."""
    peering = two_tors(
        lab,
        tor_a=frr_config(64512, "10.0.0.1", "10.0.0.2", 64513),
        tor_b=frr_config(64513, "10.0.1.1", "10.0.1.2", 64513),
        speaker_config=SELECTORS_CONFIG,
    )
    tor_a, tor_b = peering.routers["tor-a"], peering.routers["tor-b"]
    vip = "192.0.2.10/32"
    try:
        cluster_service(peering, "web", "192.0.2.10")
        peering.speaker.start()
        wait_established(peering, tor_a, "10.0.0.2")
        peering.speaker.wait_event("reconcile_finished", desired=0)
        assert tor_a.best_path(vip) is None and not established(tor_b, "10.0.1.2")

        peering.api.apply(node(NODE, labels={"rack": "r1"}))
        wait_path(tor_b, vip)
        assert tor_a.best_path(vip) is None

        peering.api.apply(node(NODE, labels={"rack": "r1", "zone": "z1"}))
        wait_path(tor_a, vip)

        peering.api.apply(node(NODE, labels={"zone": "z1"}))
        wait_absent(tor_b, vip)
        stopped = peering.speaker.wait_event("session_stopping", peer="tor-b")
        assert stopped["reason"] == "node_not_selected"
        withdrawn = peering.speaker.wait_event("route_withdrawn", peers=["tor-b"])
        assert withdrawn["reason"] == "node_not_selected"
        wait_until(lambda: not established(tor_b, "10.0.1.2"), timeout_s=10, desc="tor-b session closed")
        assert tor_a.best_path(vip) is not None
    finally:
        peering.close()
