"""``bfdProfiles`` and a peer's ``bfdProfile``: parsing and validation (pure), shaped
like MetalLB's BFDProfile. Ranges are MetalLB's: intervals 10ms..60s, detect
multiplier 2..255, minimumTtl 1..254 (multihop peers only)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from bgpspeaker.values import parse_duration_ms, parse_int, show

__all__ = ["DEFAULT_BGP_HOLD_DOWN_MS", "PROFILE_KEYS", "BfdProfile", "parse_peer_profile", "parse_profiles"]

PROFILE_KEYS = frozenset(
    {"name", "receiveInterval", "transmitInterval", "detectMultiplier", "passiveMode", "minimumTtl", "bgpHoldDown"}
)
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 10, 60_000
MAX_BGP_HOLD_DOWN_MS = 3_600_000
DEFAULT_BGP_HOLD_DOWN_MS = 5_000
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True, slots=True)
class BfdProfile:
    """BFD timers for the peers that name this profile."""

    name: str
    receive_interval_ms: int = 300
    """Required Min RX: the fastest we accept packets. MetalLB's default is 300 ms."""
    transmit_interval_ms: int = 300
    """Desired Min TX (the remote's Required Min RX may make it slower)."""
    detect_multiplier: int = 3
    passive_mode: bool = False
    """Wait for the router's first packet instead of sending first."""
    minimum_ttl: int = 254
    """Multihop only: packets arriving with a lower TTL are dropped (one router between)."""
    bgp_hold_down_ms: int = DEFAULT_BGP_HOLD_DOWN_MS
    """Not MetalLB's: after BFD took BGP down, BGP stays down until BFD is Up again or this
    long (bgpspeaker.bfd.hold). 5 s: longer than FRR's 1 s slow rate times 3, so a named
    neighbor's BFD has come Up by then when the path is back; short enough that a router
    which runs BFD only for established sessions (FRR's ``bgp listen range``) gets BGP
    back within seconds. 0: reconnect at once (FRR's non-strict ``neighbor X bfd``)."""


def _interval(data: Mapping[str, Any], key: str, path: str, problems: list[str]) -> int | None:
    if key not in data:
        return 300
    value = parse_duration_ms(data[key], f"{path}.{key}", problems)
    if value is not None and not MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
        hint = " (a bare number is seconds: write 300ms)" if isinstance(data[key], int) else ""
        problems.append(f"{path}.{key}: must be 10ms..60s{hint}, got {show(data[key])}")
        return None
    return value


def parse_profiles(value: Any, problems: list[str]) -> dict[str, BfdProfile]:
    """``bfdProfiles``: a list of profiles with unique names."""
    if value is None:
        return {}
    if not isinstance(value, list):
        problems.append(f"bfdProfiles: must be a list of profiles, got {show(value)}")
        return {}
    profiles: dict[str, BfdProfile] = {}
    for index, data in enumerate(value):
        path = f"bfdProfiles[{index}]"
        if not isinstance(data, Mapping):
            problems.append(f"{path}: must be a mapping, got {show(data)}")
            continue
        before = len(problems)
        for key in sorted(set(data) - PROFILE_KEYS, key=str):
            shown = str(key) if len(str(key)) <= 80 else show(str(key))
            problems.append(f"{path}.{shown}: unknown field (allowed: {', '.join(sorted(PROFILE_KEYS))})")
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(
                f"{path}.name: must be a DNS label (lowercase letters, digits, '-', at most 63), got {show(name)}"
            )
        elif name in profiles:
            problems.append(f"{path}.name: duplicate profile name {show(name)}")
        receive = _interval(data, "receiveInterval", path, problems)
        transmit = _interval(data, "transmitInterval", path, problems)
        multiplier = parse_int(data.get("detectMultiplier", 3), f"{path}.detectMultiplier", problems, low=2, high=255)
        passive = data.get("passiveMode", False)
        if not isinstance(passive, bool):
            problems.append(f"{path}.passiveMode: must be true or false, got {show(passive)}")
        minimum_ttl = parse_int(data.get("minimumTtl", 254), f"{path}.minimumTtl", problems, low=1, high=254)
        hold_down = _hold_down(data, path, problems)
        if len(problems) != before or not isinstance(name, str) or None in (receive, transmit, multiplier, minimum_ttl):
            continue
        assert receive is not None and transmit is not None and multiplier is not None and minimum_ttl is not None
        assert hold_down is not None
        profiles[name] = BfdProfile(
            name=name,
            receive_interval_ms=receive,
            transmit_interval_ms=transmit,
            detect_multiplier=multiplier,
            passive_mode=bool(passive),
            minimum_ttl=minimum_ttl,
            bgp_hold_down_ms=hold_down,
        )
    return profiles


def _hold_down(data: Mapping[str, Any], path: str, problems: list[str]) -> int | None:
    if "bgpHoldDown" not in data:
        return DEFAULT_BGP_HOLD_DOWN_MS
    value = parse_duration_ms(data["bgpHoldDown"], f"{path}.bgpHoldDown", problems)
    if value is not None and value > MAX_BGP_HOLD_DOWN_MS:
        problems.append(f"{path}.bgpHoldDown: must be 0s..1h, got {show(data['bgpHoldDown'])}")
        return None
    return value


def parse_peer_profile(
    data: Mapping[str, Any],
    path: str,
    *,
    profiles: Mapping[str, BfdProfile],
    raw_profiles: Any,
    multihop: bool,
    problems: list[str],
) -> BfdProfile | None:
    """A peer's ``bfdProfile``: the profile it names (None when it names none)."""
    name = data.get("bfdProfile")
    if name is None:
        return None
    profile = profiles.get(name) if isinstance(name, str) else None
    if profile is None:
        # A profile that exists but failed its own checks is reported there, not here.
        named = isinstance(raw_profiles, list) and any(
            isinstance(raw, Mapping) and raw.get("name") == name for raw in raw_profiles
        )
        if not named:
            problems.append(
                f"{path}.bfdProfile: no BFD profile named {show(name)}"
                f" (bfdProfiles: {', '.join(sorted(profiles)) or 'none'})"
            )
        return None
    if not multihop and isinstance(raw_profiles, list):
        raw = next((r for r in raw_profiles if isinstance(r, Mapping) and r.get("name") == name), {})
        if "minimumTtl" in raw:
            problems.append(
                f"{path}.bfdProfile: profile {show(name)} sets minimumTtl, which is for multihop peers only;"
                " this peer has no ebgpMultiHop (single-hop BFD always requires TTL 255)"
            )
    return profile
