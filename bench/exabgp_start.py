"""One ExaBGP child's start and footprint through the launcher, alternated with another tree.

    sudo .venv/bin/python -m bench.exabgp_start --before /work/before --repeat 20
    sudo .venv/bin/python -m bench.exabgp_start --before /work/before --repeat 6 --routes 1000 10000

Each start runs ``python -m bgpspeaker.exabgp.launcher`` as the supervisor does (its
options and ExaBGP settings, the tree's byte-compiled package) with one neighbor on
127.0.0.1 port 1, where nobody listens, and stops at the first connect attempt ExaBGP
reports: the reactor is running, which is where a real start begins to peer. Measured
per start: wall time from the spawn to that line, the child's CPU (user + system, from
``wait4`` after it is killed at once) and its RSS at that moment. The trees alternate
(this one, the other, ...), so a loaded machine slows both; the CPU figure is the least
sensitive to that load.

With ``--routes N``: ExaBGP alone, through each tree's own supervisor, config and launcher
(a fresh interpreter in that tree), peered with FRR in a lab: its RSS once the session is
up and idle, then after N routes in one bulk (all received by FRR, 2 s later), and its CPU
for the start, the session and the bulk (FRR sends the routes back, as routers do: what
ExaBGP does with them counts).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import rss_mb
from bench.startup import HERE, compile_tree
from bgpspeaker.exabgp.launcher import launcher_settings

_CONFIG = """
neighbor 127.0.0.1 {
    router-id 10.0.0.2;
    local-address 127.0.0.1;
    local-as 64513;
    peer-as 64512;
    hold-time 90;
    connect 1;
    family {
        ipv4 unicast;
    }
}
"""

_REACTOR_RUNNING = b"Could not connect to peer 127.0.0.1:1"


def _environment() -> dict[str, str]:
    """The supervisor's settings for ExaBGP (bgpspeaker.exabgp.supervisor), as the current user."""
    return {
        **os.environ,
        "exabgp_daemon_user": pwd.getpwuid(os.geteuid()).pw_name,
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": "",
        "exabgp_api_ack": "true",
        "exabgp_api_cli": "false",
        "exabgp_api_encoder": "json",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "WARNING",
        "exabgp_reactor_speed": "1.0",
        "exabgp_log_short": "true",
        "exabgp_tcp_bind": "",
        "PYTHONUNBUFFERED": "1",
    }


def one_start(tree: Path, config: Path) -> dict[str, Any]:
    """The launcher of ``tree`` started once: seconds to the reactor, CPU seconds, RSS MB."""
    options = launcher_settings(keepalive_s=30, hold_time_s=90, speed_patches=True, idle_poll_ms=100).arguments()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgpspeaker.exabgp.launcher", *options, "--", "server", str(config)],
        cwd=tree,  # `python -m` finds the tree's package first
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_environment(),
    )
    assert proc.stdout is not None
    output = b""
    deadline = started + 30
    try:
        while _REACTOR_RUNNING not in output:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"ExaBGP did not reach its reactor: {output[-2000:]!r}")
            if select.select([proc.stdout], [], [], 0.5)[0]:
                output += os.read(proc.stdout.fileno(), 1 << 16)
        reactor_s = time.monotonic() - started
        rss = rss_mb(proc.pid)
    finally:
        proc.kill()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    proc.stdout.close()
    return {"reactor_s": reactor_s, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": rss}


_WITH_ROUTES = """
import ipaddress, json, sys, time
from bench.common import cpu_seconds, raw_exabgp, rss_mb, vips, wait_received
from bgpspeaker.exabgp.commands import announce_line
from bgpspeaker.logs import configure
from bgpspeaker.routes import Attributes
from lab.netns import Lab, wait_until
from lab.topology import single_node

configure(log_format="console", level="error")
count = int(sys.argv[1])
with Lab("xfoot") as lab:
    topo = single_node(lab)
    topo.api.stop()
    exabgp = raw_exabgp(lab.namespaces[1])
    peer = exabgp.runtime.peer.peer_address
    try:
        exabgp.start()
        exabgp.wait_ready(30)
        summary = lambda: topo.frr.json("show bgp ipv4 unicast summary json").get("peers", {}).get("10.0.0.2", {})
        wait_until(lambda: summary().get("state") == "Established", timeout_s=30, desc="session up")
        time.sleep(1.0)  # the start-up settles: a steady figure
        pid = exabgp.pid
        idle = rss_mb(pid)
        nets = sorted(ipaddress.ip_network(p) for p in vips(count))
        hop = Attributes(next_hop=ipaddress.ip_address("10.0.0.2"))
        exabgp.execute([announce_line(peer, hop, nets[i : i + 500]) for i in range(0, len(nets), 500)])
        wait_received(topo.frr, count, timeout_s=120)
        time.sleep(2.0)
        print(json.dumps({"idle_rss_mb": idle, "rss_mb": rss_mb(pid), "cpu_s": cpu_seconds(pid)}))
    finally:
        exabgp.stop()
        topo.close()
"""


def with_routes(tree: Path, count: int) -> dict[str, Any]:
    """ExaBGP of ``tree`` (its supervisor, config and launcher) peered with FRR, ``count`` routes announced."""
    done = subprocess.run(
        [sys.executable, "-c", _WITH_ROUTES, str(count)],
        cwd=tree,  # a fresh interpreter that imports the tree's own packages first
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="another source tree (its bgpspeaker/) to alternate with")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--routes", type=int, nargs="*", default=[], help="also ExaBGP with FRR and N routes")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    trees = {"this": HERE, "before": Path(args.before).resolve()}
    for tree in trees.values():
        compile_tree(tree)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench-exabgp-start-") as workdir:
        config = Path(workdir) / "exabgp.conf"
        config.write_text(_CONFIG)
        for _ in range(args.repeat):
            for name, tree in trees.items():
                runs[name].append(one_start(tree, config))
    result = {
        "load_average": os.getloadavg(),
        **{name: {key: _summary([r[key] for r in rows]) for key in rows[0]} for name, rows in runs.items()},
    }
    ratios = [a["cpu_s"] / b["cpu_s"] for a, b in zip(runs["this"], runs["before"], strict=True)]
    result["cpu_ratio"] = _summary(ratios)
    for name in trees:
        figures = result[name]
        print(
            f"{name:<7} reactor {figures['reactor_s']['median'] * 1000:.0f} ms"
            f" ({figures['reactor_s']['min'] * 1000:.0f}-{figures['reactor_s']['max'] * 1000:.0f}),"
            f" CPU {figures['cpu_s']['median'] * 1000:.0f} ms"
            f" ({figures['cpu_s']['min'] * 1000:.0f}-{figures['cpu_s']['max'] * 1000:.0f}),"
            f" RSS {figures['rss_mb']['median']:.1f} MB"
        )
    print(f"CPU ratio this/before per pair: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    routes: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for count in args.routes:
        routes[count] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name, tree in trees.items():
                routes[count][name].append(with_routes(tree, count))
        for name, rows in routes[count].items():
            figures = {key: _summary([r[key] for r in rows]) for key in rows[0]}
            print(
                f"{name:<7} N={count}: RSS idle {figures['idle_rss_mb']['median']:.1f} MB,"
                f" at N {figures['rss_mb']['median']:.1f} MB"
                f" ({figures['rss_mb']['min']:.1f}-{figures['rss_mb']['max']:.1f}),"
                f" CPU {figures['cpu_s']['median']:.2f} s ({figures['cpu_s']['min']:.2f}-{figures['cpu_s']['max']:.2f})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "routes": routes, **result}, indent=1))


if __name__ == "__main__":
    main()
