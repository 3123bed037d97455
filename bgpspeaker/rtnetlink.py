"""The few rtnetlink reads the network probe needs, on a plain netlink socket.

``collect(addresses)`` answers what ``bgpspeaker.netinfo`` asks (the kernel's route to
each address: outgoing interface and preferred source; the global addresses of those
interfaces; the node's primary IPv4) with the same answer as its pyroute2 child
(tests/integration/test_rtnetlink.py compares them), in a few milliseconds and in the
daemon's own process: the child cost a Python start and pyroute2's imports (~0.2 s, the
critical path of a small cold start) and pyroute2's 9 MB would have stayed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["collect"]

_NETLINK_ROUTE = 0
_RTM_NEWADDR, _RTM_GETADDR, _RTM_NEWROUTE, _RTM_GETROUTE = 20, 22, 24, 26
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_RTA_DST, _RTA_OIF, _RTA_PREFSRC = 1, 4, 7
_IFA_ADDRESS = 1
_HEADER = struct.Struct("=LHHLL")  # nlmsghdr: length, type, flags, sequence, port
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")  # length, type
_PROBE_ADDRESS = "198.51.100.1"
"""Any address a default route covers (TEST-NET-2): its preferred source is the node's primary IPv4."""


class NetlinkError(OSError):
    """The kernel answered a request with an error (for a route lookup: no route)."""


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attributes(data: bytes, offset: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        found.setdefault(kind & 0x3FFF, data[offset + _ATTR.size : offset + length])
        offset += _align(length)
    return found


class _Socket:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._sequence = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield (message type, payload) of each answer until it is complete."""
        self._sequence += 1
        message = _HEADER.pack(_HEADER.size + len(body), kind, _NLM_F_REQUEST | flags, self._sequence, 0) + body
        self._sock.send(message)
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, answer, _, sequence, _ = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size : offset + length]
                offset += _align(length)
                if sequence != self._sequence:
                    continue
                if answer == _NLMSG_DONE:
                    return
                if answer == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return  # an acknowledgement
                yield answer, payload
                if not flags & _NLM_F_DUMP:
                    return

    def route_get(self, address: str) -> tuple[int | None, str | None]:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        packed = ip.packed
        body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0)
        body += _ATTR.pack(_ATTR.size + len(packed), _RTA_DST) + packed
        for kind, payload in self.request(_RTM_GETROUTE, 0, body):
            if kind == _RTM_NEWROUTE:
                attributes = _attributes(payload, _RTMSG.size)
                interface = attributes.get(_RTA_OIF)
                source = attributes.get(_RTA_PREFSRC)
                return (
                    struct.unpack("=I", interface)[0] if interface is not None else None,
                    str(ipaddress.ip_address(source)) if source is not None else None,
                )
        return None, None

    def has_default_route(self, family: int) -> bool:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return any(
            kind == _RTM_NEWROUTE and _RTMSG.unpack_from(payload)[1] == 0
            for kind, payload in self.request(_RTM_GETROUTE, _NLM_F_DUMP, body)
        )

    def addresses(self, family: int) -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
        """(interface index, IFA_ADDRESS) of every address of ``family``."""
        found = []
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        for kind, payload in self.request(_RTM_GETADDR, _NLM_F_DUMP, body):
            if kind != _RTM_NEWADDR:
                continue
            index = _IFADDRMSG.unpack_from(payload)[4]
            raw = _attributes(payload, _IFADDRMSG.size).get(_IFA_ADDRESS)
            if raw is not None:
                found.append((index, ipaddress.ip_address(raw)))
        return found


def _is_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """What pyroute2's probe kept: not link-local, loopback, multicast or IPv4-mapped."""
    if ip.is_link_local or ip.is_loopback or ip.is_multicast:
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)


def collect(addresses: list[str]) -> dict[str, Any]:
    """What ``python -m bgpspeaker.netinfo ADDRESS...`` prints, read here."""
    sock = _Socket()
    try:
        routes: dict[str, dict[str, Any]] = {}
        for address in addresses:
            try:
                interface, source = sock.route_get(address)
            except NetlinkError:  # no route
                interface, source = None, None
            routes[address] = {"interface": interface, "source": source}
        wanted = {route["interface"] for route in routes.values() if route["interface"] is not None}
        v4 = sock.addresses(socket.AF_INET)
        v6 = sock.addresses(socket.AF_INET6)
        global_addresses: dict[int, dict[int, list[str]]] = {}
        for index in wanted:
            global_addresses[index] = {}
            for version, listed in ((4, v4), (6, v6)):
                kept = [ip for at, ip in listed if at == index and _is_global(ip)]
                global_addresses[index][version] = [str(ip) for ip in sorted(kept, key=int)]
        primary = None
        if sock.has_default_route(socket.AF_INET):
            try:
                primary = sock.route_get(_PROBE_ADDRESS)[1]
            except NetlinkError:
                primary = None
        if primary is None:
            candidates = [ip for _, ip in v4 if not ip.is_loopback and not ip.is_link_local]
            primary = str(min(candidates, key=int)) if candidates else None
        return {"routes": routes, "addresses": global_addresses, "primary_ipv4": primary}
    finally:
        sock.close()
