"""The reconciler: one thread, the only writer to the sessions. Level-triggered.

Anything that may change the outcome calls ``mark_dirty()``. The thread wakes up and
runs one pass, which reads top to bottom (``reconcile_once``): snapshot of the store
-> decision -> sessions for this node -> plan (desired routes, hold-down, diff) ->
changes applied to the sessions -> acknowledgements recorded and logged. Bursts
coalesce by themselves: changes that arrive during a pass only set the flag again.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from bgpspeaker.bfd.client import session_spec
from bgpspeaker.cluster.model import Snapshot
from bgpspeaker.cluster.store import ClusterStore
from bgpspeaker.config import SpeakerConfig
from bgpspeaker.decision import decide
from bgpspeaker.journal import Journal
from bgpspeaker.memory import return_memory
from bgpspeaker.nodesettings import PeerProblem, node_runtime, peers_for_node, unconditional_peers
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.plan import Plan, Planner
from bgpspeaker.routes import Attributes, IPAddress, Prefix, Reason, RouteKey, Unknown, Withdrawal, WithdrawReason
from bgpspeaker.session import SessionFactory, SessionStatus
from bgpspeaker.sessions import Applied, Sessions

__all__ = ["MAX_CONSECUTIVE_FAILURES", "RETRY_S", "Reconciler"]

log = structlog.get_logger("bgpspeaker.reconciler")

RESYNC_INTERVAL_S = 300.0
"""A full pass runs at least this often, as a safety net. Nothing depends on it: every
change marks the state dirty, and routes a failed command left unknown are retried on
their own schedule (``RETRY_S``). Kept long so an idle speaker with 10,000 services
costs no CPU to speak of."""
MAX_CONSECUTIVE_FAILURES = 5
"""Passes in a row that may raise before the process gives up (and exits by its shutdown path)."""
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Delays before re-sending routes left unknown (a command failed or went unacknowledged)."""
GC_FREEZE_ROUTES = 1000
"""A pass that sends this many routes is followed by ``gc.freeze()`` (once): the store,
the memo and the acknowledged routes live as long as the process, and the cyclic GC
would rescan them every pass (measured 300 -> 40 ms a pass at 10,000 services)."""


class BfdLink(Protocol):
    """The BFD sessions as the reconciler sees them (``bgpspeaker.bfd.client.BfdClient``)."""

    def want(self, sessions: Mapping[str, dict[str, Any]]) -> None:
        """Exactly these BFD sessions (peer -> session spec)."""

    def blocked(self) -> frozenset[str]:
        """Peers whose BGP session must be down now (BFD Down after Up)."""

    def reconnect_now(self) -> frozenset[str]:
        """Peers whose BFD came Up while BGP was let go without it (once each)."""


class Reconciler:
    """The loop that converges the sessions on the decision, and its state between passes."""

    def __init__(
        self,
        config: SpeakerConfig,
        runtimes: Mapping[str, PeerRuntime],
        *,
        router_id: IPAddress,
        node_name: str,
        store: ClusterStore,
        session_factory: SessionFactory,
        retry_s: Sequence[float] = RETRY_S,
        bfd: BfdLink | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        """``sessions``: the sessions started before this reconciler existed (the entry point
        starts some before the Kubernetes client is imported: bgpspeaker.earlystart), made
        by ``session_factory``; the reconciler owns them from here on."""
        self._bfd = bfd
        self._config, self._runtimes, self._router_id = config, dict(runtimes), router_id
        self._pending: tuple[SpeakerConfig, dict[str, PeerRuntime], IPAddress] | None = None
        self._node_name = node_name
        self._store = store
        self._retry_s = tuple(retry_s)
        """Delays before re-sending unknown routes, and before retrying a pass that raised."""
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._dirty.set()  # the store may have synced before this reconciler existed
        self._stop = threading.Event()
        self.sessions = sessions if sessions is not None else Sessions(session_factory)
        self.journal = Journal()
        self._planner = Planner(config.hold_down)
        self._completed = False
        """The last pass ran to its end (otherwise the next one starts the caches over)."""
        self._frozen = False
        self._deadline: float | None = None
        """Monotonic time of the next timed change (hold-down expiry, outage grace)."""
        self._retries = 0
        self._retry_at: float | None = None
        self._eor_sent: dict[str, tuple[int, int, int]] = {}
        """Peer -> (session id, generation, up count) its End-of-RIB was sent for."""
        self._failures = 0
        """Passes in a row that raised (see ``_recover``)."""
        self.internal_errors = 0
        """Passes that raised since start (``bgpspeaker_internal_errors_total{thread="reconciler"}``)."""
        self.passes = 0
        self.incremental_passes = 0
        """Passes that looked only at the changed routes (the rest were full passes)."""
        self.on_pass: Callable[[float], None] = lambda _seconds: None
        """Called with each pass's duration (metrics)."""
        self._peer_problems: frozenset[PeerProblem] = frozenset()
        """Peers selecting this node that it cannot run (logged once while they last)."""
        self._node_runtimes: Mapping[str, PeerRuntime] = self._runtimes
        """The runtimes with this node's overrides, last handed to the planner."""

    # -- called from other threads ----------------------------------------------------

    def mark_dirty(self) -> None:
        """Something changed; a pass will follow."""
        self._dirty.set()

    def stop(self) -> None:
        """Ask the loop to finish its pass and return."""
        self._stop.set()
        self._dirty.set()

    def request_config(self, config: SpeakerConfig, runtimes: Mapping[str, PeerRuntime], router_id: IPAddress) -> None:
        """Apply a new (validated, resolved) config at the start of the next pass."""
        with self._lock:
            self._pending = (config, dict(runtimes), router_id)
        self._dirty.set()

    @property
    def config(self) -> SpeakerConfig:
        """The config in force."""
        return self._config

    @property
    def latest_config(self) -> SpeakerConfig:
        """The config the next pass runs with: the last one requested, else the one in force."""
        with self._lock:
            return self._pending[0] if self._pending is not None else self._config

    def statuses(self) -> dict[str, SessionStatus]:
        """Each running session's status, by peer name."""
        return self.sessions.statuses()

    @property
    def acknowledged(self) -> Mapping[RouteKey, Attributes | Unknown]:
        """What the sessions confirmed (a copy)."""
        return dict(self.sessions.acknowledged)

    @property
    def updates_sent(self) -> dict[str, int]:
        """Peer -> changes sent (a copy, for metrics)."""
        return dict(self.sessions.updates_sent)

    def announced_services(self) -> dict[Prefix, frozenset[str]]:
        """Each acknowledged prefix and the services that want it (a copy)."""
        acked = {prefix for _, prefix in self.acknowledged}
        services = dict(self.journal.services_by_prefix)
        return {prefix: services.get(prefix, frozenset()) for prefix in acked}

    def start_unconditional_sessions(self) -> None:
        """Before the first sync: start the peers every node has (no nodeSelectors), so their
        sessions come up while the initial lists are still loading."""
        unconditional = unconditional_peers(self._config)
        started = {name: runtime for name, runtime in self._runtimes.items() if name in unconditional}
        if self._bfd is not None:
            self._bfd.want(bfd_sessions(started))  # BFD comes up with them, not after the lists
        running = self.sessions.names()
        for name, runtime in started.items():
            router_id = runtime.peer.router_id or self._router_id
            if name in running:  # started early: kept unless the full load resolved it differently
                self.sessions.restart_if_changed(name, runtime, router_id)
            else:
                self.sessions.start(name, runtime, router_id)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stopped: wait for a change (or a timer), then converge."""
        waiting_logged = False
        while not self._stop.is_set():
            timeout = RESYNC_INTERVAL_S
            for at in (self._deadline, self._retry_at):
                if at is not None:
                    timeout = max(0.0, min(timeout, at - time.monotonic()))
            self._dirty.wait(timeout)
            if self._stop.is_set():
                return
            self._dirty.clear()
            if not self._store.synced:
                if not waiting_logged:
                    log.info("waiting_for_initial_sync")
                    waiting_logged = True
                continue
            try:
                self.reconcile_once()
                self._failures = 0
            except Exception as error:  # noqa: BLE001  # last-resort guard: a bug must not cost the routes
                self._recover(error)

    def reconcile_once(self) -> None:
        """One pass: snapshot -> decision -> sessions -> plan -> apply -> acknowledgements."""
        started = time.monotonic()
        self._begin_pass(started)
        snapshot = self._store.snapshot()
        decision = decide(snapshot, self._config, self._node_name, memo=self._planner.memo)
        self.journal.verdict_problems(decision, self._planner.memo)
        runtimes = self._converge_sessions(snapshot)
        ready = self.sessions.ready()
        plan = self._planner.plan(
            decision,
            snapshot,
            runtimes=runtimes,
            sessions=self.sessions,
            ready=ready,
            api_outage=self._config.api_outage,
            outage_since=self._store.outage_since,
            services_by_prefix=self.journal.services_by_prefix,
        )
        applied = self.sessions.apply(plan.changes)
        self.journal.routes(
            applied.announced,
            applied.withdrawn,
            decision=decision,
            snapshot=snapshot,
            forced_reason=plan.forced_reason,
            by_service=plan.by_service,
        )
        self.sessions.end_of_rib(ready, self._eor_sent)
        self.journal.remember(
            decision, self._planner.memo, applied.withdrawn, self.sessions.acknowledged, self.sessions.names()
        )
        self._planner.settled(plan, self.sessions.acknowledged)
        self._end_pass(started, plan, applied, ready)

    # -- around a pass -----------------------------------------------------------------

    def _begin_pass(self, started: float) -> None:
        if self._retry_at is not None and self._retry_at <= started:
            self._retry_at = None  # this pass is the retry; a new failure schedules the next
        self._apply_pending_config()
        if self.passes == 0:
            # The first pass after the initial lists: what exists now (the client's
            # modules, the listed objects) lives as long as the process. Without this the
            # cyclic GC rescans it all, many times, while the first decision allocates
            # (10,000 services: first decision 1.1 s -> see docs/performance.md).
            gc.freeze()
        if not self._completed:  # first pass, or the last one failed midway: start over
            self._planner.start_over()
        self._completed = False

    def _end_pass(self, started: float, plan: Plan, applied: Applied, ready: set[str]) -> None:
        self._deadline = plan.deadline
        if applied.unconfirmed:
            # Not at once: a change the session keeps refusing must not become a hot loop.
            self._retry_at = time.monotonic() + self._retry_s[min(self._retries, len(self._retry_s) - 1)]
            self._retries += 1
        elif applied.commands:
            self._retries, self._retry_at = 0, None
        self._completed = True
        self.passes += 1
        self.incremental_passes += plan.incremental
        self.on_pass(time.monotonic() - started)
        if applied.routes >= GC_FREEZE_ROUTES:
            return_memory()  # a big pass frees a lot; give it back instead of keeping the peak
            if not self._frozen:
                gc.freeze()
                self._frozen = True
        (log.info if applied.commands else log.debug)(
            "reconcile_finished",
            desired=len(plan.desired),
            acknowledged=len(self.sessions.acknowledged),
            commands=applied.commands,
            sessions_ready=len(ready),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _recover(self, error: Exception) -> None:
        """A pass raised (a bug: bad input is handled where it is parsed). Log and count it,
        forget what the pass may have left half-done, and try again after a delay; after
        ``MAX_CONSECUTIVE_FAILURES`` in a row, re-raise so the process leaves through its
        normal shutdown path instead of looping on the same bug."""
        self.internal_errors += 1
        self._failures += 1
        delay = self._retry_s[min(self._failures - 1, len(self._retry_s) - 1)]
        log.error(
            "internal_error",
            thread="reconciler",
            error=f"{type(error).__name__}: {str(error)[:300]}",
            consecutive=self._failures,
            retry_in_s=delay if self._failures < MAX_CONSECUTIVE_FAILURES else None,
            exc_info=True,
        )
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            raise error
        # The next pass starts over (caches) and resends every route it knew of: a change
        # the failed pass applied but never recorded is then not left wrong.
        self._completed = False
        self.sessions.forget_confirmations()
        self._retry_at = time.monotonic() + delay

    # -- config and sessions -----------------------------------------------------------

    def _apply_pending_config(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old_names = set(self._runtimes)
        self._config, self._runtimes, self._router_id = pending
        self._planner.configure(self._config.hold_down)
        new_names = set(self._runtimes)
        log.info(
            "config_applied",
            peers_added=sorted(new_names - old_names),
            peers_removed=sorted(old_names - new_names),
            advertisements=[a.name for a in self._config.advertisements],
        )

    def _converge_sessions(self, snapshot: Snapshot) -> Mapping[str, PeerRuntime]:
        """Start, restart or stop sessions so that exactly the peers selecting this node run,
        with this node's settings (bgpspeaker.nodesettings)."""
        node = snapshot.nodes.get(self._node_name)
        labels = node.labels if node is not None else {}
        chosen = peers_for_node(self._config, labels)
        self._log_peer_problems(frozenset(chosen.problems))
        wanted = {
            name: node_runtime(self._runtimes[name], node_peer, self._router_id)
            for name, node_peer in chosen.peers.items()
            if name in self._runtimes
        }
        blocked, reconnect = frozenset[str](), frozenset[str]()
        if self._bfd is not None:
            self._bfd.want(bfd_sessions({name: runtime for name, (runtime, _) in wanted.items()}))
            blocked, reconnect = self._bfd.blocked(), self._bfd.reconnect_now()
        for name in sorted(self.sessions.names()):
            if name in blocked:
                self._bfd_down(name)
                continue
            found = wanted.get(name)
            if found is None:
                reason: WithdrawReason = (
                    Withdrawal.PEER_REMOVED if name not in self._runtimes else Reason.NODE_NOT_SELECTED
                )
                self._retire(name, reason)
            elif name in reconnect and self.sessions.statuses()[name].state == "down":
                log.info("session_restarting", peer=name, reason="bfd_up")  # connect now, not at the next retry
                self.sessions.stop(name, timeout_s=1.0)
                self.sessions.start(name, *found)
            else:
                self.sessions.restart_if_changed(name, *found)
        for name, (runtime, router_id) in wanted.items():
            if name not in self.sessions.names() and name not in blocked:
                self.sessions.start(name, runtime, router_id)
        return self._node_runtimes_for({name: runtime for name, (runtime, _) in wanted.items()})

    def _node_runtimes_for(self, adjusted: Mapping[str, PeerRuntime]) -> Mapping[str, PeerRuntime]:
        """The runtimes with this node's overrides (next hops), as the same object while they
        do not change: the planner rebuilds its routes when it gets another one."""
        if all(runtime is self._runtimes[name] for name, runtime in adjusted.items()):
            self._node_runtimes = self._runtimes
        else:
            merged = {**self._runtimes, **adjusted}
            if merged != self._node_runtimes:
                self._node_runtimes = merged
        return self._node_runtimes

    def _log_peer_problems(self, problems: frozenset[PeerProblem]) -> None:
        """Each peer this node cannot run: one error when it starts, one line when it ends."""
        for problem in sorted(problems - self._peer_problems, key=lambda p: p.peers):
            log.error(problem.event, node=self._node_name, peers=list(problem.peers), detail=problem.detail)
        for problem in sorted(self._peer_problems - problems, key=lambda p: p.peers):
            log.info(f"{problem.event}_resolved", node=self._node_name, peers=list(problem.peers))
        self._peer_problems = problems

    def _bfd_down(self, name: str) -> None:
        """BFD says the path to this peer is gone: close its BGP session now (no withdraw:
        nothing would arrive). It starts again once BFD is Up."""
        routes = sum(1 for peer, _ in self.sessions.acknowledged if peer == name)
        log.warning("session_stopping", peer=name, reason=str(Withdrawal.BFD_DOWN), routes=routes)
        self.sessions.stop(name, timeout_s=1.0)

    def _retire(self, name: str, reason: WithdrawReason) -> None:
        """Withdraw what this session announced (so a router with graceful restart does not
        keep it as stale), then stop it."""
        changes = self.sessions.withdraw_everything([name])
        if changes:
            applied = self.sessions.apply(changes)
            self.journal.withdrawn(applied.withdrawn, peers=applied.withdrawn, reason=reason)
        log.info("session_stopping", peer=name, reason=str(reason))
        self.sessions.stop(name, timeout_s=2.0)


def bfd_sessions(runtimes: Mapping[str, PeerRuntime]) -> dict[str, dict[str, Any]]:
    """The BFD sessions for the peers that name a BFD profile and have a source address."""
    sessions = {}
    for name, runtime in runtimes.items():
        peer = runtime.peer
        if peer.bfd is None or peer.source_address is None:
            continue
        sessions[name] = session_spec(
            name,
            local=str(peer.source_address),
            remote=str(peer.peer_address),
            profile=peer.bfd,
            multihop=peer.ebgp_multihop is not None,
        )
    return sessions
