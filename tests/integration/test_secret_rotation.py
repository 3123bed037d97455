"""A rotated passwordSecret re-keys its session without SIGHUP; the other peer is left alone."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from lab.kubeapi import secret
from lab.netns import Frr, Lab, wait_until
from lab.topology import Peering, two_tors
from tests.integration.conftest import require_prerequisites
from tests.integration.test_peering import (
    HEADER,
    cluster_service,
    established,
    frr_config,
    wait_established,
    wait_path,
)

CONFIG = (
    HEADER
    + """peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
  - name: tor-b
    peerAddress: 10.0.1.1
    peerASN: 64513
    passwordSecret: {name: bgp-auth, namespace: bgpspeaker-system, key: tor-b}
"""
)
OLD, NEW = b"first-md5-key", b"second-md5-key"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_prerequisites()
    with Lab() as built:
        yield built


def set_router_password(frr: Frr, password: bytes) -> None:
    """The router side of a rotation: tor-b's bgpd takes the new key (FRR resets the session)."""
    subprocess.run(
        [
            "vtysh", "--vty_socket", str(frr.workdir),
            "-c", "configure terminal",
            "-c", "router bgp 64513",
            "-c", f"neighbor 10.0.1.2 password {password.decode()}",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def exabgp_pids(peering: Peering, peer: str) -> list[int]:
    return [record["pid"] for record in peering.speaker.events("exabgp_started", peer=peer)]


def test_rotated_secret_rekeys_only_that_session_and_a_missing_one_keeps_it(lab: Lab) -> None:
    """Router and Secret rotated together: tor-b re-established with the new key, no SIGHUP;
    tor-a's ExaBGP and session untouched. The Secret deleted: tor-b stays up, one log line."""
    peering = two_tors(
        lab,
        tor_a=frr_config(64512, "10.0.0.1", "10.0.0.2", 64513),
        tor_b=frr_config(64513, "10.0.1.1", "10.0.1.2", 64513, f"password {OLD.decode()}"),
        speaker_config=CONFIG,
    )
    tor_a, tor_b = peering.routers["tor-a"], peering.routers["tor-b"]
    try:
        peering.api.apply(secret("bgpspeaker-system", "bgp-auth", {"tor-b": OLD, "unrelated": b"x"}))
        cluster_service(peering, "web", "192.0.2.10")
        peering.speaker.start()
        wait_path(tor_a, "192.0.2.10/32")
        wait_path(tor_b, "192.0.2.10/32")
        peering.speaker.wait_event("watch_listed", kind="secret bgpspeaker-system/bgp-auth")
        a_pids, b_pids = exabgp_pids(peering, "tor-a"), exabgp_pids(peering, "tor-b")
        assert len(a_pids) == 1 and len(b_pids) == 1
        a_connections = tor_a.neighbor("10.0.0.2")["connectionsEstablished"]
        b_connections = tor_b.neighbor("10.0.1.2")["connectionsEstablished"]

        # An unrelated key of the same Secret changes: no restart.
        peering.api.apply(secret("bgpspeaker-system", "bgp-auth", {"tor-b": OLD, "unrelated": b"y"}))
        set_router_password(tor_b, NEW)
        started = time.monotonic()
        peering.api.apply(secret("bgpspeaker-system", "bgp-auth", {"tor-b": NEW, "unrelated": b"y"}))
        rotated = peering.speaker.wait_event("password_secret_rotated", peer="tor-b")
        assert rotated["secret"] == "bgpspeaker-system/bgp-auth" and NEW.decode() not in str(rotated)
        wait_until(
            lambda: (
                tor_b.neighbor("10.0.1.2").get("connectionsEstablished", 0) > b_connections
                and established(tor_b, "10.0.1.2")
            ),
            timeout_s=30,
            desc=f"tor-b re-established with the new key; speaker: {peering.speaker.tail(8)}",
        )
        rotation_s = time.monotonic() - started
        wait_path(tor_b, "192.0.2.10/32")
        assert len(exabgp_pids(peering, "tor-b")) == 2  # exactly one restart, for the new key
        assert exabgp_pids(peering, "tor-a") == a_pids
        assert tor_a.neighbor("10.0.0.2")["connectionsEstablished"] == a_connections
        assert established(tor_a, "10.0.0.2")
        assert not peering.speaker.events("config_reloading")
        assert len(peering.speaker.events("password_secret_rotated")) == 1

        # Anchor, same run, measured the same way: a session setting changed by SIGHUP reload.
        b_connections = tor_b.neighbor("10.0.1.2")["connectionsEstablished"]
        started = time.monotonic()
        peering.speaker.reload(CONFIG.replace("    passwordSecret:", "    holdTime: 30s\n    passwordSecret:"))
        wait_until(
            lambda: (
                tor_b.neighbor("10.0.1.2").get("connectionsEstablished", 0) > b_connections
                and established(tor_b, "10.0.1.2")
            ),
            timeout_s=30,
            desc="tor-b re-established after the reload",
        )
        reload_s = time.monotonic() - started
        print(f"Secret rotated -> tor-b re-established: {rotation_s:.2f} s; SIGHUP reload anchor: {reload_s:.2f} s")
        assert exabgp_pids(peering, "tor-a") == a_pids

        # The Secret goes away: the running session keeps its key.
        wait_path(tor_b, "192.0.2.10/32")
        b_connections = tor_b.neighbor("10.0.1.2")["connectionsEstablished"]
        peering.api.delete("secrets", "bgpspeaker-system/bgp-auth")
        unusable = peering.speaker.wait_event("password_secret_unusable", peer="tor-b")
        assert "does not exist" in unusable["reason"]
        # A pass after the deletion (a new Service) still runs both sessions as they were.
        cluster_service(peering, "api", "192.0.2.11")
        wait_path(tor_b, "192.0.2.11/32")
        wait_established(peering, tor_b, "10.0.1.2")
        assert tor_b.neighbor("10.0.1.2")["connectionsEstablished"] == b_connections
        assert len(exabgp_pids(peering, "tor-b")) == 3  # start, rotation, reload
        assert len(peering.speaker.events("password_secret_unusable")) == 1
    finally:
        peering.close()
