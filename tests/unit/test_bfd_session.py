"""The BFD session state machine, driven by explicit ``now`` (no sockets, no sleeping)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from bgpspeaker.bfd.packet import ControlPacket, Diag, State
from bgpspeaker.bfd.session import SLOW_TX_US, Session, Timers, jittered

FAST = Timers(desired_min_tx_us=300_000, required_min_rx_us=300_000, detect_mult=3)


def session(discriminator: int = 1, *, timers: Timers = FAST, passive: bool = False, now: float = 0.0) -> Session:
    """A session whose jitter draw is 0.5 (the interval times 0.875)."""
    return Session(my_discriminator=discriminator, timers=timers, passive=passive, now=now, draw=lambda: 0.5)


def remote(state: State, **fields: object) -> ControlPacket:
    """A packet from the remote (discriminator 99) addressed to session 1."""
    base = ControlPacket(
        state=state,
        my_discriminator=99,
        your_discriminator=0 if state in (State.DOWN, State.ADMIN_DOWN) else 1,
        desired_min_tx_us=300_000,
        required_min_rx_us=300_000,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]  # test helper: fields by name


def handshake(a: Session, b: Session, now: float) -> float:
    """Exchange packets until both are Up; returns the time reached."""
    for _ in range(20):
        for sender, receiver in ((a, b), (b, a)):
            packet = sender.outgoing(now)
            if packet is not None:
                receiver.receive(packet, now)
        if a.state == b.state == State.UP:
            return now
        now += 0.01
    raise AssertionError(f"no handshake: {a.state.label}/{b.state.label}")


def test_three_way_handshake() -> None:
    """Down -> Init on the remote's Down, Init -> Up on its Init or Up, Down -> Up on its Init."""
    a, b = session(1), session(2)
    to_b = a.outgoing(0.0)
    assert to_b is not None and to_b.state == State.DOWN and to_b.your_discriminator == 0
    [t] = b.receive(to_b, 0.0)
    assert (t.old, t.new) == (State.DOWN, State.INIT)
    to_a = b.outgoing(0.0)
    assert to_a is not None and to_a.state == State.INIT and to_a.your_discriminator == 1
    [t] = a.receive(to_a, 0.0)
    assert (t.old, t.new, t.diag) == (State.DOWN, State.UP, Diag.NONE)
    [t] = b.receive(a.outgoing(0.01) or remote(State.UP), 0.01)
    assert (t.old, t.new) == (State.INIT, State.UP)


@pytest.mark.parametrize(
    ("local", "received", "want", "diag"),
    [
        (State.DOWN, State.DOWN, State.INIT, Diag.NONE),
        (State.DOWN, State.INIT, State.UP, Diag.NONE),
        (State.DOWN, State.UP, State.DOWN, Diag.NONE),
        (State.DOWN, State.ADMIN_DOWN, State.DOWN, Diag.NONE),
        (State.INIT, State.INIT, State.UP, Diag.NONE),
        (State.INIT, State.UP, State.UP, Diag.NONE),
        (State.INIT, State.DOWN, State.INIT, Diag.NONE),
        (State.INIT, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
        (State.UP, State.DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
        (State.UP, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
        (State.UP, State.INIT, State.UP, Diag.NONE),
        (State.UP, State.UP, State.UP, Diag.NONE),
    ],
    ids=lambda value: value.label if isinstance(value, (State, Diag)) else str(value),
)
def test_transition_table(local: State, received: State, want: State, diag: Diag) -> None:
    """RFC 5880 section 6.8.6's state table, row by row."""
    s = session()
    if local in (State.INIT, State.UP):
        s.receive(remote(State.DOWN), 0.0)
    if local == State.UP:
        s.receive(remote(State.UP), 0.0)
    assert s.state == local
    s.receive(remote(received), 0.1)
    assert (s.state, s.diag) == (want, diag)


def test_detection_time_expiry() -> None:
    """Up and silent: Down with diag 1 exactly one detection time (3 x 300 ms) after the last packet."""
    a, b = session(1), session(2)
    now = handshake(a, b, 0.0)
    # Finish the Poll sequence that coming Up starts (1 s -> 300 ms).
    for _ in range(5):
        now += 0.01
        for sender, receiver in ((a, b), (b, a)):
            packet = sender.outgoing(now)
            if packet is not None:
                receiver.receive(packet, now)
    assert not a.polling and not b.polling
    assert a.detect_time_us() == 900_000
    last = a.last_received
    assert last is not None
    assert a.expire(last + 0.899) == []
    [t] = a.expire(last + 0.9)
    assert (t.old, t.new, t.diag) == (State.UP, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED)
    assert a.remote_discriminator == 0 and a.advertised.desired_min_tx_us == SLOW_TX_US


def test_detection_uses_the_slower_of_our_rx_and_their_tx() -> None:
    """Remote sends every 500 ms with multiplier 5: detection 2.5 s even though we accept 300 ms."""
    s = session()
    s.receive(remote(State.DOWN, desired_min_tx_us=500_000, detect_mult=5), 0.0)
    assert s.detect_time_us() == 5 * 500_000
    s.receive(remote(State.UP, desired_min_tx_us=500_000, detect_mult=5), 0.1)
    s.receive(remote(State.UP, desired_min_tx_us=500_000, detect_mult=5, final=True), 0.2)
    assert s.detect_time_us() == 2_500_000


def test_slow_rate_while_not_up() -> None:
    """Down: Desired Min TX is 1 s on the wire and packets go at most every second (with jitter)."""
    s = session()
    first = s.outgoing(0.0)
    assert first is not None and first.desired_min_tx_us == SLOW_TX_US and first.required_min_rx_us == 300_000
    assert s.outgoing(0.5) is None
    assert s.next_deadline() == pytest.approx(0.875)
    assert s.outgoing(0.875) is not None


def test_coming_up_polls_to_the_fast_rate() -> None:
    """Up: the next packets carry P with 300 ms until the remote's Final; then 300 ms is the interval."""
    s = session()
    s.receive(remote(State.DOWN, desired_min_tx_us=1_000_000), 0.0)
    s.receive(remote(State.UP, desired_min_tx_us=1_000_000), 0.1)
    assert s.state == State.UP and s.polling
    packet = s.outgoing(0.1)
    assert packet is not None and packet.poll and packet.desired_min_tx_us == 300_000
    assert s.tx_interval_us() == 300_000  # a faster TX applies at once
    s.receive(remote(State.UP, final=True), 0.15)
    assert not s.polling
    again = s.outgoing(0.5)
    assert again is not None and not again.poll


def test_poll_is_answered_by_a_final_at_once() -> None:
    """A received P bit: the very next call sends F, outside the periodic schedule."""
    s = session()
    s.receive(remote(State.DOWN), 0.0)
    s.outgoing(0.0)
    s.receive(remote(State.UP, poll=True), 0.05)
    assert s.next_deadline() == 0.05
    packet = s.outgoing(0.05)
    assert packet is not None and packet.final and not packet.poll


def test_retune_while_up_keeps_the_old_tx_until_the_final() -> None:
    """300 ms -> 600 ms while Up: P with 600 ms on the wire, the interval stays 300 ms until F."""
    s = session()
    s.receive(remote(State.DOWN), 0.0)
    s.receive(remote(State.UP), 0.1)
    s.receive(remote(State.UP, final=True), 0.2)
    slower = Timers(desired_min_tx_us=600_000, required_min_rx_us=600_000, detect_mult=3)
    s.retune(slower, passive=False, now=1.0)
    packet = s.outgoing(1.0)
    assert packet is not None and packet.poll and packet.desired_min_tx_us == 600_000
    assert s.tx_interval_us() == 300_000
    assert s.detect_time_us() == 3 * 600_000  # a larger RX applies at once
    s.receive(remote(State.UP, final=True), 1.1)
    assert s.tx_interval_us() == 600_000 and not s.polling


def test_retune_to_faster_rx_keeps_the_old_detection_until_the_final() -> None:
    """300 -> 100 ms RX while Up: detection stays 900 ms until the Final."""
    s = session()
    s.receive(remote(State.DOWN, desired_min_tx_us=100_000), 0.0)
    s.receive(remote(State.UP, desired_min_tx_us=100_000), 0.1)
    s.receive(remote(State.UP, desired_min_tx_us=100_000, final=True), 0.2)
    assert s.detect_time_us() == 900_000
    s.retune(Timers(100_000, 100_000, 3), passive=False, now=1.0)
    assert s.detect_time_us() == 900_000
    s.receive(remote(State.UP, desired_min_tx_us=100_000, final=True), 1.1)
    assert s.detect_time_us() == 300_000


def test_admin_down() -> None:
    """Local AdminDown: diag 7, a packet at once, and received packets change nothing."""
    s = session()
    s.receive(remote(State.DOWN), 0.0)
    s.receive(remote(State.UP), 0.1)
    s.outgoing(0.1)
    [t] = s.admin_down(0.2)
    assert (t.old, t.new, t.diag) == (State.UP, State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN)
    packet = s.outgoing(0.2)
    assert packet is not None and packet.state == State.ADMIN_DOWN and packet.diag == Diag.ADMINISTRATIVELY_DOWN
    assert s.receive(remote(State.DOWN), 0.3) == [] and s.state == State.ADMIN_DOWN


def test_passive_waits_for_the_remote() -> None:
    """Passive: silent until the remote's first packet, then it answers."""
    s = session(passive=True)
    assert s.outgoing(0.0) is None and s.next_deadline() is None
    s.receive(remote(State.DOWN), 1.0)
    packet = s.outgoing(1.0)
    assert packet is not None and packet.state == State.INIT


def test_remote_min_rx_zero_stops_periodic_packets() -> None:
    """A remote Required Min RX of 0 means: send it nothing periodically."""
    s = session()
    s.receive(remote(State.DOWN, required_min_rx_us=0), 0.0)
    s.outgoing(0.0)
    assert s.outgoing(10.0) is None


def test_tx_interval_honours_the_remote_min_rx() -> None:
    """We may send no faster than the remote accepts: max(our 300 ms, its 2 s)."""
    s = session()
    s.receive(remote(State.DOWN, required_min_rx_us=2_000_000), 0.0)
    assert s.tx_interval_us() == 2_000_000


@pytest.mark.parametrize(
    ("mult", "draw", "want_s"),
    [(3, 0.0, 0.225), (3, 0.999999, 0.3), (2, 0.5, 0.2625), (1, 0.0, 0.225), (1, 0.999999, 0.27)],
    ids=["mult3-min", "mult3-max", "mult2-mid", "mult1-min", "mult1-max-90pct"],
)
def test_jitter_bounds(mult: int, draw: float, want_s: float) -> None:
    """75-100 % of the interval, at most 90 % when Detect Mult is 1 (6.8.7)."""
    assert jittered(300_000, mult, draw) == pytest.approx(want_s, abs=1e-6)


def test_jitter_of_a_running_session_stays_in_bounds() -> None:
    """Over many packets with a real random draw every gap is 75-100 % of the interval."""
    import random

    rng = random.Random(7)
    s = Session(my_discriminator=1, timers=FAST, passive=False, now=0.0, draw=rng.random)
    sent: list[float] = []
    now = 0.0
    while len(sent) < 200:
        deadline = s.next_deadline()
        assert deadline is not None
        now = deadline
        if s.outgoing(now) is not None:
            sent.append(now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.75 and max(gaps) <= 1.0  # Down: the 1 s slow rate


def test_a_new_remote_session_is_flagged() -> None:
    """Up, then packets from another discriminator (the remote re-created its session, as FRR
    8.4 does when its BGP session comes up): Down, marked remote_restarted; then Up again."""
    s = session()
    s.receive(remote(State.DOWN), 0.0)
    s.receive(remote(State.UP), 0.1)
    [t] = s.receive(remote(State.DOWN, my_discriminator=77), 0.2)
    assert (t.old, t.new, t.remote_restarted) == (State.UP, State.DOWN, True)
    [t] = s.receive(remote(State.DOWN, my_discriminator=77), 0.3)
    assert (t.new, t.remote_restarted) == (State.INIT, False)


def test_a_faster_remote_rx_brings_the_next_packet_forward() -> None:
    """The remote leaves its 1 s slow rate (Required Min RX 1 s -> 300 ms): our next packet is
    due 300 ms (with jitter) after the last one, not a second after it."""
    s = session()
    s.receive(remote(State.DOWN, required_min_rx_us=1_000_000), 0.0)
    s.receive(remote(State.UP, required_min_rx_us=1_000_000), 0.0)
    assert s.outgoing(0.0) is not None  # the Poll after coming Up
    assert s.next_deadline() == pytest.approx(0.875)
    s.receive(remote(State.UP, required_min_rx_us=300_000), 0.05)
    assert s.next_deadline() == pytest.approx(0.2625)
