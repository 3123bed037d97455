"""One ExaBGP child's start through the launcher, alternated with another tree's launcher.

    sudo .venv/bin/python -m bench.exabgp_start --before /work/before --repeat 20

Each start runs ``python -m bgpspeaker.exabgp.launcher`` as the supervisor does (its
options and ExaBGP settings, the tree's byte-compiled package) with one neighbor on
127.0.0.1 port 1, where nobody listens, and stops at the first connect attempt ExaBGP
reports: the reactor is running, which is where a real start begins to peer. Measured
per start: wall time from the spawn to that line, the child's CPU (user + system, from
``wait4`` after it is killed at once) and its RSS at that moment. The trees alternate
(this one, the other, ...), so a loaded machine slows both; the CPU figure is the least
sensitive to that load.
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


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="another source tree (its bgpspeaker/) to alternate with")
    parser.add_argument("--repeat", type=int, default=20)
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
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, **result}, indent=1))


if __name__ == "__main__":
    main()
