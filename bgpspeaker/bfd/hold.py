"""How long a peer's BGP session stays down after BFD took it down (pure: every function
takes ``now``, monotonic seconds).

Why a bound: routers differ in what runs first. FRR 8.4 with a named neighbor keeps its
BFD session while BGP is down and starts BGP again when BFD comes Up
(``bfd_session_status_update``, bgpd/bgp_bfd.c); but FRR creates a dynamic neighbor
(``bgp listen range``) and its BFD session only when a BGP connection arrives, and
deletes both when the BGP session ends (``bgp_stop`` -> ``peer_delete``,
bgpd/bgp_fsm.c). Waiting for BFD Up before BGP would wait for ever there. FRR's own
default (``neighbor X bfd``, not ``strict``) lets BGP reconnect at once after a BFD Down.

So, after a takedown BGP stays down until BFD is Up again or the profile's
``bgpHoldDown`` has passed, whichever comes first; then BGP reconnects. BFD can take BGP
down again only from Up (a session that has not come Up since the reconnect takes nothing
down). A takedown less than ``FLAP_WINDOW_S`` after BGP was let back is a flap: the hold
doubles each time (at most ``MAX_HOLD_S``) and only its expiry ends it, so a half-broken
path (BFD lost now and then, TCP working) costs at most one takedown per hold.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["FLAP_WINDOW_S", "MAX_HOLD_S", "MIN_FLAP_HOLD_S", "Hold", "Release", "bfd_up", "expire", "take_down"]

FLAP_WINDOW_S = 60.0
"""A takedown less than this long after the previous release counts as a flap. A minute
covers a path whose BFD keeps coming Up for some seconds and failing again; a failure a
minute or more after the last is treated as a new, single one."""
MAX_HOLD_S = 120.0
"""The longest hold a flapping path reaches (5 s doubled 5 times is 160 s): a path that
recovered is back within two minutes. A larger ``bgpHoldDown`` is its own ceiling."""
MIN_FLAP_HOLD_S = 1.0
"""The base of the doubling when ``bgpHoldDown`` is 0 (reconnect at once): flaps still back off."""


class Release(enum.StrEnum):
    """Why a hold ended."""

    BFD_UP = "bfd_up"
    HOLD_EXPIRED = "hold_expired"


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """One peer's hold on its BGP session."""

    held_since: float | None = None
    """When BFD took BGP down (None: BGP may run)."""
    hold_s: float = 0.0
    """The bound of the hold in force (or of the last one)."""
    flaps: int = 0
    """Takedowns in a row (1: a single failure; 2 and more: the path flaps)."""
    released_at: float | None = None
    """When the last hold ended."""

    @property
    def held(self) -> bool:
        """BGP must stay down now."""
        return self.held_since is not None

    @property
    def deadline(self) -> float | None:
        """When the hold in force expires."""
        return None if self.held_since is None else self.held_since + self.hold_s


def hold_for(base_s: float, flaps: int) -> float:
    """The hold of the ``flaps``-th takedown in a row: ``base_s``, then doubling."""
    if flaps <= 1:
        return base_s
    doubled: float = max(base_s, MIN_FLAP_HOLD_S) * 2.0 ** (flaps - 1)
    return min(doubled, max(base_s, MAX_HOLD_S))


def take_down(hold: Hold, *, now: float, base_s: float) -> Hold:
    """BFD left Up because the path failed: BGP goes down and stays down (see ``bfd_up``,
    ``expire``). A peer already held stays as it is."""
    if hold.held:
        return hold
    flap = hold.released_at is not None and now - hold.released_at < FLAP_WINDOW_S
    flaps = hold.flaps + 1 if flap else 1
    return dataclasses.replace(hold, held_since=now, hold_s=hold_for(base_s, flaps), flaps=flaps)


def bfd_up(hold: Hold, *, now: float) -> tuple[Hold, Release | None]:
    """BFD is Up again: a single failure's hold ends; a flap's hold runs to its end."""
    if not hold.held or hold.flaps > 1:
        return hold, None
    return dataclasses.replace(hold, held_since=None, released_at=now), Release.BFD_UP


def expire(hold: Hold, *, now: float) -> tuple[Hold, Release | None]:
    """The hold's bound passed: BGP may reconnect without waiting for BFD."""
    deadline = hold.deadline
    if deadline is None or now < deadline:
        return hold, None
    return dataclasses.replace(hold, held_since=None, released_at=now), Release.HOLD_EXPIRED
