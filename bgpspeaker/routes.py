"""The vocabulary of routes, shared by every module: addresses, prefixes, path
attributes, the reasons a route is or is not announced, and the acknowledged state.

Each shape is defined here once; the policy (``decision``), the diff, the ExaBGP
encoding, the sessions and the operator views import them from here (pure: no I/O).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress

__all__ = [
    "UNKNOWN",
    "Attributes",
    "IPAddress",
    "Prefix",
    "Reason",
    "RouteKey",
    "Unknown",
    "Verdict",
    "WithdrawReason",
    "Withdrawal",
    "prefix_order",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

RouteKey = tuple[str, Prefix]
"""(peer name, prefix): one route to one peer."""


def prefix_order(prefix: Prefix) -> tuple[int, int, int]:
    """Sort key: IPv4 before IPv6, then by address and length."""
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


class Reason(enum.StrEnum):
    """The decision's verdict: why a service VIP is, or is not, announced from this node."""

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
    NO_ADVERTISEMENT = "no_advertisement"
    CONFLICTING_ADVERTISEMENTS = "conflicting_advertisements"
    # not announced: about this node
    NODE_NOT_FOUND = "node_not_found"
    NODE_EXCLUDED = "node_excluded"
    NODE_NETWORK_UNAVAILABLE = "node_network_unavailable"
    NODE_NOT_SELECTED = "node_not_selected"
    """No advertisement (or, for a whole session, no peer's nodeSelectors) selects this node."""
    NO_PEER_FOR_NODE = "no_peer_for_node"

    @property
    def announces(self) -> bool:
        """True for the reasons that mean "announced"."""
        return self is Reason.LOCAL_ENDPOINT or self is Reason.CLUSTER_ENDPOINT  # identity: Enum == is slow


class Withdrawal(enum.StrEnum):
    """Why a route leaves, beyond the verdicts: events of the shell, never a verdict."""

    SERVICE_DELETED = "service_deleted"
    INGRESS_IP_REMOVED = "ingress_ip_removed"
    NOT_DESIRED = "not_desired"
    """Still wanted by some service, but not with this peer or these attributes."""
    SHUTDOWN = "shutdown"
    API_OUTAGE = "api_outage"
    PEER_REMOVED = "peer_removed"
    BFD_DOWN = "bfd_down"
    """The peer's BFD session went Down after being Up: its BGP session is taken down."""


WithdrawReason = Reason | Withdrawal
"""What ``route_withdrawn`` says: the verdict that ended the route, or a shell event."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one service, or one of its VIPs when ``ip`` is set."""

    service: str
    reason: Reason
    ip: IPAddress | None = None
    peers: tuple[str, ...] = ()
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    """Path attributes of one route to one peer."""

    communities: tuple[str, ...] = ()
    """Standard communities in ExaBGP's spelling (``64512:100``, ``no-export``)."""
    large_communities: tuple[str, ...] = ()
    """``GLOBAL:LOCAL1:LOCAL2``."""
    med: int | None = None
    local_pref: int | None = None
    """iBGP only."""
    as_path_prepend: int = 0
    """Extra copies of our AS (eBGP only)."""
    next_hop: IPAddress | None = None
    """None: ``self``. Never set by the decision: the shell fills it per session and family."""
    link_bandwidth: int | None = None
    """Bytes/s in the BGP Link Bandwidth extended community (weighted ECMP; bgpspeaker.weights)."""


class Unknown(enum.Enum):
    """Marker type for an acknowledged state nobody can vouch for: a command was in flight
    when the API connection broke, so ExaBGP may or may not hold the route."""

    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN
