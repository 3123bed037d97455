"""The plan step: from a decision to the route changes each ready session needs.

``Planner.plan`` turns the decision into the desired routes per session (each with
its session's next hop), applies the API-outage policy and the hold-down, diffs the
result against what the sessions acknowledged, and returns the changes to send.

**The one cache story.** A pass at 10,000 services must not cost 10,000 of anything
when one EndpointSlice changed. Three things are kept from one pass to the next, all
owned by the ``Planner`` and all forgotten together by ``start_over()``:

1. the decision memo (``DecisionMemo``): each service's verdicts and route wishes,
   redone only for the services the store's change log names; ``memo.last`` says which
   prefixes and services it redid;
2. the desired routes (``_DesiredRoutes``): rebuilt only for those prefixes;
3. the settled state: after a pass, every route of a ready session is acknowledged as
   desired except ``_unsettled``. A pass whose only news is the memo's delta then
   diffs just those routes and the unsettled ones (``incremental``).

The reset rule: ``start_over()`` runs before the first pass and after a pass that did
not finish (so nothing half-updated is trusted); the memo also starts over by itself
when the config or this node changes, and the desired routes when the peers' runtime
facts change (a new object). The settled state holds only under the same sessions,
generations and outage verdict (``settle_key``), and never with hold-down configured
(whose timers need the full view). The property tests check memo = full decision and
incremental pass = full pass, and fail under mutations of either cache.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence

import structlog

from bgpspeaker.cluster.model import Snapshot
from bgpspeaker.config import ApiOutageConfig, HoldDownConfig
from bgpspeaker.decision import Announcement, Decision, DecisionMemo
from bgpspeaker.diff import diff
from bgpspeaker.holddown import HoldDown
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import (
    Attributes,
    IPAddress,
    Prefix,
    Reason,
    RouteKey,
    Unknown,
    Verdict,
    Withdrawal,
    WithdrawReason,
)
from bgpspeaker.session import RouteChange
from bgpspeaker.sessions import Sessions, chunks
from bgpspeaker.weights import WeightHold

__all__ = [
    "OutagePolicy",
    "Plan",
    "Planner",
    "conflict_verdicts",
    "desired_routes",
    "verdicts_by_service",
    "withdraw_reason",
]

log = structlog.get_logger("bgpspeaker.plan")

_ENDPOINT_REASONS = frozenset({Reason.NO_LOCAL_ENDPOINTS, Reason.NO_ENDPOINTS})


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


_WITH_HOP: dict[tuple[Attributes, IPAddress], Attributes] = {}


def _with_next_hop(attributes: Attributes, hop: IPAddress) -> Attributes:
    """``attributes`` with ``hop`` as next hop: one shared object per pair, not one per route."""
    found = _WITH_HOP.get((attributes, hop))
    if found is None:
        if len(_WITH_HOP) > 4096:
            _WITH_HOP.clear()
        found = _WITH_HOP[(attributes, hop)] = dataclasses.replace(attributes, next_hop=hop)
    return found


class _DesiredRoutes:
    """``desired_routes`` kept up to date from one decision to the next (cache 2 above):
    only the prefixes the memo redid are rebuilt; without a delta, each prefix's routes
    are reused while its Announcement is the very same object and the runtimes are too."""

    def __init__(self) -> None:
        self._runtimes: Mapping[str, PeerRuntime] | None = None
        self._entries: dict[Prefix, Announcement] = {}
        """The announcement each prefix's routes in ``desired`` were built from (its peers
        name the keys: no per-prefix copy of the routes is kept)."""
        self.desired: dict[RouteKey, Attributes] = {}

    def update(
        self, decision: Decision, changed: frozenset[Prefix] | None, runtimes: Mapping[str, PeerRuntime]
    ) -> set[RouteKey] | None:
        """Bring ``desired`` up to ``decision``: the routes that may have changed, or None
        when any may have (then everything was rebuilt)."""
        if runtimes is not self._runtimes or changed is None:
            self._rebuild(decision, runtimes)
            return None
        touched: set[RouteKey] = set()
        for prefix in changed:
            old = self._entries.pop(prefix, None)
            if old is not None:
                for peer in old.routes:
                    key = (peer, prefix)
                    del self.desired[key]
                    touched.add(key)
            announcement = decision.announcements.get(prefix)
            if announcement is not None:
                routes = _prefix_routes(prefix, announcement, runtimes)
                self._entries[prefix] = announcement
                self.desired.update(routes)
                touched.update(key for key, _ in routes)
        return touched

    def _rebuild(self, decision: Decision, runtimes: Mapping[str, PeerRuntime]) -> None:
        if runtimes is not self._runtimes:
            self._runtimes, self._entries = runtimes, {}
        desired: dict[RouteKey, Attributes] = {}
        old = self.desired
        for prefix, announcement in decision.announcements.items():
            if self._entries.get(prefix) is announcement:  # the same routes: keep them as they are
                for peer in announcement.routes:
                    key = (peer, prefix)
                    desired[key] = old[key]
            else:
                desired.update(_prefix_routes(prefix, announcement, runtimes))
        self._entries, self.desired = dict(decision.announcements), desired


def verdicts_by_service(decision: Decision, memo: DecisionMemo | None = None) -> Mapping[str, Sequence[Verdict]]:
    """Verdicts by service, conflicts included (looking them up per route would be quadratic).
    With the memo's delta at hand, its index is used instead of walking every verdict."""
    conflicts = conflict_verdicts(decision)
    index = memo.last.verdicts_by_service if memo is not None and memo.last is not None else None
    by_service: dict[str, Sequence[Verdict]]
    if index is not None:
        if not conflicts:
            return index  # read-only here: no 10,000-entry copy per pass
        by_service = dict(index)
        for verdict in conflicts:
            by_service[verdict.service] = [*by_service.get(verdict.service, ()), verdict]
        return by_service
    by_service = {}
    for verdict in decision.verdicts:
        found = by_service.setdefault(verdict.service, [])
        assert isinstance(found, list)
        found.append(verdict)
    return by_service


def conflict_verdicts(decision: Decision) -> Sequence[Verdict]:
    """The conflict verdicts (they come last), without walking the others."""
    first = len(decision.verdicts)
    while first and decision.verdicts[first - 1].reason is Reason.CONFLICTING_ADVERTISEMENTS:
        first -= 1
    return decision.verdicts[first:]


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


class OutagePolicy:
    """``apiOutage``: keep announcing through an API outage, or withdraw after a grace."""

    def __init__(self) -> None:
        self._withdrawn = False

    def forced_withdrawal(
        self, policy: ApiOutageConfig, outage_since: float | None, now: float
    ) -> tuple[bool, float | None]:
        """(withdraw everything now, when to look again)."""
        if policy.policy != "withdraw" or outage_since is None:
            if self._withdrawn:
                log.info("api_outage_withdraw_over", reason="api_reachable_or_policy_keep")
            self._withdrawn = False
            return False, None
        if now - outage_since < policy.grace_seconds:
            return False, outage_since + policy.grace_seconds
        if not self._withdrawn:
            log.warning("api_outage_withdraw", outage_s=round(now - outage_since, 1), grace_s=policy.grace_seconds)
        self._withdrawn = True
        return True, None


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What one pass sends, and what it looked at (for the settled state)."""

    changes: dict[str, list[RouteChange]]
    """Per peer, in order: announces grouped by attributes, then withdraws."""
    desired: Mapping[RouteKey, Attributes]
    """Every route the decision wants (before the outage policy and hold-down)."""
    effective: Mapping[RouteKey, Attributes]
    """What the ready sessions should hold after this pass."""
    looked_at: Iterable[RouteKey]
    """The routes this pass compared (all of them after a full pass)."""
    forced_reason: WithdrawReason | None
    """Set when the outage policy withdraws everything."""
    by_service: Mapping[str, Sequence[Verdict]]
    deadline: float | None
    """When a timed change (hold-down expiry, outage grace) is due."""
    incremental: bool
    settle_key: tuple[object, ...]
    """The sessions, generations and outage verdict the plan was made under."""
    weight_held: frozenset[RouteKey] = frozenset()
    """Routes whose weight-only change waits (bgpspeaker.weights): not settled yet."""


class Planner:
    """Owns the caches (see the module docstring) and the hold-down; one per reconciler."""

    def __init__(self, hold_down: HoldDownConfig) -> None:
        self.memo = DecisionMemo()
        self._desired = _DesiredRoutes()
        self._settled_under: tuple[object, ...] | None = None
        self._unsettled: set[RouteKey] = set()
        self._hold = HoldDown(hold_down)
        self._outage = OutagePolicy()
        self._weights = WeightHold()

    def start_over(self) -> None:
        """Forget every cache: the next pass is a full one."""
        self.memo, self._desired, self._settled_under = DecisionMemo(), _DesiredRoutes(), None

    def configure(self, hold_down: HoldDownConfig) -> None:
        """A new config's hold-down (its timers start over only when it changed)."""
        if hold_down != self._hold.config:
            self._hold = HoldDown(hold_down)

    def plan(
        self,
        decision: Decision,
        snapshot: Snapshot,
        *,
        runtimes: Mapping[str, PeerRuntime],
        sessions: Sessions,
        ready: set[str],
        api_outage: ApiOutageConfig,
        outage_since: float | None,
        services_by_prefix: Mapping[Prefix, frozenset[str]],
    ) -> Plan:
        """The changes that bring the ready sessions to the decision."""
        now = time.monotonic()
        touched = self._desired.update(decision, self.memo.last.prefixes if self.memo.last else None, runtimes)
        desired = self._desired.desired
        acked = sessions.acknowledged
        withdraw_all, deadline = self._outage.forced_withdrawal(api_outage, outage_since, now)
        forced_reason: WithdrawReason | None = Withdrawal.API_OUTAGE if withdraw_all else None
        effective_desired = {} if withdraw_all else desired
        by_service = verdicts_by_service(decision, self.memo)
        settle_key = (frozenset((name, *sessions.generation_key(name)) for name in ready), forced_reason)
        hold = self._hold.config
        incremental = (
            touched is not None
            and settle_key == self._settled_under
            and forced_reason is None
            and not (hold.announce_after_s or hold.withdraw_after_s)
        )
        candidates: set[RouteKey] | None
        if incremental:
            # Same sessions, same config, no hold-down: only the changed routes and the
            # ones left unsettled last time can differ from what is acknowledged.
            assert touched is not None
            candidates = touched | self._unsettled
            effective = {k: effective_desired[k] for k in candidates if k[0] in ready and k in effective_desired}
            acked_ready = {k: acked[k] for k in candidates if k[0] in ready and k in acked}
            held: list[RouteKey] = []
        else:
            candidates = None
            acked_ready = {key: value for key, value in acked.items() if key[0] in ready}

            def local_only(services: Iterable[str]) -> bool:
                found = [snapshot.services.get(key) for key in services]
                return bool(found) and all(s is not None and s.external_traffic_policy == "Local" for s in found)

            def endpoint_flap(prefix: Prefix) -> bool:
                """``prefix`` is unwanted only because a Local service lost its endpoints."""
                services = services_by_prefix.get(prefix, frozenset())
                if not local_only(services):
                    return False
                return withdraw_reason(prefix, services, by_service, snapshot) in _ENDPOINT_REASONS

            effective, hold_deadline, held = self._hold.apply(
                {key: value for key, value in effective_desired.items() if key[0] in ready},
                acked_ready,
                now=now,
                may_delay_announce=lambda key: local_only(decision.announcements[key[1]].services),
                may_delay_withdraw=lambda key: forced_reason is None and endpoint_flap(key[1]),
            )
            if hold_deadline is not None:
                deadline = hold_deadline if deadline is None else min(deadline, hold_deadline)
        weight_deadline, weight_held = self._weights.apply(effective, acked_ready, now=now)
        if weight_deadline is not None:
            deadline = weight_deadline if deadline is None else min(deadline, weight_deadline)
        for peer, prefix in held:
            log.info(
                "route_withdraw_held",
                prefix=str(prefix),
                peer=peer,
                services=sorted(services_by_prefix.get(prefix, ())),
                hold_s=hold.withdraw_after_s,
            )
        return Plan(
            changes=self._changes(effective, acked_ready, sessions),
            desired=desired,
            effective=effective,
            looked_at=candidates if candidates is not None else effective.keys() | acked_ready.keys(),
            forced_reason=forced_reason,
            by_service=by_service,
            deadline=deadline,
            incremental=incremental,
            settle_key=settle_key,
            weight_held=frozenset(weight_held),
        )

    @staticmethod
    def _changes(
        effective: Mapping[RouteKey, Attributes],
        acked: Mapping[RouteKey, Attributes | Unknown],
        sessions: Sessions,
    ) -> dict[str, list[RouteChange]]:
        found = diff(effective, acked)
        changes: dict[str, list[RouteChange]] = {}
        for (peer, attributes), prefixes in found.announces.items():
            changes.setdefault(peer, []).extend(RouteChange(attributes, chunk) for chunk in chunks(prefixes))
        for peer, prefixes in found.withdraws.items():
            changes.setdefault(peer, []).extend(sessions.withdrawals(peer, prefixes))
        return changes

    def settled(self, plan: Plan, acked: Mapping[RouteKey, Attributes | Unknown]) -> None:
        """After the changes were applied: what is still not acknowledged as wanted."""
        self._unsettled = {key for key in plan.looked_at if plan.effective.get(key) != acked.get(key)}
        self._unsettled |= plan.weight_held
        self._settled_under = plan.settle_key
