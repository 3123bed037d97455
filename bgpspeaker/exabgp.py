"""The ExaBGP supervisor: render the config, run ExaBGP as a child, speak its text API.

ExaBGP runs ``relay.py`` as its API helper; the relay connects to a unix socket this
supervisor owns. One thread (``exabgp-supervisor``) spawns ExaBGP, accepts the relay's
connection, reads every line (acks and neighbor events) and restarts ExaBGP when it
exits. ``execute()`` is called by the reconciler, the single writer: it pipelines
command lines and matches the ``done``/``error`` acks in order.

ExaBGP is started with ``PR_SET_PDEATHSIG`` = SIGKILL from that long-lived thread,
so it dies with bgpspeaker, and in its own session, so a terminal's Ctrl-C reaches
bgpspeaker (which withdraws first) and not ExaBGP directly.
"""

from __future__ import annotations

import base64
import collections
import ctypes
import dataclasses
import json
import os
import pwd
import queue
import re
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import IO, Any

import structlog

from bgpspeaker.config import IPAddress
from bgpspeaker.errors import ExabgpUnavailable
from bgpspeaker.peers import PeerRuntime

__all__ = ["ExabgpSupervisor", "PeerState", "render_config", "session_fingerprint"]

log = structlog.get_logger("bgpspeaker.exabgp")

_PR_SET_PDEATHSIG = 1

IDLE_POLL_MS = 100
"""How long ExaBGP's reactor naps when every session is up and nothing is queued: it
wakes at once on the router's socket or our API, so this only bounds timer work
(keepalives go out at most this late). Upstream naps 10 ms: 2.3% of a core idle."""
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def _template(name: str) -> string.Template:
    try:
        text = resources.files("bgpspeaker.exabgp_conf").joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree
        text = (Path(__file__).resolve().parent.parent / "exabgp-conf" / name).read_text()
    return string.Template(text)


def _safe_path(path: str) -> str:
    if not _SAFE_PATH.match(path):
        raise ValueError(f"path not usable in ExaBGP's config (spaces or odd characters): {path!r}")
    return path


def render_config(runtime: PeerRuntime, *, router_id: IPAddress, relay_command: Sequence[str]) -> str:
    """ExaBGP's configuration text for one peer (pure; every value is typed or checked)."""
    peer = runtime.peer
    options = []
    if peer.source_address is not None:
        options.append(f"local-address {peer.source_address};")
    if runtime.password is not None:
        # base64 keeps any byte of the key out of ExaBGP's tokenizer.
        options.append(f"md5-password {base64.b64encode(runtime.password.reveal()).decode('ascii')};")
        options.append("md5-base64 true;")
    if peer.ebgp:
        # FRR's and BIRD's default: a directly connected eBGP peer gets TTL 1.
        options.append(f"outgoing-ttl {peer.ebgp_multihop or 1};")
    if peer.graceful_restart_s is not None:
        options.append(f"capability {{ graceful-restart {peer.graceful_restart_s}; }}")
        # End-of-RIB only when bgpspeaker says every route is there: an automatic one
        # right after a restart would tell the router to flush its stale routes.
        options.append("manual-eor true;")
    families = "\n".join(f"        {family} unicast;" for family in sorted(peer.families))
    neighbor = _template("neighbor.conf.tmpl").substitute(
        peer_address=peer.peer_address,
        name=peer.name,  # validated as a DNS label
        router_id=router_id,
        local_as=peer.my_asn,
        peer_as=peer.peer_asn,
        hold_time=peer.hold_time_s,
        peer_port=peer.peer_port,
        options="".join(f"    {option}\n" for option in options),
        families=families,
    )
    return _template("exabgp.conf.tmpl").substitute(
        relay_command=" ".join(_safe_path(part) for part in relay_command),
        neighbors=neighbor,
    )


def session_fingerprint(runtime: PeerRuntime, router_id: IPAddress) -> str:
    """Everything that needs a new session when it changes (next hops and attributes do not)."""
    text = render_config(runtime, router_id=router_id, relay_command=["relay"])
    return f"{text}\nkeepalive={runtime.peer.keepalive_s}"


@dataclasses.dataclass(frozen=True, slots=True)
class PeerState:
    """A peer's session as ExaBGP last reported it. Only ``up`` means Established."""

    name: str
    state: str
    since_monotonic: float
    reason: str = ""


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Connection:
    """One relay connection: the socket and the acks read from it, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.acks: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        """True for ``done``, False for ``error``, None once the connection is gone."""


class ExabgpSupervisor:
    """Runs one ExaBGP for one peer and gives the reconciler an acknowledged command channel.

    One child per peer: a changed peer restarts only its own session, a stuck or
    crashing ExaBGP takes only its own peer down, and bulk work spreads over cores.
    """

    def __init__(
        self,
        runtime: PeerRuntime,
        *,
        router_id: IPAddress,
        workdir: Path,
        on_ready: Callable[[], None],
        ack_timeout_s: float = 10.0,
        exabgp_log_level: str = "WARNING",
        launcher_patches: bool = True,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self.name = runtime.peer.name
        self._exabgp_log_level = exabgp_log_level
        """ExaBGP's own level: at INFO it formats and prints a line per route (~15% of its CPU)."""
        self._launcher_patches = launcher_patches
        """False only for the benchmark's upstream-ExaBGP anchor (see exabgp_main)."""
        self.fingerprint = session_fingerprint(runtime, router_id)
        self._log = log.bind(peer=self.name)
        self._failing_logged = False
        self.establish_warn_s = 10.0
        """Not Established this long after start or after a drop: say so, once."""
        self._not_up_since = time.monotonic()
        self.up_count = 0
        """Increments each time the session reaches Established."""
        self.router_id = router_id
        self._workdir = workdir
        self._on_ready = on_ready
        self.ack_timeout_s = ack_timeout_s
        """No ack for this long while commands are outstanding: ExaBGP is frozen."""
        self._max_restarts = max_restarts
        self._restart_window_s = restart_window_s
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._conn: _Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._generation = 0
        self._stopping = threading.Event()
        self._ready = threading.Condition(self._lock)
        self.state = PeerState(self.name, "down", time.monotonic())
        self.restarts = 0
        self.failed: BaseException | None = None
        """Set when ExaBGP cannot be kept running; the entry point exits non-zero."""
        self._thread = threading.Thread(target=self._run, name=f"exabgp-{self.name}", daemon=True)

    # -- public surface -------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor thread (which starts ExaBGP)."""
        self._thread.start()

    @property
    def generation(self) -> int:
        """Increments with every ExaBGP process; the acked state belongs to one generation."""
        return self._generation

    @property
    def pid(self) -> int | None:
        """The running ExaBGP's PID, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def wait_ready(self, timeout_s: float) -> int | None:
        """Block until the API connection is up; return its generation, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while self._conn is None and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._ready.wait(remaining)
            return self._generation if self._conn is not None else None

    def execute(self, lines: Sequence[str], *, window: int = 64) -> tuple[int, list[bool]]:
        """Send ``lines``; return (generation, one ack per line: True done, False error).

        Pipelined: up to ``window`` lines are in flight. Raises ExabgpUnavailable with
        ``.results`` (acks so far) when the connection breaks or ExaBGP stops acking,
        in which case ExaBGP is killed and restarted.
        """
        with self._send_lock:
            with self._lock:
                conn, generation = self._conn, self._generation
            if conn is None:
                raise ExabgpUnavailable("ExaBGP's API is not connected")
            results: list[bool] = []
            sent = 0
            while len(results) < len(lines):
                if sent < len(lines) and sent - len(results) < window:
                    end = min(len(lines), len(results) + window)
                    payload = "".join(f"{line}\n" for line in lines[sent:end]).encode("ascii")
                    try:
                        conn.sock.sendall(payload)
                    except OSError as error:
                        raise ExabgpUnavailable(f"write failed: {error}", results) from error
                    sent = end
                    continue
                try:
                    ack = conn.acks.get(timeout=self.ack_timeout_s)
                except queue.Empty:
                    self._log.error(
                        "exabgp_unresponsive",
                        pid=self.pid,
                        outstanding=sent - len(results),
                        timeout_s=self.ack_timeout_s,
                    )
                    self._kill()
                    raise ExabgpUnavailable("no acknowledgement before the deadline", results) from None
                if ack is None:
                    raise ExabgpUnavailable("API connection closed", results)
                results.append(ack)
            return generation, results

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop ExaBGP (SIGTERM, then SIGKILL after ``timeout_s``) and the supervisor."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout_s)

    # -- internals -------------------------------------------------------------------

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # ExaBGP 5.0.15 as root always switches to this user before starting
                # helpers; it must be able to reach the relay and its socket.
                "exabgp_daemon_user": pwd.getpwuid(os.geteuid()).pw_name,
                "exabgp_daemon_daemonize": "false",
                "exabgp_daemon_pid": "",
                "exabgp_api_ack": "true",
                "exabgp_api_cli": "false",
                "exabgp_api_encoder": "json",
                "exabgp_api_respawn": "true",
                "exabgp_log_destination": "stdout",
                "exabgp_log_level": self._exabgp_log_level,
                # ExaBGP's default. Its idle naps are shortened or lengthened by the
                # launcher instead (BGPSPEAKER_IDLE_POLL_MS): a slower reactor alone also
                # paced bulk work (10k routes 1.4x to 30x slower; docs/performance.md).
                "exabgp_reactor_speed": "1.0",
                "exabgp_log_short": "true",
                "exabgp_log_statistics": "false",
                "exabgp_log_packets": "false",
                "exabgp_log_rib": "false",
                "exabgp_log_message": "false",
                "exabgp_tcp_bind": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        patched = "1" if self._launcher_patches else "0"
        env.update(
            {
                "BGPSPEAKER_KEEPALIVE": str(self.runtime.peer.keepalive_s) if self._launcher_patches else "",
                "BGPSPEAKER_NO_ROUTE_COPY": patched,
                "BGPSPEAKER_NODELAY": patched,
                "BGPSPEAKER_FAST_REACTOR": patched,
                "BGPSPEAKER_IDLE_POLL_MS": str(IDLE_POLL_MS),
            }
        )
        return env

    def _write_config(self, socket_path: Path) -> Path:
        relay = Path(__file__).resolve().parent / "relay.py"
        text = render_config(
            self.runtime,
            router_id=self.router_id,
            relay_command=[sys.executable, str(relay), str(socket_path)],
        )
        path = self._workdir / "exabgp.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return path

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as error:  # noqa: BLE001  # recorded for the entry point, which exits
            self.failed = error
            self._log.exception("exabgp_supervisor_failed")
        finally:
            self._stopping.set()
            self._kill()
            with self._ready:
                self._ready.notify_all()

    def _supervise(self) -> None:
        socket_path = self._workdir / "api.sock"
        socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        listener.listen(4)
        listener.settimeout(0.2)
        config_path = self._write_config(socket_path)
        starts: collections.deque[float] = collections.deque()
        while not self._stopping.is_set():
            now = time.monotonic()
            starts.append(now)
            while starts and now - starts[0] > self._restart_window_s:
                starts.popleft()
            if len(starts) > self._max_restarts:
                raise RuntimeError(
                    f"ExaBGP exited {len(starts) - 1} times within {self._restart_window_s:.0f} s; giving up"
                )
            self._run_one(listener, config_path)
            if self._stopping.is_set():
                break
            self.restarts += 1
            backoff_s = min(0.2 * 2 ** (len(starts) - 1), 5.0)
            self._stopping.wait(backoff_s)
        listener.close()

    def _run_one(self, listener: socket.socket, config_path: Path) -> None:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bgpspeaker.exabgp_main", "server", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            preexec_fn=_set_pdeathsig,  # noqa: PLW1509  # prctl must run in the child; no locks taken
            start_new_session=True,
        )
        with self._lock:
            self._proc = proc
            self._generation += 1
            generation = self._generation
        self._log.info("exabgp_started", pid=proc.pid, generation=generation)
        assert proc.stdout is not None
        output = threading.Thread(
            target=_forward_output, args=(proc.stdout, proc.pid, self.name), name="exabgp-output", daemon=True
        )
        output.start()
        conn: _Connection | None = None
        buffer = b""
        while proc.poll() is None:
            if conn is None:
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                sock.settimeout(0.5)
                conn = _Connection(sock)
                buffer = b""
                with self._ready:
                    self._conn = conn
                    self._ready.notify_all()
                self._log.info(
                    "exabgp_api_connected",
                    pid=proc.pid,
                    generation=generation,
                    startup_ms=round((time.monotonic() - started) * 1000, 1),
                )
                self._on_ready()
                continue
            try:
                chunk = conn.sock.recv(65536)
            except TimeoutError:
                self._check_establishing()
                continue
            except OSError:
                chunk = b""
            if not chunk:
                (self._log.info if self._stopping.is_set() else self._log.warning)(
                    "exabgp_api_disconnected", pid=proc.pid, generation=generation
                )
                self._drop_connection(conn)
                conn = None
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._dispatch(conn, line.strip())
        code = proc.wait()
        if conn is not None:
            self._drop_connection(conn)
        output.join(2.0)
        level = self._log.info if self._stopping.is_set() else self._log.error
        level(
            "exabgp_exited",
            pid=proc.pid,
            code=code,
            generation=generation,
            uptime_s=round(time.monotonic() - started, 1),
        )
        if self.state.state == "up":
            self._not_up_since = time.monotonic()
            self._log.warning("peer_down", reason="exabgp_exited")
        self.state = PeerState(self.name, "down", time.monotonic(), "exabgp_exited")

    def _drop_connection(self, conn: _Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.acks.put(None)
        conn.sock.close()

    def _dispatch(self, conn: _Connection, line: bytes) -> None:
        if line == b"done":
            conn.acks.put(True)
        elif line == b"error":
            conn.acks.put(False)
        elif line.startswith(b"{"):
            try:
                event = json.loads(line)
            except ValueError:
                self._log.warning("exabgp_event_unparsed", line=line[:200].decode("ascii", "replace"))
                return
            self._on_event(event)
        elif line:
            self._log.debug("exabgp_api_line", line=line[:200].decode("ascii", "replace"))

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "state":
            return
        neighbor = event.get("neighbor", {})
        peer_address = neighbor.get("address", {}).get("peer")
        state = str(neighbor.get("state", ""))
        if peer_address != str(self.runtime.peer.peer_address):
            self._log.warning("exabgp_event_unknown_peer", peer_address=peer_address, state=state)
            return
        reason = str(neighbor.get("reason", ""))
        previous = self.state
        self.state = PeerState(self.name, state, time.monotonic(), reason)
        if state != "up" and previous.state == "up":
            self._not_up_since = time.monotonic()
        if state == "up":
            self.up_count += 1
            self._on_ready()  # a (re-)established session may need its End-of-RIB
            self._failing_logged = False
            self._log.info("peer_up", peer_address=peer_address, local_address=neighbor.get("address", {}).get("local"))
        elif state == "down":
            if previous.state == "up":
                self._log.warning("peer_down", peer_address=peer_address, reason=reason or "unknown")
            elif not self._failing_logged:
                # Once per outage, not once per retry: the retries go to debug.
                self._failing_logged = True
                self._log.warning(
                    "peer_not_established",
                    peer_address=peer_address,
                    reason=reason or "unknown",
                    hint=self._hint(),
                )
            else:
                self._log.debug("peer_connect_failed", peer_address=peer_address, reason=reason)
        else:
            self._log.debug("peer_state", state=state)

    def _check_establishing(self) -> None:
        """A connect that hangs (SYNs dropped: MD5 mismatch, TTL, filters) produces no
        ExaBGP event for minutes; notice it here."""
        if self.state.state == "up" or self._failing_logged:
            return
        waited = time.monotonic() - self._not_up_since
        if waited >= self.establish_warn_s:
            self._failing_logged = True
            self._log.warning(
                "peer_not_established",
                peer_address=str(self.runtime.peer.peer_address),
                reason=f"no session after {waited:.0f} s (last state: {self.state.state})",
                hint=self._hint(),
            )

    def _hint(self) -> str:
        peer = self.runtime.peer
        if self.runtime.password is not None:
            return (
                "TCP MD5 is on: a password that differs from the router's looks exactly like this"
                " (the router drops our SYNs); check both sides"
            )
        if peer.ebgp and not peer.ebgp_multihop:
            return "eBGP with TTL 1: if the router is more than one hop away, set ebgpMultiHop"
        return "check the router's neighbor config and that it is reachable from this node"


_NOISY = ("error", "fail", "invalid", "problem", "could not", "not found", "refused", "traceback")


def _forward_output(stream: IO[bytes], pid: int, peer: str) -> None:
    """Read ExaBGP's stdout until EOF (it must never block on a full pipe) and log it."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            continue
        if any(word in text.lower() for word in _NOISY):
            log.warning("exabgp_log", peer=peer, pid=pid, line=text[:500])
        else:
            log.debug("exabgp_log", peer=peer, pid=pid, line=text[:500])
    stream.close()
