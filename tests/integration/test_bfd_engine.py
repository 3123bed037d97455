"""Two BFD child processes across a veth pair (IPv4 and IPv6): Up, then one dies and the
other detects it within the detection time; AdminDown is signalled as such."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lab.bfdchild import BfdChild, session_json
from lab.netns import Lab, wait_until

from .conftest import require_prerequisites


@pytest.fixture
def pair() -> Iterator[tuple[BfdChild, BfdChild]]:
    require_prerequisites()
    with Lab("bfd") as lab:
        a, b = lab.netns("a"), lab.netns("b")
        lab.link(a, ["10.9.0.1/24", "fd00:9::1/64"], b, ["10.9.0.2/24", "fd00:9::2/64"])
        left, right = BfdChild(a), BfdChild(b)
        try:
            left.send(
                {
                    "op": "set",
                    "sessions": [
                        session_json("b4", "10.9.0.1", "10.9.0.2"),
                        session_json("b6", "fd00:9::1", "fd00:9::2"),
                    ],
                }
            )
            right.send(
                {
                    "op": "set",
                    "sessions": [
                        session_json("a4", "10.9.0.2", "10.9.0.1"),
                        session_json("a6", "fd00:9::2", "fd00:9::1", passive=True),
                    ],
                }
            )
            yield left, right
        finally:
            left.close()
            right.close()


def test_up_then_detection_of_a_dead_peer(pair: tuple[BfdChild, BfdChild]) -> None:
    """Both families come Up (one end passive on IPv6); a SIGKILLed peer is Down (diag 1)
    within its detection time (3 x 300 ms) plus scheduling slack."""
    left, right = pair
    for child, peers in ((left, ("b4", "b6")), (right, ("a4", "a6"))):
        for peer in peers:
            wait_until(lambda c=child, p=peer: c.find("state", peer=p, state="up"), timeout_s=15, desc=f"{peer} up")
    # The Poll sequence after Up brings the 1 s slow rate down to 300 ms: detection 900 ms.
    wait_until(
        lambda: [e for e in left.events if e.get("peer") == "b4" and "detect_ms" in e][-1]["detect_ms"] == 900.0,
        timeout_s=10,
        desc="b4 at 300 ms x 3",
    )
    killed = time.monotonic()
    right.kill()
    down = wait_until(
        lambda: left.find("state", peer="b4", state="down", old="up"), timeout_s=5, desc="b4 down after the kill"
    )[0]
    assert down["diag"] == "control_detection_time_expired"
    detected_s = down["monotonic"] - killed
    assert 0.0 < detected_s < 1.5, detected_s
    down6 = wait_until(lambda: left.find("state", peer="b6", state="down", old="up"), timeout_s=5, desc="b6 down")[0]
    assert down6["diag"] == "control_detection_time_expired"


def test_admin_down_is_neighbor_signalled(pair: tuple[BfdChild, BfdChild]) -> None:
    """AdminDown from one end: the other goes Down with diag 3 and remote diag 7, at once."""
    left, right = pair
    wait_until(lambda: left.find("state", peer="b4", state="up"), timeout_s=15, desc="b4 up")
    wait_until(lambda: right.find("state", peer="a4", state="up"), timeout_s=15, desc="a4 up")
    sent = time.monotonic()
    right.send({"op": "admin-down"})
    down = wait_until(lambda: left.find("state", peer="b4", state="down", old="up"), timeout_s=5, desc="b4 down")[0]
    assert (down["diag"], down["remote_diag"], down["remote_state"]) == (
        "neighbor_signaled_session_down",
        "administratively_down",
        "admin_down",
    )
    assert down["monotonic"] - sent < 0.5


def test_ttl_checks_through_a_router() -> None:
    """Two children with a forwarding router between them (packets arrive with TTL 254): the
    multihop session (minimumTtl 254) comes Up; the single-hop one, which requires 255 (RFC
    5881 section 5), and a multihop one requiring 255 stay Down, though started together."""
    require_prerequisites()
    with Lab("bfdttl") as lab:
        a, hop, b = lab.netns("a"), lab.netns("hop"), lab.netns("b")
        lab.link(a, "10.8.1.1/24", hop, "10.8.1.254/24")
        lab.link(hop, "10.8.2.254/24", b, "10.8.2.1/24")
        lab.run("ip", "netns", "exec", hop, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        lab.run("ip", "-n", a, "route", "add", "10.8.2.0/24", "via", "10.8.1.254")
        lab.run("ip", "-n", b, "route", "add", "10.8.1.0/24", "via", "10.8.2.254")
        left, right = BfdChild(a), BfdChild(b)
        try:
            for child, local, remote in ((left, "10.8.1.1", "10.8.2.1"), (right, "10.8.2.1", "10.8.1.1")):
                child.send(
                    {
                        "op": "set",
                        "sessions": [
                            session_json("single", local, remote),
                            session_json("multi", local, remote, multihop=True, minimum_ttl=254),
                        ],
                    }
                )
            wait_until(lambda: left.find("state", peer="multi", state="up"), timeout_s=15, desc="multihop up")
            wait_until(lambda: right.find("state", peer="multi", state="up"), timeout_s=15, desc="multihop up")
            assert not left.find("state", peer="single", state="init") and not left.find(
                "state", peer="single", state="up"
            )
            # The strict side refuses what the lenient side accepted.
            right.send(
                {
                    "op": "set",
                    "sessions": [session_json("multi", "10.8.2.1", "10.8.1.1", multihop=True, minimum_ttl=255)],
                }
            )
            wait_until(
                lambda: right.find("state", peer="multi", state="down", old="up"),
                timeout_s=10,
                desc="multi down at 255",
            )
        finally:
            left.close()
            right.close()
