"""Weighted ECMP: the Link Bandwidth each route carries (a decision table), its encoding,
its config and annotation errors, and the hold on weight-only changes (fake clock)."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Any

import pytest

from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from bgpspeaker.errors import ConfigError
from bgpspeaker.exabgp.commands import announce_line
from bgpspeaker.report import describe_attributes
from bgpspeaker.routes import Attributes, Reason
from bgpspeaker.values import show
from bgpspeaker.weights import (
    ANNOTATION_ECMP_WEIGHT,
    BYTES_PER_SECOND_PER_WEIGHT,
    MAX_WEIGHT,
    WeightHold,
)
from lab.kubeapi import node, service
from tests.unit.test_decision import ME, V4_PEER, eps, snapshot

MBIT = BYTES_PER_SECOND_PER_WEIGHT
VIP = "192.0.2.1/32"


def config(ecmp_weight: str | None = "localEndpoints", *, annotations: bool = False, **extra: Any) -> dict[str, Any]:
    advertisement: dict[str, Any] = {"name": "w", **extra}
    if ecmp_weight is not None:
        advertisement["ecmpWeight"] = ecmp_weight
    return {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [V4_PEER],
        "serviceAnnotations": annotations,
        "advertisements": [advertisement],
    }


def ready(count: int, where: str = ME) -> list[tuple[str, str, bool | None, bool | None]]:
    return [(f"10.1.0.{k + 1}", where, True, True) for k in range(count)]


@dataclasses.dataclass
class Case:
    desc: str
    config: dict[str, Any]
    objects: list[dict[str, Any]]
    want_bandwidth: int | None
    """The link bandwidth on the route to tor-a; None: no community."""
    want_detail: str = ""


CASES = [
    Case(
        "default none: no community",
        config(None),
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local"), eps("s", *ready(3))],
        None,
    ),
    Case(
        "localEndpoints, Local VIP, 3 ready here: 3 units",
        config(),
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local"), eps("s", *ready(3))],
        3 * MBIT,
    ),
    Case(
        "Local VIP: endpoints on other nodes and unusable ones do not count",
        config(),
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local"),
            eps(
                "s",
                *ready(2),
                *ready(4, "node-b"),
                ("10.1.9.1", ME, False, False),  # neither ready nor serving
                ("10.1.9.2", ME, False, True),  # terminating but serving: usable, counts
            ),
        ],
        3 * MBIT,
    ),
    Case(
        "Cluster VIP: the same value on every node, whatever runs here",
        config(),
        [node(ME), service("default", "s", ips=["192.0.2.1"]), eps("s", *ready(5, "node-b"))],
        MBIT,
    ),
    Case(
        "counts above the bound count as the bound",
        config(),
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local"),
            eps("s", *[(f"10.2.{k // 250}.{k % 250}", ME, True, True) for k in range(MAX_WEIGHT + 5)]),
        ],
        MAX_WEIGHT * MBIT,
    ),
    Case(
        "annotation overrides the count (serviceAnnotations on)",
        config(annotations=True),
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local", annotations={ANNOTATION_ECMP_WEIGHT: "7"}),
            eps("s", *ready(2)),
        ],
        7 * MBIT,
    ),
    Case(
        "annotation ignored without serviceAnnotations",
        config(annotations=False),
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local", annotations={ANNOTATION_ECMP_WEIGHT: "7"}),
            eps("s", *ready(2)),
        ],
        2 * MBIT,
    ),
    Case(
        "annotation without ecmpWeight: no community",
        config(None, annotations=True),
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local", annotations={ANNOTATION_ECMP_WEIGHT: "7"}),
            eps("s", *ready(2)),
        ],
        None,
    ),
    *(
        Case(
            f"bad annotation ({label}): the endpoint count, and the reason",
            config(annotations=True),
            [
                node(ME),
                service("default", "s", ips=["192.0.2.1"], policy="Local", annotations={ANNOTATION_ECMP_WEIGHT: raw}),
                eps("s", *ready(2)),
            ],
            2 * MBIT,
            f"annotation {ANNOTATION_ECMP_WEIGHT}: must be an integer 1..{MAX_WEIGHT} in ASCII digits, got {show(raw)}",
        )
        for label, raw in (
            ("zero", "0"),
            ("above the bound", "1001"),
            ("negative", "-1"),
            ("non-ASCII digit", "\u0663"),  # ARABIC-INDIC DIGIT THREE: int() would take it
            ("5000 digits", "9" * 5000),
            ("a word", "two"),
        )
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_link_bandwidth_table(case: Case) -> None:
    """Each row: the route's link bandwidth to tor-a and the service verdict's detail."""
    decision = decide(snapshot(*case.objects), parse_config(case.config), ME)
    announcement = decision.announcements[ipaddress.ip_network(VIP)]
    verdict = next(v for v in decision.verdicts if v.service == "default/s")
    assert (announcement.routes["tor-a"].link_bandwidth, verdict.reason.announces, verdict.detail) == (
        case.want_bandwidth,
        True,
        case.want_detail,
    )


def test_shared_vip_takes_the_larger_weight() -> None:
    """Two Local services on one VIP with 1 and 3 local endpoints: one route, weight 3, no conflict."""
    decision = decide(
        snapshot(
            node(ME),
            service("default", "a", ips=["192.0.2.1"], policy="Local"),
            eps("a", *ready(1)),
            service("default", "b", ips=["192.0.2.1"], policy="Local"),
            eps("b", *ready(3)),
        ),
        parse_config(config()),
        ME,
    )
    announcement = decision.announcements[ipaddress.ip_network(VIP)]
    assert announcement.routes["tor-a"].link_bandwidth == 3 * MBIT
    assert {v.reason for v in decision.verdicts} == {Reason.LOCAL_ENDPOINT}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("weighted", "advertisements[0].ecmpWeight: must be one of none, localEndpoints, got 'weighted'"),
        ("LocalEndpoints", "advertisements[0].ecmpWeight: must be one of none, localEndpoints, got 'LocalEndpoints'"),
        (1, "advertisements[0].ecmpWeight: must be one of none, localEndpoints, got 1"),
        (None, "advertisements[0].ecmpWeight: must be one of none, localEndpoints, got None"),
    ],
    ids=["unknown", "case", "integer", "null"],
)
def test_bad_ecmp_weight_is_one_precise_problem(value: object, message: str) -> None:
    """check-config names the path, the value and what is allowed."""
    raw = config()
    raw["advertisements"][0]["ecmpWeight"] = value
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert raised.value.problems == [message]


@pytest.mark.parametrize(
    ("asn", "words"),
    [(64513, "bandwidth:64513:250000"), (4200000001, "bandwidth:23456:250000")],
    ids=["2-octet", "4-octet as AS_TRANS"],
)
def test_encoding(asn: int, words: str) -> None:
    """ExaBGP's extended-community syntax; a four-octet ASN is written as AS_TRANS."""
    line = announce_line(
        ipaddress.ip_address("10.0.0.1"),
        Attributes(link_bandwidth=2 * MBIT),
        [ipaddress.ip_network(VIP)],
        my_asn=asn,
    )
    assert line.endswith(f"next-hop self extended-community [{words}] nlri {VIP}")


def test_unit_is_exact_in_single_precision_and_whole_mbits() -> None:
    """Every weight 1..MAX_WEIGHT survives ExaBGP's float32 and FRR's truncation to Mbit/s."""
    for weight in range(1, MAX_WEIGHT + 1):
        (wire,) = struct.unpack("!f", struct.pack("!f", weight * MBIT))
        assert int(wire * 8 / 1_000_000) == weight


def test_explain_shows_the_weight() -> None:
    """describe_attributes (explain, status) names the weight and the value."""
    assert describe_attributes(Attributes(med=5, link_bandwidth=2 * MBIT)) == "med 5, ecmp-weight 2 (250000 bytes/s)"


KEY = ("tor-a", ipaddress.ip_network(VIP))
OTHER = ("tor-a", ipaddress.ip_network("192.0.2.2/32"))
W1, W2, W3 = (Attributes(link_bandwidth=k * MBIT) for k in (1, 2, 3))


def test_weight_only_change_waits_then_goes_out_with_the_newest_value() -> None:
    """1 -> 2 at t=10 held until 12; 2 -> 3 at 11 still held (same window); at 12 the 3 goes."""
    hold = WeightHold(2.0)
    acked = {KEY: W1}
    effective = {KEY: W2}
    assert hold.apply(effective, acked, now=10) == (12, {KEY})
    assert effective == {KEY: W1}
    effective = {KEY: W3}
    assert hold.apply(effective, acked, now=11) == (12, {KEY})
    assert effective == {KEY: W1}
    effective = {KEY: W3}
    assert hold.apply(effective, acked, now=12) == (None, set())
    assert effective == {KEY: W3}
    # The next change opens a new window.
    effective = {KEY: W1}
    assert hold.apply(effective, {KEY: W3}, now=12.5) == (14.5, {KEY})


@pytest.mark.parametrize(
    ("acked", "wanted"),
    [
        ({}, W2),  # a new route: announced at once
        ({KEY: Attributes()}, W2),  # the weight appears (config change): at once
        ({KEY: W1}, dataclasses.replace(W2, med=5)),  # another attribute changes too: at once
    ],
    ids=["announce", "weight-appears", "other-attribute"],
)
def test_changes_that_are_not_weight_only_go_at_once(acked: dict[Any, Attributes], wanted: Attributes) -> None:
    """Only a weight change of an announced route waits; announces and other changes do not."""
    effective = {KEY: wanted}
    assert WeightHold(2.0).apply(effective, acked, now=0) == (None, set())
    assert effective == {KEY: wanted}


def test_withdraws_are_not_touched() -> None:
    """A route that is no longer wanted is not put back."""
    effective: dict[Any, Attributes] = {}
    assert WeightHold(2.0).apply(effective, {KEY: W1, OTHER: W2}, now=0) == (None, set())
    assert effective == {}
