"""BFD in the multi-node lab: the router runs zebra + bfdd + bgpd with a 300 ms x 3 profile
for every node, the speakers the same profile; real UDP flows, each probed every 20 ms.

holdTime stays at its 90 s default, so a path that leaves within seconds was taken
away by BFD. Two routers: one that names the nodes as neighbors (FRR keeps their BFD
sessions while BGP is down) and one that accepts them by ``bgp listen range`` (FRR
creates a dynamic neighbor's BFD session with its BGP session and deletes both
together), where the speaker's ``bgpHoldDown`` (5 s by default) brings BGP back."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import pytest

from lab.bfdrouter import FrrBfd
from lab.multinode import BFD_PROFILE, SPEAKER_BFD, VIP, MultiNode, multinode_lab, speaker_config
from lab.netns import wait_until
from tests.integration.conftest import require_prerequisites

PREFIX = f"{VIP}/32"
ALL = {"node-1", "node-2", "node-3"}


@pytest.fixture(scope="module")
def built() -> Iterator[MultiNode]:
    require_prerequisites()
    with multinode_lab("mb", bfd=True) as topo:
        yield topo


@pytest.fixture
def mn(built: MultiNode) -> Iterator[MultiNode]:
    yield built
    built.reset()


@pytest.fixture(scope="module")
def built_listen_range() -> Iterator[MultiNode]:
    require_prerequisites()
    with multinode_lab("ml", bfd=True, listen_range=True) as topo:
        yield topo


@pytest.fixture
def listen(built_listen_range: MultiNode) -> Iterator[MultiNode]:
    yield built_listen_range
    built_listen_range.reset()


def start(mn: MultiNode, **config: str) -> None:
    make = functools.partial(speaker_config, bfd_profile=BFD_PROFILE, extra=SPEAKER_BFD, **config)
    for n in mn.nodes.values():
        mn.set_config(n.name, make(n.index))
    mn.vip_service("web")
    mn.start_speakers()
    mn.wait_multipath(PREFIX, ALL)
    assert isinstance(mn.frr, FrrBfd)
    frr = mn.frr
    wait_until(
        lambda: all((frr.bfd_peer(n.address) or {}).get("status") == "up" for n in mn.nodes.values()),
        timeout_s=30,
        desc=f"BFD up with the three nodes in bfdd; seen {frr.bfd_peers()}",
    )


def test_node_hang_detected_by_bfd(mn: MultiNode) -> None:
    """node-2 goes dark: the router drops its path within 1.5 s (300 ms x 3, holdTime 90 s),
    and no flow stays dark for 2 s."""
    start(mn)
    with mn.prober(flows=60) as running:
        time.sleep(0.5)  # a measurement window before the fault
        dark_at = time.monotonic()
        mn.go_dark("node-2")
        mn.wait_multipath(PREFIX, {"node-1", "node-3"}, timeout_s=15)
        detected_s = time.monotonic() - dark_at
        time.sleep(0.5)
    report = running.report()
    print(f"BFD node hang: path dropped after {detected_s:.2f} s; {report.summary()}")
    assert detected_s < 1.5, f"path dropped after {detected_s:.2f} s"
    assert 0 < report.longest_dark_s < 2.0, report.summary()


def test_rolling_restart_with_bfd_and_graceful_restart_loses_nothing(mn: MultiNode) -> None:
    """gracefulRestart + shutdown keep + BFD: the three speakers restarted one after the
    other; 0 probes lost, 0 flows moved."""
    start(mn, graceful_restart="120s", shutdown="{mode: keep}")
    addresses = {n.address for n in mn.nodes.values()}
    resets_before = bfd_resets(mn)
    with mn.prober(flows=60) as running:
        time.sleep(0.5)  # traffic flowing before the first restart (a measurement window)
        for name in sorted(mn.nodes):
            mn.restart_speaker(name)
            wait_until(
                lambda: mn.multipath(PREFIX) == addresses and not any(p.get("stale") for p in mn.paths(PREFIX)),
                timeout_s=30,
                desc=f"{name}'s path refreshed (not stale) and all three in the multipath set",
            )
    report = running.report()
    resets = bfd_resets(mn) - resets_before
    print(f"BFD + GR rolling restart: {report.summary()}; router resets with Cease/BFD Down: {resets}")
    # Before the BFD child rescheduled its next packet when the router left its slow rate,
    # FRR closed about a third of new sessions with Cease/BFD Down ~0.9 s after BFD Up.
    assert (report.lost, report.moved, resets, set(report.split())) == (0, 0, 0, ALL), report.summary()


def bfd_resets(mn: MultiNode) -> int:
    """BGP sessions the router closed with Cease, subcode 10 (BFD Down), over every node's log."""
    return sum(
        1
        for n in mn.nodes.values()
        for event in n.speaker.events("peer_down")
        if "(6,10)" in str(event.get("reason", ""))
    )


def test_node_back_at_bfd_up_after_hang(mn: MultiNode) -> None:
    """Named neighbors (FRR keeps their BFD sessions): node-2 dark, taken out by BFD, lit
    again: back as soon as BFD is Up, well before the 5 s bgpHoldDown would have let BGP go."""
    start(mn)
    speaker = mn.nodes["node-2"].speaker
    seen = {event: len(speaker.events(event)) for event in ("session_stopping", "bfd_hold_ended", "session_restarting")}
    mn.go_dark("node-2")
    mn.wait_multipath(PREFIX, {"node-1", "node-3"}, timeout_s=15)
    speaker.wait_event("session_stopping", timeout_s=10, after=seen["session_stopping"])
    lit = time.monotonic()
    mn.come_back("node-2")
    mn.wait_multipath(PREFIX, ALL, timeout_s=30)
    back_s = time.monotonic() - lit
    ended = speaker.wait_event("bfd_hold_ended", timeout_s=5, after=seen["bfd_hold_ended"])
    print(f"BFD hang, named neighbors: back {back_s:.2f} s after lit; hold ended by {ended['reason']}")
    assert ended["reason"] == "bfd_up", ended
    assert back_s < 4.0, f"back {back_s:.2f} s after lit"


def test_node_back_at_bfd_up_after_a_hang_longer_than_the_hold(mn: MultiNode) -> None:
    """Named neighbors, node-2 dark past its 5 s hold: BGP is let go without BFD and
    connects into a dead path (ExaBGP waits on the kernel's SYN retransmissions); lit
    again 20 s after the hold ended, BFD Up restarts the connecting session: back within
    4 s (without that restart: 16 s after lit, measured)."""
    start(mn)
    speaker = mn.nodes["node-2"].speaker
    seen = {event: len(speaker.events(event)) for event in ("session_stopping", "bfd_hold_ended", "session_restarting")}
    mn.go_dark("node-2")
    mn.wait_multipath(PREFIX, {"node-1", "node-3"}, timeout_s=15)
    ended = speaker.wait_event("bfd_hold_ended", timeout_s=15, after=seen["bfd_hold_ended"])
    assert ended["reason"] == "hold_expired", ended
    time.sleep(20.0)  # the outage itself: BGP connecting into a dead path meanwhile
    lit = time.monotonic()
    mn.come_back("node-2")
    mn.wait_multipath(PREFIX, ALL, timeout_s=30)
    back_s = time.monotonic() - lit
    print(f"BFD hang past the hold, named neighbors: back {back_s:.2f} s after lit")
    restarts = speaker.events("session_restarting")[seen["session_restarting"] :]
    assert [event.get("reason") for event in restarts] == ["bfd_up"], speaker.tail()
    assert back_s < 4.0, f"back {back_s:.2f} s after lit"


def test_listen_range_node_back_after_bfd_hang(listen: MultiNode) -> None:
    """bgp listen range: node-2 dark, taken out by BFD (< 1.5 s); lit again, nothing brings
    BFD Up (the router deleted the dynamic neighbor and its BFD session), so BGP reconnects
    once bgpHoldDown (5 s) has passed and the node is back. BFD comes Up with the new
    session and catches a second hang as fast; that one is a flap: held 10 s, then back."""
    start(listen)
    speaker = listen.nodes["node-2"].speaker
    assert isinstance(listen.frr, FrrBfd)
    frr = listen.frr
    figures: list[str] = []
    seen = {event: len(speaker.events(event)) for event in ("bfd_down", "bfd_hold_ended", "bfd_flap_dampened")}
    with listen.prober(flows=60) as running:
        for round_, hold_s in enumerate((5.0, 10.0)):
            ups = len(speaker.events("bfd_up"))
            dark_at = time.monotonic()
            listen.go_dark("node-2")
            listen.wait_multipath(PREFIX, {"node-1", "node-3"}, timeout_s=15)
            detected_s = time.monotonic() - dark_at
            down = speaker.wait_event("bfd_down", timeout_s=10, after=seen["bfd_down"] + round_)
            listen.come_back("node-2")
            listen.wait_multipath(PREFIX, ALL, timeout_s=hold_s + 30)
            back_s = time.monotonic() - dark_at
            ended = speaker.wait_event("bfd_hold_ended", timeout_s=5, after=seen["bfd_hold_ended"] + round_)
            # BFD Up again with the router's new session: it can take BGP down again.
            speaker.wait_event("bfd_up", timeout_s=15, after=ups)
            wait_until(
                lambda: (frr.bfd_peer(listen.nodes["node-2"].address) or {}).get("status") == "up",
                timeout_s=15,
                desc=f"node-2's BFD session up again in bfdd; seen {frr.bfd_peers()}",
            )
            figures.append(
                f"hang {round_ + 1}: out after {detected_s:.2f} s, back {back_s:.2f} s after the fault"
                f" (hold {down['bgp_hold_s']} s, ended by {ended['reason']} after {ended['held_s']} s)"
            )
            assert detected_s < 1.5, figures
            assert (down["takes_bgp_down"], down["bgp_hold_s"], down["flaps"]) == (True, hold_s, round_ + 1), down
            assert ended["reason"] == "hold_expired", ended
            assert hold_s - 0.5 < back_s < hold_s + 10.0, figures
    report = running.report()
    print(f"BFD hang with bgp listen range: {'; '.join(figures)}; {report.summary()}")
    dampened = speaker.events("bfd_flap_dampened")[seen["bfd_flap_dampened"] :]
    assert [(e["flaps"], e["bgp_hold_s"]) for e in dampened] == [(2, 10.0)], "the second takedown logged as a flap"
    after = listen.probe(flows=60, duration_s=1.0)
    assert set(after.split()) == ALL and after.lost == 0, f"traffic on all three nodes again: {after.summary()}"
