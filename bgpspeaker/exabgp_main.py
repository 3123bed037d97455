"""Start ExaBGP, with one setting it lacks and one copy it does not need.

- Keepalive interval: ExaBGP 5.0.15 always sends keepalives every third of the
  negotiated hold time. When ``BGPSPEAKER_KEEPALIVE`` is set (seconds), keepalives go
  out every ``min(that, negotiated hold time / 3)`` seconds instead, FRR's rule for a
  configured keepalive.
- Per-route copy: ``Neighbor.remove_self`` deep-copies every API route before looking
  at its next hop, so one change can be given to several neighbors. bgpspeaker runs
  one ExaBGP per peer (one neighbor) and sends explicit next hops, so the copy only
  burns CPU (measured ~45% of ExaBGP's time on a bulk announce). With
  ``BGPSPEAKER_NO_ROUTE_COPY=1`` a route whose next hop is explicit is passed on
  as is; ``next-hop self`` routes are still copied, as upstream does.

- Nagle's algorithm: ExaBGP disables it on sessions it accepts but not on those it
  opens (the call is commented out in ``outgoing.py``), and bgpspeaker only opens
  them. With Nagle on, an UPDATE written while an earlier small segment is still
  unacknowledged waits for the router's delayed ACK: measured as a second mode ~60 ms
  slower in FRR's time to best path. ``BGPSPEAKER_NODELAY=1`` sets TCP_NODELAY on
  outgoing sessions too, as FRR, BIRD and GoBGP do.

Everything else is ExaBGP's own ``main``, unchanged.

Run as ``python -m bgpspeaker.exabgp_main server CONFIG`` by the supervisor.
"""

from __future__ import annotations

import os


def _patch_keepalive(interval_s: int) -> None:
    from exabgp.bgp.message.open.holdtime import HoldTime

    derived = HoldTime.keepalive

    def keepalive(self: HoldTime) -> int:
        negotiated = int(derived(self))
        return min(negotiated, interval_s) if negotiated else 0

    HoldTime.keepalive = keepalive


def _skip_route_copy() -> None:
    from exabgp.bgp.neighbor import Neighbor

    copying = Neighbor.remove_self

    def remove_self(self: Neighbor, change: object) -> object:
        if not change.nlri.nexthop.SELF:  # type: ignore[attr-defined]
            return change  # one neighbor per process: nobody else will see this change
        return copying(self, change)

    Neighbor.remove_self = remove_self


def _no_delay() -> None:
    import socket

    from exabgp.reactor.network.outgoing import Outgoing

    setup = Outgoing._setup

    def _setup(self: Outgoing) -> object:
        problem = setup(self)
        if problem is None and self.io is not None:
            self.io.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return problem

    Outgoing._setup = _setup


def main() -> None:
    """Apply the settings, then hand over to ExaBGP."""
    if os.environ.get("BGPSPEAKER_NODELAY") == "1":
        _no_delay()
    interval = os.environ.get("BGPSPEAKER_KEEPALIVE", "")
    if interval.isdigit() and int(interval) > 0:
        _patch_keepalive(int(interval))
    if os.environ.get("BGPSPEAKER_NO_ROUTE_COPY") == "1":
        _skip_route_copy()
    from exabgp.application.main import main as exabgp_main

    exabgp_main()


if __name__ == "__main__":
    main()
