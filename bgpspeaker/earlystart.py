"""ExaBGP started before the Kubernetes client is imported (the entry point's first step).

The Kubernetes client's imports cost ~0.15-0.18 s of CPU; ExaBGP's own start (a Python
process importing ExaBGP) ~0.2 s. At 1,000 Services both are on the critical path of a
cold start, one after the other. Started first, ExaBGP's start runs on the other core
while the daemon imports the client and lists.

Only a peer that needs neither this node's labels nor the API server can start this
early: no ``nodeSelectors``, no ``nodeOverrides`` entry that concerns it
(``nodesettings.unconditional_peers``), and no ``passwordSecret``. The others start as
before, once the client exists. Nothing is announced any earlier: the reconciler still
waits for every kind's initial list. The full load that follows (``Reconciler
.start_unconditional_sessions``) keeps a session started here unless its peer resolved
differently by then (a changed file, a changed route), in which case it is restarted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import structlog

from bgpspeaker.config import PeerConfig, SpeakerConfig
from bgpspeaker.errors import ConfigError
from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
from bgpspeaker.nodesettings import unconditional_peers
from bgpspeaker.peers import PeerRuntime, resolve_peers
from bgpspeaker.routes import IPAddress
from bgpspeaker.sessions import Sessions

__all__ = ["SPAWN_WAIT_S", "EarlyStart", "early_peers"]

log = structlog.get_logger("bgpspeaker")

SPAWN_WAIT_S = 1.0
"""The longest the entry point waits for the early ExaBGP processes to exist before it
imports the Kubernetes client (a spawn takes a few ms; this only bounds a stuck one)."""

SupervisorFactory = Callable[[PeerRuntime, IPAddress], ExabgpSupervisor]


def early_peers(config: SpeakerConfig) -> tuple[PeerConfig, ...]:
    """The peers whose ExaBGP can start before the API server is reached: every node runs
    them as configured (no nodeSelectors, no override) and no passwordSecret keys them."""
    unconditional = unconditional_peers(config)
    return tuple(peer for peer in config.peers if peer.name in unconditional and peer.password_secret is None)


class EarlyStart:
    """Builds the sessions (``factory`` for ``Sessions``) and starts the early ones.

    It remembers the supervisors it made until ``start`` returns, to wait for their
    processes; later sessions (the reconciler's) are only passed through."""

    def __init__(self, make: SupervisorFactory) -> None:
        self._make = make
        self._made: list[ExabgpSupervisor] | None = []

    def factory(self, runtime: PeerRuntime, router_id: IPAddress) -> ExabgpSupervisor:
        """A new supervisor (``SessionFactory``)."""
        supervisor = self._make(runtime, router_id)
        if self._made is not None:
            self._made.append(supervisor)
        return supervisor

    def start(self, config: SpeakerConfig, sessions: Sessions, *, spawn_wait_s: float = SPAWN_WAIT_S) -> list[str]:
        """Start the sessions of ``early_peers(config)`` and return once each one's ExaBGP
        process exists (at most ``spawn_wait_s``); the names started. Resolving them without
        the API server: a problem (an unreadable passwordFile, no router ID) starts none,
        and the full load reports it."""
        try:
            return self._start(config, sessions, spawn_wait_s)
        finally:
            self._made = None

    def _start(self, config: SpeakerConfig, sessions: Sessions, spawn_wait_s: float) -> list[str]:
        peers = early_peers(config)
        if not peers:
            return []
        try:
            _, runtimes, facts = resolve_peers(dataclasses.replace(config, peers=peers))
        except (ConfigError, OSError):
            return []
        router_id = config.router_id or facts.primary_ipv4
        if router_id is None:
            return []
        for name, runtime in runtimes.items():
            sessions.start(name, runtime, runtime.peer.router_id or router_id)
        _wait_spawned(self._made or [], spawn_wait_s)
        log.info("sessions_started_early", peers=list(runtimes))
        return list(runtimes)


def _wait_spawned(supervisors: Iterable[ExabgpSupervisor], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for supervisor in supervisors:
        supervisor.wait_spawned(max(0.0, deadline - time.monotonic()))
