"""The SpeakerConfig component config: parsing and validation (pure; no I/O).

Validation collects every problem, each as ``path: what is wrong, got VALUE``, so an
operator fixes a file in one round instead of one error per restart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from bgpspeaker.errors import ConfigError

__all__ = [
    "API_VERSION",
    "KIND",
    "Family",
    "IPAddress",
    "PeerConfig",
    "SpeakerConfig",
    "parse_config",
    "parse_ip",
]

API_VERSION = "bgpspeaker.io/v1alpha1"
KIND = "SpeakerConfig"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ASN_MIN, ASN_MAX = 1, 4_294_967_295
_PEER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CLASS_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")

Family = str
"""An address family a session carries: ``"ipv4"`` or ``"ipv6"`` (unicast)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerConfig:
    """One BGP neighbor this node's ExaBGP connects to."""

    name: str
    peer_address: IPAddress
    peer_asn: int
    families: frozenset[Family]
    """Families the session carries; default: the peer address's own family."""
    hold_time_s: int = 90
    """ExaBGP's default is 180 s; 90 s is what FRR, BIRD and MetalLB use."""


@dataclasses.dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """The whole validated config file."""

    my_asn: int
    peers: tuple[PeerConfig, ...]
    router_id: ipaddress.IPv4Address | None = None
    """None: this node's primary IPv4, looked up at start."""
    load_balancer_class: str = ""
    """``""``: only Services without ``spec.loadBalancerClass``."""


_TOP_KEYS = frozenset({"apiVersion", "kind", "myASN", "routerID", "loadBalancerClass", "peers"})
_PEER_KEYS = frozenset({"name", "peerAddress", "peerASN"})


def parse_ip(value: Any) -> IPAddress | None:
    """An IPv4/IPv6 address from untrusted text; None for anything else (non-strings included)."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _asn(value: Any, path: str, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not ASN_MIN <= value <= ASN_MAX:
        problems.append(f"{path}: must be an integer {ASN_MIN}..{ASN_MAX}, got {value!r}")
        return 0
    return value


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str], path: str, problems: list[str]) -> None:
    for key in sorted(set(data) - allowed, key=str):
        where = f"{path}.{key}" if path else str(key)
        problems.append(f"{where}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _peer(data: Any, path: str, problems: list[str]) -> PeerConfig | None:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a mapping, got {data!r}")
        return None
    _unknown_keys(data, _PEER_KEYS, path, problems)
    name = data.get("name")
    if not isinstance(name, str) or not _PEER_NAME.match(name):
        problems.append(f"{path}.name: must be a DNS label (lowercase letters, digits, '-', at most 63), got {name!r}")
    raw_address = data.get("peerAddress")
    address = parse_ip(raw_address)
    if address is None:
        problems.append(f"{path}.peerAddress: must be an IPv4 or IPv6 address, got {raw_address!r}")
    elif address.is_unspecified or address.is_multicast or address.is_loopback:
        problems.append(f"{path}.peerAddress: must be a unicast, non-loopback address, got {raw_address!r}")
        address = None
    if "peerASN" not in data:
        problems.append(f"{path}.peerASN: required, an integer {ASN_MIN}..{ASN_MAX}")
        asn = 0
    else:
        asn = _asn(data["peerASN"], f"{path}.peerASN", problems)
    if address is None or not asn or not isinstance(name, str):
        return None
    family = "ipv4" if address.version == 4 else "ipv6"
    return PeerConfig(name=name, peer_address=address, peer_asn=asn, families=frozenset({family}))


def parse_config(data: Any) -> SpeakerConfig:
    """Validate a decoded YAML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"(document): must be a mapping with apiVersion, kind, myASN, peers; got {data!r}"])
    _unknown_keys(data, _TOP_KEYS, "", problems)
    if data.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION!r}, got {data.get('apiVersion')!r}")
    if data.get("kind") != KIND:
        problems.append(f"kind: must be {KIND!r}, got {data.get('kind')!r}")
    if "myASN" not in data:
        problems.append(f"myASN: required, an integer {ASN_MIN}..{ASN_MAX}")
        my_asn = 0
    else:
        my_asn = _asn(data["myASN"], "myASN", problems)

    router_id: ipaddress.IPv4Address | None = None
    raw_router_id = data.get("routerID")
    if raw_router_id is not None:
        parsed_router_id = parse_ip(raw_router_id)
        if not isinstance(parsed_router_id, ipaddress.IPv4Address):
            problems.append(f"routerID: must be an IPv4 address (dotted quad), got {raw_router_id!r}")
        elif parsed_router_id.is_unspecified:
            problems.append(f"routerID: must not be 0.0.0.0, got {raw_router_id!r}")
        else:
            router_id = parsed_router_id

    lb_class = data.get("loadBalancerClass", "")
    if lb_class is None:
        lb_class = ""
    if not isinstance(lb_class, str) or (lb_class and not _CLASS_NAME.match(lb_class)):
        problems.append(f"loadBalancerClass: must be \"\" or a class name like 'example.com/bgp', got {lb_class!r}")
        lb_class = ""

    peers: list[tuple[int, PeerConfig]] = []
    raw_peers = data.get("peers")
    if not isinstance(raw_peers, list) or not raw_peers:
        problems.append(f"peers: must be a non-empty list of peers, got {raw_peers!r}")
    else:
        for index, raw_peer in enumerate(raw_peers):
            peer = _peer(raw_peer, f"peers[{index}]", problems)
            if peer is not None:
                peers.append((index, peer))
        seen_names: dict[str, int] = {}
        seen_addresses: dict[IPAddress, int] = {}
        for index, peer in peers:
            if peer.name in seen_names:
                problems.append(f"peers[{index}].name: duplicate of peers[{seen_names[peer.name]}], got {peer.name!r}")
            seen_names.setdefault(peer.name, index)
            if peer.peer_address in seen_addresses:
                problems.append(
                    f"peers[{index}].peerAddress: duplicate of peers[{seen_addresses[peer.peer_address]}],"
                    f" got '{peer.peer_address}'"
                )
            seen_addresses.setdefault(peer.peer_address, index)

    if problems:
        raise ConfigError(problems)
    return SpeakerConfig(
        my_asn=my_asn, peers=tuple(peer for _, peer in peers), router_id=router_id, load_balancer_class=lb_class
    )
