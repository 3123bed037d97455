"""Weighted ECMP by local endpoints (pure): the BGP Link Bandwidth value a route carries,
and the hold that coalesces weight-only changes.

With ``ecmpWeight: localEndpoints`` on an advertisement, each route it makes carries
the Link Bandwidth extended community (RFC 10005, type 0x4004) with a value
proportional to this node's usable endpoints of the service (Local policy) or the
same value on every node (Cluster policy, where kube-proxy spreads the traffic
anyway). A router that honours it (FRR: always, with ``maximum-paths``) weights its
next hops by the values' ratio, so a node with two endpoints gets twice the flows of
a node with one instead of the same share.

**The unit.** One endpoint is 125,000 bytes/s (1 Mbit/s). ExaBGP 5.0.15 puts the value
on the wire as an IEEE-754 single (``pack('!Hf')``: 24 significant bits); FRR 8.4 reads
it back, converts it to whole Mbit/s (truncating) and gives each next hop
``its Mbit/s * 100 / the sum`` as its weight. With 1 Mbit/s per endpoint both steps are
exact for every weight up to ``MAX_WEIGHT`` (125,000 = 2^3 * 15,625, and
15,625 * 1,000 < 2^24), so FRR sees exactly the endpoint counts. A larger unit such as
1e9 bytes/s is not exact in single precision past 8 endpoints (1e9 = 2^9 * 5^9,
5^9 * 9 > 2^24) and rounds a few bytes/s below the whole Mbit/s that FRR then
truncates. The community is a weight, not a claim about links; FRR shows it as
``LB:64513:125000 (1.000 Mbps)`` per endpoint.

**Churn.** A rollout changes the endpoint count every few seconds on every node. A
weight-only change of an announced route (same prefix, same peer, every other
attribute equal) waits at most ``WEIGHT_HOLD_S`` and then goes out with the newest
value: one UPDATE per route per hold window, however many endpoint events arrived in
it. Announces and withdraws never wait here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from bgpspeaker.cluster.model import EndpointSlice, Service, is_usable
from bgpspeaker.routes import Attributes, RouteKey, Unknown
from bgpspeaker.values import parse_unsigned_text, show

__all__ = [
    "ANNOTATION_ECMP_WEIGHT",
    "BYTES_PER_SECOND_PER_WEIGHT",
    "MAX_WEIGHT",
    "WEIGHT_HOLD_S",
    "WeightHold",
    "annotation_weight",
    "describe_weight",
    "link_bandwidth",
    "local_endpoints",
    "service_link_bandwidth",
    "weight_of",
]

ANNOTATION_ECMP_WEIGHT = "bgpspeaker.io/ecmp-weight"
BYTES_PER_SECOND_PER_WEIGHT = 125_000
"""One endpoint (one unit of weight) is 1 Mbit/s: exact in ExaBGP's float and FRR's Mbit/s."""
MAX_WEIGHT = 1000
"""Endpoint counts above this count as this (the encoding stays exact up to here); the
annotation allows 1..MAX_WEIGHT."""
WEIGHT_HOLD_S = 2.0
"""How long a weight-only change may wait for more of the same. Measured (docs/reliability.md):
a node scaled from 1 to 10 endpoints in 2.7 s sent 2 UPDATEs instead of 9, the final
weights in the router's kernel 1.8 s after the last change. Short enough that a weight
is never far behind; long enough to span the few seconds a rollout step takes."""


def local_endpoints(slices: Iterable[EndpointSlice], node_name: str) -> int:
    """Usable endpoints (the one definition) of the service on ``node_name``, at most ``MAX_WEIGHT``."""
    count = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints:
            if endpoint.node_name == node_name and is_usable(endpoint):
                count += 1
    return min(count, MAX_WEIGHT)


def annotation_weight(service: Service) -> tuple[int | None, str]:
    """The weight the service's annotation asks for: (weight or None, problem or "")."""
    raw = service.annotations.get(ANNOTATION_ECMP_WEIGHT)
    if raw is None:
        return None, ""
    value = parse_unsigned_text(raw.strip(), high=MAX_WEIGHT)
    if value is None or value == 0:
        return (
            None,
            f"annotation {ANNOTATION_ECMP_WEIGHT}: must be an integer 1..{MAX_WEIGHT} in ASCII digits, got {show(raw)}",
        )
    return value, ""


def weight_of(service: Service, slices: Iterable[EndpointSlice], node_name: str, override: int | None) -> int:
    """This node's weight for ``service``: the override, else its local endpoints (Local
    policy; at least 1, since an announced Local VIP has one), else 1 (Cluster)."""
    if override is not None:
        return override
    if service.external_traffic_policy == "Local":
        return max(1, local_endpoints(slices, node_name))
    return 1


def link_bandwidth(weight: int) -> int:
    """The Link Bandwidth value (bytes/s) for ``weight``."""
    return weight * BYTES_PER_SECOND_PER_WEIGHT


def service_link_bandwidth(
    service: Service, slices: Iterable[EndpointSlice], *, node_name: str, annotations: bool
) -> tuple[int, str]:
    """(the Link Bandwidth this node gives ``service``'s routes, a problem with its annotation
    or ""); the annotation counts only with ``serviceAnnotations: true``."""
    override, problem = annotation_weight(service) if annotations else (None, "")
    return link_bandwidth(weight_of(service, slices, node_name, override)), problem


def describe_weight(bandwidth: int) -> str:
    """``2 (250000 bytes/s)``: the weight a Link Bandwidth value stands for."""
    return f"{bandwidth / BYTES_PER_SECOND_PER_WEIGHT:g} ({bandwidth} bytes/s)"


def _weight_only(old: Attributes, new: Attributes) -> bool:
    """True when both carry a weight, and differ in it and nothing else (a weight that
    appears or goes with a config change is not churn)."""
    if old.link_bandwidth is None or new.link_bandwidth is None or old.link_bandwidth == new.link_bandwidth:
        return False
    return dataclasses.replace(old, link_bandwidth=new.link_bandwidth) == new


class WeightHold:
    """Holds weight-only changes of announced routes for up to ``hold_s`` (the caller passes the clock)."""

    def __init__(self, hold_s: float = WEIGHT_HOLD_S) -> None:
        self.hold_s = hold_s
        self._since: dict[RouteKey, float] = {}

    def apply(
        self,
        effective: dict[RouteKey, Attributes],
        acked: Mapping[RouteKey, Attributes | Unknown],
        *,
        now: float,
    ) -> tuple[float | None, set[RouteKey]]:
        """Put back the acknowledged attributes of routes whose weight changed less than
        ``hold_s`` ago (in ``effective``, in place); (when to look again, routes held)."""
        deadline: float | None = None
        held: set[RouteKey] = set()
        since: dict[RouteKey, float] = {}
        for key, attributes in effective.items():
            old = acked.get(key)
            if not isinstance(old, Attributes) or not _weight_only(old, attributes):
                continue
            first = self._since.get(key, now)
            if now - first < self.hold_s:
                since[key] = first
                effective[key] = old
                held.add(key)
                due = first + self.hold_s
                deadline = due if deadline is None else min(deadline, due)
        # Routes not seen this pass keep their timer only when the caller looked at a
        # subset (incremental passes): entries for routes still held are carried over.
        for key, first in self._since.items():
            if key not in effective and key not in since and now - first < self.hold_s:
                since[key] = first
        self._since = since
        return deadline, held
