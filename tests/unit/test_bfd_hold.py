"""bgpspeaker.bfd.hold: how long BGP stays down after BFD took it down (explicit time)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from bgpspeaker.bfd.hold import (
    FLAP_WINDOW_S,
    MAX_HOLD_S,
    Hold,
    Release,
    bfd_up,
    expire,
    hold_for,
    take_down,
)

BASE_S = 5.0


@dataclasses.dataclass(frozen=True)
class Step:
    at: float
    what: str
    """``down`` (BFD left Up, path failure), ``up`` (BFD Up), ``tick`` (time passes)."""


def run(steps: list[Step], base_s: float = BASE_S) -> tuple[Hold, list[tuple[float, Release]]]:
    """The hold after ``steps``, and each release with its time."""
    hold, releases = Hold(), []
    for step in steps:
        released: Release | None = None
        if step.what == "down":
            hold = take_down(hold, now=step.at, base_s=base_s)
        elif step.what == "up":
            hold, released = bfd_up(hold, now=step.at)
        else:
            hold, released = expire(hold, now=step.at)
        if released is not None:
            releases.append((step.at, released))
    return hold, releases


@pytest.mark.parametrize(
    ("steps", "held", "flaps", "releases"),
    [
        ([Step(0, "down"), Step(4.9, "tick")], True, 1, []),
        ([Step(0, "down"), Step(1.2, "up")], False, 1, [(1.2, Release.BFD_UP)]),
        ([Step(0, "down"), Step(5.0, "tick")], False, 1, [(5.0, Release.HOLD_EXPIRED)]),
        (
            [Step(0, "down"), Step(5, "tick"), Step(9, "up"), Step(20, "down"), Step(29.9, "tick")],
            True, 2, [(5, Release.HOLD_EXPIRED)],
        ),
        (
            [Step(0, "down"), Step(5, "tick"), Step(9, "up"), Step(20, "down"), Step(21, "up"), Step(30, "tick")],
            False, 2, [(5, Release.HOLD_EXPIRED), (30, Release.HOLD_EXPIRED)],
        ),
        (
            [Step(0, "down"), Step(1, "up"), Step(1 + FLAP_WINDOW_S, "down"), Step(62, "up")],
            False, 1, [(1, Release.BFD_UP), (62, Release.BFD_UP)],
        ),
        ([Step(0, "down"), Step(1, "down"), Step(5, "tick")], False, 1, [(5, Release.HOLD_EXPIRED)]),
        ([Step(0, "up"), Step(1, "tick")], False, 0, []),
    ],
    ids=[
        "held-until-the-bound",
        "single-failure-ends-at-bfd-up",
        "bound-passed-bgp-reconnects",
        "flap-within-a-minute-holds-twice-as-long",
        "flap-hold-not-ended-by-bfd-up",
        "a-minute-later-is-a-new-single-failure",
        "down-while-held-changes-nothing",
        "bfd-up-without-hold-is-nothing",
    ],
)  # fmt: skip
def test_hold(steps: list[Step], held: bool, flaps: int, releases: list[tuple[float, Release]]) -> None:
    """A hold ends at BFD Up (single failure) or its bound; flaps double it and need the bound."""
    hold, seen = run(steps)
    assert (hold.held, hold.flaps, seen) == (held, flaps, releases)


def test_half_broken_path_is_bounded() -> None:
    """BFD comes Up 2 s after each reconnect and fails 3 s later (TCP fine): the holds
    double to the ceiling, so takedowns thin out to one per ~2 minutes, never a loop."""
    hold, now, takedowns = Hold(), 0.0, []
    while now < 3600:
        hold = take_down(hold, now=now, base_s=BASE_S)
        takedowns.append(now)
        assert hold.deadline is not None
        now = hold.deadline
        hold, released = expire(hold, now=now)
        assert released is Release.HOLD_EXPIRED
        now += 2 + 3  # BFD Up after the reconnect, then Down again
    gaps = [b - a for a, b in itertools.pairwise(takedowns)]
    assert gaps[:6] == [10, 15, 25, 45, 85, 125]
    assert min(gaps[6:]) == MAX_HOLD_S + 5
    assert len(takedowns) < 3600 / MAX_HOLD_S + 6


@pytest.mark.parametrize(
    ("base_s", "flaps", "want"),
    [(5, 1, 5), (5, 2, 10), (5, 5, 80), (5, 6, MAX_HOLD_S), (0, 1, 0), (0, 2, 2), (600, 3, 600)],
    ids=["first", "second", "fifth", "ceiling", "zero-reconnects-at-once", "zero-still-backs-off-flaps", "long-base"],
)
def test_hold_for(base_s: float, flaps: int, want: float) -> None:
    """The first hold is the profile's; each flap doubles it up to the ceiling (or the base)."""
    assert hold_for(base_s, flaps) == want


def test_zero_hold_ends_at_the_next_check() -> None:
    """bgpHoldDown 0s (FRR's non-strict): BGP is taken down, and may reconnect at once."""
    hold = take_down(Hold(), now=10.0, base_s=0.0)
    assert hold.held and hold.deadline == 10.0
    assert expire(hold, now=10.0)[1] is Release.HOLD_EXPIRED
