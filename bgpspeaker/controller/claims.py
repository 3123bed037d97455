"""A Service as the allocator sees it: what it asks for and what it holds (pure).

``parse_claim`` reduces one raw Service (JSON from the API server) to a ``Claim``: its
type and class, address families, ports, pod selector and traffic policy (for the
sharing rules), the requests it makes (``spec.loadBalancerIP``, and the annotations
below) and the addresses in its status. A malformed request is the claim's
``request_problem`` (an ``AllocationFailed`` Event), never an exception; only a
Service without a name raises ``ObjectInvalid`` (it cannot be written back anyway).

Annotations, the first prefix found wins (MetalLB users keep their Services as they are):
``bgpspeaker.io/``, ``metallb.io/``, ``metallb.universe.tf/`` with ``loadBalancerIPs``
(``IP[,IP]``), ``address-pool`` (a pool name) and ``allow-shared-ip`` (a sharing key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bgpspeaker.cluster.model import ObjectInvalid, object_key
from bgpspeaker.routes import IPAddress
from bgpspeaker.values import parse_ip, show

__all__ = [
    "ANNOTATION_PREFIXES",
    "Claim",
    "Port",
    "parse_claim",
]

ANNOTATION_PREFIXES = ("bgpspeaker.io/", "metallb.io/", "metallb.universe.tf/")
"""Looked up in this order; the first that carries an annotation wins."""
MAX_ANNOTATION_CHARS = 512
"""Two addresses, a pool name or a sharing key fit in far less."""

Port = tuple[str, int]
"""(protocol, port) of one Service port: what two Services sharing an address may not both use."""

_FAMILIES = {"IPv4": 4, "IPv6": 6}
_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """One Service: what it asks the allocator for, and what its status holds now."""

    key: str
    """``namespace/name``."""
    namespace: str
    resource_version: str
    """The version to write against (409 Conflict when it moved on)."""
    created: str
    """``metadata.creationTimestamp`` (RFC 3339 text sorts in time order): older claims win."""
    type: str
    load_balancer_class: str | None
    labels: Mapping[str, str]
    families: tuple[int, ...]
    """``spec.ipFamilies`` as 4/6, in order (the first is the primary); (4,) when absent."""
    family_policy: str
    """SingleStack, PreferDualStack or RequireDualStack."""
    external_traffic_policy: str
    selector: tuple[tuple[str, str], ...]
    """``spec.selector``, sorted."""
    ports: frozenset[Port]
    requested_ips: tuple[IPAddress, ...] = ()
    """From the loadBalancerIPs annotation or ``spec.loadBalancerIP``; empty: any address."""
    pool: str | None = None
    """The address-pool annotation."""
    sharing_key: str | None = None
    """The allow-shared-ip annotation; None: this Service shares its address with nobody."""
    request_problem: str = ""
    """Why the request cannot be understood (then nothing is allocated)."""
    ingress_ips: tuple[IPAddress, ...] = ()
    """``status.loadBalancer.ingress[].ip`` now."""

    @property
    def name(self) -> str:
        return self.key.partition("/")[2]

    @property
    def wanted_families(self) -> tuple[int, ...]:
        """One address per family: the primary only for SingleStack, every listed family otherwise."""
        return self.families[:1] if self.family_policy == "SingleStack" else self.families

    @property
    def backend_key(self) -> tuple[tuple[str, str], ...] | None:
        """What sharing compares besides key and ports: None for externalTrafficPolicy
        Cluster (any two such Services may share), else the pod selector."""
        return None if self.external_traffic_policy != "Local" else self.selector


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _annotation(annotations: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    """(full annotation key, value) of the first prefix that sets ``name``."""
    for prefix in ANNOTATION_PREFIXES:
        value = annotations.get(prefix + name)
        if value is not None:
            return prefix + name, value if isinstance(value, str) else show(value)
    return None


def _requested_ips(
    annotations: Mapping[str, Any], spec: Mapping[str, Any], problems: list[str]
) -> tuple[IPAddress, ...]:
    found = _annotation(annotations, "loadBalancerIPs")
    single = spec.get("loadBalancerIP")
    if single is not None and not isinstance(single, str):
        problems.append(f"spec.loadBalancerIP: must be an IP address, got {show(single)}")
        return ()
    texts: list[tuple[str, str]] = []
    if found is not None:
        key, value = found
        if single:
            problems.append(f"set {key} or spec.loadBalancerIP, not both")
            return ()
        if len(value) > MAX_ANNOTATION_CHARS:
            problems.append(f"{key}: longer than {MAX_ANNOTATION_CHARS} characters")
            return ()
        texts = [(key, part.strip()) for part in value.split(",") if part.strip()]
        if not texts:
            problems.append(f"{key}: must list one or two IP addresses, got {show(value)}")
    elif single:
        texts = [("spec.loadBalancerIP", single.strip())]
    ips: list[IPAddress] = []
    for where, text in texts:
        ip = parse_ip(text)
        if ip is None:
            problems.append(f"{where}: not an IP address: {show(text)}")
        elif any(other.version == ip.version for other in ips):
            problems.append(f"{where}: at most one address per family, got {show(text)} after {ips[0]}")
        else:
            ips.append(ip)
    return tuple(ips) if not problems else ()


def _word(annotations: Mapping[str, Any], name: str, problems: list[str]) -> str | None:
    found = _annotation(annotations, name)
    if found is None:
        return None
    key, value = found
    value = value.strip()
    if not value or len(value) > 253 or not value.isprintable():
        problems.append(f"{key}: must be a non-empty name of at most 253 printable characters, got {show(value)}")
        return None
    return value


def _ports(spec: Mapping[str, Any]) -> frozenset[Port]:
    ports: set[Port] = set()
    raw = spec.get("ports")
    for raw_entry in raw if isinstance(raw, list) else []:
        entry = _mapping(raw_entry)
        port = entry.get("port")
        protocol = entry.get("protocol") or "TCP"
        if isinstance(port, int) and not isinstance(port, bool) and isinstance(protocol, str):
            ports.add((protocol, port))
    return frozenset(ports)


def parse_claim(obj: Any) -> Claim:
    """Reduce a raw Service; ``ObjectInvalid`` only when it has no usable name."""
    key = object_key(obj)
    if "/" not in key:
        raise ObjectInvalid("metadata.namespace: required for a Service")
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(_mapping(obj.get("status")).get("loadBalancer"))
    annotations = _mapping(meta.get("annotations"))
    labels = {str(k): v for k, v in _mapping(meta.get("labels")).items() if isinstance(v, str)}
    problems: list[str] = []

    raw_families = spec.get("ipFamilies")
    families = tuple(
        dict.fromkeys(_FAMILIES[f] for f in raw_families if isinstance(f, str) and f in _FAMILIES)
        if isinstance(raw_families, list)
        else ()
    ) or (4,)
    policy = spec.get("ipFamilyPolicy")
    if policy not in _POLICIES:
        policy = "SingleStack"
    ingress: list[IPAddress] = []
    raw_ingress = status.get("ingress")
    for entry in raw_ingress if isinstance(raw_ingress, list) else []:
        ip = parse_ip(_mapping(entry).get("ip"))
        if ip is not None and ip not in ingress:
            ingress.append(ip)
    selector = _mapping(spec.get("selector"))
    requested = _requested_ips(annotations, spec, problems)
    pool = _word(annotations, "address-pool", problems)
    sharing = _word(annotations, "allow-shared-ip", problems)
    lb_class = spec.get("loadBalancerClass")
    version = meta.get("resourceVersion")
    created = meta.get("creationTimestamp")
    etp = spec.get("externalTrafficPolicy")
    service_type = spec.get("type")
    return Claim(
        key=key,
        namespace=key.partition("/")[0],
        resource_version=version if isinstance(version, str) else "",
        created=created if isinstance(created, str) else "",
        type=service_type if isinstance(service_type, str) else "ClusterIP",
        load_balancer_class=lb_class if isinstance(lb_class, str) else None,
        labels=labels,
        families=families,
        family_policy=policy,
        external_traffic_policy=etp if isinstance(etp, str) else "Cluster",
        selector=tuple(sorted((str(k), str(v)) for k, v in selector.items())),
        ports=_ports(spec),
        requested_ips=requested,
        pool=pool,
        sharing_key=sharing,
        request_problem="; ".join(problems),
        ingress_ips=tuple(ingress),
    )
