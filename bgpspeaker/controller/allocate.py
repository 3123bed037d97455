"""The allocator: which addresses every LoadBalancer Service should hold, and why (pure).

``allocate(pools, claims, load_balancer_class=...)`` is the whole policy, a function of
the config and every Service's current state (its status included), so a restarted
controller, or a second replica, decides exactly what the first one did:

1. **What is held stays held.** Every Service of ours keeps the addresses in its status,
   oldest Service first, so restarts and pool edits never renumber: an address outside
   every pool is kept (``OUTSIDE_POOLS``, a Warning Event). Only three things take one
   away: the Service asks for other addresses (``loadBalancerIPs``), it names another
   pool, or an older Service already holds the address and the sharing rules refuse the
   pair (never two owners: the younger one loses it and is allocated again).
2. **Then new requests**, oldest Service first: the requested addresses when they are in
   a pool that serves the Service and free (or legally shared); else the lowest free
   address of each wanted family from the first pool (config order) that serves the
   Service: the pool its annotation names, or any ``autoAssign`` pool whose namespaces
   and serviceSelectors select it.

Sharing (MetalLB's rules): both Services carry the same ``allow-shared-ip`` key, use
no common protocol/port, and either both have ``externalTrafficPolicy: Cluster`` or
both select the same pods. A Service with a sharing key is put on the lowest address
it may share or the lowest free one, whichever is lower.

Services of another ``loadBalancerClass`` are not ours, but the addresses they hold are
never handed to anybody else.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from bgpspeaker.controller.claims import Claim, Port
from bgpspeaker.pools import AddressPool, PoolIndex, is_buggy
from bgpspeaker.routes import IPAddress

__all__ = ["Allocation", "Assignment", "Failure", "Outcome", "allocate", "is_ours"]


class Outcome(enum.StrEnum):
    """What the allocator decided for one Service."""

    KEPT = "kept"
    """Holds what its status says (nothing to write unless an address was dropped)."""
    ALLOCATED = "allocated"
    """New addresses to write (an ``IPAllocated`` Event)."""
    OUTSIDE_POOLS = "outside_pools"
    """Keeps an address that no pool holds any more (a Warning Event; never renumbered)."""
    FAILED = "failed"
    """Nothing (more) could be allocated; ``failure`` says why (``AllocationFailed``)."""
    RELEASED = "released"
    """No longer a LoadBalancer Service of ours: its status loses our addresses."""


class Failure(enum.StrEnum):
    """Why an allocation failed (the ``reason`` label of the failures metric)."""

    POOL_EXHAUSTED = "pool_exhausted"
    NOT_IN_POOL = "requested_ip_not_in_pool"
    IN_USE = "ip_in_use"
    SHARING_BROKEN = "sharing_rule_broken"
    NO_POOL = "no_pool"
    INVALID_REQUEST = "invalid_request"


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    """The decision for one Service."""

    service: str
    outcome: Outcome
    ips: tuple[IPAddress, ...]
    """What ``status.loadBalancer.ingress`` should hold, in ``spec.ipFamilies`` order."""
    write: bool
    """The status differs from ``ips`` and must be written."""
    pool: str | None = None
    failure: Failure | None = None
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Allocation:
    """Every Service's assignment (ours, and those whose status we clear), and the pools' use."""

    assignments: Mapping[str, Assignment]
    in_use: Mapping[str, int]
    """Pool name -> addresses held (a shared address counts once)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Holder:
    service: str
    sharing_key: str | None
    backend: tuple[tuple[str, str], ...] | None
    selector: tuple[tuple[str, str], ...]
    ports: frozenset[Port]


_Slot = tuple[int, int]
"""(version, address as integer): hashing ints, not ipaddress objects (which hash via hex())."""


def is_ours(claim: Claim, load_balancer_class: str) -> bool:
    """A LoadBalancer Service of our class (``""``: only Services without a class), as the speaker reads it."""
    return claim.type == "LoadBalancer" and (claim.load_balancer_class or "") == load_balancer_class


def _slot(ip: IPAddress) -> _Slot:
    return ip.version, int(ip)


def _address(slot: _Slot) -> IPAddress:
    return ipaddress.IPv4Address(slot[1]) if slot[0] == 4 else ipaddress.IPv6Address(slot[1])


def _holder(claim: Claim) -> _Holder:
    return _Holder(claim.key, claim.sharing_key, claim.backend_key, claim.selector, claim.ports)


def _refusal(claim: Claim, ip: IPAddress, holders: Iterable[_Holder]) -> tuple[Failure, str] | None:
    """Why ``claim`` may not hold ``ip`` beside its current ``holders``; None when it may."""
    for other in holders:
        if other.service == claim.key:
            continue
        if other.sharing_key is None or claim.sharing_key is None:
            return Failure.IN_USE, f"{ip} is in use by {other.service}"
        if other.sharing_key != claim.sharing_key:
            return (
                Failure.SHARING_BROKEN,
                f"{ip} is shared by {other.service} under key {other.sharing_key!r}, not {claim.sharing_key!r}",
            )
        same_pods = other.selector == claim.selector
        if not same_pods and (other.backend is not None or claim.backend_key is not None):
            return (
                Failure.SHARING_BROKEN,
                f"{ip} is shared by {other.service}: sharing needs externalTrafficPolicy Cluster on both,"
                " or the same pod selector",
            )
        common = sorted(other.ports & claim.ports)
        if common:
            protocol, port = common[0]
            return Failure.SHARING_BROKEN, f"{ip}: port {protocol}/{port} is already used by {other.service}"
    return None


class _Book:
    """Who holds which address, and where each pool's lowest possibly free address is."""

    def __init__(self, pools: Sequence[AddressPool]) -> None:
        self.holders: dict[_Slot, list[_Holder]] = {}
        self.by_key: dict[str, set[_Slot]] = {}
        """Sharing key -> addresses held under it (candidates for a Service with that key)."""
        self._cursor: dict[tuple[str, int], int] = {}
        """(pool, version) -> every usable address below is held (only grows: nothing is freed in a pass)."""
        self.index = PoolIndex(pools)

    def hold(self, slot: _Slot, holder: _Holder) -> None:
        self.holders.setdefault(slot, []).append(holder)
        if holder.sharing_key is not None:
            self.by_key.setdefault(holder.sharing_key, set()).add(slot)

    def refusal(self, claim: Claim, ip: IPAddress) -> tuple[Failure, str] | None:
        return _refusal(claim, ip, self.holders.get(_slot(ip), ()))

    def lowest(self, pool: AddressPool, version: int, claim: Claim) -> _Slot | None:
        """The lowest address of ``pool`` and family ``version`` that ``claim`` may take."""
        free = self._lowest_free(pool, version)
        if claim.sharing_key is None:
            return free
        shared = sorted(
            slot
            for slot in self.by_key.get(claim.sharing_key, ())
            if slot[0] == version and self.index.pool_of_int(*slot) is pool
        )
        for slot in shared:
            if free is not None and slot[1] > free[1]:
                break
            if _refusal(claim, _address(slot), self.holders[slot]) is None:
                return slot
        return free

    def _lowest_free(self, pool: AddressPool, version: int) -> _Slot | None:
        start = self._cursor.get((pool.name, version), 0)
        for address_range in sorted(pool.ranges, key=lambda r: r.first_int):
            if address_range.version != version or address_range.last_int < start:
                continue
            value = max(start, address_range.first_int)
            while value <= address_range.last_int:
                if (version, value) not in self.holders and not (pool.avoid_buggy_ips and is_buggy(version, value)):
                    self._cursor[(pool.name, version)] = value
                    return version, value
                value += 1
        self._cursor[(pool.name, version)] = 1 << 128
        return None


def _ordered(ips: Sequence[IPAddress], families: Sequence[int]) -> tuple[IPAddress, ...]:
    if len(ips) < 2:
        return tuple(ips)
    order = {family: position for position, family in enumerate(families)}
    return tuple(sorted(ips, key=lambda ip: order.get(ip.version, len(order))))


def _order(claim: Claim) -> tuple[str, str]:
    return claim.created, claim.key


def allocate(pools: Sequence[AddressPool], claims: Mapping[str, Claim], *, load_balancer_class: str = "") -> Allocation:
    """Every Service's assignment; see the module's docstring for the rules."""
    book = _Book(pools)
    by_name = {pool.name: pool for pool in pools}
    assignments: dict[str, Assignment] = {}
    ordered = sorted(claims.values(), key=_order)
    ours = [claim for claim in ordered if is_ours(claim, load_balancer_class)]

    # Services of another class or type: their addresses are nobody else's; ours leave them.
    for claim in ordered:
        if is_ours(claim, load_balancer_class):
            continue
        if claim.type != "LoadBalancer":  # holds nothing; what it shows from our pools goes
            held = [ip for ip in claim.ingress_ips if book.index.pool_of(ip) is not None]
            if held:
                left = tuple(ip for ip in claim.ingress_ips if ip not in held)
                assignments[claim.key] = Assignment(claim.key, Outcome.RELEASED, left, write=True)
            continue
        for ip in claim.ingress_ips:
            book.hold(_slot(ip), _Holder(claim.key, None, None, claim.selector, claim.ports))

    # 1. What is held stays held (oldest first), unless the Service asks for something else.
    kept: dict[str, list[IPAddress]] = {}
    lost: dict[str, tuple[Failure, str]] = {}
    for claim in ours:
        wanted = claim.wanted_families
        current = [ip for ip in claim.ingress_ips if ip.version in wanted]
        if claim.requested_ips and set(current) != set(claim.requested_ips):
            continue
        if claim.pool is not None and claim.pool in by_name:
            in_other = [ip for ip in current if (p := book.index.pool_of(ip)) is not None and p.name != claim.pool]
            if in_other:
                continue
        holding: list[IPAddress] = []
        for ip in current:
            refusal = book.refusal(claim, ip)
            if refusal is not None:
                lost[claim.key] = refusal
                continue
            holding.append(ip)
        if holding:
            holder = _holder(claim)
            for ip in holding:
                book.hold(_slot(ip), holder)
        kept[claim.key] = holding

    # 2. New requests, oldest first.
    for claim in ours:
        holding = kept.get(claim.key, [])
        missing = [family for family in claim.wanted_families if all(ip.version != family for ip in holding)]
        if not missing:
            assignments[claim.key] = _kept(claim, holding, book, lost.get(claim.key))
            continue
        failure, detail, new, pool = _request(claim, holding=holding, missing=missing, pools=pools, book=book)
        if failure is not None and holding and claim.family_policy == "PreferDualStack" and claim.key not in lost:
            assignments[claim.key] = _kept(claim, holding, book, None)  # the second family is only preferred
            continue
        if claim.key in lost:  # allocated again (or not) after losing an address to an older Service
            detail = f"{lost[claim.key][1]}; " + (detail or "given another address")
        ips = _ordered([*holding, *new], claim.families)
        for ip in new:
            book.hold(_slot(ip), _holder(claim))
        if failure is not None:
            outcome = Outcome.FAILED
        elif new:
            outcome = Outcome.ALLOCATED
        else:
            outcome = Outcome.KEPT
        assignments[claim.key] = Assignment(
            claim.key,
            outcome,
            ips,
            write=ips != claim.ingress_ips,
            pool=pool,
            failure=failure,
            detail=detail,
        )

    in_use: dict[str, int] = {pool.name: 0 for pool in pools}
    for slot in book.holders:
        holding_pool = book.index.pool_of_int(*slot)
        if holding_pool is not None:
            in_use[holding_pool.name] += 1
    return Allocation(assignments=assignments, in_use=in_use)


def _kept(claim: Claim, holding: list[IPAddress], book: _Book, lost: tuple[Failure, str] | None) -> Assignment:
    ips = _ordered(holding, claim.families)
    pools = [book.index.pool_of(ip) for ip in ips]
    if lost is not None:
        return Assignment(
            claim.key, Outcome.FAILED, ips, write=ips != claim.ingress_ips, failure=lost[0], detail=lost[1]
        )
    outside = [str(ip) for ip, pool in zip(ips, pools, strict=True) if pool is None]
    if outside:
        return Assignment(
            claim.key,
            Outcome.OUTSIDE_POOLS,
            ips,
            write=ips != claim.ingress_ips,
            detail=f"{', '.join(outside)} is in no address pool; kept (a VIP change is an outage)",
        )
    pool = next((p.name for p in pools if p is not None), None)
    return Assignment(claim.key, Outcome.KEPT, ips, write=ips != claim.ingress_ips, pool=pool)


def _request(
    claim: Claim,
    *,
    holding: list[IPAddress],
    missing: list[int],
    pools: Sequence[AddressPool],
    book: _Book,
) -> tuple[Failure | None, str, list[IPAddress], str | None]:
    """(failure, detail, new addresses, pool) for the families ``claim`` still lacks."""
    if claim.request_problem:
        return Failure.INVALID_REQUEST, claim.request_problem, [], None
    if claim.requested_ips:
        return _requested(claim, pools, book)
    by_name = {pool.name: pool for pool in pools}
    if claim.pool is not None:
        pinned = by_name.get(claim.pool)
        if pinned is None:
            known = ", ".join(sorted(by_name)) or "none"
            return Failure.NO_POOL, f"no address pool named {claim.pool!r} (pools: {known})", [], None
        if not pinned.selects(claim.namespace, claim.labels):
            return Failure.NO_POOL, f"pool {pinned.name} does not serve this namespace or these labels", [], None
        candidates = [pinned]
    else:
        candidates = [pool for pool in pools if pool.auto_assign and pool.selects(claim.namespace, claim.labels)]
        if not candidates:
            return (
                Failure.NO_POOL,
                "no autoAssign address pool selects this Service (namespaces, serviceSelectors)",
                [],
                None,
            )
    held_pools = [p for p in (book.index.pool_of(ip) for ip in holding) if p is not None]
    if held_pools and held_pools[0] in candidates:  # a second family from the pool of the first
        candidates = [held_pools[0], *(p for p in candidates if p is not held_pools[0])]
    partial: tuple[list[_Slot], AddressPool] | None = None
    for pool in candidates:
        found = [slot for slot in (book.lowest(pool, family, claim) for family in missing) if slot is not None]
        if len(found) == len(missing):
            return None, "", [_address(slot) for slot in found], pool.name
        if found and partial is None and claim.family_policy == "PreferDualStack":
            partial = found, pool
    if partial is not None:
        return None, "", [_address(slot) for slot in partial[0]], partial[1].name
    families = " and ".join(f"IPv{family}" for family in missing)
    names = ", ".join(pool.name for pool in candidates)
    return Failure.POOL_EXHAUSTED, f"no free {families} address in pool {names}", [], None


def _requested(
    claim: Claim, pools: Sequence[AddressPool], book: _Book
) -> tuple[Failure | None, str, list[IPAddress], str | None]:
    if len(claim.requested_ips) > len(claim.wanted_families) or any(
        ip.version not in claim.wanted_families for ip in claim.requested_ips
    ):
        families = "/".join(f"IPv{f}" for f in claim.wanted_families)
        requested = ", ".join(map(str, claim.requested_ips))
        return Failure.INVALID_REQUEST, f"requested {requested}, but the Service takes one {families} address", [], None
    pool_name: str | None = None
    for ip in claim.requested_ips:
        pool = book.index.pool_of(ip)
        if pool is None:
            avoided = next((p.name for p in pools if _in_ranges(p, ip)), None)
            why = f" (pool {avoided} avoids .0 and .255: avoidBuggyIPs)" if avoided else ""
            return Failure.NOT_IN_POOL, f"requested {ip} is in no address pool{why}", [], None
        if claim.pool is not None and claim.pool != pool.name:
            return Failure.NOT_IN_POOL, f"requested {ip} is in pool {pool.name}, not {claim.pool}", [], None
        if not pool.selects(claim.namespace, claim.labels):
            return (
                Failure.NO_POOL,
                f"requested {ip}: pool {pool.name} does not serve this namespace or labels",
                [],
                None,
            )
        refusal = book.refusal(claim, ip)
        if refusal is not None:
            return refusal[0], refusal[1], [], None
        pool_name = pool.name
    return None, "", list(claim.requested_ips), pool_name


def _in_ranges(pool: AddressPool, ip: IPAddress) -> bool:
    value = int(ip)
    return any(r.version == ip.version and r.first_int <= value <= r.last_int for r in pool.ranges)
