"""Start ExaBGP, with one setting it lacks: the keepalive interval.

ExaBGP 5.0.15 always sends keepalives every third of the negotiated hold time. When
``BGPSPEAKER_KEEPALIVE`` is set (seconds), keepalives go out every
``min(that, negotiated hold time / 3)`` seconds instead, FRR's rule for a configured
keepalive. Everything else is ExaBGP's own ``main``, unchanged.

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


def main() -> None:
    """Apply the keepalive setting, then hand over to ExaBGP."""
    interval = os.environ.get("BGPSPEAKER_KEEPALIVE", "")
    if interval.isdigit() and int(interval) > 0:
        _patch_keepalive(int(interval))
    from exabgp.application.main import main as exabgp_main

    exabgp_main()


if __name__ == "__main__":
    main()
