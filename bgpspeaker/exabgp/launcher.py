"""Start ExaBGP 5.0.15 with a setting it lacks, no needless copy, no naps while busy, and why a connect failed.

Nine patches to private ExaBGP functions, each switched on by an option (the supervisor
builds them with ``launcher_settings``; ``Settings.arguments`` and ``parse_arguments``
are the two directions of that command line):

- Keepalive interval (``--keepalive SECONDS``; a correctness setting, always passed when
  the peer's ``keepaliveTime`` is shorter than the hold time's third). ExaBGP 5.0.15
  always sends keepalives every third of the negotiated hold time; with the option they
  go out every ``min(SECONDS, negotiated hold time / 3)`` seconds, FRR's rule for a
  configured keepalive.
- Per-route copy (``--no-route-copy``, a speed patch). ``Neighbor.remove_self``
  deep-copies every API route before looking at its next hop, so one change can be given
  to several neighbors. bgpspeaker runs one ExaBGP per peer (one neighbor) and sends
  explicit next hops, so the copy only burns CPU (measured ~45% of ExaBGP's time on a
  bulk announce). With the option a route whose next hop is explicit is passed on as is;
  ``next-hop self`` routes are still copied, as upstream does.
- Nagle's algorithm (``--nodelay``, a speed patch). ExaBGP disables it on sessions it
  accepts but not on those it opens (the call is commented out in ``outgoing.py``), and
  bgpspeaker only opens them. The option sets TCP_NODELAY on outgoing sessions too, as
  FRR, BIRD and GoBGP do, so an UPDATE never waits behind an unacknowledged segment. (A
  "slow mode" once blamed on Nagle was the benchmark's vtysh probe: docs/performance.md.)
- Reactor naps (``--fast-reactor``, a speed patch). ExaBGP runs API commands as
  generators, 50 routes per pass of its reactor loop, and each pass without fresh API
  input ends in a 10 ms ``poll``: a 10,000-route bulk announce spent ~1.5 of its 2.6 s
  asleep. The launcher skips the nap while API work is queued or an established session
  has routes waiting, and runs those generators without building an asyncio event loop
  per pass (upstream calls ``asyncio.run`` every pass even when no coroutine is queued).
  When every session is up and nothing is queued it naps ``--idle-poll-ms`` instead (the
  router's socket and the API still wake it at once). Measured at 10k: 2.56 s -> 0.56 s;
  idle CPU 3.0% -> 0.3% of a core.
- Why a connect failed (``--connect-errors``; it only logs, so it is always on). ExaBGP
  logs a failed ``connect()`` (no route, bad source address) only at debug level, and an
  asynchronous failure (refused, no route to host, timed out) not at all: ``tcp.ready()``
  reads the socket's ``SO_ERROR``, drops it, and reports the socket connected, so the
  first write fails as "Broken TCP connection" whatever happened. The launcher reads that
  error first and logs it at warning level, in ExaBGP's own wording (``Could not connect
  to peer 10.0.0.1:179 ([Errno ECONNREFUSED] [Errno 111] Connection refused)``), once per
  distinct error per minute; the supervisor turns it into the cause of a session that
  does not come up. What ExaBGP does next (reset, back off, retry) is unchanged. Only
  sockets still connecting are looked at.
- Connect retry (``--connect-retry SECONDS``; the peer's ``connectTime``, MetalLB's and
  FRR's ``timers connect``). After a failed connect or a reset ExaBGP 5.0.15 waits 0, 1,
  2, 3, 4, 5, 7, 9, ... s (``Delay.increase``: ``int(1 + previous * 1.2)``), up to 60 s,
  so a router back after a long outage waited up to a minute. With the option the wait
  never exceeds SECONDS (the first retry after a session drops stays immediate).
- Our own AS refused (``--reject-own-asn``; the peer's ``dynamicASN: external``). With
  ``peer-as auto`` ExaBGP accepts any AS in the router's OPEN, ours included (an iBGP
  session). With the option ``Negotiated.validate`` refuses an OPEN carrying the local AS
  with NOTIFICATION 2/2 (Bad Peer AS), as it refuses a wrong fixed ``peer-as``.
- Message counters (``--message-counters``; always on, it costs a dict update per BGP
  message). ExaBGP counts the messages of the current session only (``Peer.stats``, zeroed
  on every reset) and shows them only through ``show neighbor``, which fails with
  ``peer-as auto``. With the option every increment is added to totals for the life of
  the process, and at most once a second, when they changed, the peer's API processes get
  one line ``{"type": "bgpspeaker-counters", "counters": {"send-update": 3, ...}}``.
- The API relay in-process (``--inprocess-relay``, a speed patch). ExaBGP starts its API
  helper, our ``relay.py``, as a second Python process per peer (~11 MB RSS, and a Python
  start before the first route) only to copy bytes to the supervisor's unix socket. With
  the option ExaBGP's ``Processes`` connects to that socket itself when the helper's
  command is our relay, and uses the connection as the helper's pipes
  (``bgpspeaker.exabgp.inprocess``: what it gives ExaBGP, and why a write to a closed
  connection drops instead of raising). Any other command is started as before.

Before patching anything the launcher checks that the installed ExaBGP is a release the
patches were written against (``SUPPORTED_EXABGP``) and that every function a requested
patch replaces or calls still exists with the parameters it expects (``TARGETS``). If not,
it prints one line to stderr naming what it found and what it expected, and exits with
``EXIT_REFUSED`` without starting ExaBGP (the supervisor logs the line, restarts, and
gives up: ``exabgp_gave_up``).

Once the release is known, ExaBGP's modules are imported with two standard-library
modules it does not use here deferred and the cyclic GC paused (``bgpspeaker.exabgp.imports``).

Everything else is ExaBGP's own ``main``, unchanged. Run by the supervisor as
``python -m bgpspeaker.exabgp.launcher [OPTIONS] -- server CONFIG``: everything after
``--`` is ExaBGP's own command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from bgpspeaker.exabgp.imports import importing

__all__ = [
    "EXIT_REFUSED",
    "KEEPALIVE_DIVISOR",
    "SUPPORTED_EXABGP",
    "TARGETS",
    "Kind",
    "Patch",
    "Settings",
    "Target",
    "apply",
    "installed_exabgp_version",
    "launcher_settings",
    "main",
    "parse_arguments",
    "refusal",
    "target_refusal",
    "version_refusal",
]

SUPPORTED_EXABGP = frozenset({"5.0.15"})
"""The ExaBGP releases these patches were read against and tested on. Before adding one,
read every ``TARGETS`` function in the new release and what calls it (``Timer`` calls
``HoldTime.keepalive``; the configuration and the API call ``remove_self``;
``Outgoing.establish`` calls ``_setup``, ``_connect`` and the module-level ``ready`` by
name; ``Reactor.run`` calls ``asynchronous.run`` and ``_wait_for_io``; ``Processes`` uses
what its module's ``subprocess.Popen`` returns as ``bgpspeaker.exabgp.inprocess`` lists), check each
patch still means what its docstring says, then run tests/unit/test_launcher.py and
tests/integration/test_peering.py and test_lifecycle.py against it."""

EXIT_REFUSED = 78
"""The launcher's exit code when it refuses to patch (sysexits' EX_CONFIG); ExaBGP's own
exits are 0, 1 and 2 (argparse)."""

KEEPALIVE_DIVISOR = 3
"""ExaBGP's keepalive interval is the hold time over this (RFC 4271 4.4; ``HoldTime.KEEPALIVE_DIVISOR``)."""

_MAX_KEEPALIVE_S = 65535  # the largest hold time a BGP OPEN carries
_MAX_CONNECT_RETRY_S = 65535  # MetalLB's and FRR's upper bound for connectTime
_MAX_IDLE_POLL_MS = 1000  # timers (keepalives, hold time, connect retries) run at most this late


class Patch(enum.StrEnum):
    """One patch, named by its command-line option."""

    KEEPALIVE = "keepalive"
    NO_ROUTE_COPY = "no-route-copy"
    NODELAY = "nodelay"
    FAST_REACTOR = "fast-reactor"
    CONNECT_ERRORS = "connect-errors"
    CONNECT_RETRY = "connect-retry"
    REJECT_OWN_ASN = "reject-own-asn"
    MESSAGE_COUNTERS = "message-counters"
    INPROCESS_RELAY = "inprocess-relay"


class Kind(enum.StrEnum):
    """What a patch needs a name in ExaBGP to be."""

    FUNCTION = "function"
    GENERATOR = "generator function"
    COROUTINE = "coroutine function"
    VALUE = "value"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A name in ExaBGP that a patch replaces or calls, and the shape the patch expects of it."""

    module: str
    name: str
    """Dotted within ``module``: ``HoldTime.keepalive``."""
    parameters: tuple[str, ...] = ()
    """Its parameter names, in order (``inspect.signature``); ignored for a ``VALUE``."""
    kind: Kind = Kind.FUNCTION

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


_OUTGOING = "exabgp.reactor.network.outgoing"
_ASYNC = "exabgp.reactor.asynchronous"
_PROCESSES = "exabgp.reactor.api.processes"

TARGETS: dict[Patch, tuple[Target, ...]] = {
    Patch.KEEPALIVE: (Target("exabgp.bgp.message.open.holdtime", "HoldTime.keepalive", ("self",)),),
    Patch.NO_ROUTE_COPY: (Target("exabgp.bgp.neighbor", "Neighbor.remove_self", ("self", "changes")),),
    Patch.NODELAY: (Target(_OUTGOING, "Outgoing._setup", ("self",)),),
    Patch.FAST_REACTOR: (
        Target(_ASYNC, "ASYNC.run", ("self",)),
        Target(_ASYNC, "ASYNC._run_async", ("self",), Kind.COROUTINE),
        Target(_ASYNC, "ASYNC._is_coroutine", ("self", "callback")),
        Target(_ASYNC, "ASYNC.ready", ("self",)),
        Target("exabgp.reactor.loop", "Reactor._wait_for_io", ("self", "sleeptime"), Kind.GENERATOR),
        Target("exabgp.rib.outgoing", "OutgoingRIB.pending", ("self",)),
        Target("exabgp.bgp.fsm", "FSM.ESTABLISHED", kind=Kind.VALUE),
    ),
    Patch.CONNECT_ERRORS: (
        Target(_OUTGOING, "Outgoing._connect", ("self",)),
        Target(_OUTGOING, "ready", ("io",), Kind.GENERATOR),
        Target("exabgp.reactor.network.connection", "Connection.session", ("self",)),
        Target("exabgp.util.errstr", "errstr", ("exc",)),
        Target("exabgp.logger", "log.warning", ("message", "source", "level")),
    ),
    Patch.CONNECT_RETRY: (Target("exabgp.reactor.delay", "Delay.increase", ("self",)),),
    Patch.REJECT_OWN_ASN: (
        Target("exabgp.bgp.message.open.capability.negotiated", "Negotiated.validate", ("self", "neighbor")),
    ),
    Patch.MESSAGE_COUNTERS: (
        Target("exabgp.reactor.peer", "Stats.__setitem__", ("self", "key", "val")),
        Target("exabgp.reactor.peer", "Peer.run", ("self",)),
        Target("exabgp.reactor.api.processes", "Processes.write", ("self", "process", "string", "neighbor")),
        Target("exabgp.reactor.api.processes", "ProcessError", kind=Kind.VALUE),
    ),
    Patch.INPROCESS_RELAY: (
        # The module's own ``subprocess`` name is replaced; these use what Popen returns.
        Target(_PROCESSES, "subprocess", kind=Kind.VALUE),
        Target(_PROCESSES, "Processes._start", ("self", "process")),
        Target(_PROCESSES, "Processes._update_fds", ("self",)),
        Target(_PROCESSES, "Processes.received", ("self",), Kind.GENERATOR),
        Target(_PROCESSES, "Processes.write", ("self", "process", "string", "neighbor")),
        Target(_PROCESSES, "Processes._terminate_run", ("self", "process", "process_name")),
    ),
}
"""Every name in ExaBGP a patch replaces (``HoldTime.keepalive``, ``Neighbor.remove_self``,
``Outgoing._setup``, ``ASYNC.run``, ``Reactor._wait_for_io``, ``Outgoing._connect``,
``ready``, ``Delay.increase``) or calls, with the shape the patch needs it to have."""


# -- the checks ------------------------------------------------------------------------


def installed_exabgp_version() -> str | None:
    """The installed ExaBGP's release, None when there is none.

    ``exabgp.version.release``, not ``.version``: the latter is whatever the
    ``exabgp_version`` environment variable says, when it is set."""
    try:
        from exabgp import version
    except ImportError:
        return None
    return str(getattr(version, "release", getattr(version, "version", "unknown")))


def version_refusal(found: str | None) -> str | None:
    """Why the launcher will not patch ExaBGP ``found``, or None when it was written for it."""
    if found in SUPPORTED_EXABGP:
        return None
    written_for = ", ".join(sorted(SUPPORTED_EXABGP))
    if found is None:
        return f"ExaBGP is not installed (the launcher's patches are written for ExaBGP {written_for})"
    return (
        f"ExaBGP {found} is installed, but the launcher's patches are written for ExaBGP {written_for} only:"
        f" install exabgp=={max(SUPPORTED_EXABGP)}, or re-check the patches before adding {found}"
        " to SUPPORTED_EXABGP in bgpspeaker/exabgp/launcher.py"
    )


def _kind(found: object) -> Kind:
    if inspect.iscoroutinefunction(found):
        return Kind.COROUTINE
    if inspect.isgeneratorfunction(found):
        return Kind.GENERATOR
    return Kind.FUNCTION


def target_refusal(patch: Patch, target: Target) -> str | None:
    """Why ``target`` is not what ``patch`` was written against, or None when it is."""
    found: object
    try:
        found = importlib.import_module(target.module)
        for part in target.name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return f"{target} does not exist, and the --{patch} patch needs it"
    if target.kind is Kind.VALUE:
        return None
    expected = f"({', '.join(target.parameters)})"
    try:
        parameters = tuple(inspect.signature(found).parameters)  # type: ignore[arg-type]  # checked below
    except (TypeError, ValueError):  # not callable, or no signature to read
        return f"{target} is not a function with parameters {expected}, which the --{patch} patch expects"
    if parameters != target.parameters:
        return f"{target} takes ({', '.join(parameters)}), but the --{patch} patch expects {expected}"
    if _kind(found) is not target.kind:
        return f"{target} is a {_kind(found)}, but the --{patch} patch expects a {target.kind}"
    return None


def refusal(settings: Settings, found: str | None) -> str | None:
    """The first reason not to patch ExaBGP ``found`` as ``settings`` ask, or None."""
    problem = version_refusal(found)
    if problem is not None:
        return problem
    for patch in settings.patches:
        for target in TARGETS[patch]:
            problem = target_refusal(patch, target)
            if problem is not None:
                return problem
    return None


# -- the command line ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The patches to apply and their values: the launcher's command line as data."""

    keepalive_s: int | None = None
    """Keepalives every ``min(this, negotiated hold time / 3)`` s; None: ExaBGP's own interval."""
    no_route_copy: bool = False
    nodelay: bool = False
    fast_reactor: bool = False
    idle_poll_ms: int = 0
    """With ``fast_reactor``: the nap when every session is up and idle; 0: ExaBGP's own nap."""
    connect_errors: bool = False
    connect_retry_s: int | None = None
    """The longest wait between connect attempts; None: ExaBGP's own backoff (up to 60 s)."""
    reject_own_asn: bool = False
    message_counters: bool = False
    inprocess_relay: bool = False

    @property
    def patches(self) -> tuple[Patch, ...]:
        """The patches these settings switch on."""
        switched = (
            (Patch.KEEPALIVE, self.keepalive_s is not None),
            (Patch.NO_ROUTE_COPY, self.no_route_copy),
            (Patch.NODELAY, self.nodelay),
            (Patch.FAST_REACTOR, self.fast_reactor),
            (Patch.CONNECT_ERRORS, self.connect_errors),
            (Patch.CONNECT_RETRY, self.connect_retry_s is not None),
            (Patch.REJECT_OWN_ASN, self.reject_own_asn),
            (Patch.MESSAGE_COUNTERS, self.message_counters),
            (Patch.INPROCESS_RELAY, self.inprocess_relay),
        )
        return tuple(patch for patch, on in switched if on)

    def arguments(self) -> list[str]:
        """The launcher's options for these settings (``parse_arguments`` reads them back)."""
        options: list[str] = []
        if self.keepalive_s is not None:
            options += ["--keepalive", str(self.keepalive_s)]
        if self.no_route_copy:
            options.append("--no-route-copy")
        if self.nodelay:
            options.append("--nodelay")
        if self.fast_reactor:
            options.append("--fast-reactor")
            if self.idle_poll_ms:
                options += ["--idle-poll-ms", str(self.idle_poll_ms)]
        if self.connect_errors:
            options.append("--connect-errors")
        if self.connect_retry_s is not None:
            options += ["--connect-retry", str(self.connect_retry_s)]
        if self.reject_own_asn:
            options.append("--reject-own-asn")
        if self.message_counters:
            options.append("--message-counters")
        if self.inprocess_relay:
            options.append("--inprocess-relay")
        return options


def launcher_settings(
    *,
    keepalive_s: int,
    hold_time_s: int,
    speed_patches: bool,
    idle_poll_ms: int,
    connect_time_s: int | None = None,
    reject_own_asn: bool = False,
) -> Settings:
    """The patches for one peer's ExaBGP.

    The keepalive patch whenever ``keepalive_s`` is shorter than ExaBGP's own interval
    (a third of ``hold_time_s``): it is what the peer's config says. A longer one changes
    nothing, since the negotiated hold time is never above ours and the patch takes the
    minimum. The connect retry cap whenever ``connect_time_s`` is set (the peer's
    ``connectTime``); our own AS refused with ``reject_own_asn`` (``dynamicASN: external``).
    The connect-error report and the message counters always (they only log and count). The speed patches (no route
    copy, TCP_NODELAY, the fast reactor with ``idle_poll_ms``, the relay in-process) unless
    ``speed_patches`` is False: the benchmark's anchor "ExaBGP as released", which runs the
    real relay."""
    return Settings(
        keepalive_s=keepalive_s if 0 < keepalive_s < hold_time_s // KEEPALIVE_DIVISOR else None,
        no_route_copy=speed_patches,
        nodelay=speed_patches,
        fast_reactor=speed_patches,
        idle_poll_ms=idle_poll_ms if speed_patches else 0,
        connect_errors=True,
        connect_retry_s=connect_time_s,
        reject_own_asn=reject_own_asn,
        message_counters=True,
        inprocess_relay=speed_patches,
    )


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        # Bounded before int(): it is slow on thousands of digits.
        if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number {low}..{high}, got {text[:20]!r}")
        return int(text)

    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bgpspeaker.exabgp.launcher",
        description="Start ExaBGP with bgpspeaker's patches. Everything after -- is ExaBGP's command line.",
        usage="%(prog)s [OPTIONS] -- server CONFIG",
        allow_abbrev=False,  # --no is neither --nodelay nor --no-route-copy
    )
    parser.add_argument(
        "--keepalive",
        type=_whole_number(1, _MAX_KEEPALIVE_S),
        metavar="SECONDS",
        dest="keepalive_s",
        help="send keepalives every min(SECONDS, negotiated hold time / 3) s",
    )
    parser.add_argument("--no-route-copy", action="store_true", help="do not copy API routes with an explicit next hop")
    parser.add_argument("--nodelay", action="store_true", help="set TCP_NODELAY on the sessions ExaBGP opens")
    parser.add_argument(
        "--fast-reactor", action="store_true", help="no reactor naps while work is waiting, no event loop per pass"
    )
    parser.add_argument(
        "--idle-poll-ms",
        type=_whole_number(0, _MAX_IDLE_POLL_MS),
        metavar="MS",
        help="with --fast-reactor: the nap when every session is up and nothing is queued",
    )
    parser.add_argument("--connect-errors", action="store_true", help="log why a connect failed, at warning level")
    parser.add_argument(
        "--connect-retry",
        type=_whole_number(1, _MAX_CONNECT_RETRY_S),
        metavar="SECONDS",
        dest="connect_retry_s",
        help="wait at most SECONDS between connect attempts (ExaBGP backs off up to 60 s)",
    )
    parser.add_argument(
        "--reject-own-asn", action="store_true", help="refuse a router whose OPEN carries our own AS (peer-as auto)"
    )
    parser.add_argument(
        "--message-counters", action="store_true", help="send BGP message totals to the API process (1/s at most)"
    )
    parser.add_argument(
        "--inprocess-relay", action="store_true", help="connect to the relay's socket inside ExaBGP, no relay process"
    )
    return parser


def parse_arguments(argv: Sequence[str]) -> tuple[Settings, list[str]]:
    """The settings in ``argv`` (the launcher's own arguments) and ExaBGP's arguments, those after ``--``.

    A bad option exits with argparse's usage error (code 2), as a command line does."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ours, theirs = argv[:split], argv[split + 1 :]
    parser = _parser()
    options = parser.parse_args(ours)
    if options.idle_poll_ms is not None and not options.fast_reactor:
        parser.error("--idle-poll-ms needs --fast-reactor")
    settings = Settings(
        keepalive_s=options.keepalive_s,
        no_route_copy=options.no_route_copy,
        nodelay=options.nodelay,
        fast_reactor=options.fast_reactor,
        idle_poll_ms=options.idle_poll_ms or 0,
        connect_errors=options.connect_errors,
        connect_retry_s=options.connect_retry_s,
        reject_own_asn=options.reject_own_asn,
        message_counters=options.message_counters,
        inprocess_relay=options.inprocess_relay,
    )
    return settings, theirs


# -- the patches -------------------------------------------------------------------------


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

    def remove_self(self: Neighbor, changes: object) -> object:
        if not changes.nlri.nexthop.SELF:  # type: ignore[attr-defined]
            return changes  # one neighbor per process: nobody else will see this change
        return copying(self, changes)

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


def _cap_connect_retry(longest_s: int) -> None:
    import time

    from exabgp.reactor.delay import Delay

    def increase(self: Delay) -> None:
        # Upstream's sequence (0, 1, 2, 3, 4, 5, 7, ...), never longer than longest_s.
        self._time = time.time() + min(self._next, longest_s)
        self._next = min(int(1 + self._next * 1.2), longest_s)

    Delay.increase = increase


def _reject_own_asn() -> None:
    from exabgp.bgp.message.open.capability.negotiated import Negotiated

    validate = Negotiated.validate

    def checked(self: Negotiated, neighbor: object) -> object:
        local_as = neighbor["local-as"]  # type: ignore[index]  # ExaBGP's Neighbor is a mapping
        if neighbor["peer-as"] is None and self.peer_as == local_as:  # type: ignore[index]  # as above
            return (2, 2, f"ASN in OPEN ({self.peer_as}) is our own: dynamicASN external expects another AS")
        return validate(self, neighbor)

    Negotiated.validate = checked


MESSAGE_COUNTERS_EVENT = "bgpspeaker-counters"
MESSAGE_COUNTERS_INTERVAL_S = 1.0
"""Totals go to the API process at most this often (and only when they changed)."""


def _count_messages() -> None:
    import json
    import time

    from exabgp.reactor.api.processes import ProcessError
    from exabgp.reactor.peer import Peer, Stats

    totals: dict[str, int] = {}
    pushed: dict[str, int] = {}
    pushed_at = 0.0
    setitem = Stats.__setitem__

    def counting(self: Stats, key: str, val: object) -> None:
        if isinstance(key, str) and key.startswith(("send-", "receive-")) and isinstance(val, int):
            previous = self.get(key, 0)
            if isinstance(previous, int) and val > previous:  # an increment; resets go through update()
                totals[key] = totals.get(key, 0) + val - previous
        setitem(self, key, val)

    run = Peer.run

    def run_and_report(self: Peer) -> object:
        nonlocal pushed, pushed_at
        now = time.monotonic()
        if now - pushed_at >= MESSAGE_COUNTERS_INTERVAL_S and totals != pushed:
            pushed, pushed_at = dict(totals), now
            line = json.dumps({"type": MESSAGE_COUNTERS_EVENT, "counters": pushed}, separators=(",", ":"))
            for process in self.neighbor.api["neighbor-changes"]:
                try:
                    self.reactor.processes.write(process, line, self.neighbor)
                except (ProcessError, KeyError):  # the helper is being respawned: send again next time
                    pushed = {}
        return run(self)

    Stats.__setitem__ = counting
    Peer.run = run_and_report


def _relay_in_process() -> None:
    import subprocess

    from exabgp.reactor.api import processes

    from bgpspeaker.exabgp.inprocess import SubprocessWithRelay

    processes.subprocess = SubprocessWithRelay(subprocess)  # the part of the module ExaBGP uses


def apply(settings: Settings) -> None:
    """Patch the imported ExaBGP as ``settings`` say (checked first: ``refusal``). Not undone."""
    if settings.connect_errors:
        _report_connect_errors()
    if settings.connect_retry_s is not None:
        _cap_connect_retry(settings.connect_retry_s)
    if settings.reject_own_asn:
        _reject_own_asn()
    if settings.message_counters:
        _count_messages()
    if settings.inprocess_relay:
        _relay_in_process()
    if settings.fast_reactor:
        _no_event_loop_per_pass()
        _no_idle_wait_while_busy(settings.idle_poll_ms)
    if settings.nodelay:
        _no_delay()
    if settings.keepalive_s is not None:
        _patch_keepalive(settings.keepalive_s)
    if settings.no_route_copy:
        _skip_route_copy()


def main() -> None:
    """Check, patch, then hand over to ExaBGP's own ``main`` with the arguments after ``--``."""
    settings, exabgp_arguments = parse_arguments(sys.argv[1:])
    found = installed_exabgp_version()
    problem = version_refusal(found)
    if problem is None:  # a release the launcher knows: its modules imported as bgpspeaker.exabgp.imports says
        with importing():
            problem = refusal(settings, found)
            if problem is None:
                import exabgp.application.main  # noqa: F401  # with the rest of ExaBGP, inside importing()
    if problem is not None:
        # One line, and worded so that the supervisor logs it at warning ("refused").
        print(f"bgpspeaker.exabgp.launcher refused to start ExaBGP: {problem}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    apply(settings)
    sys.argv = [sys.argv[0], *exabgp_arguments]
    from exabgp.application.main import main as exabgp_main

    exabgp_main()


if __name__ == "__main__":
    main()
