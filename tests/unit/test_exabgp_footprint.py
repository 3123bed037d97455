"""What an ExaBGP child loads and keeps: the launcher's deferred imports and frozen GC
(bgpspeaker.exabgp.imports), and the rendered neighbor's adj-rib-in.

Imports are process-wide, so every test runs its script in a fresh interpreter. No
network: at most a TCP connect to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from bgpspeaker.config import parse_config
from bgpspeaker.exabgp.imports import DEFERRED
from bgpspeaker.exabgp.render import render_config
from bgpspeaker.peers import PeerRuntime

_ENV = {
    **os.environ,
    "exabgp_log_destination": "stdout",
    "exabgp_log_level": "WARNING",
    "exabgp_log_short": "true",
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_pid": "",
    "exabgp_daemon_user": pwd.getpwuid(os.geteuid()).pw_name,
    "exabgp_api_cli": "false",
    "PYTHONUNBUFFERED": "1",  # ExaBGP's log lines as they come, as the supervisor runs it
}

_PRELUDE = """
import gc, json, sys, types
from bgpspeaker.exabgp.imports import DEFERRED, importing

def result(value):
    print("RESULT " + json.dumps(value), flush=True)

def stand_in(module):
    return type(module).__name__ == "_StandIn"
"""


def run(script: str, *arguments: str) -> Any:
    """``script`` in a fresh interpreter; what it passed to ``result(...)``."""
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script), *arguments],
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


# -- the stand-ins ----------------------------------------------------------------------


def test_deferred_module_is_imported_at_its_first_use() -> None:
    """Imported inside: a stand-in, gone from sys.modules after; its first attribute read imports the real module."""
    assert run(
        """
        assert "colorsys" not in sys.modules
        with importing(("colorsys",)):
            import colorsys
            inside = stand_in(sys.modules["colorsys"])
        after = [stand_in(colorsys), "colorsys" in sys.modules]
        hsv = colorsys.rgb_to_hsv(1.0, 0.0, 0.0)  # the first use
        real = sys.modules["colorsys"]
        result({
            "inside": inside,
            "after": after,
            "hsv": hsv,
            "real": [stand_in(real), colorsys.rgb_to_hsv is real.rgb_to_hsv, colorsys.__file__ == real.__file__],
        })
        """
    ) == {"inside": True, "after": [True, False], "hsv": [0.0, 1.0, 1.0], "real": [False, True, True]}


def test_module_imported_before_is_left_alone() -> None:
    """A module already imported is what ``import`` gives inside too."""
    assert run(
        """
        import colorsys as before
        with importing(("colorsys",)):
            import colorsys
        result([colorsys is before, stand_in(colorsys)])
        """
    ) == [True, False]


def test_package_imported_after_is_the_real_one() -> None:
    """After: ``import pkg.sub`` is an ordinary import, and the stand-in then shows the real package's submodule."""
    assert run(
        """
        with importing(("wsgiref",)):
            import wsgiref
        import wsgiref.util
        result({
            "real": not stand_in(sys.modules["wsgiref"]),
            "same submodule": wsgiref.util is sys.modules["wsgiref.util"],
            "one copy": sys.modules["wsgiref"].util is sys.modules["wsgiref.util"],
        })
        """
    ) == {"real": True, "same submodule": True, "one copy": True}


def test_gc_paused_inside_then_frozen() -> None:
    """The cyclic GC is off inside, back on after, and what the imports built is frozen; a GC switched off stays off."""
    assert run(
        """
        frozen = gc.get_freeze_count()
        with importing(()):
            import colorsys
            inside = gc.isenabled()
        on = [inside, gc.isenabled(), gc.get_freeze_count() > frozen]
        gc.disable()
        with importing(()):
            pass
        result({"on": on, "off": gc.isenabled()})
        """
    ) == {"on": [False, True, True], "off": False}


def test_failed_import_leaves_no_stand_in() -> None:
    """An import that fails inside: the error propagates, the stand-ins leave, the GC runs again."""
    assert run(
        """
        try:
            with importing(("colorsys",)):
                import colorsys
                import no_such_module_here
        except ImportError as error:
            failed = error.name
        result([failed, "colorsys" in sys.modules, gc.isenabled()])
        """
    ) == ["no_such_module_here", False, True]


# -- ExaBGP 5.0.15 -----------------------------------------------------------------------

_EVERY_PATCH = [
    *("--keepalive", "30", "--no-route-copy", "--nodelay", "--fast-reactor", "--idle-poll-ms", "100"),
    *("--connect-errors", "--connect-retry", "5", "--reject-own-asn", "--message-counters"),
]


def test_exabgp_server_path_leaves_them_unimported() -> None:
    """ExaBGP imported as the launcher does, every patch checked and applied: neither asyncio nor pdb is imported."""
    assert run(
        """
        from bgpspeaker.exabgp.launcher import apply, installed_exabgp_version, parse_arguments, refusal
        settings, _ = parse_arguments(sys.argv[1:])
        with importing():
            problem = refusal(settings, installed_exabgp_version())
            import exabgp.application.main
        apply(settings)
        import exabgp.reactor.asynchronous, exabgp.configuration.core.error, exabgp.debug.intercept
        result({
            "problem": problem,
            "imported": [name for name in DEFERRED if name in sys.modules],
            "stand-ins": [
                stand_in(exabgp.reactor.asynchronous.asyncio),
                stand_in(exabgp.configuration.core.error.pdb),
                stand_in(exabgp.debug.intercept.pdb),
            ],
        })
        """,
        *_EVERY_PATCH,
    ) == {"problem": None, "imported": [], "stand-ins": [True, True, True]}


def test_exabgp_as_released_imports_asyncio_when_it_runs_the_api() -> None:
    """Without --fast-reactor ExaBGP's own ``ASYNC.run`` calls ``asyncio.run``: the real asyncio, the same passes."""
    assert run(
        """
        with importing():
            from exabgp.reactor.asynchronous import ASYNC
            from exabgp.environment import getenv
            from exabgp.logger import log
        log.init(getenv())
        before = "asyncio" in sys.modules
        done = []

        def steps(name, count):
            for _ in range(count):
                done.append(name)
                yield

        queue = ASYNC()
        queue.schedule("a", "announce", steps("a", 30))
        queue.schedule("b", "announce", steps("b", 30))
        passes = [queue.run(), queue.run(), queue.run()]
        import exabgp.reactor.asynchronous as module
        result({
            "before": before,
            "passes": passes,
            "steps": [done.count("a"), done.count("b")],
            "real": module.asyncio.run is sys.modules["asyncio"].run,
        })
        """
    ) == {"before": False, "passes": [True, False, False], "steps": [30, 30], "real": True}


_SERVER_CONFIG = """
neighbor 127.0.0.1 {
    router-id 10.0.0.2;
    local-address 127.0.0.1;
    local-as 64513;
    peer-as 64512;
    connect 1;
    family {
        ipv4 unicast;
    }
}
"""


def test_launcher_runs_exabgp_server_without_them(tmp_path: Path) -> None:
    """``python -m bgpspeaker.exabgp.launcher ... -- server CONFIG``: ExaBGP's reactor runs (it tries the peer, the
    connect error is reported) and neither asyncio nor pdb was imported (``python -v`` names every module loaded)."""
    config = tmp_path / "exabgp.conf"
    config.write_text(_SERVER_CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-v", "-m", "bgpspeaker.exabgp.launcher", *_EVERY_PATCH, "--", "server", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # ExaBGP's log and the imports
        env=_ENV,
    )
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + 30
    try:
        while b"Could not connect to peer 127.0.0.1:1" not in output:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and proc.poll() is None, f"no connect attempt reported; ExaBGP said: {output!r}"
            if select.select([proc.stdout], [], [], remaining)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    lines = output.decode(errors="replace").splitlines()
    imported = {line.split("'")[1] for line in lines if line.startswith("import '")}
    assert "exabgp.reactor.loop" in imported
    assert sorted(imported & set(DEFERRED)) == []


# -- what ExaBGP keeps ---------------------------------------------------------------------


def test_rendered_neighbor_keeps_no_received_routes(tmp_path: Path) -> None:
    """Our rendered config read by the installed ExaBGP: no adj-rib-in (routes from the router are not kept; with
    no API process asking for them ExaBGP skips decoding them), the adj-rib-out kept (our routes after a reset)."""
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}],
        }
    )
    text = render_config(
        PeerRuntime(config.peers[0]),
        router_id=ipaddress.IPv4Address("10.0.0.2"),
        relay_command=[sys.executable, "/nonexistent/relay.py", "/nonexistent/api.sock"],
    )
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    assert run(
        """
        from exabgp.environment import getenv
        from exabgp.logger import log
        log.init(getenv())
        from exabgp.configuration.configuration import Configuration
        configuration = Configuration([sys.argv[1]])
        assert configuration.reload(), configuration.error
        [neighbor] = configuration.neighbors.values()
        result({
            "adj-rib-in": neighbor["adj-rib-in"],
            "adj-rib-out": neighbor["adj-rib-out"],
            "caches": [neighbor.rib.incoming.cache, neighbor.rib.outgoing.cache],
        })
        """,
        str(path),
    ) == {"adj-rib-in": False, "adj-rib-out": True, "caches": [False, True]}
