"""Address pools: where ``bgpspeaker controller`` takes Service VIPs from (pure; no I/O).

The ``addressPools`` section of the SpeakerConfig::

    addressPools:
      - name: public
        addresses: ["198.51.100.0/29", "198.51.100.100-198.51.100.101", "2001:db8:1::/124"]
        autoAssign: true          # false: only on explicit request (annotation or loadBalancerIP)
        avoidBuggyIPs: false      # true: never hand out an IPv4 address ending in .0 or .255
        serviceSelectors: []      # label selectors; empty: any Service
        namespaces: []            # empty: any namespace

Pools may not overlap (one address, one pool): ``PoolIndex.pool_of`` answers "which pool
holds this address" with one binary search over integers, which is what the speaker's
``advertisements[].addressPools`` selection needs for 10,000 VIPs.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bgpspeaker.routes import IPAddress
from bgpspeaker.values import LabelSelector, matches_any, parse_ip, parse_names, parse_selectors, show

__all__ = [
    "POOL_KEYS",
    "AddressPool",
    "AddressRange",
    "PoolIndex",
    "is_buggy",
    "parse_pool_names",
    "parse_pools",
]

POOL_KEYS = frozenset({"name", "addresses", "autoAssign", "avoidBuggyIPs", "serviceSelectors", "namespaces"})
MAX_POOLS = 1000
"""More pools than any cluster needs; bounds the config's work (overlap checks are n log n)."""
MAX_ADDRESSES = 1000
"""Entries in one pool's ``addresses``."""
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAMESPACE = _NAME


@dataclasses.dataclass(frozen=True, slots=True)
class AddressRange:
    """``first``..``last`` inclusive, one family, as written (``text``) in the config."""

    first: IPAddress
    last: IPAddress
    text: str

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def first_int(self) -> int:
        return int(self.first)

    @property
    def last_int(self) -> int:
        return int(self.last)

    @property
    def size(self) -> int:
        return self.last_int - self.first_int + 1


def is_buggy(version: int, value: int) -> bool:
    """An IPv4 address ending in .0 or .255 (old CPE firmware drops traffic to it as a
    broadcast: MetalLB's ``avoidBuggyIPs``); never an IPv6 address."""
    return version == 4 and (value & 0xFF) in (0, 255)


@dataclasses.dataclass(frozen=True, slots=True)
class AddressPool:
    """One named pool."""

    name: str
    ranges: tuple[AddressRange, ...]
    """In the config's order (messages name positions the operator wrote)."""
    auto_assign: bool = True
    """False: only Services that ask for it (pool annotation or a requested IP) get its addresses."""
    avoid_buggy_ips: bool = False
    service_selectors: tuple[LabelSelector, ...] = ()
    namespaces: tuple[str, ...] = ()
    """Empty: any namespace."""

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a Service in ``namespace`` with ``labels`` may get addresses from this pool."""
        return (not self.namespaces or namespace in self.namespaces) and matches_any(self.service_selectors, labels)

    def holds(self, ip: IPAddress) -> bool:
        """``ip`` is in one of the ranges, and not a buggy address this pool avoids."""
        value = int(ip)
        if self.avoid_buggy_ips and is_buggy(ip.version, value):
            return False
        return any(r.version == ip.version and r.first_int <= value <= r.last_int for r in self.ranges)

    def size(self, version: int | None = None) -> int:
        """Addresses it can hand out (of one family, or all), buggy ones excluded when avoided."""
        return sum(_usable_count(r, self.avoid_buggy_ips) for r in self.ranges if version in (None, r.version))


def _usable_count(address_range: AddressRange, avoid_buggy: bool) -> int:
    size = address_range.size
    if not avoid_buggy or address_range.version != 4:
        return size
    first, last = address_range.first_int, address_range.last_int
    # Every /24 boundary crossed holds one .0 and one .255.
    zeros = (last >> 8) - ((first - 1) >> 8) if first else (last >> 8) + 1
    broadcasts = ((last + 1) >> 8) - (first >> 8)
    return size - zeros - broadcasts


class PoolIndex:
    """Which pool holds an address: a binary search over the ranges' integers.

    Built once per config; ``pool_of`` costs one ``int()`` and one ``bisect`` per VIP."""

    def __init__(self, pools: Sequence[AddressPool]) -> None:
        rows = sorted(
            ((r.version, r.first_int, r.last_int, pool) for pool in pools for r in pool.ranges),
            key=lambda row: (row[0], row[1]),
        )
        self._starts = [(version, first) for version, first, _, _ in rows]
        self._rows = rows

    def pool_of(self, ip: IPAddress) -> AddressPool | None:
        """The pool whose ranges hold ``ip`` (None: no pool, or a buggy address its pool avoids)."""
        return self.pool_of_int(ip.version, int(ip))

    def pool_of_int(self, family: int, value: int) -> AddressPool | None:
        """``pool_of`` for an address given as (version, integer)."""
        index = bisect.bisect_right(self._starts, (family, value)) - 1
        if index < 0:
            return None
        version, _, last, pool = self._rows[index]
        if version != family or value > last:
            return None
        if pool.avoid_buggy_ips and is_buggy(version, value):
            return None
        return pool


def _range(item: Any, path: str, problems: list[str]) -> AddressRange | None:
    """``192.0.2.0/28`` (host bits zero), ``192.0.2.10-192.0.2.20`` or a single address."""
    if not isinstance(item, str) or len(item) > 200:
        problems.append(
            f"{path}: must be a CIDR like '192.0.2.0/28' or a range like '192.0.2.10-192.0.2.20', got {show(item)}"
        )
        return None
    text = item.strip()
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as error:
            problems.append(f"{path}: must be a CIDR with the host bits zero ({error}), got {show(item)}")
            return None
        return AddressRange(network.network_address, network.broadcast_address, text)
    low_text, dash, high_text = text.partition("-")
    low = parse_ip(low_text.strip())
    high = parse_ip(high_text.strip()) if dash else low
    if low is None or high is None:
        problems.append(
            f"{path}: must be a CIDR like '192.0.2.0/28' or a range like '192.0.2.10-192.0.2.20', got {show(item)}"
        )
        return None
    if low.version != high.version:
        problems.append(f"{path}: both ends of a range must be the same family, got {show(item)}")
        return None
    if int(low) > int(high):
        problems.append(f"{path}: the range's first address is above its last, got {show(item)}")
        return None
    return AddressRange(low, high, text)


def _bool(data: Mapping[str, Any], key: str, default: bool, path: str, problems: list[str]) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        problems.append(f"{path}.{key}: must be true or false, got {show(value)}")
        return default
    return value


def _pool(data: Any, path: str, problems: list[str]) -> AddressPool | None:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: must be a mapping with name and addresses, got {show(data)}")
        return None
    before = len(problems)
    for key in sorted(set(data) - POOL_KEYS, key=str):
        problems.append(f"{path}.{show(key)[1:-1]}: unknown field (allowed: {', '.join(sorted(POOL_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"{path}.name: must be a DNS label (lowercase letters, digits, '-', at most 63), got {show(name)}"
        )
    raw_addresses = data.get("addresses")
    ranges: list[AddressRange] = []
    if not isinstance(raw_addresses, list) or not raw_addresses or len(raw_addresses) > MAX_ADDRESSES:
        problems.append(
            f"{path}.addresses: must be a non-empty list (at most {MAX_ADDRESSES}) of CIDRs or"
            f" first-last ranges, got {show(raw_addresses)}"
        )
    else:
        for index, item in enumerate(raw_addresses):
            address_range = _range(item, f"{path}.addresses[{index}]", problems)
            if address_range is not None:
                ranges.append(address_range)
    auto_assign = _bool(data, "autoAssign", True, path, problems)
    avoid_buggy = _bool(data, "avoidBuggyIPs", False, path, problems)
    selectors = parse_selectors(data.get("serviceSelectors"), f"{path}.serviceSelectors", problems)
    raw_namespaces = data.get("namespaces") or []
    namespaces: list[str] = []
    if not isinstance(raw_namespaces, list):
        problems.append(f"{path}.namespaces: must be a list of namespace names, got {show(raw_namespaces)}")
    else:
        for index, namespace in enumerate(raw_namespaces):
            if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
                problems.append(f"{path}.namespaces[{index}]: must be a namespace name, got {show(namespace)}")
            elif namespace not in namespaces:
                namespaces.append(namespace)
    if len(problems) != before or not isinstance(name, str):
        return None
    return AddressPool(
        name=name,
        ranges=tuple(ranges),
        auto_assign=auto_assign,
        avoid_buggy_ips=avoid_buggy,
        service_selectors=selectors,
        namespaces=tuple(namespaces),
    )


def _overlaps(pools: Sequence[tuple[int, AddressPool]], path: str, problems: list[str]) -> None:
    """One problem per range that overlaps an earlier one (same pool or another)."""
    rows = sorted(
        (
            (r.version, r.first_int, r.last_int, index, position, pool.name, r.text)
            for index, pool in pools
            for position, r in enumerate(pool.ranges)
        ),
    )
    widest: tuple[int, int, int, int, int, str, str] | None = None
    for row in rows:
        version, first, last, index, position, _, text = row
        if widest is not None and widest[0] == version and first <= widest[2]:
            _, _, _, other_index, other_position, other_name, other_text = widest
            problems.append(
                f"{path}[{index}].addresses[{position}]: {text} overlaps {other_text}"
                f" ({path}[{other_index}].addresses[{other_position}], pool {other_name});"
                " an address belongs to one pool only"
            )
        if widest is None or widest[0] != version or last > widest[2]:
            widest = row


def parse_pools(value: Any, path: str, problems: list[str]) -> tuple[AddressPool, ...]:
    """The ``addressPools`` list: every pool valid, names unique, no two ranges overlapping."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_POOLS:
        problems.append(f"{path}: must be a list of at most {MAX_POOLS} pools, got {show(value)}")
        return ()
    pools: list[tuple[int, AddressPool]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(value):
        pool = _pool(raw, f"{path}[{index}]", problems)
        if pool is None:
            continue
        if pool.name in seen:
            problems.append(f"{path}[{index}].name: duplicate of {path}[{seen[pool.name]}], got '{pool.name}'")
            continue
        seen[pool.name] = index
        pools.append((index, pool))
    _overlaps(pools, path, problems)
    return tuple(pool for _, pool in pools)


def parse_pool_names(value: Any, path: str, pools: Sequence[AddressPool], problems: list[str]) -> tuple[str, ...]:
    """An advertisement's ``addressPools``: names of configured pools (empty: any VIP)."""
    known = {pool.name for pool in pools}
    return parse_names(value, path, known, problems, what="address pool", listing="addressPools")
