"""The list-speed parse (exact-type fast paths, the C IPv4 parser, shared Endpoints) equals
the straightforward parse it replaced: the same value, or the same ObjectInvalid message."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bgpspeaker.cluster import model
from bgpspeaker.cluster.model import (
    ANNOTATION_PREFIX,
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointSlice,
    Node,
    ObjectInvalid,
    Service,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from bgpspeaker.cluster.watch import _Parser, _service_key, _slice_key
from bgpspeaker.values import parse_ip
from lab.kubeapi import endpoint_slice, node, service

# -- the reference: bgpspeaker/cluster/model.py as it was before (commit cd7b1f5) ----------


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectInvalid(f"{path}: must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectInvalid(f"{path}: must be a list, got {type(value).__name__}")
    return value


def _optional_str(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ObjectInvalid(f"{path}: must be a string, got {type(value).__name__}")
    return value


def _optional_bool(value: Any, path: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ObjectInvalid(f"{path}: must be true or false, got {value!r}")
    return value


def ref_object_key(obj: Any) -> str:
    meta = _mapping(obj.get("metadata") if isinstance(obj, Mapping) else None, "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectInvalid("metadata.name: required, a non-empty string")
    namespace = meta.get("namespace")
    if namespace is None:
        return name
    if not isinstance(namespace, str) or not namespace:
        raise ObjectInvalid("metadata.namespace: must be a non-empty string")
    return f"{namespace}/{name}"


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): v for k, v in _mapping(meta.get("labels"), "metadata.labels").items() if isinstance(v, str)}


def ref_parse_service(obj: Any) -> Service:
    key = ref_object_key(obj)
    spec = _mapping(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    load_balancer = _mapping(status.get("loadBalancer"), "status.loadBalancer")
    ips: list[Any] = []
    hostnames: list[str] = []
    bad: list[str] = []
    for index, ingress in enumerate(_list(load_balancer.get("ingress"), "status.loadBalancer.ingress")):
        entry = _mapping(ingress, f"status.loadBalancer.ingress[{index}]")
        raw_ip = entry.get("ip")
        if raw_ip is not None:
            ip = parse_ip(raw_ip)
            if ip is None:
                bad.append(repr(raw_ip)[:80])
                continue
            if ip not in ips:
                ips.append(ip)
        hostname = entry.get("hostname")
        if raw_ip is None and isinstance(hostname, str) and hostname:
            hostnames.append(hostname)
    policy = _optional_str(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy") or "Cluster"
    meta = _mapping(obj.get("metadata"), "metadata")
    annotations = {
        str(k): v
        for k, v in _mapping(meta.get("annotations"), "metadata.annotations").items()
        if str(k).startswith(ANNOTATION_PREFIX) and isinstance(v, str)
    }
    return Service(
        key=key,
        type=_optional_str(spec.get("type"), "spec.type") or "ClusterIP",
        load_balancer_class=_optional_str(spec.get("loadBalancerClass"), "spec.loadBalancerClass"),
        external_traffic_policy=policy,
        ingress_ips=tuple(ips),
        ingress_hostnames=tuple(hostnames),
        bad_ingress=tuple(bad),
        labels=_labels(meta),
        annotations=annotations,
    )


def ref_parse_endpoint_slice(obj: Any) -> EndpointSlice:
    key = ref_object_key(obj)
    meta = _mapping(obj.get("metadata"), "metadata")
    labels = _mapping(meta.get("labels"), "metadata.labels")
    service_name = labels.get(SERVICE_NAME_LABEL)
    namespace = key.split("/", 1)[0] if "/" in key else None
    service_key = (
        f"{namespace}/{service_name}" if isinstance(service_name, str) and service_name and namespace else None
    )
    endpoints: list[Endpoint] = []
    for index, raw in enumerate(_list(obj.get("endpoints"), "endpoints")):
        path = f"endpoints[{index}]"
        entry = _mapping(raw, path)
        conditions = _mapping(entry.get("conditions"), f"{path}.conditions")
        addresses = _list(entry.get("addresses"), f"{path}.addresses")
        endpoints.append(
            Endpoint(
                has_addresses=any(isinstance(a, str) and a for a in addresses),
                ready=_optional_bool(conditions.get("ready"), f"{path}.conditions.ready"),
                serving=_optional_bool(conditions.get("serving"), f"{path}.conditions.serving"),
                node_name=_optional_str(entry.get("nodeName"), f"{path}.nodeName"),
            )
        )
    return EndpointSlice(key=key, service_key=service_key, endpoints=tuple(endpoints))


def ref_parse_node(obj: Any) -> Node:
    name = ref_object_key(obj)
    meta = _mapping(obj.get("metadata"), "metadata")
    labels = _labels(meta)
    status = _mapping(obj.get("status"), "status")
    unavailable = False
    for index, raw in enumerate(_list(status.get("conditions"), "status.conditions")):
        condition = _mapping(raw, f"status.conditions[{index}]")
        if condition.get("type") == "NetworkUnavailable" and condition.get("status") == "True":
            unavailable = True
    addresses: set[Any] = set()
    for index, raw in enumerate(_list(status.get("addresses"), "status.addresses")):
        entry = _mapping(raw, f"status.addresses[{index}]")
        ip = parse_ip(entry.get("address"))
        if ip is not None:
            addresses.add(ip)
    return Node(name=name, labels=labels, network_unavailable=unavailable, addresses=frozenset(addresses))


# -- generated objects: each field absent, well-formed, or any JSON value -----------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
IP_TEXT = (
    st.ip_addresses().map(str)
    | st.sampled_from(["01.2.3.4", "1.2.3.04", "1.2.3.256", "1.2.3", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\x00"])
    | st.sampled_from(["::ffff:1.2.3.4", "fe80::1%eth0", "2001:db8::1", "\u0661.2.3.4", "0x1.2.3.4", "1..2.3", ""])
    | st.text(alphabet="0123456789.:%xaf ", max_size=20)
)


def obj(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


GOOD_METADATA = obj(
    {"name": st.sampled_from(["web", "a/b", "/x"])},
    {
        "namespace": st.just("default"),
        "labels": st.dictionaries(st.sampled_from(["app", SERVICE_NAME_LABEL]), st.sampled_from(["web", ""])),
        "annotations": st.dictionaries(st.sampled_from([f"{ANNOTATION_PREFIX}med", "other"]), st.just("5")),
    },
)
GOOD_SERVICES = obj(
    {"metadata": GOOD_METADATA},
    {
        "spec": obj(
            {},
            {
                "type": st.sampled_from(["LoadBalancer", "ClusterIP", ""]),
                "externalTrafficPolicy": st.sampled_from(["Cluster", "Local", ""]),
                "loadBalancerClass": st.sampled_from(["bgpspeaker.io/lb", ""]),
            },
        ),
        "status": obj(
            {},
            {
                "loadBalancer": obj(
                    {},
                    {
                        "ingress": st.lists(
                            obj({}, {"ip": IP_TEXT, "hostname": st.sampled_from(["lb.example", ""])}), max_size=3
                        )
                    },
                )
            },
        ),
    },
)
GOOD_SLICES = obj(
    {"metadata": GOOD_METADATA},
    {
        "endpoints": st.lists(
            obj(
                {},
                {
                    "addresses": st.lists(st.sampled_from(["10.1.0.1", ""]), max_size=2),
                    "conditions": obj({}, {"ready": st.booleans(), "serving": st.booleans()}),
                    "nodeName": st.sampled_from(["node-a", "node-b", ""]),
                },
            ),
            max_size=3,
        )
    },
)
GOOD_NODES = obj(
    {"metadata": GOOD_METADATA},
    {
        "status": obj(
            {},
            {
                "conditions": st.lists(
                    obj({}, {"type": st.just("NetworkUnavailable"), "status": st.sampled_from(["True", "False"])}),
                    max_size=2,
                ),
                "addresses": st.lists(obj({}, {"address": IP_TEXT}), max_size=2),
            },
        )
    },
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (keys and indices), the value itself first."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


@st.composite
def near(draw: st.DrawFn, good: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A well-formed object with up to three of its values replaced: by any JSON value, or by
    the same object as a read-only Mapping instead of a dict."""
    value: Any = draw(good)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(value)))
        parent: Any = None
        target: Any = value
        for step in path:
            parent, target = target, target[step]
        replacement = MappingProxyType(target) if isinstance(target, dict) and draw(st.booleans()) else draw(JSON)
        if not path:
            return replacement
        if isinstance(parent, MappingProxyType):
            continue  # read-only now: leave it
        parent[path[-1]] = replacement
    return value


def outcome(parse: Callable[[Any], Any], obj: Any) -> tuple[str, Any]:
    """A parse's result as data: the value, or the exception's type and message."""
    try:
        return "value", parse(obj)
    except Exception as error:  # noqa: BLE001  # compared, whatever it is
        return type(error).__name__, str(error)


CASES = [
    pytest.param(near(GOOD_SERVICES), parse_service, ref_parse_service, id="service"),
    pytest.param(near(GOOD_SLICES), parse_endpoint_slice, ref_parse_endpoint_slice, id="endpointslice"),
    pytest.param(near(GOOD_NODES), parse_node, ref_parse_node, id="node"),
]


@pytest.mark.parametrize(("objects", "parse", "reference"), CASES)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parse_equals_the_reference(objects: Any, parse: Any, reference: Any, data: st.DataObject) -> None:
    """Any generated object: the same value (types included) or the same error message as before."""
    obj = data.draw(objects)
    got, want = outcome(parse, obj), outcome(reference, obj)
    assert got == want
    if got[0] == "value" and isinstance(got[1], Service):
        assert [type(ip) for ip in got[1].ingress_ips] == [type(ip) for ip in want[1].ingress_ips]


@pytest.mark.parametrize(
    ("obj", "parse", "reference"),
    [
        pytest.param(
            service("default", "web", ips=["192.0.2.1", "2001:db8::1"], annotations={"bgpspeaker.io/med": "5"}),
            parse_service,
            ref_parse_service,
            id="service",
        ),
        pytest.param(
            endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.1.0.1", "node-a", True, None)]),
            parse_endpoint_slice,
            ref_parse_endpoint_slice,
            id="endpointslice",
        ),
        pytest.param(
            node("node-a", labels={"rack": "r1"}, addresses=["10.0.0.2"]), parse_node, ref_parse_node, id="node"
        ),
    ],
)
def test_real_objects_parse_as_before(obj: Any, parse: Any, reference: Any) -> None:
    """The test API server's objects (as a list page carries them) parse to the same values."""
    assert parse(obj) == reference(obj)


@settings(max_examples=1500, deadline=None)
@given(IP_TEXT | JSON)
def test_ip_fast_path_equals_parse_ip(value: Any) -> None:
    """The inet_pton path accepts exactly what ipaddress accepts, and gives the same address and type."""
    got, want = model._ip(value), parse_ip(value)
    assert (got, type(got)) == (want, type(want))


def test_shared_endpoints_stay_bounded() -> None:
    """Equal endpoints are one object; the table of them never passes its bound."""
    slices = [
        endpoint_slice("default", f"s{i}", service_name="s", endpoints=[("10.1.0.1", f"node-{i}", True, True)])
        for i in range(model._ENDPOINTS_MAX + 10)
    ]
    parsed = [parse_endpoint_slice(obj) for obj in slices]
    assert len(model._ENDPOINTS) <= model._ENDPOINTS_MAX
    again = parse_endpoint_slice(slices[-1])
    assert again.endpoints[0] is parsed[-1].endpoints[0]
    assert again == ref_parse_endpoint_slice(slices[-1])
    assert ipaddress.ip_address("10.0.0.2") in parse_node(node("n", addresses=["10.0.0.2"])).addresses


def _bug_after_parse(obj: Any) -> Service:
    service = parse_service(obj)
    if service.labels:
        raise TypeError("a parser bug")
    return service


def _bug_before_parse(obj: Any) -> Service:
    if isinstance(obj, dict) and "spec" not in obj:
        raise KeyError("spec")
    return parse_service(obj)


@pytest.mark.parametrize(
    ("objects", "parse", "key_of"),
    [
        pytest.param(near(GOOD_SERVICES), parse_service, _service_key, id="service"),
        pytest.param(near(GOOD_SLICES), parse_endpoint_slice, _slice_key, id="endpointslice"),
        pytest.param(near(GOOD_SERVICES), _bug_after_parse, _service_key, id="bug-after-the-key"),
        pytest.param(near(GOOD_SERVICES), _bug_before_parse, _service_key, id="bug-before-the-key"),
    ],
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_key_read_once_changes_no_outcome(objects: Any, parse: Any, key_of: Any, data: st.DataObject) -> None:
    """Keys taken from the parsed values (not read before every parse): the same results, the same
    log lines (each problem once, a bad key as "?") and the same internal error count."""
    objs = data.draw(st.lists(objects, max_size=4))
    with capture_logs() as first_logs:
        first = _Parser("services", parse)
        first_results = [first(obj) for obj in objs + objs]
    with capture_logs() as keyed_logs:
        keyed = _Parser("services", parse, key_of)
        keyed_results = [keyed(obj) for obj in objs + objs]
    assert keyed_results == first_results
    assert keyed_logs == first_logs
    assert keyed.internal_errors == first.internal_errors
