"""Hostile Services: one bad annotation or ingress IP costs that service a verdict and
nothing else (a 5,000-digit MED annotation used to crash the reconciler on every node)."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgpspeaker.cluster.model import ObjectInvalid, parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide, reserved_address_problem
from bgpspeaker.routes import Reason
from lab.kubeapi import node, service
from tests.unit.test_decision import ME, eps, snapshot

TOR_A = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512, "families": ["ipv4", "ipv6"]}
TOR_V6 = {"name": "tor-v6", "peerAddress": "fd00::1", "peerASN": 64512, "sourceAddress": "fd00::2"}


def config(**extra: Any) -> Any:
    return parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "serviceAnnotations": True,
            "peers": [TOR_A, TOR_V6],
            "advertisements": [{"name": "all", "med": 7, "communities": ["64513:1"]}],
            **extra,
        }
    )


def web(ips: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    return [service("default", "web", ips=ips, **kwargs), eps("web", ("10.1.0.1", ME, True, True))]


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        pytest.param({"bgpspeaker.io/med": "1" * 5000}, "bgpspeaker.io/med: must be an integer", id="med-5000-digits"),
        pytest.param(
            {"bgpspeaker.io/as-path-prepend": "9" * 4301}, "as-path-prepend: must be an integer", id="prepend-4301"
        ),
        pytest.param({"bgpspeaker.io/med": "\u0661\u0660"}, "in ASCII digits", id="med-arabic-digits"),
        pytest.param({"bgpspeaker.io/med": "4294967296"}, "0..4294967295", id="med-over-u32"),
        pytest.param(
            {"bgpspeaker.io/communities": "\u0666\u0664\u0665\u0661\u0662:\u0661\u0660\u0660"},
            "bgpspeaker.io/communities[0]: must be",
            id="arabic-community",
        ),
        pytest.param(
            {"bgpspeaker.io/communities": ",".join(["1:1"] * 5000)}, "at most 64 communities", id="5000-communities"
        ),
        pytest.param(
            {"bgpspeaker.io/communities": "1" * 100_000 + ":1"}, "bgpspeaker.io/communities", id="huge-community"
        ),
    ],
)
def test_bad_annotation_keeps_the_route_with_the_advertisement_attributes(
    annotations: dict[str, str], problem: str
) -> None:
    """The VIP stays announced with the advertisement's own MED and communities; the verdict says why."""
    decision = decide(snapshot(node(ME), *web(["192.0.2.10"], annotations=annotations)), config(), ME)
    routes = {str(p): dict(a.routes) for p, a in decision.announcements.items()}
    assert set(routes) == {"192.0.2.10/32"}
    attributes = routes["192.0.2.10/32"]["tor-a"]
    assert (attributes.med, attributes.communities, attributes.as_path_prepend) == (7, ("64513:1",), 0)
    [verdict] = decision.verdicts
    assert verdict.reason is Reason.CLUSTER_ENDPOINT
    assert problem in verdict.detail, verdict.detail
    assert len(verdict.detail) < 400


REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("127.0.0.1", "loopback"),
    ("224.0.0.1", "multicast"),
    ("239.1.1.1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("169.254.1.1", "link-local"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("ff02::1", "multicast"),
    ("fe80::1", "link-local"),
    ("::ffff:192.0.2.77", "IPv4-mapped"),
    ("::192.0.2.77", "IPv4-compatible"),
    ("fe80::1%eth0", "scoped"),
    ("2001:db8::1%eth0", "scoped"),
    ("10.0.0.1", "peer"),
    ("fd00::1", "peer"),
    ("fd00::2", "peer"),
    ("192.168.7.5", "this node"),
]


@pytest.mark.parametrize(("ip", "problem"), REFUSED, ids=[ip for ip, _ in REFUSED])
def test_addresses_that_cannot_be_a_vip_are_refused(ip: str, problem: str) -> None:
    """Reserved, scoped, mapped addresses and the peers' and this node's own are never announced."""
    objects = [node(ME, addresses=["192.168.7.5"]), *web([ip, "192.0.2.10"])]
    decision = decide(snapshot(*objects), config(), ME)
    assert {str(p) for p in decision.announcements} == {"192.0.2.10/32"}
    refused = [v for v in decision.verdicts if v.reason is Reason.INVALID_INGRESS_IP]
    assert len(refused) == 1, decision.verdicts
    assert problem in refused[0].detail, refused[0].detail


@pytest.mark.parametrize(
    "ip", ["10.96.0.10", "172.16.5.5", "192.168.1.1", "100.64.0.1", "198.51.100.7", "fd12::5", "2001:db8::5"]
)
def test_private_documentation_and_ula_addresses_are_vips(ip: str) -> None:
    """Private, CGNAT, documentation and unique-local addresses are ordinary VIPs."""
    decision = decide(snapshot(node(ME), *web([ip])), config(), ME)
    assert len(decision.announcements) == 1, decision.verdicts


def test_allowed_vip_ranges_whitelist() -> None:
    """With allowedVIPRanges only VIPs inside the ranges are announced; the others say which ranges."""
    decision = decide(
        snapshot(node(ME), *web(["192.0.2.10", "198.51.100.7", "2001:db8::5"])),
        config(allowedVIPRanges=["192.0.2.0/24", "2001:db8::/64"]),
        ME,
    )
    assert {str(p) for p in decision.announcements} == {"192.0.2.10/32", "2001:db8::5/128"}
    [refused] = [v for v in decision.verdicts if v.reason is Reason.INVALID_INGRESS_IP]
    assert str(refused.ip) == "198.51.100.7"
    assert "outside allowedVIPRanges (192.0.2.0/24, 2001:db8::/64)" in refused.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
FIELDS = [
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "type",
    "loadBalancerClass",
    "externalTrafficPolicy",
    "status",
    "loadBalancer",
    "ingress",
    "ip",
    "hostname",
    "endpoints",
    "addresses",
    "address",
    "conditions",
    "ready",
    "serving",
    "nodeName",
    "kubernetes.io/service-name",
    "bgpspeaker.io/med",
]
shaped = st.recursive(
    json_values,
    lambda children: st.dictionaries(st.sampled_from(FIELDS), children, max_size=5) | st.lists(children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped, st.sampled_from([parse_service, parse_endpoint_slice, parse_node]))
def test_any_object_parses_or_is_object_invalid(obj: Any, parse: Any) -> None:
    """Whatever the API server sends as an object, parsing returns a value or raises ObjectInvalid."""
    with contextlib.suppress(ObjectInvalid):
        parse(obj)


@settings(max_examples=2000, deadline=None)
@given(st.ip_addresses(v=4) | st.sampled_from([ipaddress.IPv4Address(a) for a in ("0.0.0.0", "255.255.255.255")]))
def test_ipv4_fast_path_agrees_with_ipaddress(ip: ipaddress.IPv4Address) -> None:
    """The integer checks for IPv4 refuse exactly what ipaddress's own properties call reserved."""
    refused_by_ipaddress = (
        ip.is_unspecified
        or ip.is_loopback
        or ip.is_multicast
        or ip.is_link_local
        or ip.is_reserved
        or ip in ipaddress.IPv4Network("0.0.0.0/8")
    )
    assert (reserved_address_problem(ip) is not None) == refused_by_ipaddress, reserved_address_problem(ip)
