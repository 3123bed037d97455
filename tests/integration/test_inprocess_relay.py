"""ExaBGP's API relay in-process (the launcher's ``--inprocess-relay``), with real ExaBGP and FRR:
ExaBGP starts no child while routes are announced and acknowledged; a killed ExaBGP is
restarted and gets every route back, still without a child; a connection the supervisor
closes is opened again by ExaBGP's own respawn, the session and its routes untouched; the
anchor's ExaBGP as released still runs the real relay."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bgpspeaker.config import parse_config
from bgpspeaker.errors import ExabgpUnavailable
from bgpspeaker.exabgp.commands import announce_line
from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import Attributes
from lab.kubeapi import endpoint_slice, service
from lab.netns import enter_netns, pid_alive, wait_until
from tests.integration.conftest import Topology

NEXT_HOP = Attributes(next_hop=ipaddress.IPv4Address("10.0.0.2"))
PEER = ipaddress.IPv4Address("10.0.0.1")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def cluster_service(topology: Topology, name: str, ip: str) -> None:
    topology.api.apply(service("default", name, ips=[ip]))
    topology.api.apply(
        endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", "node-b", True, True)])
    )


def test_no_relay_process_and_a_killed_exabgp_recovers(topology: Topology) -> None:
    """Routes announced and acknowledged while ExaBGP has no child; SIGKILL ExaBGP: the new one
    connects in-process too, every route comes back and a new one goes out."""
    cluster_service(topology, "web", "192.0.2.10")
    topology.speaker.start()
    topology.speaker.wait_event("route_announced", prefix="192.0.2.10/32", timeout_s=20)
    wait_until(lambda: "192.0.2.10/32" in topology.frr.best_paths(), timeout_s=15, desc="192.0.2.10/32 best")
    first = topology.speaker.exabgp_pid()
    assert "bgpspeaker.exabgp.launcher" in cmdline(first) and "--inprocess-relay" in cmdline(first)
    assert children(first) == [], [cmdline(child) for child in children(first)]

    os.kill(first, signal.SIGKILL)
    restarted = topology.speaker.wait_event("exabgp_started", after=1, timeout_s=10)["pid"]
    cluster_service(topology, "api", "192.0.2.11")
    wait_until(
        lambda: {"192.0.2.10/32", "192.0.2.11/32"} <= set(topology.frr.best_paths()),
        timeout_s=20,
        desc="both routes best through the restarted ExaBGP",
    )
    topology.speaker.wait_event("route_announced", prefix="192.0.2.11/32", timeout_s=5)
    assert pid_alive(restarted) and not pid_alive(first)
    assert children(restarted) == [], [cmdline(child) for child in children(restarted)]
    assert len(topology.speaker.events("exabgp_api_connected")) == 2


@pytest.fixture
def supervisor(topology: Topology, request: pytest.FixtureRequest) -> Iterator[ExabgpSupervisor]:
    """Our supervisor alone (no Kubernetes) in the node's namespace, started; ``speed_patches``
    from the test's parameter (default True). Its thread, and so ExaBGP, start in that namespace."""
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "tor-a", "peerAddress": str(PEER), "peerASN": 64512}],
        }
    )
    made: list[ExabgpSupervisor] = []

    def build() -> None:
        enter_netns(topology.speaker.netns)
        made.append(
            ExabgpSupervisor(
                PeerRuntime(config.peers[0]),
                router_id=ipaddress.IPv4Address("10.0.0.2"),
                workdir=Path(tempfile.mkdtemp(prefix="bgpspeaker-test-")),  # under /tmp: reachable by nobody
                on_ready=lambda: None,
                speed_patches=getattr(request, "param", True),
            )
        )
        made[0].start()

    builder = threading.Thread(target=build)
    builder.start()
    builder.join(10)
    assert made, "supervisor not built"
    try:
        yield made[0]
    finally:
        made[0].stop()


def announce(supervisor: ExabgpSupervisor, *prefixes: str) -> bool | None:
    """True when ExaBGP acknowledged the announcement; None while the API is not connected."""
    line = announce_line(PEER, NEXT_HOP, [ipaddress.IPv4Network(prefix) for prefix in prefixes])
    try:
        _, acks = supervisor.execute([line], ack_timeout_s=5)
    except ExabgpUnavailable:
        return None
    return all(acks) or None


def test_a_connection_the_supervisor_closes_is_opened_again(topology: Topology, supervisor: ExabgpSupervisor) -> None:
    """The supervisor's end closed under a live session: ExaBGP's respawn connects again (same
    ExaBGP, no restart, no child), the session stays up and its routes stay best; a new
    announcement is acknowledged on the new connection."""
    wait_until(lambda: announce(supervisor, "192.0.2.20/32"), timeout_s=20, desc="first announcement acked")
    wait_until(lambda: "192.0.2.20/32" in topology.frr.best_paths(), timeout_s=15, desc="192.0.2.20/32 best")
    pid = supervisor.pid
    assert pid is not None and children(pid) == []
    established = topology.frr.neighbor("10.0.0.2")["connectionsEstablished"]

    with capture_logs() as logs:
        connection = supervisor._conn  # the supervisor's own end, closed as a failure would close it
        assert connection is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
        wait_until(lambda: announce(supervisor, "192.0.2.21/32"), timeout_s=20, desc="announcement acked again")
    events = [entry["event"] for entry in logs if entry["event"].startswith("exabgp_")]
    assert events == ["exabgp_api_disconnected", "exabgp_api_connected"], events

    wait_until(
        lambda: {"192.0.2.20/32", "192.0.2.21/32"} <= set(topology.frr.best_paths()),
        timeout_s=15,
        desc="both routes best",
    )
    assert supervisor.pid == pid and supervisor.restarts == 0
    assert children(pid) == []
    neighbor = topology.frr.neighbor("10.0.0.2")
    assert neighbor["bgpState"] == "Established"
    assert neighbor["connectionsEstablished"] == established, "the session was not reset"


@pytest.mark.parametrize("supervisor", [False], indirect=True, ids=["as-released"])
def test_exabgp_as_released_runs_the_real_relay(topology: Topology, supervisor: ExabgpSupervisor) -> None:
    """Without the speed patches (the benchmark's anchor) ExaBGP starts relay.py, which carries the API."""
    wait_until(lambda: announce(supervisor, "192.0.2.30/32"), timeout_s=20, desc="announcement acked")
    wait_until(lambda: "192.0.2.30/32" in topology.frr.best_paths(), timeout_s=15, desc="192.0.2.30/32 best")
    pid = supervisor.pid
    assert pid is not None and "--inprocess-relay" not in cmdline(pid)
    assert [cmdline(child).split()[1].endswith("bgpspeaker/exabgp/relay.py") for child in children(pid)] == [True]
