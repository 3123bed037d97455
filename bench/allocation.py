"""Address allocation: N LoadBalancer Services without addresses -> all N allocated by ``bgpspeaker controller``.

    .venv/bin/python -m bench.allocation --n 10000

No root needed (the test API server on loopback). The Services exist before the
controller starts (a fresh install on a cluster full of pending Services); the clock
runs from the process start until the API server holds an address in every Service's
status. Also: the controller's peak RSS (VmHWM), and one Service created while it runs
-> its address in the status (median of 20).

Anchor, same run, same API server: the N status writes alone, sent by this process
through the same client (``ApiPaths``, 8 threads, merge patches with the
resourceVersion), with no controller: what the writes cost by themselves, so the
controller's figure reads as a ratio to it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import rss_mb
from lab.controller import ControllerProcess
from lab.kubeapi import FakeKubeApi, service
from lab.netns import wait_until

POOL = "198.18.0.0/15"
"""RFC 2544 benchmarking range: 131,072 addresses."""


def _config() -> str:
    return json.dumps(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "r1", "peerAddress": "10.0.0.1", "peerASN": 64512}],
            "addressPools": [{"name": "bench", "addresses": [POOL]}],
        }
    )


def _has_ip(obj: dict[str, Any]) -> bool:
    return bool(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))


def _seed(api: FakeKubeApi, count: int) -> None:
    for index in range(count):
        api.apply(service("bench", f"s{index:05d}"))


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def controller_row(count: int) -> dict[str, Any]:
    api = FakeKubeApi(bookmark_interval_s=30.0).start()
    replica: ControllerProcess | None = None
    try:
        _seed(api, count)
        workdir = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
        replica = ControllerProcess(name="bench", workdir=workdir, config=_config(), kubeconfig=api.kubeconfig())
        started = time.monotonic()
        replica.start()
        wait_until(
            lambda: api.count("services", _has_ip) == count,
            timeout_s=300,
            desc=f"{count} allocated",
            interval_s=0.05,
        )
        elapsed = time.monotonic() - started
        peak, now = _peak_rss_mb(replica.pid), rss_mb(replica.pid)
        owners: dict[str, int] = {}
        for obj in api.objects("services"):
            for entry in obj["status"]["loadBalancer"]["ingress"]:
                owners[entry["ip"]] = owners.get(entry["ip"], 0) + 1
        single = []
        for trial in range(20):
            name = f"live{trial}"
            created = time.monotonic()
            api.apply(service("bench", name))
            wait_until(
                lambda n=name: _has_ip(api.get("services", f"bench/{n}") or {}),
                timeout_s=10,
                desc=name,
                interval_s=0.002,
            )
            single.append((time.monotonic() - created) * 1000)
        return {
            "who": "bgpspeaker controller",
            "n": count,
            "all_allocated_s": round(elapsed, 2),
            "peak_rss_mb": round(peak, 1),
            "rss_after_mb": round(now, 1),
            "addresses_with_two_owners": sum(1 for n in owners.values() if n > 1),
            "one_service_ms_median": round(statistics.median(single), 1),
            "one_service_ms_max": round(max(single), 1),
        }
    finally:
        if replica is not None:
            replica.close()
        api.stop()


def anchor_row(count: int) -> dict[str, Any]:
    """The N status writes alone, through the same client, 8 at a time."""
    from bgpspeaker.cluster.api import ApiPaths, api_client, resource_path

    api = FakeKubeApi(bookmark_interval_s=30.0).start()
    try:
        _seed(api, count)
        kubeconfig = Path(tempfile.mkdtemp(prefix="bench-alloc-")) / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        paths = ApiPaths(api_client(str(kubeconfig)))
        objects = api.objects("services")
        base = ipaddress.ip_network(POOL).network_address

        def write(item: tuple[int, dict[str, Any]]) -> None:
            index, obj = item
            meta = obj["metadata"]
            paths.call(
                "PATCH",
                resource_path("/api/v1", "services", namespace=meta["namespace"], name=meta["name"]) + "/status",
                body={
                    "metadata": {"resourceVersion": meta["resourceVersion"]},
                    "status": {"loadBalancer": {"ingress": [{"ip": str(base + index), "ipMode": "VIP"}]}},
                },
                content_type="application/merge-patch+json",
            )

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(write, enumerate(objects)))
        elapsed = time.monotonic() - started
        assert api.count("services", _has_ip) == count
        return {"who": "anchor: the writes alone", "n": count, "all_allocated_s": round(elapsed, 2)}
    finally:
        api.stop()


def rows(count: int) -> list[dict[str, Any]]:
    return [controller_row(count), anchor_row(count)]


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The section of the suite's table."""
    if not rows:
        return []
    lines = ["", "Allocation (s): N pending Services -> an address in every status (test API server, loopback)"]
    for row in rows:
        notes = ""
        if "peak_rss_mb" in row:
            notes = (
                f"peak RSS {row['peak_rss_mb']:.0f} MB, two owners {row['addresses_with_two_owners']},"
                f" one more Service {row['one_service_ms_median']:.0f} ms (median of 20)"
            )
        lines.append(f"  {row['who']:<32} {row['n']:>6} {row['all_allocated_s']:>9.2f}   {notes}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10000])
    args = parser.parse_args()
    for count in args.n:
        for row in rows(count):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
