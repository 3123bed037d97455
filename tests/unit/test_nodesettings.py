"""Per-node settings: which peers a node runs and with which routerID/myASN/sourceAddress."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bgpspeaker.config import SpeakerConfig, parse_config
from bgpspeaker.errors import ConfigError
from bgpspeaker.nodesettings import node_runtime, peers_for_node, unconditional_peers
from bgpspeaker.peers import PeerRuntime

ROUTER_ID = ipaddress.ip_address("10.0.0.2")


def config(peers: list[dict[str, Any]], overrides: list[dict[str, Any]] | None = None) -> SpeakerConfig:
    data: dict[str, Any] = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": peers,
    }
    if overrides is not None:
        data["nodeOverrides"] = overrides
    return parse_config(data)


def rack(rack_name: str) -> list[dict[str, Any]]:
    return [{"matchLabels": {"rack": rack_name}}]


# One router (10.0.0.1, AS 64512) reached from two node groups with different ASNs.
TWO_GROUPS = [
    {"name": "tor-r1", "peerAddress": "10.0.0.1", "peerASN": 64512, "myASN": 64601, "nodeSelectors": rack("r1")},
    {"name": "tor-r2", "peerAddress": "10.0.0.1", "peerASN": 64512, "myASN": 64602, "nodeSelectors": rack("r2")},
    {"name": "spine", "peerAddress": "10.9.0.1", "peerASN": 64500},
]
OVERRIDES = [
    {"name": "r1", "nodeSelectors": rack("r1"), "myASN": 64701, "peers": ["spine"]},
    {
        "name": "node-a",
        "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-a"}}],
        "routerID": "10.1.1.1",
    },
    {
        "name": "src",
        "nodeSelectors": [{"matchExpressions": [{"key": "src", "operator": "Exists"}]}],
        "sourceAddress": "10.9.0.7",
    },
]

SELECTION_CASES = [
    # (desc, node labels, {peer: (myASN, routerID or None, source or None)}, problem events)
    ("no labels: only the unconditional peer", {}, {"spine": (64513, None, None)}, []),
    (
        "rack r1: its group's ASN; spine overridden",
        {"rack": "r1"},
        {"tor-r1": (64601, None, None), "spine": (64701, None, None)},
        [],
    ),
    (
        "rack r2: the other group's ASN",
        {"rack": "r2"},
        {"tor-r2": (64602, None, None), "spine": (64513, None, None)},
        [],
    ),
    (
        "router ID override applies to every peer",
        {"rack": "r2", "kubernetes.io/hostname": "node-a"},
        {"tor-r2": (64602, "10.1.1.1", None), "spine": (64513, "10.1.1.1", None)},
        [],
    ),
    ("source override", {"src": ""}, {"spine": (64513, None, "10.9.0.7")}, []),
]


@pytest.mark.parametrize(
    ("labels", "want", "want_problems"),
    [case[1:] for case in SELECTION_CASES],
    ids=[case[0] for case in SELECTION_CASES],
)
def test_peers_for_node(labels: dict[str, str], want: dict[str, Any], want_problems: list[str]) -> None:
    """Each node runs the peers selecting it, with the overrides selecting it applied."""
    chosen = peers_for_node(config(TWO_GROUPS, OVERRIDES), labels)
    got = {
        name: (
            p.peer.my_asn,
            str(p.router_id) if p.router_id else None,
            str(p.source_address) if p.source_address else None,
        )
        for name, p in chosen.peers.items()
    }
    assert got == want
    assert [p.event for p in chosen.problems] == want_problems


CONFLICT_CASES = [
    # (desc, peers, overrides, labels, peers run, problems as (event, peers))
    (
        "overlapping expressions select one node twice: neither runs",
        [
            {"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "nodeSelectors": rack("r1")},
            {
                "name": "b",
                "peerAddress": "10.0.0.1",
                "peerASN": 64512,
                "myASN": 64600,
                "nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}],
            },
        ],
        [],
        {"rack": "r1", "zone": "z1"},
        [],
        [("peer_address_conflict", ("a", "b"))],
    ),
    (
        "two overrides set different ASNs for one peer: it is not run",
        TWO_GROUPS,
        [
            {"name": "x", "nodeSelectors": rack("r2"), "myASN": 64801},
            {"name": "y", "nodeSelectors": [{"matchLabels": {"gpu": "yes"}}], "myASN": 64802, "peers": ["tor-r2"]},
        ],
        {"rack": "r2", "gpu": "yes"},
        ["spine"],
        [("node_override_conflict", ("tor-r2",))],
    ),
    (
        "two overrides agreeing on a value are no conflict",
        TWO_GROUPS,
        [
            {"name": "x", "nodeSelectors": rack("r2"), "myASN": 64801},
            {"name": "y", "nodeSelectors": [{"matchLabels": {"gpu": "yes"}}], "myASN": 64801},
        ],
        {"rack": "r2", "gpu": "yes"},
        ["tor-r2", "spine"],
        [],
    ),
]


@pytest.mark.parametrize(
    ("peers", "overrides", "labels", "want_peers", "want_problems"),
    [case[1:] for case in CONFLICT_CASES],
    ids=[case[0] for case in CONFLICT_CASES],
)
def test_ambiguous_peers_are_not_run(
    peers: list[dict[str, Any]],
    overrides: list[dict[str, Any]],
    labels: dict[str, str],
    want_peers: list[str],
    want_problems: list[tuple[str, tuple[str, ...]]],
) -> None:
    """A node selected by two peers of one address, or by overrides that disagree, runs none of them."""
    chosen = peers_for_node(config(peers, overrides), labels)
    assert list(chosen.peers) == want_peers
    assert [(p.event, p.peers) for p in chosen.problems] == want_problems


def test_labels_changing_back_recover_the_peer() -> None:
    """The conflict lasts only while the labels select both peers."""
    cfg = config(
        [
            {"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "nodeSelectors": rack("r1")},
            {"name": "b", "peerAddress": "10.0.0.1", "peerASN": 64512, "nodeSelectors": [{"matchLabels": {"z": "1"}}]},
        ]
    )
    states = [{"rack": "r1"}, {"rack": "r1", "z": "1"}, {"z": "1"}]
    assert [list(peers_for_node(cfg, labels).peers) for labels in states] == [["a"], [], ["b"]]


LOAD_ERRORS = [
    # (desc, peers, overrides, expected problem)
    (
        "same address without nodeSelectors",
        [TWO_GROUPS[0], {"name": "b", "peerAddress": "10.0.0.1", "peerASN": 64512}],
        None,
        "peers[1].peerAddress: duplicate of peers[0], got '10.0.0.1' (the same router twice needs nodeSelectors"
        " on every such peer, selecting different nodes)",
    ),
    (
        "same address, identical selector",
        [TWO_GROUPS[0], {**TWO_GROUPS[1], "nodeSelectors": rack("r1")}],
        None,
        "peers[1].nodeSelectors: the same selector as peers[0], which has the same peerAddress 10.0.0.1:"
        " they would both select the same nodes",
    ),
    (
        "override without nodeSelectors",
        TWO_GROUPS,
        [{"name": "x", "myASN": 64700}],
        "nodeOverrides[0].nodeSelectors: required, a non-empty list of label selectors"
        " (for every node, set the top-level value instead)",
    ),
    (
        "override setting nothing",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1")}],
        "nodeOverrides[0]: sets nothing; give at least one of routerID, myASN, sourceAddress",
    ),
    (
        "override turning eBGP into iBGP",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1"), "myASN": 64500, "peers": ["spine"]}],
        "nodeOverrides[0].myASN: 64500 would make peer 'spine' iBGP (peerASN 64500); it is eBGP with myASN 64513."
        " An override must keep each session eBGP or iBGP (list only the peers it fits in peers)",
    ),
    (
        "override naming an unknown peer",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1"), "myASN": 64700, "peers": ["tor-z"]}],
        "nodeOverrides[0].peers[0]: no peer named 'tor-z' (peers: spine, tor-r1, tor-r2)",
    ),
    (
        "IPv6 source for IPv4 peers",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1"), "sourceAddress": "fd00::7", "peers": ["spine"]}],
        "nodeOverrides[0].sourceAddress: must be the same family as the peerAddress of 'spine' (10.9.0.1),"
        " got 'fd00::7' (list only matching peers in peers)",
    ),
    (
        "router ID not IPv4",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1"), "routerID": "fd00::1"}],
        "nodeOverrides[0].routerID: must be a non-zero IPv4 address (dotted quad), got 'fd00::1'",
    ),
    (
        "duplicate override names",
        TWO_GROUPS,
        [
            {"name": "x", "nodeSelectors": rack("r1"), "myASN": 1},
            {"name": "x", "nodeSelectors": rack("r2"), "myASN": 2},
        ],
        "nodeOverrides[1].name: duplicate of nodeOverrides[0], got 'x'",
    ),
    (
        "unknown key",
        TWO_GROUPS,
        [{"name": "x", "nodeSelectors": rack("r1"), "asn": 1}],
        "nodeOverrides[0].asn: unknown field (allowed: myASN, name, nodeSelectors, peers, routerID, sourceAddress)",
    ),
]


@pytest.mark.parametrize(
    ("peers", "overrides", "problem"),
    [case[1:] for case in LOAD_ERRORS],
    ids=[case[0] for case in LOAD_ERRORS],
)
def test_load_errors(peers: list[dict[str, Any]], overrides: list[dict[str, Any]] | None, problem: str) -> None:
    """check-config names the override or duplicate peer, the bad value and what is allowed."""
    with pytest.raises(ConfigError) as raised:
        config(peers, overrides)
    assert problem in raised.value.problems


def test_node_runtime_applies_asn_router_id_and_source_with_its_next_hop() -> None:
    """An overridden source is the session's own-family next hop too; the other family's stays."""
    cfg = config(TWO_GROUPS, OVERRIDES)
    spine = cfg.peer("spine")
    assert spine is not None
    runtime = PeerRuntime(spine, next_hops={4: ipaddress.ip_address("10.9.0.2"), 6: ipaddress.ip_address("fd00::2")})
    chosen = peers_for_node(cfg, {"rack": "r1", "src": "", "kubernetes.io/hostname": "node-a"}).peers["spine"]
    adjusted, router_id = node_runtime(runtime, chosen, ROUTER_ID)
    assert str(router_id) == "10.1.1.1"
    assert adjusted.peer.my_asn == 64701 and str(adjusted.peer.source_address) == "10.9.0.7"
    assert {v: str(a) for v, a in adjusted.next_hops.items()} == {4: "10.9.0.7", 6: "fd00::2"}
    plain = peers_for_node(cfg, {}).peers["spine"]
    assert node_runtime(runtime, plain, ROUTER_ID) == (runtime, ROUTER_ID)


def test_only_peers_no_label_can_change_start_before_the_first_sync() -> None:
    """A peer with nodeSelectors or one an override may touch waits for the node's labels."""
    assert unconditional_peers(config(TWO_GROUPS)) == {"spine"}
    assert unconditional_peers(config(TWO_GROUPS, OVERRIDES)) == set()
    only_tors = [{**OVERRIDES[0], "peers": ["tor-r1"]}]
    assert unconditional_peers(config(TWO_GROUPS, only_tors)) == {"spine"}
