"""The reconciler: the only writer to ExaBGP. Level-triggered.

Anything that may change the outcome calls ``mark_dirty()``. One thread wakes up,
takes a snapshot of the store, runs the decision, diffs the desired routes against
what ExaBGP acknowledged, and sends only the difference as bulk commands. Bursts
coalesce by themselves: changes that arrive during a pass only set the flag again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import structlog

from bgpspeaker.commands import Attributes, announce_line, batches, withdraw_line
from bgpspeaker.config import SpeakerConfig
from bgpspeaker.decision import Decision, Prefix, Reason, Verdict, decide, prefix_order
from bgpspeaker.diff import UNKNOWN, Changes, RouteKey, Unknown, diff
from bgpspeaker.errors import ExabgpUnavailable
from bgpspeaker.exabgp import ExabgpSupervisor
from bgpspeaker.kube import ClusterStore
from bgpspeaker.model import Snapshot

__all__ = ["Reconciler", "desired_routes", "verdicts_by_service", "withdraw_reason"]

log = structlog.get_logger("bgpspeaker.reconciler")

RESYNC_INTERVAL_S = 30.0
"""A pass runs at least this often, to retry routes left unknown by a failed command."""


def desired_routes(decision: Decision) -> dict[RouteKey, Attributes]:
    """Every (peer, prefix) the decision wants, with its attributes."""
    plain = Attributes()
    return {
        (peer, prefix): plain for prefix, announcement in decision.announcements.items() for peer in announcement.peers
    }


def verdicts_by_service(decision: Decision) -> dict[str, list[Verdict]]:
    """Index the verdicts once per pass (looking them up per route would be quadratic)."""
    by_service: dict[str, list[Verdict]] = {}
    for verdict in decision.verdicts:
        by_service.setdefault(verdict.service, []).append(verdict)
    return by_service


def withdraw_reason(
    prefix: Prefix, services: Iterable[str], by_service: Mapping[str, list[Verdict]], snapshot: Snapshot
) -> Reason:
    """Why ``prefix``, once wanted by ``services``, is no longer announced."""
    ip = prefix.network_address
    for service in sorted(services):
        if service not in snapshot.services:
            return Reason.SERVICE_DELETED
        for verdict in by_service.get(service, ()):
            if verdict.ip is None or verdict.ip == ip:
                if not verdict.reason.announces:
                    return verdict.reason
        if service in snapshot.services and ip not in snapshot.services[service].ingress_ips:
            return Reason.INGRESS_IP_REMOVED
    return Reason.NOT_DESIRED


class Reconciler:
    """Owns the acknowledged state and the loop that converges ExaBGP on the desired one."""

    def __init__(
        self,
        config: SpeakerConfig,
        *,
        node_name: str,
        store: ClusterStore,
        exabgp: ExabgpSupervisor,
    ) -> None:
        self._config = config
        self._node_name = node_name
        self._store = store
        self._exabgp = exabgp
        self._peer_addresses = {peer.name: peer.peer_address for peer in config.peers}
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._acked: dict[RouteKey, Attributes | Unknown] = {}
        self._acked_generation = 0
        self._services_by_prefix: dict[Prefix, frozenset[str]] = {}
        self.last_decision: Decision | None = None
        self.passes = 0
        self.thread = threading.Thread(target=self.run, name="reconciler", daemon=True)

    def mark_dirty(self) -> None:
        """Something changed; a pass will follow."""
        self._dirty.set()

    def stop(self) -> None:
        """Ask the loop to finish its pass and return."""
        self._stop.set()
        self._dirty.set()

    @property
    def acknowledged(self) -> Mapping[RouteKey, Attributes | Unknown]:
        """What ExaBGP confirmed (a copy)."""
        return dict(self._acked)

    def run(self) -> None:
        """Loop until stopped: wait for a change (or the resync interval), then converge."""
        waiting_logged = False
        while not self._stop.is_set():
            self._dirty.wait(RESYNC_INTERVAL_S)
            if self._stop.is_set():
                return
            self._dirty.clear()
            if not self._store.synced:
                if not waiting_logged:
                    log.info("waiting_for_initial_sync")
                    waiting_logged = True
                continue
            self.reconcile_once()

    def _sync_generation(self) -> int | None:
        generation = self._exabgp.wait_ready(timeout_s=0)
        if generation is None:
            return None
        if generation != self._acked_generation:
            if self._acked:
                log.info("replaying_routes", routes=len(self._acked), generation=generation)
            self._acked = {}
            self._acked_generation = generation
        return generation

    def reconcile_once(self) -> None:
        """One pass: decide, diff, send, record acknowledgements."""
        started = time.monotonic()
        snapshot = self._store.snapshot()
        decision = decide(snapshot, self._config, self._node_name)
        self.last_decision = decision
        desired = desired_routes(decision)
        new_services = {prefix: a.services for prefix, a in decision.announcements.items()}
        if self._sync_generation() is None:
            self._services_by_prefix.update(new_services)
            log.debug("reconcile_deferred", reason="exabgp_not_ready")
            return  # on_ready marks us dirty again
        changes = diff(desired, self._acked)
        commands = self._send(changes, decision=decision, snapshot=snapshot)
        for prefix in list(self._services_by_prefix):
            if not any((peer, prefix) in self._acked for peer in self._peer_addresses):
                del self._services_by_prefix[prefix]
        self._services_by_prefix.update(new_services)
        self.passes += 1
        (log.info if commands else log.debug)(
            "reconcile_finished",
            desired=len(desired),
            acknowledged=len(self._acked),
            commands=commands,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _send(
        self,
        changes: Changes,
        *,
        decision: Decision,
        snapshot: Snapshot,
    ) -> int:
        if not changes:
            return 0
        lines: list[str] = []
        sent: list[tuple[str, Attributes | None, Sequence[Prefix]]] = []
        for (peer, attributes), prefixes in changes.announces.items():
            for chunk in batches(prefixes):
                lines.append(announce_line(self._peer_addresses[peer], attributes, chunk))
                sent.append((peer, attributes, chunk))
        for peer, prefixes in changes.withdraws.items():
            for chunk in batches(prefixes):
                lines.append(withdraw_line(self._peer_addresses[peer], chunk))
                sent.append((peer, None, chunk))
        results: list[bool]
        try:
            _, results = self._exabgp.execute(lines)
        except ExabgpUnavailable as error:
            results = list(error.results)
            log.warning("exabgp_unavailable", error=str(error), acknowledged=len(results), sent=len(lines))
        announced: dict[Prefix, list[str]] = {}
        withdrawn: dict[Prefix, list[str]] = {}
        for index, (peer, sent_attributes, chunk) in enumerate(sent):
            ok = results[index] if index < len(results) else None
            if ok is False:
                log.error("exabgp_command_failed", peer=peer, command=lines[index][:200], prefixes=len(chunk))
            for prefix in chunk:
                key = (peer, prefix)
                if ok is not True:
                    self._acked[key] = UNKNOWN
                elif sent_attributes is None:
                    self._acked.pop(key, None)
                    withdrawn.setdefault(prefix, []).append(peer)
                else:
                    self._acked[key] = sent_attributes
                    announced.setdefault(prefix, []).append(peer)
        self._log_routes(announced, withdrawn, decision=decision, snapshot=snapshot)
        if any(ok is not True for ok in results) or len(results) < len(lines):
            self._dirty.set()  # retry the unknown ones on the next pass
        return len(lines)

    def _log_routes(
        self,
        announced: Mapping[Prefix, list[str]],
        withdrawn: Mapping[Prefix, list[str]],
        *,
        decision: Decision,
        snapshot: Snapshot,
    ) -> None:
        by_service = verdicts_by_service(decision)
        for prefix, peers in announced.items():
            services = sorted(decision.announcements[prefix].services)
            reason = next(
                (v.reason for v in by_service.get(services[0], ()) if v.ip == prefix.network_address),
                Reason.CLUSTER_ENDPOINT,
            )
            log.info("route_announced", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(reason))
        for prefix, peers in withdrawn.items():
            services = sorted(self._services_by_prefix.get(prefix, ()))
            reason = (
                withdraw_reason(prefix, services, by_service, snapshot)
                if prefix not in decision.announcements
                else Reason.NOT_DESIRED
            )
            log.info("route_withdrawn", prefix=str(prefix), peers=sorted(peers), services=services, reason=str(reason))

    def withdraw_all(self, reason: Reason, *, timeout_s: float) -> int:
        """Withdraw every acknowledged route (shutdown). Returns how many remain unconfirmed."""
        self._exabgp.ack_timeout_s = min(self._exabgp.ack_timeout_s, timeout_s)
        if self._sync_generation() is None or not self._acked:
            return len(self._acked)
        by_peer: dict[str, list[Prefix]] = {}
        for peer, prefix in self._acked:
            by_peer.setdefault(peer, []).append(prefix)
        lines: list[str] = []
        for peer, prefixes in by_peer.items():
            ordered = sorted(prefixes, key=prefix_order)
            lines.extend(withdraw_line(self._peer_addresses[peer], chunk) for chunk in batches(ordered))
        try:
            _, results = self._exabgp.execute(lines)
        except ExabgpUnavailable as error:
            results = list(error.results)
        confirmed = len(results) == len(lines) and all(results)
        for prefix in sorted({prefix for _, prefix in self._acked}, key=prefix_order):
            log.info(
                "route_withdrawn",
                prefix=str(prefix),
                services=sorted(self._services_by_prefix.get(prefix, ())),
                reason=str(reason),
                confirmed=confirmed,
            )
        remaining = 0 if confirmed else len(self._acked)
        if confirmed:
            self._acked.clear()
        return remaining
