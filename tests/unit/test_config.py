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
    data = valid()
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
    ("peers.0.peerASN", KeyError, "peers[0].peerASN: required, an integer 1..4294967295"),
    ("peers.0.holdTime", "90s", "peers[0].holdTime: unknown field (allowed: name, peerASN, peerAddress)"),
    ("myAsn", 1, "myAsn: unknown field (allowed: apiVersion, kind, loadBalancerClass, myASN, peers, routerID)"),
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
        "peers[1].peerAddress: duplicate of peers[0], got '10.0.0.1'",
    ]


def test_document_that_is_not_a_mapping() -> None:
    """A YAML list or scalar is rejected with one clear line."""
    with pytest.raises(ConfigError) as raised:
        parse_config(["x"])
    assert raised.value.problems[0].startswith("(document): must be a mapping")
