"""The in-process API relay against a real unix socket server made here: lines both ways on a
descriptor ExaBGP made non-blocking, an end of file only once every byte before it was read,
writes that wait for room without spinning or losing a byte, a vanished supervisor that
drops instead of raising, a socket that cannot be connected, and only our relay matched.

ExaBGP's own ``Processes`` with the patch is in tests/unit/test_launcher.py."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgpspeaker.exabgp.inprocess import RELAY, InProcessRelay, SubprocessWithRelay, connect, relay_socket
from lab.netns import wait_until


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """The supervisor's side: a listening unix socket (``getsockname()`` is its path)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "api.sock"))
    server.listen(4)
    server.settimeout(5)
    yield server
    server.close()


def relay_for(listener: socket.socket) -> tuple[InProcessRelay, socket.socket]:
    """A relay connected to ``listener``, non-blocking as ExaBGP's ``_start`` makes it, and the
    supervisor's end of the connection."""
    path = listener.getsockname()
    relay = connect([sys.executable, RELAY, path], path)
    fcntl.fcntl(relay.stdout.fileno(), fcntl.F_SETFL, os.O_NONBLOCK)  # as Processes._start does
    server, _ = listener.accept()
    server.settimeout(5)
    return relay, server


def read_available(relay: InProcessRelay) -> bytes:
    """What ExaBGP's ``received`` reads: one ``os.read`` on the descriptor (b'' when none waits)."""
    try:
        return os.read(relay.stdout.fileno(), 16384)
    except BlockingIOError:
        return b""


def test_lines_go_both_ways(listener: socket.socket) -> None:
    """Commands from the supervisor are read on stdout's descriptor; acks written to stdin reach it."""
    relay, server = relay_for(listener)
    server.sendall(b"announce route 192.0.2.10/32 next-hop 10.0.0.2\n")
    got = wait_until(lambda: read_available(relay), timeout_s=5, desc="the command read by ExaBGP")
    assert got == b"announce route 192.0.2.10/32 next-hop 10.0.0.2\n"
    assert relay.stdin.write(b"done\n") == 5
    relay.stdin.flush()
    assert server.recv(100) == b"done\n"
    assert relay.poll() is None


def test_end_of_file_only_after_the_unread_bytes(listener: socket.socket) -> None:
    """The supervisor writes a line and closes: poll() stays None until the line is read, then
    turns 0 (ExaBGP only leaves an end of file when poll() is not None)."""
    relay, server = relay_for(listener)
    server.sendall(b"withdraw route 192.0.2.10/32\n")
    server.close()
    assert relay.poll() is None, "a line is still waiting: no end yet"
    assert read_available(relay) == b"withdraw route 192.0.2.10/32\n"
    assert read_available(relay) == b""  # the end of file, as ExaBGP reads it
    assert relay.poll() == 0
    assert relay.wait(timeout=1) == 0


def _thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_full_socket_waits_without_spinning_and_loses_no_byte(listener: socket.socket) -> None:
    """4 MB written while the supervisor does not read (far more than the socket buffers): the
    write waits in poll, using almost no CPU, and every byte arrives in order once it reads."""
    relay, server = relay_for(listener)
    payload = b"".join(b"%08d done\n" % i for i in range(4 * 1024 * 1024 // 14))
    native: list[int] = []
    finished = threading.Event()

    def write() -> None:
        native.append(threading.get_native_id())
        relay.stdin.write(payload)
        finished.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_until(lambda: native, timeout_s=5, desc="writer started")
    window_s = 0.5  # a measurement window, not a synchronization: the writer must stay blocked
    before = _thread_cpu_s(native[0])
    time.sleep(window_s)
    spent_s = _thread_cpu_s(native[0]) - before
    assert not finished.is_set(), "the supervisor read nothing, so the write cannot have finished"
    assert spent_s < 0.1, f"the blocked write used {spent_s:.2f} s of CPU in {window_s} s"
    received = bytearray()
    while len(received) < len(payload):
        chunk = server.recv(65536)
        assert chunk, f"connection closed after {len(received)} of {len(payload)} bytes"
        received += chunk
    writer.join(5)
    assert finished.is_set()
    assert bytes(received) == payload
    assert relay.dropped_bytes == 0


def test_supervisor_gone_drops_the_write_and_reports_an_exit(listener: socket.socket) -> None:
    """EPIPE: the write returns (ExaBGP would mark an OSError's helper broken and stop the peer),
    the bytes are counted as dropped, and poll() is no longer None, so ExaBGP respawns it."""
    relay, server = relay_for(listener)
    server.close()
    assert relay.stdin.write(b"done\n") == 5
    assert relay.dropped_bytes == 5
    assert relay.poll() is not None
    assert relay.stdin.write(b"error\n") == 6  # and so on, until ExaBGP notices
    assert relay.dropped_bytes == 11


def test_terminate_closes_the_connection(listener: socket.socket) -> None:
    """terminate() (ExaBGP's respawn and shutdown): the supervisor reads its end of file."""
    relay, server = relay_for(listener)
    relay.terminate()
    assert server.recv(10) == b""
    assert relay.wait(timeout=2) == -signal.SIGTERM
    assert relay.poll() == -signal.SIGTERM
    relay.kill()  # after terminate, as ExaBGP's _terminate_run may: harmless
    assert relay.stdout.fileno() == -1  # ExaBGP's reactor skips -1


def test_wait_times_out_while_connected(listener: socket.socket) -> None:
    """wait(timeout) raises subprocess.TimeoutExpired while the supervisor holds the
    connection, even with bytes waiting to be read (they are no end)."""
    relay, server = relay_for(listener)
    server.sendall(b"announce eor ipv4 unicast\n")
    with pytest.raises(subprocess.TimeoutExpired):
        relay.wait(timeout=0.2)
    server.shutdown(socket.SHUT_WR)
    assert relay.wait(timeout=2) == 0


def test_missing_socket_is_a_helper_that_exited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No socket: a relay that has exited with 1 and reads as an end of file, said in one line
    on stderr (ExaBGP's log): ExaBGP respawns it, as it does a relay that could not connect."""
    path = str(tmp_path / "missing.sock")
    relay = connect([sys.executable, RELAY, path], path)
    assert relay.poll() == 1
    assert read_available(relay) == b""
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"bgpspeaker's API relay could not connect to {path}: [Errno 2]"), line
    relay.terminate()


@pytest.mark.parametrize(
    ("command", "matched"),
    [
        pytest.param(["/usr/bin/python3", RELAY, "/run/x/api.sock"], True, id="our-relay"),
        pytest.param(["/usr/bin/python3", RELAY + "x", "/run/x/api.sock"], False, id="another-name"),
        pytest.param(["/usr/bin/python3", RELAY], False, id="no-socket"),
        pytest.param(["/usr/bin/python3", RELAY, "/run/x/api.sock", "extra"], False, id="extra-argument"),
        pytest.param(["/usr/bin/python3", "/nonexistent/relay.py", "/run/x/api.sock"], False, id="missing-relay"),
        pytest.param(["/bin/cat"], False, id="another-program"),
    ],
)
def test_only_our_relay_is_matched(command: list[str], matched: bool) -> None:
    """Only ``[python, bgpspeaker/exabgp/relay.py, SOCKET]`` is connected in-process."""
    assert relay_socket(command) == ("/run/x/api.sock" if matched else None)


def test_a_relay_py_elsewhere_is_not_ours(tmp_path: Path) -> None:
    """Another file named relay.py (another program's helper) is started as a process."""
    other = tmp_path / "relay.py"
    shutil.copy(RELAY, other)
    assert relay_socket([sys.executable, str(other), "/run/x/api.sock"]) is None


def test_other_commands_are_started_as_processes() -> None:
    """The patched module starts anything but our relay with the real Popen, options passed on."""
    module = SubprocessWithRelay(subprocess)
    proc = module.Popen(["/bin/echo", "hello"], stdout=module.PIPE)
    assert isinstance(proc, subprocess.Popen)
    out, _ = proc.communicate(timeout=5)
    assert out == b"hello\n"
    assert module.TimeoutExpired is subprocess.TimeoutExpired
