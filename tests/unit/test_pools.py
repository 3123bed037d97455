"""Address pools in the config (bgpspeaker.pools), the controller section, and selection by pool."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpspeaker.cluster.model import Service, Snapshot
from bgpspeaker.config import parse_config
from bgpspeaker.controller.settings import ControllerConfig
from bgpspeaker.decision import decide
from bgpspeaker.errors import ConfigError
from bgpspeaker.pools import AddressPool, PoolIndex, parse_pools
from bgpspeaker.routes import Reason


def config(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "routerID": "10.0.0.2",
        "peers": [{"name": "r1", "peerAddress": "10.0.0.1", "peerASN": 64512, "families": ["ipv4", "ipv6"]}],
        **extra,
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    return raised.value.problems


def test_the_issue_example_parses() -> None:
    """CIDRs, ranges and IPv6 in one pool, with every default."""
    parsed = parse_config(
        config(
            addressPools=[
                {
                    "name": "public",
                    "addresses": ["198.51.100.0/29", "198.51.100.100-198.51.100.101", "2001:db8:1::/124"],
                }
            ]
        )
    )
    (pool,) = parsed.address_pools
    assert (pool.name, pool.auto_assign, pool.avoid_buggy_ips, pool.size(4), pool.size(6)) == (
        "public",
        True,
        False,
        10,
        16,
    )
    assert parsed.controller == ControllerConfig()


@pytest.mark.parametrize(
    ("pools", "want"),
    [
        (
            [
                {"name": "a", "addresses": ["198.51.100.0/29"]},
                {"name": "b", "addresses": ["198.51.100.4-198.51.100.9"]},
            ],
            [
                "addressPools[1].addresses[0]: 198.51.100.4-198.51.100.9 overlaps 198.51.100.0/29"
                " (addressPools[0].addresses[0], pool a); an address belongs to one pool only"
            ],
        ),
        (
            [{"name": "a", "addresses": ["2001:db8::/64", "2001:db8::5"]}],
            [
                "addressPools[0].addresses[1]: 2001:db8::5 overlaps 2001:db8::/64"
                " (addressPools[0].addresses[0], pool a); an address belongs to one pool only"
            ],
        ),
        (
            [{"name": "a", "addresses": ["198.51.100.1/24"]}],
            [
                "addressPools[0].addresses[0]: must be a CIDR with the host bits zero"
                " (198.51.100.1/24 has host bits set), got '198.51.100.1/24'"
            ],
        ),
        (
            [{"name": "a", "addresses": ["10.0.0.9-10.0.0.1"]}],
            ["addressPools[0].addresses[0]: the range's first address is above its last, got '10.0.0.9-10.0.0.1'"],
        ),
        (
            [{"name": "a", "addresses": ["10.0.0.1-2001:db8::1"]}],
            ["addressPools[0].addresses[0]: both ends of a range must be the same family, got '10.0.0.1-2001:db8::1'"],
        ),
        (
            [{"name": "a", "addresses": ["10.0.0.0/30"]}, {"name": "a", "addresses": ["10.0.1.0/30"]}],
            ["addressPools[1].name: duplicate of addressPools[0], got 'a'"],
        ),
        (
            [{"name": "a", "addresses": [], "autoAssign": "yes"}],
            [
                "addressPools[0].addresses: must be a non-empty list (at most 1000) of CIDRs or first-last ranges,"
                " got []",
                "addressPools[0].autoAssign: must be true or false, got 'yes'",
            ],
        ),
    ],
    ids=[
        "across-pools",
        "within-a-pool",
        "host-bits",
        "reversed-range",
        "mixed-family",
        "duplicate-name",
        "bad-values",
    ],
)
def test_pool_problems_are_precise(pools: list[dict[str, Any]], want: list[str]) -> None:
    """Each bad pool is one precise check-config line with its path."""
    assert problems_of(config(addressPools=pools)) == want


def test_advertisement_names_an_unknown_pool() -> None:
    """advertisements[].addressPools must name configured pools."""
    data = config(
        addressPools=[{"name": "public", "addresses": ["192.0.2.0/24"]}],
        advertisements=[{"name": "x", "addressPools": ["public", "privat"]}],
    )
    assert problems_of(data) == [
        "advertisements[0].addressPools[1]: no address pool named 'privat' (addressPools: public)"
    ]


@pytest.mark.parametrize(
    ("section", "want"),
    [
        (
            {"leaseDuration": "10s", "renewDeadline": "10s"},
            "controller.renewDeadline: must be 1s..leaseDuration (10s) exclusive, got '10s'",
        ),
        ({"retryPeriod": "10s"}, "controller.retryPeriod: must be 1s..renewDeadline (10s) exclusive, got '10s'"),
        ({"lease": 1}, "controller.lease: unknown field (allowed: leaseDuration, renewDeadline, retryPeriod)"),
    ],
)
def test_controller_section_problems(section: dict[str, Any], want: str) -> None:
    """Lease timing that could let two leaders write is refused."""
    assert problems_of(config(controller=section)) == [want]


def test_avoid_buggy_ips_size() -> None:
    """A /23 without .0 and .255 holds 508 usable addresses."""
    problems: list[str] = []
    (pool,) = parse_pools([{"name": "p", "addresses": ["10.0.0.0/23"], "avoidBuggyIPs": True}], "p", problems)
    assert (problems, pool.size(), pool.holds(ipaddress.IPv4Address("10.0.1.0"))) == ([], 508, False)


@st.composite
def _pools(draw: st.DrawFn) -> list[AddressPool]:
    starts = sorted(draw(st.sets(st.integers(0, 200), min_size=1, max_size=8)))
    pools = []
    for index, start in enumerate(starts):
        end = start + draw(st.integers(0, 3))
        if index + 1 < len(starts):
            end = min(end, starts[index + 1] - 1)
        problems: list[str] = []
        (pool,) = parse_pools(
            [
                {
                    "name": f"p{index}",
                    "addresses": [f"10.0.0.{start}-10.0.0.{end}"],
                    "avoidBuggyIPs": draw(st.booleans()),
                }
            ],
            "p",
            problems,
        )
        pools.append(pool)
    return pools


@settings(max_examples=200, deadline=None)
@given(_pools(), st.integers(0, 255))
def test_pool_index_agrees_with_each_pool(pools: list[AddressPool], last: int) -> None:
    """PoolIndex's binary search answers what asking every pool would."""
    ip = ipaddress.IPv4Address(f"10.0.0.{last}")
    expected = next((pool for pool in pools if pool.holds(ip)), None)
    assert PoolIndex(pools).pool_of(ip) is expected


def test_advertisement_selects_vips_by_pool() -> None:
    """A VIP goes out through the advertisements naming its pool; one in no named pool is not announced."""
    parsed = parse_config(
        config(
            addressPools=[
                {"name": "public", "addresses": ["192.0.2.0/24"]},
                {"name": "private", "addresses": ["10.9.0.0/24"]},
            ],
            advertisements=[{"name": "public-only", "addressPools": ["public"], "communities": ["64513:1"]}],
        )
    )
    services = {
        f"default/{name}": Service(
            key=f"default/{name}",
            type="LoadBalancer",
            load_balancer_class=None,
            external_traffic_policy="Cluster",
            ingress_ips=(ipaddress.ip_address(ip),),
            ingress_hostnames=(),
        )
        for name, ip in (("pub", "192.0.2.7"), ("priv", "10.9.0.7"))
    }
    from bgpspeaker.cluster.model import Endpoint, EndpointSlice, Node

    slices = {
        key: {key: EndpointSlice(key=key, service_key=key, endpoints=(Endpoint(True, True, None, "n1"),))}
        for key in services
    }
    snapshot = Snapshot(services=services, slices_by_service=slices, nodes={"n1": Node("n1", {}, False)})
    decision = decide(snapshot, parsed, "n1")
    assert [str(prefix) for prefix in decision.announcements] == ["192.0.2.7/32"]
    verdict = next(v for v in decision.verdicts if v.service == "default/priv")
    assert (verdict.reason, verdict.detail) == (
        Reason.NO_ADVERTISEMENT,
        "the VIP is in address pool private; no advertisement of this service selects it (addressPools)",
    )
