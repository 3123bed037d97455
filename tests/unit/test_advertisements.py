"""The decision with advertisements, peer node selectors and service annotations (pure)."""

from __future__ import annotations

from typing import Any

from bgpspeaker.config import parse_config
from bgpspeaker.decision import Decision, decide
from bgpspeaker.routes import Attributes, Reason
from lab.kubeapi import node, service
from tests.unit.test_decision import ME, eps, snapshot

TOR_A = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}
TOR_B = {"name": "tor-b", "peerAddress": "10.0.1.1", "peerASN": 64513}


def config(advertisements: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    data: dict[str, Any] = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [TOR_A, TOR_B],
        **extra,
    }
    if advertisements is not None:
        data["advertisements"] = advertisements
    return parse_config(data)


def web(ip: str = "192.0.2.10", *, name: str = "web", **kwargs: Any) -> list[dict[str, Any]]:
    return [service("default", name, ips=[ip], **kwargs), eps(name, ("10.1.0.1", ME, True, True))]


def routes(decision: Decision) -> dict[str, dict[str, Attributes]]:
    return {str(prefix): dict(a.routes) for prefix, a in decision.announcements.items()}


def reasons(decision: Decision) -> dict[str, set[Reason]]:
    found: dict[str, set[Reason]] = {}
    for verdict in decision.verdicts:
        found.setdefault(verdict.service, set()).add(verdict.reason)
    return found


def test_without_advertisements_every_vip_goes_to_every_peer_plain() -> None:
    """The default: plain /32 to both peers."""
    decision = decide(snapshot(node(ME), *web()), config(), ME)
    assert routes(decision) == {"192.0.2.10/32": {"tor-a": Attributes(), "tor-b": Attributes()}}


def test_two_peers_get_different_attributes() -> None:
    """eBGP tor-a gets communities, MED and a prepend; iBGP tor-b gets local-pref; selection by service label."""
    decision = decide(
        snapshot(node(ME), *web(labels={"exposure": "public"})),
        config(
            [
                {
                    "name": "public",
                    "serviceSelectors": [{"matchLabels": {"exposure": "public"}}],
                    "peers": ["tor-a"],
                    "communities": ["64512:100", "no-export", "large:64512:1:1"],
                    "med": 10,
                    "asPathPrepend": 2,
                },
                {"name": "internal", "peers": ["tor-b"], "localPref": 200},
            ]
        ),
        ME,
    )
    assert routes(decision) == {
        "192.0.2.10/32": {
            "tor-a": Attributes(
                communities=("64512:100", "no-export"), large_communities=("64512:1:1",), med=10, as_path_prepend=2
            ),
            "tor-b": Attributes(local_pref=200),
        }
    }


def test_service_selected_by_no_advertisement() -> None:
    """A service no advertisement selects is not announced, and says why."""
    adv = [{"name": "public", "serviceSelectors": [{"matchLabels": {"exposure": "public"}}]}]
    decision = decide(snapshot(node(ME), *web()), config(adv), ME)
    assert (routes(decision), reasons(decision)) == ({}, {"default/web": {Reason.NO_ADVERTISEMENT}})


def test_advertisement_node_selector_leaves_this_node_out() -> None:
    """The advertisement selects the service but only nodes in rack r2: node_not_selected."""
    adv = [{"name": "r2", "nodeSelectors": [{"matchLabels": {"rack": "r2"}}]}]
    decision = decide(snapshot(node(ME, labels={"rack": "r1"}), *web()), config(adv), ME)
    assert reasons(decision) == {"default/web": {Reason.NODE_NOT_SELECTED}}
    decision = decide(snapshot(node(ME, labels={"rack": "r2"}), *web()), config(adv), ME)
    assert set(routes(decision)["192.0.2.10/32"]) == {"tor-a", "tor-b"}


def test_peer_node_selector() -> None:
    """A peer that selects rack r1 only gets routes from nodes in rack r1; with no peer left: no_peer_for_node."""
    peer = {**TOR_A, "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}]}
    cfg = parse_config(
        {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": [peer]}
    )
    assert set(routes(decide(snapshot(node(ME, labels={"rack": "r1"}), *web()), cfg, ME))) == {"192.0.2.10/32"}
    decision = decide(snapshot(node(ME, labels={"rack": "r2"}), *web()), cfg, ME)
    assert (routes(decision), reasons(decision)) == ({}, {"default/web": {Reason.NO_PEER_FOR_NODE}})


def test_aggregation_length_announces_the_covering_prefix_once() -> None:
    """Two VIPs in one /24 with aggregationLength 24: one /24 carrying both services."""
    adv = [{"name": "agg", "aggregationLength": 24, "aggregationLengthV6": 64}]
    objects = [node(ME), *web("192.0.2.10"), *web("192.0.2.20", name="api"), *web("2001:db8::5", name="v6")]
    decision = decide(snapshot(*objects), config(adv, peers=[{**TOR_A, "families": ["ipv4", "ipv6"]}]), ME)
    assert set(routes(decision)) == {"192.0.2.0/24", "2001:db8::/64"}
    assert decision.announcements[next(p for p in decision.announcements if p.version == 4)].services == {
        "default/web",
        "default/api",
    }


def test_communities_unite_and_conflicting_med_is_not_guessed() -> None:
    """Two advertisements: communities are merged; MED 10 vs 20 for the same route is a conflict, not announced."""
    adv = [
        {"name": "a", "peers": ["tor-a"], "communities": ["64512:1"]},
        {"name": "b", "peers": ["tor-a"], "communities": ["64512:2"], "med": 5},
    ]
    decision = decide(snapshot(node(ME), *web()), config(adv), ME)
    assert routes(decision) == {"192.0.2.10/32": {"tor-a": Attributes(communities=("64512:1", "64512:2"), med=5)}}
    adv[0]["med"] = 10
    decision = decide(snapshot(node(ME), *web()), config(adv), ME)
    assert routes(decision) == {}
    conflict = next(v for v in decision.verdicts if v.reason is Reason.CONFLICTING_ADVERTISEMENTS)
    assert conflict.peers == ("tor-a",) and conflict.detail == "med differs between a, b: [5, 10]"


def test_annotations_add_attributes_when_enabled() -> None:
    """Annotations add communities, set MED and prepend (eBGP only); ignored unless serviceAnnotations is true."""
    annotations = {
        "bgpspeaker.io/communities": "64512:300, large:1:2:3",
        "bgpspeaker.io/med": "7",
        "bgpspeaker.io/as-path-prepend": "1",
    }
    snap = snapshot(node(ME), *web(annotations=annotations))
    assert routes(decide(snap, config(), ME))["192.0.2.10/32"]["tor-a"] == Attributes()
    got = routes(decide(snap, config(serviceAnnotations=True), ME))["192.0.2.10/32"]
    assert got == {
        "tor-a": Attributes(communities=("64512:300",), large_communities=("1:2:3",), med=7, as_path_prepend=1),
        "tor-b": Attributes(communities=("64512:300",), large_communities=("1:2:3",), med=7),
    }


def test_bad_annotation_keeps_the_plain_announcement_and_says_why() -> None:
    """An invalid annotation: the VIP is still announced with the advertisement's attributes; the verdict names it."""
    snap = snapshot(node(ME), *web(annotations={"bgpspeaker.io/med": "ten", "bgpspeaker.io/communities": "1:2"}))
    decision = decide(snap, config(serviceAnnotations=True), ME)
    assert routes(decision)["192.0.2.10/32"]["tor-a"] == Attributes()
    verdict = next(v for v in decision.verdicts if v.ip is not None)
    assert verdict.reason is Reason.CLUSTER_ENDPOINT
    assert verdict.detail == "annotation bgpspeaker.io/med: must be an integer 0..4294967295 in ASCII digits, got 'ten'"


def test_ipv6_vip_over_ipv4_session_only_when_the_peer_carries_ipv6() -> None:
    """families [ipv4, ipv6] on an IPv4 peer carries the /128; the default [ipv4] does not."""
    snap = snapshot(node(ME), *web("2001:db8::1"))
    decision = decide(snap, config(peers=[TOR_A]), ME)
    assert reasons(decision) == {"default/web": {Reason.NO_PEER_FOR_FAMILY}}
    decision = decide(snap, config(peers=[{**TOR_A, "families": ["ipv4", "ipv6"]}]), ME)
    assert set(routes(decision)["2001:db8::1/128"]) == {"tor-a"}
