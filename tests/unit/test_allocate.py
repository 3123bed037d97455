"""The allocator (bgpspeaker.controller.allocate): a table of cases compared whole, and properties."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpspeaker.controller.allocate import Allocation, Failure, Outcome, allocate
from bgpspeaker.controller.claims import Claim, parse_claim
from bgpspeaker.pools import AddressPool, parse_pools


def pools(*specs: dict[str, Any]) -> tuple[AddressPool, ...]:
    problems: list[str] = []
    parsed = parse_pools(list(specs), "addressPools", problems)
    assert not problems
    return parsed


def svc(
    name: str,
    *,
    ns: str = "default",
    ips: tuple[str, ...] = (),
    created: str = "",
    annotations: dict[str, str] | None = None,
    lb_ip: str | None = None,
    families: tuple[str, ...] = ("IPv4",),
    policy: str = "SingleStack",
    ports: tuple[tuple[str, int], ...] = (("TCP", 80),),
    etp: str = "Cluster",
    selector: dict[str, str] | None = None,
    type_: str = "LoadBalancer",
    lb_class: str | None = None,
    labels: dict[str, str] | None = None,
) -> Claim:
    spec: dict[str, Any] = {
        "type": type_,
        "ipFamilies": list(families),
        "ipFamilyPolicy": policy,
        "ports": [{"protocol": p, "port": n} for p, n in ports],
        "externalTrafficPolicy": etp,
        "selector": selector or {"app": name},
    }
    if lb_ip is not None:
        spec["loadBalancerIP"] = lb_ip
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    return parse_claim(
        {
            "metadata": {
                "namespace": ns,
                "name": name,
                "resourceVersion": "1",
                "creationTimestamp": created or f"2026-01-01T00:00:{len(name):02d}Z",
                "annotations": annotations or {},
                "labels": labels or {},
            },
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
        }
    )


PUBLIC = {"name": "public", "addresses": ["192.0.2.0/30"]}
DUAL = {"name": "dual", "addresses": ["192.0.2.8/31", "2001:db8::/127"]}
PRIVATE = {"name": "private", "addresses": ["10.0.0.1-10.0.0.2"], "autoAssign": False}


def run(pool_specs: list[dict[str, Any]], claims: list[Claim], lb_class: str = "") -> Allocation:
    return allocate(pools(*pool_specs), {c.key: c for c in claims}, load_balancer_class=lb_class)


def summary(allocation: Allocation) -> dict[str, tuple[str, tuple[str, ...], str | None]]:
    """service name -> (outcome, ips, failure)."""
    return {
        key.split("/")[1]: (a.outcome.value, tuple(map(str, a.ips)), a.failure.value if a.failure else None)
        for key, a in allocation.assignments.items()
    }


@dataclasses.dataclass(frozen=True)
class Case:
    desc: str
    pools: list[dict[str, Any]]
    claims: list[Claim]
    want: dict[str, tuple[str, tuple[str, ...], str | None]]
    lb_class: str = ""


CASES = [
    Case(
        "lowest free address first, oldest Service first",
        [PUBLIC],
        [svc("bb"), svc("a")],
        {"a": ("allocated", ("192.0.2.0",), None), "bb": ("allocated", ("192.0.2.1",), None)},
    ),
    Case(
        "a held address is kept, the next one goes to the newcomer",
        [PUBLIC],
        [svc("a", ips=("192.0.2.2",)), svc("bb")],
        {"a": ("kept", ("192.0.2.2",), None), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "exhausted pool: the fifth Service fails",
        [PUBLIC],
        [svc(n, created=f"2026-01-01T00:00:0{i}Z") for i, n in enumerate("abcde")],
        {
            **{n: ("allocated", (f"192.0.2.{i}",), None) for i, n in enumerate("abcd")},
            "e": ("failed", (), "pool_exhausted"),
        },
    ),
    Case(
        "requested IP honoured (spec.loadBalancerIP)",
        [PUBLIC],
        [svc("a", lb_ip="192.0.2.3")],
        {"a": ("allocated", ("192.0.2.3",), None)},
    ),
    Case(
        "requested IP by annotation, any of the three prefixes",
        [PUBLIC],
        [
            svc("a", annotations={"bgpspeaker.io/loadBalancerIPs": "192.0.2.1"}),
            svc("bb", annotations={"metallb.io/loadBalancerIPs": "192.0.2.2"}),
            svc("ccc", annotations={"metallb.universe.tf/loadBalancerIPs": "192.0.2.3"}),
        ],
        {
            "a": ("allocated", ("192.0.2.1",), None),
            "bb": ("allocated", ("192.0.2.2",), None),
            "ccc": ("allocated", ("192.0.2.3",), None),
        },
    ),
    Case(
        "requested IP outside every pool is refused",
        [PUBLIC],
        [svc("a", lb_ip="198.51.100.7")],
        {"a": ("failed", (), "requested_ip_not_in_pool")},
    ),
    Case(
        "requested IP in use by another Service is refused",
        [PUBLIC],
        [svc("a", ips=("192.0.2.1",)), svc("bb", lb_ip="192.0.2.1")],
        {"a": ("kept", ("192.0.2.1",), None), "bb": ("failed", (), "ip_in_use")},
    ),
    Case(
        "pool by annotation; autoAssign false pools only on request",
        [PUBLIC, PRIVATE],
        [svc("a", annotations={"metallb.io/address-pool": "private"}), svc("bb")],
        {"a": ("allocated", ("10.0.0.1",), None), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "autoAssign false alone: nothing for a Service that does not ask",
        [PRIVATE],
        [svc("a")],
        {"a": ("failed", (), "no_pool")},
    ),
    Case(
        "unknown pool name",
        [PUBLIC],
        [svc("a", annotations={"bgpspeaker.io/address-pool": "nope"})],
        {"a": ("failed", (), "no_pool")},
    ),
    Case(
        "sharing: same key, other ports, both Cluster: the same address",
        [PUBLIC],
        [
            svc("a", annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
            svc("bb", annotations={"bgpspeaker.io/allow-shared-ip": "k"}, ports=(("TCP", 443),)),
        ],
        {"a": ("allocated", ("192.0.2.0",), None), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "sharing refused: the same port",
        [PUBLIC],
        [
            svc("a", ips=("192.0.2.0",), annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
            svc("bb", lb_ip="192.0.2.0", annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
        ],
        {"a": ("kept", ("192.0.2.0",), None), "bb": ("failed", (), "sharing_rule_broken")},
    ),
    Case(
        "sharing refused: another key",
        [PUBLIC],
        [
            svc("a", ips=("192.0.2.0",), annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
            svc("bb", lb_ip="192.0.2.0", ports=(("UDP", 53),), annotations={"metallb.io/allow-shared-ip": "x"}),
        ],
        {"a": ("kept", ("192.0.2.0",), None), "bb": ("failed", (), "sharing_rule_broken")},
    ),
    Case(
        "sharing refused: Local with other pods",
        [PUBLIC],
        [
            svc("a", ips=("192.0.2.0",), etp="Local", annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
            svc("bb", lb_ip="192.0.2.0", ports=(("TCP", 443),), annotations={"bgpspeaker.io/allow-shared-ip": "k"}),
        ],
        {"a": ("kept", ("192.0.2.0",), None), "bb": ("failed", (), "sharing_rule_broken")},
    ),
    Case(
        "sharing allowed: Local with the same pods",
        [PUBLIC],
        [
            svc(
                "a",
                ips=("192.0.2.0",),
                etp="Local",
                selector={"app": "x"},
                annotations={"metallb.io/allow-shared-ip": "k"},
            ),
            svc(
                "bb",
                etp="Local",
                selector={"app": "x"},
                ports=(("UDP", 80),),
                annotations={"metallb.io/allow-shared-ip": "k"},
            ),
        ],
        {"a": ("kept", ("192.0.2.0",), None), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "dual-stack: one address per family, in ipFamilies order",
        [DUAL],
        [svc("a", families=("IPv6", "IPv4"), policy="RequireDualStack")],
        {"a": ("allocated", ("2001:db8::", "192.0.2.8"), None)},
    ),
    Case(
        "RequireDualStack fails without an IPv6 pool; PreferDualStack takes IPv4 alone",
        [PUBLIC],
        [
            svc("a", families=("IPv4", "IPv6"), policy="RequireDualStack"),
            svc("bb", families=("IPv4", "IPv6"), policy="PreferDualStack"),
        ],
        {"a": ("failed", (), "pool_exhausted"), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "an address outside every pool is kept (pool edited), with a warning",
        [PUBLIC],
        [svc("a", ips=("198.51.100.9",))],
        {"a": ("outside_pools", ("198.51.100.9",), None)},
    ),
    Case(
        "two Services holding one address: the older keeps it, the younger gets another",
        [PUBLIC],
        [svc("a", ips=("192.0.2.0",)), svc("bb", ips=("192.0.2.0",))],
        {"a": ("kept", ("192.0.2.0",), None), "bb": ("allocated", ("192.0.2.1",), None)},
    ),
    Case(
        "a type change away from LoadBalancer frees the address",
        [PUBLIC],
        [svc("a", ips=("192.0.2.0",), type_="ClusterIP"), svc("bb")],
        {"a": ("released", (), None), "bb": ("allocated", ("192.0.2.0",), None)},
    ),
    Case(
        "another loadBalancerClass: not ours, but its address is nobody else's",
        [PUBLIC],
        [svc("a", ips=("192.0.2.0",), lb_class="other.io/lb"), svc("bb", lb_class="other.io/lb"), svc("ccc")],
        {"ccc": ("allocated", ("192.0.2.1",), None)},
    ),
    Case(
        "our class only when configured",
        [PUBLIC],
        [svc("a", lb_class="example.com/bgp"), svc("bb")],
        {"a": ("allocated", ("192.0.2.0",), None)},
        lb_class="example.com/bgp",
    ),
    Case(
        "avoidBuggyIPs skips .0 and .255",
        [{"name": "p", "addresses": ["192.0.2.255-192.0.3.1"], "avoidBuggyIPs": True}],
        [svc("a"), svc("bb", lb_ip="192.0.3.0")],
        {"a": ("allocated", ("192.0.3.1",), None), "bb": ("failed", (), "requested_ip_not_in_pool")},
    ),
    Case(
        "namespaces and serviceSelectors choose the pool",
        [
            {"name": "team", "addresses": ["10.1.0.0/31"], "namespaces": ["team"]},
            {"name": "web", "addresses": ["10.2.0.0/31"], "serviceSelectors": [{"matchLabels": {"tier": "web"}}]},
        ],
        [svc("a", ns="team"), svc("bb", labels={"tier": "web"}), svc("ccc")],
        {
            "a": ("allocated", ("10.1.0.0",), None),
            "bb": ("allocated", ("10.2.0.0",), None),
            "ccc": ("failed", (), "no_pool"),
        },
    ),
    Case(
        "a bad request is the Service's failure",
        [PUBLIC],
        [svc("a", annotations={"bgpspeaker.io/loadBalancerIPs": "not-an-ip"})],
        {"a": ("failed", (), "invalid_request")},
    ),
    Case(
        "a changed request moves the Service (the user asked)",
        [PUBLIC],
        [svc("a", ips=("192.0.2.0",), lb_ip="192.0.2.3")],
        {"a": ("allocated", ("192.0.2.3",), None)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_allocation_table(case: Case) -> None:
    """Each row: pools and Services in, every Service's outcome out (compared whole)."""
    assert summary(run(case.pools, case.claims, case.lb_class)) == case.want


def test_pool_use_counts_shared_addresses_once() -> None:
    """in_use counts addresses: two Services on one shared address are one."""
    shared = {"bgpspeaker.io/allow-shared-ip": "k"}
    allocation = run([PUBLIC], [svc("a", annotations=shared), svc("bb", annotations=shared, ports=(("UDP", 1),))])
    assert allocation.in_use == {"public": 1}


def test_kept_assignments_need_no_write() -> None:
    """A restart over allocated Services decides exactly what they hold: nothing to write."""
    first = run([PUBLIC], [svc("a"), svc("bb"), svc("ccc")])
    again = [svc(n, ips=tuple(map(str, first.assignments[f"default/{n}"].ips))) for n in ("a", "bb", "ccc")]
    second = run([PUBLIC], again)
    assert {k: (a.outcome, a.write) for k, a in second.assignments.items()} == {
        f"default/{n}": (Outcome.KEPT, False) for n in ("a", "bb", "ccc")
    }


def test_failure_detail_names_the_holder() -> None:
    """AllocationFailed says who holds the address."""
    allocation = run([PUBLIC], [svc("a", ips=("192.0.2.1",)), svc("bb", lb_ip="192.0.2.1")])
    failed = allocation.assignments["default/bb"]
    assert (failed.failure, failed.detail) == (Failure.IN_USE, "192.0.2.1 is in use by default/a")


# --- properties --------------------------------------------------------------------------

_ADDRESSES = [f"192.0.2.{i}" for i in range(6)] + ["198.51.100.1"]


@st.composite
def _claims(draw: st.DrawFn) -> list[Claim]:
    count = draw(st.integers(0, 12))
    claims = []
    for index in range(count):
        held = draw(st.lists(st.sampled_from(_ADDRESSES), max_size=2, unique=True))
        key = draw(st.sampled_from([None, "k", "j"]))
        claims.append(
            svc(
                f"s{index}",
                ips=tuple(held),
                created=f"2026-01-01T00:00:{draw(st.integers(0, 5)):02d}Z",
                annotations={"bgpspeaker.io/allow-shared-ip": key} if key else {},
                lb_ip=draw(st.sampled_from([None, *_ADDRESSES])),
                ports=tuple(draw(st.lists(st.sampled_from([("TCP", 80), ("TCP", 443), ("UDP", 53)]), min_size=1))),
                etp=draw(st.sampled_from(["Cluster", "Local"])),
                selector={"app": draw(st.sampled_from(["x", "y"]))},
                type_=draw(st.sampled_from(["LoadBalancer", "LoadBalancer", "ClusterIP"])),
            )
        )
    return claims


def _shared_legally(a: Claim, b: Claim) -> bool:
    return (
        a.sharing_key is not None
        and a.sharing_key == b.sharing_key
        and not (a.ports & b.ports)
        and (a.selector == b.selector or (a.external_traffic_policy == b.external_traffic_policy == "Cluster"))
    )


@settings(max_examples=300, deadline=None)
@given(_claims())
def test_never_two_owners(claims: list[Claim]) -> None:
    """Whatever the Services hold and ask for, no address ends with two owners unless they share it legally."""
    by_key = {c.key: c for c in claims}
    allocation = allocate(pools(PUBLIC | {"addresses": ["192.0.2.0/29"]}), by_key)
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, list[str]] = {}
    for key, assignment in allocation.assignments.items():
        if assignment.outcome is Outcome.RELEASED:  # not ours any more: keeps only what is in no pool
            assert not any(ip in ipaddress.ip_network("192.0.2.0/29") for ip in assignment.ips)
            continue
        for ip in assignment.ips:
            owners.setdefault(ip, []).append(key)
    for ip, keys in owners.items():
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                assert _shared_legally(by_key[first], by_key[second]), (ip, first, second)


@settings(max_examples=200, deadline=None)
@given(_claims())
def test_decided_twice_the_same(claims: list[Claim]) -> None:
    """Deterministic, whatever the order the Services arrive in (two replicas decide the same)."""
    forward = allocate(pools(PUBLIC), {c.key: c for c in claims})
    backward = allocate(pools(PUBLIC), {c.key: c for c in reversed(claims)})
    assert forward == backward


@settings(max_examples=200, deadline=None)
@given(_claims())
def test_applying_the_result_is_stable(claims: list[Claim]) -> None:
    """Written back, the result is a fixed point: the next pass writes nothing new."""
    first = allocate(pools(PUBLIC), {c.key: c for c in claims})
    written = [
        dataclasses.replace(c, ingress_ips=first.assignments[c.key].ips) if c.key in first.assignments else c
        for c in claims
    ]
    second = allocate(pools(PUBLIC), {c.key: c for c in written})
    assert [k for k, a in second.assignments.items() if a.write] == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "metadata": st.fixed_dictionaries(
                {"namespace": st.just("ns"), "name": st.just("x")},
                optional={"annotations": _JSON, "labels": _JSON, "resourceVersion": _JSON, "creationTimestamp": _JSON},
            )
        },
        optional={"spec": _JSON, "status": _JSON},
    )
)
def test_any_service_shape_is_a_claim(obj: dict[str, Any]) -> None:
    """A Service of any shape with a name parses (a bad request is its request_problem), and allocates."""
    claim = parse_claim(obj)
    allocate(pools(PUBLIC), {claim.key: claim})
