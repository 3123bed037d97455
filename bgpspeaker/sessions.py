"""The sessions this node runs, and the routes each one acknowledged.

``Sessions`` starts, restarts and stops one ``Session`` per peer so that exactly the
peers selecting this node run (``converge``), applies route changes to them in
parallel and records the acknowledgements (``apply``), and forgets a session's
acknowledged routes when its speaker process is new (a new generation starts empty:
everything is sent again). It is driven by one thread, the reconciler's (and, once that
thread has stopped, the shutdown path's).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import structlog

from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import UNKNOWN, Attributes, IPAddress, Prefix, RouteKey, Unknown, prefix_order
from bgpspeaker.session import MAX_PREFIXES_PER_CHANGE, Ack, RouteChange, Session, SessionFactory, SessionStatus

__all__ = ["Applied", "Sessions", "chunks"]

log = structlog.get_logger("bgpspeaker.sessions")


def chunks(prefixes: Sequence[Prefix], size: int = MAX_PREFIXES_PER_CHANGE) -> Iterable[Sequence[Prefix]]:
    """Consecutive slices of at most ``size`` prefixes: one change each."""
    for start in range(0, len(prefixes), size):
        yield prefixes[start : start + size]


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """What a round of changes achieved, by prefix: the peers that acknowledged each."""

    announced: Mapping[Prefix, list[str]]
    withdrawn: Mapping[Prefix, list[str]]
    unconfirmed: bool
    """Some change was refused or not acknowledged: its routes are unknown, retry later."""
    routes: int
    """(peer, prefix) pairs sent."""
    commands: int


NOTHING = Applied({}, {}, unconfirmed=False, routes=0, commands=0)


class Sessions:
    """The running sessions by peer and their acknowledged routes."""

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory
        self._sessions: dict[str, Session] = {}
        self._acked: dict[RouteKey, Attributes | Unknown] = {}
        self._acked_by: dict[str, tuple[Session, int]] = {}
        """Peer -> the session and generation its acknowledged routes belong to."""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="send")
        self.updates_sent: dict[str, int] = {}
        """Peer -> changes sent (each became at least one UPDATE), for metrics."""
        self._stopped_all = False

    # -- reading (any thread: copies) ---------------------------------------------------

    def statuses(self) -> dict[str, SessionStatus]:
        """Each running session's status, by peer name."""
        return {name: session.status() for name, session in dict(self._sessions).items()}

    @property
    def acknowledged(self) -> Mapping[RouteKey, Attributes | Unknown]:
        """What the sessions confirmed (the live map: the reconciler's thread only; others copy it)."""
        return self._acked

    def names(self) -> set[str]:
        """The peers with a running session."""
        return set(self._sessions)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, name: str, runtime: PeerRuntime, router_id: IPAddress) -> None:
        """Start a session for ``name``."""
        session = self._factory(runtime, router_id)
        self._sessions = {**self._sessions, name: session}  # copy-on-write: readers see old or new
        session.start()
        log.info("session_started", peer=name, peer_address=str(runtime.peer.peer_address))

    def restart_if_changed(self, name: str, runtime: PeerRuntime, router_id: IPAddress) -> None:
        """A running session that cannot carry ``runtime`` as it is (its settings changed) is
        replaced; otherwise it keeps running with the new runtime facts (next hops)."""
        session = self._sessions[name]
        if not session.accepts(runtime, router_id):
            log.info("session_restarting", peer=name, reason="peer_config_changed")
            self.stop(name, timeout_s=2.0)
            self.start(name, runtime, router_id)
        else:
            session.retune(runtime)

    def stop(self, name: str, *, timeout_s: float) -> None:
        """Stop ``name``'s session and forget its routes."""
        session = self._sessions.get(name)
        self._sessions = {key: value for key, value in self._sessions.items() if key != name}
        if session is not None:
            session.stop(timeout_s=timeout_s)
        self._acked_by.pop(name, None)
        for key in [key for key in self._acked if key[0] == name]:
            del self._acked[key]

    def hasten(self, ack_timeout_s: float) -> None:
        """Cap every session's acknowledgement wait (shutdown: a pass in flight ends sooner)."""
        for session in self._sessions.values():
            session.hasten(ack_timeout_s)

    def stop_all(self, timeout_s: float) -> None:
        """Stop every session, in parallel (each may take up to ``timeout_s``). Once: a later
        call (the entry point's cleanup, after a shutdown) returns at once."""
        if self._stopped_all:
            return
        self._stopped_all = True
        futures = [self._pool.submit(session.stop, timeout_s) for session in self._sessions.values()]
        concurrent.futures.wait(futures, timeout=timeout_s + 1.0)
        self._pool.shutdown(wait=False)

    def ready(self) -> set[str]:
        """The peers whose sessions take changes now; a new speaker process forgets its
        predecessor's acknowledged routes first (they are all sent again). A peer that
        relies on ``next-hop self`` takes them only while Established: sent earlier, ExaBGP
        refuses them (``exabgp_command_failed`` at error level every pass and retry); the
        session coming up wakes a pass (``on_ready``) that sends them."""
        return {name for name, session in self._sessions.items() if self._generation(name, session) is not None}

    def _generation(self, name: str, session: Session) -> int | None:
        status = session.status()
        generation = status.generation
        if generation is None or (status.runtime.uses_next_hop_self and not status.established):
            return None
        if self._acked_by.get(name) != (session, generation):
            stale = [key for key in self._acked if key[0] == name]
            if stale:
                log.info("replaying_routes", peer=name, routes=len(stale), generation=generation)
            for key in stale:
                del self._acked[key]
            self._acked_by[name] = (session, generation)
        return generation

    def generation_key(self, name: str) -> tuple[object, ...]:
        """(session, generation) the acknowledged routes of ready peer ``name`` belong to."""
        return self._acked_by[name]

    # -- routes ----------------------------------------------------------------------

    def withdrawals(self, peer: str, prefixes: Sequence[Prefix]) -> list[RouteChange]:
        """Changes withdrawing ``prefixes`` from ``peer``, per family, with the explicit next
        hop they were announced with (ExaBGP refuses ``self`` for IPv6 on an IPv4 session)."""
        session = self._sessions.get(peer)
        runtime = session.status().runtime if session is not None else None
        changes: list[RouteChange] = []
        for version in (4, 6):
            family = [prefix for prefix in prefixes if prefix.version == version]
            hop = self._acked_next_hop(peer, family) or (runtime.next_hops.get(version) if runtime else None)
            changes.extend(RouteChange(None, chunk, next_hop=hop) for chunk in chunks(family))
        return changes

    def _acked_next_hop(self, peer: str, prefixes: Sequence[Prefix]) -> IPAddress | None:
        for prefix in prefixes:
            acked = self._acked.get((peer, prefix))
            if isinstance(acked, Attributes) and acked.next_hop is not None:
                return acked.next_hop
        return None

    def withdraw_everything(self, peers: Iterable[str]) -> dict[str, list[RouteChange]]:
        """Changes withdrawing every acknowledged route of ``peers`` that are ready."""
        ready = self.ready()
        by_peer: dict[str, list[Prefix]] = {}
        for peer, prefix in self._acked:
            if peer in ready and peer in peers:
                by_peer.setdefault(peer, []).append(prefix)
        return {peer: self.withdrawals(peer, sorted(p, key=prefix_order)) for peer, p in by_peer.items()}

    def apply(
        self, changes_by_peer: Mapping[str, Sequence[RouteChange]], *, ack_timeout_s: float | None = None
    ) -> Applied:
        """Apply each peer's changes on its session (peers in parallel); record the acks."""
        sessions = self._sessions
        work = {peer: changes for peer, changes in changes_by_peer.items() if changes and peer in sessions}
        if not work:
            return NOTHING

        def run(peer: str) -> list[Ack]:
            return sessions[peer].apply(work[peer], ack_timeout_s=ack_timeout_s)

        if len(work) == 1:
            acks_by_peer = {peer: run(peer) for peer in work}
        else:
            futures = {peer: self._pool.submit(run, peer) for peer in work}
            acks_by_peer = {peer: future.result() for peer, future in futures.items()}
        announced: dict[Prefix, list[str]] = {}
        withdrawn: dict[Prefix, list[str]] = {}
        unconfirmed = False
        routes = 0
        for peer, changes in work.items():
            acks = acks_by_peer[peer]
            self.updates_sent[peer] = self.updates_sent.get(peer, 0) + sum(ack is not None for ack in acks)
            for index, change in enumerate(changes):
                ack = acks[index] if index < len(acks) else None
                routes += len(change.prefixes)
                unconfirmed = unconfirmed or ack is not True
                for prefix in change.prefixes:
                    key = (peer, prefix)
                    if ack is not True:
                        self._acked[key] = UNKNOWN
                    elif change.attributes is None:
                        self._acked.pop(key, None)
                        withdrawn.setdefault(prefix, []).append(peer)
                    else:
                        self._acked[key] = change.attributes
                        announced.setdefault(prefix, []).append(peer)
        return Applied(
            announced, withdrawn, unconfirmed=unconfirmed, routes=routes, commands=sum(map(len, work.values()))
        )

    def forget_confirmations(self) -> None:
        """Every acknowledged route becomes unknown (sent again next time): after a pass that
        failed midway, a change it applied but never recorded is not left wrong."""
        self._acked = dict.fromkeys(self._acked, UNKNOWN)

    def end_of_rib(self, ready: set[str], sent: dict[str, tuple[int, int, int]]) -> None:
        """With graceful restart: once every route of a freshly established session is
        acknowledged, tell the router (End-of-RIB), so it drops only the stale routes we
        really no longer have. ``sent``: peer -> (session, generation, up count) done."""
        for name, session in self._sessions.items():
            status = session.status()
            if name not in ready or status.runtime.peer.graceful_restart_s is None or not status.established:
                continue
            marker = (id(session), self._acked_by.get(name, (session, 0))[1], status.up_count)
            if sent.get(name) == marker:
                continue
            if any(value is UNKNOWN for key, value in self._acked.items() if key[0] == name):
                continue  # not everything confirmed yet: the next pass tries again
            if session.end_of_rib():
                sent[name] = marker
                log.info("end_of_rib_sent", peer=name, families=sorted(status.runtime.peer.families))
