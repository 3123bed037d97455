"""The decision: which prefixes this node announces, to which peers, and why (pure).

``decide(snapshot, config, node_name)`` is the whole policy. It never logs, sleeps or
does I/O; the daemon, ``explain`` and the tests all call this same function.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from bgpspeaker.cluster.model import EXCLUDE_LABEL, EndpointSlice, Service, Snapshot, is_usable
from bgpspeaker.config import MAX_PREPEND, Advertisement, PeerConfig, SpeakerConfig
from bgpspeaker.nodesettings import peers_for_node
from bgpspeaker.pools import PoolIndex
from bgpspeaker.routes import Attributes, IPAddress, Prefix, Reason, RouteKey, Verdict, prefix_order
from bgpspeaker.values import U32_MAX, matches_any, parse_communities, parse_unsigned_text, show
from bgpspeaker.weights import service_link_bandwidth

__all__ = [
    "ANNOTATION_COMMUNITIES",
    "ANNOTATION_MED",
    "ANNOTATION_PREPEND",
    "Announcement",
    "Decision",
    "DecisionMemo",
    "Delta",
    "decide",
]

ANNOTATION_COMMUNITIES = "bgpspeaker.io/communities"
ANNOTATION_MED = "bgpspeaker.io/med"
ANNOTATION_PREPEND = "bgpspeaker.io/as-path-prepend"
MAX_ANNOTATION_COMMUNITIES = 64
MAX_ANNOTATION_LENGTH = 4096
"""Bounds on the communities annotation: an UPDATE has room for a few hundred at most."""


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """One prefix this node announces, its attributes per peer, and the services that want it."""

    prefix: Prefix
    routes: Mapping[str, Attributes]
    """Peer name -> the attributes that peer gets."""
    services: frozenset[str]

    @property
    def peers(self) -> frozenset[str]:
        """The peers that get this prefix."""
        return frozenset(self.routes)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The desired routes and a verdict for every LoadBalancer-ish service seen.

    Verdicts come in service-key order (each service's in its own order), then the
    conflicts."""

    announcements: Mapping[Prefix, Announcement]
    verdicts: tuple[Verdict, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Delta:
    """What a memoized decision redid since the memo's previous one (``DecisionMemo.last``)."""

    prefixes: frozenset[Prefix]
    """Prefixes whose announcement may differ from the previous decision."""
    services: frozenset[str]
    """Services decided again."""
    verdicts_by_service: Mapping[str, Sequence[Verdict]]
    """Each service's verdicts (conflicts not included): the memo's own index, read-only."""


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


def _annotation_extras(service: Service, aliases: tuple[tuple[str, str], ...] = ()) -> tuple[Attributes | None, str]:
    """Attributes asked for by the service's annotations, or (None, why they are ignored)."""
    problems: list[str] = []
    communities: tuple[tuple[str, ...], tuple[str, ...]] | None = ((), ())
    raw = service.annotations.get(ANNOTATION_COMMUNITIES)
    if raw is not None:
        items = [item.strip() for item in raw.split(",", MAX_ANNOTATION_COMMUNITIES) if item.strip()]
        if len(raw) > MAX_ANNOTATION_LENGTH or len(items) > MAX_ANNOTATION_COMMUNITIES:
            communities = None
            problems.append(
                f"annotation {ANNOTATION_COMMUNITIES}: at most {MAX_ANNOTATION_COMMUNITIES} communities"
                f" in {MAX_ANNOTATION_LENGTH} characters, got {len(raw)} characters"
            )
        else:
            communities = parse_communities(
                items, f"annotation {ANNOTATION_COMMUNITIES}", problems, aliases=dict(aliases)
            )
        if not items:
            problems.append(f"annotation {ANNOTATION_COMMUNITIES}: must list communities, got {show(raw)}")
    med = _annotation_int(service, ANNOTATION_MED, U32_MAX, problems)
    prepend = _annotation_int(service, ANNOTATION_PREPEND, MAX_PREPEND, problems)
    if problems or communities is None:
        return None, "; ".join(problems)
    return Attributes(communities[0], communities[1], med=med, as_path_prepend=prepend or 0), ""


def _annotation_int(service: Service, key: str, high: int, problems: list[str]) -> int | None:
    raw = service.annotations.get(key)
    if raw is None:
        return None
    value = parse_unsigned_text(raw.strip(), high=high)
    if value is None:
        problems.append(f"annotation {key}: must be an integer 0..{high} in ASCII digits, got {show(raw)}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Contribution:
    """One service's wish for one (peer, prefix): the attributes and where they came from."""

    service: str
    ip: IPAddress
    attributes: Attributes
    source: str


def _peer_attributes(
    advertisement: Advertisement, peer: PeerConfig, extras: Attributes | None, link_bandwidth: int | None = None
) -> Attributes:
    """What ``advertisement`` (plus annotations, plus this node's ECMP weight) sets on a route to ``peer``."""
    med = advertisement.med
    prepend = advertisement.as_path_prepend if peer.ebgp else 0
    communities, large = advertisement.communities, advertisement.large_communities
    if extras is not None:
        communities = _union(communities, extras.communities)
        large = _union(large, extras.large_communities)
        med = extras.med if extras.med is not None else med
        if peer.ebgp and extras.as_path_prepend:
            prepend = extras.as_path_prepend
    return _intern(
        Attributes(
            communities=communities,
            large_communities=large,
            med=med,
            local_pref=advertisement.local_pref if not peer.ebgp else None,
            as_path_prepend=prepend,
            link_bandwidth=link_bandwidth if advertisement.ecmp_weight == "localEndpoints" else None,
        )
    )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(item for item in second if item not in first)


def _merge(contributions: Sequence[_Contribution]) -> tuple[Attributes | None, str]:
    """One route's attributes from every contribution: communities unite; a MED, local-pref
    or prepend set to two different values is a conflict (None, which values). Unset
    (None, or 0 for prepend) is no opinion."""
    communities: tuple[str, ...] = ()
    large: tuple[str, ...] = ()
    for contribution in contributions:
        communities = _union(communities, contribution.attributes.communities)
        large = _union(large, contribution.attributes.large_communities)
    merged: dict[str, int | None] = {}
    for field in ("med", "local_pref", "as_path_prepend"):
        values = {getattr(c.attributes, field) for c in contributions} - {None}
        if field == "as_path_prepend":
            values.discard(0)
        if len(values) > 1:
            sources = sorted({c.source for c in contributions})
            return None, f"{field} differs between {', '.join(sources)}: {sorted(values)}"
        merged[field] = values.pop() if values else None
    # Services sharing a VIP may weigh it differently: the largest weight, never a conflict.
    bandwidth = max(
        (c.attributes.link_bandwidth for c in contributions if c.attributes.link_bandwidth is not None), default=None
    )
    attributes = Attributes(
        communities=tuple(sorted(communities)),
        large_communities=tuple(sorted(large)),
        med=merged["med"],
        local_pref=merged["local_pref"],
        as_path_prepend=merged["as_path_prepend"] or 0,
        link_bandwidth=bandwidth,
    )
    return _intern(attributes), ""


_INTERNED_ROUTES: dict[tuple[tuple[str, Attributes], ...], dict[str, Attributes]] = {}


def _intern_routes(routes: dict[str, Attributes]) -> dict[str, Attributes]:
    """One dict per distinct {peer: attributes} (10,000 prefixes usually share one or two).
    The shared dicts are never written to after this."""
    key = tuple(sorted(routes.items(), key=lambda item: item[0]))
    if len(_INTERNED_ROUTES) > 4096:
        _INTERNED_ROUTES.clear()
    return _INTERNED_ROUTES.setdefault(key, routes)


def _intern(attributes: Attributes) -> Attributes:
    if len(_INTERNED) > 4096:  # annotations can make many; a memo, not a registry
        _INTERNED.clear()
    return _INTERNED.setdefault(attributes, attributes)


_INTERNED: dict[Attributes, Attributes] = {}
"""One object per distinct attribute set (10,000 routes usually share a handful). Bounded
by the distinct sets the config and annotations can produce."""


class _Plan:
    """The config, bound to this node: which peers and advertisements apply here."""

    def __init__(
        self, config: SpeakerConfig, node_labels: Mapping[str, str], node_addresses: frozenset[IPAddress]
    ) -> None:
        self.config = config
        self.peers = {name: chosen.peer for name, chosen in peers_for_node(config, node_labels).peers.items()}
        self.all_peers = {peer.name: peer for peer in config.peers}
        self.node_labels = node_labels
        self.node_addresses = node_addresses
        self._own_addresses: dict[tuple[int, int], str] = {
            (address.version, int(address)): "an address of this node (status.addresses)" for address in node_addresses
        }
        overridden = tuple(o.source_address for o in config.node_overrides)  # nodesettings: per-node sources
        for peer in config.peers:
            for address in (peer.peer_address, peer.source_address, peer.ipv6_next_hop, *overridden):
                if address is not None:
                    self._own_addresses[(address.version, int(address))] = (
                        "a BGP peer's or session's own address (announcing it would pull the peering toward this node)"
                    )
        self.pools = PoolIndex(config.address_pools) if any(a.address_pools for a in config.advertisements) else None
        """Set when some advertisement selects VIPs by address pool."""
        self._by_labels: dict[frozenset[tuple[str, str]], tuple[list[Advertisement], bool]] = {}
        self._attributes: dict[tuple[int, int, Attributes | None, int | None], Attributes] = {}
        """``_peer_attributes`` by its inputs (the config's objects by identity: this plan holds them)."""
        self._for_every_service: tuple[list[Advertisement], bool] | None = None
        if not any(a.service_selectors for a in config.advertisements):
            self._for_every_service = self._select(lambda _advertisement: True)

    def peer_attributes(
        self, advertisement: Advertisement, peer: PeerConfig, extras: Attributes | None, link_bandwidth: int | None
    ) -> Attributes:
        """``_peer_attributes``, built once per distinct input in a decision (10,000 services
        share a handful: a first decision at 10k spent ~50 ms building equal ones)."""
        key = (id(advertisement), id(peer), extras, link_bandwidth)
        found = self._attributes.get(key)
        if found is None:
            found = self._attributes[key] = _peer_attributes(advertisement, peer, extras, link_bandwidth)
        return found

    def vip_problem(self, ip: IPAddress) -> str | None:
        """Why ``ip`` cannot be a VIP announced from here, or None when it can."""
        problem = reserved_address_problem(ip)
        if problem is not None:
            return problem
        own = self._own_addresses.get((ip.version, int(ip)))  # hashing the integer: ipaddress hashes via hex()
        if own is not None:
            return own
        ranges = self.config.allowed_vip_ranges
        if ranges and not any(ip.version == net.version and ip in net for net in ranges):
            return f"outside allowedVIPRanges ({', '.join(map(str, ranges))})"
        return None

    def advertisements_for(self, service: Service) -> tuple[list[Advertisement], bool]:
        """(advertisements selecting the service and this node, whether any selected the service)."""
        if self._for_every_service is not None:
            return self._for_every_service  # no serviceSelectors anywhere: the same for all
        key = frozenset(service.labels.items())
        found = self._by_labels.get(key)
        if found is None:  # services share a few label sets: select once per set
            found = self._by_labels[key] = self._select(lambda a: matches_any(a.service_selectors, service.labels))
        return found

    def _select(self, selects_service: Callable[[Advertisement], bool]) -> tuple[list[Advertisement], bool]:
        selecting = [a for a in self.config.advertisements if selects_service(a)]
        return [a for a in selecting if matches_any(a.node_selectors, self.node_labels)], bool(selecting)


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def reserved_address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` can never be a VIP (whatever the config), or None for a unicast address
    that can: private and documentation ranges are fine, as are unique-local IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"a scoped address (%{ip.scope_id}): a VIP has no zone"
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address (::ffff:a.b.c.d): write the IPv4 address"
        if int(ip) >> 32 == 0 and int(ip) > 1:  # ::/96 less :: and ::1
            return "an IPv4-compatible IPv6 address (::a.b.c.d, deprecated)"
        for name, matches in _RESERVED_CHECKS:
            if matches(ip):
                return f"a {name} address"
        return None
    # IPv4 from the integer: the ipaddress properties test network membership one by one
    # (10,000 VIPs: 60 ms of a first pass, 5 ms this way); test_hostile_input holds both to
    # the same table.
    value = int(ip)
    first = value >> 24
    if value == 0:
        return "the unspecified address"
    if value == 0xFFFFFFFF:
        return "the broadcast address"
    if first == 127:
        return "a loopback address"
    if 224 <= first <= 239:
        return "a multicast address"
    if value >> 16 == 0xA9FE:  # 169.254.0.0/16
        return "a link-local address"
    if first >= 240:
        return "a reserved (IANA) address"
    if first == 0:
        return "in 0.0.0.0/8 ('this network')"
    return None


_RESERVED_CHECKS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("multicast", lambda ip: ip.is_multicast),
    ("link-local", lambda ip: ip.is_link_local),
    ("reserved (IANA)", lambda ip: ip.is_reserved),
)


def _aggregate(ip: IPAddress, advertisement: Advertisement) -> Prefix:
    length = advertisement.aggregation_length if ip.version == 4 else advertisement.aggregation_length_v6
    return _network(ip, length)


class _CachedHash:
    """``ipaddress`` networks recompute their hash (two ``int()`` calls in Python) on every
    dict lookup; a pass over 10,000 routes does ~60,000 of them. Same value, computed once."""

    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("_bgpspeaker_hash")
        if cached is None:
            cached = self.__dict__["_bgpspeaker_hash"] = super().__hash__()
        return cached


class _Prefix4(_CachedHash, ipaddress.IPv4Network):
    """An IPv4Network (equal to, and hashing like, the plain one) that remembers its hash."""

    def hosts(self) -> Iterator[ipaddress.IPv4Address] | list[ipaddress.IPv4Address]:  # type: ignore[override]  # a list for a host route, as ipaddress does
        """As ``ipaddress`` answers, also for a host route (see ``_network``)."""
        return [self.network_address] if self.prefixlen == self.max_prefixlen else super().hosts()


class _Prefix6(_CachedHash, ipaddress.IPv6Network):
    """An IPv6Network (equal to, and hashing like, the plain one) that remembers its hash."""

    def hosts(self) -> Iterator[ipaddress.IPv6Address] | list[ipaddress.IPv6Address]:  # type: ignore[override]  # a list for a host route, as ipaddress does
        """As ``ipaddress`` answers, also for a host route (see ``_network``)."""
        return [self.network_address] if self.prefixlen == self.max_prefixlen else super().hosts()


def _network(ip: IPAddress, length: int) -> Prefix:
    """``ip``'s covering prefix of ``length``, one object per prefix while it is in use
    (cached by the address's integer: no key tuple or LRU links per entry, ~1 MB at 10k)."""
    table = _NETWORKS.get((ip.version, length))
    if table is None:
        table = _NETWORKS[(ip.version, length)] = {}
    value = int(ip)  # the address's own integer: hashing it is cheap, storing it is free
    found = table.get(value)
    if found is None:
        if len(table) >= _NETWORKS_MAX:
            table.clear()  # a cache, not a registry
        found = table[value] = _new_network(ip, length)
    return found


_NETWORKS: dict[tuple[int, int], dict[int, Prefix]] = {}
"""(IP version, prefix length) -> address as an integer -> prefix."""
_NETWORKS_MAX = 1 << 16


def _new_network(ip: IPAddress, length: int) -> Prefix:
    # From the integer: given an address object, ipaddress formats it to text and parses it back.
    prefix: Prefix = (_Prefix4 if ip.version == 4 else _Prefix6)((int(ip), length), strict=False)
    if length == prefix.max_prefixlen and type(ip) in _PLAIN_ADDRESSES and not getattr(ip, "scope_id", None):
        # A host route, the usual VIP: ipaddress gives each one a closure answering hosts()
        # (the class's hosts() answers the same) and its own address object (the VIP's is
        # equal). Without them a prefix takes ~200 bytes instead of ~450 (10,000: -2.5 MB).
        fields = vars(prefix)
        fields.pop("hosts", None)
        fields["network_address"] = ip
    return prefix


_PLAIN_ADDRESSES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def decide_service(
    service: Service,
    slices: Iterable[EndpointSlice],
    *,
    plan: _Plan,
    node_name: str,
    node_reason: Reason | None,
    wanted: list[tuple[tuple[str, Prefix], _Contribution]],
) -> list[Verdict]:
    """Verdicts for one service (one per VIP when it qualifies); appends its routes to ``wanted``."""
    config = plan.config
    reason = service_reason(service, slices, config=config, node_name=node_name, node_reason=node_reason)
    if not reason.announces:
        return [Verdict(service=service.key, reason=reason)]
    advertisements, selected = plan.advertisements_for(service)
    if not advertisements:
        return [Verdict(service=service.key, reason=Reason.NODE_NOT_SELECTED if selected else Reason.NO_ADVERTISEMENT)]
    extras, annotation_problem = (
        _annotation_extras(service, config.community_aliases) if config.service_annotations else (None, "")
    )
    bandwidth: int | None = None
    if any(advertisement.ecmp_weight == "localEndpoints" for advertisement in advertisements):
        bandwidth, weight_problem = service_link_bandwidth(
            service, slices, node_name=node_name, annotations=config.service_annotations
        )
        annotation_problem = "; ".join(problem for problem in (annotation_problem, weight_problem) if problem)
    verdicts = []
    for ip in service.ingress_ips:
        problem = plan.vip_problem(ip)
        if problem is not None:
            verdicts.append(Verdict(service=service.key, reason=Reason.INVALID_INGRESS_IP, ip=ip, detail=problem))
            continue
        family = f"ipv{ip.version}"
        peers: set[str] = set()
        configured_for_family = False
        pool = plan.pools.pool_of(ip) if plan.pools is not None else None
        by_pool = [
            a for a in advertisements if not a.address_pools or (pool is not None and pool.name in a.address_pools)
        ]
        if not by_pool:
            where = f"address pool {pool.name}" if pool is not None else "no address pool"
            verdicts.append(
                Verdict(
                    service=service.key,
                    reason=Reason.NO_ADVERTISEMENT,
                    ip=ip,
                    detail=f"the VIP is in {where}; no advertisement of this service selects it (addressPools)",
                )
            )
            continue
        for advertisement in by_pool:
            prefix = _aggregate(ip, advertisement)
            made: dict[Attributes, _Contribution] = {}  # peers with equal attributes share one
            for name in advertisement.peers or plan.all_peers:
                peer = plan.all_peers[name]
                if family not in peer.families:
                    continue
                configured_for_family = True
                if name not in plan.peers:
                    continue  # the peer's nodeSelectors leave this node out
                peers.add(name)
                attributes = plan.peer_attributes(advertisement, peer, extras, bandwidth)
                contribution = made.get(attributes)
                if contribution is None:
                    contribution = made[attributes] = _Contribution(service.key, ip, attributes, advertisement.name)
                wanted.append(((name, prefix), contribution))
        if peers:
            verdicts.append(
                Verdict(
                    service=service.key, reason=reason, ip=ip, peers=tuple(sorted(peers)), detail=annotation_problem
                )
            )
        elif configured_for_family:
            verdicts.append(
                Verdict(
                    service=service.key,
                    reason=Reason.NO_PEER_FOR_NODE,
                    ip=ip,
                    detail=f"the {family} peers of this service's advertisements do not select this node",
                )
            )
        else:
            verdicts.append(
                Verdict(
                    service=service.key,
                    reason=Reason.NO_PEER_FOR_FAMILY,
                    ip=ip,
                    detail=f"no peer session of this service's advertisements carries {family}",
                )
            )
    return verdicts


_ServiceResult = tuple[list[Verdict], list[tuple[tuple[str, Prefix], _Contribution]]]


@dataclasses.dataclass
class DecisionMemo:
    """The previous decision, kept so the next one only redoes what changed.

    A service is decided again only when it, its slices, the node or the config are no
    longer the very same objects (the store replaces an object when it changes, so
    identity is enough); only the routes those services touch are merged again. With
    the store's change log (``Snapshot.changes``) only the services it names are even
    looked at, so one change costs the same at 10 or 10,000 services. Owned by one
    caller; ``decide`` stays a function of its inputs: with or without a memo the result
    is equal (property tests check it, with and without the change log)."""

    plan_key: tuple[object, ...] = ()
    results: dict[str, tuple[Service, tuple[EndpointSlice, ...], tuple[RouteKey, ...]]] = dataclasses.field(
        default_factory=dict
    )
    """Each service decided: the objects it was decided from and the routes it wants (its
    contributions themselves are in ``wanted``, its verdicts in ``verdicts``)."""
    verdicts: dict[str, list[Verdict]] = dataclasses.field(default_factory=dict)
    """Each service's verdicts, as in ``results``: kept apart so a decision copies and
    orders them at C speed."""
    ordered: list[str] = dataclasses.field(default_factory=list)
    """The keys of ``results``, sorted: the verdict order."""
    wanted: dict[RouteKey, tuple[_Contribution, ...]] = dataclasses.field(default_factory=dict)
    """Each route's contributions in service order (each service's in its own order), as
    the full decision meets them: a tuple, not a dict of lists (10,000 routes a peer: ~250
    bytes less each)."""
    merged: dict[RouteKey, tuple[Attributes | None, str]] = dataclasses.field(default_factory=dict)
    conflicts: dict[RouteKey, str] = dataclasses.field(default_factory=dict)
    """Routes whose contributions conflict, with the problem."""
    announcements: dict[Prefix, Announcement] = dataclasses.field(default_factory=dict)
    log_owner: object = None
    version: int | None = None
    """Where in ``log_owner``'s change log the last decision stood."""
    last: Delta | None = None
    """What the last decision redid; None when it started over (then anything may differ)."""

    def reset(self, plan_key: tuple[object, ...]) -> None:
        """Forget everything (the node or the config changed)."""
        self.plan_key = plan_key
        self.results, self.verdicts, self.ordered = {}, {}, []
        self.wanted, self.merged, self.conflicts = {}, {}, {}
        self.announcements = {}


def _decide_one(
    service: Service,
    slices: tuple[EndpointSlice, ...],
    *,
    plan: _Plan,
    node_name: str,
    node_reason: Reason | None,
) -> _ServiceResult:
    contributions: list[tuple[RouteKey, _Contribution]] = []
    verdicts = decide_service(
        service, slices, plan=plan, node_name=node_name, node_reason=node_reason, wanted=contributions
    )
    return verdicts, contributions


def _merge_route(contributions: Sequence[_Contribution]) -> tuple[Attributes | None, str]:
    if len(contributions) == 1:  # the common case: nothing to merge
        return _merged_ok(contributions[0].attributes)
    attributes, problem = _merge(contributions)
    return (attributes, problem) if attributes is None else _merged_ok(attributes)


def _merged_ok(attributes: Attributes) -> tuple[Attributes, str]:
    """(attributes, no problem): one shared tuple per attribute set, not one per route."""
    attributes = _intern(attributes)
    found = _MERGED_OK.get(attributes)
    if found is None:
        if len(_MERGED_OK) > 4096:
            _MERGED_OK.clear()
        found = _MERGED_OK[attributes] = (attributes, "")
    return found


_MERGED_OK: dict[Attributes, tuple[Attributes, str]] = {}


def _with_contribution(found: tuple[_Contribution, ...], new: _Contribution) -> tuple[_Contribution, ...]:
    """``found`` with ``new`` after every contribution of a service ordered before or equal
    to its own (a service's own contributions stay in the order it made them)."""
    if not found or found[-1].service <= new.service:
        return (*found, new)
    at = len(found)
    while at and found[at - 1].service > new.service:
        at -= 1
    return (*found[:at], new, *found[at:])


def _conflict_verdicts(conflicting: list[tuple[RouteKey, list[_Contribution], str]]) -> list[Verdict]:
    """One verdict per (service, VIP) caught in a conflict, naming the peers; routes are
    visited in a fixed order so the wording never depends on how they were found."""
    conflicts: dict[tuple[str, IPAddress], tuple[list[str], str]] = {}
    for (peer, _prefix), contributions, problem in sorted(
        conflicting, key=lambda item: (item[0][0], prefix_order(item[0][1]))
    ):
        for contribution in contributions:
            conflicts.setdefault((contribution.service, contribution.ip), ([], problem))[0].append(peer)
    return [
        Verdict(
            service=service_key,
            reason=Reason.CONFLICTING_ADVERTISEMENTS,
            ip=ip,
            peers=tuple(sorted(set(names))),
            detail=problem,
        )
        for (service_key, ip), (names, problem) in sorted(conflicts.items(), key=lambda item: str(item[0]))
    ]


def decide(snapshot: Snapshot, config: SpeakerConfig, node_name: str, *, memo: DecisionMemo | None = None) -> Decision:
    """Compute every route this node must announce, and a verdict for every service."""
    node_reason = _node_reason(snapshot, node_name)
    node = snapshot.nodes.get(node_name)
    plan = _Plan(config, node.labels if node is not None else {}, node.addresses if node is not None else frozenset())
    if memo is not None:
        return _decide_incrementally(snapshot, plan, node_name, node_reason, memo)
    verdicts: list[Verdict] = []
    wanted: dict[RouteKey, list[_Contribution]] = {}
    for key, service in sorted(snapshot.services.items()):
        if service.type != "LoadBalancer":
            continue  # not ours to talk about: keeps verdicts proportional to LB services
        slices = tuple(snapshot.slices_by_service.get(key, {}).values())
        service_verdicts, contributions = _decide_one(
            service, slices, plan=plan, node_name=node_name, node_reason=node_reason
        )
        verdicts.extend(service_verdicts)
        for route_key, contribution in contributions:
            wanted.setdefault(route_key, []).append(contribution)
    by_prefix: dict[Prefix, tuple[dict[str, Attributes], set[str]]] = {}
    conflicting: list[tuple[RouteKey, list[_Contribution], str]] = []
    for (peer, prefix), route_contributions in wanted.items():
        attributes, problem = _merge_route(route_contributions)
        if attributes is None:
            conflicting.append(((peer, prefix), route_contributions, problem))
            continue
        entry = by_prefix.setdefault(prefix, ({}, set()))
        entry[0][peer] = attributes
        entry[1].update(c.service for c in route_contributions)
    verdicts.extend(_conflict_verdicts(conflicting))
    announcements = {
        prefix: Announcement(prefix=prefix, routes=_intern_routes(peer_routes), services=frozenset(services))
        for prefix, (peer_routes, services) in by_prefix.items()
    }
    return Decision(announcements=announcements, verdicts=tuple(verdicts))


def _decide_incrementally(
    snapshot: Snapshot, plan: _Plan, node_name: str, node_reason: Reason | None, memo: DecisionMemo
) -> Decision:
    plan_key = (plan.config, node_reason, tuple(sorted(plan.node_labels.items())), plan.node_addresses)
    started_over = memo.plan_key != plan_key
    log = snapshot.changes
    to_visit = None if started_over or log is None else log.since(memo.log_owner, memo.version)
    if started_over:
        memo.reset(plan_key)
    changed: set[RouteKey] = set()
    visited: set[str] = set()

    def forget(key: str) -> None:
        old = memo.results.pop(key, None)
        if old is None:
            return
        visited.add(key)
        del memo.verdicts[key]
        del memo.ordered[bisect.bisect_left(memo.ordered, key)]
        for route_key in old[2]:
            found = memo.wanted.get(route_key)
            if found is not None and any(c.service == key for c in found):
                changed.add(route_key)
                kept = tuple(c for c in found if c.service != key)
                if kept:
                    memo.wanted[route_key] = kept
                else:
                    del memo.wanted[route_key]

    def visit(key: str, service: Service) -> None:
        slices = tuple(snapshot.slices_by_service.get(key, {}).values())
        cached = memo.results.get(key)
        if (
            cached is not None
            and cached[0] is service
            and len(cached[1]) == len(slices)
            and all(a is b for a, b in zip(cached[1], slices, strict=True))
        ):
            return
        forget(key)
        visited.add(key)
        result = _decide_one(service, slices, plan=plan, node_name=node_name, node_reason=node_reason)
        memo.results[key] = (service, slices, tuple(route_key for route_key, _ in result[1]))
        memo.verdicts[key] = result[0]
        bisect.insort(memo.ordered, key)
        for route_key, contribution in result[1]:
            memo.wanted[route_key] = _with_contribution(memo.wanted.get(route_key, ()), contribution)
            changed.add(route_key)

    if to_visit is None:  # compare every service with the memo
        seen: set[str] = set()
        for key, service in snapshot.services.items():
            if service.type == "LoadBalancer":
                seen.add(key)
                visit(key, service)
        for key in [key for key in memo.results if key not in seen]:
            forget(key)
    else:  # only the services the store says changed
        for key in sorted(to_visit):
            current = snapshot.services.get(key)
            if current is not None and current.type == "LoadBalancer":
                visit(key, current)
            else:
                forget(key)
    memo.log_owner, memo.version = (log.owner, log.version) if log is not None else (None, None)

    touched_prefixes = set()
    for route_key in changed:
        found = memo.wanted.get(route_key)
        peer, prefix = route_key
        touched_prefixes.add(prefix)
        if not found:
            memo.merged.pop(route_key, None)
            memo.conflicts.pop(route_key, None)
            continue
        merged = memo.merged[route_key] = _merge_route(found)  # in service order, as the full decision
        if merged[0] is None:
            memo.conflicts[route_key] = merged[1]
        else:
            memo.conflicts.pop(route_key, None)
    for prefix in touched_prefixes:
        routes: dict[str, Attributes] = {}
        services: set[str] = set()
        for peer in plan.all_peers:  # a handful: cheaper than an index per prefix
            entry = memo.merged.get((peer, prefix))
            if entry is not None and entry[0] is not None:
                routes[peer] = entry[0]
                services.update(c.service for c in memo.wanted[(peer, prefix)])
        if routes:
            memo.announcements[prefix] = Announcement(
                prefix=prefix, routes=_intern_routes(routes), services=frozenset(services)
            )
        else:
            memo.announcements.pop(prefix, None)

    conflicting = [(route_key, list(memo.wanted[route_key]), problem) for route_key, problem in memo.conflicts.items()]
    verdicts = tuple(itertools.chain.from_iterable(map(memo.verdicts.__getitem__, memo.ordered)))
    memo.last = None if started_over else Delta(frozenset(touched_prefixes), frozenset(visited), dict(memo.verdicts))
    return Decision(announcements=dict(memo.announcements), verdicts=verdicts + tuple(_conflict_verdicts(conflicting)))
