"""The decision: which prefixes this node announces, to which peers, and why (pure).

``decide(snapshot, config, node_name)`` is the whole policy. It never logs, sleeps or
does I/O; the daemon, ``explain`` and the tests all call this same function.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Mapping

from bgpspeaker.config import IPAddress, PeerConfig, SpeakerConfig
from bgpspeaker.model import EXCLUDE_LABEL, EndpointSlice, Service, Snapshot, is_usable

__all__ = ["Announcement", "Decision", "Prefix", "Reason", "Verdict", "decide", "host_prefix", "prefix_order"]

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class Reason(enum.StrEnum):
    """Why a service VIP is, or is not, announced from this node."""

    # announced
    LOCAL_ENDPOINT = "local_endpoint"
    CLUSTER_ENDPOINT = "cluster_endpoint"
    # not announced: about the service
    NOT_LOAD_BALANCER = "not_load_balancer"
    CLASS_MISMATCH = "class_mismatch"
    NO_INGRESS_IP = "no_ingress_ip"
    HOSTNAME_INGRESS = "hostname_ingress"
    INVALID_INGRESS_IP = "invalid_ingress_ip"
    NO_ENDPOINTS = "no_endpoints"
    NO_LOCAL_ENDPOINTS = "no_local_endpoints"
    NO_PEER_FOR_FAMILY = "no_peer_for_family"
    # not announced: about this node
    NODE_NOT_FOUND = "node_not_found"
    NODE_EXCLUDED = "node_excluded"
    NODE_NETWORK_UNAVAILABLE = "node_network_unavailable"
    # why a route leaves, beyond the verdicts above (used by the reconciler)
    SERVICE_DELETED = "service_deleted"
    INGRESS_IP_REMOVED = "ingress_ip_removed"
    NOT_DESIRED = "not_desired"
    SHUTDOWN = "shutdown"

    @property
    def announces(self) -> bool:
        """True for the reasons that mean "announced"."""
        return self in (Reason.LOCAL_ENDPOINT, Reason.CLUSTER_ENDPOINT)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one service, or one of its VIPs when ``ip`` is set."""

    service: str
    reason: Reason
    ip: IPAddress | None = None
    peers: tuple[str, ...] = ()
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """One prefix this node announces, the peers that get it, and the services that want it."""

    prefix: Prefix
    peers: frozenset[str]
    services: frozenset[str]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The desired routes and a verdict for every LoadBalancer-ish service seen."""

    announcements: Mapping[Prefix, Announcement]
    verdicts: tuple[Verdict, ...]


def prefix_order(prefix: Prefix) -> tuple[int, int, int]:
    """Sort key: IPv4 before IPv6, then by address and length."""
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def host_prefix(ip: IPAddress) -> Prefix:
    """A VIP as a host route: /32 for IPv4, /128 for IPv6."""
    return ipaddress.ip_network(ip)


def _node_reason(snapshot: Snapshot, node_name: str) -> Reason | None:
    node = snapshot.nodes.get(node_name)
    if node is None:
        return Reason.NODE_NOT_FOUND
    if EXCLUDE_LABEL in node.labels:
        return Reason.NODE_EXCLUDED
    if node.network_unavailable:
        return Reason.NODE_NETWORK_UNAVAILABLE
    return None


def _endpoint_reason(service: Service, slices: Iterable[EndpointSlice], node_name: str) -> Reason:
    usable_anywhere = False
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints:
            if not is_usable(endpoint):
                continue
            if endpoint.node_name == node_name:
                return Reason.LOCAL_ENDPOINT
            usable_anywhere = True
    if service.external_traffic_policy == "Local":
        return Reason.NO_LOCAL_ENDPOINTS if usable_anywhere else Reason.NO_ENDPOINTS
    return Reason.CLUSTER_ENDPOINT if usable_anywhere else Reason.NO_ENDPOINTS


def service_reason(
    service: Service,
    slices: Iterable[EndpointSlice],
    *,
    config: SpeakerConfig,
    node_name: str,
    node_reason: Reason | None,
) -> Reason:
    """The service-level verdict, before looking at address families and peers."""
    if service.type != "LoadBalancer":
        return Reason.NOT_LOAD_BALANCER
    if (service.load_balancer_class or "") != config.load_balancer_class:
        return Reason.CLASS_MISMATCH
    if not service.ingress_ips:
        if service.ingress_hostnames:
            return Reason.HOSTNAME_INGRESS
        if service.bad_ingress:
            return Reason.INVALID_INGRESS_IP
        return Reason.NO_INGRESS_IP
    if node_reason is not None:
        return node_reason
    reason = _endpoint_reason(service, slices, node_name)
    if reason is Reason.LOCAL_ENDPOINT and service.external_traffic_policy != "Local":
        return Reason.CLUSTER_ENDPOINT
    return reason


def _peers_by_family(peers: Iterable[PeerConfig]) -> dict[int, tuple[str, ...]]:
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for peer in peers:
        if "ipv4" in peer.families:
            by_family[4].append(peer.name)
        if "ipv6" in peer.families:
            by_family[6].append(peer.name)
    return {version: tuple(names) for version, names in by_family.items()}


def decide_service(
    service: Service,
    slices: Iterable[EndpointSlice],
    *,
    config: SpeakerConfig,
    node_name: str,
    node_reason: Reason | None,
    peers_by_family: Mapping[int, tuple[str, ...]],
) -> tuple[Verdict, ...]:
    """Verdicts for one service: one per VIP when it qualifies, else one for the service.

    ``peers_by_family`` maps 4 and 6 to the peers whose session carries that family."""
    reason = service_reason(service, slices, config=config, node_name=node_name, node_reason=node_reason)
    if not reason.announces:
        return (Verdict(service=service.key, reason=reason),)
    verdicts = []
    for ip in service.ingress_ips:
        peers = peers_by_family[ip.version]
        if peers:
            verdicts.append(Verdict(service=service.key, reason=reason, ip=ip, peers=peers))
        else:
            verdicts.append(
                Verdict(
                    service=service.key,
                    reason=Reason.NO_PEER_FOR_FAMILY,
                    ip=ip,
                    detail=f"no peer session carries ipv{ip.version}",
                )
            )
    return tuple(verdicts)


def decide(snapshot: Snapshot, config: SpeakerConfig, node_name: str) -> Decision:
    """Compute every prefix this node must announce, and a verdict for every service."""
    node_reason = _node_reason(snapshot, node_name)
    peers_by_family = _peers_by_family(config.peers)
    verdicts: list[Verdict] = []
    wanted: dict[Prefix, tuple[set[str], set[str]]] = {}
    for key, service in snapshot.services.items():
        if service.type != "LoadBalancer":
            continue  # not ours to talk about: keeps verdicts proportional to LB services
        slices = snapshot.slices_by_service.get(key, {}).values()
        for verdict in decide_service(
            service,
            slices,
            config=config,
            node_name=node_name,
            node_reason=node_reason,
            peers_by_family=peers_by_family,
        ):
            verdicts.append(verdict)
            if verdict.ip is not None and verdict.reason.announces:
                peers, services = wanted.setdefault(host_prefix(verdict.ip), (set(), set()))
                peers.update(verdict.peers)
                services.add(key)
    announcements = {
        prefix: Announcement(prefix=prefix, peers=frozenset(peers), services=frozenset(services))
        for prefix, (peers, services) in wanted.items()
    }
    return Decision(announcements=announcements, verdicts=tuple(verdicts))
