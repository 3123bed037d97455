"""Config validation: every problem reported at once, each with path, value and what is allowed."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bgpspeaker.config import parse_config
from bgpspeaker.errors import ConfigError


def valid() -> dict[str, Any]:
    return {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "routerID": "10.0.0.2",
        "loadBalancerClass": "",
        "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}],
    }


def full() -> dict[str, Any]:
    """Every field of the issue's example, plus an iBGP peer."""
    return {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "serviceAnnotations": True,
        "peers": [
            {
                "name": "tor-a",
                "peerAddress": "10.0.0.1",
                "peerASN": 64512,
                "myASN": 64513,
                "peerPort": 179,
                "sourceAddress": "10.0.0.2",
                "holdTime": "90s",
                "keepaliveTime": "30s",
                "passwordFile": "/etc/bgpspeaker/tor-a.password",
                "ebgpMultiHop": 2,
                "families": ["ipv4", "ipv6"],
                "ipv6NextHop": "auto",
                "gracefulRestart": "120s",
                "nodeSelectors": [{"matchLabels": {"rack": "r1"}}],
            },
            {
                "name": "tor-b",
                "peerAddress": "fd00::1",
                "peerASN": 64513,
                "passwordSecret": {"name": "bgp", "namespace": "kube-system", "key": "tor-b"},
                "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]}],
            },
        ],
        "advertisements": [
            {
                "name": "public",
                "serviceSelectors": [{"matchLabels": {"exposure": "public"}}],
                "nodeSelectors": [],
                "peers": ["tor-a"],
                "aggregationLength": 32,
                "aggregationLengthV6": 128,
                "communities": ["64512:100", "no-export", "large:64512:1:1"],
                "med": 10,
                "asPathPrepend": 2,
            },
            {"name": "internal", "peers": ["tor-b"], "localPref": 200},
        ],
    }


def test_full_example_parses() -> None:
    """Every field of the issue's example comes out typed, with the defaults filled in."""
    config = parse_config(full())
    tor_a, tor_b = config.peers
    assert (tor_a.hold_time_s, tor_a.keepalive_s, tor_a.graceful_restart_s, tor_a.ebgp_multihop) == (90, 30, 120, 2)
    assert tor_a.families == {"ipv4", "ipv6"} and tor_a.ebgp and tor_a.ipv6_next_hop is None
    assert tor_a.node_selectors[0].matches({"rack": "r1"}) and not tor_a.node_selectors[0].matches({"rack": "r2"})
    assert tor_b.my_asn == 64513 and not tor_b.ebgp and tor_b.keepalive_s == 30
    assert tor_b.password_secret is not None and tor_b.password_secret.key == "tor-b"
    public, internal = config.advertisements
    assert public.communities == ("64512:100", "no-export") and public.large_communities == ("64512:1:1",)
    assert (public.med, public.as_path_prepend, internal.local_pref) == (10, 2, 200)
    assert config.service_annotations


def test_keepalive_defaults_to_a_third_of_hold_time() -> None:
    """holdTime 9s without keepaliveTime gives 3 s keepalives; 0 disables both."""
    data = valid()
    data["peers"][0]["holdTime"] = "9s"
    assert parse_config(data).peers[0].keepalive_s == 3
    data["peers"][0]["holdTime"] = 0
    assert parse_config(data).peers[0].keepalive_s == 0


def test_multihop_on_ibgp_is_an_error() -> None:
    """ebgpMultiHop on a session whose ASes match is rejected, naming the AS."""
    data = valid()
    data["peers"][0].update(peerASN=64513, ebgpMultiHop=2)
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert raised.value.problems == [
        "peers[0].ebgpMultiHop: only for eBGP sessions; this one is iBGP (peerASN = myASN = 64513)"
    ]


def test_both_password_sources_is_an_error() -> None:
    """passwordFile and passwordSecret together are ambiguous."""
    data = valid()
    data["peers"][0].update(passwordFile="/p", passwordSecret={"name": "bgp", "namespace": "default", "key": "k"})
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert raised.value.problems == ["peers[0]: set passwordFile or passwordSecret, not both"]


def test_valid_config_parses_with_typed_values() -> None:
    """The issue's example parses; addresses become ipaddress objects, families default by address."""
    config = parse_config(valid())
    assert config.my_asn == 64513
    assert config.router_id == ipaddress.IPv4Address("10.0.0.2")
    assert config.peers[0].peer_address == ipaddress.IPv4Address("10.0.0.1")
    assert config.peers[0].families == {"ipv4"}


def test_ipv6_peer_defaults_to_ipv6_family() -> None:
    """An IPv6 peer carries ipv6 unless told otherwise."""
    data = valid()
    data["peers"] = [{"name": "tor-v6", "peerAddress": "fd00::1", "peerASN": 64512}]
    assert parse_config(data).peers[0].families == {"ipv6"}


def test_optional_fields_have_defaults() -> None:
    """routerID and loadBalancerClass may be omitted."""
    data = valid()
    del data["routerID"], data["loadBalancerClass"]
    config = parse_config(data)
    assert (config.router_id, config.load_balancer_class) == (None, "")


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = full() if path.startswith("advertisements") else valid()
    target: Any = data
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


CASES = [
    ("apiVersion", "v1", "apiVersion: must be 'bgpspeaker.io/v1alpha1', got 'v1'"),
    ("kind", "Config", "kind: must be 'SpeakerConfig', got 'Config'"),
    ("myASN", 0, "myASN: must be an integer 1..4294967295, got 0"),
    ("myASN", 4294967296, "myASN: must be an integer 1..4294967295, got 4294967296"),
    ("myASN", "64513", "myASN: must be an integer 1..4294967295, got '64513'"),
    ("myASN", True, "myASN: must be an integer 1..4294967295, got True"),
    ("myASN", KeyError, "myASN: required, an integer 1..4294967295"),
    ("routerID", "fd00::2", "routerID: must be an IPv4 address (dotted quad), got 'fd00::2'"),
    ("routerID", "0.0.0.0", "routerID: must not be 0.0.0.0, got '0.0.0.0'"),
    ("loadBalancerClass", 5, "loadBalancerClass: must be \"\" or a class name like 'example.com/bgp', got 5"),
    ("peers", [], "peers: must be a non-empty list of peers, got []"),
    ("peers", KeyError, "peers: must be a non-empty list of peers, got None"),
    ("peers.0", "tor-a", "peers[0]: must be a mapping, got 'tor-a'"),
    (
        "peers.0.name",
        "Tor_A",
        "peers[0].name: must be a DNS label (lowercase letters, digits, '-', at most 63), got 'Tor_A'",
    ),
    ("peers.0.peerAddress", "10.0.0.300", "peers[0].peerAddress: must be an IPv4 or IPv6 address, got '10.0.0.300'"),
    (
        "peers.0.peerAddress",
        "127.0.0.1",
        "peers[0].peerAddress: must be a unicast, non-loopback address, got '127.0.0.1'",
    ),
    ("peers.0.peerASN", -1, "peers[0].peerASN: must be an integer 1..4294967295, got -1"),
    (
        "peers.0.peerASN",
        KeyError,
        "peers[0].peerASN: required, an integer 1..4294967295 (or dynamicASN: internal | external)",
    ),
    (
        "peers.0.holdtime",
        "90s",
        "peers[0].holdtime: unknown field (allowed: bfdProfile, connectTime, dynamicASN, ebgpMultiHop, families,"
        " gracefulRestart, holdTime, interface, ipv6NextHop, keepaliveTime, myASN, name, nodeSelectors, passwordFile,"
        " passwordSecret, peerASN, peerAddress, peerPort, routerID, sourceAddress)",
    ),
    (
        "peers.0.dynamicASN",
        "external",
        "peers[0]: set peerASN or dynamicASN, not both (got peerASN 64512, dynamicASN 'external')",
    ),
    ("peers.0.connectTime", "0s", "peers[0].connectTime: must be 1s..65535s, got '0s'"),
    ("peers.0.connectTime", "19h", "peers[0].connectTime: must be 1s..65535s, got '19h'"),
    (
        "peers.0.connectTime",
        "500ms",
        "peers[0].connectTime: must be a duration in whole seconds like 90s, 2m or 1m30s, got '500ms'",
    ),
    ("peers.0.routerID", "fd00::2", "peers[0].routerID: must be a non-zero IPv4 address (dotted quad), got 'fd00::2'"),
    ("peers.0.routerID", "0.0.0.0", "peers[0].routerID: must be a non-zero IPv4 address (dotted quad), got '0.0.0.0'"),
    (
        "myAsn",
        1,
        "myAsn: unknown field (allowed: addressPools, advertisements, allowedVIPRanges, apiOutage, apiVersion,"
        " bfdProfiles, communityAliases, controller, holdDown, kind, loadBalancerClass, myASN, nodeOverrides,"
        " peers, routerID, serviceAnnotations, shutdown)",
    ),
    ("serviceAnnotations", "yes", "serviceAnnotations: must be true or false, got 'yes'"),
    ("shutdown", "drain", "shutdown: must be a mapping with drainLocalPref, drainSeconds, mode; got 'drain'"),
    ("shutdown", {"mode": "pause"}, "shutdown.mode: must be one of withdraw, drain, keep, got 'pause'"),
    ("shutdown", {"mode": "drain", "drainSeconds": "2h"}, "shutdown.drainSeconds: must be at most 1h, got '2h'"),
    ("shutdown", {"drainLocalPref": -1}, "shutdown.drainLocalPref: must be an integer 0..4294967295, got -1"),
    ("shutdown", {"drain": 5}, "shutdown.drain: unknown field (allowed: drainLocalPref, drainSeconds, mode)"),
    ("apiOutage", {"policy": "panic"}, "apiOutage.policy: must be one of keep, withdraw, got 'panic'"),
    (
        "apiOutage",
        {"graceSeconds": "60s"},
        "apiOutage.graceSeconds: only meaningful with policy withdraw (keep never withdraws)",
    ),
    ("holdDown", {"withdrawAfter": "1h"}, "holdDown.withdrawAfter: must be at most 10m, got '1h'"),
    (
        "holdDown",
        {"announceAfter": "soon"},
        "holdDown.announceAfter: must be a duration in whole seconds like 90s, 2m or 1m30s, got 'soon'",
    ),
    ("peers.0.myASN", 0, "peers[0].myASN: must be an integer 1..4294967295, got 0"),
    ("peers.0.peerPort", 0, "peers[0].peerPort: must be an integer 1..65535, got 0"),
    (
        "peers.0.sourceAddress",
        "fd00::2",
        "peers[0].sourceAddress: must be the same family as peerAddress (10.0.0.1), got 'fd00::2'",
    ),
    ("peers.0.sourceAddress", "eth0", "peers[0].sourceAddress: must be a unicast IPv4 or IPv6 address, got 'eth0'"),
    ("peers.0.holdTime", "2s", "peers[0].holdTime: must be 0 (no keepalives) or 3s..65535s, got '2s'"),
    (
        "peers.0.holdTime",
        "90",
        "peers[0].holdTime: must be a duration in whole seconds like 90s, 2m or 1m30s, got '90'",
    ),
    ("peers.0.keepaliveTime", "100s", "peers[0].keepaliveTime: must be 1s..holdTime (90s), got '100s'"),
    (
        "peers.0.keepaliveTime",
        "1.5s",
        "peers[0].keepaliveTime: must be a duration in whole seconds like 90s, 2m or 1m30s, got '1.5s'",
    ),
    ("peers.0.passwordFile", "secret.txt", "peers[0].passwordFile: must be an absolute path, got 'secret.txt'"),
    (
        "peers.0.passwordSecret",
        {"name": "bgp", "namespace": "kube-system"},
        "peers[0].passwordSecret.key: must be a Secret data key (letters, digits, '-', '_', '.'), got None",
    ),
    (
        "peers.0.passwordSecret",
        "bgp",
        "peers[0].passwordSecret: must be a mapping with name, namespace and key, got 'bgp'",
    ),
    ("peers.0.ebgpMultiHop", 0, "peers[0].ebgpMultiHop: must be an integer 1..255, got 0"),
    (
        "peers.0.families",
        ["ipv4", "vpnv4"],
        "peers[0].families: must be a non-empty list of ipv4, ipv6; got ['ipv4', 'vpnv4']",
    ),
    ("peers.0.families", ["ipv4", "ipv4"], "peers[0].families: lists a family twice, got ['ipv4', 'ipv4']"),
    ("peers.0.families", [], "peers[0].families: must be a non-empty list of ipv4, ipv6; got []"),
    (
        "peers.0.ipv6NextHop",
        "::ffff:10.0.0.2",
        "peers[0].ipv6NextHop: must be 'auto' or a global IPv6 address"
        " (not IPv4-mapped, not link-local), got '::ffff:10.0.0.2'",
    ),
    (
        "peers.0.ipv6NextHop",
        "fe80::1",
        "peers[0].ipv6NextHop: must be 'auto' or a global IPv6 address"
        " (not IPv4-mapped, not link-local), got 'fe80::1'",
    ),
    (
        "peers.0.ipv6NextHop",
        "fd00::2",
        "peers[0].ipv6NextHop: set, but the session does not carry ipv6 (families: ['ipv4'])",
    ),
    (
        "peers.0.gracefulRestart",
        "2h",
        "peers[0].gracefulRestart: must be 1s..4095s (the capability's 12-bit field), got '2h'",
    ),
    (
        "peers.0.nodeSelectors",
        {"rack": "r1"},
        "peers[0].nodeSelectors: must be a list of label selectors, got {'rack': 'r1'}",
    ),
    (
        "peers.0.nodeSelectors",
        [{"matchLabels": {"rack": "r 1"}}],
        "peers[0].nodeSelectors[0].matchLabels.rack:"
        " must be a label value (at most 63 letters, digits, '-', '_', '.'), got 'r 1'",
    ),
    (
        "peers.0.nodeSelectors",
        [{"matchExpressions": [{"key": "rack", "operator": "In"}]}],
        "peers[0].nodeSelectors[0].matchExpressions[0].values: must be non-empty for operator In",
    ),
    (
        "peers.0.nodeSelectors",
        [{"matchExpressions": [{"key": "rack", "operator": "Equals", "values": ["a"]}]}],
        "peers[0].nodeSelectors[0].matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist,"
        " got 'Equals'",
    ),
    (
        "peers.0.nodeSelectors",
        [{"matchLabel": {"rack": "r1"}}],
        "peers[0].nodeSelectors[0].matchLabel: unknown field (allowed: matchExpressions, matchLabels)",
    ),
    ("advertisements", {"name": "x"}, "advertisements: must be a list, got {'name': 'x'}"),
    (
        "advertisements.0.name",
        "Public",
        "advertisements[0].name: must be a DNS label (lowercase letters, digits, '-', at most 63), got 'Public'",
    ),
    ("advertisements.0.peers", ["tor-z"], "advertisements[0].peers[0]: no peer named 'tor-z' (peers: tor-a, tor-b)"),
    ("advertisements.0.aggregationLength", 33, "advertisements[0].aggregationLength: must be an integer 0..32, got 33"),
    (
        "advertisements.0.aggregationLengthV6",
        129,
        "advertisements[0].aggregationLengthV6: must be an integer 0..128, got 129",
    ),
    (
        "advertisements.0.communities",
        ["64512:70000"],
        "advertisements[0].communities[0]: must be 'ASN:VALUE'"
        " (each 0..65535), 'large:GLOBAL:LOCAL1:LOCAL2' (each 0..4294967295), one of blackhole, graceful-shutdown,"
        " no-advertise, no-export, no-export-subconfed, no-peer or a communityAliases name; got '64512:70000'",
    ),
    (
        "advertisements.0.communities",
        ["large:1:2"],
        "advertisements[0].communities[0]: must be 'ASN:VALUE'"
        " (each 0..65535), 'large:GLOBAL:LOCAL1:LOCAL2' (each 0..4294967295), one of blackhole, graceful-shutdown,"
        " no-advertise, no-export, no-export-subconfed, no-peer or a communityAliases name; got 'large:1:2'",
    ),
    (
        "advertisements.0.communities",
        "64512:100",
        "advertisements[0].communities: must be a list of communities, got '64512:100'",
    ),
    ("advertisements.0.med", -1, "advertisements[0].med: must be an integer 0..4294967295, got -1"),
    ("advertisements.0.asPathPrepend", 17, "advertisements[0].asPathPrepend: must be an integer 0..16, got 17"),
    (
        "advertisements.0.localPref",
        200,
        "advertisements[0].localPref: iBGP only, but this advertisement reaches"
        " eBGP peer 'tor-a' (list only iBGP peers in peers, or drop localPref)",
    ),
    (
        "advertisements.1.asPathPrepend",
        1,
        "advertisements[1].asPathPrepend: eBGP only, but this advertisement"
        " reaches iBGP peer 'tor-b' (an iBGP router drops paths holding its own AS)",
    ),
    ("advertisements.1.name", "public", "advertisements[1].name: duplicate of advertisements[0], got 'public'"),
    (
        "advertisements.0.servicSelectors",
        [],
        "advertisements[0].servicSelectors: unknown field (allowed: addressPools,"
        " aggregationLength, aggregationLengthV6, asPathPrepend, communities, ecmpWeight, localPref, med, name,"
        " nodeSelectors, peers, serviceSelectors)",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_each_invalid_value_has_a_precise_message(path: str, value: Any, message: str) -> None:
    """One bad value: exactly one problem, worded with path, value and what is allowed."""
    with pytest.raises(ConfigError) as raised:
        parse_config(with_change(path, value))
    assert raised.value.problems == [message]


def test_all_problems_are_reported_together() -> None:
    """Several mistakes: all of them, in document order, in one error."""
    data = valid()
    data["myASN"] = 0
    data["peers"] = [
        {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512},
        {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512},
        {"name": "tor-c", "peerAddress": "nope", "peerASN": 1},
    ]
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert raised.value.problems == [
        "myASN: must be an integer 1..4294967295, got 0",
        "peers[2].peerAddress: must be an IPv4 or IPv6 address, got 'nope'",
        "peers[1].name: duplicate of peers[0], got 'tor-a'",
        "peers[1].peerAddress: duplicate of peers[0], got '10.0.0.1'"
        " (the same router twice needs nodeSelectors on every such peer, selecting different nodes)",
    ]


def test_document_that_is_not_a_mapping() -> None:
    """A YAML list or scalar is rejected with one clear line."""
    with pytest.raises(ConfigError) as raised:
        parse_config(["x"])
    assert raised.value.problems[0].startswith("(document): must be a mapping")
