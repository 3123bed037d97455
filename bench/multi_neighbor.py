"""The alternative to one ExaBGP per peer, measured: one ExaBGP with several neighbors.

    sudo .venv/bin/python -m bench.multi_neighbor --n 10000 --peers 2 4 --repeat 2

K routers (one FRR each, on its own link to the node). Per round, both layouts fed the
same N routes per peer (explicit next hop = the node's address on that link, bulk lines of
500, as bgpspeaker sends them), one after the other:

- per peer: K of bgpspeaker's supervisors, one ExaBGP (and one relay) each, as today;
- shared: one ExaBGP through the same launcher and patches, whose config holds all K
  neighbor blocks, and one relay; every line names its neighbor (``neighbor X announce``).

Measured: seconds from the ExaBGP start(s) until every router has received all N, and
the RSS (and PSS: shared pages counted once, what a cgroup is charged) of the ExaBGP and
relay processes once settled. The route-copy patch stays valid in the shared layout:
every API line names one neighbor with its own explicit next hop, so no change object is
handed to two neighbors (the copy upstream makes exists for ``next-hop self`` lines that
go to several neighbors).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import rss_mb, vips, wait_received
from bench.startup import _ROUTER, descendants
from bgpspeaker.config import parse_config
from bgpspeaker.exabgp import render
from bgpspeaker.exabgp.commands import announce_line
from bgpspeaker.exabgp.supervisor import ExabgpSupervisor
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.routes import Attributes
from lab.netns import Frr, Lab, enter_netns


def _config(peers: int) -> Any:
    return parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [
                {"name": f"tor-{i}", "peerAddress": f"10.0.{i}.1", "peerASN": 64512, "sourceAddress": f"10.0.{i}.2"}
                for i in range(peers)
            ],
        }
    )


class SharedSupervisor(ExabgpSupervisor):
    """bgpspeaker's supervisor, but its ExaBGP config holds every peer's neighbor block."""

    def __init__(self, runtimes: list[PeerRuntime], **kwargs: Any) -> None:
        super().__init__(runtimes[0], **kwargs)
        self.all_runtimes = runtimes

    def _write_config(self, socket_path: Path, run_as: Any) -> Path:
        path = super()._write_config(socket_path, run_as)  # process block + the first neighbor
        others = [
            render.render_config(r, router_id=self.router_id, relay_command=["relay"]).split("}\n", 1)[1]
            for r in self.all_runtimes[1:]
        ]  # each text is the process block, then the neighbor block
        with path.open("a") as handle:
            handle.write("".join(others))
        return path


def _pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _lines(runtime: PeerRuntime, count: int) -> list[str]:
    nets = sorted(ipaddress.ip_network(p) for p in vips(count))
    hop = Attributes(next_hop=runtime.peer.source_address)
    return [announce_line(runtime.peer.peer_address, hop, nets[i : i + 500]) for i in range(0, len(nets), 500)]


def run(layout: str, peers: int, count: int) -> dict[str, Any]:
    """One layout, on a thread of its own (it enters the node's namespace, which goes with the lab)."""
    out: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            out.append(_run(layout, peers, count))
        except BaseException as error:  # noqa: BLE001  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def _run(layout: str, peers: int, count: int) -> dict[str, Any]:
    """One layout: start, feed, wait for every router, settle, measure."""
    with Lab("mn") as lab:
        node_ns = lab.netns("node")
        routers: list[Frr] = []
        for i in range(peers):
            ns = lab.netns(f"tor{i}")
            lab.link(ns, f"10.0.{i}.1/24", node_ns, f"10.0.{i}.2/24")
            routers.append(lab.frr(ns, _ROUTER.format(name=f"tor-{i}", i=i)))
        enter_netns(node_ns)
        config = _config(peers)
        runtimes = [PeerRuntime(peer) for peer in config.peers]
        router_id = ipaddress.IPv4Address("10.0.0.2")
        common = {"router_id": router_id, "on_ready": lambda: None}
        if layout == "shared":
            supervisors: list[ExabgpSupervisor] = [
                SharedSupervisor(runtimes, workdir=Path(tempfile.mkdtemp(prefix="bench-mn-")), **common)
            ]
            feeds = [(supervisors[0], [line for r in runtimes for line in _lines(r, count)])]
        else:
            supervisors = [
                ExabgpSupervisor(r, workdir=Path(tempfile.mkdtemp(prefix="bench-mn-")), **common) for r in runtimes
            ]
            feeds = [(s, _lines(r, count)) for s, r in zip(supervisors, runtimes, strict=True)]
        try:
            started = time.monotonic()
            for supervisor in supervisors:
                supervisor.start()

            def feed(supervisor: ExabgpSupervisor, lines: list[str]) -> None:
                supervisor.wait_ready(30)
                supervisor.execute(lines)

            threads = [threading.Thread(target=feed, args=f) for f in feeds]
            for thread in threads:
                thread.start()
            for i, frr in enumerate(routers):
                wait_received(frr, count, timeout_s=120, neighbor=f"10.0.{i}.2")
            seconds = time.monotonic() - started
            for thread in threads:
                thread.join()
            time.sleep(3.0)  # settled
            pids = [pid for s in supervisors if s.pid for pid in (s.pid, *descendants(s.pid))]
            return {
                "layout": layout,
                "peers": peers,
                "n": count,
                "all_received_s": seconds,
                "processes": len(pids),
                "rss_mb": sum(rss_mb(pid) for pid in pids),
                "pss_mb": sum(_pss_mb(pid) for pid in pids),
            }
        finally:
            for supervisor in supervisors:
                supervisor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--peers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    from bgpspeaker.logs import configure

    configure(log_format="console", level="warning")
    rows = []
    for peers in args.peers:
        rounds: dict[str, list[dict[str, Any]]] = {"per_peer": [], "shared": []}
        for _ in range(args.repeat):
            for layout, found in rounds.items():
                row = run(layout, peers, args.n)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
                found.append(row)
        for layout, found in rounds.items():
            rows.append(
                {
                    "layout": layout,
                    "peers": peers,
                    "n": args.n,
                    "rounds": found,
                    **{
                        f"{key}_median": statistics.median(r[key] for r in found)
                        for key in ("all_received_s", "rss_mb", "pss_mb")
                    },
                }
            )
    for row in rows:
        print(
            f"{row['layout']:<9} peers={row['peers']} all received {row['all_received_s_median']:.2f} s"
            f"  RSS {row['rss_mb_median']:.0f} MB  PSS {row['pss_mb_median']:.0f} MB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
