"""Test topology: network namespaces joined by veth pairs, FRR's bgpd in one of them.

Everything is created under unique names and torn down by the ``Lab`` that made it;
processes are stopped by PID only.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Frr", "Lab", "enter_netns", "wait_until"]

_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def wait_until(probe: Callable[[], T], *, timeout_s: float, desc: str, interval_s: float = 0.02) -> T:
    """Poll ``probe`` until it returns a truthy value; on timeout fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as error:  # noqa: BLE001  # reported below if it never recovers
            last = f"{type(error).__name__}: {error}"
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {desc}; last observed: {last!r}")
        time.sleep(interval_s)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (processes it spawns start there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({name}) failed")
    finally:
        os.close(fd)


def http_get(netns: str, url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """GET ``url`` from inside ``netns`` (on a scratch thread that enters it); (status, body)."""
    import urllib.error
    import urllib.request

    result: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            enter_netns(netns)
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:  # test URL
                    result.append((response.status, response.read().decode()))
            except urllib.error.HTTPError as error:
                result.append((error.code, error.read().decode()))
        except BaseException as error:  # noqa: BLE001  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    if errors:
        raise errors[0]
    if not result:
        raise TimeoutError(f"GET {url} in {netns}: no answer")
    return result[0]


def run_in(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``netns``; the completed process (not checked)."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def stop_pid(pid: int, *, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; wait until the PID is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)


@dataclasses.dataclass
class Frr:
    """One bgpd in a namespace, driven through vtysh."""

    netns: str
    workdir: Path
    pid: int = 0
    zebra: bool = False
    """Also run zebra (routes into the namespace's kernel); bgpd then talks to it."""
    zebra_pid: int = 0

    def start(self, config: str) -> Frr:
        """Write ``bgpd.conf`` and start bgpd (after zebra when ``zebra``, else with -Z), daemonized."""
        subprocess.run(["install", "-d", "-o", "frr", "-g", "frr", str(self.workdir)], check=True)
        if self.zebra and not self.zebra_pid:
            self.zebra_pid = self._daemon("zebra", "")
        self.pid = self._daemon("bgpd", config)
        return self

    def _daemon(self, name: str, config: str, *extra: str) -> int:
        """Start one FRR daemon (``name``.conf, .pid, vty and zserv sockets in ``workdir``); its PID."""
        conf = self.workdir / f"{name}.conf"
        conf.write_text(config)
        subprocess.run(["chown", "frr:frr", str(conf)], check=True)
        pidfile = self.workdir / f"{name}.pid"
        pidfile.unlink(missing_ok=True)
        zserv = ["-z", str(self.workdir / "zserv.api")] if self._uses_zebra(name) else ["-Z"]
        _run(
            "ip", "netns", "exec", self.netns, f"/usr/lib/frr/{name}", "-d", *zserv,
            "-f", str(conf), "-i", str(pidfile), "--vty_socket", str(self.workdir),
            "-A", "127.0.0.1", "-P", "0", *extra,
        )  # fmt: skip
        return int(
            wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout_s=10, desc=f"{name} pidfile")
        )

    def _uses_zebra(self, _name: str) -> bool:
        """Whether daemon ``name`` is given zebra's socket (-z) rather than -Z."""
        return self.zebra

    def vtysh(self, command: str) -> str:
        """Run one vtysh command against this bgpd."""
        return _run("vtysh", "--vty_socket", str(self.workdir), "-c", command)

    def json(self, command: str) -> Any:
        """Run a ``... json`` command and decode it."""
        return json.loads(self.vtysh(command) or "{}")

    def best_paths(self, afi: str = "ipv4") -> dict[str, dict[str, Any]]:
        """{prefix: best path} of the unicast table."""
        table = self.json(f"show bgp {afi} unicast json").get("routes", {})
        best = {}
        for prefix, paths in table.items():
            for path in paths:
                if path.get("bestpath"):
                    best[prefix] = path
        return best

    def best_path(self, prefix: str) -> dict[str, Any] | None:
        """The best path for ``prefix`` with every attribute (communities, MED, ...), or None."""
        afi = "ipv6" if ":" in prefix else "ipv4"
        detail = self.json(f"show bgp {afi} unicast {prefix} json")
        if detail.get("prefix") != prefix:
            return None
        return next((p for p in detail.get("paths", []) if p.get("bestpath", {}).get("overall")), None)

    def neighbor(self, address: str) -> dict[str, Any]:
        """FRR's JSON view of one neighbor."""
        data: dict[str, Any] = self.json(f"show bgp neighbors {address} json").get(address, {})
        return data

    def restart_bgpd(self, *, kill: bool = False) -> None:
        """Stop bgpd by PID (``kill``: SIGKILL, a crash) and start it again on its config
        (zebra, if any, keeps running)."""
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        stop_pid(self.pid)
        self.pid = self._daemon("bgpd", (self.workdir / "bgpd.conf").read_text())

    def stop(self) -> None:
        """Stop bgpd (and zebra) by PID."""
        if self.pid:
            stop_pid(self.pid)
            self.pid = 0
        if self.zebra_pid:
            stop_pid(self.zebra_pid)
            self.zebra_pid = 0


class PathSampler:
    """Samples a router's best paths in the background; records every moment a prefix was missing."""

    def __init__(self, frr: Frr, prefixes: set[str], afi: str = "ipv4") -> None:
        self.frr, self.prefixes, self.afi = frr, prefixes, afi
        self.samples = 0
        self.missing: list[tuple[float, set[str]]] = []
        self.fewest = len(prefixes)
        """The fewest of ``prefixes`` seen best in any one sample."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            present = set(self.frr.best_paths(self.afi))
            self.samples += 1
            self.fewest = min(self.fewest, len(self.prefixes & present))
            if not self.prefixes <= present:
                self.missing.append((time.monotonic(), self.prefixes - present))

    def __enter__(self) -> PathSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_LINK_NUMBERS = itertools.count(1)
"""Numbers veth names for the whole process. A counter per Lab restarted at 1 for every
Lab, so labs built one after another reused names; bench runs doing that saw ``ip link
add`` exit 2 a few times (not reproduced; names still held while the kernel tears down an
earlier lab's namespaces is the suspected cause). Unique names rule it out."""


class Lab:
    """Namespaces and links with unique names; ``close()`` removes all of it."""

    def __init__(self, tag: str = "") -> None:
        self.prefix = f"bsp{os.getpid() % 100000}{tag}"
        self.namespaces: list[str] = []
        self.frrs: list[Frr] = []
        # bgpd drops to user frr: its directories must be reachable by that user,
        # which pytest's 0700 tmp_path is not.
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.root.chmod(0o755)

    def netns(self, name: str) -> str:
        """Create a namespace with loopback up; return its full name."""
        full = f"{self.prefix}-{name}"
        _run("ip", "netns", "add", full)
        self.namespaces.append(full)
        _run("ip", "-n", full, "link", "set", "lo", "up")
        return full

    def link(self, ns_a: str, addr_a: str | list[str], ns_b: str, addr_b: str | list[str]) -> tuple[str, str]:
        """A veth pair between two namespaces with the given ``addr/len`` (one or several) on each end."""
        number = next(_LINK_NUMBERS)
        if_a, if_b = f"v{os.getpid() % 100000}a{number}", f"v{os.getpid() % 100000}b{number}"
        _run("ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b)
        _run("ip", "link", "set", if_a, "netns", ns_a)
        _run("ip", "link", "set", if_b, "netns", ns_b)
        for ns, ifname, addrs in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            for addr in [addrs] if isinstance(addrs, str) else addrs:
                family = "-6" if ":" in addr else "-4"
                extra = ["nodad"] if family == "-6" else []
                _run("ip", family, "-n", ns, "addr", "add", addr, "dev", ifname, *extra)
            _run("ip", "-n", ns, "link", "set", ifname, "up")
        return if_a, if_b

    def run(self, *argv: str) -> str:
        """Run a setup command (ip, sysctl) and return its output; raise on failure."""
        return _run(*argv)

    def frr(self, netns: str, config: str, *, zebra: bool = False) -> Frr:
        """Start a bgpd (and zebra) in ``netns``, with its files under this lab's directory."""
        frr = Frr(netns=netns, workdir=self.root / netns, zebra=zebra).start(config)
        self.frrs.append(frr)
        return frr

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every bgpd and delete every namespace (their veths go with them)."""
        for frr in self.frrs:
            frr.stop()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.root, ignore_errors=True)
