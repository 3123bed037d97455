"""The initial lists alone: a fresh process lists N Services and N EndpointSlices (and its
Node) through the watchers, against the test API server over HTTP; its CPU and wall time.

    .venv/bin/python -m bench.lists --n 10000 --repeat 5 --before /work/before
    .venv/bin/python -m bench.lists --n 10000 --profile /tmp/lists.prof

The API server runs in this process (threads); each measured list runs in a child process
whose working directory is the tree under test (``python -c`` puts it first on sys.path),
so its CPU is the client's alone: imports excluded, from the watchers' start to every kind
listed, the daemon's ``gc.freeze()`` done first as in ``bgpspeaker.cli``; its RSS once
listed and its peak RSS (imports included). The trees are
alternated (A, B, A, B, ...) and compared by medians.

``--profile FILE``: cProfile of the Services and EndpointSlices lists of this tree, run in
this process one after the other on the calling thread (a background page fetcher, if the
tree has one, is not in the profile).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.common import seed_services
from bench.startup import HERE, compile_tree
from lab.kubeapi import FakeKubeApi, node

_CHILD = """
import gc, json, sys, threading, time
from bgpspeaker.cluster.api import api_client
from bgpspeaker.cluster.store import ClusterStore
from bgpspeaker.cluster.watch import WatchSettings, make_watchers
listed = threading.Event()
store = None
def changed():
    if store is not None and store.synced:
        listed.set()
store = ClusterStore(on_change=changed)
stop = threading.Event()
watchers = make_watchers(api_client(sys.argv[1]), store, node_name="node-a", settings=WatchSettings(), stop=stop)
gc.freeze()
cpu, wall = time.process_time(), time.monotonic()
for watcher in watchers:
    watcher.thread.start()
if not listed.wait(120):
    sys.exit("not listed in 120 s")
cpu, wall = time.process_time() - cpu, time.monotonic() - wall
import resource
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rss_mb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
snapshot = store.snapshot()
stop.set()
result = json.dumps({"cpu_s": cpu, "wall_s": wall, "rss_mb": rss_mb, "peak_rss_mb": peak_mb,
                  "services": len(snapshot.services),
                  "slices": sum(len(b) for b in snapshot.slices_by_service.values())})
open(sys.argv[2], "w").write(result)
"""


def list_once(tree: Path, kubeconfig: Path) -> dict[str, Any]:
    """One child process in ``tree`` lists everything; its CPU and wall seconds."""
    out = kubeconfig.parent / "result.json"
    subprocess.run([sys.executable, "-c", _CHILD, str(kubeconfig), str(out)], cwd=tree, check=True, capture_output=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def profile(api: FakeKubeApi, kubeconfig: Path, out: Path) -> None:
    """cProfile of this tree's Services and EndpointSlices lists, on this thread."""
    from bgpspeaker.cluster.api import api_client
    from bgpspeaker.cluster.store import ClusterStore
    from bgpspeaker.cluster.watch import WatchSettings, make_watchers

    store = ClusterStore(on_change=lambda: None)
    watchers = make_watchers(
        api_client(str(kubeconfig)), store, node_name="node-a", settings=WatchSettings(), stop=threading.Event()
    )
    listed = [w for w in watchers if w.kind in ("services", "endpointslices")]
    profiler = cProfile.Profile()
    profiler.enable()
    for watcher in listed:
        watcher._list()  # the list alone, no watch
    profiler.disable()
    profiler.dump_stats(str(out))
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="Services (and as many EndpointSlices)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None, help="another tree, alternated with this one")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of this tree's lists here")
    args = parser.parse_args()
    api = FakeKubeApi(bookmark_interval_s=30.0)
    api.apply(node("node-a"))
    seed_services(api, args.n)
    api.start()
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        if args.profile is not None:
            profile(api, kubeconfig, args.profile)
            return
        trees = {"this": HERE} | ({"before": args.before} if args.before is not None else {})
        for tree in trees.values():
            compile_tree(tree)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for round_ in range(args.repeat):
            for name, tree in trees.items():
                result = list_once(tree, kubeconfig)
                assert result["services"] == args.n and result["slices"] == args.n, result
                runs[name].append(result)
                print(f"round {round_ + 1} {name:<7} cpu {result['cpu_s']:.3f} s  wall {result['wall_s']:.3f} s")
        print(f"n={args.n} ({2 * args.n} objects), {args.repeat} alternated rounds, load {os.getloadavg()}")
        for metric in ("cpu_s", "wall_s", "rss_mb", "peak_rss_mb"):
            medians = {}
            for name in trees:
                values = [r[metric] for r in runs[name]]
                medians[name] = statistics.median(values)
                print(f"  {metric:<7} {name:<7} median {medians[name]:.3f}  range {min(values):.3f}-{max(values):.3f}")
            if "before" in medians:
                print(f"  {metric:<7} ratio this/before {medians['this'] / medians['before']:.2f}")
    api.stop()


if __name__ == "__main__":
    main()
