"""What the reconciler tells operators about routes: ``route_announced`` and
``route_withdrawn`` with their reasons (log lines and Kubernetes Events), the verdict
problems once each (rejected annotations, refused ingress IPs, conflicts), and which
services want each announced prefix (for those lines, metrics and ``/status``)."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence

import structlog

from bgpspeaker.cluster.model import Snapshot
from bgpspeaker.decision import Decision, DecisionMemo
from bgpspeaker.plan import conflict_verdicts, withdraw_reason
from bgpspeaker.routes import Prefix, Reason, RouteKey, Verdict, Withdrawal, WithdrawReason

__all__ = ["Journal", "RouteListener"]

log = structlog.get_logger("bgpspeaker.reconciler")

RouteListener = Callable[[str, Prefix, Sequence[str], Sequence[str], str], None]
"""Called with (``announced`` or ``withdrawn``, prefix, peers, services, reason): Events."""

_PROBLEM_EVENTS = {
    Reason.CONFLICTING_ADVERTISEMENTS: "advertisements_conflict",
    Reason.INVALID_INGRESS_IP: "ingress_ip_refused",
}


class Journal:
    """Route and verdict log lines, each said once; the services behind each prefix."""

    def __init__(self) -> None:
        self.services_by_prefix: dict[Prefix, frozenset[str]] = {}
        self._warned: dict[tuple[str, str, bool], str] = {}
        """(service, IP, is a conflict) -> the problem last logged for it."""
        self.on_route: RouteListener = lambda _event, _prefix, _peers, _services, _reason: None

    def verdict_problems(self, decision: Decision, memo: DecisionMemo) -> None:
        """Conflicts, rejected annotations and refused IPs: one line when they appear, not
        one per pass. When the memo says which services it redid, only those are looked at."""
        delta = memo.last
        current: dict[tuple[str, str, bool], str]
        candidates: Iterable[Verdict]
        if delta is None:
            current, candidates = {}, decision.verdicts
        else:
            current = {
                key: detail for key, detail in self._warned.items() if not key[2] and key[0] not in delta.services
            }
            by_service = delta.verdicts_by_service
            candidates = [
                *(verdict for service in sorted(delta.services) for verdict in by_service.get(service, ())),
                *conflict_verdicts(decision),
            ]
        for verdict in candidates:
            event = _PROBLEM_EVENTS.get(
                verdict.reason, "service_annotation_invalid" if verdict.reason.announces else ""
            )
            if verdict.detail and event:
                key = (verdict.service, str(verdict.ip), verdict.reason is Reason.CONFLICTING_ADVERTISEMENTS)
                current[key] = verdict.detail
                if self._warned.get(key) != verdict.detail:
                    log.warning(
                        event,
                        service=verdict.service,
                        ip=str(verdict.ip),
                        peers=list(verdict.peers),
                        detail=verdict.detail,
                    )
        self._warned = current

    def routes(
        self,
        announced: Mapping[Prefix, list[str]],
        withdrawn: Mapping[Prefix, list[str]],
        *,
        decision: Decision,
        snapshot: Snapshot,
        forced_reason: WithdrawReason | None,
        by_service: Mapping[str, Sequence[Verdict]],
    ) -> None:
        """One line (and Event) per prefix announced or withdrawn in a pass, with the reason."""
        for prefix, peers in announced.items():
            services = sorted(decision.announcements[prefix].services)
            reason = next(
                (v.reason for v in by_service.get(services[0], ()) if v.ip is not None and v.ip in prefix),
                Reason.CLUSTER_ENDPOINT,
            )
            log.info("route_announced", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(reason))
            self.on_route("announced", prefix, sorted(peers), services, str(reason))
        for prefix, peers in withdrawn.items():
            services = sorted(self.services_by_prefix.get(prefix, ()))
            why: WithdrawReason
            if forced_reason is not None:
                why = forced_reason
            elif prefix not in decision.announcements:
                why = withdraw_reason(prefix, services, by_service, snapshot)
            else:
                why = Withdrawal.NOT_DESIRED
            log.info("route_withdrawn", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(why))
            self.on_route("withdrawn", prefix, sorted(peers), services, str(why))

    def withdrawn(
        self,
        prefixes: Iterable[Prefix],
        *,
        peers: Mapping[Prefix, Sequence[str]],
        reason: WithdrawReason,
        confirmed: Container[Prefix] | None = None,
    ) -> None:
        """Lines for routes a session retirement or the shutdown withdrew (no Events);
        ``confirmed``: at shutdown, the prefixes every session acknowledged withdrawing."""
        for prefix in prefixes:
            extra = {} if confirmed is None else {"confirmed": prefix in confirmed}
            log.info(
                "route_withdrawn",
                prefix=str(prefix),
                peers=sorted(peers.get(prefix, ())),
                services=sorted(self.services_by_prefix.get(prefix, ())),
                reason=str(reason),
                **extra,
            )

    def remember(
        self,
        decision: Decision,
        memo: DecisionMemo,
        withdrawn: Mapping[Prefix, list[str]],
        acked: Mapping[RouteKey, object],
        peers: Iterable[str],
    ) -> None:
        """Keep which services want each announced prefix. Prefixes leave only when withdrawn
        (checked one by one against the ``peers``' acknowledged routes) or with a session
        (rare: a full sweep when the map has grown well past what is announced)."""
        changed = decision.announcements if memo.last is None else memo.last.prefixes
        for prefix in changed:
            announcement = decision.announcements.get(prefix)
            if announcement is not None and self.services_by_prefix.get(prefix) is not announcement.services:
                self.services_by_prefix[prefix] = announcement.services
        names = list(peers)
        for prefix in withdrawn:
            if prefix not in decision.announcements and not any((peer, prefix) in acked for peer in names):
                self.services_by_prefix.pop(prefix, None)
        if len(self.services_by_prefix) > 2 * len(decision.announcements) + 100:
            acked_prefixes = {prefix for _, prefix in acked}
            for prefix in [p for p in self.services_by_prefix if p not in acked_prefixes]:
                del self.services_by_prefix[prefix]
