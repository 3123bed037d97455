"""Leaving: drain (RFC 8326), withdraw everything, stop the sessions, within a budget.

Runs on the main thread once the reconciler's thread has stopped, so it is still the
only writer to the sessions.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import structlog

from bgpspeaker.config import ShutdownConfig
from bgpspeaker.journal import Journal
from bgpspeaker.routes import Attributes, Prefix, Withdrawal, prefix_order
from bgpspeaker.session import RouteChange
from bgpspeaker.sessions import Sessions, chunks

__all__ = ["GRACEFUL_SHUTDOWN", "SHUTDOWN_BUDGET_S", "drain", "shut_down", "withdraw_all"]

log = structlog.get_logger("bgpspeaker")

GRACEFUL_SHUTDOWN = "65535:0"
"""RFC 8326's well-known GRACEFUL_SHUTDOWN community."""
SHUTDOWN_BUDGET_S = 8.0
"""SIGTERM to exit: under the 10 s the kubelet and our promise allow."""
ACK_TIMEOUT_S = 3.0
"""How long a shutdown waits for each session's acknowledgements."""


def drain(sessions: Sessions, *, local_pref: int | None, ack_timeout_s: float) -> int:
    """RFC 8326: re-announce every acknowledged route with GRACEFUL_SHUTDOWN (65535:0) and,
    on iBGP sessions when configured, a lower local-pref, so the routers move traffic
    away before the withdraw. Returns how many prefixes were re-announced."""
    ready = sessions.ready()
    statuses = sessions.statuses()
    grouped: dict[tuple[str, Attributes], list[Prefix]] = {}
    for (peer, prefix), attributes in sessions.acknowledged.items():
        if peer not in ready or not isinstance(attributes, Attributes):
            continue
        ebgp = statuses[peer].runtime.peer.ebgp
        communities = attributes.communities
        if GRACEFUL_SHUTDOWN not in communities:
            communities = (*communities, GRACEFUL_SHUTDOWN)
        drained = dataclasses.replace(
            attributes,
            communities=communities,
            local_pref=local_pref if local_pref is not None and not ebgp else attributes.local_pref,
        )
        grouped.setdefault((peer, drained), []).append(prefix)
    changes: dict[str, list[RouteChange]] = {}
    for (peer, attributes), prefixes in grouped.items():
        changes.setdefault(peer, []).extend(
            RouteChange(attributes, chunk) for chunk in chunks(sorted(prefixes, key=prefix_order))
        )
    applied = sessions.apply(changes, ack_timeout_s=ack_timeout_s)
    log.info("drain_started", routes=sum(len(p) for p in applied.announced.values()), community=GRACEFUL_SHUTDOWN)
    return len(applied.announced)


def withdraw_all(sessions: Sessions, journal: Journal, *, ack_timeout_s: float) -> int:
    """Withdraw every acknowledged route (shutdown). Returns how many remain unconfirmed."""
    applied = sessions.apply(sessions.withdraw_everything(sessions.names()), ack_timeout_s=ack_timeout_s)
    remaining = {prefix for _, prefix in sessions.acknowledged}
    journal.withdrawn(
        sorted(remaining | set(applied.withdrawn), key=prefix_order),
        peers=applied.withdrawn,
        reason=Withdrawal.SHUTDOWN,
        confirmed={prefix for prefix in applied.withdrawn if prefix not in remaining},
    )
    return len(sessions.acknowledged)


def shut_down(
    sessions: Sessions,
    journal: Journal,
    *,
    shutdown: ShutdownConfig,
    reconciler_stopped: bool,
    interrupted: threading.Event,
    started: float,
    bfd_admin_down: Callable[[], object] = lambda: None,
) -> int:
    """The routes by ``shutdown.mode``, then the sessions; returns the routes not confirmed
    withdrawn. ``reconciler_stopped`` False: it is stuck in a command and a second writer
    would race it, so the routes are left to the sessions' closing."""
    if not reconciler_stopped:
        log.error("shutdown_withdraw_skipped", reason="reconciler_busy")
        remaining = len(sessions.acknowledged)
    elif shutdown.mode == "keep":
        remaining = len(sessions.acknowledged)
        log.info("routes_kept", routes=remaining, hint="left to the routers' graceful restart")
        # BGP closes first (the router keeps the routes as stale), then BFD says AdminDown:
        # FRR 8.4 treats AdminDown as Down and would otherwise reset an Established session
        # with a NOTIFICATION, which flushes (docs/bfd.md).
        sessions.stop_all(timeout_s=max(1.0, SHUTDOWN_BUDGET_S - (time.monotonic() - started) - 1.0))
        bfd_admin_down()
        return remaining
    else:
        if shutdown.mode == "drain" and drain(
            sessions, local_pref=shutdown.drain_local_pref, ack_timeout_s=ACK_TIMEOUT_S
        ):
            drain_started = time.monotonic()
            cut_short = interrupted.wait(shutdown.drain_seconds)
            log.info("drain_finished", waited_s=round(time.monotonic() - drain_started, 1), interrupted=cut_short)
            started = time.monotonic()  # the stop budget below starts after the drain
        remaining = withdraw_all(sessions, journal, ack_timeout_s=ACK_TIMEOUT_S)
    bfd_admin_down()  # the routes went first
    sessions.stop_all(timeout_s=max(1.0, SHUTDOWN_BUDGET_S - (time.monotonic() - started) - 1.0))
    return remaining
