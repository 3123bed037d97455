"""Per-peer session options MetalLB's BGPPeer has: ``connectTime``, ``routerID`` and
``dynamicASN`` (pure: parsing and validation, no I/O).

- ``connectTime``: the longest wait between connect attempts (1s..65535s, whole seconds,
  as MetalLB and FRR's ``timers connect``). ExaBGP 5.0.15 backs off 0, 1, 2, 3, 4, 5, 7,
  ... up to 60 s; the launcher's ``--connect-retry`` caps that at ``connectTime``.
- ``routerID``: this peer's BGP identifier, instead of the top-level ``routerID``. A
  ``nodeOverrides`` entry that sets ``routerID`` on a node still wins there (the most
  specific setting), as it does over the top-level one.
- ``interface``: the link the session runs on (unnumbered peering with a link-local
  ``peerAddress`` such as ``fe80::1``, which needs it). ExaBGP's ``source-interface``:
  the socket is bound to the device (SO_BINDTODEVICE, allowed to ExaBGP's unprivileged
  user since Linux 5.7), which also gives a link-local address its scope.
- ``dynamicASN``: ``internal`` or ``external`` instead of ``peerASN`` (exactly one of
  the two). ``internal`` is ExaBGP's ``peer-as`` set to this session's own ``myASN``;
  ``external`` is ``peer-as auto`` plus the launcher's ``--reject-own-asn``, which makes
  ExaBGP refuse an OPEN that carries our own AS (NOTIFICATION 2/2, Bad Peer AS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from bgpspeaker.values import ASN_MAX, ASN_MIN, parse_asn, parse_duration, parse_ip, parse_router_id, show

__all__ = ["DYNAMIC_ASN_KINDS", "MAX_CONNECT_TIME_S", "PEER_OPTION_KEYS", "PeerOptions", "parse_peer_options"]

DYNAMIC_ASN_KINDS = ("internal", "external")
MAX_CONNECT_TIME_S = 65535
"""MetalLB's bound (``connectTime`` must be 1s..65535s); FRR's ``timers connect`` has the same."""
PEER_OPTION_KEYS = frozenset({"connectTime", "routerID", "dynamicASN", "interface"})
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
"""A Linux interface name (IFNAMSIZ 16 with the NUL), in characters ExaBGP's config takes."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerOptions:
    """The parsed options (None: not set) and the peer ASN, if fixed."""

    peer_asn: int | None
    """The fixed ``peerASN``; None with ``dynamic_asn`` (or when invalid)."""
    dynamic_asn: str | None = None
    connect_time_s: int | None = None
    router_id: ipaddress.IPv4Address | None = None
    interface: str | None = None


def parse_peer_options(data: Mapping[str, Any], path: str, problems: list[str]) -> PeerOptions:
    """``peerASN``/``dynamicASN``, ``connectTime`` and ``routerID`` of one peer mapping;
    each problem appended as ``path.field: what is wrong, got VALUE``."""
    peer_asn: int | None = None
    dynamic: str | None = None
    if "peerASN" in data and "dynamicASN" in data:
        problems.append(
            f"{path}: set peerASN or dynamicASN, not both (got peerASN {show(data['peerASN'])},"
            f" dynamicASN {show(data['dynamicASN'])})"
        )
    elif "dynamicASN" in data:
        raw = data["dynamicASN"]
        if raw not in DYNAMIC_ASN_KINDS:
            problems.append(f"{path}.dynamicASN: must be one of {', '.join(DYNAMIC_ASN_KINDS)}, got {show(raw)}")
        else:
            dynamic = str(raw)
    elif "peerASN" in data:
        peer_asn = parse_asn(data["peerASN"], f"{path}.peerASN", problems)
    else:
        problems.append(
            f"{path}.peerASN: required, an integer {ASN_MIN}..{ASN_MAX} (or dynamicASN: internal | external)"
        )

    connect: int | None = None
    if data.get("connectTime") is not None:
        connect = parse_duration(data["connectTime"], f"{path}.connectTime", problems)
        if connect is not None and not 1 <= connect <= MAX_CONNECT_TIME_S:
            problems.append(f"{path}.connectTime: must be 1s..{MAX_CONNECT_TIME_S}s, got {show(data['connectTime'])}")
            connect = None

    router_id = parse_router_id(data.get("routerID"), f"{path}.routerID", problems)
    interface: str | None = None
    raw_interface = data.get("interface")
    if raw_interface is not None:
        if not isinstance(raw_interface, str) or not _INTERFACE.match(raw_interface) or raw_interface in (".", ".."):
            problems.append(
                f"{path}.interface: must be an interface name (1..15 letters, digits, '_', '-', '.'),"
                f" got {show(raw_interface)}"
            )
        else:
            interface = raw_interface
    address = parse_ip(data.get("peerAddress"))
    if address is not None and address.is_link_local and raw_interface is None:
        problems.append(
            f"{path}.interface: required with a link-local peerAddress ({address}): the link it is on, like 'eth0'"
        )
    return PeerOptions(
        peer_asn=peer_asn, dynamic_asn=dynamic, connect_time_s=connect, router_id=router_id, interface=interface
    )
