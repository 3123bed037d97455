"""The speaker's HTTP port against a hostile neighbour: the router's namespace is another
host on the node's link, as a stranger on the node network would be."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lab.netns import enter_netns, http_get, run_in, wait_until
from tests.integration.conftest import Topology

METRICS_PORT = 9479
"""The default --metrics-address is :9479, all addresses, as the DaemonSet runs it."""
STATUS_PORT = 9480
"""The default --status-address is 127.0.0.1:9480."""
NODE_IP = "10.0.0.2"
IDLE_CLIENTS = 500

T = TypeVar("T")


def in_netns(netns: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a scratch thread inside ``netns``; sockets it opens stay in that namespace."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(netns)
            result.append(work())
        except BaseException as error:  # noqa: BLE001  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    assert result, f"no result from {netns} within 60 s"
    return result[0]


def threads_of(pid: int) -> int:
    """The process's thread count, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def connect_error(netns: str, port: int) -> str | None:
    """None when a TCP connection to the node IP's ``port`` succeeds from ``netns``, else the error's name."""

    def attempt() -> str | None:
        try:
            socket.create_connection((NODE_IP, port), timeout=5).close()
        except OSError as error:
            return type(error).__name__
        return None

    return in_netns(netns, attempt)


def test_probes_answer_and_status_stays_local_under_500_idle_connections(topology: Topology) -> None:
    """500 idle connections from the router's side: /healthz still 200 within 1 s from there,
    the speaker's threads do not grow, /status is 403 from there (and the status port not
    reachable at all), /metrics served; /status works from the node itself."""
    speaker = topology.speaker
    router_ns = topology.frr.netns
    speaker.start()  # the default addresses, as the DaemonSet runs it
    speaker.wait_event("http_listening", timeout_s=15)
    url = f"http://{NODE_IP}:{METRICS_PORT}"
    wait_until(lambda: http_get(router_ns, f"{url}/healthz")[0] == 200, timeout_s=15, desc="/healthz from the router")
    threads_before = threads_of(speaker.pid)

    idle = in_netns(
        router_ns, lambda: [socket.create_connection((NODE_IP, METRICS_PORT), timeout=5) for _ in range(IDLE_CLIENTS)]
    )
    try:
        started = time.monotonic()
        status, body = http_get(router_ns, f"{url}/healthz", timeout_s=1.0)
        latency_s = time.monotonic() - started
        threads_during = threads_of(speaker.pid)
        print(
            f"healthz from the router under {IDLE_CLIENTS} idle: {latency_s * 1000:.1f} ms;"
            f" speaker threads {threads_before} before, {threads_during} during"
        )
        assert (status, body) == (200, "ok\n")
        assert latency_s < 1.0
        assert threads_during <= threads_before + 2, (threads_before, threads_during)
        # The drop is logged by the speaker; its log reaches us through a reader thread.
        wait_until(
            lambda: speaker.events("http_connection_dropped", reason="connection_cap"),
            timeout_s=10,
            desc="http_connection_dropped (connection_cap) in the speaker's log",
        )

        status, body = http_get(router_ns, f"{url}/status", timeout_s=1.0)
        assert status == 403
        assert body.count("\n") == 1 and "--status-remote" in body
        assert http_get(router_ns, f"{url}/config", timeout_s=1.0)[0] == 403
        status, body = http_get(router_ns, f"{url}/metrics", timeout_s=1.0)
        assert status == 200 and "bgpspeaker_config_valid 1.0" in body
        assert http_get(router_ns, f"{url}/readyz", timeout_s=1.0)[0] in (200, 503)
        assert connect_error(router_ns, STATUS_PORT) == "ConnectionRefusedError"  # loopback only

        # From the node itself: the status address (loopback, the default of `status`) ...
        result = run_in(speaker.netns, sys.executable, "-m", "bgpspeaker.cli", "status")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("node node-a:"), result.stdout
        # ... and its own node IP on the metrics port: source == destination, so local.
        result = run_in(
            speaker.netns, sys.executable, "-m", "bgpspeaker.cli", "status", "--address", f"{NODE_IP}:{METRICS_PORT}"
        )
        assert result.returncode == 0, result.stderr
    finally:
        for sock in idle:
            sock.close()
    assert not speaker.events("http_loop_failed") and not speaker.events("http_handler_failed"), speaker.tail()
