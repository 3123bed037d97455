"""The boundary between the reconciler and one peer's BGP speaker: ``Session``.

One session per peer. The reconciler hands it typed route changes and gets one
acknowledgement per change back; how they become wire messages (today: ExaBGP text
commands to an ExaBGP child, ``bgpspeaker.exabgp``) is the session's business. Tests
implement the same protocol with stand-ins. Nothing outside a session assigns its
fields: the reconciler calls methods and reads ``status()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import Attributes, IPAddress, Prefix

__all__ = ["MAX_PREFIXES_PER_CHANGE", "Ack", "RouteChange", "Session", "SessionFactory", "SessionStatus"]

MAX_PREFIXES_PER_CHANGE = 500
"""Prefixes per change: ExaBGP packs one IPv4 UPDATE per bulk command, and 500 /32s fit
one 4 KiB UPDATE; measured ~2,100 routes/s this way against ~1,100/s one by one."""

Ack = bool | None
"""One change's acknowledgement: True done, False refused, None unknown (the session
broke or went silent with the change in flight; it may or may not have been applied)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RouteChange:
    """One change to one peer's routes: announce ``prefixes`` with ``attributes`` (whose
    ``next_hop`` is explicit, or None for ``self``), or withdraw them when ``attributes``
    is None (``next_hop``: the explicit next hop they were announced with, if any)."""

    attributes: Attributes | None
    prefixes: Sequence[Prefix]
    next_hop: IPAddress | None = None

    @property
    def withdraws(self) -> bool:
        """True for a withdraw."""
        return self.attributes is None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionStatus:
    """A session as it stands, for the reconciler, metrics and ``/status``."""

    name: str
    runtime: PeerRuntime
    state: str
    """The BGP state last reported: ``up`` (Established), ``connected``, ``down``."""
    since_monotonic: float
    generation: int | None
    """The speaker process whose acknowledged routes are current; None while it cannot
    take changes. A new generation starts empty: every route is sent again."""
    up_count: int
    """Increments each time the session reaches Established."""
    pid: int | None = None
    restarts: int = 0
    failed: str | None = None
    """Set when the session gave up (the process exits non-zero)."""
    messages: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """BGP messages by ExaBGP's counter name (``send-update``, ``receive-keepalive``, ...)."""

    @property
    def established(self) -> bool:
        """True while the BGP session is Established."""
        return self.state == "up"


class Session(Protocol):
    """One peer's BGP speaker, as the reconciler sees it."""

    @property
    def name(self) -> str:
        """The peer's name."""

    def accepts(self, runtime: PeerRuntime, router_id: IPAddress) -> bool:
        """True when this running session can carry ``runtime`` without a restart (only
        facts such as next hops differ); False when its settings changed."""

    def start(self) -> None:
        """Start speaking (returns at once; ``status().generation`` says when changes can flow)."""

    def stop(self, timeout_s: float) -> None:
        """Stop; routes are left to the router (graceful restart) unless withdrawn first."""

    def retune(self, runtime: PeerRuntime) -> None:
        """Same session, new runtime facts (next hops) for the routes to come."""

    def apply(self, changes: Sequence[RouteChange], *, ack_timeout_s: float | None = None) -> list[Ack]:
        """Apply ``changes`` in order; one acknowledgement per change. Never raises for a
        broken or silent speaker: the changes it could not confirm are None."""

    def hasten(self, ack_timeout_s: float) -> None:
        """Cap every acknowledgement wait from now on, the one in flight included (shutdown)."""

    def end_of_rib(self) -> bool:
        """Tell the router every route is there (graceful restart); True when acknowledged."""

    def status(self) -> SessionStatus:
        """Where the session stands now."""


SessionFactory = Callable[[PeerRuntime, IPAddress], Session]
"""Builds a (not yet started) session for a peer and a router ID."""
