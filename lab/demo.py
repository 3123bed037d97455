"""The demo: FRR in a namespace, the real bgpspeaker in another, a small example cluster.

    python -m lab.demo [--keep]

Three LoadBalancer services, seen from node "node-a":
  default/web      192.0.2.10  Cluster, endpoints on node-b      -> announced
  default/ingress  192.0.2.20  Local, an endpoint on node-a      -> announced
  default/batch    192.0.2.30  Local, endpoints only on node-b   -> not announced (no_local_endpoints)
then ``bgpspeaker controller`` allocates default/shop, created with no address, from the
address pool ``demo`` (192.0.2.64/28) and the speaker announces it. It prints FRR's BGP
table and the speaker's route log, then (unless --keep) stops everything it started.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lab.controller import ControllerProcess
from lab.kubeapi import endpoint_slice, load_seed, service
from lab.netns import Lab, run_in, wait_until
from lab.topology import CONFIG_DIR, SingleNode, single_node

SEED = Path(__file__).resolve().parents[1] / "deploy" / "compose" / "cluster.json"
POOL = """
addressPools:
  - name: demo
    addresses: ["192.0.2.64/28"]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
    args = parser.parse_args()

    with Lab("demo") as lab:
        config = (CONFIG_DIR / "speaker.yaml").read_text() + POOL  # one file for both, as deploy/ does
        topo = single_node(lab, speaker_config=config)
        controller = ControllerProcess(
            name="controller-0",
            workdir=lab.root / "controller",
            config=config,
            kubeconfig=topo.api.kubeconfig(),
            netns=topo.speaker.netns,
        )
        return _show(topo, controller, keep=args.keep)


def _show(topo: SingleNode, controller: ControllerProcess, *, keep: bool) -> int:
    frr, api, speaker = topo.frr, topo.api, topo.speaker
    try:
        for obj in load_seed(str(SEED)):  # the same example cluster as docker-compose.yml
            api.apply(obj)
        speaker.start()  # the DaemonSet's addresses: metrics :9479, status 127.0.0.1:9480
        tor, node_ns = topo.lab.namespaces
        print(f"FRR (AS 64512) in netns {tor}; bgpspeaker (AS 64513, node-a) in netns {node_ns}", flush=True)
        started = time.monotonic()
        wait_until(
            lambda: {"192.0.2.10/32", "192.0.2.20/32"} <= set(frr.best_paths()),
            timeout_s=30,
            desc=f"VIPs best in FRR; speaker log:\n{speaker.tail()}",
        )
        print(f"VIPs best in FRR {time.monotonic() - started:.1f} s after the speaker started.\n")
        print("$ vtysh -c 'show bgp ipv4 unicast'")
        print(frr.vtysh("show bgp ipv4 unicast"))
        print("speaker log (route events):")
        for event in speaker.events("route_announced"):
            print(f"  route_announced {event['prefix']} services={event['services']} reason={event['reason']}")
        assert "192.0.2.30/32" not in frr.best_paths()
        print("  192.0.2.30/32 (default/batch) not announced: Local policy, no endpoint on node-a")

        controller.start()
        shop_endpoints = [("10.244.1.9", "node-b", True, True)]
        api.apply(endpoint_slice("default", "shop-1", service_name="shop", endpoints=shop_endpoints))
        created = time.monotonic()
        api.apply(service("default", "shop"))  # no address: the controller's to give
        wait_until(
            lambda: "192.0.2.64/32" in frr.best_paths(),
            timeout_s=30,
            desc=f"default/shop allocated and best in FRR; controller log:\n{controller.tail()}",
        )
        ingress = (api.get("services", "default/shop") or {})["status"]["loadBalancer"]["ingress"]
        print(
            f"\ndefault/shop, created with no address: the controller gave it {ingress[0]['ip']} (pool demo),"
            f" best in FRR {time.monotonic() - created:.1f} s after the Service was created."
        )
        cli = [sys.executable, "-m", "bgpspeaker.cli"]
        for title, argv in (
            ("bgpspeaker status", [*cli, "status"]),
            (
                "bgpspeaker explain default/batch",
                [*cli, "explain", "default/batch", "--kubeconfig", str(speaker.kubeconfig_path)],
            ),
        ):  # fmt: skip
            result = run_in(speaker.netns, *argv)
            print(f"\n$ {title}\n{result.stdout.rstrip() or result.stderr.rstrip()}")
        if keep:
            print(f"\nRunning. Try: vtysh --vty_socket {frr.workdir} -c 'show bgp summary'   (Ctrl-C stops)")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        controller.close()
        if speaker.proc is not None:
            code, took_s = speaker.terminate()
            print(f"\nspeaker stopped (exit {code}, {took_s:.1f} s); routes left in FRR: {len(frr.best_paths())}")
        topo.close()


if __name__ == "__main__":
    sys.exit(main())
