"""Start ExaBGP with one setting it lacks, one copy it does not need, no naps while busy, and why a connect failed.

- Keepalive interval: ExaBGP 5.0.15 always sends keepalives every third of the
  negotiated hold time. When ``BGPSPEAKER_KEEPALIVE`` is set (seconds), keepalives go
  out every ``min(that, negotiated hold time / 3)`` seconds instead, FRR's rule for a
  configured keepalive.
- Per-route copy: ``Neighbor.remove_self`` deep-copies every API route before looking
  at its next hop, so one change can be given to several neighbors. bgpspeaker runs
  one ExaBGP per peer (one neighbor) and sends explicit next hops, so the copy only
  burns CPU (measured ~45% of ExaBGP's time on a bulk announce). With
  ``BGPSPEAKER_NO_ROUTE_COPY=1`` a route whose next hop is explicit is passed on
  as is; ``next-hop self`` routes are still copied, as upstream does.
- Nagle's algorithm: ExaBGP disables it on sessions it accepts but not on those it
  opens (the call is commented out in ``outgoing.py``), and bgpspeaker only opens
  them. ``BGPSPEAKER_NODELAY=1`` sets TCP_NODELAY on outgoing sessions too, as FRR,
  BIRD and GoBGP do, so an UPDATE never waits behind an unacknowledged segment. (A
  "slow mode" once blamed on Nagle was the benchmark's vtysh probe: docs/performance.md.)
- Reactor naps (``BGPSPEAKER_FAST_REACTOR=1``). ExaBGP runs API commands as
  generators, 50 routes per pass of its reactor loop, and each pass without fresh
  API input ends in a 10 ms ``poll``: a 10,000-route bulk announce spent ~1.5 of its
  2.6 s asleep. The launcher skips the nap while API work is queued or an established
  session has routes waiting, and runs those generators without building an asyncio
  event loop per pass (upstream calls ``asyncio.run`` every pass even when no
  coroutine is queued). When every session is up and nothing is queued it naps
  ``BGPSPEAKER_IDLE_POLL_MS`` instead (the router's socket and the API still wake it
  at once). Measured at 10k: 2.56 s -> 0.56 s; idle CPU 3.0% -> 0.3% of a core.
- Why a connect failed (``BGPSPEAKER_CONNECT_ERRORS=1``). ExaBGP logs a failed
  ``connect()`` (no route, bad source address) only at debug level, and an
  asynchronous failure (refused, no route to host, timed out) not at all:
  ``tcp.ready()`` reads the socket's ``SO_ERROR``, drops it, and reports the socket
  connected, so the first write fails as "Broken TCP connection" whatever happened.
  The launcher reads that error first and logs it at warning level, in ExaBGP's own
  wording (``Could not connect to peer 10.0.0.1:179 ([Errno ECONNREFUSED] [Errno 111]
  Connection refused)``), once per distinct error per minute; the supervisor turns it
  into the cause of a session that does not come up. What ExaBGP does next (reset,
  back off, retry) is unchanged. Only sockets still connecting are looked at.

Everything else is ExaBGP's own ``main``, unchanged.

Run as ``python -m bgpspeaker.exabgp.launcher server CONFIG`` by the supervisor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def _patch_keepalive(interval_s: int) -> None:
    from exabgp.bgp.message.open.holdtime import HoldTime

    derived = HoldTime.keepalive

    def keepalive(self: HoldTime) -> int:
        negotiated = int(derived(self))
        return min(negotiated, interval_s) if negotiated else 0

    HoldTime.keepalive = keepalive


def _skip_route_copy() -> None:
    from exabgp.bgp.neighbor import Neighbor

    copying = Neighbor.remove_self

    def remove_self(self: Neighbor, change: object) -> object:
        if not change.nlri.nexthop.SELF:  # type: ignore[attr-defined]
            return change  # one neighbor per process: nobody else will see this change
        return copying(self, change)

    Neighbor.remove_self = remove_self


def _no_delay() -> None:
    import socket

    from exabgp.reactor.network.outgoing import Outgoing

    setup = Outgoing._setup

    def _setup(self: Outgoing) -> object:
        problem = setup(self)
        if problem is None and self.io is not None:
            self.io.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return problem

    Outgoing._setup = _setup


def _no_event_loop_per_pass() -> None:
    from exabgp.reactor.asynchronous import ASYNC

    run_with_asyncio = ASYNC.run

    def run(self: ASYNC) -> bool:
        if not self._async:
            return False
        if any(self._is_coroutine(callback) for _, callback in self._async):
            return bool(run_with_asyncio(self))
        steps = self._run_async()  # generators only: this coroutine never awaits
        try:
            steps.send(None)
        except StopIteration as done:
            return bool(done.value)
        steps.close()
        raise RuntimeError("ExaBGP's API callbacks awaited outside an event loop")

    ASYNC.run = run


def _no_idle_wait_while_busy(idle_ms: int) -> None:
    from exabgp.bgp.fsm import FSM
    from exabgp.reactor.loop import Reactor

    wait_for_io = Reactor._wait_for_io

    def _wait_for_io(self: Reactor, sleeptime: int) -> object:
        if sleeptime:
            established = [peer for peer in self._peers.values() if peer.fsm == FSM.ESTABLISHED]
            if not self.asynchronous.ready() or any(peer.neighbor.rib.outgoing.pending() for peer in established):
                sleeptime = 0  # API work queued, or routes waiting to be sent: no nap
            elif idle_ms and len(established) == len(self._peers):
                sleeptime = idle_ms  # nothing to do, every session up: wake on I/O or timers
        return wait_for_io(self, sleeptime)

    Reactor._wait_for_io = _wait_for_io


CONNECT_ERROR_REPEAT_S = 60.0
"""The same connect error for the same peer is logged again after this long, not on every retry."""


def _report_connect_errors() -> None:
    import errno
    import select
    import socket
    import time
    import weakref

    from exabgp.logger import log
    from exabgp.reactor.network import outgoing
    from exabgp.util.errstr import errstr

    reported: dict[str, tuple[str, float]] = {}
    connecting: weakref.WeakKeyDictionary[socket.socket, outgoing.Outgoing] = weakref.WeakKeyDictionary()

    def report(connection: outgoing.Outgoing, problem: str) -> None:
        target = f"{connection.peer}:{connection.port}"
        now = time.monotonic()
        last = reported.get(target)
        if last is not None and last[0] == problem and now - last[1] < CONNECT_ERROR_REPEAT_S:
            return
        reported[target] = (problem, now)
        log.warning(lambda: problem, connection.session())

    def take_pending_error(io: socket.socket) -> None:
        """Read (and so clear) the error the kernel holds for a socket still connecting."""
        connection = connecting.get(io)
        if connection is None:
            return
        try:
            poller = select.poll()
            poller.register(io, select.POLLERR)
            if not any(event & select.POLLERR for _, event in poller.poll(0)):
                return
            code = io.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except (OSError, ValueError):  # closed under us: upstream notices on its own
            return
        if code and code not in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
            failure = OSError(code, os.strerror(code))
            report(connection, f"Could not connect to peer {connection.peer}:{connection.port} ({errstr(failure)})")

    connect = outgoing.Outgoing._connect
    ready = outgoing.ready

    def _connect(self: outgoing.Outgoing) -> object:
        problem = connect(self)
        if problem is not None:
            report(self, str(problem))
        elif self.io is not None:
            connecting[self.io] = self
        return problem

    def _ready(io: socket.socket) -> Iterator[tuple[bool, str]]:
        steps = ready(io)
        try:
            while True:
                take_pending_error(io)  # before upstream reads SO_ERROR and drops it
                try:
                    step = next(steps)
                except StopIteration:
                    return
                yield step
        finally:
            steps.close()

    outgoing.Outgoing._connect = _connect
    outgoing.ready = _ready


def main() -> None:
    """Apply the settings, then hand over to ExaBGP."""
    if os.environ.get("BGPSPEAKER_CONNECT_ERRORS") == "1":
        _report_connect_errors()
    if os.environ.get("BGPSPEAKER_FAST_REACTOR") == "1":
        _no_event_loop_per_pass()
        idle = os.environ.get("BGPSPEAKER_IDLE_POLL_MS", "")
        _no_idle_wait_while_busy(int(idle) if idle.isdigit() else 0)
    if os.environ.get("BGPSPEAKER_NODELAY") == "1":
        _no_delay()
    interval = os.environ.get("BGPSPEAKER_KEEPALIVE", "")
    if interval.isdigit() and int(interval) > 0:
        _patch_keepalive(int(interval))
    if os.environ.get("BGPSPEAKER_NO_ROUTE_COPY") == "1":
        _skip_route_copy()
    from exabgp.application.main import main as exabgp_main

    exabgp_main()


if __name__ == "__main__":
    main()
