"""Parsing raw Kubernetes objects: tolerant of absent fields, specific about wrong ones."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpspeaker.cluster.model import (
    ObjectInvalid,
    Snapshot,
    is_usable,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from lab.kubeapi import endpoint_slice, service


def test_service_fields() -> None:
    """Type, class, policy, ingress IPs (deduplicated) and hostnames."""
    obj = service("ns", "s", ips=["192.0.2.1", "192.0.2.1", "2001:db8::1"], hostnames=["h.example"], policy="Local")
    parsed = parse_service(obj)
    assert parsed.key == "ns/s"
    assert parsed.ingress_ips == (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1"))
    assert parsed.ingress_hostnames == ("h.example",)
    assert parsed.external_traffic_policy == "Local"


def test_service_with_bad_ingress_ip_keeps_the_good_ones() -> None:
    """A malformed ingress IP is set aside, not announced, not fatal."""
    obj = service("ns", "s", ips=["192.0.2.1", "192.0.2.1\nshutdown", "300.1.1.1"])
    parsed = parse_service(obj)
    assert parsed.ingress_ips == (ipaddress.ip_address("192.0.2.1"),)
    assert len(parsed.bad_ingress) == 2


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"metadata": {}}, "metadata.name: required"),
        ({"metadata": {"name": "s", "namespace": "n"}, "spec": []}, "spec: must be an object"),
        ({"metadata": {"name": "s", "namespace": "n"}, "spec": {"type": 5}}, "spec.type: must be a string"),
        (
            {"metadata": {"name": "s", "namespace": "n"}, "status": {"loadBalancer": {"ingress": "x"}}},
            "status.loadBalancer.ingress: must be a list",
        ),
    ],
)
def test_service_shape_errors_are_specific(obj: dict[str, Any], message: str) -> None:
    """Wrong shapes raise ObjectInvalid naming the field."""
    with pytest.raises(ObjectInvalid, match=message.replace(".", r"\.")):
        parse_service(obj)


def test_endpoint_slice_links_to_its_service_by_label() -> None:
    """kubernetes.io/service-name gives the owning service in the slice's namespace."""
    parsed = parse_endpoint_slice(
        endpoint_slice("ns", "s-abc", service_name="s", endpoints=[("10.1.0.1", "n", True, None)])
    )
    assert parsed.service_key == "ns/s"
    assert parsed.endpoints[0].ready is True and parsed.endpoints[0].serving is None


def test_endpoint_condition_of_wrong_type_is_an_error() -> None:
    """ready: "yes" is not a boolean."""
    obj = endpoint_slice("ns", "s-abc", service_name="s", endpoints=[("10.1.0.1", "n", True, None)])
    obj["endpoints"][0]["conditions"]["ready"] = "yes"
    with pytest.raises(ObjectInvalid, match=r"endpoints\[0\]\.conditions\.ready"):
        parse_endpoint_slice(obj)


@pytest.mark.parametrize(
    ("ready", "serving", "usable"),
    [
        (None, None, True),
        (True, None, True),
        (True, False, True),
        (False, True, True),
        (False, False, False),
        (False, None, False),
    ],
)
def test_usability_has_one_definition(ready: bool | None, serving: bool | None, usable: bool) -> None:
    """Usable: ready unset or true, or serving true."""
    slice_ = parse_endpoint_slice(
        endpoint_slice("n", "e", service_name="s", endpoints=[("10.1.0.1", "x", ready, serving)])
    )
    assert is_usable(slice_.endpoints[0]) is usable


def test_node_network_unavailable_condition() -> None:
    """Only status True counts."""
    obj = {"metadata": {"name": "n"}, "status": {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}}
    assert parse_node(obj).network_unavailable is True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """The base object with random values spliced in at random known keys."""
    keys = ["spec", "status", "metadata", "endpoints", "type", "loadBalancer", "ingress", "conditions", "labels"]
    return (
        st.fixed_dictionaries({k: st.just(v) for k, v in base.items()}).flatmap(
            lambda obj: st.dictionaries(st.sampled_from(keys), json_values, max_size=3).map(
                lambda extra: {**obj, **extra}
            )
        )
        | json_values
    )


@settings(max_examples=300, deadline=None)
@given(
    mutated(service("ns", "s", ips=["192.0.2.1"])),
    mutated(endpoint_slice("ns", "s-1", service_name="s", endpoints=[("10.1.0.1", "n", True, True)])),
    mutated({"metadata": {"name": "n"}, "status": {"conditions": []}}),
)
def test_malformed_objects_never_escape_as_other_exceptions(svc: Any, eps: Any, node: Any) -> None:
    """Garbage in: parsing raises only ObjectInvalid, and whatever parses can be decided on."""
    parsed: dict[str, Any] = {}
    for name, parse, obj in (
        ("svc", parse_service, svc),
        ("eps", parse_endpoint_slice, eps),
        ("node", parse_node, node),
    ):
        try:
            parsed[name] = parse(obj)
        except ObjectInvalid:
            pass
    snapshot = Snapshot(
        services={parsed["svc"].key: parsed["svc"]} if "svc" in parsed else {},
        slices_by_service=(
            {parsed["eps"].service_key: {parsed["eps"].key: parsed["eps"]}}
            if "eps" in parsed and parsed["eps"].service_key
            else {}
        ),
        nodes={parsed["node"].name: parsed["node"]} if "node" in parsed else {},
    )
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 1,
            "peers": [{"name": "p", "peerAddress": "10.0.0.1", "peerASN": 2}],
        }
    )
    decide(snapshot, config, "n")
