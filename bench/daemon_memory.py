"""The daemon's own memory at N services, in-process: where the Python objects go.

    .venv/bin/python -m bench.daemon_memory --n 10000 --peers 1 2 [--top 25] [--tree DIR]

Builds what the daemon holds after its first pass, without ExaBGP or an API server:
the daemon's imports, a ``ClusterStore`` filled with N Services and their
EndpointSlices (parsed by the daemon's own parse functions from the objects the API
server would send), a ``Reconciler`` whose sessions are stand-ins that acknowledge
every change, then one pass. ``tracemalloc`` measures each phase (traced bytes still
allocated at its end) and prints the allocation sites holding the most after the pass
(``--group lineno`` or ``traceback``). ``--tree DIR`` runs another source tree's
bgpspeaker (e.g. the tree before a change) with this same harness. Each configuration
runs in a fresh interpreter so one does not inherit the other's caches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(count: int, peers: int, *, top: int, group: str) -> dict[str, Any]:
    """One configuration in this interpreter (call once per process)."""
    import gc
    import ipaddress
    import tracemalloc

    if group != "none":  # tracemalloc's own tables cost RSS: "none" measures RSS alone
        tracemalloc.start(1 if group == "lineno" else 16)
    import bgpspeaker.cli  # noqa: F401  # what the daemon imports (the reconciler's modules are below it)
    from bgpspeaker.cluster.model import parse_endpoint_slice, parse_node, parse_service
    from bgpspeaker.cluster.store import ClusterStore
    from bgpspeaker.config import parse_config
    from bgpspeaker.logs import configure
    from bgpspeaker.peers import PeerRuntime
    from bgpspeaker.reconciler import Reconciler
    from lab.kubeapi import endpoint_slice, node, service

    configure(log_format="json", level=os.environ.get("DMEM_LOG_LEVEL", "warning"))  # stderr; info: the route log
    phases: dict[str, Any] = {}

    def mark(name: str) -> None:
        gc.collect()
        phases[name] = {
            "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),
            "rss_mb": round(_rss_mb(), 1),
        }

    mark("imports")

    from lab.standin import StandInExabgp  # a session that acknowledges every change

    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "routerID": "10.0.0.2",
            "peers": [{"name": f"tor-{i}", "peerAddress": f"10.0.{i}.1", "peerASN": 64512} for i in range(peers)],
        }
    )
    runtimes = {
        peer.name: PeerRuntime(peer, next_hops={4: ipaddress.ip_address(f"10.0.{i}.2")})
        for i, peer in enumerate(config.peers)
    }
    store = ClusterStore(on_change=lambda: None)
    base = ipaddress.IPv4Address("198.18.0.0")
    # Parsed from JSON text as the watcher's page is: fresh strings, as the daemon gets them.
    services = {}
    slices = {}
    for i in range(count):
        parsed = parse_service(json.loads(json.dumps(service("bench", f"s{i}", ips=[str(base + i)]))))
        services[parsed.key] = parsed
        raw = endpoint_slice("bench", f"s{i}-1", service_name=f"s{i}", endpoints=[("10.244.1.5", "node-b", True, True)])
        parsed_slice = parse_endpoint_slice(json.loads(json.dumps(raw)))
        slices[parsed_slice.key] = parsed_slice
    store.replace("nodes", {"node-a": parse_node(node("node-a")), "node-b": parse_node(node("node-b"))})
    store.replace("services", services)
    store.replace("endpointslices", slices)
    del services, slices, parsed, parsed_slice, raw
    mark("store")
    reconciler = Reconciler(
        config,
        runtimes,
        router_id=ipaddress.IPv4Address("10.0.0.2"),
        node_name="node-a",
        store=store,
        session_factory=StandInExabgp,
    )
    started = time.process_time()
    reconciler.reconcile_once()
    first_pass_s = time.process_time() - started
    mark("first_pass")
    acked = len(reconciler.sessions.acknowledged)
    store.upsert(  # one change, then an incremental pass: what the daemon holds in steady state
        "services", "bench/s0", parse_service(service("bench", "s0", ips=[str(base)], labels={"x": "y"}))
    )
    reconciler.reconcile_once()
    mark("second_pass")
    result = {
        "n": count,
        "peers": peers,
        "acknowledged": acked,
        "first_pass_cpu_s": round(first_pass_s, 3),
        "phases": phases,
        "sites": [],
    }
    if group == "none":
        return result
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    )
    sites = []
    if group == "owner":  # each allocation to the innermost line of bgpspeaker that led to it
        owners: dict[str, list[int]] = {}
        for trace in snapshot.traces:
            where = next(
                (
                    f"{f.filename.rsplit('/bgpspeaker/', 1)[1]}:{f.lineno}"
                    for f in reversed(trace.traceback)
                    if "/bgpspeaker/" in f.filename
                ),
                "other",
            )
            entry = owners.setdefault(where, [0, 0])
            entry[0] += trace.size
            entry[1] += 1
        for where, (size, number) in sorted(owners.items(), key=lambda item: -item[1][0])[:top]:
            sites.append({"mb": round(size / 2**20, 2), "count": number, "where": [where]})
    else:
        for stat in snapshot.statistics(group)[:top]:
            frames = [f"{frame.filename.replace(str(HERE) + '/', '')}:{frame.lineno}" for frame in stat.traceback]
            sites.append({"mb": round(stat.size / 2**20, 2), "count": stat.count, "where": frames[-6:]})
    return result | {"sites": sites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("lineno", "traceback", "owner", "none"), default="lineno")
    parser.add_argument("--tree", default="", help="another source tree whose bgpspeaker to measure")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.n, args.peers[0], top=args.top, group=args.group)))
        return
    tree = Path(args.tree).resolve() if args.tree else HERE
    for peers in args.peers:
        # The child imports bgpspeaker from ``tree`` (first on its path), this harness and lab from here.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
        command = [sys.executable, __file__, "--one", "--n", str(args.n), "--peers", str(peers)]
        command += ["--top", str(args.top), "--group", args.group]
        out = subprocess.run(
            command, env=env, cwd=HERE, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ).stdout
        result = json.loads(out)
        print(f"n={result['n']} peers={peers} acknowledged={result['acknowledged']} tree={tree}")
        print(f"  first pass CPU {result['first_pass_cpu_s']} s")
        for name, figures in result["phases"].items():
            print(f"  {name:<12} traced {figures['traced_mb']:7.2f} MB   RSS {figures['rss_mb']:6.1f} MB")
        for site in result["sites"]:
            print(f"  {site['mb']:6.2f} MB {site['count']:7d}  {' <- '.join(reversed(site['where']))}")


if __name__ == "__main__":
    main()
