"""The observe HTTP server against hostile clients, over real loopback sockets (no root).

Each test starts a real ``Observer`` on ``127.0.0.1:0`` with a stand-in ``StatusSource``
(plain objects carrying the attributes the routes read) and asserts on real responses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http.client
import ipaddress
import json
import os
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from structlog.testing import capture_logs

from bgpspeaker.config import parse_config
from bgpspeaker.httpserver import HttpLimits, is_local_client
from bgpspeaker.observe import Observer, StatusSource
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.session import SessionStatus
from lab.netns import wait_until

IDLE_CLIENTS = 500
NOT_FOUND = b"not found: /metrics /healthz /readyz /status /config\n"


def stand_in_source() -> StatusSource:
    """One established peer announcing one prefix for default/web; synced, config valid."""
    prefix = ipaddress.ip_network("192.0.2.10/32")
    peer = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}],
        }
    ).peers[0]
    status = SessionStatus("tor-a", PeerRuntime(peer), "up", time.monotonic(), generation=1, up_count=1, pid=4242)
    reconciler = SimpleNamespace(
        statuses=lambda: {"tor-a": status},
        acknowledged={("tor-a", prefix): "announced"},
        updates_sent={"tor-a": 1},
        announced_services=lambda: {prefix: {"default/web"}},
    )
    store = SimpleNamespace(outage_since=None, last_sync_monotonic={"services": time.monotonic()}, synced=True)
    return StatusSource(
        node="node-a",
        reconciler=reconciler,
        store=store,
        watchers=[SimpleNamespace(kind="services", restarts=0)],
        config_valid=lambda: True,
        threads_alive=lambda: True,
    )


@contextlib.contextmanager
def serving(*, status_remote: bool = False, **limits: Any) -> Iterator[tuple[Observer, int]]:
    """A started Observer on 127.0.0.1 and its port; stopped afterwards."""
    observer = Observer(stand_in_source(), "127.0.0.1:0", status_remote=status_remote, limits=HttpLimits(**limits))
    port = observer.start()
    try:
        yield observer, port
    finally:
        observer.stop()


def get(
    port: int, path: str, *, method: str = "GET", source: str | None = None, timeout_s: float = 1.0
) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library's client: (status, headers, body)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout_s, source_address=None if source is None else (source, 0)
    )
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, *, timeout_s: float = 2.0) -> bytes:
    """Send ``data`` on a fresh connection, read until the server closes; what came back
    (empty when the server reset or closed without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        received = b""
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed this connection (EOF or reset pending); never blocks
    (it leaves ``sock`` non-blocking: a socket with a timeout would wait out the timeout)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def nofile_at_least(count: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``count`` (at most the hard limit) for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_healthz_answers_within_1s_under_500_idle_connections() -> None:
    """500 idle connections: /healthz from a new client answers 200 within 1 s, threads stay fixed, idle ones closed."""
    # Threads compared as sets: a thread another test left behind may end meanwhile
    threads_before = set(threading.enumerate())
    limits = HttpLimits()
    with nofile_at_least(4 * IDLE_CLIENTS), serving(head_timeout_s=2.0) as (_observer, port):
        servers = set(threading.enumerate()) - threads_before
        assert len(servers) == 1 + limits.render_workers

        def threads_serving() -> set[threading.Thread]:
            return set(threading.enumerate()) - threads_before

        idle = []
        try:
            for i in range(IDLE_CLIENTS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    sock.sendall(b"GET /heal")  # half a request line
                idle.append(sock)

            def still_open() -> int:
                return sum(not closed_by_server(s) for s in idle)

            # The server holds at most max_connections; the rest were evicted, oldest first.
            wait_until(
                lambda: still_open() <= limits.max_connections,
                timeout_s=2,
                desc=f"at most {limits.max_connections} idle connections kept",
            )
            open_now = still_open()
            assert open_now > limits.max_connections // 2  # not all timed out: the probe meets a full house
            started = time.monotonic()
            status, _headers, body = get(port, "/healthz", timeout_s=1.0)
            latency_s = time.monotonic() - started
            print(f"healthz under {IDLE_CLIENTS} idle: {latency_s * 1000:.1f} ms, {open_now} still open")
            assert (status, body) == (200, b"ok\n")
            assert latency_s < 1.0
            assert threads_serving() == servers
            wait_until(
                lambda: still_open() == 0,
                timeout_s=4,
                desc="every idle connection closed by the server after head_timeout_s",
            )
            assert threads_serving() == servers
        finally:
            for sock in idle:
                sock.close()
    wait_until(lambda: not servers & set(threading.enumerate()), timeout_s=5, desc="server threads ended")


def test_slowloris_dropped_at_head_timeout() -> None:
    """A client sending one byte per 100 ms is closed at head_timeout_s, without a reply."""
    request = b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 200
    with serving(head_timeout_s=0.5) as (_observer, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        with sock:
            started = time.monotonic()
            received = b""
            for byte in request:
                sock.send(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], 0.1)  # the 100 ms pace, and the close noticed
                if readable:
                    try:
                        chunk = sock.recv(4096)
                    except ConnectionResetError:
                        break
                    received += chunk
                    if not chunk:
                        break
            else:
                pytest.fail(f"still open after {time.monotonic() - started:.1f} s of trickling")
            held_s = time.monotonic() - started
        print(f"slowloris held {held_s * 1000:.0f} ms")
        assert received == b""
        assert 0.45 <= held_s < 0.5 + 0.3
        assert get(port, "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("pad_bytes", "want"),
    [(7000, b"HTTP/1.0 200 "), (9000, b"HTTP/1.0 431 ")],
    ids=["under_cap_answered", "over_cap_431"],
)
def test_request_head_size_cap(pad_bytes: int, want: bytes) -> None:
    """A head over 8 KiB gets 431 (or a close), one under it an answer; the next client is served either way."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad_bytes + b"\r\n\r\n"
    with serving() as (_observer, port):
        answer = raw_exchange(port, request)
        assert answer.startswith(want) or (want.startswith(b"HTTP/1.0 431") and answer == b""), answer[:80]
        assert get(port, "/healthz")[:3:2] == (200, b"ok\n")


def test_routes_and_methods() -> None:
    """Probes, metrics and status keep their outputs; HEAD has no body; POST is 405; unknown paths 404 text."""
    with serving() as (observer, port):
        assert get(port, "/healthz")[::2] == (200, b"ok\n")
        assert get(port, "/readyz?verbose")[::2] == (200, b"ok\n")
        status, headers, body = get(port, "/metrics")
        assert (status, headers["Content-Type"]) == (200, CONTENT_TYPE_LATEST)
        assert b'bgpspeaker_bgp_session_up{peer="tor-a"} 1.0\n' in body
        assert (
            b'bgpspeaker_speaker_announced{ip="192.0.2.10",node="node-a",protocol="bgp",service="default/web"}' in body
        )
        status, headers, body = get(port, "/status")
        assert (status, headers["Content-Type"]) == (200, "application/json")
        document = json.loads(body)
        assert document.keys() == observer.status().keys()
        assert (document["node"], document["ready"], document["peers"][0]["asn"]) == ("node-a", True, 64512)
        assert document["prefixes"] == [{"prefix": "192.0.2.10/32", "peers": ["tor-a"], "services": ["default/web"]}]
        status, headers, body = get(port, "/healthz", method="HEAD")
        assert (status, headers["Content-Length"], body) == (200, "3", b"")
        status, headers, body = get(port, "/healthz", method="POST")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")
        assert get(port, "/status", method="DELETE")[0] == 405
        status, headers, body = get(port, "/nope")
        assert (status, headers["Content-Type"], body) == (404, "text/plain", NOT_FOUND)
        assert raw_exchange(port, b"NOT A REQUEST\r\n\r\n").startswith(b"HTTP/1.0 400 ")


@pytest.mark.parametrize(
    ("client", "local", "want"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.5", "10.0.0.2", True),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:10.0.0.2", True),
        ("10.0.0.2", "10.0.0.2", True),
        ("::ffff:10.0.0.2", "10.0.0.2", True),
        ("fd00::2", "fd00::2", True),
        ("10.0.0.1", "10.0.0.2", False),
        ("10.0.0.1", "127.0.0.1", False),
        ("fd00::1", "fd00::2", False),
        ("10.0.0.2", "fd00::2", False),
        (None, "10.0.0.2", False),
        ("10.0.0.2", None, False),
    ],
    ids=[
        "loopback",
        "loopback_to_node_ip",
        "loopback_v6",
        "mapped_loopback",
        "node_ip_to_itself",
        "mapped_node_ip_to_itself",
        "node_ip_v6_to_itself",
        "neighbour",
        "neighbour_to_loopback",
        "neighbour_v6",
        "other_family",
        "unknown_client",
        "unknown_local",
    ],
)
def test_is_local_client(client: str | None, local: str | None, want: bool) -> None:
    """Local: the source is loopback or the very address the connection arrived on."""

    def as_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return None if text is None else ipaddress.ip_address(text)

    assert is_local_client(as_ip(client), as_ip(local)) is want


def this_hosts_other_address() -> str | None:
    """A non-loopback address of this host (the one routing would pick), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # UDP: no packet sent, only the route looked up
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else str(address)


@pytest.mark.parametrize(("status_remote", "want"), [(False, 403), (True, 200)], ids=["default", "status_remote"])
def test_status_from_a_non_local_source(status_remote: bool, want: int) -> None:
    """/status from a source that is neither loopback nor the address connected to: 403 unless status_remote."""
    source = this_hosts_other_address()
    if source is None:
        pytest.skip("no non-loopback address on this host (the integration test covers a remote client)")
    # The client is on this host but connects from its other address to 127.0.0.1: src != dst,
    # src not loopback, exactly what a remote client looks like to the rule.
    with serving(status_remote=status_remote) as (_observer, port):
        status, _headers, body = get(port, "/status", source=source)
        assert status == want
        if want == 403:
            assert body.count(b"\n") == 1 and b"--status-remote" in body
            assert get(port, "/config", source=source)[0] == 403
        assert get(port, "/healthz", source=source)[::2] == (200, b"ok\n")
        assert get(port, "/metrics", source=source)[0] == 200
        assert get(port, "/status")[0] == 200  # from loopback


def test_status_address_serves_status_and_config_and_the_probes() -> None:
    """The status address answers /status and /config (the config file in force) to whoever reaches it."""
    config = b"apiVersion: bgpspeaker.io/v1alpha1\nkind: SpeakerConfig\nmyASN: 64513\npeers: []\n"
    source = dataclasses.replace(stand_in_source(), config_text=lambda: config)
    observer = Observer(source, "127.0.0.1:0", status_address="127.0.0.1:0")
    metrics_port = observer.start()
    try:
        port = observer.status_port
        assert port is not None and port != metrics_port
        status, headers, body = get(port, "/config")
        assert (status, headers["Content-Type"], body) == (200, "application/yaml", config)
        assert json.loads(get(port, "/status")[2])["node"] == "node-a"
        assert get(port, "/healthz")[::2] == (200, b"ok\n")
        other = this_hosts_other_address()
        if other is not None:  # open to any source: the bind address is the control
            assert get(port, "/status", source=other)[0] == 200
    finally:
        observer.stop()
    assert closed_by_server_or_refused(port)


def closed_by_server_or_refused(port: int) -> bool:
    """Nothing listens on ``port`` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_config_before_any_config_is_503() -> None:
    """/config before a config was loaded: 503, not an empty body."""
    with serving() as (_observer, port):
        assert get(port, "/config")[::2] == (503, b"no config loaded yet\n")


def test_a_status_address_in_use_fails_start_and_leaves_nothing_listening() -> None:
    """A status address that cannot be bound: start() raises, the metrics address is released too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        observer = Observer(stand_in_source(), "127.0.0.1:0", status_address=f"127.0.0.1:{busy}")
        with pytest.raises(OSError):
            observer.start()
        assert observer.status_port is None


def open_sockets() -> int:
    """Sockets among this process's descriptors (the server's and the test's clients)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile (the listing's own fd, or the server's)
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_emfile_on_accept_evicts_an_idle_connection_for_the_probe() -> None:
    """With the process out of file descriptors, accept fails but the loop lives and the probe gets an idle one's fd."""
    with serving() as (_observer, port), capture_logs() as logs:
        sockets_before = open_sockets()
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        wait_until(lambda: open_sockets() == sockets_before + 2, timeout_s=2, desc="idle accepted (both ends open)")
        anchor = os.open(os.devnull, os.O_RDONLY)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made before the fds run out
        probe.settimeout(2)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []
        try:
            highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
            with contextlib.suppress(OSError):
                while True:
                    fillers.append(os.dup(anchor))
            with pytest.raises(OSError) as full:
                os.dup(anchor)
            assert full.value.errno == errno.EMFILE
            probe.connect(("127.0.0.1", port))
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            answer = probe.recv(4096)
        finally:
            for fd in [*fillers, anchor]:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with probe, idle:
            assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"\r\n\r\nok\n"), logs
            assert closed_by_server(idle) or wait_until(lambda: closed_by_server(idle), timeout_s=1, desc="idle closed")
        assert get(port, "/healthz")[0] == 200
    accept_failed = [e for e in logs if e["event"] == "http_accept_failed"]
    assert accept_failed and accept_failed[0]["errno"] == errno.EMFILE, logs
    assert {"event": "http_connection_dropped", "reason": "fds_exhausted"}.items() <= next(
        e for e in logs if e["event"] == "http_connection_dropped"
    ).items()


def test_config_file_has_no_key_that_holds_a_secret() -> None:
    """/config serves the config file as is: that is safe only while no key holds a secret itself."""
    from bgpspeaker import config as config_module

    keys = {key for name, value in vars(config_module).items() if name.endswith("_KEYS") for key in value}
    words = ("password", "secret", "token", "credential")
    secretive = {key for key in keys if any(word in key.lower() for word in words)}
    assert secretive == {"passwordFile", "passwordSecret"}, "a key that may hold a secret: redact it in /config"
