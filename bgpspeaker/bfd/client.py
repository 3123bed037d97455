"""The daemon's side of BFD: runs the BFD child process (``python -m bgpspeaker.bfd``),
restarts it when it dies, tells it the wanted sessions and turns its state reports
into what the reconciler needs: the peers whose BGP session must be down now.

A peer is *blocked* while a hold is in force (bgpspeaker.bfd.hold): its BFD session left
Up because the path failed (our detection timer expired, or the router reported a
failure), and BFD is not Up again (a flap: the hold has not run out) and the profile's
``bgpHoldDown`` has not passed. A router's
AdminDown (RFC 5882 section 3.2: administrative, not a failure) or a router that
re-creates its session blocks nothing.
A session that never came Up blocks nothing (a router without BFD keeps its BGP
session) and is reported once, ``bfd_never_up``. A new child starts every session
afresh: what the old one knew does not block anything.

Threads: ``bfd-child`` owns the process (start, restart, the never-Up check, the end of
holds that run out) and ``bfd-events`` reads its stdout. ``want`` and ``statuses`` may be
called from any thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import structlog

from bgpspeaker.bfd import hold as holds
from bgpspeaker.bfd.config import DEFAULT_BGP_HOLD_DOWN_MS, BfdProfile

__all__ = ["PATH_FAILURE_DIAGS", "BfdClient", "BfdStatus", "is_path_failure", "session_spec"]

log = structlog.get_logger("bgpspeaker.bfd")

NEVER_UP_WARN_S = 30.0
"""A wanted session not Up after this long is reported once (the router may have no BFD)."""
_PR_SET_PDEATHSIG = 1


def session_spec(
    peer: str, *, local: str, remote: str, profile: BfdProfile, multihop: bool, interface: str | None = None
) -> dict[str, Any]:
    """One session in the child's ``set`` format."""
    return {
        "peer": peer,
        "local": local,
        "remote": remote,
        "multihop": multihop,
        "interface": interface,
        "tx_ms": profile.transmit_interval_ms,
        "rx_ms": profile.receive_interval_ms,
        "multiplier": profile.detect_multiplier,
        "passive": profile.passive_mode,
        "minimum_ttl": profile.minimum_ttl,
        "bgp_hold_down_ms": profile.bgp_hold_down_ms,  # the daemon's (the child ignores it)
    }


@dataclasses.dataclass(frozen=True, slots=True)
class BfdStatus:
    """One peer's BFD session as the child last reported it."""

    state: str = "down"
    remote_state: str = "down"
    diag: str = "none"
    remote_diag: str = "none"
    tx_ms: float = 0.0
    detect_ms: float = 0.0
    last_change: float = 0.0
    """Wall-clock time of the last state change (0: none yet)."""
    was_up: bool = False
    """Up at least once since this child started the session."""
    down_events: int = 0
    bgp_held: bool = False
    """BFD took BGP down and the hold is in force (bgpspeaker.bfd.hold)."""
    hold_s: float = 0.0
    """That hold's bound."""
    flaps: int = 0
    """Takedowns in a row (2 and more: a flapping path, the hold doubles)."""

    @property
    def blocks_bgp(self) -> bool:
        """BGP must stay down now."""
        return self.bgp_held

    def document(self) -> dict[str, Any]:
        """The /status form."""
        return {
            "state": self.state,
            "remote_state": self.remote_state,
            "diag": self.diag,
            "remote_diag": self.remote_diag,
            "tx_ms": self.tx_ms,
            "detect_ms": self.detect_ms,
            "last_change": self.last_change or None,
            "down_events": self.down_events,
            "blocks_bgp": self.blocks_bgp,
            "bgp_hold_s": self.hold_s if self.bgp_held else None,
            "flaps": self.flaps,
        }


PATH_FAILURE_DIAGS = frozenset(
    {
        "echo_function_failed",
        "forwarding_plane_reset",
        "path_down",
        "concatenated_path_down",
        "reverse_concatenated_path_down",
        "control_detection_time_expired",
    }
)
"""Remote diagnostics that report a failure the router saw. Not among them: 7
(administratively down: RFC 5882 section 3.2 says do not tear the client down), 3
(neighbor signalled down: we did not, so it is the router's bookkeeping; FRR 8.4 sends it
when bgpd re-registers the session, bfdd/ptm_adapter.c bfdd_dest_deregister) and 0."""


def is_path_failure(event: Mapping[str, Any]) -> bool:
    """A transition out of Up caused by a path failure: our own detection timer, or a
    router that reports one; not a router that re-created its session (new discriminator)."""
    if event.get("diag") == "control_detection_time_expired":
        return True
    return not event.get("remote_restarted") and event.get("remote_diag") in PATH_FAILURE_DIAGS


def _die_with_parent() -> Callable[[], None]:
    """The child's last step before exec: SIGKILL it when the daemon's thread that forked
    it ends. ``prctl`` is looked up here, in the parent: no dlopen between fork and exec."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


class BfdClient:
    """Owns the BFD child; see the module docstring."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        never_up_warn_s: float = NEVER_UP_WARN_S,
        command: list[str] | None = None,
    ) -> None:
        self._on_change = on_change
        self._never_up_warn_s = never_up_warn_s
        self._command = command or [sys.executable, "-m", "bgpspeaker.bfd"]
        self._lock = threading.Lock()
        self._wanted: dict[str, dict[str, Any]] = {}
        self._wanted_since: dict[str, float] = {}
        self._warned: set[str] = set()
        self._statuses: dict[str, BfdStatus] = {}
        self._down_events: dict[str, int] = {}
        """Per peer, across child restarts (the metric is a counter)."""
        self._holds: dict[str, holds.Hold] = {}
        """Per peer; a new child starts them afresh (see the module docstring)."""
        self._unseen: set[str] = set()
        """Peers taken down since the reconciler last asked (``blocked``): their hold may not
        end before it has seen it, or a short hold would end before BGP was taken down."""
        self._let_go: set[str] = set()
        """Peers whose hold ran out (BGP let go without BFD Up) and whose BFD is not Up since."""
        self._reconnect: set[str] = set()
        """Of those, the ones whose BFD came Up since: see ``reconnect_now``."""
        self._wake = threading.Event()
        """Wakes ``bfd-child`` to look at the holds again (or to stop)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._admin_down_sent = threading.Event()
        self.restarts = 0
        self._thread = threading.Thread(target=self._supervise, name="bfd-child", daemon=True)

    # -- the daemon's calls ----------------------------------------------------------

    def start(self) -> None:
        """Start the child (and restart it whenever it exits); ``want`` does it on first need."""
        if not self._thread.is_alive():
            self._thread.start()

    def want(self, sessions: Mapping[str, dict[str, Any]]) -> None:
        """Level-triggered: exactly these sessions (peer -> ``session_spec``)."""
        with self._lock:
            if dict(sessions) == self._wanted:
                return
            now = time.monotonic()
            for peer, spec in sessions.items():
                before = self._wanted.get(peer)
                if before is None or (before["local"], before["remote"]) != (spec["local"], spec["remote"]):
                    self._wanted_since[peer] = now
                    self._warned.discard(peer)
            for peer in set(self._wanted) - set(sessions):
                self._wanted_since.pop(peer, None)
                self._statuses.pop(peer, None)
                self._holds.pop(peer, None)
                self._unseen.discard(peer)
                self._let_go.discard(peer)
                self._reconnect.discard(peer)
            self._wanted = dict(sessions)
            proc = self._proc
            start = bool(sessions) and not self._thread.is_alive() and not self._stopping.is_set()
        if start:
            self.start()  # the child runs from the first wanted session on, and stays
        elif proc is not None:
            self._send(proc, {"op": "set", "sessions": list(sessions.values())})

    def blocked(self) -> frozenset[str]:
        """The peers whose BGP session must be down now (BFD Down after Up)."""
        with self._lock:
            if self._unseen:
                self._unseen.clear()
                self._wake.set()  # a hold that ran out meanwhile may end now
            return frozenset(
                peer for peer, status in self._statuses.items() if status.blocks_bgp and peer in self._wanted
            )

    def reconnect_now(self) -> frozenset[str]:
        """Peers whose BFD came Up after their hold ran out (once each): a BGP session of
        theirs still waiting to connect may start over now rather than at its next retry
        (ExaBGP waits for the kernel's SYN retransmissions, up to 16 s apart after 30 s).
        FRR does the same: a BFD Up starts a BGP peer that is not Established."""
        with self._lock:
            peers, self._reconnect = frozenset(self._reconnect & set(self._wanted)), set()
            return peers

    def statuses(self) -> dict[str, BfdStatus]:
        """Each wanted peer's BFD status (a copy)."""
        with self._lock:
            statuses = {peer: self._statuses.get(peer, BfdStatus()) for peer in self._wanted}
            return {
                peer: dataclasses.replace(status, down_events=self._down_events.get(peer, 0))
                for peer, status in statuses.items()
            }

    def admin_down(self, timeout_s: float = 1.0) -> bool:
        """Every session AdminDown (diag 7), packets out; True once the child confirmed."""
        proc = self._proc
        if proc is None or not self._wanted:
            return False
        self._admin_down_sent.clear()
        self._send(proc, {"op": "admin-down"})
        sent = self._admin_down_sent.wait(timeout_s)
        log.info("bfd_admin_down_sent", peers=sorted(self._wanted), confirmed=sent)
        return sent

    def stop(self, *, linger_s: float = 0.0, timeout_s: float = 2.0) -> None:
        """Stop the child; ``linger_s``: let it go on sending (AdminDown) this long first."""
        self._stopping.set()
        self._wake.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._send(proc, {"op": "shutdown", "linger_ms": int(linger_s * 1000)})
        try:
            proc.wait(linger_s + timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(1.0)
        self._thread.join(timeout_s)

    # -- the child -----------------------------------------------------------------

    def _send(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it died: the supervisor restarts it and sends the set again

    def _supervise(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self._command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    preexec_fn=_die_with_parent(),  # noqa: PLW1509  # prctl must run in the child; takes no locks
                )
            except OSError as error:
                log.error("bfd_start_failed", error=str(error))
                self._stopping.wait(5.0)
                continue
            with self._lock:
                self._proc = proc
                self._statuses = {}  # a new child starts every session Down: nothing blocks yet
                self._holds, self._unseen, self._let_go, self._reconnect = {}, set(), set(), set()
                wanted = list(self._wanted.values())
            log.info("bfd_started", pid=proc.pid, restarts=self.restarts)
            self._send(proc, {"op": "set", "sessions": wanted})
            self._on_change()
            assert proc.stdout is not None
            reader = threading.Thread(target=self._read, args=(proc.stdout,), name="bfd-events", daemon=True)
            reader.start()
            while proc.poll() is None:
                self._wake.wait(self._until_next_check())
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self._expire_holds()
                self._check_never_up()
            try:
                code = proc.wait(5.0 if self._stopping.is_set() else 0.1)
            except subprocess.TimeoutExpired:
                code = None
            reader.join(2.0)
            if self._stopping.is_set():
                log.info("bfd_stopped", pid=proc.pid, code=code)
                return
            self.restarts += 1
            failures = failures + 1 if time.monotonic() - started < 30 else 1
            log.error("bfd_exited", pid=proc.pid, code=code, restarting_in_s=min(0.2 * 2**failures, 5.0))
            with self._lock:
                self._proc = None
                self._statuses = {}
                self._holds, self._unseen, self._let_go, self._reconnect = {}, set(), set(), set()
            self._on_change()
            self._stopping.wait(min(0.2 * 2**failures, 5.0))

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("bfd_output_unparsed", line=raw[:200].decode("utf-8", "replace"))
                continue
            if isinstance(event, dict):
                self._on_event(event)
        stream.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "admin_down_sent":
            self._admin_down_sent.set()
            return
        if kind not in ("state", "timers"):
            if kind not in ("ready", "removed", "exiting"):
                log.warning("bfd_child_" + str(kind), **{k: v for k, v in event.items() if k != "event"})
            return
        peer = str(event.get("peer"))
        wall = time.time() - (time.monotonic() - float(event.get("monotonic", time.monotonic())))
        with self._lock:
            if peer not in self._wanted:
                return
            old = self._statuses.get(peer, BfdStatus())
            if kind == "timers":
                self._statuses[peer] = dataclasses.replace(old, tx_ms=event["tx_ms"], detect_ms=event["detect_ms"])
                return
            state = str(event["state"])
            now = time.monotonic()
            hold = self._holds.get(peer, holds.Hold())
            held_since = hold.held_since
            went_down = old.state == "up" and state != "up"
            came_up = state == "up" and old.state != "up"
            released: holds.Release | None = None
            reconnect = False
            if went_down and is_path_failure(event):
                base_s = float(self._wanted[peer].get("bgp_hold_down_ms", DEFAULT_BGP_HOLD_DOWN_MS)) / 1000
                hold = holds.take_down(hold, now=now, base_s=base_s)
                self._let_go.discard(peer)
                self._reconnect.discard(peer)  # taken down again: nothing to hurry
                if hold.held_since == now:
                    self._unseen.add(peer)
                    self._wake.set()
            elif came_up:
                hold, released = holds.bfd_up(hold, now=now)
                if peer in self._let_go:
                    self._let_go.discard(peer)
                    self._reconnect.add(peer)
                    reconnect = True
            self._holds[peer] = hold
            new = BfdStatus(
                state=state,
                remote_state=str(event.get("remote_state")),
                diag=str(event.get("diag")),
                remote_diag=str(event.get("remote_diag")),
                tx_ms=float(event.get("tx_ms", 0)),
                detect_ms=float(event.get("detect_ms", 0)),
                last_change=wall if "old" in event else old.last_change,
                was_up=old.was_up or state == "up",
                bgp_held=hold.held,
                hold_s=hold.hold_s,
                flaps=hold.flaps,
            )
            self._statuses[peer] = new
            if went_down:
                self._down_events[peer] = self._down_events.get(peer, 0) + 1
        if came_up:
            log.info(
                "bfd_up",
                peer=peer,
                tx_ms=new.tx_ms,
                detect_ms=new.detect_ms,
                remote_discriminator=event.get("remote_discriminator"),
            )
            if released is not None:
                log.info("bfd_hold_ended", peer=peer, reason=str(released), held_s=round(now - (held_since or now), 3))
        elif went_down:
            log.warning(
                "bfd_down",
                peer=peer,
                state=state,
                diag=new.diag,
                remote_state=new.remote_state,
                remote_diag=new.remote_diag,
                remote_discriminator=event.get("remote_discriminator"),
                remote_restarted=bool(event.get("remote_restarted")),
                takes_bgp_down=new.blocks_bgp and not old.blocks_bgp,
                bgp_hold_s=new.hold_s if new.blocks_bgp else None,
                flaps=new.flaps,
            )
            if new.blocks_bgp and not old.blocks_bgp and new.flaps > 1:
                log.warning(
                    "bfd_flap_dampened",
                    peer=peer,
                    flaps=new.flaps,
                    bgp_hold_s=new.hold_s,
                    hint="BFD failed again soon after BGP came back: BGP stays down the whole hold, BFD Up or not",
                )
        if old.blocks_bgp != new.blocks_bgp or reconnect:
            self._on_change()

    def _until_next_check(self) -> float:
        """Seconds until the next hold runs out, at most 1 (the never-Up check's pace)."""
        with self._lock:
            deadlines = [h.deadline for p, h in self._holds.items() if h.deadline is not None and p not in self._unseen]
        return max(0.0, min([1.0, *(d - time.monotonic() for d in deadlines)]))

    def _expire_holds(self) -> None:
        """End the holds whose bound passed: BGP reconnects without waiting for BFD, and BFD
        must come Up again before it can take BGP down (``bfd_never_up`` if it does not)."""
        now = time.monotonic()
        ended: list[tuple[str, holds.Hold, float, bool]] = []
        with self._lock:
            for peer, before in list(self._holds.items()):
                if peer in self._unseen:
                    continue
                since = before.held_since
                hold, released = holds.expire(before, now=now)
                if released is None or since is None:
                    continue
                self._holds[peer] = hold
                status = self._statuses.get(peer, BfdStatus())
                up = status.state == "up"  # a flap's hold: BFD may be Up already, and armed
                self._statuses[peer] = dataclasses.replace(status, bgp_held=False, was_up=up)
                if not up:
                    self._wanted_since[peer] = now  # the never-Up warning counts from the reconnect
                    self._warned.discard(peer)
                    self._let_go.add(peer)
                ended.append((peer, hold, now - since, up))
        for peer, hold, held_s, up in ended:
            log.warning(
                "bfd_hold_ended",
                peer=peer,
                reason=str(holds.Release.HOLD_EXPIRED),
                held_s=round(held_s, 3),
                flaps=hold.flaps,
                bfd_state="up" if up else "not_up",
                hint="BGP reconnects; BFD takes it down again only from Up"
                + ("" if up else " (not Up since: BGP runs without BFD until it is)"),
            )
        if ended:
            self._on_change()

    def _check_never_up(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [
                peer
                for peer, since in self._wanted_since.items()
                if peer not in self._warned
                and now - since >= self._never_up_warn_s
                and not self._statuses.get(peer, BfdStatus()).was_up
            ]
            self._warned.update(late)
            specs = {peer: self._wanted[peer] for peer in late}
        for peer, spec in specs.items():
            log.warning(
                "bfd_never_up",
                peer=peer,
                remote=spec.get("remote"),
                waited_s=self._never_up_warn_s,
                hint="the router may have no BFD for this neighbor; BGP stays up without it",
            )

    def pid(self) -> int | None:
        """The child's PID, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None
