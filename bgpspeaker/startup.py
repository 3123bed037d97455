"""What the daemon starts before it imports the Kubernetes client (a cold start's ordering).

A cold start is a chain: Python and the imports, the network probe (a child process),
ExaBGP's start and session set-up, the initial lists, the first decision. The probe
needs only the config file, so it starts first and runs on the other core while the
client's modules import (~0.2 s each); ExaBGP, which needs its answer, then starts as
soon as the client is ready. See docs/performance.md, "Cold start, round 2".
"""

from __future__ import annotations

import dataclasses

from bgpspeaker.config import SpeakerConfig
from bgpspeaker.netinfo import StartedProbe, start_probe

__all__ = ["Early", "start_early"]


@dataclasses.dataclass(slots=True)
class Early:
    """Work begun before the imports; each piece is taken once by whoever needs it."""

    probe: StartedProbe | None

    def take(self) -> StartedProbe | None:
        """The started probe (None if it could not start: the first load probes itself
        and reports why)."""
        taken, self.probe = self.probe, None
        return taken

    def discard(self) -> None:
        """Reap what nobody took (an early exit)."""
        if self.probe is not None:
            self.probe.discard()
            self.probe = None


def start_early(config: SpeakerConfig) -> Early:
    """Start the network probe for ``config``'s peers; never raises (the load that follows
    reports any failure with the config's words)."""
    try:
        return Early(start_probe([str(peer.peer_address) for peer in config.peers]))
    except OSError:
        return Early(None)
