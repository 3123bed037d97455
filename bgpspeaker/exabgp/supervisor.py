"""The ExaBGP supervisor: run ExaBGP as a child, speak its text API (the ``Session``).

ExaBGP's config names ``relay.py`` as its API helper; the relay connects to a unix socket
this supervisor owns. With the speed patches the launcher makes ExaBGP connect to that
socket itself instead of starting the relay (``bgpspeaker.exabgp.inprocess``: no second
process); as released, ExaBGP runs the relay. Either way one thread
(``exabgp-supervisor``) spawns ExaBGP, accepts the API connection, reads every line (acks
and neighbor events) and restarts ExaBGP when it exits. ``execute()`` is called by the
reconciler, the single writer: it pipelines command lines and matches the
``done``/``error`` acks in order.

ExaBGP is started with ``PR_SET_PDEATHSIG`` = SIGKILL from that long-lived thread,
so it dies with bgpspeaker, and in its own session, so a terminal's Ctrl-C reaches
bgpspeaker (which withdraws first) and not ExaBGP directly.

ExaBGP never runs as root: when bgpspeaker does, the child switches to ``run_as``
(default ``nobody``) between fork and exec, and its work directory, config and socket
are handed to that user. When a session does not come up, ``diagnose()`` names the
cause from what ExaBGP reported (the ``down`` event's reason, its log lines).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import structlog

from bgpspeaker.errors import CommandValueError, ExabgpUnavailable
from bgpspeaker.exabgp.commands import announce_line, eor_line, withdraw_line
from bgpspeaker.exabgp.diagnosis import NOTIFICATION_REASON, asn_mismatch, diagnose, is_evidence
from bgpspeaker.exabgp.launcher import MESSAGE_COUNTERS_EVENT, launcher_settings
from bgpspeaker.exabgp.privileges import RunAs, blocked_for, lacks, resolve_run_as, user_name
from bgpspeaker.exabgp.render import render_config, session_fingerprint
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import IPAddress
from bgpspeaker.session import Ack, RouteChange, SessionStatus
from bgpspeaker.workdir import PREFIX as WORKDIR_PREFIX
from bgpspeaker.workdir import remove_workdir

__all__ = ["EVIDENCE_GRACE_S", "IDLE_POLL_MS", "ExabgpSupervisor", "PeerState"]

log = structlog.get_logger("bgpspeaker.exabgp")


_PR_SET_PDEATHSIG = 1

IDLE_POLL_MS = 100
"""How long ExaBGP's reactor naps when every session is up and nothing is queued: it
wakes at once on the router's socket or our API, so this only bounds timer work
(keepalives go out at most this late). Upstream naps 10 ms: 2.3% of a core idle."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerState:
    """A peer's session as ExaBGP last reported it. Only ``up`` means Established."""

    name: str
    state: str
    since_monotonic: float
    reason: str = ""


def _die_with(parent_pid: int) -> Callable[[], None]:
    """The child's last step before exec: SIGKILL it when the thread that forked it ends.

    It runs after ``_posixsubprocess`` has applied ``user=``/``group=`` (setgroups,
    setregid, setreuid, then preexec_fn), which matters: the kernel clears the
    parent-death signal on a uid change, so set before the switch it would be lost.
    A parent that died before this ran is caught by the PPID check.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: no dlopen between fork and exec

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return set_pdeathsig


class _Connection:
    """One relay connection: the socket and the acks read from it, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.acks: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        """True for ``done``, False for ``error``, None once the connection is gone."""


_NO_SWITCH = (
    "cannot start ExaBGP as user {user!r} ({error}): bgpspeaker runs as root without CAP_CHOWN,"
    " CAP_SETUID or CAP_SETGID; run bgpspeaker itself as a non-root user (as deploy/daemonset.yaml does)"
)

EVIDENCE_GRACE_S = 0.3
"""A ``down`` event without a NOTIFICATION waits this long for ExaBGP's log line that says
why (stdout and the API socket are read by different threads, in no fixed order)."""


class ExabgpSupervisor:
    """Runs one ExaBGP for one peer and gives the reconciler an acknowledged command channel.

    One child per peer: a changed peer restarts only its own session, a stuck or
    crashing ExaBGP takes only its own peer down, and bulk work spreads over cores.

    ``workdir`` is this peer's own directory (created if missing): the supervisor makes
    it 0700, owned by the user ExaBGP runs as, puts ExaBGP's config (0600, holds the MD5
    key) and the API socket in it, and removes it in ``stop()`` once ExaBGP is gone.
    That user must be able to pass through ``workdir``'s parents: when the parent is
    bgpspeaker's own work directory (``bgpspeaker-*``, ours) the supervisor grants that
    user search permission on it (not read: the names in it stay private); any other
    ancestor it cannot pass is only reported (``exabgp_path_unreachable``).
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
        speed_patches: bool = True,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        run_as: str | None = None,
    ) -> None:
        self.runtime = runtime
        """The peer and its runtime facts; only ``retune`` replaces it."""
        self.name = runtime.peer.name
        self._exabgp_log_level = exabgp_log_level
        """ExaBGP's own level: at INFO it formats and prints a line per route (~15% of its CPU)."""
        self._speed_patches = speed_patches
        """The launcher's speed patches (route copy, TCP_NODELAY, reactor naps); False only for
        the benchmark's "ExaBGP as released" anchor. The keepalive and connect-error patches
        are applied either way (see bgpspeaker.exabgp.launcher)."""
        self._run_as_setting = run_as
        """Whom ExaBGP runs as when bgpspeaker is root (None: ``nobody``); see resolve_run_as."""
        self._fingerprint = session_fingerprint(runtime, router_id)
        self._log = log.bind(peer=self.name)
        self._failing_logged = False
        self.establish_warn_s = 10.0
        """Not Established this long after start or after a drop: say so, once."""
        self._not_up_since = time.monotonic()
        self._down_reason = ""
        """ExaBGP's last ``down`` reason since the session was last up ('' when none came)."""
        self._down_pending_since: float | None = None
        """A ``down`` without a NOTIFICATION, not yet reported: waiting for its log line."""
        self._evidence: collections.deque[str] = collections.deque(maxlen=8)
        """ExaBGP log lines that tell why a connect failed, since the session was last up."""
        self._evidence_lock = threading.Lock()
        self.up_count = 0
        """Increments each time the session reaches Established."""
        self.router_id = router_id
        self._workdir = workdir
        self._on_ready = on_ready
        self._ack_timeout_s = ack_timeout_s
        """No ack for this long while commands are outstanding: ExaBGP is frozen."""
        self._max_restarts = max_restarts
        self._restart_window_s = restart_window_s
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._conn: _Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._generation = 0
        self._stopping = threading.Event()
        self._spawned = threading.Event()
        """Set once the first ExaBGP process exists (or the supervisor ended without one)."""
        self._ready = threading.Condition(self._lock)
        self.state = PeerState(self.name, "down", time.monotonic())
        self.restarts = 0
        self._messages_before: dict[str, int] = {}
        """BGP message totals of the ExaBGP processes that exited (each counts from 0)."""
        self._messages: dict[str, int] = {}
        """The running ExaBGP's totals, from its ``bgpspeaker-counters`` lines."""
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

    def wait_spawned(self, timeout_s: float) -> bool:
        """Block until the first ExaBGP process was started (or the supervisor ended); True
        unless ``timeout_s`` passed first."""
        return self._spawned.wait(timeout_s)

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

    def execute(
        self, lines: Sequence[str], *, window: int = 64, ack_timeout_s: float | None = None
    ) -> tuple[int, list[bool]]:
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
                timeout_s = min(self._ack_timeout_s, ack_timeout_s or self._ack_timeout_s)
                try:
                    ack = conn.acks.get(timeout=timeout_s)
                except queue.Empty:
                    self._log.error(
                        "exabgp_unresponsive",
                        pid=self.pid,
                        outstanding=sent - len(results),
                        timeout_s=timeout_s,
                    )
                    self._kill()
                    raise ExabgpUnavailable("no acknowledgement before the deadline", results) from None
                if ack is None:
                    raise ExabgpUnavailable("API connection closed", results)
                results.append(ack)
            return generation, results

    # -- the Session protocol (bgpspeaker.session) ---------------------------------------

    def accepts(self, runtime: PeerRuntime, router_id: IPAddress) -> bool:
        """True when only runtime facts (next hops) differ from the running config."""
        return session_fingerprint(runtime, router_id) == self._fingerprint

    def retune(self, runtime: PeerRuntime) -> None:
        """Same ExaBGP; the next hops for the routes to come."""
        self.runtime = runtime

    def hasten(self, ack_timeout_s: float) -> None:
        """Cap every acknowledgement wait from now on (the one in flight included)."""
        self._ack_timeout_s = min(self._ack_timeout_s, ack_timeout_s)

    def apply(self, changes: Sequence[RouteChange], *, ack_timeout_s: float | None = None) -> list[Ack]:
        """Each change as one bulk text command; one ack per change. A change that cannot be
        encoded (a bug upstream: values are checked at parse time) is refused, not sent."""
        peer = self.runtime.peer
        lines: list[str] = []
        sent_for: list[int] = []
        acks: list[Ack] = [None] * len(changes)
        for index, change in enumerate(changes):
            try:
                if change.attributes is None:
                    line = withdraw_line(peer.peer_address, change.prefixes, next_hop=change.next_hop)
                else:
                    line = announce_line(peer.peer_address, change.attributes, change.prefixes, my_asn=peer.my_asn)
            except CommandValueError as error:
                self._log.error("exabgp_command_refused", error=str(error), prefixes=len(change.prefixes))
                acks[index] = False
                continue
            lines.append(line)
            sent_for.append(index)
        if not lines:
            return acks
        try:
            _, results = self.execute(lines, ack_timeout_s=ack_timeout_s)
        except ExabgpUnavailable as error:
            results = list(error.results)
            self._log.warning("exabgp_unavailable", error=str(error), acknowledged=len(results), sent=len(lines))
        for position, ok in enumerate(results):
            index = sent_for[position]
            acks[index] = ok
            if not ok:
                self._log.error(
                    "exabgp_command_failed", command=lines[position][:200], prefixes=len(changes[index].prefixes)
                )
        return acks

    def end_of_rib(self) -> bool:
        """End-of-RIB for every family of the session; True when ExaBGP took them all."""
        peer = self.runtime.peer
        lines = [eor_line(peer.peer_address, family) for family in sorted(peer.families)]
        try:
            _, results = self.execute(lines)
        except ExabgpUnavailable as error:
            self._log.warning("exabgp_unavailable", error=str(error), sending="end_of_rib")
            return False
        return all(results)

    def status(self) -> SessionStatus:
        """Where ExaBGP and the BGP session stand."""
        state = self.state
        with self._lock:
            generation = self._generation if self._conn is not None else None
        return SessionStatus(
            name=self.name,
            runtime=self.runtime,
            state=state.state,
            since_monotonic=state.since_monotonic,
            generation=generation,
            up_count=self.up_count,
            pid=self.pid,
            restarts=self.restarts,
            failed=None if self.failed is None else str(self.failed),
            messages=self.message_totals(),
        )

    def message_totals(self) -> dict[str, int]:
        """BGP messages sent and received over this peer since it started (``send-update``:
        3, ``receive-keepalive``: 12, ...), across ExaBGP restarts."""
        running = self._messages
        return {
            key: self._messages_before.get(key, 0) + running.get(key, 0) for key in {*self._messages_before, *running}
        }

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop ExaBGP (SIGTERM, then SIGKILL after ``timeout_s``) and the supervisor; then
        remove the work directory (config with the MD5 key, socket), ExaBGP being gone."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
            proc = self._proc  # read under the lock _run_one sets it under: see there
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout_s)
        if proc is None or proc.poll() is not None:
            remove_workdir(self._workdir)

    # -- internals -------------------------------------------------------------------

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _environment(self, run_as: RunAs | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # ExaBGP 5.0.15 as root always switches to this user before starting
                # helpers. It never is root here (the child switched already, and then
                # ExaBGP keeps its user), but name the same user in case that changes.
                "exabgp_daemon_user": run_as.name if run_as is not None else user_name(os.geteuid()),
                "exabgp_daemon_daemonize": "false",
                "exabgp_daemon_pid": "",
                "exabgp_api_ack": "true",
                "exabgp_api_cli": "false",
                "exabgp_api_encoder": "json",
                "exabgp_api_respawn": "true",
                "exabgp_log_destination": "stdout",
                "exabgp_log_level": self._exabgp_log_level,
                # ExaBGP's default. Its idle naps are shortened or lengthened by the
                # launcher instead (--idle-poll-ms): a slower reactor alone also
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
        return env

    def _prepare_workdir(self, run_as: RunAs | None) -> None:
        """This peer's directory: 0700, owned by ExaBGP's user, reachable by it (see the class)."""
        workdir = self._workdir
        workdir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(workdir, 0o700)
        if run_as is None:
            return
        try:
            os.chown(workdir, run_as.uid, run_as.gid)
        except PermissionError as error:
            raise ExabgpUnavailable(_NO_SWITCH.format(user=run_as.name, error=error)) from error
        parent = workdir.parent
        info = parent.stat()
        ours = info.st_uid == os.geteuid() and parent.name.startswith(WORKDIR_PREFIX)
        if ours and lacks(parent, run_as, stat.S_IXOTH) is not None:
            bit = stat.S_IXGRP if info.st_gid == run_as.gid else stat.S_IXOTH
            os.chmod(parent, stat.S_IMODE(info.st_mode) | bit)
        # ExaBGP as released runs the relay, so its user must read it; with the speed patches
        # ExaBGP only matches its path and connects in-process (bgpspeaker.exabgp.inprocess,
        # imported from the same directory), so the check still names a path it needs.
        relay = Path(__file__).resolve().parent / "relay.py"
        for path, need in ((workdir, stat.S_IXOTH), (Path(sys.executable), stat.S_IXOTH), (relay, stat.S_IROTH)):
            blocked = blocked_for(path, run_as, need=need)
            if blocked is not None:
                self._log.error(
                    "exabgp_path_unreachable",
                    path=str(path),
                    user=run_as.name,
                    blocked=blocked,
                    hint=f"ExaBGP runs as {run_as.name!r} and must reach this path: grant it search"
                    " (and read) permission, or place the work directory or virtualenv elsewhere",
                )

    def _write_config(self, socket_path: Path, run_as: RunAs | None) -> Path:
        relay = Path(__file__).resolve().parent / "relay.py"
        text = render_config(
            self.runtime,
            router_id=self.router_id,
            relay_command=[sys.executable, str(relay), str(socket_path)],
        )
        path = self._workdir / "exabgp.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, 0o600)
            if run_as is not None:
                os.fchown(fd, run_as.uid, run_as.gid)
            handle.write(text)
        return path

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as error:  # noqa: BLE001  # recorded for the entry point, which exits
            self.failed = error
            if isinstance(error, ExabgpUnavailable):
                self._log.error("exabgp_unavailable", error=str(error))
            else:
                self._log.exception("exabgp_supervisor_failed")
        finally:
            self._stopping.set()
            self._spawned.set()  # a waiter must not wait for a process that never comes
            self._kill()
            with self._ready:
                self._ready.notify_all()

    def _supervise(self) -> None:
        if self._stopping.is_set():  # stopped before it began
            return
        run_as = resolve_run_as(self._run_as_setting, euid=os.geteuid())
        self._prepare_workdir(run_as)
        socket_path = self._workdir / "api.sock"
        socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        # ExaBGP's API helper (in ExaBGP, or the relay it runs) has ExaBGP's user: only it may connect.
        os.chmod(socket_path, 0o600)
        if run_as is not None:
            os.chown(socket_path, run_as.uid, run_as.gid)
        listener.listen(4)
        listener.settimeout(0.2)
        config_path = self._write_config(socket_path, run_as)
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
            self._run_one(listener, config_path, run_as)
            if self._stopping.is_set():
                break
            self.restarts += 1
            backoff_s = min(0.2 * 2 ** (len(starts) - 1), 5.0)
            self._stopping.wait(backoff_s)
        listener.close()

    def _run_one(self, listener: socket.socket, config_path: Path, run_as: RunAs | None) -> None:
        started = time.monotonic()
        switch: dict[str, Any] = {}
        if run_as is not None:
            # Applied in the child before preexec_fn: setgroups([]), setregid, setreuid.
            switch = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
        patches = launcher_settings(
            keepalive_s=self.runtime.peer.keepalive_s,
            hold_time_s=self.runtime.peer.hold_time_s,
            speed_patches=self._speed_patches,
            idle_poll_ms=IDLE_POLL_MS,
            connect_time_s=self.runtime.peer.connect_time_s,
            reject_own_asn=self.runtime.peer.dynamic_asn == "external",
        )
        command = [sys.executable, "-m", "bgpspeaker.exabgp.launcher", *patches.arguments(), "--"]
        try:
            proc = subprocess.Popen(
                [*command, "server", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._environment(run_as),
                preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509  # prctl must run in the child; no locks taken
                start_new_session=True,
                **switch,
            )
        except PermissionError as error:
            if run_as is None:
                raise
            raise ExabgpUnavailable(_NO_SWITCH.format(user=run_as.name, error=error)) from error
        with self._lock:
            self._proc = proc
            self._generation += 1
            generation = self._generation
            if self._stopping.is_set():  # stop() ran between our check and the fork
                proc.kill()
        self._log.info(
            "exabgp_started",
            pid=proc.pid,
            generation=generation,
            user=run_as.name if run_as is not None else user_name(os.geteuid()),
        )
        self._spawned.set()
        assert proc.stdout is not None
        output = threading.Thread(
            target=_forward_output,
            args=(proc.stdout, proc.pid, self.name, self._note_log_line),
            name="exabgp-output",
            daemon=True,
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
            self._check_establishing()  # also while events keep coming (retries) and no read times out
        code = proc.wait()
        if conn is not None:
            self._drop_connection(conn)
        self._messages_before, self._messages = self.message_totals(), {}
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
                # ExaBGP 5.0.15 writes Python's None as the peer AS with ``peer-as auto``
                # (dynamicASN external): '"asn": { "local": 64513, "peer": None }'.
                event = json.loads(line.replace(_AUTO_PEER_AS, _NULL_PEER_AS))
            except ValueError:
                self._log.warning("exabgp_event_unparsed", line=line[:200].decode("ascii", "replace"))
                return
            self._on_event(event)
        elif line:
            self._log.debug("exabgp_api_line", line=line[:200].decode("ascii", "replace"))

    def _note_log_line(self, text: str) -> None:
        """Called by the output thread for every ExaBGP log line: keep the evidence."""
        if is_evidence(text):
            with self._evidence_lock:
                self._evidence.append(text)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == MESSAGE_COUNTERS_EVENT:
            counters = event.get("counters")
            if isinstance(counters, dict) and len(counters) <= 32:  # a handful of message types
                self._messages = {
                    str(key)[:40]: value
                    for key, value in counters.items()
                    if isinstance(value, int) and not isinstance(value, bool) and value >= 0
                }
            return
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
            self._down_reason = ""
            self._down_pending_since = None
            with self._evidence_lock:
                self._evidence.clear()
            self._log.info("peer_up", peer_address=peer_address, local_address=neighbor.get("address", {}).get("local"))
        elif state == "down":
            self._down_reason = reason
            if previous.state == "up":
                with self._evidence_lock:
                    self._evidence.clear()  # what follows is about the reconnects
                self._log.warning("peer_down", peer_address=peer_address, reason=reason or "unknown")
            elif not self._failing_logged:
                # Once per outage, not once per retry: the retries go to debug.
                if NOTIFICATION_REASON.search(reason):
                    self._report_not_established(reason)
                elif self._down_pending_since is None:
                    self._down_pending_since = time.monotonic()  # reported with its log line
            else:
                self._log.debug("peer_connect_failed", peer_address=peer_address, reason=reason)
        else:
            self._log.debug("peer_state", state=state)

    def _check_establishing(self) -> None:
        """Report a session that does not come up, once per outage: after a ``down`` (once
        its log line had time to arrive), or after ``establish_warn_s`` without one (SYNs
        dropped by MD5 mismatch, TTL or filters produce no ExaBGP event for minutes, nor
        does a connect that fails at once: no route, a foreign sourceAddress)."""
        if self.state.state == "up" or self._failing_logged:
            return
        now = time.monotonic()
        waited = now - self._not_up_since
        pending = self._down_pending_since
        if (pending is not None and now - pending >= EVIDENCE_GRACE_S) or waited >= self.establish_warn_s:
            self._report_not_established(
                self._down_reason or f"no session after {waited:.0f} s (last state: {self.state.state})"
            )

    def _report_not_established(self, reason: str) -> None:
        with self._evidence_lock:
            lines = list(self._evidence)
        diagnosis = diagnose(
            self._down_reason,
            lines,
            peer=self.runtime.peer,
            router_id=self.router_id,
            md5=self.runtime.password is not None,
        )
        self._failing_logged = True
        self._down_pending_since = None
        mismatch = asn_mismatch(self._down_reason, self.runtime.peer)
        if mismatch is not None:
            self._log.warning(
                "peer_asn_mismatch", peer_address=str(self.runtime.peer.peer_address), reason=reason, **mismatch
            )
        self._log.warning(
            "peer_not_established",
            peer_address=str(self.runtime.peer.peer_address),
            reason=reason,
            cause=str(diagnosis.cause),
            hint=diagnosis.hint,
            evidence=diagnosis.evidence[:300],
        )


_AUTO_PEER_AS, _NULL_PEER_AS = b'"peer": None }', b'"peer": null }'
_NOISY = ("error", "fail", "invalid", "problem", "could not", "not found", "refused", "traceback")


def _forward_output(stream: IO[bytes], pid: int, peer: str, on_line: Callable[[str], None]) -> None:
    """Read ExaBGP's stdout until EOF (it must never block on a full pipe), log it, and
    hand every line to ``on_line``."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            continue
        on_line(text)
        if any(word in text.lower() for word in _NOISY):
            log.warning("exabgp_log", peer=peer, pid=pid, line=text[:500])
        else:
            log.debug("exabgp_log", peer=peer, pid=pid, line=text[:500])
    stream.close()
