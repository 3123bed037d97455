"""Facts about this node's network: the kernel's route to each peer address (outgoing
interface and preferred source), the global addresses of those interfaces, and the node's
primary IPv4.

The daemon asks once per config load through ``probe()``, which reads them with
rtnetlink in its own process (``bgpspeaker.rtnetlink``, ~1 ms). ``python -m
bgpspeaker.netinfo ADDRESS...`` prints pyroute2's answer to the same questions as JSON:
the reference the rtnetlink reader is tested against (pyroute2 once ran here in a child
process: a Python start and 0.1 s of imports on the critical path of every cold start).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import struct
import sys
from typing import Any

__all__ = ["NetFacts", "probe"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclasses.dataclass(frozen=True, slots=True)
class NetFacts:
    """What the kernel says, for the addresses asked about."""

    routes: dict[str, tuple[int | None, IPAddress | None]]
    """Address -> (outgoing interface index, preferred source)."""
    addresses: dict[int, dict[int, list[IPAddress]]]
    """Interface index -> IP version -> global addresses, lowest first."""
    primary_ipv4: ipaddress.IPv4Address | None

    def global_address(self, interface: int | None, version: int) -> IPAddress | None:
        """The lowest global address of ``version`` on ``interface``."""
        if interface is None:
            return None
        found = self.addresses.get(interface, {}).get(version, [])
        return found[0] if found else None


def probe(addresses: list[str]) -> NetFacts:
    """The facts for ``addresses``, read with rtnetlink in this process (bgpspeaker.rtnetlink,
    ~1 ms); OSError if the kernel's answers cannot be read."""
    from bgpspeaker.rtnetlink import collect

    try:
        return _facts(collect(addresses))
    except (struct.error, ValueError, KeyError) as error:  # a malformed answer: as unreadable
        raise OSError(f"network probe failed: {error}") from error


def _facts(data: dict[str, Any]) -> NetFacts:
    return NetFacts(
        routes={
            address: (route["interface"], ipaddress.ip_address(route["source"]) if route["source"] else None)
            for address, route in data["routes"].items()
        },
        addresses={
            int(index): {int(v): [ipaddress.ip_address(a) for a in found] for v, found in versions.items()}
            for index, versions in data["addresses"].items()
        },
        primary_ipv4=ipaddress.IPv4Address(data["primary_ipv4"]) if data["primary_ipv4"] else None,
    )


def _collect(addresses: list[str]) -> dict[str, Any]:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    routes: dict[str, dict[str, Any]] = {}
    interfaces: dict[int, dict[int, list[str]]] = {}
    with IPRoute() as ipr:
        for address in addresses:
            interface, source = None, None
            try:
                for route in ipr.route("get", dst=address):
                    interface, source = route.get_attr("RTA_OIF"), route.get_attr("RTA_PREFSRC")
                    break
            except NetlinkError:  # no route
                pass
            routes[address] = {"interface": interface, "source": source}
            if interface is not None and interface not in interfaces:
                interfaces[interface] = _global(ipr, interface)
        primary = _primary_ipv4(ipr)
    return {"routes": routes, "addresses": interfaces, "primary_ipv4": primary}


def _global(ipr: Any, index: int) -> dict[int, list[str]]:
    found: dict[int, list[IPAddress]] = {4: [], 6: []}
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        for message in ipr.get_addr(family=family, index=index):
            address = ipaddress.ip_address(message.get_attr("IFA_ADDRESS"))
            if address.is_link_local or address.is_loopback or address.is_multicast:
                continue
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                continue
            found[version].append(address)
    return {version: [str(a) for a in sorted(values)] for version, values in found.items()}


def _primary_ipv4(ipr: Any) -> str | None:
    """The preferred source of the default route, else the lowest global IPv4 address."""
    if any(route.get("dst_len") == 0 for route in ipr.get_routes(family=socket.AF_INET)):
        for route in ipr.route("get", dst="198.51.100.1"):
            source = route.get_attr("RTA_PREFSRC")
            if source:
                return str(source)
    candidates = []
    for message in ipr.get_addr(family=socket.AF_INET):
        address = ipaddress.IPv4Address(message.get_attr("IFA_ADDRESS"))
        if not address.is_loopback and not address.is_link_local:
            candidates.append(address)
    return str(min(candidates)) if candidates else None


if __name__ == "__main__":
    print(json.dumps(_collect(sys.argv[1:])))
