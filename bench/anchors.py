"""The anchors: how the peers announce N routes, in the same topology and run as bgpspeaker.

Each anchor runs in the node's namespace as AS 64513 from 10.0.0.2 and peers with the
same FRR router (AS 64512). The clock runs from the anchor's bulk change to FRR having
received all N prefixes (``pfxRcd``), and back to 0; the anchor's session is already
up, since that is how each is used (a long-running daemon whose config changes).

- BIRD 2 (how Calico announces): N ``route P blackhole`` in a static protocol,
  exported over BGP; ``birdc configure``.
- FRR with ``frr-reload.py`` (how MetalLB's FRR mode announces, without its 3 s
  debounce): a second bgpd with N ``network`` statements applied by ``frr-reload.py``.
- GoBGP (how kube-vip, Cilium and kube-router announce, through its gRPC API): one
  ``gobgp global rib add`` per route, N CLI processes (so this row carries ~N x a
  process start); the removal is the bulk ``gobgp global rib del all``. Its bulk path,
  ``gobgp mrt inject global``, parsed our generated TABLE_DUMP_V2 file fully (``-d``
  prints every record) but added only the first route with gobgp 3.10 (Debian 12),
  so it is not used.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import vip, wait_received
from lab.netns import Frr, Lab, pid_alive, stop_pid, wait_until
from lab.topology import single_node

__all__ = ["bird", "frr_reload", "gobgp"]


def _measure(
    lab: Lab, frr: Frr, count: int, announce: Callable[[], None], withdraw: Callable[[], None]
) -> dict[str, Any]:
    started = time.monotonic()
    announce()
    done = wait_received(frr, count, timeout_s=300)
    withdrawn = time.monotonic()
    withdraw()
    gone = wait_received(frr, 0, timeout_s=300)
    return {"n": count, "cold_start_s": done - started, "delete_all_s": gone - withdrawn}


def _established(frr: Frr) -> None:
    wait_until(
        lambda: frr.neighbor("10.0.0.2").get("bgpState") == "Established",
        timeout_s=60,
        desc="anchor session Established",
    )


# -- BIRD 2 ------------------------------------------------------------------------------


def _bird_config(count: int) -> str:
    routes = "\n".join(f"  route {vip(i)}/32 blackhole;" for i in range(count))
    return f"""router id 10.0.0.2;
protocol device {{ }}
protocol static vips {{
  ipv4;
{routes}
}}
protocol bgp tor {{
  local 10.0.0.2 as 64513;
  neighbor 10.0.0.1 as 64512;
  ipv4 {{ import none; export all; next hop self; }};
}}
"""


def _anchor_lab(lab: Lab, name: str) -> tuple[Any, str, Path]:
    """The single-node topology without Kubernetes: (topology, node namespace, a work directory)."""
    topo = single_node(lab)
    topo.api.stop()
    workdir = lab.root / name
    workdir.mkdir()
    return topo, lab.namespaces[1], workdir


def bird(count: int) -> dict[str, Any]:
    with Lab("bird") as lab:
        topo, node_ns, workdir = _anchor_lab(lab, "bird")
        conf, sock, pidfile = workdir / "bird.conf", workdir / "bird.ctl", workdir / "bird.pid"
        conf.write_text(_bird_config(0))
        subprocess.run(
            ["ip", "netns", "exec", node_ns, "bird", "-c", str(conf), "-s", str(sock), "-P", str(pidfile)], check=True
        )
        pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout_s=10, desc="bird pid"))
        try:
            _established(topo.frr)

            def configure(routes: int) -> Callable[[], None]:
                def run() -> None:
                    conf.write_text(_bird_config(routes))
                    subprocess.run(["birdc", "-s", str(sock), "configure"], check=True, capture_output=True)

                return run

            return _measure(lab, topo.frr, count, configure(count), configure(0))
        finally:
            stop_pid(pid)
            topo.close()


# -- FRR + frr-reload.py -------------------------------------------------------------------


def _frr_config(count: int) -> str:
    networks = "\n".join(f"  network {vip(i)}/32" for i in range(count))
    return f"""frr defaults datacenter
hostname node
log stdout warnings
router bgp 64513
 bgp router-id 10.0.0.2
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 10.0.0.1 remote-as 64512
 neighbor 10.0.0.1 timers connect 1
 address-family ipv4 unicast
{networks}
  neighbor 10.0.0.1 activate
 exit-address-family
"""


def frr_reload(count: int) -> dict[str, Any]:
    with Lab("frrr") as lab:
        topo = single_node(lab)
        topo.api.stop()
        node_ns = lab.namespaces[1]
        speaker_frr = lab.frr(node_ns, _frr_config(0))
        new_conf = speaker_frr.workdir / "frr-new.conf"
        try:
            _established(topo.frr)

            def reload(routes: int) -> Callable[[], None]:
                def run() -> None:
                    new_conf.write_text(_frr_config(routes))
                    result = subprocess.run(
                        [
                            "python3",
                            "/usr/lib/frr/frr-reload.py",
                            "--reload",
                            "--daemon",
                            "bgpd",
                            "--vty_socket",
                            str(speaker_frr.workdir),
                            "--confdir",
                            str(speaker_frr.workdir),
                            "--rundir",
                            str(speaker_frr.workdir),
                            "--stdout",
                            str(new_conf),
                        ],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if result.returncode != 0:
                        raise RuntimeError(f"frr-reload.py failed: {result.stdout[-800:]} {result.stderr[-800:]}")

                return run

            return _measure(lab, topo.frr, count, reload(count), reload(0))
        finally:
            topo.close()


# -- GoBGP -----------------------------------------------------------------------------------


def gobgp(count: int) -> dict[str, Any]:
    with Lab("gobgp") as lab:
        topo, node_ns, workdir = _anchor_lab(lab, "gobgp")
        conf = workdir / "gobgpd.toml"
        conf.write_text(
            '[global.config]\n  as = 64513\n  router-id = "10.0.0.2"\n  port = -1\n'
            '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "10.0.0.1"\n    peer-as = 64512\n'
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", node_ns, "gobgpd", "-f", str(conf), "--api-hosts", "127.0.0.1:50051", "-l", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        script = workdir / "add.sh"
        script.write_text(
            "\n".join(f"gobgp global rib add -a ipv4 {vip(i)}/32 nexthop 10.0.0.2" for i in range(count)) + "\n"
        )

        def gobgp_cli(*args: str) -> None:
            subprocess.run(["ip", "netns", "exec", node_ns, *args], check=True, capture_output=True)

        try:
            _established(topo.frr)
            return _measure(
                lab,
                topo.frr,
                count,
                lambda: gobgp_cli("sh", str(script)),
                lambda: gobgp_cli("gobgp", "global", "rib", "del", "all", "-a", "ipv4"),
            )
        finally:
            proc.terminate()
            proc.wait(10)
            if pid_alive(proc.pid):
                stop_pid(proc.pid)
            topo.close()


def available() -> dict[str, bool]:
    """Which anchors can run on this machine."""
    return {
        "bird": shutil.which("bird") is not None and shutil.which("birdc") is not None,
        "frr-reload": Path("/usr/lib/frr/frr-reload.py").exists(),
        "gobgp": shutil.which("gobgpd") is not None and shutil.which("gobgp") is not None,
    }


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for name, run in (("bird", bird), ("frr-reload", frr_reload), ("gobgp", gobgp)):
        try:
            print(name, run(n), flush=True)
        except Exception as error:  # noqa: BLE001  # a bench prints what failed and goes on
            print(name, "FAILED:", error, flush=True)
