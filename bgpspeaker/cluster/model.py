"""The cluster as the decision sees it: Services, EndpointSlices and Nodes (pure).

Each ``parse_*`` function takes one raw Kubernetes JSON object (a dict, as the API
server sends it) and returns the few fields bgpspeaker needs, or raises
``ObjectInvalid`` with a specific message. Nothing here trusts its input: a field of
the wrong type is a problem to report, not an exception to escape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bgpspeaker.config import parse_ip
from bgpspeaker.routes import IPAddress

__all__ = [
    "ANNOTATION_PREFIX",
    "EXCLUDE_LABEL",
    "SERVICE_NAME_LABEL",
    "ChangeLog",
    "Endpoint",
    "EndpointSlice",
    "Node",
    "ObjectInvalid",
    "Service",
    "Snapshot",
    "is_usable",
    "object_key",
    "parse_endpoint_slice",
    "parse_node",
    "parse_service",
]

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
ANNOTATION_PREFIX = "bgpspeaker.io/"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ObjectInvalid(ValueError):
    """A Kubernetes object lacks a field bgpspeaker needs, or has one of the wrong shape."""


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    """A Service, reduced to what decides announcements."""

    key: str
    """``namespace/name``."""
    type: str
    load_balancer_class: str | None
    external_traffic_policy: str
    """``Cluster`` or ``Local``; the API server defaults it to Cluster."""
    ingress_ips: tuple[IPAddress, ...]
    ingress_hostnames: tuple[str, ...]
    bad_ingress: tuple[str, ...] = ()
    """Ingress entries whose ``ip`` did not parse; reported, never announced."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Only the ``bgpspeaker.io/`` annotations (the rest is not ours to keep in memory)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a slice: the conditions that make it usable, and where it runs."""

    has_addresses: bool
    ready: bool | None
    serving: bool | None
    node_name: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice and the Service it belongs to (label kubernetes.io/service-name)."""

    key: str
    service_key: str | None
    endpoints: tuple[Endpoint, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A Node's labels and the one condition that matters here."""

    name: str
    labels: Mapping[str, str]
    network_unavailable: bool
    addresses: frozenset[IPAddress] = frozenset()
    """``status.addresses`` that are IPs (InternalIP, ExternalIP): never announced as VIPs."""


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeLog:
    """Which services changed, up to one snapshot: a view of its store's append-only log
    (entry ``i`` is version ``base + i + 1``), so a decision can redo only those."""

    owner: object
    """The store the versions belong to: they mean nothing for another one."""
    entries: list[str]
    """Service keys, one per change; shared with the store, which only ever appends."""
    base: int
    version: int
    """The snapshot's version: ``entries[: version - base]`` are the changes it has seen."""

    def since(self, owner: object, version: int | None) -> set[str] | None:
        """Services changed after ``version`` (of the same ``owner``); None when unknown."""
        if owner is not self.owner or version is None or not self.base <= version <= self.version:
            return None
        return set(self.entries[version - self.base : self.version - self.base])


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the watchers know at one instant. Slices are indexed by Service key."""

    services: Mapping[str, Service]
    slices_by_service: Mapping[str, Mapping[str, EndpointSlice]]
    nodes: Mapping[str, Node]
    changes: ChangeLog | None = dataclasses.field(default=None, compare=False)
    """Set by the store; None: the decision compares every service with its memo."""


def is_usable(endpoint: Endpoint) -> bool:
    """The one definition of usable: has addresses and (ready unset or true, or serving).

    A terminating endpoint that still serves (``ready=false, serving=true``) stays
    usable, so a rolling update does not withdraw the VIP under live connections.
    """
    return endpoint.has_addresses and (endpoint.ready is not False or endpoint.serving is True)


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


def object_key(obj: Any) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped objects) of a raw object."""
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


def parse_service(obj: Any) -> Service:
    """Reduce a raw Service; raise ObjectInvalid when a needed field has the wrong shape."""
    key = object_key(obj)
    spec = _mapping(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    load_balancer = _mapping(status.get("loadBalancer"), "status.loadBalancer")
    ips: list[IPAddress] = []
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


def parse_endpoint_slice(obj: Any) -> EndpointSlice:
    """Reduce a raw EndpointSlice (discovery.k8s.io/v1)."""
    key = object_key(obj)
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


def parse_node(obj: Any) -> Node:
    """Reduce a raw Node to its labels and its NetworkUnavailable condition."""
    name = object_key(obj)
    meta = _mapping(obj.get("metadata"), "metadata")
    labels = _labels(meta)
    status = _mapping(obj.get("status"), "status")
    unavailable = False
    for index, raw in enumerate(_list(status.get("conditions"), "status.conditions")):
        condition = _mapping(raw, f"status.conditions[{index}]")
        if condition.get("type") == "NetworkUnavailable" and condition.get("status") == "True":
            unavailable = True
    addresses: set[IPAddress] = set()
    for index, raw in enumerate(_list(status.get("addresses"), "status.addresses")):
        entry = _mapping(raw, f"status.addresses[{index}]")
        ip = parse_ip(entry.get("address"))
        if ip is not None:
            addresses.add(ip)
    return Node(name=name, labels=labels, network_unavailable=unavailable, addresses=frozenset(addresses))
