"""Facts about this node's network, read with pyroute2."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

__all__ = ["primary_ipv4"]


def primary_ipv4() -> ipaddress.IPv4Address | None:
    """The preferred source of the default route, else the first global IPv4 address."""
    with IPRoute() as ipr:
        for route in ipr.route("get", dst="198.51.100.1") if _has_default(ipr) else ():
            source = route.get_attr("RTA_PREFSRC")
            if source:
                return ipaddress.IPv4Address(source)
        candidates = []
        for message in ipr.get_addr(family=2):
            address = ipaddress.IPv4Address(message.get_attr("IFA_ADDRESS"))
            if not address.is_loopback and not address.is_link_local:
                candidates.append(address)
        return min(candidates) if candidates else None


def _has_default(ipr: IPRoute) -> bool:
    return any(route.get("dst_len") == 0 for route in ipr.get_routes(family=2))
