"""The ExaBGP launcher against the installed ExaBGP: every function a patch replaces or calls
is still there with the parameters the patch expects, each patch does what it says on real
ExaBGP objects, other ExaBGP releases are refused, and the options map to the patches.

A patch changes ExaBGP's classes for the whole process, so each test that applies one runs
in a fresh interpreter (``run_patched``): without options for ExaBGP as released, with them
for the patched one. No network: at most a TCP connect to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from structlog.testing import capture_logs

from bgpspeaker.exabgp import supervisor
from bgpspeaker.exabgp.launcher import (
    EXIT_REFUSED,
    SUPPORTED_EXABGP,
    TARGETS,
    Patch,
    Settings,
    Target,
    installed_exabgp_version,
    launcher_settings,
    parse_arguments,
    refusal,
    target_refusal,
    version_refusal,
)

_ENV = {
    **os.environ,
    "exabgp_log_destination": "stdout",
    "exabgp_log_level": "WARNING",
    "exabgp_log_short": "true",
}

_PRELUDE = """
import json, sys
from bgpspeaker.exabgp.launcher import apply, installed_exabgp_version, parse_arguments, refusal
settings, _ = parse_arguments(sys.argv[1:])
assert refusal(settings, installed_exabgp_version()) is None, refusal(settings, installed_exabgp_version())
apply(settings)
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())  # ExaBGP's own logging, to stdout at WARNING (_ENV)

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""

_EXABGP_OBJECTS = """
from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import Attributes
from exabgp.bgp.message.update.nlri.cidr import CIDR
from exabgp.bgp.message.update.nlri.inet import INET
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
from exabgp.protocol.ip import IP, IPSelf
from exabgp.rib.change import Change

def neighbor():
    n = Neighbor()
    n["peer-address"] = IP.create("10.0.0.1")
    n["local-address"] = IP.create("10.0.0.2")
    n["router-id"] = IP.create("10.0.0.2")
    n.add_family((AFI.ipv4, SAFI.unicast))
    n.make_rib()
    return n

def route(next_hop):
    nlri = INET(AFI.ipv4, SAFI.unicast, Action.ANNOUNCE)
    nlri.cidr = CIDR(IP.pton("192.0.2.10"), 32)
    nlri.nexthop = IPSelf(AFI.ipv4) if next_hop == "self" else IP.create(next_hop)
    return Change(nlri, Attributes())
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """What a script printed: its ``result(...)`` and everything else (ExaBGP's log lines)."""

    result: Any
    log: list[str]


def run_patched(options: list[str], script: str) -> Run:
    """``script`` in a fresh interpreter, after the launcher applied the patches ``options`` ask for."""
    code = _PRELUDE + _EXABGP_OBJECTS + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # ExaBGP logs to stderr here; the supervisor merges them the same way
        text=True,
        env=_ENV,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    results = [json.loads(line.removeprefix("RESULT ")) for line in lines if line.startswith("RESULT ")]
    assert len(results) == 1, done.stdout
    return Run(results[0], [line for line in lines if not line.startswith("RESULT ")])


# -- the version and the targets ---------------------------------------------------------


def test_installed_exabgp_is_supported() -> None:
    """The ExaBGP in this environment is one the launcher was written for."""
    assert installed_exabgp_version() in SUPPORTED_EXABGP
    assert version_refusal(installed_exabgp_version()) is None


@pytest.mark.parametrize("found", ["5.0.14", "5.0.16", "5.1.0", "4.2.25", "6.0.0"])
def test_other_versions_are_refused(found: str) -> None:
    """Any other release is refused, naming it and the supported one."""
    problem = version_refusal(found)
    assert problem is not None
    assert f"ExaBGP {found} is installed" in problem
    assert "5.0.15" in problem


def test_missing_exabgp_is_refused() -> None:
    """No ExaBGP at all is refused too."""
    assert version_refusal(None) == "ExaBGP is not installed (the launcher's patches are written for ExaBGP 5.0.15)"


@pytest.mark.parametrize(
    ("patch", "target"),
    [(patch, target) for patch, targets in TARGETS.items() for target in targets],
    ids=[f"{patch}:{target.name}" for patch, targets in TARGETS.items() for target in targets],
)
def test_target_matches_installed_exabgp(patch: Patch, target: Target) -> None:
    """Every function a patch replaces or calls exists in the installed ExaBGP, with the expected parameters."""
    assert target_refusal(patch, target) is None


def test_every_patch_has_targets() -> None:
    """No patch goes unchecked."""
    assert set(TARGETS) == set(Patch)
    assert all(TARGETS[patch] for patch in Patch)


_OUTGOING = "exabgp.reactor.network.outgoing"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            Target("exabgp.bgp.neighbor", "Neighbor.remove_self", ("self", "change")),
            "exabgp.bgp.neighbor.Neighbor.remove_self takes (self, changes),"
            " but the --no-route-copy patch expects (self, change)",
            id="parameters-renamed",
        ),
        pytest.param(
            Target("exabgp.bgp.neighbor", "Neighbor.remove_self", ("self",)),
            "exabgp.bgp.neighbor.Neighbor.remove_self takes (self, changes),"
            " but the --no-route-copy patch expects (self)",
            id="parameter-added",
        ),
        pytest.param(
            Target("exabgp.bgp.neighbor", "Neighbor.drop_self", ("self", "changes")),
            "exabgp.bgp.neighbor.Neighbor.drop_self does not exist, and the --no-route-copy patch needs it",
            id="function-gone",
        ),
        pytest.param(
            Target("exabgp.bgp.neighbour", "Neighbor.remove_self", ("self", "changes")),
            "exabgp.bgp.neighbour.Neighbor.remove_self does not exist, and the --no-route-copy patch needs it",
            id="module-gone",
        ),
        pytest.param(
            Target(_OUTGOING, "ready", ("io",)),
            f"{_OUTGOING}.ready is a generator function, but the --no-route-copy patch expects a function",
            id="kind-changed",
        ),
        pytest.param(
            Target("exabgp.bgp.fsm", "FSM.ESTABLISHED", ()),
            "exabgp.bgp.fsm.FSM.ESTABLISHED is not a function with parameters (), which the --no-route-copy"
            " patch expects",
            id="not-a-function",
        ),
    ],
)
def test_target_refusal_names_the_function(target: Target, expected: str) -> None:
    """A changed, missing or different kind of function is refused by its full name, with what was expected."""
    assert target_refusal(Patch.NO_ROUTE_COPY, target) == expected


def test_supported_exabgp_with_every_patch_is_accepted() -> None:
    """The installed ExaBGP passes every check."""
    everything = Settings(
        keepalive_s=10, no_route_copy=True, nodelay=True, fast_reactor=True, connect_errors=True, inprocess_relay=True
    )
    assert refusal(everything, "5.0.15") is None


def test_version_is_checked_without_patches() -> None:
    """Another release is refused even when no patch is asked for."""
    assert refusal(Settings(), "5.1.0") == version_refusal("5.1.0")


def _launch(setup: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The launcher's ``main`` in a fresh interpreter, after ``setup`` (which may change ExaBGP)."""
    code = setup + textwrap.dedent(
        """
        import sys
        sys.argv = ["launcher", *sys.argv[1:]]
        from bgpspeaker.exabgp.launcher import main
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=_ENV, timeout=60, check=False
    )


def _logged_level(line: str) -> str:
    """The level the supervisor logs a line of ExaBGP's output at."""
    with capture_logs() as logs:
        supervisor._forward_output(io.BytesIO(line.encode() + b"\n"), 1, "tor-a", lambda _: None)
    assert [entry["event"] for entry in logs] == ["exabgp_log"]
    return str(logs[0]["log_level"])


def test_main_refuses_another_release_in_one_warning_line() -> None:
    """Another release: one line naming both versions, the distinct exit code, ExaBGP not started, logged at warning."""
    done = _launch("import exabgp.version\nexabgp.version.release = '5.1.0'", "--connect-errors", "--", "version")
    assert done.returncode == EXIT_REFUSED
    assert done.stdout == ""  # ExaBGP's "version" command never ran
    [line] = done.stderr.splitlines()
    assert line.startswith("bgpspeaker.exabgp.launcher refused to start ExaBGP: ExaBGP 5.1.0 is installed")
    assert "5.0.15" in line
    assert _logged_level(line) == "warning"


def test_main_refuses_a_changed_function() -> None:
    """A patched function whose parameters changed: refused by name, before anything is patched."""
    setup = "from exabgp.bgp.neighbor import Neighbor\nNeighbor.remove_self = lambda self, change, afi: change"
    done = _launch(setup, "--no-route-copy", "--", "version")
    assert done.returncode == EXIT_REFUSED
    [line] = done.stderr.splitlines()
    assert "exabgp.bgp.neighbor.Neighbor.remove_self takes (self, change, afi)" in line
    assert _logged_level(line) == "warning"


def test_main_refuses_an_exabgp_without_its_subprocess_name() -> None:
    """An ExaBGP whose Processes no longer calls the module's ``subprocess.Popen`` (say, it imports
    Popen by name): the in-process relay is refused by name, not silently left unused."""
    setup = "import exabgp.reactor.api.processes as processes\ndel processes.subprocess"
    done = _launch(setup, "--inprocess-relay", "--", "version")
    assert done.returncode == EXIT_REFUSED
    [line] = done.stderr.splitlines()
    assert line.endswith(
        "exabgp.reactor.api.processes.subprocess does not exist, and the --inprocess-relay patch needs it"
    ), line
    assert _logged_level(line) == "warning"


_EVERY_OPTION = [
    *("--keepalive", "30", "--no-route-copy", "--nodelay"),
    *("--fast-reactor", "--idle-poll-ms", "100", "--connect-errors", "--inprocess-relay"),
]


def test_main_hands_over_to_exabgp() -> None:
    """The installed ExaBGP with every patch: ExaBGP's own main runs with the arguments after ``--``."""
    done = subprocess.run(
        [sys.executable, "-m", "bgpspeaker.exabgp.launcher", *_EVERY_OPTION, "--", "version"],
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ExaBGP : 5.0.15" in done.stdout
    assert done.stderr == ""


# -- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "settings", "exabgp_argv"),
    [
        pytest.param(["--", "server", "exabgp.conf"], Settings(), ["server", "exabgp.conf"], id="no-patches"),
        pytest.param(
            ["--keepalive", "10", "--", "server", "c"], Settings(keepalive_s=10), ["server", "c"], id="keepalive"
        ),
        pytest.param(["--no-route-copy", "--"], Settings(no_route_copy=True), [], id="no-route-copy"),
        pytest.param(["--nodelay", "--"], Settings(nodelay=True), [], id="nodelay"),
        pytest.param(["--fast-reactor", "--"], Settings(fast_reactor=True), [], id="fast-reactor"),
        pytest.param(
            ["--fast-reactor", "--idle-poll-ms", "100", "--"],
            Settings(fast_reactor=True, idle_poll_ms=100),
            [],
            id="idle-poll",
        ),
        pytest.param(["--connect-errors", "--"], Settings(connect_errors=True), [], id="connect-errors"),
        pytest.param(["--connect-retry", "5", "--"], Settings(connect_retry_s=5), [], id="connect-retry"),
        pytest.param(["--reject-own-asn", "--"], Settings(reject_own_asn=True), [], id="reject-own-asn"),
        pytest.param(["--message-counters", "--"], Settings(message_counters=True), [], id="message-counters"),
        pytest.param(["--inprocess-relay", "--"], Settings(inprocess_relay=True), [], id="inprocess-relay"),
        pytest.param(
            [*_EVERY_OPTION, "--", "server", "CONFIG"],
            Settings(
                keepalive_s=30,
                no_route_copy=True,
                nodelay=True,
                fast_reactor=True,
                idle_poll_ms=100,
                connect_errors=True,
                inprocess_relay=True,
            ),
            ["server", "CONFIG"],
            id="everything",
        ),
        pytest.param(
            ["--nodelay", "--", "--nodelay", "--", "x"],
            Settings(nodelay=True),
            ["--nodelay", "--", "x"],
            id="only-first-dashes",
        ),
    ],
)
def test_parse_arguments(argv: list[str], settings: Settings, exabgp_argv: list[str]) -> None:
    """Each option switches on its own patch; what follows the first ``--`` is ExaBGP's."""
    assert parse_arguments(argv) == (settings, exabgp_argv)


@pytest.mark.parametrize(
    ("settings", "patches"),
    [
        pytest.param(Settings(), (), id="none"),
        pytest.param(Settings(keepalive_s=10), (Patch.KEEPALIVE,), id="keepalive"),
        pytest.param(Settings(no_route_copy=True), (Patch.NO_ROUTE_COPY,), id="no-route-copy"),
        pytest.param(Settings(nodelay=True), (Patch.NODELAY,), id="nodelay"),
        pytest.param(Settings(fast_reactor=True, idle_poll_ms=100), (Patch.FAST_REACTOR,), id="fast-reactor"),
        pytest.param(Settings(connect_errors=True), (Patch.CONNECT_ERRORS,), id="connect-errors"),
        pytest.param(Settings(connect_retry_s=2), (Patch.CONNECT_RETRY,), id="connect-retry"),
        pytest.param(Settings(reject_own_asn=True), (Patch.REJECT_OWN_ASN,), id="reject-own-asn"),
        pytest.param(Settings(message_counters=True), (Patch.MESSAGE_COUNTERS,), id="message-counters"),
        pytest.param(Settings(inprocess_relay=True), (Patch.INPROCESS_RELAY,), id="inprocess-relay"),
    ],
)
def test_settings_name_their_patches(settings: Settings, patches: tuple[Patch, ...]) -> None:
    """A setting switches on exactly its patch (and so its checks)."""
    assert settings.patches == patches


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--idle-poll-ms", "100", "--"], id="idle-poll-without-fast-reactor"),
        pytest.param(["--keepalive", "0", "--"], id="keepalive-zero"),
        pytest.param(["--keepalive", "65536", "--"], id="keepalive-too-long"),
        pytest.param(["--keepalive", "9" * 5000, "--"], id="keepalive-5000-digits"),
        pytest.param(["--keepalive", "-1", "--"], id="keepalive-negative"),
        pytest.param(["--keepalive", "\u0661\u0660", "--"], id="keepalive-arabic-digits"),
        pytest.param(["--fast-reactor", "--idle-poll-ms", "1001", "--"], id="idle-poll-too-long"),
        pytest.param(["--connect-retry", "0", "--"], id="connect-retry-zero"),
        pytest.param(["--connect-retry", "65536", "--"], id="connect-retry-too-long"),
        pytest.param(["--turbo", "--"], id="unknown-option"),
        pytest.param(["--no", "--"], id="abbreviation"),
        pytest.param(["server", "exabgp.conf"], id="exabgp-arguments-without-dashes"),
    ],
)
def test_parse_arguments_rejects(argv: list[str]) -> None:
    """A bad command line is a usage error (exit 2), never a patch half-applied."""
    with pytest.raises(SystemExit) as exited:
        parse_arguments(argv)
    assert exited.value.code == 2


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(keepalive_s=7, connect_errors=True),
        Settings(no_route_copy=True, nodelay=True, fast_reactor=True, idle_poll_ms=100, connect_errors=True),
        Settings(keepalive_s=1, fast_reactor=True),
        Settings(connect_errors=True, connect_retry_s=65535),
        Settings(reject_own_asn=True, message_counters=True),
        Settings(inprocess_relay=True, fast_reactor=True),
    ],
)
def test_arguments_read_back(settings: Settings) -> None:
    """The supervisor's command line (``Settings.arguments``) reads back as the same settings."""
    assert parse_arguments([*settings.arguments(), "--", "server", "c"]) == (settings, ["server", "c"])


def test_launcher_settings_connect_time() -> None:
    """A peer's connectTime becomes the connect retry cap, with or without the speed patches."""
    for speed in (True, False):
        settings = launcher_settings(
            keepalive_s=30, hold_time_s=90, speed_patches=speed, idle_poll_ms=100, connect_time_s=2
        )
        assert settings.connect_retry_s == 2 and Patch.CONNECT_RETRY in settings.patches


_ALWAYS = {"connect_errors": True, "message_counters": True}  # the report and the counters
_SPEED = {"no_route_copy": True, "nodelay": True, "fast_reactor": True, "idle_poll_ms": 100, "inprocess_relay": True}


@pytest.mark.parametrize(
    ("keepalive_s", "hold_time_s", "speed_patches", "settings"),
    [
        pytest.param(30, 90, True, Settings(**_ALWAYS, **_SPEED), id="default-timers"),
        pytest.param(10, 90, True, Settings(keepalive_s=10, **_ALWAYS, **_SPEED), id="short-keepalive"),
        pytest.param(10, 90, False, Settings(keepalive_s=10, **_ALWAYS), id="short-keepalive-as-released"),
        pytest.param(30, 90, False, Settings(**_ALWAYS), id="default-timers-as-released"),
        pytest.param(60, 90, True, Settings(**_ALWAYS, **_SPEED), id="keepalive-above-third"),
        pytest.param(3, 9, True, Settings(**_ALWAYS, **_SPEED), id="keepalive-equals-third"),
        pytest.param(2, 9, True, Settings(keepalive_s=2, **_ALWAYS, **_SPEED), id="keepalive-below-third"),
        pytest.param(1, 3, True, Settings(**_ALWAYS, **_SPEED), id="hold-3s"),
        pytest.param(0, 0, True, Settings(**_ALWAYS, **_SPEED), id="no-keepalives"),
    ],
)
def test_launcher_settings(keepalive_s: int, hold_time_s: int, speed_patches: bool, settings: Settings) -> None:
    """keepaliveTime applies whenever it changes ExaBGP's interval, with or without the speed patches."""
    assert (
        launcher_settings(
            keepalive_s=keepalive_s, hold_time_s=hold_time_s, speed_patches=speed_patches, idle_poll_ms=100
        )
        == settings
    )


# -- what each patch does, on the installed ExaBGP ---------------------------------------


_HOLD_TIMES = [0, 3, 9, 15, 90, 180]


@pytest.mark.parametrize(
    ("options", "keepalives"),
    [
        pytest.param([], [0, 1, 3, 5, 30, 60], id="as-released"),
        pytest.param(["--keepalive", "10"], [0, 1, 3, 5, 10, 10], id="keepalive-10"),
    ],
)
def test_keepalive_patch(options: list[str], keepalives: list[int]) -> None:
    """``HoldTime(h).keepalive()`` is ``min(h / 3, --keepalive)``, and 0 when the hold time is 0."""
    run = run_patched(
        options,
        f"""
        from exabgp.bgp.message.open.holdtime import HoldTime
        result([HoldTime(hold).keepalive() for hold in {_HOLD_TIMES}])
        """,
    )
    assert run.result == keepalives


_REMOVE_SELF = """
n = neighbor()
explicit = route("10.0.0.9")
self_hop = route("self")
kept = n.remove_self(explicit)
filled = n.remove_self(self_hop)
result({
    "explicit is passed on": kept is explicit,
    "explicit next hop": str(kept.nlri.nexthop),
    "self is copied": filled is not self_hop,
    "self filled in": str(filled.nlri.nexthop),
    "original still self": repr(self_hop.nlri.nexthop),
})
"""


@pytest.mark.parametrize(
    ("options", "passed_on"),
    [pytest.param([], False, id="as-released"), pytest.param(["--no-route-copy"], True, id="no-route-copy")],
)
def test_route_copy_patch(options: list[str], passed_on: bool) -> None:
    """``remove_self`` passes an explicit-next-hop route on as is; a ``self`` one is still copied and filled in."""
    assert run_patched(options, _REMOVE_SELF).result == {
        "explicit is passed on": passed_on,
        "explicit next hop": "10.0.0.9",
        "self is copied": True,
        "self filled in": "10.0.0.2",
        "original still self": "self",
    }


@pytest.mark.parametrize(
    ("options", "nodelay"),
    [pytest.param([], 0, id="as-released"), pytest.param(["--nodelay"], 1, id="nodelay")],
)
def test_nodelay_patch(options: list[str], nodelay: int) -> None:
    """An outgoing session's socket gets TCP_NODELAY once ``Outgoing._setup`` made it (no connect)."""
    run = run_patched(
        options,
        """
        import socket
        from exabgp.reactor.network.outgoing import Outgoing
        connection = Outgoing(AFI.ipv4, "127.0.0.1", None, 179)
        problem = connection._setup()
        result([problem, connection.io.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)])
        connection.io.close()
        """,
    )
    assert run.result == [None, nodelay]


_ASYNC_RUN = """
import asyncio
from exabgp.reactor.asynchronous import ASYNC
loops = []
run_with_asyncio = asyncio.run
asyncio.run = lambda main: loops.append(1) or run_with_asyncio(main)
done = []

def steps(name, count):
    for step in range(count):
        done.append(name)
        yield

queue = ASYNC()
queue.schedule("a", "announce", steps("a", 30))
queue.schedule("b", "announce", steps("b", 30))
result({
    "passes": [queue.run(), queue.run(), queue.run()],
    "steps": [done.count("a"), done.count("b")],
    "event loops": len(loops),
})
"""


@pytest.mark.parametrize(
    ("options", "loops"),
    [pytest.param([], 2, id="as-released"), pytest.param(["--fast-reactor"], 0, id="fast-reactor")],
)
def test_fast_reactor_runs_generators_without_an_event_loop(options: list[str], loops: int) -> None:
    """``ASYNC.run`` on API generators: the same passes (50 steps each) and steps, without an event loop."""
    assert run_patched(options, _ASYNC_RUN).result == {
        "passes": [True, False, False],
        "steps": [30, 30],
        "event loops": loops,
    }


_ASYNC_COROUTINE = """
from exabgp.reactor.asynchronous import ASYNC
done = []

def steps():
    done.append("generator")
    yield

async def coroutine():
    done.append("coroutine")

queue = ASYNC()
queue.schedule("a", "announce", steps())
queue.schedule("b", "announce", coroutine)
result({"passes": [queue.run(), queue.run()], "done": done})
"""


def test_fast_reactor_leaves_coroutines_to_exabgp() -> None:
    """With a coroutine queued, ``ASYNC.run`` is ExaBGP's own (whatever that does)."""
    released = run_patched([], _ASYNC_COROUTINE).result
    assert run_patched(["--fast-reactor"], _ASYNC_COROUTINE).result == released
    assert released["done"][:2] == ["generator", "coroutine"]


_NAPS = """
from exabgp.bgp.fsm import FSM
from exabgp.reactor.loop import Reactor
from exabgp.reactor.peer import Peer

class Poller:
    '''Stands in for the reactor's select.poll: records how long it was asked to nap.'''
    def __init__(self):
        self.naps = []
    def poll(self, timeout):
        self.naps.append(timeout)
        return []

def nap(reactor):
    reactor._poller = Poller()
    list(reactor._wait_for_io(10))  # ExaBGP's own nap after a pass without API input
    return reactor._poller.naps[0]

naps = {}
reactor = Reactor(None)
peer = Peer(neighbor(), reactor)
reactor._peers["tor-a"] = peer
naps["connecting"] = nap(reactor)
peer.fsm.state = FSM.ESTABLISHED
naps["established, idle"] = nap(reactor)
peer.neighbor.rib.outgoing.add_to_rib(route("10.0.0.2"))
naps["established, routes waiting"] = nap(reactor)
busy = Reactor(None)
busy.asynchronous.schedule("api", "announce", iter([None]))
naps["API work queued"] = nap(busy)
result(naps)
"""


@pytest.mark.parametrize(
    ("options", "naps"),
    [
        pytest.param([], [10, 10, 10, 10], id="as-released"),
        pytest.param(["--fast-reactor"], [10, 10, 0, 0], id="fast-reactor"),
        pytest.param(["--fast-reactor", "--idle-poll-ms", "100"], [10, 100, 0, 0], id="fast-reactor-idle-100"),
    ],
)
def test_fast_reactor_naps(options: list[str], naps: list[int]) -> None:
    """``Reactor._wait_for_io``: no nap while work waits; ``--idle-poll-ms`` when every session is up and idle."""
    run = run_patched(options, _NAPS)
    assert run.result == dict(
        zip(["connecting", "established, idle", "established, routes waiting", "API work queued"], naps, strict=True)
    )


_CONNECT = """
import select, socket
from exabgp.reactor.network.outgoing import Outgoing
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
port = closed.getsockname()[1]
closed.close()  # nothing listens there: the kernel refuses at once
reported = []
for attempt in range(2):
    connection = Outgoing(AFI.ipv4, "127.0.0.1", None, port)
    steps = connection.establish()
    next(steps)  # connect() started
    select.select([], [connection.io], [], 10)  # the refusal arrived
    for _ in steps:
        pass  # ExaBGP calls the socket connected: its first write will fail
unbound = Outgoing(AFI.ipv4, "127.0.0.1", "192.0.2.1", port)  # not an address of this host
bind_steps = unbound.establish()
for _ in range(3):
    next(bind_steps)
result(port)
"""


@pytest.mark.parametrize(
    ("options", "reported"),
    [
        pytest.param([], [], id="as-released"),
        pytest.param(
            ["--connect-errors"],
            [
                "Could not connect to peer 127.0.0.1:{port} ([Errno ECONNREFUSED] [Errno 111] Connection refused)",
                "Could not bind to local ip 192.0.2.1 - [Errno 99] Cannot assign requested address",
            ],
            id="connect-errors",
        ),
    ],
)
def test_connect_errors_patch(options: list[str], reported: list[str]) -> None:
    """A refused connect and a failed bind are logged at warning, in ExaBGP's words, once per error per peer."""
    run = run_patched(options, _CONNECT)
    lines = [line.split(None, 1)[1] for line in run.log if "Could not" in line]
    assert lines == [text.format(port=run.result) for text in reported]


_DELAYS = """
import time
from exabgp.reactor.delay import Delay
delay, waits = Delay(), []
for _ in range(12):
    before = time.time()
    delay.increase()
    waits.append(round(delay._time - before))
result(waits)
"""


@pytest.mark.parametrize(
    ("options", "waits"),
    [
        pytest.param([], [0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 21], id="as-released"),
        pytest.param(["--connect-retry", "3"], [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3], id="connect-retry-3"),
        pytest.param(["--connect-retry", "1"], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], id="connect-retry-1"),
    ],
)
def test_connect_retry_patch(options: list[str], waits: list[int]) -> None:
    """ExaBGP's waits between connect attempts grow to 60 s; with --connect-retry they stop at its value."""
    assert run_patched(options, _DELAYS).result == waits


_NEGOTIATED = """
from exabgp.bgp.message.open.asn import ASN
from exabgp.bgp.message.open.capability.negotiated import Negotiated

class Open:
    def __init__(self, asn):
        self.asn = ASN(asn)

negotiated = Negotiated.__new__(Negotiated)
verdicts = {}
for name, peer_as in (("own", 64513), ("other", 64512)):
    negotiated.peer_as = ASN(peer_as)
    negotiated.received_open = Open(peer_as)
    try:
        verdict = negotiated.validate({"peer-as": None, "local-as": ASN(64513)})
    except Exception as error:  # past our check, upstream looks at more of the OPEN
        verdict = "upstream: " + type(error).__name__
    verdicts[name] = verdict if isinstance(verdict, str) or verdict is None else list(verdict)
result(verdicts)
"""


@pytest.mark.parametrize(
    ("options", "own"),
    [
        pytest.param([], "upstream: AttributeError", id="as-released"),
        pytest.param(
            ["--reject-own-asn"],
            [2, 2, "ASN in OPEN (64513) is our own: dynamicASN external expects another AS"],
            id="reject-own-asn",
        ),
    ],
)
def test_reject_own_asn_patch(options: list[str], own: object) -> None:
    """With peer-as auto, an OPEN with our own AS passes upstream's check; the patch refuses it (2/2)."""
    verdicts = run_patched(options, _NEGOTIATED).result
    assert verdicts["own"] == own
    assert verdicts["other"] == "upstream: AttributeError"  # another AS goes on to upstream's own checks


_COUNTERS = """
import json
from exabgp.reactor.peer import Peer, Stats

class Processes:
    lines = []
    def write(self, process, string, neighbor=None):
        self.lines.append((process, json.loads(string)))

class Fake:
    neighbor = type("N", (), {"api": {"neighbor-changes": ["bgpspeaker"]}})()
    reactor = type("R", (), {"processes": Processes()})()
    generator = None

stats = Stats()
stats.update({"send-update": 0, "receive-keepalive": 0})
for _ in range(3):
    stats["send-update"] += 1
stats["receive-keepalive"] += 1
stats.update({"send-update": 0, "receive-keepalive": 0})  # a session reset
stats["send-update"] += 1
try:
    Peer.run(Fake())
except Exception:  # upstream's run needs a whole peer; the report comes before it
    pass
result(Processes.lines)
"""


@pytest.mark.parametrize(
    ("options", "lines"),
    [
        pytest.param([], [], id="as-released"),
        pytest.param(
            ["--message-counters"],
            [["bgpspeaker", {"type": "bgpspeaker-counters", "counters": {"send-update": 4, "receive-keepalive": 1}}]],
            id="message-counters",
        ),
    ],
)
def test_message_counters_patch(options: list[str], lines: list[object]) -> None:
    """Totals survive a session reset (ExaBGP zeroes its counters) and go to the API process as one JSON line."""
    assert run_patched(options, _COUNTERS).result == lines


_PROCESSES = """
import os, select, socket, sys, tempfile, time
from exabgp.reactor.api.processes import Processes, ProcessError
from bgpspeaker.exabgp.inprocess import RELAY

def children():
    return [c for t in os.listdir("/proc/self/task") for c in open(f"/proc/self/task/{t}/children").read().split()]

def passes(until):
    # ExaBGP's reactor: wait for the API's descriptors (at most 0.1 s), then received()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        select.select(processes.fds, [], [], 0.1)
        for _, line in processes.received():
            return line
        done = until()
        if done:
            return done
    raise AssertionError("nothing within 10 s")

def accepted():
    try:
        return listener.accept()[0]
    except BlockingIOError:
        return None

path = os.path.join(tempfile.mkdtemp(), "api.sock")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(4)
listener.setblocking(False)
processes = Processes()
processes.start({"api-tor": {"run": [sys.executable, RELAY, path], "encoder": "json", "respawn": True}})
first = processes._process["api-tor"]
conn = passes(accepted)
conn.settimeout(10)
seen = {"kind": type(first).__name__, "children": len(children())}
conn.sendall(b"announce route 192.0.2.10/32 next-hop 10.0.0.2\\n")
seen["command"] = passes(lambda: None)
processes.write("api-tor", "done")
seen["ack"] = conn.recv(100).decode()
conn.close()  # the supervisor's side closes; ExaBGP writes nothing: only the end of file tells
conn = passes(accepted)  # ExaBGP's own respawn connects again
conn.settimeout(10)
second = processes._process["api-tor"]
seen["respawned"] = second is not first
processes.write("api-tor", "done")
seen["ack_after_respawn"] = conn.recv(100).decode()
if seen["kind"] == "InProcessRelay":  # the real relay may still drain this, or be gone (EPIPE)
    conn.close()
    try:
        processes.write("api-tor", "done")  # before ExaBGP's reactor noticed the close
        seen["write_after_close"] = "returned"
    except ProcessError:
        seen["write_after_close"] = "ProcessError"
    seen["broken"] = processes.broken(None)
    conn = passes(accepted)
    conn.settimeout(10)
    seen["respawned_again"] = processes._process["api-tor"] is not second
processes.terminate()  # ExaBGP's shutdown: a last line, then the end of file
tail = b""
while chunk := conn.recv(4096):
    tail += chunk
seen["shutdown"] = json.loads(tail)["type"]
result(seen)
"""

_CONNECTED = {
    "command": "announce route 192.0.2.10/32 next-hop 10.0.0.2",
    "ack": "done\n",
    "respawned": True,
    "ack_after_respawn": "done\n",
    "shutdown": "notification",
}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param([], {"kind": "Popen", "children": 1, **_CONNECTED}, id="as-released"),
        pytest.param(
            ["--inprocess-relay"],
            {
                "kind": "InProcessRelay",
                "children": 0,
                "write_after_close": "returned",
                "broken": False,
                "respawned_again": True,
                **_CONNECTED,
            },
            id="inprocess-relay",
        ),
    ],
)
def test_inprocess_relay_patch(options: list[str], expected: dict[str, object]) -> None:
    """ExaBGP's own Processes with our relay's command: as released, a relay process; patched, the
    same lines over the same socket with no child; a supervisor that closes gets a new connection
    from ExaBGP's respawn, and ExaBGP's write in between neither raises nor marks the helper broken."""
    assert run_patched(options, _PROCESSES).result == expected


_NO_SOCKET = """
import os, sys, tempfile
from exabgp.reactor.api.processes import Processes, ProcessError
from bgpspeaker.exabgp.inprocess import RELAY

path = os.path.join(tempfile.mkdtemp(), "api.sock")  # nobody listens
processes = Processes()
processes.start({"api-tor": {"run": [sys.executable, RELAY, path], "encoder": "json", "respawn": True}})
seen = {"kind": type(processes._process["api-tor"]).__name__, "passes": None}
for count in range(1, 50):  # one received() per reactor pass
    try:
        list(processes.received())
    except ProcessError:
        seen["passes"] = count
        break
seen["broken"] = processes.broken(None)
result(seen)
"""


def test_inprocess_relay_without_a_socket_ends_exabgp() -> None:
    """No socket to connect to: each start is a helper that already exited, ExaBGP respawns it
    and gives up after its 5 respawns (ProcessError: the reactor exits, the supervisor restarts
    ExaBGP), as with a relay that cannot connect; never a helper marked broken and a peer
    left running with no API."""
    run = run_patched(["--inprocess-relay"], _NO_SOCKET)
    assert run.result == {"kind": "InProcessRelay", "passes": 6, "broken": False}
    assert sum("bgpspeaker's API relay could not connect to" in line for line in run.log) == 6
