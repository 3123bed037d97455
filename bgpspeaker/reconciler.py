"""The reconciler: the only writer to ExaBGP, and the owner of the sessions. Level-triggered.

Anything that may change the outcome calls ``mark_dirty()``. One thread wakes up,
takes a snapshot of the store, applies a pending config, starts or stops the per-peer
ExaBGP sessions this node should have, runs the decision, diffs the desired routes
against what each session acknowledged, and sends only the difference as bulk
commands (sessions in parallel). Bursts coalesce by themselves: changes that arrive
during a pass only set the flag again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog

from bgpspeaker.commands import announce_line, batches, eor_line, withdraw_line
from bgpspeaker.config import SpeakerConfig
from bgpspeaker.decision import Announcement, Decision, DecisionMemo, decide
from bgpspeaker.diff import diff
from bgpspeaker.errors import ExabgpUnavailable
from bgpspeaker.exabgp import ExabgpSupervisor, session_fingerprint
from bgpspeaker.holddown import HoldDown
from bgpspeaker.kube import ClusterStore, return_memory
from bgpspeaker.model import Snapshot
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import (
    UNKNOWN,
    Attributes,
    IPAddress,
    Prefix,
    Reason,
    RouteKey,
    Unknown,
    Verdict,
    Withdrawal,
    WithdrawReason,
    prefix_order,
)
from bgpspeaker.values import matches_any

__all__ = ["Reconciler", "desired_routes", "verdicts_by_service", "withdraw_reason"]

log = structlog.get_logger("bgpspeaker.reconciler")

GRACEFUL_SHUTDOWN = "65535:0"
"""RFC 8326's well-known GRACEFUL_SHUTDOWN community."""
_ENDPOINT_REASONS = frozenset({Reason.NO_LOCAL_ENDPOINTS, Reason.NO_ENDPOINTS})

RESYNC_INTERVAL_S = 300.0
"""A full pass runs at least this often, as a safety net. Nothing depends on it: every
change marks the state dirty, and routes a failed command left unknown are retried on
their own schedule (``RETRY_S``). Kept long so an idle speaker with 10,000 services
costs no CPU to speak of."""
MAX_CONSECUTIVE_FAILURES = 5
"""Passes in a row that may raise before the process gives up (and exits by its shutdown path)."""
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Delays before re-sending routes left unknown (a command failed or went unacknowledged)."""

SessionFactory = Callable[[PeerRuntime, IPAddress], ExabgpSupervisor]
"""Builds a (not yet started) session for a peer and a router ID."""


def desired_routes(decision: Decision, runtimes: Mapping[str, PeerRuntime]) -> dict[RouteKey, Attributes]:
    """Every (peer, prefix) the decision wants, with its attributes and the session's next hop."""
    desired: dict[RouteKey, Attributes] = {}
    for prefix, announcement in decision.announcements.items():
        desired.update(_prefix_routes(prefix, announcement, runtimes))
    return desired


def _prefix_routes(
    prefix: Prefix, announcement: Announcement, runtimes: Mapping[str, PeerRuntime]
) -> list[tuple[RouteKey, Attributes]]:
    """One prefix's routes, each with its session's next hop for the prefix's family."""
    routes = []
    for peer, attributes in announcement.routes.items():
        runtime = runtimes.get(peer)
        hop = runtime.next_hops.get(prefix.version) if runtime is not None else None
        routes.append(((peer, prefix), _with_next_hop(attributes, hop) if hop else attributes))
    return routes


class _DesiredCache:
    """``desired_routes`` kept up to date from one decision to the next.

    When the decision says which prefixes changed (``Decision.changed``), only their
    routes are rebuilt; otherwise each prefix's routes are reused while its
    Announcement is the very same object (the decision memo keeps untouched ones) and
    the runtimes are too."""

    def __init__(self) -> None:
        self._runtimes: Mapping[str, PeerRuntime] | None = None
        self._entries: dict[Prefix, tuple[Announcement, list[tuple[RouteKey, Attributes]]]] = {}
        self.desired: dict[RouteKey, Attributes] = {}

    def update(self, decision: Decision, runtimes: Mapping[str, PeerRuntime]) -> set[RouteKey] | None:
        """Bring ``desired`` up to ``decision``: the routes that may have changed, or None
        when any may have (then everything was rebuilt)."""
        if runtimes is not self._runtimes or decision.changed is None:
            self._rebuild(decision, runtimes)
            return None
        touched: set[RouteKey] = set()
        for prefix in decision.changed:
            old = self._entries.pop(prefix, None)
            if old is not None:
                for key, _ in old[1]:
                    del self.desired[key]
                    touched.add(key)
            announcement = decision.announcements.get(prefix)
            if announcement is not None:
                routes = _prefix_routes(prefix, announcement, runtimes)
                self._entries[prefix] = (announcement, routes)
                self.desired.update(routes)
                touched.update(key for key, _ in routes)
        return touched

    def _rebuild(self, decision: Decision, runtimes: Mapping[str, PeerRuntime]) -> None:
        if runtimes is not self._runtimes:
            self._runtimes, self._entries = runtimes, {}
        desired: dict[RouteKey, Attributes] = {}
        entries: dict[Prefix, tuple[Announcement, list[tuple[RouteKey, Attributes]]]] = {}
        for prefix, announcement in decision.announcements.items():
            cached = self._entries.get(prefix)
            if cached is not None and cached[0] is announcement:
                routes = cached[1]
            else:
                routes = _prefix_routes(prefix, announcement, runtimes)
            entries[prefix] = (announcement, routes)
            desired.update(routes)
        self._entries, self.desired = entries, desired


_WITH_HOP: dict[tuple[Attributes, IPAddress], Attributes] = {}


def _with_next_hop(attributes: Attributes, hop: IPAddress) -> Attributes:
    """``attributes`` with ``hop`` as next hop: one shared object per pair, not one per route."""
    found = _WITH_HOP.get((attributes, hop))
    if found is None:
        if len(_WITH_HOP) > 4096:
            _WITH_HOP.clear()
        found = _WITH_HOP[(attributes, hop)] = dataclasses.replace(attributes, next_hop=hop)
    return found


def _conflicts(decision: Decision) -> Sequence[Verdict]:
    """The conflict verdicts (they come last), without walking the others."""
    first = len(decision.verdicts)
    while first and decision.verdicts[first - 1].reason is Reason.CONFLICTING_ADVERTISEMENTS:
        first -= 1
    return decision.verdicts[first:]


def verdicts_by_service(decision: Decision) -> Mapping[str, Sequence[Verdict]]:
    """Verdicts by service, conflicts included (looking them up per route would be quadratic)."""
    by_service: dict[str, Sequence[Verdict]]
    if decision.by_service is not None:  # the memo's own index: only the conflicts to add
        conflicts = _conflicts(decision)
        if not conflicts:
            return decision.by_service  # read-only here: no 10,000-entry copy per pass
        by_service = dict(decision.by_service)
        for verdict in conflicts:
            by_service[verdict.service] = [*by_service.get(verdict.service, ()), verdict]
        return by_service
    by_service = {}
    for verdict in decision.verdicts:
        found = by_service.setdefault(verdict.service, [])
        assert isinstance(found, list)
        found.append(verdict)
    return by_service


def withdraw_reason(
    prefix: Prefix, services: Iterable[str], by_service: Mapping[str, Sequence[Verdict]], snapshot: Snapshot
) -> WithdrawReason:
    """Why ``prefix``, once wanted by ``services``, is no longer announced."""
    for service in sorted(services):
        if service not in snapshot.services:
            return Withdrawal.SERVICE_DELETED
        for verdict in by_service.get(service, ()):
            if verdict.ip is None or verdict.ip in prefix:
                if not verdict.reason.announces:
                    return verdict.reason
        if not any(ip in prefix for ip in snapshot.services[service].ingress_ips):
            return Withdrawal.INGRESS_IP_REMOVED
    return Withdrawal.NOT_DESIRED


def routes_sent(batches_by_peer: Mapping[str, Sequence[_Batch]]) -> int:
    """How many (peer, prefix) a pass sent."""
    return sum(len(batch.prefixes) for batches in batches_by_peer.values() for batch in batches)


@dataclasses.dataclass(frozen=True, slots=True)
class _Batch:
    peer: str
    attributes: Attributes | None
    """None for a withdraw."""
    prefixes: Sequence[Prefix]
    line: str


class Reconciler:
    """Owns the sessions, the acknowledged state and the loop that converges them on the desired one."""

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
    ) -> None:
        self._config = config
        self._retry_s = tuple(retry_s)
        """Delays before re-sending unknown routes, and before retrying a pass that raised."""
        self._runtimes = dict(runtimes)
        self._router_id = router_id
        self._pending: tuple[SpeakerConfig, dict[str, PeerRuntime], IPAddress] | None = None
        self._node_name = node_name
        self._store = store
        self._factory = session_factory
        self._lock = threading.Lock()
        self._sessions: dict[str, ExabgpSupervisor] = {}
        self._dirty = threading.Event()
        self._dirty.set()  # the store may have synced before this reconciler existed
        self._stop = threading.Event()
        self._acked: dict[RouteKey, Attributes | Unknown] = {}
        self._acked_by: dict[str, tuple[ExabgpSupervisor, int]] = {}
        """Peer -> the session and generation its acknowledged routes belong to."""
        self._services_by_prefix: dict[Prefix, frozenset[str]] = {}
        self._warned: dict[tuple[str, str, bool], str] = {}
        """(service, IP, is a conflict) -> the problem last logged for it."""
        self._hold = HoldDown(config.hold_down)
        self._memo = DecisionMemo()
        self._desired = _DesiredCache()
        self._completed = False
        """The last pass ran to its end: the memo, the desired cache and ``_unsettled``
        agree with each other (otherwise the next pass starts them over)."""
        self._settled_under: tuple[object, ...] | None = None
        self._unsettled: set[RouteKey] = set()
        """After the last pass, under ``_settled_under``: every route of a ready session is
        acknowledged as desired except these (refused, unconfirmed). A pass whose only news
        is the decision's changed routes then looks at those and these, not at them all."""
        self._frozen = False
        """``gc.freeze()`` ran after the first pass that sent 1,000+ routes (see there)."""
        self._deadline: float | None = None
        """Monotonic time of the next timed change (hold-down expiry, outage grace)."""
        self._outage_withdrawn = False
        self._retries = 0
        self._retry_at: float | None = None
        self._eor_sent: dict[str, tuple[int, int, int]] = {}
        """Peer -> (session id, generation, up count) its End-of-RIB was sent for."""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="send")
        self._failures = 0
        """Passes in a row that raised (see ``_recover``)."""
        self.internal_errors = 0
        """Passes that raised since start (``bgpspeaker_internal_errors_total{thread="reconciler"}``)."""
        self.passes = 0
        self.incremental_passes = 0
        """Passes that looked only at the changed routes (the rest were full passes)."""
        self.updates_sent: dict[str, int] = {}
        """Peer -> announce/withdraw commands sent (metrics)."""
        self.on_pass: Callable[[float], None] = lambda _seconds: None
        """Called with each pass's duration (metrics)."""
        self.on_route: Callable[[str, Prefix, Sequence[str], Sequence[str], str], None] = (
            lambda _event, _prefix, _peers, _services, _reason: None
        )
        """Called for each route_announced / route_withdrawn (Kubernetes Events)."""
        self.thread = threading.Thread(target=self.run, name="reconciler", daemon=True)

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
    def sessions(self) -> dict[str, ExabgpSupervisor]:
        """The running sessions by peer name (a copy)."""
        with self._lock:
            return dict(self._sessions)

    @property
    def acknowledged(self) -> Mapping[RouteKey, Attributes | Unknown]:
        """What the sessions confirmed (a copy)."""
        return dict(self._acked)

    def announced_services(self) -> dict[Prefix, frozenset[str]]:
        """Each acknowledged prefix and the services that want it (a copy)."""
        acked = {prefix for _, prefix in dict(self._acked)}
        services = dict(self._services_by_prefix)
        return {prefix: services.get(prefix, frozenset()) for prefix in acked}

    def start_unconditional_sessions(self) -> None:
        """Before the first sync: start the peers every node has (no nodeSelectors), so their
        sessions come up while the initial lists are still loading."""
        for name, runtime in self._runtimes.items():
            if not runtime.peer.node_selectors:
                self._start_session(name, runtime)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stopped: wait for a change (or the resync interval), then converge."""
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
        # The next pass starts over (memo, desired cache) and resends every route it knew
        # of: a command the failed pass sent but never recorded is then not left wrong.
        self._completed = False
        self._settled_under = None
        self._acked = dict.fromkeys(self._acked, UNKNOWN)
        self._retry_at = time.monotonic() + delay

    def reconcile_once(self) -> None:
        """One pass: config, sessions, decide, diff, send, record acknowledgements."""
        started = time.monotonic()
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
            self._memo, self._desired, self._settled_under = DecisionMemo(), _DesiredCache(), None
        self._completed = False
        snapshot = self._store.snapshot()
        decision = decide(snapshot, self._config, self._node_name, memo=self._memo)
        self._log_verdict_problems(decision)
        touched = self._desired.update(decision, self._runtimes)
        desired = self._desired.desired
        self._converge_sessions(snapshot, decision=decision)
        ready = self._ready_peers()
        now = time.monotonic()
        self._deadline = None
        forced_reason: WithdrawReason | None = None
        if self._api_outage_withdraws(now):
            desired, forced_reason = {}, Withdrawal.API_OUTAGE
        by_service = verdicts_by_service(decision)
        settle_key = self._settle_key(ready, forced_reason)
        incremental = (
            touched is not None
            and settle_key == self._settled_under
            and forced_reason is None
            and not (self._hold.config.announce_after_s or self._hold.config.withdraw_after_s)
        )
        if incremental:
            # Same sessions, same config, no hold-down: only the changed routes and the
            # ones left unsettled last time can differ from what is acknowledged.
            assert touched is not None
            self.incremental_passes += 1
            candidates = touched | self._unsettled
            effective = {k: desired[k] for k in candidates if k[0] in ready and k in desired}
            acked_ready = {k: self._acked[k] for k in candidates if k[0] in ready and k in self._acked}
            held: list[RouteKey] = []
        else:
            candidates = None
            acked_ready = {key: value for key, value in self._acked.items() if key[0] in ready}
            effective, hold_deadline, held = self._hold.apply(
                {key: value for key, value in desired.items() if key[0] in ready},
                acked_ready,
                now=now,
                may_delay_announce=lambda key: self._local_only(decision.announcements[key[1]].services, snapshot),
                may_delay_withdraw=lambda key: (
                    forced_reason is None and self._endpoint_flap(key[1], by_service=by_service, snapshot=snapshot)
                ),
            )
            self._soonest(hold_deadline)
        for peer, prefix in held:
            log.info(
                "route_withdraw_held",
                prefix=str(prefix),
                peer=peer,
                services=sorted(self._services_by_prefix.get(prefix, ())),
                hold_s=self._config.hold_down.withdraw_after_s,
            )
        changes = diff(effective, acked_ready)
        batches_by_peer: dict[str, list[_Batch]] = {}
        for (peer, attributes), prefixes in changes.announces.items():
            runtime = self._runtimes[peer]
            for chunk in batches(prefixes):
                line = announce_line(runtime.peer.peer_address, attributes, chunk, my_asn=runtime.peer.my_asn)
                batches_by_peer.setdefault(peer, []).append(_Batch(peer, attributes, chunk, line))
        for peer, prefixes in changes.withdraws.items():
            batches_by_peer.setdefault(peer, []).extend(self._withdraw_batches(peer, prefixes))
        announced, withdrawn = self._send(batches_by_peer)
        self._log_routes(
            announced,
            withdrawn,
            decision=decision,
            snapshot=snapshot,
            forced_reason=forced_reason,
            by_service=by_service,
        )
        self._send_end_of_rib(ready)
        self._remember_services(decision, withdrawn)
        # What is still not acknowledged as wanted (after a full pass: among all routes).
        looked_at = candidates if candidates is not None else effective.keys() | acked_ready.keys()
        self._unsettled = {key for key in looked_at if effective.get(key) != self._acked.get(key)}
        self._settled_under = settle_key
        self._completed = True
        self.passes += 1
        self.on_pass(time.monotonic() - started)
        if routes_sent(batches_by_peer) >= 1000:
            return_memory()  # a big pass frees a lot; give it back instead of keeping the peak
            if not self._frozen:
                # The store, the memo and the acknowledged routes live as long as the
                # process: keep the cyclic GC from rescanning them on every pass
                # (measured 300 -> 40 ms a pass at 10,000 services with the memo).
                gc.freeze()
                self._frozen = True
        commands = sum(len(b) for b in batches_by_peer.values())
        (log.info if commands else log.debug)(
            "reconcile_finished",
            desired=len(desired),
            acknowledged=len(self._acked),
            commands=commands,
            sessions_ready=len(ready),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _settle_key(self, ready: set[str], forced_reason: WithdrawReason | None) -> tuple[object, ...]:
        """What ``_unsettled`` holds under: each ready session and its process generation
        (their acknowledged routes), and the outage policy. A new config or new runtimes
        show up as a decision or desired set that starts over, so they need no place here."""
        # Every ready peer has its (session, generation) in _acked_by (_session_generation).
        return (frozenset((name, *self._acked_by[name]) for name in ready), forced_reason)

    def _soonest(self, at: float | None) -> None:
        if at is not None:
            self._deadline = at if self._deadline is None else min(self._deadline, at)

    def _api_outage_withdraws(self, now: float) -> bool:
        """True when the apiOutage policy says withdraw everything now."""
        policy = self._config.api_outage
        outage = self._store.outage_since
        if policy.policy != "withdraw" or outage is None:
            if self._outage_withdrawn:
                log.info("api_outage_withdraw_over", reason="api_reachable_or_policy_keep")
            self._outage_withdrawn = False
            return False
        if now - outage < policy.grace_seconds:
            self._soonest(outage + policy.grace_seconds)
            return False
        if not self._outage_withdrawn:
            log.warning("api_outage_withdraw", outage_s=round(now - outage, 1), grace_s=policy.grace_seconds)
        self._outage_withdrawn = True
        return True

    @staticmethod
    def _local_only(services: Iterable[str], snapshot: Snapshot) -> bool:
        found = [snapshot.services.get(key) for key in services]
        return bool(found) and all(s is not None and s.external_traffic_policy == "Local" for s in found)

    def _endpoint_flap(
        self, prefix: Prefix, *, by_service: Mapping[str, Sequence[Verdict]], snapshot: Snapshot
    ) -> bool:
        """True when ``prefix`` is unwanted only because a Local service lost its endpoints."""
        services = self._services_by_prefix.get(prefix, frozenset())
        if not self._local_only(services, snapshot):
            return False
        return withdraw_reason(prefix, services, by_service, snapshot) in _ENDPOINT_REASONS

    def _send_end_of_rib(self, ready: set[str]) -> None:
        """With graceful restart, ExaBGP runs with manual-eor: once every route of a freshly
        established session is acknowledged, tell the router (End-of-RIB per family), so it
        drops only the stale routes we really no longer have."""
        for name, session in self.sessions.items():
            peer = session.runtime.peer
            if name not in ready or peer.graceful_restart_s is None or session.state.state != "up":
                continue
            generation = self._acked_by.get(name, (session, 0))[1]
            marker = (id(session), generation, session.up_count)
            if self._eor_sent.get(name) == marker:
                continue
            if any(value is UNKNOWN for key, value in self._acked.items() if key[0] == name):
                continue  # not everything confirmed yet: the next pass tries again
            lines = [eor_line(peer.peer_address, family) for family in sorted(peer.families)]
            try:
                _, results = session.execute(lines)
            except ExabgpUnavailable as error:
                log.warning("exabgp_unavailable", peer=name, error=str(error), sending="end_of_rib")
                continue
            if all(results):
                self._eor_sent[name] = marker
                log.info("end_of_rib_sent", peer=name, families=sorted(peer.families))

    def _remember_services(self, decision: Decision, withdrawn: Mapping[Prefix, list[str]]) -> None:
        """Keep which services want each announced prefix (for route logs and metrics).

        Prefixes leave only when withdrawn (checked one by one) or with a session (rare:
        a full sweep when the map has grown well past what is announced)."""
        for prefix in decision.announcements if decision.changed is None else decision.changed:
            announcement = decision.announcements.get(prefix)
            if announcement is not None and self._services_by_prefix.get(prefix) is not announcement.services:
                self._services_by_prefix[prefix] = announcement.services
        peers = list(self._acked_by)
        for prefix in withdrawn:
            if prefix not in decision.announcements and not any((peer, prefix) in self._acked for peer in peers):
                self._services_by_prefix.pop(prefix, None)
        if len(self._services_by_prefix) > 2 * len(decision.announcements) + 100:
            acked_prefixes = {prefix for _, prefix in self._acked}
            for prefix in [p for p in self._services_by_prefix if p not in acked_prefixes]:
                del self._services_by_prefix[prefix]

    # -- config and sessions -------------------------------------------------------------

    def _apply_pending_config(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old_names = set(self._runtimes)
        self._config, self._runtimes, self._router_id = pending
        if self._config.hold_down != self._hold.config:
            self._hold = HoldDown(self._config.hold_down)
        new_names = set(self._runtimes)
        log.info(
            "config_applied",
            peers_added=sorted(new_names - old_names),
            peers_removed=sorted(old_names - new_names),
            advertisements=[a.name for a in self._config.advertisements],
        )

    def _converge_sessions(self, snapshot: Snapshot, *, decision: Decision) -> None:
        """Start, restart or stop sessions so that exactly the peers selecting this node run."""
        node = snapshot.nodes.get(self._node_name)
        labels = node.labels if node is not None else {}
        wanted = {
            name: runtime
            for name, runtime in self._runtimes.items()
            if matches_any(runtime.peer.node_selectors, labels)
        }
        for name, session in self.sessions.items():
            runtime = wanted.get(name)
            if runtime is None:
                reason: WithdrawReason = (
                    Withdrawal.PEER_REMOVED if name not in self._runtimes else Reason.NODE_NOT_SELECTED
                )
                self._retire(name, session, reason=reason, decision=decision)
            elif session.fingerprint != self._fingerprint(runtime):
                log.info("session_restarting", peer=name, reason="peer_config_changed")
                self._stop_session(name, session)
                self._start_session(name, runtime)
            else:
                session.runtime = runtime  # same session; next hops may differ
        for name, runtime in wanted.items():
            if name not in self._sessions:
                self._start_session(name, runtime)

    def _fingerprint(self, runtime: PeerRuntime) -> str:
        return session_fingerprint(runtime, self._router_id)

    def _start_session(self, name: str, runtime: PeerRuntime) -> None:
        session = self._factory(runtime, self._router_id)
        with self._lock:
            self._sessions[name] = session
        session.start()
        log.info("session_started", peer=name, peer_address=str(runtime.peer.peer_address))

    def _stop_session(self, name: str, session: ExabgpSupervisor) -> None:
        with self._lock:
            self._sessions.pop(name, None)
        session.stop(timeout_s=2.0)
        self._acked_by.pop(name, None)
        for key in [key for key in self._acked if key[0] == name]:
            del self._acked[key]

    def _retire(self, name: str, session: ExabgpSupervisor, *, reason: WithdrawReason, decision: Decision) -> None:
        """Withdraw what this session announced (so a router with graceful restart does not
        keep it as stale), then stop it."""
        prefixes = sorted((prefix for peer, prefix in self._acked if peer == name), key=prefix_order)
        if prefixes and self._session_generation(name, session) is not None:
            _, withdrawn = self._send({name: self._withdraw_batches(name, prefixes)})
            for prefix in withdrawn:
                log.info(
                    "route_withdrawn",
                    prefix=str(prefix),
                    peers=[name],
                    services=sorted(self._services_by_prefix.get(prefix, ())),
                    reason=str(reason),
                )
        log.info("session_stopping", peer=name, reason=str(reason))
        self._stop_session(name, session)

    def _session_generation(self, name: str, session: ExabgpSupervisor) -> int | None:
        """The session's generation if its API is up; resets the acked routes of a new one."""
        generation = session.wait_ready(timeout_s=0)
        if generation is None:
            return None
        if self._acked_by.get(name) != (session, generation):
            stale = [key for key in self._acked if key[0] == name]
            if stale:
                log.info("replaying_routes", peer=name, routes=len(stale), generation=generation)
            for key in stale:
                del self._acked[key]
            self._acked_by[name] = (session, generation)
        return generation

    def _ready_peers(self) -> set[str]:
        return {name for name, session in self.sessions.items() if self._session_generation(name, session) is not None}

    # -- sending -------------------------------------------------------------------------

    def _withdraw_batches(self, peer: str, prefixes: Sequence[Prefix]) -> list[_Batch]:
        runtime = self._runtimes.get(peer)
        session = self._sessions.get(peer)
        source = session.runtime if session is not None else runtime
        assert source is not None
        result = []
        for version in (4, 6):
            family = [prefix for prefix in prefixes if prefix.version == version]
            hop = self._acked_next_hop(peer, family) or source.next_hops.get(version)
            for chunk in batches(family):
                line = withdraw_line(source.peer.peer_address, chunk, next_hop=hop)
                result.append(_Batch(peer, None, chunk, line))
        return result

    def _acked_next_hop(self, peer: str, prefixes: Sequence[Prefix]) -> IPAddress | None:
        for prefix in prefixes:
            acked = self._acked.get((peer, prefix))
            if isinstance(acked, Attributes) and acked.next_hop is not None:
                return acked.next_hop
        return None

    def _send(
        self, batches_by_peer: Mapping[str, list[_Batch]]
    ) -> tuple[dict[Prefix, list[str]], dict[Prefix, list[str]]]:
        """Run each peer's lines on its session (peers in parallel); record the acks."""
        sessions = self.sessions
        work = {peer: lines for peer, lines in batches_by_peer.items() if lines and peer in sessions}
        if not work:
            return {}, {}

        def run(peer: str) -> list[bool]:
            lines = [batch.line for batch in work[peer]]
            try:
                _, results = sessions[peer].execute(lines)
            except ExabgpUnavailable as error:
                results = list(error.results)
                log.warning(
                    "exabgp_unavailable", peer=peer, error=str(error), acknowledged=len(results), sent=len(lines)
                )
            return results

        if len(work) == 1:
            results_by_peer = {peer: run(peer) for peer in work}
        else:
            futures = {peer: self._pool.submit(run, peer) for peer in work}
            results_by_peer = {peer: future.result() for peer, future in futures.items()}
        announced: dict[Prefix, list[str]] = {}
        withdrawn: dict[Prefix, list[str]] = {}
        retry = False
        for peer, peer_batches in work.items():
            results = results_by_peer[peer]
            self.updates_sent[peer] = self.updates_sent.get(peer, 0) + len(results)
            for index, batch in enumerate(peer_batches):
                ok = results[index] if index < len(results) else None
                if ok is not True:
                    retry = True
                if ok is False:
                    log.error(
                        "exabgp_command_failed", peer=peer, command=batch.line[:200], prefixes=len(batch.prefixes)
                    )
                for prefix in batch.prefixes:
                    key = (peer, prefix)
                    if ok is not True:
                        self._acked[key] = UNKNOWN
                    elif batch.attributes is None:
                        self._acked.pop(key, None)
                        withdrawn.setdefault(prefix, []).append(peer)
                    else:
                        self._acked[key] = batch.attributes
                        announced.setdefault(prefix, []).append(peer)
        if retry:
            # Not at once: a command ExaBGP keeps refusing must not become a hot loop.
            delay = self._retry_s[min(self._retries, len(self._retry_s) - 1)]
            self._retries += 1
            self._retry_at = time.monotonic() + delay
        elif work:
            self._retries, self._retry_at = 0, None
        return announced, withdrawn

    # -- logging -------------------------------------------------------------------------

    def _log_verdict_problems(self, decision: Decision) -> None:
        """Conflicts and rejected annotations: one line when they appear, not one per pass.
        When the decision says which services it decided again, only those are looked at."""
        changed = decision.changed_services
        current: dict[tuple[str, str, bool], str]
        candidates: Iterable[Verdict]
        if changed is None or decision.by_service is None:
            current, candidates = {}, decision.verdicts
        else:
            current = {key: detail for key, detail in self._warned.items() if not key[2] and key[0] not in changed}
            by_service = decision.by_service
            candidates = [
                *(verdict for service in sorted(changed) for verdict in by_service.get(service, ())),
                *_conflicts(decision),
            ]
        for verdict in candidates:
            conflict = verdict.reason is Reason.CONFLICTING_ADVERTISEMENTS
            refused = verdict.reason is Reason.INVALID_INGRESS_IP
            if verdict.detail and (verdict.reason.announces or conflict or refused):
                key = (verdict.service, str(verdict.ip), conflict)
                current[key] = verdict.detail
                if self._warned.get(key) != verdict.detail:
                    event = (
                        "advertisements_conflict"
                        if conflict
                        else "ingress_ip_refused"
                        if refused
                        else "service_annotation_invalid"
                    )
                    log.warning(
                        event,
                        service=verdict.service,
                        ip=str(verdict.ip),
                        peers=list(verdict.peers),
                        detail=verdict.detail,
                    )
        self._warned = current

    def _log_routes(
        self,
        announced: Mapping[Prefix, list[str]],
        withdrawn: Mapping[Prefix, list[str]],
        *,
        decision: Decision,
        snapshot: Snapshot,
        forced_reason: WithdrawReason | None = None,
        by_service: Mapping[str, Sequence[Verdict]] | None = None,
    ) -> None:
        if not announced and not withdrawn:
            return
        if by_service is None:
            by_service = verdicts_by_service(decision)
        for prefix, peers in announced.items():
            services = sorted(decision.announcements[prefix].services)
            reason = next(
                (v.reason for v in by_service.get(services[0], ()) if v.ip is not None and v.ip in prefix),
                Reason.CLUSTER_ENDPOINT,
            )
            log.info("route_announced", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(reason))
            self.on_route("announced", prefix, sorted(peers), services, str(reason))
        for prefix, peers in withdrawn.items():
            services = sorted(self._services_by_prefix.get(prefix, ()))
            why: WithdrawReason
            if forced_reason is not None:
                why = forced_reason
            elif prefix not in decision.announcements:
                why = withdraw_reason(prefix, services, by_service, snapshot)
            else:
                why = Withdrawal.NOT_DESIRED
            log.info("route_withdrawn", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(why))
            self.on_route("withdrawn", prefix, sorted(peers), services, str(why))

    # -- shutdown ------------------------------------------------------------------------

    def drain(self, *, local_pref: int | None, timeout_s: float) -> int:
        """RFC 8326: re-announce every acknowledged route with GRACEFUL_SHUTDOWN (65535:0)
        and, on iBGP sessions when configured, a lower local-pref, so the routers move
        traffic away before the withdraw. Returns how many routes were re-announced."""
        work: dict[str, list[_Batch]] = {}
        grouped: dict[tuple[str, Attributes], list[Prefix]] = {}
        for name, session in self.sessions.items():
            session.ack_timeout_s = min(session.ack_timeout_s, timeout_s)
            if self._session_generation(name, session) is None:
                continue
            ebgp = session.runtime.peer.ebgp
            for (peer, prefix), attributes in self._acked.items():
                if peer != name or not isinstance(attributes, Attributes):
                    continue
                communities = attributes.communities
                if GRACEFUL_SHUTDOWN not in communities:
                    communities = (*communities, GRACEFUL_SHUTDOWN)
                drained = dataclasses.replace(
                    attributes,
                    communities=communities,
                    local_pref=local_pref if local_pref is not None and not ebgp else attributes.local_pref,
                )
                grouped.setdefault((peer, drained), []).append(prefix)
        for (peer, attributes), prefixes in grouped.items():
            runtime = self.sessions[peer].runtime
            for chunk in batches(sorted(prefixes, key=prefix_order)):
                line = announce_line(runtime.peer.peer_address, attributes, chunk, my_asn=runtime.peer.my_asn)
                work.setdefault(peer, []).append(_Batch(peer, attributes, chunk, line))
        announced, _ = self._send(work)
        log.info("drain_started", routes=sum(len(p) for p in announced.values()), community=GRACEFUL_SHUTDOWN)
        return len(announced)

    def withdraw_all(self, reason: WithdrawReason, *, timeout_s: float) -> int:
        """Withdraw every acknowledged route (shutdown). Returns how many remain unconfirmed."""
        by_peer: dict[str, list[Prefix]] = {}
        for name, session in self.sessions.items():
            session.ack_timeout_s = min(session.ack_timeout_s, timeout_s)
            if self._session_generation(name, session) is None:
                continue
            prefixes = [prefix for peer, prefix in self._acked if peer == name]
            if prefixes:
                by_peer[name] = sorted(prefixes, key=prefix_order)
        _, withdrawn = self._send({peer: self._withdraw_batches(peer, p) for peer, p in by_peer.items()})
        remaining = {prefix for _, prefix in self._acked}
        for prefix in sorted(remaining | set(withdrawn), key=prefix_order):
            log.info(
                "route_withdrawn",
                prefix=str(prefix),
                peers=sorted(withdrawn.get(prefix, ())),
                services=sorted(self._services_by_prefix.get(prefix, ())),
                reason=str(reason),
                confirmed=prefix in withdrawn and prefix not in remaining,
            )
        return len(self._acked)

    def stop_sessions(self, timeout_s: float) -> None:
        """Stop every ExaBGP child (in parallel: each may take up to ``timeout_s``)."""
        threads = [
            threading.Thread(target=session.stop, kwargs={"timeout_s": timeout_s}, daemon=True)
            for session in self.sessions.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s + 1.0)
        self._pool.shutdown(wait=False)
