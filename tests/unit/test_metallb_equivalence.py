"""import-metallb's equivalence: for the same cluster, MetalLB's documented meaning of its
objects and bgpspeaker's decision on the converted config give the same announcements,
per node, per peer, with the same attributes.

``metallb_routes`` is MetalLB's meaning, written from its API documentation
(api/v1beta1, api/v1beta2) and its speaker's rules (FIELD-NOTES: ShouldAnnounce): a
Service's IP is announced only if it lies in an IPAddressPool; from a node only if the
Service has a usable endpoint (anywhere for Cluster, on that node for Local); by each
BGPAdvertisement that selects the IP's pool (ipAddressPools, ipAddressPoolSelectors, or
every pool when neither selects one), the Service (serviceSelectors) and the node
(nodeSelectors); to each of its peers (every peer when none listed) that selects the node
(BGPPeer nodeSelectors) and carries the IP's family; as the IP masked to the
aggregation length, with the communities (aliases resolved) and, on iBGP sessions,
localPref. The cluster below keeps one advertisement per (peer, prefix): MetalLB's modes
disagree on how two would combine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from bgpspeaker.metallb import convert
from lab.kubeapi import endpoint_slice, node, service
from tests.unit.test_decision import snapshot

Route = tuple[str, str]
"""(peer, prefix)"""
Attrs = tuple[frozenset[str], frozenset[str], int | None]
"""(standard communities, large communities as G:L1:L2, local-pref)"""


def obj(kind: str, name: str, spec: dict[str, Any], version: str = "v1beta1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"metallb.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": "metallb-system", **meta},
        "spec": spec,
    }


def rack(name: str) -> list[dict[str, Any]]:
    return [{"matchLabels": {"rack": name}}]


METALLB = [
    obj("IPAddressPool", "public", {"addresses": ["198.51.100.0/26", "2001:db8:1::/120"]}, labels={"tier": "public"}),
    obj("IPAddressPool", "internal", {"addresses": ["198.51.100.64-198.51.100.95"]}),
    obj("Community", "aliases", {"communities": [{"name": "no-advertise", "value": "65535:65282"}]}),
    obj("BGPPeer", "tor-a", {"myASN": 64513, "peerASN": 64512, "peerAddress": "10.0.0.1"}, "v1beta2"),
    obj(
        "BGPPeer",
        "tor-b",
        {"myASN": 64513, "peerASN": 64513, "peerAddress": "10.0.1.1", "nodeSelectors": rack("r2")},
        "v1beta1",
    ),
    # One router reached with a different ASN per rack: two BGPPeers, one address.
    obj(
        "BGPPeer",
        "spine-r1",
        {"myASN": 64601, "peerASN": 64500, "peerAddress": "10.9.0.1", "nodeSelectors": rack("r1")},
        "v1beta2",
    ),
    obj(
        "BGPPeer",
        "spine-r2",
        {"myASN": 64602, "peerASN": 64500, "peerAddress": "10.9.0.1", "nodeSelectors": rack("r2")},
        "v1beta2",
    ),
    obj("BGPPeer", "tor-v6", {"myASN": 64513, "peerASN": 64512, "peerAddress": "fd00::1"}, "v1beta2"),
    obj(
        "BGPAdvertisement",
        "public",
        {
            "ipAddressPoolSelectors": [{"matchLabels": {"tier": "public"}}],
            "serviceSelectors": [{"matchLabels": {"exposure": "public"}}],
            "peers": ["tor-a", "spine-r1", "spine-r2", "tor-v6"],
            "communities": ["no-advertise", "64512:100", "large:64512:1:1"],
        },
    ),
    obj(
        "BGPAdvertisement",
        "internal",
        {"ipAddressPools": ["internal"], "localPref": 200, "peers": ["tor-a", "tor-b"]},
    ),
    obj(
        "BGPAdvertisement",
        "zonal",
        {
            "ipAddressPools": ["public"],
            "serviceSelectors": [{"matchLabels": {"exposure": "zonal"}}],
            "nodeSelectors": [{"matchLabels": {"zone": "z1"}}],
            "communities": ["64512:300"],
        },
    ),
    obj("BGPAdvertisement", "rollup", {"ipAddressPools": ["public"], "aggregationLength": 24, "peers": ["tor-b"]}),
]


def eps(name: str, *nodes: str) -> dict[str, Any]:
    return endpoint_slice(
        "default",
        f"{name}-1",
        service_name=name,
        endpoints=[(f"10.244.0.{i + 1}", n, True, True) for i, n in enumerate(nodes)],
    )


CLUSTER = [
    node("node-a", labels={"rack": "r1", "zone": "z1"}),
    node("node-b", labels={"rack": "r2"}),
    node("node-c", labels={"zone": "z1"}),
    service("default", "web", ips=["198.51.100.1"], labels={"exposure": "public"}),
    eps("web", "node-c"),
    service("default", "web6", ips=["2001:db8:1::5"], labels={"exposure": "public"}),
    eps("web6", "node-b"),
    service("default", "local", ips=["198.51.100.2"], policy="Local", labels={"exposure": "public"}),
    eps("local", "node-a"),
    service("default", "zonal", ips=["198.51.100.3"], labels={"exposure": "zonal"}),
    eps("zonal", "node-b"),
    service("default", "db", ips=["198.51.100.70"]),
    eps("db", "node-b"),
    service("default", "stray", ips=["203.0.113.9"], labels={"exposure": "public"}),  # in no pool
    eps("stray", "node-a"),
    service("default", "idle", ips=["198.51.100.4"], labels={"exposure": "public"}),  # no endpoints
]


def _selects(selectors: list[Mapping[str, Any]] | None, labels: Mapping[str, str]) -> bool:
    def one(selector: Mapping[str, Any]) -> bool:
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            return False
        for e in selector.get("matchExpressions") or []:
            value, values = labels.get(e["key"]), set(e.get("values") or [])
            if not {
                "In": value in values,
                "NotIn": value not in values,
                "Exists": e["key"] in labels,
                "DoesNotExist": e["key"] not in labels,
            }[e["operator"]]:
                return False
        return True

    return not selectors or any(one(s) for s in selectors)


def _pool_networks(pool: Mapping[str, Any]) -> list[Any]:
    networks: list[Any] = []
    for text in pool["spec"]["addresses"]:
        if "-" in text:
            first, last = (ipaddress.ip_address(p) for p in text.split("-"))
            networks.extend(ipaddress.summarize_address_range(first, last))  # type: ignore[type-var]
        else:
            networks.append(ipaddress.ip_network(text))
    return networks


def metallb_routes(objects: list[dict[str, Any]], cluster: list[dict[str, Any]], node_name: str) -> dict[Route, Attrs]:
    """What MetalLB announces from ``node_name`` (its documented meaning, independent of bgpspeaker)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    aliases = {a["name"]: a["value"] for c in by_kind.get("Community", []) for a in c["spec"]["communities"]}
    pools = by_kind.get("IPAddressPool", [])
    peers = {p["metadata"]["name"]: p["spec"] for p in by_kind.get("BGPPeer", [])}
    labels = next(
        o["metadata"]["labels"] for o in cluster if o["kind"] == "Node" and o["metadata"]["name"] == node_name
    )
    routes: dict[Route, Attrs] = {}
    origin: dict[Route, str] = {}
    for svc in (o for o in cluster if o["kind"] == "Service"):
        name = svc["metadata"]["name"]
        endpoints = [
            e
            for o in cluster
            if o["kind"] == "EndpointSlice" and o["metadata"]["labels"]["kubernetes.io/service-name"] == name
            for e in o["endpoints"]
            if e["conditions"].get("ready")
        ]
        local = svc["spec"].get("externalTrafficPolicy") == "Local"
        if not [e for e in endpoints if not local or e.get("nodeName") == node_name]:
            continue
        for ingress in svc["status"]["loadBalancer"]["ingress"]:
            ip = ipaddress.ip_address(ingress["ip"])
            pool = next((p for p in pools if any(ip in n for n in _pool_networks(p))), None)
            if pool is None:
                continue
            for adv in by_kind.get("BGPAdvertisement", []):
                spec = adv["spec"]
                named, selected = spec.get("ipAddressPools") or [], spec.get("ipAddressPoolSelectors") or []
                pool_labels = pool["metadata"].get("labels", {})
                if (named or selected) and not (
                    pool["metadata"]["name"] in named or (selected and _selects(selected, pool_labels))
                ):
                    continue
                if not _selects(spec.get("serviceSelectors"), svc["metadata"].get("labels", {})):
                    continue
                if not _selects(spec.get("nodeSelectors"), labels):
                    continue
                length = spec.get("aggregationLength", 32) if ip.version == 4 else spec.get("aggregationLengthV6", 128)
                prefix = str(ipaddress.ip_network(f"{ip}/{length}", strict=False))
                communities = [aliases.get(c, c) for c in spec.get("communities", [])]
                for peer_name in spec.get("peers") or list(peers):
                    peer = peers[peer_name]
                    if not _selects(peer.get("nodeSelectors"), labels):
                        continue
                    if ipaddress.ip_address(peer["peerAddress"]).version != ip.version:
                        continue
                    ibgp = peer["myASN"] == peer["peerASN"]
                    key = (peer_name, prefix)
                    by = origin.setdefault(key, adv["metadata"]["name"])
                    assert by == adv["metadata"]["name"], f"two advertisements for {key}: keep the table unambiguous"
                    routes[key] = (
                        frozenset(c for c in communities if not c.startswith("large:")),
                        frozenset(c.removeprefix("large:") for c in communities if c.startswith("large:")),
                        spec.get("localPref") if ibgp and spec.get("localPref") else None,
                    )
    return routes


def bgpspeaker_routes(converted: dict[str, Any], node_name: str) -> dict[Route, Attrs]:
    """What bgpspeaker announces from ``node_name`` with the converted config."""
    cfg = parse_config(converted)
    decision = decide(snapshot(*CLUSTER), cfg, node_name)
    return {
        (peer, str(prefix)): (frozenset(a.communities), frozenset(a.large_communities), a.local_pref)
        for prefix, announcement in decision.announcements.items()
        for peer, a in announcement.routes.items()
    }


@pytest.mark.parametrize("node_name", ["node-a", "node-b", "node-c"])
def test_converted_config_announces_what_metallb_would(node_name: str) -> None:
    """Per node: the same (peer, prefix) pairs with the same communities and local-pref."""
    conversion = convert([("t", o) for o in METALLB])
    metallb = metallb_routes(METALLB, CLUSTER, node_name)
    ours = bgpspeaker_routes(conversion.config, node_name)
    assert ours == metallb
    assert metallb, "the table must announce something from every node"


def test_the_table_exercises_each_rule() -> None:
    """The cluster is not vacuous: each rule of MetalLB's meaning changes some node's outcome."""
    everywhere = {
        node_name: metallb_routes(METALLB, CLUSTER, node_name) for node_name in ("node-a", "node-b", "node-c")
    }
    a, b, c = everywhere["node-a"], everywhere["node-b"], everywhere["node-c"]
    assert ("spine-r1", "198.51.100.2/32") in a and ("spine-r1", "198.51.100.2/32") not in b  # Local policy
    assert ("spine-r2", "198.51.100.1/32") in b and ("spine-r1", "198.51.100.1/32") in a  # per-rack peer
    assert ("tor-a", "198.51.100.3/32") in a and ("tor-a", "198.51.100.3/32") not in b  # advertisement nodeSelectors
    assert b[("tor-b", "198.51.100.70/32")][2] == 200 and a.get(("tor-a", "198.51.100.70/32"), (0, 0, 1))[2] is None
    assert ("tor-b", "198.51.100.0/24") in b  # aggregation
    assert ("tor-v6", "2001:db8:1::5/128") in c  # IPv6 to the IPv6 peer only
    assert not any(peer != "tor-v6" and ":" in prefix for peer, prefix in c)
    assert not any(prefix == "203.0.113.9/32" for _, prefix in a)  # in no pool
    assert not any(prefix == "198.51.100.4/32" for _, prefix in c)  # no endpoints


def test_converted_config_passes_check_config_whole() -> None:
    """The converter's YAML (pools, BFD profiles, a peer's profile included) is a valid SpeakerConfig."""
    bfd = obj("BFDProfile", "fast", {"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3})
    with_bfd = [*METALLB, bfd]
    with_bfd[3] = {**with_bfd[3], "spec": {**with_bfd[3]["spec"], "bfdProfile": "fast"}}
    conversion = convert([("t", o) for o in with_bfd])
    parsed = parse_config(yaml.safe_load(yaml.safe_dump(conversion.config, sort_keys=False)))
    assert {peer.name for peer in parsed.peers} == {"tor-a", "tor-b", "spine-r1", "spine-r2", "tor-v6"}
    assert [pool.name for pool in parsed.address_pools] == ["public", "internal"]
    assert [profile.name for profile in parsed.bfd_profiles] == ["fast"]
    tor_a = parsed.peer("tor-a")
    assert tor_a is not None and tor_a.bfd is not None
