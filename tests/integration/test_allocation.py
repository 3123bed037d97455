"""Address allocation end to end: a Service created without an address is allocated by
``bgpspeaker controller`` and announced by the speaker, best in FRR (real processes)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.common import BestpathLog
from lab.controller import ControllerProcess
from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, wait_until
from lab.topology import CONFIG_DIR, SingleNode, single_node
from tests.integration.conftest import require_prerequisites

POOLS = """
addressPools:
  - name: public
    addresses: ["192.0.2.32/28"]
  - name: private
    addresses: ["10.96.0.0/30"]
    autoAssign: false
advertisements:
  - name: public-only
    addressPools: [public]
controller:
  leaseDuration: 3s
  renewDeadline: 2s
  retryPeriod: 1s
"""


@pytest.fixture
def allocating() -> Iterator[tuple[SingleNode, ControllerProcess]]:
    require_prerequisites()
    config = (CONFIG_DIR / "speaker.yaml").read_text() + POOLS
    with Lab() as lab:
        topology = single_node(lab, speaker_config=config)
        controller = ControllerProcess(
            name="controller-0",
            workdir=lab.root / "controller",
            config=config,
            kubeconfig=topology.api.kubeconfig(),
            netns=topology.speaker.netns,
        )
        try:
            yield topology, controller
        finally:
            controller.close()
            topology.close()


def test_service_without_an_ip_ends_up_best_in_frr(allocating: tuple[SingleNode, ControllerProcess]) -> None:
    """Created with no address: the controller writes 192.0.2.32 (the pool's lowest), the speaker
    announces it, FRR selects it; a Service from the pool no advertisement selects stays out of FRR."""
    topology, controller = allocating
    api, frr = topology.api, topology.frr
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")
    controller.start()
    controller.wait_event("services_reread", timeout_s=20)  # leading, every Service read
    bestpath = BestpathLog(frr, ["192.0.2.32/32", "192.0.2.33/32", "192.0.2.40/32", "10.96.0.0/32"])

    api.apply(endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)]))
    started = time.time()
    api.apply(service("default", "web"))
    best_at = bestpath.wait("192.0.2.32/32", best=True, after=started, timeout_s=20)
    latency_ms = (best_at - started) * 1000

    obj = api.get("services", "default/web") or {}
    assert obj["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.32", "ipMode": "VIP"}]
    path = frr.best_path("192.0.2.32/32")
    assert path is not None and [hop["ip"] for hop in path["nexthops"]] == ["10.0.0.2"]
    # Anchor, same run: a Service created with its address already in the status (the speaker alone).
    api.apply(endpoint_slice("default", "pre-1", service_name="pre", endpoints=[("10.244.1.8", "node-b", True, True)]))
    anchor_started = time.time()
    api.apply(service("default", "pre", ips=["192.0.2.40"]))
    anchor_ms = (bestpath.wait("192.0.2.40/32", best=True, after=anchor_started, timeout_s=20) - anchor_started) * 1000
    print(
        f"\nService created without an IP -> best in FRR: {latency_ms:.0f} ms (goal < 1000 ms);"
        f" anchor, created with its IP: {anchor_ms:.0f} ms"
    )
    assert latency_ms < 5000, f"{latency_ms:.0f} ms"  # the goal is 1 s; a shared 2-core machine gets slack

    # Intermediate state: the private Service is allocated but no advertisement selects its pool.
    api.apply(endpoint_slice("default", "db-1", service_name="db", endpoints=[("10.244.1.6", "node-b", True, True)]))
    api.apply(service("default", "db", annotations={"bgpspeaker.io/address-pool": "private"}))
    wait_until(
        lambda: ((api.get("services", "default/db") or {}).get("status") or {}).get("loadBalancer", {}).get("ingress"),
        timeout_s=10,
        desc="db allocated from private",
    )
    # A later Service announced means the speaker's pass saw db's address too (each pass takes all).
    api.apply(endpoint_slice("default", "api-1", service_name="api", endpoints=[("10.244.1.7", "node-b", True, True)]))
    api.apply(service("default", "api"))
    bestpath.wait("192.0.2.33/32", best=True, after=started, timeout_s=20)
    assert frr.best_path("10.96.0.0/32") is None
    assert [at for at, prefix, best in bestpath.read() if prefix == "10.96.0.0/32" and best] == []
