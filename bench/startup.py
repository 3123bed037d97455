"""Cold start against its anchor, repeated and alternated; memory with several peers.

    sudo .venv/bin/python -m bench.startup --n 1000 10000 --repeat 3
    sudo .venv/bin/python -m bench.startup --memory --n 10000 --peers 1 2 4

Cold start: process start -> all N VIPs received by FRR (then all best, checked once),
bgpspeaker and its anchor (ExaBGP through our launcher with an explicit next hop, fed
the same routes in one bulk as soon as its API connects) run one after the other,
``--repeat`` times, so every ratio compares two runs minutes apart on the same loaded
machine; the spread of the ratios is the run-to-run noise. Also read from the
speaker's own log: when the lists were done, when ExaBGP started, the first pass.

Memory: the speaker with ``--peers`` routers (one FRR each, its own link), N services,
all N best at every router; RSS of the daemon and of every child (ExaBGP, the relays
ExaBGP starts, the BFD child when a peer uses BFD), summed. With ``--before DIR`` the two
trees alternate ``--repeat`` times per row (medians and ranges). The ``relay`` kind is the
relay processes' RSS and ``relay_processes`` their count: 0 when ExaBGP runs the relay
in-process (the launcher's ``--inprocess-relay``), one per peer as released.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import ipaddress
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, raw_exabgp, rss_mb, seed_services, vips, wait_received
from bgpspeaker.exabgp.commands import announce_line
from bgpspeaker.routes import Attributes
from lab.kubeapi import FakeKubeApi, node
from lab.netns import Frr, Lab, wait_until
from lab.speaker import SpeakerProcess
from lab.topology import single_node

HERE = Path(__file__).resolve().parent.parent


def compile_tree(tree: Path) -> None:
    """Byte-compile the package in ``tree``, as ``pip install`` does in the image (with
    PYTHONDONTWRITEBYTECODE set, every start would compile bgpspeaker's source again:
    ~80 ms of CPU in the daemon, measured, and more in each ExaBGP launcher)."""
    compileall.compile_dir(str(tree / "bgpspeaker"), quiet=1)


def speaker_cold_start(count: int, tree: Path = HERE) -> dict[str, Any]:
    """bgpspeaker (the package in ``tree``) with ``count`` services waiting in the API
    server: seconds to all received."""
    with Lab("cold") as lab:
        topo = single_node(lab, bookmark_interval_s=5.0)
        try:
            seed_services(topo.api, count)
            topo.speaker.log_level = "info"
            started_wall = time.time()
            started = time.monotonic()
            os.chdir(tree)  # `python -m` finds the package in its working directory first
            try:
                topo.speaker.start()
            finally:
                os.chdir(HERE)
            done = wait_received(topo.frr, count, timeout_s=120)
            speaker_cpu_s = cpu_seconds(topo.speaker.pid)  # the daemon's own CPU: less noisy than wall time
            wait_until(  # after the clock stopped: the pass's own end, for the phases
                lambda: any(e.get("commands") for e in topo.speaker.events("reconcile_finished")),
                timeout_s=30,
                desc="the first pass that sent routes",
            )
            phases = _phases(topo.speaker, started_wall)
            return {"n": count, "cold_start_s": done - started, "speaker_cpu_s": speaker_cpu_s, **phases}
        finally:
            topo.close()


def _phases(speaker: SpeakerProcess, started_wall: float) -> dict[str, float]:
    """Seconds from the process start to some of the speaker's own log events."""
    wanted = {
        "watch_listed": "listed_s",
        "end_of_rib_sent": "eor_s",
        "exabgp_started": "exabgp_started_s",
        "exabgp_api_connected": "api_connected_s",
        "peer_up": "peer_up_s",
    }
    out: dict[str, float] = {}
    for record in speaker.events():
        event, at = record.get("event", ""), record.get("timestamp")
        if not isinstance(at, str):
            continue
        seconds = datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() - started_wall
        key = wanted.get(event)
        if key is not None:
            out[key] = max(out.get(key, 0.0), seconds)  # the last of the three lists
        elif event == "reconcile_finished" and record.get("commands") and "first_pass_end_s" not in out:
            out["first_pass_end_s"] = seconds  # the pass that sent the routes (its route log included)
    return out


def anchor_cold_start(count: int) -> dict[str, Any]:
    """ExaBGP through our launcher, explicit next hop, the bulk written when its API connects."""
    with Lab("raw") as lab:
        topo = single_node(lab)
        topo.api.stop()
        exabgp = raw_exabgp(lab.namespaces[1])
        peer = exabgp.runtime.peer.peer_address
        nets = sorted(ipaddress.ip_network(p) for p in vips(count))
        hop = Attributes(next_hop=ipaddress.ip_address("10.0.0.2"))
        try:
            started = time.monotonic()
            exabgp.start()
            exabgp.wait_ready(30)
            exabgp.execute([announce_line(peer, hop, nets[i : i + 500]) for i in range(0, len(nets), 500)])
            done = wait_received(topo.frr, count, timeout_s=120)
            return {"n": count, "cold_start_s": done - started}
        finally:
            exabgp.stop()
            topo.close()


def cold_start_rows(counts: list[int], repeat: int, before: Path | None = None) -> list[dict[str, Any]]:
    """bgpspeaker (and the tree ``before``, if given) and the anchor alternated ``repeat``
    times at each N; the ratios to the anchor of the same round and their spread."""
    trees = {"bgpspeaker": HERE} | ({"before": before} if before is not None else {})
    for tree in trees.values():
        compile_tree(tree)
    rows = []
    for count in counts:
        rounds = []
        for _ in range(repeat):
            result: dict[str, Any] = {name: speaker_cold_start(count, tree) for name, tree in trees.items()}
            result["anchor"] = anchor_cold_start(count)
            anchor_s = result["anchor"]["cold_start_s"]
            for name in trees:
                result[name]["ratio"] = result[name]["cold_start_s"] / anchor_s
            rounds.append(result)
            print(f"n={count} anchor {anchor_s:.2f} s", flush=True)
            for name in trees:
                shown = {k: round(v, 2) for k, v in result[name].items() if k != "n"}
                print(f"  {name:<10} {json.dumps(shown)}", flush=True)
        row: dict[str, Any] = {"n": count, "rounds": rounds}
        for name in [*trees, "anchor"]:
            seconds = [r[name]["cold_start_s"] for r in rounds]
            row[name] = {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}
            if name != "anchor":
                ratios = [r[name]["ratio"] for r in rounds]
                row[name] |= {
                    "ratio_median": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
        rows.append(row)
    return rows


_ROUTER = """frr defaults datacenter
hostname {name}
log stdout informational
router bgp 64512
 bgp router-id 10.0.{i}.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.0.{i}.2 remote-as 64513
 neighbor 10.0.{i}.2 timers 1 3
 neighbor 10.0.{i}.2 timers connect 1
 address-family ipv4 unicast
  neighbor 10.0.{i}.2 activate
 exit-address-family
"""


def _speaker_config(peers: int, *, bfd: bool = False) -> str:
    lines = ["apiVersion: bgpspeaker.io/v1alpha1", "kind: SpeakerConfig", "myASN: 64513", "routerID: 10.0.0.2"]
    if bfd:  # the routers run no bfdd: the sessions stay Down, the child's footprint is what counts here
        lines += ["bfdProfiles:", "  - name: fast", "    receiveInterval: 300ms", "    transmitInterval: 300ms"]
    lines.append("peers:")
    for i in range(peers):
        lines += [f"  - name: tor-{i}", f"    peerAddress: 10.0.{i}.1", "    peerASN: 64512"]
        lines += ["    bfdProfile: fast"] if bfd else []
    return "\n".join(lines) + "\n"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (the interpreter, libraries) divided among the
    processes that map them; summed over a pod, about what its cgroup is charged."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _comm(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(part.decode(errors="replace") for part in cmdline if part)
    for marker, kind in (("relay.py", "relay"), ("exabgp.launcher", "exabgp"), ("bfd", "bfd"), ("netinfo", "probe")):
        if marker in text:
            return kind
    return text[:40]


def memory_row(count: int, peers: int, *, bfd: bool = False, tree: Path = HERE) -> dict[str, Any]:
    """RSS (and PSS) of the speaker (the package in ``tree``) and every process below it with
    ``peers`` routers and ``count`` services; ``bfd``: every peer names a BFD profile (the BFD
    child runs)."""
    with Lab("mem") as lab:
        node_ns = lab.netns("node")
        routers: list[Frr] = []
        for i in range(peers):
            ns = lab.netns(f"tor{i}")
            lab.link(ns, f"10.0.{i}.1/24", node_ns, f"10.0.{i}.2/24")
            routers.append(lab.frr(ns, _ROUTER.format(name=f"tor-{i}", i=i)))
        api = FakeKubeApi(netns=node_ns, bookmark_interval_s=5.0).start()
        speaker = SpeakerProcess(
            netns=node_ns,
            workdir=lab.root / "speaker",
            config=_speaker_config(peers, bfd=bfd),
            kubeconfig=api.kubeconfig(),
            node_name="node-a",
            log_level="info",
        )
        try:
            api.apply(node("node-a"))
            api.apply(node("node-b"))
            seed_services(api, count)
            started = time.monotonic()
            os.chdir(tree)  # `python -m` finds the package in its working directory first
            try:
                speaker.start()
            finally:
                os.chdir(HERE)
            for i, frr in enumerate(routers):
                wait_received(frr, count, timeout_s=180, neighbor=f"10.0.{i}.2")
            cold_s = time.monotonic() - started
            time.sleep(5.0)  # the start-up tail (route log, malloc_trim) settles: a steady figure
            parts = {speaker.pid: "speaker"} | {pid: _comm(pid) for pid in descendants(speaker.pid)}
            sizes = {pid: rss_mb(pid) for pid in parts}
            shares = {pid: pss_mb(pid) for pid in parts}
            by_kind: dict[str, float] = {"relay": 0.0}  # the column stays when no relay runs
            pss_by_kind: dict[str, float] = {"relay": 0.0}
            for pid, kind in parts.items():
                by_kind[kind] = round(by_kind.get(kind, 0.0) + sizes[pid], 1)
                pss_by_kind[kind] = round(pss_by_kind.get(kind, 0.0) + shares[pid], 1)
            return {
                "n": count,
                "peers": peers,
                "bfd": bfd,
                "cold_start_s": cold_s,
                "total_rss_mb": sum(sizes.values()),
                "total_pss_mb": sum(shares.values()),
                "by_kind_rss_mb": by_kind,
                "by_kind_pss_mb": pss_by_kind,
                "processes": len(parts),
                "relay_processes": sum(1 for kind in parts.values() if kind == "relay"),
            }
        finally:
            speaker.close()
            api.stop()


def memory_rows(
    counts: list[int], peer_counts: list[int], *, bfd: bool, before: Path | None, repeat: int
) -> list[dict[str, Any]]:
    """``memory_row`` for each N and peer count; with ``before``, this tree and that one
    alternated ``repeat`` times (A, B, A, B...), then the speaker's RSS and PSS medians
    and ranges per tree."""
    trees = {"bgpspeaker": HERE} | ({"before": before} if before is not None else {})
    for tree in trees.values():
        compile_tree(tree)
    rows: list[dict[str, Any]] = []
    for count in counts:
        for peers in peer_counts:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for _ in range(repeat):
                for name, tree in trees.items():
                    row = memory_row(count, peers, bfd=bfd, tree=tree) | {"tree": name}
                    print(json.dumps(row), flush=True)
                    runs[name].append(row)
                    rows.append(row)
            if before is None:
                continue
            for name, found in runs.items():
                figures = {
                    "speaker RSS": [r["by_kind_rss_mb"]["speaker"] for r in found],
                    "speaker PSS": [r["by_kind_pss_mb"]["speaker"] for r in found],
                    "total RSS": [r["total_rss_mb"] for r in found],
                    "total PSS": [r["total_pss_mb"] for r in found],
                }
                shown = "  ".join(
                    f"{what} {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for what, v in figures.items()
                )
                print(f"n={count} peers={peers} {name:<10} {shown}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--bfd", action="store_true", help="memory: every peer names a BFD profile")
    parser.add_argument("--json", default="")
    parser.add_argument("--before", default="", help="another source tree (its bgpspeaker/) to alternate with")
    args = parser.parse_args()
    from bgpspeaker.logs import configure

    configure(log_format="console", level="warning")
    if args.memory:
        result: Any = memory_rows(
            args.n,
            args.peers,
            bfd=args.bfd,
            before=Path(args.before) if args.before else None,
            repeat=args.repeat if args.before else 1,
        )
    else:
        result = cold_start_rows(args.n, args.repeat, Path(args.before) if args.before else None)
        for row in result:
            anchor = row["anchor"]
            print(f"n={row['n']}: anchor {anchor['median_s']:.2f} s ({anchor['min_s']:.2f}-{anchor['max_s']:.2f})")
            for name, figures in row.items():
                if name in ("n", "rounds", "anchor"):
                    continue
                print(
                    f"  {name:<10} {figures['median_s']:.2f} s ({figures['min_s']:.2f}-{figures['max_s']:.2f}),"
                    f" ratio {figures['ratio_median']:.2f} ({figures['ratio_min']:.2f}-{figures['ratio_max']:.2f})"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
