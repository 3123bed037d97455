"""The SpeakerConfig component config: parsing and validation (pure; no I/O).

Validation collects every problem, each as ``path: what is wrong, got VALUE``, so an
operator fixes a file in one round instead of one error per restart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import yaml

from bgpspeaker.bfd.config import BfdProfile, parse_peer_profile, parse_profiles
from bgpspeaker.communityaliases import parse_community_aliases
from bgpspeaker.controller.settings import ControllerConfig, parse_controller
from bgpspeaker.errors import ConfigError
from bgpspeaker.nodesettings import NodeOverride, check_duplicate_addresses, parse_node_overrides
from bgpspeaker.peeroptions import PEER_OPTION_KEYS, parse_peer_options
from bgpspeaker.pools import AddressPool, parse_pool_names, parse_pools
from bgpspeaker.routes import IPAddress, Prefix
from bgpspeaker.values import (
    ASN_MAX,
    ASN_MIN,
    U32_MAX,
    LabelSelector,
    parse_asn,
    parse_communities,
    parse_duration,
    parse_int,
    parse_ip,
    parse_names,
    parse_selectors,
    parse_unicast,
    show,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "Advertisement",
    "ApiOutageConfig",
    "Family",
    "HoldDownConfig",
    "IPAddress",
    "PeerConfig",
    "SecretRef",
    "ShutdownConfig",
    "SpeakerConfig",
    "load_document",
    "load_documents",
    "parse_config",
    "parse_config_bytes",
    "parse_ip",
    "read_prefix",
]

API_VERSION = "bgpspeaker.io/v1alpha1"
KIND = "SpeakerConfig"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CLASS_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")

Family = str
"""An address family a session carries: ``"ipv4"`` or ``"ipv6"`` (unicast)."""
FAMILIES = ("ipv4", "ipv6")
MAX_PREPEND = 16
MAX_GRACEFUL_RESTART_S = 4095
"""The restart time field of the graceful-restart capability is 12 bits."""


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a peer's TCP MD5 password lives in the API server."""

    name: str
    namespace: str
    key: str


@dataclasses.dataclass(frozen=True, slots=True)
class PeerConfig:
    """One BGP neighbor: one session, run by its own ExaBGP child."""

    name: str
    peer_address: IPAddress
    peer_asn: int
    families: frozenset[Family]
    """Families the session carries; default: the peer address's own family."""
    my_asn: int = 0
    """Our AS on this session (the top-level myASN unless overridden)."""
    peer_port: int = 179
    source_address: IPAddress | None = None
    """None: the address the kernel would use to reach the peer (route lookup at start)."""
    hold_time_s: int = 90
    """ExaBGP's default is 180 s; 90 s is what FRR, BIRD and MetalLB use."""
    keepalive_s: int = 30
    password_file: str | None = None
    password_secret: SecretRef | None = None
    ebgp_multihop: int | None = None
    ipv6_next_hop: IPAddress | None = None
    """None: ``auto`` (``self`` on an IPv6 session; on an IPv4 session this node's global
    IPv6 on the interface toward the peer)."""
    graceful_restart_s: int | None = None
    node_selectors: tuple[LabelSelector, ...] = ()
    bfd: BfdProfile | None = None
    """The BFD profile this peer names (``bfdProfile``); None: no BFD."""
    dynamic_asn: str | None = None
    """``internal`` or ``external`` (bgpspeaker.peeroptions); then ``peer_asn`` is 0 (unknown)."""
    connect_time_s: int | None = None
    """The longest wait between connect attempts; None: ExaBGP's backoff (up to 60 s)."""
    router_id: ipaddress.IPv4Address | None = None
    """This peer's router ID; None: the top-level one (a node override wins over both)."""
    interface: str | None = None
    """The link the session is bound to (unnumbered: a link-local peerAddress); None: any."""

    @property
    def ebgp(self) -> bool:
        """True when the session is external (the ASes differ, or dynamicASN external)."""
        return self.ebgp_with(self.my_asn)

    def ebgp_with(self, my_asn: int) -> bool:
        """Whether the session would be external with our AS ``my_asn``."""
        if self.dynamic_asn is not None:
            return self.dynamic_asn == "external"
        return self.peer_asn != my_asn


@dataclasses.dataclass(frozen=True, slots=True)
class Advertisement:
    """Which services' VIPs go to which peers from which nodes, with which attributes."""

    name: str
    service_selectors: tuple[LabelSelector, ...] = ()
    node_selectors: tuple[LabelSelector, ...] = ()
    peers: tuple[str, ...] = ()
    """Peer names; empty: every peer."""
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    local_pref: int | None = None
    med: int | None = None
    as_path_prepend: int = 0
    address_pools: tuple[str, ...] = ()
    """Only VIPs from these address pools (``pools.PoolIndex``); empty: any VIP."""
    ecmp_weight: str = "none"
    """``none`` or ``localEndpoints`` (bgpspeaker.weights: the Link Bandwidth community)."""


DEFAULT_ADVERTISEMENT = Advertisement(name="default")
"""Used when the config has no advertisements: every eligible VIP to every peer, plain."""


SHUTDOWN_MODES = ("withdraw", "drain", "keep")
ECMP_WEIGHT_MODES = ("none", "localEndpoints")
API_OUTAGE_POLICIES = ("keep", "withdraw")


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownConfig:
    """What SIGTERM does to the routes."""

    mode: str = "withdraw"
    """``withdraw``: at once. ``drain``: RFC 8326 GRACEFUL_SHUTDOWN first, withdraw after
    ``drain_seconds``. ``keep``: leave them to graceful restart (for rollouts)."""
    drain_seconds: int = 15
    drain_local_pref: int | None = None
    """During a drain, also set this local-pref on iBGP sessions (RFC 8326 section 4)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ApiOutageConfig:
    """What to do while the API server cannot be reached."""

    policy: str = "keep"
    """``keep``: announce the last known desired state, forever. ``withdraw``: withdraw
    everything after ``grace_seconds`` without the API server."""
    grace_seconds: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class HoldDownConfig:
    """Delays for Local-policy services whose endpoints flap (0: react at once)."""

    announce_after_s: int = 0
    withdraw_after_s: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SpeakerConfig:
    """The whole validated config file."""

    my_asn: int
    peers: tuple[PeerConfig, ...]
    router_id: ipaddress.IPv4Address | None = None
    """None: this node's primary IPv4, looked up at start."""
    load_balancer_class: str = ""
    """``""``: only Services without ``spec.loadBalancerClass``."""
    advertisements: tuple[Advertisement, ...] = (DEFAULT_ADVERTISEMENT,)
    service_annotations: bool = False
    shutdown: ShutdownConfig = ShutdownConfig()
    api_outage: ApiOutageConfig = ApiOutageConfig()
    hold_down: HoldDownConfig = HoldDownConfig()
    allowed_vip_ranges: tuple[Prefix, ...] = ()
    """VIPs outside these are refused (``invalid_ingress_ip``); empty: any unicast address
    that can be a VIP (never loopback, link-local, multicast, a peer's or this node's)."""
    node_overrides: tuple[NodeOverride, ...] = ()
    """routerID, myASN, sourceAddress by node labels (bgpspeaker.nodesettings)."""
    address_pools: tuple[AddressPool, ...] = ()
    """Where ``bgpspeaker controller`` allocates VIPs from (the speaker only selects by them)."""
    controller: ControllerConfig = dataclasses.field(default_factory=ControllerConfig)
    bfd_profiles: tuple[BfdProfile, ...] = ()
    community_aliases: tuple[tuple[str, str], ...] = ()
    """(name, community) pairs from ``communityAliases`` (bgpspeaker.communityaliases)."""

    def peer(self, name: str) -> PeerConfig | None:
        """The peer called ``name``, if any."""
        return next((peer for peer in self.peers if peer.name == name), None)


_TOP_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "myASN",
        "routerID",
        "loadBalancerClass",
        "peers",
        "advertisements",
        "serviceAnnotations",
        "shutdown",
        "apiOutage",
        "holdDown",
        "allowedVIPRanges",
        "nodeOverrides",
        "addressPools",
        "controller",
        "bfdProfiles",
        "communityAliases",
    }
)
_PEER_KEYS = frozenset(
    {
        "name",
        "peerAddress",
        "peerASN",
        "myASN",
        "peerPort",
        "sourceAddress",
        "holdTime",
        "keepaliveTime",
        "passwordFile",
        "passwordSecret",
        "ebgpMultiHop",
        "families",
        "ipv6NextHop",
        "gracefulRestart",
        "nodeSelectors",
        "bfdProfile",
        *PEER_OPTION_KEYS,
    }
)
_ADVERTISEMENT_KEYS = frozenset(
    {
        "name",
        "serviceSelectors",
        "nodeSelectors",
        "peers",
        "aggregationLength",
        "aggregationLengthV6",
        "communities",
        "localPref",
        "med",
        "asPathPrepend",
        "addressPools",
        "ecmpWeight",
    }
)
_SECRET_KEYS = frozenset({"name", "namespace", "key"})


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str], path: str, problems: list[str]) -> None:
    for key in sorted(set(data) - allowed, key=str):
        name = str(key) if len(str(key)) <= 80 else show(str(key))
        where = f"{path}.{name}" if path else name
        problems.append(f"{where}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _name(value: Any, path: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not _NAME.match(value):
        problems.append(f"{path}: must be a DNS label (lowercase letters, digits, '-', at most 63), got {show(value)}")
        return None
    return value


def _families(value: Any, path: str, problems: list[str]) -> frozenset[Family] | None:
    if not isinstance(value, list) or not value or any(item not in FAMILIES for item in value):
        problems.append(f"{path}: must be a non-empty list of ipv4, ipv6; got {show(value)}")
        return None
    if len(set(value)) != len(value):
        problems.append(f"{path}: lists a family twice, got {show(value)}")
        return None
    return frozenset(value)


def _secret_ref(value: Any, path: str, problems: list[str]) -> SecretRef | None:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: must be a mapping with name, namespace and key, got {show(value)}")
        return None
    before = len(problems)
    _unknown_keys(value, _SECRET_KEYS, path, problems)
    name = _name(value.get("name"), f"{path}.name", problems) if "name" in value else None
    if "name" not in value:
        problems.append(f"{path}.name: required, the Secret's name")
    namespace = _name(value.get("namespace"), f"{path}.namespace", problems) if "namespace" in value else None
    if "namespace" not in value:
        problems.append(f"{path}.namespace: required, the Secret's namespace")
    key = value.get("key")
    if not isinstance(key, str) or not _SECRET_KEY.match(key):
        problems.append(f"{path}.key: must be a Secret data key (letters, digits, '-', '_', '.'), got {show(key)}")
    if len(problems) != before or name is None or namespace is None or not isinstance(key, str):
        return None
    return SecretRef(name=name, namespace=namespace, key=key)


def _timers(data: Mapping[str, Any], path: str, problems: list[str]) -> tuple[int, int]:
    hold = parse_duration(data["holdTime"], f"{path}.holdTime", problems) if "holdTime" in data else 90
    if hold is not None and hold != 0 and not 3 <= hold <= 65535:
        problems.append(f"{path}.holdTime: must be 0 (no keepalives) or 3s..65535s, got {show(data['holdTime'])}")
        hold = None
    if hold is None:
        return 90, 30
    if "keepaliveTime" not in data:
        return hold, hold // 3
    keepalive = parse_duration(data["keepaliveTime"], f"{path}.keepaliveTime", problems)
    if keepalive is None:
        return hold, hold // 3
    if hold == 0 and keepalive != 0:
        problems.append(f"{path}.keepaliveTime: must be 0 when holdTime is 0, got {show(data['keepaliveTime'])}")
    elif hold and not 1 <= keepalive <= hold:
        problems.append(f"{path}.keepaliveTime: must be 1s..holdTime ({hold}s), got {show(data['keepaliveTime'])}")
    return hold, keepalive


def _peer(
    data: Any,
    path: str,
    top_asn: int,
    problems: list[str],
    *,
    bfd_profiles: Mapping[str, BfdProfile] | None = None,
    raw_bfd_profiles: Any = None,
) -> PeerConfig | None:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a mapping, got {show(data)}")
        return None
    before = len(problems)
    _unknown_keys(data, _PEER_KEYS, path, problems)
    name = _name(data.get("name"), f"{path}.name", problems)
    raw_address = data.get("peerAddress")
    address = parse_ip(raw_address)
    if address is None:
        problems.append(f"{path}.peerAddress: must be an IPv4 or IPv6 address, got {show(raw_address)}")
    elif address.is_unspecified or address.is_multicast or address.is_loopback:
        problems.append(f"{path}.peerAddress: must be a unicast, non-loopback address, got {show(raw_address)}")
        address = None
    options = parse_peer_options(data, path, problems)
    peer_asn = 0 if options.dynamic_asn is not None else options.peer_asn
    my_asn = parse_asn(data["myASN"], f"{path}.myASN", problems) if "myASN" in data else top_asn
    port = parse_int(data.get("peerPort", 179), f"{path}.peerPort", problems, low=1, high=65535)

    source = parse_unicast(data.get("sourceAddress"), f"{path}.sourceAddress", problems)
    if source is not None and address is not None and source.version != address.version:
        problems.append(
            f"{path}.sourceAddress: must be the same family as peerAddress ({address}),"
            f" got {show(data['sourceAddress'])}"
        )
    hold, keepalive = _timers(data, path, problems)

    password_file = data.get("passwordFile")
    if password_file is not None and (not isinstance(password_file, str) or not password_file.startswith("/")):
        problems.append(f"{path}.passwordFile: must be an absolute path, got {show(password_file)}")
    secret = (
        _secret_ref(data["passwordSecret"], f"{path}.passwordSecret", problems)
        if data.get("passwordSecret") is not None
        else None
    )
    if password_file is not None and data.get("passwordSecret") is not None:
        problems.append(f"{path}: set passwordFile or passwordSecret, not both")

    ebgp = options.dynamic_asn == "external" or (
        options.dynamic_asn is None and peer_asn is not None and my_asn is not None and peer_asn != my_asn
    )
    multihop = None
    if data.get("ebgpMultiHop") is not None:
        multihop = parse_int(data["ebgpMultiHop"], f"{path}.ebgpMultiHop", problems, low=1, high=255)
        if multihop is not None and peer_asn is not None and my_asn is not None and not ebgp:
            problems.append(
                f"{path}.ebgpMultiHop: only for eBGP sessions; this one is iBGP (peerASN = myASN = {my_asn})"
            )

    families: frozenset[Family] | None = None
    if address is not None:
        families = (
            _families(data["families"], f"{path}.families", problems)
            if "families" in data
            else frozenset({"ipv4" if address.version == 4 else "ipv6"})
        )
    next_hop: IPAddress | None = None
    raw_next_hop = data.get("ipv6NextHop", "auto")
    if raw_next_hop != "auto":
        parsed = parse_ip(raw_next_hop)
        if (
            not isinstance(parsed, ipaddress.IPv6Address)
            or parsed.ipv4_mapped is not None
            or parsed.is_link_local
            or parsed.is_unspecified
            or parsed.is_multicast
            or parsed.is_loopback
        ):
            problems.append(
                f"{path}.ipv6NextHop: must be 'auto' or a global IPv6 address (not IPv4-mapped, not link-local),"
                f" got {show(raw_next_hop)}"
            )
        else:
            next_hop = parsed
    if next_hop is not None and families is not None and "ipv6" not in families:
        problems.append(f"{path}.ipv6NextHop: set, but the session does not carry ipv6 (families: {sorted(families)})")

    graceful: int | None = None
    if data.get("gracefulRestart") is not None:
        graceful = parse_duration(data["gracefulRestart"], f"{path}.gracefulRestart", problems)
        if graceful is not None and not 1 <= graceful <= MAX_GRACEFUL_RESTART_S:
            problems.append(
                f"{path}.gracefulRestart: must be 1s..{MAX_GRACEFUL_RESTART_S}s (the capability's 12-bit field),"
                f" got {show(data['gracefulRestart'])}"
            )
            graceful = None
    selectors = parse_selectors(data.get("nodeSelectors"), f"{path}.nodeSelectors", problems)
    bfd = parse_peer_profile(
        data,
        path,
        profiles=bfd_profiles or {},
        raw_profiles=raw_bfd_profiles,
        multihop=data.get("ebgpMultiHop") is not None,
        problems=problems,
    )

    if len(problems) != before or None in (name, address, peer_asn, my_asn, port, families):
        return None
    assert name is not None and address is not None and peer_asn is not None and my_asn is not None
    assert port is not None and families is not None
    return PeerConfig(
        name=name,
        peer_address=address,
        peer_asn=peer_asn,
        families=families,
        my_asn=my_asn,
        peer_port=port,
        source_address=source,
        hold_time_s=hold,
        keepalive_s=keepalive,
        password_file=password_file,
        password_secret=secret,
        ebgp_multihop=multihop,
        ipv6_next_hop=next_hop,
        graceful_restart_s=graceful,
        node_selectors=selectors,
        bfd=bfd,
        dynamic_asn=options.dynamic_asn,
        connect_time_s=options.connect_time_s,
        router_id=options.router_id,
        interface=options.interface,
    )


def _advertisement(
    data: Any,
    path: str,
    peers: Mapping[str, PeerConfig],
    problems: list[str],
    aliases: Mapping[str, str] | None = None,
) -> Advertisement | None:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a mapping, got {show(data)}")
        return None
    before = len(problems)
    _unknown_keys(data, _ADVERTISEMENT_KEYS, path, problems)
    name = _name(data.get("name"), f"{path}.name", problems)
    service_selectors = parse_selectors(data.get("serviceSelectors"), f"{path}.serviceSelectors", problems)
    node_selectors = parse_selectors(data.get("nodeSelectors"), f"{path}.nodeSelectors", problems)
    raw_peers = data.get("peers")
    peer_names = parse_names(raw_peers, f"{path}.peers", peers.keys(), problems, what="peer", listing="peers")
    length = parse_int(data.get("aggregationLength", 32), f"{path}.aggregationLength", problems, low=0, high=32)
    length_v6 = parse_int(
        data.get("aggregationLengthV6", 128), f"{path}.aggregationLengthV6", problems, low=0, high=128
    )
    communities = parse_communities(data.get("communities", []), f"{path}.communities", problems, aliases=aliases)
    local_pref = (
        parse_int(data["localPref"], f"{path}.localPref", problems, low=0, high=U32_MAX)
        if data.get("localPref") is not None
        else None
    )
    med = parse_int(data["med"], f"{path}.med", problems, low=0, high=U32_MAX) if data.get("med") is not None else None
    prepend = parse_int(data.get("asPathPrepend", 0), f"{path}.asPathPrepend", problems, low=0, high=MAX_PREPEND)
    ecmp_weight = data.get("ecmpWeight", "none")
    if ecmp_weight not in ECMP_WEIGHT_MODES:
        problems.append(f"{path}.ecmpWeight: must be one of {', '.join(ECMP_WEIGHT_MODES)}, got {show(ecmp_weight)}")
    targets = [peers[n] for n in peer_names] if raw_peers else list(peers.values())
    if local_pref is not None:
        for peer in targets:
            if peer.ebgp:
                problems.append(
                    f"{path}.localPref: iBGP only, but this advertisement reaches eBGP peer {show(peer.name)}"
                    " (list only iBGP peers in peers, or drop localPref)"
                )
    if prepend:
        for peer in targets:
            if not peer.ebgp:
                problems.append(
                    f"{path}.asPathPrepend: eBGP only, but this advertisement reaches iBGP peer {show(peer.name)}"
                    " (an iBGP router drops paths holding its own AS)"
                )
    if len(problems) != before or None in (name, length, length_v6, communities, prepend):
        return None
    assert name is not None and length is not None and length_v6 is not None and communities is not None
    assert prepend is not None
    return Advertisement(
        name=name,
        service_selectors=service_selectors,
        node_selectors=node_selectors,
        peers=tuple(peer_names),
        aggregation_length=length,
        aggregation_length_v6=length_v6,
        communities=communities[0],
        large_communities=communities[1],
        local_pref=local_pref,
        med=med,
        as_path_prepend=prepend,
        ecmp_weight=ecmp_weight,
    )


def _section(data: Mapping[str, Any], key: str, allowed: frozenset[str], problems: list[str]) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{key}: must be a mapping with {', '.join(sorted(allowed))}; got {show(value)}")
        return {}
    _unknown_keys(value, allowed, key, problems)
    return value


def _lifecycle(data: Mapping[str, Any], problems: list[str]) -> tuple[ShutdownConfig, ApiOutageConfig, HoldDownConfig]:
    raw = _section(data, "shutdown", frozenset({"mode", "drainSeconds", "drainLocalPref"}), problems)
    mode = raw.get("mode", "withdraw")
    if mode not in SHUTDOWN_MODES:
        problems.append(f"shutdown.mode: must be one of {', '.join(SHUTDOWN_MODES)}, got {show(mode)}")
        mode = "withdraw"
    drain = parse_duration(raw.get("drainSeconds", 15), "shutdown.drainSeconds", problems)
    if drain is not None and drain > 3600:
        problems.append(f"shutdown.drainSeconds: must be at most 1h, got {show(raw['drainSeconds'])}")
    local_pref = (
        parse_int(raw["drainLocalPref"], "shutdown.drainLocalPref", problems, low=0, high=U32_MAX)
        if raw.get("drainLocalPref") is not None
        else None
    )
    shutdown = ShutdownConfig(mode=mode, drain_seconds=drain or 0, drain_local_pref=local_pref)

    raw = _section(data, "apiOutage", frozenset({"policy", "graceSeconds"}), problems)
    policy = raw.get("policy", "keep")
    if policy not in API_OUTAGE_POLICIES:
        problems.append(f"apiOutage.policy: must be one of {', '.join(API_OUTAGE_POLICIES)}, got {show(policy)}")
        policy = "keep"
    grace = parse_duration(raw.get("graceSeconds", 0), "apiOutage.graceSeconds", problems)
    if "graceSeconds" in raw and policy == "keep":
        problems.append("apiOutage.graceSeconds: only meaningful with policy withdraw (keep never withdraws)")
    outage = ApiOutageConfig(policy=policy, grace_seconds=grace or 0)

    raw = _section(data, "holdDown", frozenset({"announceAfter", "withdrawAfter"}), problems)
    announce_after = parse_duration(raw.get("announceAfter", 0), "holdDown.announceAfter", problems)
    withdraw_after = parse_duration(raw.get("withdrawAfter", 0), "holdDown.withdrawAfter", problems)
    for name, value in (("announceAfter", announce_after), ("withdrawAfter", withdraw_after)):
        if value is not None and value > 600:
            problems.append(f"holdDown.{name}: must be at most 10m, got {show(raw[name])}")
    hold = HoldDownConfig(announce_after_s=announce_after or 0, withdraw_after_s=withdraw_after or 0)
    return shutdown, outage, hold


def _duplicates(items: list[tuple[int, Any]], attribute: str, path: str, field: str, problems: list[str]) -> None:
    seen: dict[Any, int] = {}
    for index, item in items:
        value = getattr(item, attribute)
        if value in seen:
            problems.append(f"{path}[{index}].{field}: duplicate of {path}[{seen[value]}], got '{value}'")
        seen.setdefault(value, index)


def parse_config(data: Any) -> SpeakerConfig:
    """Validate a decoded YAML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"(document): must be a mapping with apiVersion, kind, myASN, peers; got {show(data)}"])
    _unknown_keys(data, _TOP_KEYS, "", problems)
    if data.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {show(API_VERSION)}, got {show(data.get('apiVersion'))}")
    if data.get("kind") != KIND:
        problems.append(f"kind: must be {show(KIND)}, got {show(data.get('kind'))}")
    if "myASN" not in data:
        problems.append(f"myASN: required, an integer {ASN_MIN}..{ASN_MAX}")
        my_asn = None
    else:
        my_asn = parse_asn(data["myASN"], "myASN", problems)

    router_id: ipaddress.IPv4Address | None = None
    raw_router_id = data.get("routerID")
    if raw_router_id is not None:
        parsed_router_id = parse_ip(raw_router_id)
        if not isinstance(parsed_router_id, ipaddress.IPv4Address):
            problems.append(f"routerID: must be an IPv4 address (dotted quad), got {show(raw_router_id)}")
        elif parsed_router_id.is_unspecified:
            problems.append(f"routerID: must not be 0.0.0.0, got {show(raw_router_id)}")
        else:
            router_id = parsed_router_id

    lb_class = data.get("loadBalancerClass", "")
    if lb_class is None:
        lb_class = ""
    if not isinstance(lb_class, str) or (lb_class and not _CLASS_NAME.match(lb_class)):
        problems.append(f"loadBalancerClass: must be \"\" or a class name like 'example.com/bgp', got {show(lb_class)}")
        lb_class = ""
    annotations = data.get("serviceAnnotations", False)
    if not isinstance(annotations, bool):
        problems.append(f"serviceAnnotations: must be true or false, got {show(annotations)}")
        annotations = False

    bfd_profiles = parse_profiles(data.get("bfdProfiles"), problems)
    peers: list[tuple[int, PeerConfig]] = []
    raw_peers = data.get("peers")
    if not isinstance(raw_peers, list) or not raw_peers:
        problems.append(f"peers: must be a non-empty list of peers, got {show(raw_peers)}")
    else:
        for index, raw_peer in enumerate(raw_peers):
            # Without a valid top-level myASN, per-peer checks that need it use 0 (never a real AS).
            peer = _peer(
                raw_peer,
                f"peers[{index}]",
                my_asn or 0,
                problems,
                bfd_profiles=bfd_profiles,
                raw_bfd_profiles=data.get("bfdProfiles"),
            )
            if peer is not None:
                peers.append((index, peer))
        _duplicates(peers, "name", "peers", "name", problems)
        check_duplicate_addresses(peers, problems)

    pools = parse_pools(data.get("addressPools"), "addressPools", problems)
    aliases = parse_community_aliases(data.get("communityAliases"), "communityAliases", problems)
    advertisements: list[tuple[int, Advertisement]] = []
    raw_advertisements = data.get("advertisements")
    if raw_advertisements is not None and not isinstance(raw_advertisements, list):
        problems.append(f"advertisements: must be a list, got {show(raw_advertisements)}")
    elif raw_advertisements:
        by_name = {peer.name: peer for _, peer in peers}
        for index, raw in enumerate(raw_advertisements):
            advertisement = _advertisement(raw, f"advertisements[{index}]", by_name, problems, dict(aliases))
            if advertisement is not None:
                advertisements.append((index, advertisement))
        _duplicates(advertisements, "name", "advertisements", "name", problems)
        selections = {  # addressPools of every advertisement, valid or not (all problems at once)
            index: parse_pool_names(raw.get("addressPools"), f"advertisements[{index}].addressPools", pools, problems)
            for index, raw in enumerate(raw_advertisements)
            if isinstance(raw, Mapping)
        }
        advertisements = [(i, dataclasses.replace(a, address_pools=selections.get(i, ()))) for i, a in advertisements]
    controller = parse_controller(data.get("controller"), "controller", problems)

    node_overrides = parse_node_overrides(
        data.get("nodeOverrides"), "nodeOverrides", {peer.name: peer for _, peer in peers}, problems
    )
    shutdown, api_outage, hold_down = _lifecycle(data, problems)
    ranges = _ranges(data.get("allowedVIPRanges"), "allowedVIPRanges", problems)
    if problems:
        raise ConfigError(problems)
    assert my_asn is not None
    return SpeakerConfig(
        shutdown=shutdown,
        api_outage=api_outage,
        hold_down=hold_down,
        my_asn=my_asn,
        peers=tuple(peer for _, peer in peers),
        router_id=router_id,
        load_balancer_class=lb_class,
        advertisements=tuple(a for _, a in advertisements) or (DEFAULT_ADVERTISEMENT,),
        service_annotations=annotations,
        allowed_vip_ranges=ranges,
        node_overrides=node_overrides,
        address_pools=pools,
        controller=controller,
        bfd_profiles=tuple(bfd_profiles.values()),
        community_aliases=aliases,
    )


def _ranges(value: Any, path: str, problems: list[str]) -> tuple[Prefix, ...]:
    """A list of CIDRs like ``192.0.2.0/24`` or ``2001:db8::/64`` (host bits must be zero)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        problems.append(f"{path}: must be a non-empty list of CIDRs like '192.0.2.0/24', got {show(value)}")
        return ()
    ranges: list[Prefix] = []
    for index, item in enumerate(value):
        try:
            if not isinstance(item, str) or len(item) > 64 or "/" not in item:
                raise ValueError("not a CIDR")
            ranges.append(ipaddress.ip_network(item, strict=True))
        except ValueError as error:
            problems.append(
                f"{path}[{index}]: must be a CIDR like '192.0.2.0/24' or '2001:db8::/64' ({error}), got {show(item)}"
            )
    return tuple(ranges)


MAX_CONFIG_BYTES = 1 << 20


def read_prefix(path: str) -> bytes:
    """The file's first bytes, one more than any config can be (a config path pointing at
    /dev/zero or a huge file would otherwise be read for ever); OSError when unreadable."""
    with open(path, "rb") as handle:
        return handle.read(MAX_CONFIG_BYTES + 1)


"""A SpeakerConfig is a few KiB; a MiB leaves room for thousands of peers and selectors."""
MAX_YAML_DEPTH = 32
"""The deepest real config nests about 8 levels (advertisements > selectors > expressions > values)."""
MAX_YAML_ALIASES = 100
"""Anchors are handy for repeated selectors; thousands of aliases are a billion-laughs bomb."""
MAX_YAML_NUMBER_DIGITS = 32
"""No field takes more than 10 digits; int() of 4,301 or more raises a ValueError."""


_T = TypeVar("_T")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with limits on nesting, aliases and number sizes, so that a
    hostile document is a ``yaml.YAMLError`` and never a RecursionError or ValueError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_YAML_ALIASES} aliases (*name)",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # untyped library
                )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # untyped library
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_bounded_int(self, node: yaml.ScalarNode) -> Any:
        text = str(self.construct_scalar(node))
        if sum(char.isdigit() for char in text) > MAX_YAML_NUMBER_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number with more than {MAX_YAML_NUMBER_DIGITS} digits", node.start_mark
            )
        return self.construct_yaml_int(node)

    def construct_finite_float(self, node: yaml.ScalarNode) -> Any:
        text = str(self.construct_scalar(node))
        if len(text) > MAX_YAML_NUMBER_DIGITS * 2:
            raise yaml.constructor.ConstructorError(
                None, None, "a number this long is no config value", node.start_mark
            )
        value = self.construct_yaml_float(node)
        if math.isnan(value) or value in (float("inf"), float("-inf")):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a finite number", node.start_mark)
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_bounded_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_finite_float)


def load_document(data: bytes, source: str) -> Any:
    """One YAML document from untrusted bytes: strict UTF-8, size, depth, alias and number
    limits. Raises ConfigError (one problem naming ``source``) and nothing else."""
    return _load_yaml(data, source, lambda text: yaml.load(text, Loader=_BoundedLoader))


def load_documents(data: bytes, source: str) -> list[Any]:
    """Every YAML document of a ``---``-separated file (``check-config`` on manifests), with
    ``load_document``'s limits over the whole file. Raises ConfigError and nothing else."""
    return _load_yaml(data, source, lambda text: list(yaml.load_all(text, Loader=_BoundedLoader)))


def _load_yaml(data: bytes, source: str, load: Callable[[str], _T]) -> _T:
    """``load`` (a ``_BoundedLoader``, a SafeLoader subclass) on ``data`` as strict UTF-8 of at
    most MAX_CONFIG_BYTES; every failure is a ConfigError with one problem naming ``source``."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: {len(data)} bytes, more than a config can be ({MAX_CONFIG_BYTES})"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"{source}: not UTF-8: byte 0x{data[error.start]:02x} at line {line} (offset {error.start}),"
                " save it as UTF-8"
            ]
        ) from None
    try:
        return load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML: {error}".replace("\n", " ")[:1000]]) from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as error:  # the loader's limits prevent these
        raise ConfigError([f"{source}: cannot be read as YAML: {type(error).__name__}: {show(str(error))}"]) from None


def parse_config_bytes(data: bytes, source: str) -> SpeakerConfig:
    """``parse_config`` of a file's raw bytes; ConfigError lists every problem."""
    return parse_config(load_document(data, source))
