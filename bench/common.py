"""Shared pieces of the benchmarks: the cluster generator, FRR probes, process footprint."""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from bgpspeaker.config import parse_config
from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
from bgpspeaker.peers import PeerRuntime
from lab.kubeapi import FakeKubeApi, endpoint_slice, service
from lab.netns import Frr, enter_netns, wait_until

VIP_BASE = ipaddress.IPv4Address("198.18.0.0")
"""RFC 2544 benchmarking range: room for 131,072 VIPs."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


RAW_PEER_CONFIG = {
    "apiVersion": "bgpspeaker.io/v1alpha1",
    "kind": "SpeakerConfig",
    "myASN": 64513,
    "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}],
}


def raw_exabgp(node_ns: str, *, speed_patches: bool = True) -> ExabgpSupervisor:
    """Our supervisor alone (no Kubernetes, no decision) for the node, not started: the raw
    ExaBGP anchor. Moves the calling thread into ``node_ns``, where ExaBGP will run.
    ``speed_patches=False``: ExaBGP as released, but for the launcher's keepalive and
    connect-error patches (see bgpspeaker.exabgp.launcher)."""
    enter_netns(node_ns)
    config = parse_config(RAW_PEER_CONFIG)
    return ExabgpSupervisor(
        PeerRuntime(config.peers[0]),
        router_id=ipaddress.IPv4Address("10.0.0.2"),
        workdir=Path(tempfile.mkdtemp(prefix="bench-raw-")),
        on_ready=lambda: None,
        speed_patches=speed_patches,
    )


def vip(index: int) -> str:
    return str(VIP_BASE + index)


def vips(count: int) -> set[str]:
    return {f"{vip(i)}/32" for i in range(count)}


def seed_services(api: FakeKubeApi, count: int, *, endpoint_node: str = "node-b") -> None:
    """``count`` Cluster-policy LoadBalancer services with one ready endpoint each."""
    for i in range(count):
        api.apply(service("bench", f"s{i}", ips=[vip(i)]))
        api.apply(
            endpoint_slice(
                "bench", f"s{i}-1", service_name=f"s{i}", endpoints=[("10.244.1.5", endpoint_node, True, True)]
            )
        )


def received(frr: Frr, neighbor: str = "10.0.0.2") -> int:
    """Prefixes FRR accepted from ``neighbor`` (cheap at any table size)."""
    peers = frr.json("show bgp ipv4 unicast summary json").get("peers", {})
    return int(peers.get(neighbor, {}).get("pfxRcd", 0) or 0)


def best_count(frr: Frr) -> int:
    """Best paths in FRR's IPv4 table (a full table dump: use once per measurement, not in a loop)."""
    routes = frr.json("show bgp ipv4 unicast json").get("routes", {})
    return sum(1 for paths in routes.values() if any(p.get("bestpath") for p in paths))


def wait_received(frr: Frr, count: int, *, timeout_s: float, neighbor: str = "10.0.0.2") -> float:
    """Poll until FRR has received exactly ``count`` prefixes from ``neighbor``; the monotonic time it did."""
    wait_until(
        lambda: received(frr, neighbor) == count,
        timeout_s=timeout_s,
        desc=f"{count} prefixes received from {neighbor}",
        interval_s=0.05,  # vtysh is a process: polling faster steals CPU from what is measured
    )
    return time.monotonic()


_JITTER = random.Random(2026)


class BestpathLog:
    """When bgpd itself changed a prefix's best path, read from its own debug log.

    ``debug bgp bestpath PREFIX`` makes bgpd log each selection for that prefix with a
    microsecond timestamp ("After path selection, newbest is X oldbest was Y"). Reading
    that file leaves bgpd alone; polling it with vtysh does not: a vtysh command in
    flight when the UPDATE arrives delays bgpd's best-path run by ~70 ms (measured:
    raw ExaBGP 55-60 ms with the first vtysh after the UPDATE, 115-140 ms with vtysh
    polling from 8 ms before it), which made the probe part of what it measured."""

    _LINE = re.compile(
        r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}) .*?(\S+)\(VRF default\): After path selection, newbest is (\S+)"
    )

    def __init__(self, frr: Frr, prefixes: Iterable[str]) -> None:
        self.path = frr.workdir / "bestpath.log"
        subprocess.run(["install", "-o", "frr", "-g", "frr", "-m", "0644", "/dev/null", str(self.path)], check=True)
        commands = ["configure terminal", f"log file {self.path} debugging", "log timestamp precision 6"]
        commands += [f"debug bgp bestpath {prefix}" for prefix in prefixes]
        subprocess.run(
            ["vtysh", "--vty_socket", str(frr.workdir), *(arg for command in commands for arg in ("-c", command))],
            check=True,
            capture_output=True,
        )
        self._offset = 0
        self.seen: list[tuple[float, str, bool]] = []
        """Every selection read so far: (wall-clock time, prefix, has a best path)."""

    def read(self) -> list[tuple[float, str, bool]]:
        """The selections logged since the last read (complete lines only)."""
        with self.path.open() as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode())
        new = []
        for line in complete.splitlines():
            match = self._LINE.match(line)
            if match is not None:
                # bgpd logs local time, as strptime/timestamp() read it
                at = datetime.datetime.strptime(match.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                new.append((at, match.group(2), match.group(3) != "NONE"))
        self.seen.extend(new)
        return new

    def wait(self, prefix: str, *, best: bool, after: float, timeout_s: float = 10.0) -> float:
        """Wall-clock time of bgpd's first selection of ``prefix`` at or after ``after``
        (``time.time()``) that left it with a best path (``best``) or without one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, logged, has_best in self.read():
                if logged == prefix and at >= after and has_best == best:
                    return at
            time.sleep(0.002)  # reading a file: this poll costs bgpd nothing
        raise AssertionError(f"bgpd logged no best-path change for {prefix} (best={best}) in {timeout_s} s")

    def timed(self, prefix: str, action: Callable[[], object], *, best: bool) -> float:
        """Milliseconds from ``action()`` until bgpd's best path for ``prefix`` changed that way.

        Each trial starts after a random 0-250 ms pause: back-to-back trials would lock
        onto the phase of bgpd's timers (its best-path run waits 50 ms after an UPDATE).
        Real changes arrive at random moments; so do these."""
        time.sleep(_JITTER.uniform(0.0, 0.25))  # de-correlation, not synchronization
        started = time.time()
        action()
        return (self.wait(prefix, best=best, after=started) - started) * 1000

    def flips(
        self, prefix: str, steps: Sequence[tuple[Callable[[], object], bool]], *, trials: int
    ) -> list[list[float]]:
        """``trials`` rounds of ``steps`` ((action, leaves a best path?) in order): the
        milliseconds of each step, one list per step."""
        samples: list[list[float]] = [[] for _ in steps]
        for _ in range(trials):
            for (action, best), times in zip(steps, samples, strict=True):
                times.append(self.timed(prefix, action, best=best))
        return samples


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def idle_cpu_percent(pids: list[int], seconds: float) -> float:
    """CPU used by ``pids`` together over ``seconds`` of wall time, in % of one core."""
    before = sum(cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    time.sleep(seconds)  # a measurement window
    used = sum(cpu_seconds(pid) for pid in pids) - before
    return 100 * used / (time.monotonic() - started)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": ordered[-1],
    }


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
