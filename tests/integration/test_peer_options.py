"""Per-peer connectTime, routerID and dynamicASN against real FRR, and received routes
never installed. One lab for the module: a node with two routers.

    tor-a AS 64512 (eBGP, passive: only the node connects)   10.0.0.1 == 10.0.0.2  node AS 64513
    tor-b AS 64513 (iBGP)                                    10.0.1.1 == 10.0.1.2

A Service with a community alias in its annotation goes to tor-a through an advertisement
with another alias. Both peers start as ``dynamicASN: external``: tor-a comes up, tor-b (our own AS) is refused
with a ``peer_asn_mismatch`` line. tor-a has its own ``routerID`` and ``connectTime: 1s``.
tor-a also announces two prefixes to the node, which must never reach its kernel table.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.kubeapi import endpoint_slice, service
from lab.netns import Frr, Lab, http_get, run_in, wait_until
from lab.topology import Peering, two_tors
from tests.integration.conftest import require_prerequisites

TOR_A = """frr defaults datacenter
log stdout informational
router bgp 64512
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 10.0.0.2 remote-as external
 neighbor 10.0.0.2 passive
 neighbor 10.0.0.2 timers 1 3
 address-family ipv4 unicast
  network 198.51.100.0/24
  network 203.0.113.0/24
  neighbor 10.0.0.2 activate
 exit-address-family
"""
TOR_B = """frr defaults datacenter
log stdout informational
router bgp 64513
 bgp router-id 10.0.1.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.0.1.2 remote-as internal
 neighbor 10.0.1.2 timers 1 3
 neighbor 10.0.1.2 timers connect 1
 address-family ipv4 unicast
  neighbor 10.0.1.2 activate
 exit-address-family
"""
SPEAKER = """apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    dynamicASN: external
    routerID: 10.9.9.9
    connectTime: 1s
    holdTime: 3s
  - name: tor-b
    peerAddress: 10.0.1.1
    dynamicASN: {tor_b_kind}
    holdTime: 3s
serviceAnnotations: true
communityAliases:
  - {{name: vpn-only, value: "64512:100"}}
  - {{name: region-eu, value: "large:64512:1:2"}}
advertisements:
  - name: tagged
    peers: [tor-a]
    communities: [vpn-only]
"""
CONNECT_TIME_S = 1
LISTEN = "127.0.0.1:7473"


def kernel_routes(netns: str) -> list[Any]:
    """Every route of every table in ``netns``, both families (``ip -j route show table all``),
    but the IPv6 link-local ones, which the kernel adds by itself once a link is up."""
    routes: list[Any] = []
    for family in ("-4", "-6"):
        routes += json.loads(run_in(netns, "ip", "-j", family, "route", "show", "table", "all").stdout or "[]")
    return [route for route in routes if not str(route.get("dst", "")).startswith("fe80:")]


@pytest.fixture(scope="module")
def rack() -> Iterator[tuple[Peering, list[Any]]]:
    """The lab with the speaker running, and the node's kernel routes before it started."""
    require_prerequisites()
    with Lab() as lab:
        peering = two_tors(lab, tor_a=TOR_A, tor_b=TOR_B, speaker_config=SPEAKER.format(tor_b_kind="external"))
        try:
            before = kernel_routes(peering.node_ns)
            peering.speaker.start("--listen", LISTEN)
            yield peering, before
        finally:
            peering.close()


def configure(frr: Frr, *commands: str) -> None:
    """Change the running bgpd's config (``configure terminal`` then each command)."""
    argv = ["vtysh", "--vty_socket", str(frr.workdir), "-c", "configure terminal"]
    for command in commands:
        argv += ["-c", command]
    subprocess.run(argv, check=True, capture_output=True, text=True)


def state(frr: Frr, address: str) -> tuple[str | None, int, str | None]:
    """(bgpState, connectionsEstablished, remoteRouterId) of one neighbor."""
    neighbor = frr.neighbor(address)
    return neighbor.get("bgpState"), int(neighbor.get("connectionsEstablished", 0)), neighbor.get("remoteRouterId")


def established(frr: Frr, address: str, *, more_than: int = 0) -> tuple[str | None, int, str | None] | None:
    found = state(frr, address)
    return found if found[0] == "Established" and found[1] > more_than else None


def test_dynamic_external_peers_with_an_external_router_under_the_peers_router_id(
    rack: tuple[Peering, list[Any]],
) -> None:
    """dynamicASN external + an eBGP router: a session; the router sees the peer's own routerID."""
    peering, _ = rack
    tor_a = peering.routers["tor-a"]
    found = wait_until(
        lambda: established(tor_a, "10.0.0.2"),
        timeout_s=30,
        desc=f"tor-a Established; last {state(tor_a, '10.0.0.2')}; speaker: {peering.speaker.tail(6)}",
    )
    assert found[2] == "10.9.9.9"


def metric_samples(peering: Peering, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` (labels -> value) from the speaker's /metrics."""
    status, body = http_get(peering.node_ns, f"http://{LISTEN}/metrics")
    assert status == 200
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    }


FRR_COUNTERS = {
    "open": ("opensSent", "opensRecv"),
    "update": ("updatesSent", "updatesRecv"),
    "keepalive": ("keepalivesSent", "keepalivesRecv"),
    "notification": ("notificationsSent", "notificationsRecv"),
    "route-refresh": ("routeRefreshSent", "routeRefreshRecv"),
}


def message_mismatches(peering: Peering) -> dict[str, tuple[int, int]]:
    """{direction/type: (ours, FRR's)} where FRR's sent != our received or FRR's received !=
    our sent; keepalives may differ by one (in flight, or pushed up to 1 s late)."""
    tor_a = peering.routers["tor-a"]
    stats = tor_a.neighbor("10.0.0.2").get("messageStats", {})
    ours = metric_samples(peering, "bgpspeaker_bgp_messages_total")
    found = {}
    for kind, (frr_sent, frr_received) in FRR_COUNTERS.items():
        for direction, theirs in (("received", stats.get(frr_sent)), ("sent", stats.get(frr_received))):
            mine = ours.get((("direction", direction), ("peer", "tor-a"), ("type", kind)))
            slack = 1 if kind == "keepalive" else 0
            if mine is None or theirs is None or abs(int(mine) - int(theirs)) > slack:
                found[f"{direction}/{kind}"] = (int(mine) if mine is not None else -1, theirs)
    return found


def test_message_counters_match_the_routers(rack: tuple[Peering, list[Any]]) -> None:
    """``bgpspeaker_bgp_messages_total`` per type and direction equals FRR's own counters
    the other way round (keepalives within one in flight)."""
    peering, _ = rack
    tor_a = peering.routers["tor-a"]
    wait_until(lambda: established(tor_a, "10.0.0.2"), timeout_s=30, desc="tor-a Established")
    received = (("direction", "received"), ("peer", "tor-a"))

    def matching() -> dict[tuple[tuple[str, str], ...], float] | None:
        ours = metric_samples(peering, "bgpspeaker_bgp_messages_total")
        updates = ours.get((*received, ("type", "update")), 0)
        return ours if updates >= 1 and not message_mismatches(peering) else None  # the router's prefixes came

    ours = wait_until(
        matching,
        timeout_s=15,
        desc="our message counters == FRR's, with the router's UPDATEs (last: None = mismatch or no UPDATE yet)",
    )
    assert ours[(*received, ("type", "open"))] == 1
    mine = {f"{labels[0][1]}/{labels[2][1]}": int(v) for labels, v in sorted(ours.items()) if labels[1][1] == "tor-a"}
    print(f"tor-a messages: {mine}")


def test_dynamic_external_refuses_an_internal_router_then_internal_accepts_it(
    rack: tuple[Peering, list[Any]],
) -> None:
    """dynamicASN external + a router of our own AS: no session, ``peer_asn_mismatch`` from the
    speaker; reloaded as internal: a session, with the top-level router ID."""
    peering, _ = rack
    tor_b, speaker = peering.routers["tor-b"], peering.speaker
    mismatch = speaker.wait_event("peer_asn_mismatch", timeout_s=30, peer="tor-b")
    assert (mismatch["rejected_by"], mismatch["expected"], mismatch["my_asn"]) == ("speaker", "external", 64513)
    assert "notification sent (2,2)" in mismatch["reason"]
    assert state(tor_b, "10.0.1.2")[0] != "Established"

    tor_a_before = state(peering.routers["tor-a"], "10.0.0.2")
    speaker.reload(SPEAKER.format(tor_b_kind="internal"))
    found = wait_until(
        lambda: established(tor_b, "10.0.1.2"),
        timeout_s=30,
        desc=f"tor-b Established as iBGP; last {state(tor_b, '10.0.1.2')}; speaker: {speaker.tail(6)}",
    )
    assert found[2] == "10.0.0.2"
    assert state(peering.routers["tor-a"], "10.0.0.2") == tor_a_before  # tor-a's session untouched


def test_received_routes_are_never_installed(rack: tuple[Peering, list[Any]]) -> None:
    """The router sends the node two prefixes; the node's kernel tables do not change."""
    peering, before = rack
    tor_a = peering.routers["tor-a"]

    def sent() -> int:
        info = tor_a.neighbor("10.0.0.2").get("addressFamilyInfo", {}).get("ipv4Unicast", {})
        return int(info.get("sentPrefixCounter", 0))

    wait_until(lambda: sent() >= 2 or None, timeout_s=30, desc=f"tor-a sent 2 prefixes; last {sent()}")
    advertised = tor_a.json("show bgp ipv4 unicast neighbors 10.0.0.2 advertised-routes json")
    assert {"198.51.100.0/24", "203.0.113.0/24"} <= set(advertised.get("advertisedRoutes", {}))
    after = kernel_routes(peering.node_ns)
    assert after == before
    assert not [r for r in after if str(r.get("dst", "")).startswith(("198.51.100.", "203.0.113."))]


def test_community_aliases_reach_the_router(rack: tuple[Peering, list[Any]]) -> None:
    """An alias in the advertisement and one in the annotation arrive as their communities."""
    peering, _ = rack
    tor_a = peering.routers["tor-a"]
    peering.api.apply(
        service("default", "web", ips=["192.0.2.10"], annotations={"bgpspeaker.io/communities": "region-eu"})
    )
    peering.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )

    def tags() -> tuple[str, str] | None:
        path = tor_a.best_path("192.0.2.10/32")
        if path is None:
            return None
        return path.get("community", {}).get("string", ""), path.get("largeCommunity", {}).get("string", "")

    found = wait_until(tags, timeout_s=30, desc=f"192.0.2.10/32 at tor-a; speaker: {peering.speaker.tail(6)}")
    assert found == ("64512:100", "64512:1:2")


def syn_counter(netns: str) -> int:
    """SYNs to port 179 counted by the ``bsp_syn`` nftables table in ``netns``."""
    out = run_in(netns, "nft", "-j", "list", "table", "inet", "bsp_syn").stdout
    for item in json.loads(out)["nftables"]:
        for expression in item.get("rule", {}).get("expr", []):
            if "counter" in expression:
                return int(expression["counter"]["packets"])
    return 0


def test_connect_time_bounds_the_retry_interval(rack: tuple[Peering, list[Any]]) -> None:
    """``clear bgp *``: back within connectTime (MetalLB's scenario). Router shut: the node
    retries every connectTime (ExaBGP alone backs off 0, 1, 2, 3, 4 s...); router back: the
    session is back within connectTime."""
    peering, _ = rack
    tor_a = peering.routers["tor-a"]
    address = "10.0.0.2"
    _, count, _ = wait_until(lambda: established(tor_a, address), timeout_s=30, desc="tor-a Established")

    tor_a.vtysh("clear bgp *")
    cleared = time.monotonic()
    wait_until(
        lambda: established(tor_a, address, more_than=count),
        timeout_s=CONNECT_TIME_S + 2,
        desc=f"tor-a back within connectTime after clear bgp; last {state(tor_a, address)}",
    )
    back_after_clear_s = time.monotonic() - cleared

    rules = "table inet bsp_syn {\n chain input {\n  type filter hook input priority 0;\n"
    rules += "  tcp dport 179 tcp flags & (syn | ack) == syn counter\n }\n}\n"
    subprocess.run(["ip", "netns", "exec", tor_a.netns, "nft", "-f", "-"], input=rules, text=True, check=True)
    configure(tor_a, "router bgp 64512", f"neighbor {address} shutdown")
    shut = time.monotonic()
    # 6 attempts: ~5 s with connectTime 1s; ExaBGP's own backoff needs 15 s (0+1+2+3+4+5).
    wait_until(
        lambda: (attempts := syn_counter(tor_a.netns)) >= 6 and attempts,
        timeout_s=9,
        desc="6 connect attempts while tor-a is shut (last observed: False = fewer)",
    )
    attempts, shut_s = syn_counter(tor_a.netns), time.monotonic() - shut
    _, count, _ = state(tor_a, address)
    configure(tor_a, "router bgp 64512", f"no neighbor {address} shutdown")
    opened = time.monotonic()
    wait_until(
        lambda: established(tor_a, address, more_than=count),
        timeout_s=CONNECT_TIME_S + 2,
        desc=f"tor-a back within connectTime after no shutdown; last {state(tor_a, address)}",
    )
    print(  # the figures for the report (pytest -s)
        f"connectTime {CONNECT_TIME_S}s: back {back_after_clear_s:.2f} s after clear bgp;"
        f" {attempts} attempts in {shut_s:.1f} s shut; back {time.monotonic() - opened:.2f} s after no shutdown"
    )


def config_stale(peering: Peering) -> float | None:
    status, body = http_get(peering.node_ns, f"http://{LISTEN}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "bgpspeaker_config_stale":
                return float(sample.value)
    return None


def test_config_stale_after_a_bad_reload_and_back(rack: tuple[Peering, list[Any]]) -> None:
    """A reload naming an unknown community alias fails with the precise problem and
    ``bgpspeaker_config_stale`` 1; the next good reload sets it back to 0."""
    peering, _ = rack
    speaker = peering.speaker
    good = SPEAKER.format(tor_b_kind="internal")
    assert wait_until(lambda: config_stale(peering) == 0.0 or None, timeout_s=10, desc="config_stale 0 at first")
    before = len(speaker.events("config_reload_failed"))
    speaker.reload(good.replace("communities: [vpn-only]", "communities: [vpn-onyl]"))
    failed = speaker.wait_event("config_reload_failed", after=before, timeout_s=15)
    assert failed["problems"] == [
        "advertisements[0].communities[0]: no community alias named 'vpn-onyl' (communityAliases: region-eu, vpn-only)"
    ]
    wait_until(lambda: config_stale(peering) == 1.0 or None, timeout_s=10, desc="config_stale 1 after a bad reload")
    speaker.reload(good)
    wait_until(lambda: config_stale(peering) == 0.0 or None, timeout_s=15, desc="config_stale 0 after a good reload")
