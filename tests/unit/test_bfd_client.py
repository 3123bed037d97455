"""BfdClient: which BFD changes hold a peer's BGP session down. A stand-in child process
(a few lines of Python) writes the state lines the real one would."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from bgpspeaker.bfd.client import BfdClient, is_path_failure
from lab.netns import wait_until

SPEC = {"peer": "tor-a", "local": "10.0.0.2", "remote": "10.0.0.1", "tx_ms": 300, "rx_ms": 300, "multiplier": 3}


def state(new: str, old: str | None = None, **fields: Any) -> dict[str, Any]:
    event = {
        "event": "state",
        "peer": "tor-a",
        "state": new,
        "remote_state": fields.pop("remote_state", new),
        "diag": fields.pop("diag", "none"),
        "remote_diag": fields.pop("remote_diag", "none"),
        "tx_ms": 300,
        "detect_ms": 900,
        "monotonic": 0.0,
        **fields,
    }
    if old is not None:
        event["old"] = old
    return event


def run_child(
    lines: list[dict[str, Any]], spec: dict[str, Any] | None = None, later: Sequence[dict[str, Any]] = ()
) -> BfdClient:
    """A client whose child writes ``lines``, then ``later`` when it is sent a second set of
    sessions, and waits for the shutdown command."""
    script = "import sys\n" + "".join(f"print({json.dumps(json.dumps(e))}, flush=True)\n" for e in lines)
    script += "sets = 0\nfor line in sys.stdin:\n    if 'shutdown' in line:\n        break\n"
    script += "    sets += '\"set\"' in line\n    if sets == 2:\n"
    script += "".join(f"        print({json.dumps(json.dumps(e))}, flush=True)\n" for e in later) or "        pass\n"
    changes: list[int] = []
    client = BfdClient(lambda: changes.append(1), command=[sys.executable, "-c", script])
    client.want({"tor-a": spec or SPEC})
    wait_until(lambda: client.statuses()["tor-a"].last_change or None, timeout_s=10, desc="the child's lines read")
    return client


DETECTED = state("down", "up", diag="control_detection_time_expired")


@pytest.mark.parametrize(
    ("lines", "blocked", "downs"),
    [
        ([state("down"), state("up", "down"), DETECTED], True, 1),
        ([state("init", "down"), state("down", "init", diag="control_detection_time_expired")], False, 0),
        (
            [state("up", "down"), state("down", "up", diag="neighbor_signaled_session_down", remote_diag="path_down")],
            True,
            1,
        ),
        (
            [
                state("up", "down"),
                state("down", "up", diag="neighbor_signaled_session_down", remote_state="admin_down",
                      remote_diag="administratively_down"),
            ],
            False,
            1,
        ),
        (
            [state("up", "down"), state("down", "up", diag="neighbor_signaled_session_down",
                                        remote_diag="neighbor_signaled_session_down")],
            False,
            1,
        ),
        (
            [
                state("up", "down"),
                state("down", "up", diag="neighbor_signaled_session_down", remote_diag="path_down",
                      remote_restarted=True),
            ],
            False,
            1,
        ),
        ([state("up", "down"), DETECTED, state("init", "down")], True, 1),
        ([state("up", "down"), DETECTED, state("init", "down"), state("up", "init")], False, 1),
    ],
    ids=[
        "detection-timeout-after-up",
        "never-up",
        "router-reports-path-down",
        "router-admin-down",
        "router-bookkeeping-diag-3",
        "router-new-session",
        "still-held-in-init",
        "released-when-up",
    ],
)  # fmt: skip
def test_which_changes_hold_bgp_down(lines: list[dict[str, Any]], blocked: bool, downs: int) -> None:
    """Only a path failure after Up holds BGP down, until BFD is Up again."""
    client = run_child(lines)
    try:
        want = frozenset({"tor-a"}) if blocked else frozenset()
        # The last state alone may also be an earlier line's ("up" ... "up"): the Down count too
        wait_until(
            lambda: (status := client.statuses()["tor-a"]).state == lines[-1]["state"] and status.down_events == downs,
            timeout_s=10,
            desc="the last line read",
        )
        assert client.blocked() == want
        assert client.statuses()["tor-a"].down_events == downs
        assert client.statuses()["tor-a"].document()["blocks_bgp"] is blocked
    finally:
        client.stop()


def test_path_failure_rule() -> None:
    """Our own detection timer always counts; the router's diag 3 and 7 never do."""
    assert is_path_failure({"diag": "control_detection_time_expired", "remote_diag": "none"})
    assert is_path_failure({"diag": "neighbor_signaled_session_down", "remote_diag": "control_detection_time_expired"})
    assert not is_path_failure({"diag": "neighbor_signaled_session_down", "remote_diag": "administratively_down"})
    assert not is_path_failure(
        {"diag": "neighbor_signaled_session_down", "remote_diag": "neighbor_signaled_session_down"}
    )


@pytest.mark.parametrize("hold_ms", [0, 400], ids=["zero-hold", "400ms-hold"])
def test_hold_runs_out_without_bfd_up(hold_ms: int) -> None:
    """BFD Down and never Up again (a router that deletes its session with BGP): BGP is held
    at least once, then let go after bgpHoldDown, and the session no longer counts as Up."""
    client = run_child([state("up", "down"), DETECTED], {**SPEC, "bgp_hold_down_ms": hold_ms})
    try:
        wait_until(lambda: client.statuses()["tor-a"].state == "down", timeout_s=10, desc="the Down read")
        down_at = time.monotonic()
        assert client.blocked() == {"tor-a"}  # seen by the reconciler once, however short the hold
        wait_until(lambda: not client.blocked(), timeout_s=10, desc="the hold ended")
        assert time.monotonic() - down_at >= hold_ms / 1000 - 0.1
        status = client.statuses()["tor-a"]
        assert (status.bgp_held, status.was_up, status.flaps, status.down_events) == (False, False, 1, 1)
    finally:
        client.stop()


def test_bfd_up_after_the_hold_ran_out_asks_for_a_reconnect() -> None:
    """BGP let go without BFD; BFD Up later (a named neighbor after a long outage): the peer
    is handed out once by reconnect_now, so a session still connecting starts over."""
    spec = {**SPEC, "bgp_hold_down_ms": 0}
    client = run_child([state("up", "down"), DETECTED], spec, later=[state("init", "down"), state("up", "init")])
    try:
        wait_until(lambda: client.statuses()["tor-a"].state == "down", timeout_s=10, desc="the Down read")
        assert client.blocked() == {"tor-a"} and client.reconnect_now() == frozenset()
        wait_until(lambda: not client.blocked(), timeout_s=10, desc="the hold ended")
        client.want({"tor-a": {**spec, "tx_ms": 200}})  # the child writes the later lines
        wait_until(lambda: client.statuses()["tor-a"].state == "up", timeout_s=10, desc="BFD Up read")
        assert client.reconnect_now() == {"tor-a"}
        assert client.reconnect_now() == frozenset()
    finally:
        client.stop()


def test_bfd_up_ending_a_hold_asks_for_no_reconnect() -> None:
    """A hold that BFD Up ended starts the session anew anyway: nothing to hand out."""
    client = run_child([state("up", "down"), DETECTED, state("init", "down"), state("up", "init")])
    try:
        wait_until(lambda: client.statuses()["tor-a"].down_events == 1, timeout_s=10, desc="the Down read")
        wait_until(lambda: client.statuses()["tor-a"].state == "up", timeout_s=10, desc="BFD Up read")
        assert (client.blocked(), client.reconnect_now()) == (frozenset(), frozenset())
    finally:
        client.stop()


def test_a_flap_is_held_through_bfd_up_and_then_let_go_armed() -> None:
    """A second takedown soon after the first (bgpHoldDown 0s: the flap hold is 2 s): BFD
    Up does not end it; when it runs out BFD is Up, so BGP goes back with BFD armed (no
    never-Up count, nothing to reconnect)."""
    spec = {**SPEC, "bgp_hold_down_ms": 0}
    flap = [state("init", "down"), state("up", "init"), DETECTED, state("init", "down"), state("up", "init")]
    client = run_child([state("up", "down"), DETECTED], spec, later=flap)
    try:
        wait_until(lambda: client.statuses()["tor-a"].state == "down", timeout_s=10, desc="the Down read")
        assert client.blocked() == {"tor-a"}
        wait_until(lambda: not client.blocked(), timeout_s=10, desc="the first hold ended")
        client.want({"tor-a": {**spec, "tx_ms": 200}})  # the child writes the flap
        wait_until(lambda: client.statuses()["tor-a"].down_events == 2, timeout_s=10, desc="the second Down read")
        wait_until(lambda: client.statuses()["tor-a"].state == "up", timeout_s=10, desc="BFD Up again read")
        status = client.statuses()["tor-a"]
        assert (status.bgp_held, status.flaps, status.hold_s) == (True, 2, 2.0)
        assert client.blocked() == {"tor-a"}  # BFD Up, still held
        wait_until(lambda: not client.blocked(), timeout_s=10, desc="the flap hold ended")
        status = client.statuses()["tor-a"]
        assert (status.bgp_held, status.was_up, client.reconnect_now()) == (False, True, frozenset())
    finally:
        client.stop()
