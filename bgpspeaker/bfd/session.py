"""One BFD session's state machine (RFC 5880 asynchronous mode), pure: no sockets, no
clock. Every method takes ``now`` (monotonic seconds), so tests drive time by hand.

The engine asks ``next_deadline()`` when to wake, calls ``expire(now)`` for the
detection timer and ``outgoing(now)`` for the packet due now (if any), and hands each
received packet to ``receive(packet, now)``. State changes come back as ``Transition``
values; the session logs nothing.

Timers (section 6.8): while the session is not Up the advertised Desired Min TX is at
least one second (6.8.3). A change of the advertised intervals while Up (coming Up,
which leaves the slow rate, or a new profile) runs a Poll sequence: packets carry P
until one with F comes back; until then an increased TX interval and a decreased RX
interval are not used yet (6.8.3). The transmit interval is the larger of ours and the
remote's Required Min RX, with 0-25 % jitter (10-25 % when Detect Mult is 1, 6.8.7);
the detection time is the remote's Detect Mult times the larger of our Required Min RX
and the remote's Desired Min TX (6.8.4).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from bgpspeaker.bfd.packet import ControlPacket, Diag, State

__all__ = ["SLOW_TX_US", "Session", "SessionView", "Timers", "Transition", "jittered"]

SLOW_TX_US = 1_000_000
"""Desired Min TX while not Up: "not less than one second" (RFC 5880 section 6.8.3)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timers:
    """What this end asks for. Intervals in microseconds."""

    desired_min_tx_us: int = 300_000
    required_min_rx_us: int = 300_000
    detect_mult: int = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """The session changed state at ``at`` (monotonic)."""

    old: State
    new: State
    diag: Diag | int
    """Our diagnostic: why we left Up (or ``NONE``)."""
    remote_state: State
    remote_diag: Diag | int
    at: float
    remote_restarted: bool = False
    """The packet that caused it came from a new session of the remote (another My
    Discriminator): the remote restarted or re-created its session, the path is fine."""


@dataclasses.dataclass(frozen=True, slots=True)
class SessionView:
    """A session as it stands, for status."""

    state: State
    remote_state: State
    diag: Diag | int
    remote_diag: Diag | int
    remote_discriminator: int
    tx_interval_us: int
    """The interval between our packets now (before jitter); 0 while we may not send."""
    detect_time_us: int
    """How long without a packet before Down; 0 until a packet came."""
    polling: bool


def jittered(interval_us: int, detect_mult: int, draw: float) -> float:
    """``interval_us`` less 0-25 % (at least 10 % when ``detect_mult`` is 1), in seconds.
    ``draw`` is uniform in [0, 1)."""
    factor = 0.75 + (0.15 if detect_mult == 1 else 0.25) * draw
    return interval_us * factor / 1e6


class Session:
    """One BFD session: the variables of RFC 5880 section 6.8.1 and their rules."""

    def __init__(
        self,
        *,
        my_discriminator: int,
        timers: Timers,
        passive: bool,
        now: float,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.my_discriminator = my_discriminator
        self.state = State.DOWN
        self.remote_state = State.DOWN
        self.diag: Diag | int = Diag.NONE
        self.remote_diag: Diag | int = Diag.NONE
        self.remote_discriminator = 0
        self.remote_min_rx_us = 1
        """bfd.RemoteMinRxInterval; initialised to 1 (section 6.8.1)."""
        self.remote_desired_tx_us = 0
        self.remote_detect_mult = 0
        self.passive = passive
        self._draw = draw
        self._configured = timers
        self._advertised = self._wanted()
        self._tx_in_use_us = self._advertised.desired_min_tx_us
        self._rx_in_use_us = self._advertised.required_min_rx_us
        self._polling = False
        self._final_owed = False
        self._last_rx: float | None = None
        self._last_tx: float | None = None
        self._next_tx = now

    # -- reading -------------------------------------------------------------------

    @property
    def polling(self) -> bool:
        """A Poll sequence is running (our packets carry P)."""
        return self._polling

    @property
    def last_received(self) -> float | None:
        """When the last packet came (monotonic), or None."""
        return self._last_rx

    @property
    def advertised(self) -> Timers:
        """What our packets carry now."""
        return self._advertised

    def tx_interval_us(self) -> int:
        """Our periodic interval before jitter; 0 while we must not send periodically."""
        if self.remote_min_rx_us == 0 or (self.passive and self.remote_discriminator == 0):
            return 0
        return max(self._tx_in_use_us, self.remote_min_rx_us)

    def detect_time_us(self) -> int:
        """The detection time; 0 before the remote's first packet."""
        if self.remote_detect_mult == 0:
            return 0
        return self.remote_detect_mult * max(self._rx_in_use_us, self.remote_desired_tx_us)

    def view(self) -> SessionView:
        """A snapshot for status."""
        return SessionView(
            state=self.state,
            remote_state=self.remote_state,
            diag=self.diag,
            remote_diag=self.remote_diag,
            remote_discriminator=self.remote_discriminator,
            tx_interval_us=self.tx_interval_us(),
            detect_time_us=self.detect_time_us(),
            polling=self._polling,
        )

    def next_deadline(self) -> float | None:
        """When the engine must call ``expire`` or ``outgoing`` next (monotonic), or None."""
        deadlines: list[float] = []
        if self._final_owed:
            return self._last_rx if self._last_rx is not None else 0.0
        if self.tx_interval_us():
            deadlines.append(self._next_tx)
        detect = self._detect_deadline()
        if detect is not None:
            deadlines.append(detect)
        return min(deadlines) if deadlines else None

    def _detect_deadline(self) -> float | None:
        if self.state not in (State.INIT, State.UP) or self._last_rx is None or not self.detect_time_us():
            return None
        return self._last_rx + self.detect_time_us() / 1e6

    # -- events --------------------------------------------------------------------

    def receive(self, packet: ControlPacket, now: float) -> list[Transition]:
        """A decoded packet for this session (section 6.8.6, after the checks in
        ``packet.decode`` and the demultiplexing by the engine)."""
        restarted = self.remote_discriminator not in (0, packet.my_discriminator)
        interval_before = self.tx_interval_us()
        self.remote_discriminator = packet.my_discriminator
        self.remote_state = packet.state
        self.remote_diag = packet.diag
        self.remote_min_rx_us = packet.required_min_rx_us
        self.remote_desired_tx_us = packet.desired_min_tx_us
        self.remote_detect_mult = packet.detect_mult
        self._last_rx = now
        interval = self.tx_interval_us()
        if interval and self._last_tx is not None and (not interval_before or interval < interval_before):
            # The remote accepts packets faster now (it came Up and left its slow rate): the
            # next one must not wait out the old interval, or the remote, whose detection time
            # already counts on the new one, declares us dead (FRR 8.4 does, measured).
            self._next_tx = min(
                self._next_tx, self._last_tx + jittered(interval, self._advertised.detect_mult, self._draw())
            )
        if packet.final and self._polling:
            self._polling = False
            self._tx_in_use_us = self._advertised.desired_min_tx_us
            self._rx_in_use_us = self._advertised.required_min_rx_us
        if packet.poll:
            self._final_owed = True
        if self.state == State.ADMIN_DOWN:
            return []
        if restarted and self.state != State.DOWN:
            return [self._move(State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, now, remote_restarted=True)]
        if packet.state == State.ADMIN_DOWN:
            if self.state != State.DOWN:
                return [self._move(State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, now)]
            return []
        if self.state == State.DOWN:
            if packet.state == State.DOWN:
                return [self._move(State.INIT, Diag.NONE, now)]
            if packet.state == State.INIT:
                return [self._move(State.UP, Diag.NONE, now)]
        elif self.state == State.INIT:
            if packet.state in (State.INIT, State.UP):
                return [self._move(State.UP, Diag.NONE, now)]
        elif packet.state == State.DOWN:  # we are Up
            return [self._move(State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, now)]
        return []

    def expire(self, now: float) -> list[Transition]:
        """The detection timer: no packet for a detection time while Init or Up -> Down."""
        deadline = self._detect_deadline()
        if deadline is None or now < deadline:
            return []
        self.remote_discriminator = 0
        self.remote_state = State.DOWN
        self.remote_min_rx_us = 1
        return [self._move(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, now)]

    def outgoing(self, now: float) -> ControlPacket | None:
        """The packet to send now, if one is due (a Final answers a Poll at once); the
        next periodic one is scheduled with jitter."""
        if self._final_owed:  # outside the schedule: a periodic packet due too goes next call
            self._final_owed = False
            return self._packet(poll=False, final=True)
        interval = self.tx_interval_us()
        if interval == 0 or now < self._next_tx:
            return None
        self._next_tx = now + jittered(interval, self._advertised.detect_mult, self._draw())
        self._last_tx = now
        return self._packet(poll=self._polling, final=False)

    def admin_down(self, now: float) -> list[Transition]:
        """Administratively down (section 6.8.16): diag 7, and the next packet goes now."""
        if self.state == State.ADMIN_DOWN:
            return []
        self._next_tx = now
        return [self._move(State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, now)]

    def retune(self, timers: Timers, *, passive: bool, now: float) -> None:
        """A new profile: a Poll sequence when Up, at once otherwise."""
        self._configured = timers
        self.passive = passive
        self._advertise(now)

    # -- internals -----------------------------------------------------------------

    def _wanted(self) -> Timers:
        if self.state == State.UP:
            return self._configured
        return dataclasses.replace(
            self._configured, desired_min_tx_us=max(self._configured.desired_min_tx_us, SLOW_TX_US)
        )

    def _advertise(self, now: float) -> None:
        wanted = self._wanted()
        if wanted == self._advertised:
            return
        self._advertised = wanted
        if self.state == State.UP:
            # Until the Final: a faster TX and a slower RX at once, the others after.
            self._tx_in_use_us = min(self._tx_in_use_us, wanted.desired_min_tx_us)
            self._rx_in_use_us = max(self._rx_in_use_us, wanted.required_min_rx_us)
            self._polling = True
            self._next_tx = now
        else:
            self._tx_in_use_us = wanted.desired_min_tx_us
            self._rx_in_use_us = wanted.required_min_rx_us
            self._polling = False

    def _move(self, new: State, diag: Diag | int, now: float, *, remote_restarted: bool = False) -> Transition:
        old = self.state
        self.state = new
        if new == State.UP:
            self.diag = Diag.NONE
        elif diag != Diag.NONE:
            self.diag = diag
        if State.UP in (old, new):
            self._polling = False  # a Poll of the old session state ends with it
            self._advertise(now)
        return Transition(
            old=old,
            new=new,
            diag=self.diag,
            remote_state=self.remote_state,
            remote_diag=self.remote_diag,
            at=now,
            remote_restarted=remote_restarted,
        )

    def _packet(self, *, poll: bool, final: bool) -> ControlPacket:
        return ControlPacket(
            state=self.state,
            my_discriminator=self.my_discriminator,
            your_discriminator=self.remote_discriminator,
            diag=self.diag,
            detect_mult=self._advertised.detect_mult,
            desired_min_tx_us=self._advertised.desired_min_tx_us,
            required_min_rx_us=self._advertised.required_min_rx_us,
            poll=poll,
            final=final,
        )
