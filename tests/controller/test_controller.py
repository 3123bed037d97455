"""``bgpspeaker controller`` as a process against the test API server over real HTTP (loopback, no root).

Each test starts real controller processes (the real ``kubernetes`` client) against a
FakeKubeApi, drives Services through it, and reads the results back from it: status,
Events, the Lease, and the writes it received.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgpspeaker.cluster.access import controller_access
from lab.controller import ControllerProcess
from lab.kubeapi import FakeKubeApi, service
from lab.netns import wait_until

LEASE = "bgpspeaker-system/bgpspeaker-controller"
FAST_LEASE = {"leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "1s"}


def config_text(pools: list[dict[str, Any]], controller: dict[str, str] | None = None) -> str:
    import json

    document = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [{"name": "r1", "peerAddress": "10.0.0.1", "peerASN": 64512}],
        "addressPools": pools,
        "controller": controller or FAST_LEASE,
    }
    return json.dumps(document)  # JSON is YAML


class Cluster:
    """The API server and the controller replicas of one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.api = FakeKubeApi().start()
        self.tmp_path = tmp_path
        self.replicas: list[ControllerProcess] = []

    def controller(self, name: str, config: str) -> ControllerProcess:
        replica = ControllerProcess(
            name=name, workdir=self.tmp_path / "run", config=config, kubeconfig=self.api.kubeconfig()
        )
        replica.config_path.write_text(config)
        self.replicas.append(replica.start())
        return replica

    def ips(self, name: str, namespace: str = "default") -> list[str]:
        obj = self.api.get("services", f"{namespace}/{name}") or {}
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [entry["ip"] for entry in ingress]

    def all_ips(self) -> dict[str, list[str]]:
        return {
            obj["metadata"]["name"]: self.ips(obj["metadata"]["name"], obj["metadata"]["namespace"])
            for obj in self.api.objects("services")
        }

    def events(self, name: str, reason: str) -> list[str]:
        return [
            event["message"]
            for event in self.api.objects("events")
            if event["involvedObject"]["name"] == name and event["reason"] == reason
        ]

    def holder(self) -> str | None:
        lease = self.api.get("leases", LEASE)
        return (lease or {}).get("spec", {}).get("holderIdentity")

    def status_writes(self) -> int:
        return sum(1 for method, path in self.api.requests if method in ("PUT", "PATCH") and "/services/" in path)

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()
        self.api.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    built = Cluster(tmp_path)
    try:
        yield built
    finally:
        built.close()


PUBLIC = {"name": "public", "addresses": ["192.0.2.0/30"]}


def test_exhaustion_then_a_freed_address_is_reused(cluster: Cluster) -> None:
    """Four addresses, five Services: the fifth fails with an Event, and gets the address a deleted one frees."""
    cluster.controller("c1", config_text([PUBLIC]))
    for index in range(5):
        cluster.api.apply(service("default", f"s{index}"))
    want = {f"s{i}": [f"192.0.2.{i}"] for i in range(4)} | {"s4": []}
    wait_until(lambda: cluster.all_ips() == want, timeout_s=20, desc=f"four allocated: {want}, got {cluster.all_ips()}")
    wait_until(lambda: cluster.events("s4", "AllocationFailed"), timeout_s=10, desc="AllocationFailed on s4")
    assert cluster.events("s4", "AllocationFailed") == ["pool_exhausted: no free IPv4 address in pool public"]
    cluster.api.delete("services", "default/s2")
    wait_until(lambda: cluster.ips("s4") == ["192.0.2.2"], timeout_s=10, desc=f"s4 gets 192.0.2.2; {cluster.all_ips()}")


def test_requested_ip_honoured_and_outside_refused(cluster: Cluster) -> None:
    """loadBalancerIP in a pool is given; one outside every pool is refused with an Event and no status."""
    cluster.controller("c1", config_text([PUBLIC]))
    wanted = service("default", "wanted")
    wanted["spec"]["loadBalancerIP"] = "192.0.2.3"
    outside = service("default", "outside", annotations={"metallb.universe.tf/loadBalancerIPs": "198.51.100.7"})
    cluster.api.apply(wanted)
    cluster.api.apply(outside)
    wait_until(lambda: cluster.ips("wanted") == ["192.0.2.3"], timeout_s=20, desc=f"wanted; {cluster.all_ips()}")
    wait_until(lambda: cluster.events("outside", "AllocationFailed"), timeout_s=10, desc="AllocationFailed on outside")
    assert cluster.events("outside", "AllocationFailed") == [
        "requested_ip_not_in_pool: requested 198.51.100.7 is in no address pool"
    ]
    assert cluster.ips("outside") == []


def test_pool_by_annotation_and_auto_assign_false(cluster: Cluster) -> None:
    """A pool with autoAssign false serves only the Service that names it."""
    private = {"name": "private", "addresses": ["10.9.0.10-10.9.0.11"], "autoAssign": False}
    cluster.controller("c1", config_text([private, PUBLIC]))
    cluster.api.apply(service("default", "plain"))
    cluster.api.apply(service("default", "pinned", annotations={"metallb.io/address-pool": "private"}))
    wait_until(
        lambda: cluster.ips("plain") == ["192.0.2.0"] and cluster.ips("pinned") == ["10.9.0.10"],
        timeout_s=20,
        desc=f"plain from public, pinned from private; {cluster.all_ips()}",
    )
    wait_until(lambda: cluster.events("pinned", "IPAllocated"), timeout_s=10, desc="IPAllocated on pinned")
    assert cluster.events("pinned", "IPAllocated") == ["Assigned IP 10.9.0.10 from pool private"]


def test_sharing_allowed_and_refused(cluster: Cluster) -> None:
    """Same key, other ports: one address; the same port under the same key is refused."""
    cluster.controller("c1", config_text([PUBLIC]))
    shared = {"bgpspeaker.io/allow-shared-ip": "web"}
    http = service("default", "http", annotations=shared)
    https = service("default", "https", annotations=shared)
    https["spec"]["ports"] = [{"port": 443, "protocol": "TCP"}]
    cluster.api.apply(http)
    cluster.api.apply(https)
    wait_until(
        lambda: cluster.ips("http") == cluster.ips("https") == ["192.0.2.0"],
        timeout_s=20,
        desc=f"http and https share 192.0.2.0; {cluster.all_ips()}",
    )
    clash = service("default", "clash", annotations={**shared, "bgpspeaker.io/loadBalancerIPs": "192.0.2.0"})
    cluster.api.apply(clash)
    wait_until(lambda: cluster.events("clash", "AllocationFailed"), timeout_s=10, desc="AllocationFailed on clash")
    assert cluster.events("clash", "AllocationFailed") == [
        "sharing_rule_broken: 192.0.2.0: port TCP/80 is already used by default/http"
    ]


def test_dual_stack(cluster: Cluster) -> None:
    """RequireDualStack gets one address per family, in ipFamilies order."""
    dual = {"name": "dual", "addresses": ["192.0.2.8/31", "2001:db8::/127"]}
    cluster.controller("c1", config_text([dual]))
    obj = service("default", "both")
    obj["spec"].update({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"})
    cluster.api.apply(obj)
    wait_until(lambda: cluster.ips("both") == ["2001:db8::", "192.0.2.8"], timeout_s=20, desc=f"{cluster.all_ips()}")


def test_restart_keeps_assignments(cluster: Cluster) -> None:
    """A restart with an edited config (pools reordered, one address no longer pooled) writes nothing:
    every Service keeps its address, and the one outside every pool gets a Warning Event."""
    first = cluster.controller("c1", config_text([PUBLIC]))
    for index in range(4):
        cluster.api.apply(service("default", f"s{index}"))
    wait_until(lambda: all(cluster.all_ips().values()), timeout_s=20, desc=f"all allocated; {cluster.all_ips()}")
    before = cluster.all_ips()
    assert first.terminate() == 0
    writes = cluster.status_writes()
    edited = [
        {"name": "other", "addresses": ["192.0.2.100/31"]},
        {"name": "public", "addresses": ["192.0.2.0-192.0.2.2"]},
    ]
    second = cluster.controller("c2", config_text(edited))
    second.wait_event("allocation_pass", timeout_s=20)
    wait_until(lambda: cluster.events("s3", "IPOutsidePools"), timeout_s=10, desc="IPOutsidePools on s3")
    assert cluster.all_ips() == before
    assert cluster.status_writes() == writes
    assert cluster.events("s3", "IPOutsidePools") == [
        "192.0.2.3 is in no address pool; kept (a VIP change is an outage)"
    ]


def _owners(cluster: Cluster) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = collections.defaultdict(list)
    for name, ips in cluster.all_ips().items():
        for ip in ips:
            owners[ip].append(name)
    return owners


def test_two_controllers_never_double_assign(cluster: Cluster) -> None:
    """Two replicas at once, injected 409 races, and the leader killed mid-way: no address gets two owners."""
    pool = {"name": "public", "addresses": ["192.0.2.0/27"]}  # 32 addresses
    config = config_text([pool])
    cluster.controller("c1", config)
    cluster.controller("c2", config)
    wait_until(cluster.holder, timeout_s=20, desc="a leader")
    cluster.api.inject_conflicts("services", 8)
    for index in range(20):
        cluster.api.apply(service("default", f"a{index:02d}"))
    wait_until(lambda: sum(map(bool, cluster.all_ips().values())) >= 10, timeout_s=20, desc="some allocated")
    leader = next(r for r in cluster.replicas if r.name == cluster.holder())
    leader.kill()
    cluster.api.inject_conflicts("services", 8)
    for index in range(20):
        cluster.api.apply(service("default", f"b{index:02d}"))
    wait_until(
        lambda: sum(map(bool, cluster.all_ips().values())) == 32,
        timeout_s=30,
        desc=f"32 allocated; {cluster.all_ips()}",
    )
    owners = _owners(cluster)
    assert {ip: names for ip, names in owners.items() if len(names) > 1} == {}
    assert len(owners) == 32
    survivor = next(r for r in cluster.replicas if r is not leader)
    assert survivor.events("status_conflict"), "the injected races reached the controller"

    # RBAC: every request both replicas made (lists, watches, rereads after 409s, Lease, Events)
    # is in the controller's API_ACCESS tables, and deploy/controller.yaml grants exactly those
    table = {(a.resource, verb) for a in controller_access() for verb in a.verbs}
    made = {request_grant(method, target) for method, target in cluster.api.requests}
    assert made <= table, f"calls outside the tables: {sorted(made - table)}"
    assert made >= {("services", "list"), ("services", "watch"), ("services/status", "patch"), ("leases", "get")}
    assert controller_rbac() == table


def request_grant(method: str, target: str) -> tuple[str, str]:
    """The (resource[/subresource], verb) RBAC checks for one request, as the API server derives it."""
    path, _, query = target.partition("?")
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]  # /api/v1/... or /apis/GROUP/VERSION/...
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = "/".join(rest[::2]) if len(rest) > 2 else rest[0]  # services/NAME/status -> services/status
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "watch" if "watch=true" in query or "watch=1" in query else ("get" if len(rest) > 1 else "list")
    return resource, verb


def controller_rbac() -> set[tuple[str, str]]:
    """(resource, verb) the Roles and ClusterRoles of deploy/controller.yaml grant."""
    granted = set()
    for doc in yaml.safe_load_all((Path(__file__).parents[2] / "deploy" / "controller.yaml").read_text()):
        if doc and doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                granted |= {(resource, verb) for resource in rule["resources"] for verb in rule["verbs"]}
    return granted


def test_failover_after_kill_within_the_lease_duration(cluster: Cluster) -> None:
    """kill -9 of the leader: the standby leads within leaseDuration (3 s) plus one retry, and allocates."""
    config = config_text([PUBLIC])
    cluster.controller("c1", config)
    cluster.controller("c2", config)
    wait_until(cluster.holder, timeout_s=20, desc="a leader")
    for replica in cluster.replicas:  # the standby is up and has seen the Lease
        replica.wait_event("watch_listed", timeout_s=20)
    leader = next(r for r in cluster.replicas if r.name == cluster.holder())
    standby = next(r for r in cluster.replicas if r is not leader)
    killed = time.time()
    leader.kill()
    cluster.api.apply(service("default", "after"))
    wait_until(lambda: cluster.ips("after"), timeout_s=15, desc=f"the standby allocates; {standby.tail()}")
    elected = standby.wait_event("leader_elected", timeout_s=15)
    taken_over_s = _stamp(elected["timestamp"]) - killed
    assert taken_over_s < 3 + 1 + 1.5, f"took over after {taken_over_s:.1f} s"
    assert cluster.holder() == standby.name


def test_sigterm_releases_the_lease(cluster: Cluster) -> None:
    """SIGTERM releases the Lease: the standby leads within a retry period, not after the 10 s lease."""
    config = config_text([PUBLIC], {"leaseDuration": "10s", "renewDeadline": "8s", "retryPeriod": "1s"})
    cluster.controller("c1", config)
    cluster.controller("c2", config)
    wait_until(cluster.holder, timeout_s=20, desc="a leader")
    for replica in cluster.replicas:
        replica.wait_event("watch_listed", timeout_s=20)
    leader = next(r for r in cluster.replicas if r.name == cluster.holder())
    standby = next(r for r in cluster.replicas if r is not leader)
    leader.wait_event("services_reread", timeout_s=15)  # leading, and knows it
    stopped = time.time()
    assert leader.terminate() == 0
    assert leader.events("lease_released")
    elected = standby.wait_event("leader_elected", timeout_s=10)
    taken_over_s = _stamp(elected["timestamp"]) - stopped
    assert taken_over_s < 3.0, f"took over after {taken_over_s:.1f} s"
    cluster.api.apply(service("default", "after"))
    wait_until(lambda: cluster.ips("after") == ["192.0.2.0"], timeout_s=10, desc="the new leader allocates")


def _stamp(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _get(replica: ControllerProcess, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    address = replica.wait_event("controller_starting", timeout_s=15)["metrics"]
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_and_probes_on_leader_and_standby(cluster: Cluster) -> None:
    """Pool size, use and failures on /metrics (the standby shows the same pool use); /readyz names the role."""
    config = config_text([PUBLIC])
    cluster.controller("c1", config)
    cluster.controller("c2", config)
    wait_until(cluster.holder, timeout_s=20, desc="a leader")
    for index in range(5):
        cluster.api.apply(service("default", f"s{index}"))
    wait_until(lambda: cluster.events("s4", "AllocationFailed"), timeout_s=20, desc="AllocationFailed on s4")
    leader = next(r for r in cluster.replicas if r.name == cluster.holder())
    standby = next(r for r in cluster.replicas if r is not leader)
    wanted = [
        'bgpspeaker_address_pool_size{pool="public"} 4.0',
        'bgpspeaker_address_pool_in_use{pool="public"} 4.0',
    ]
    for replica in (leader, standby):
        wait_until(
            lambda r=replica: all(line in _get(r, "/metrics")[1].splitlines() for line in wanted),
            timeout_s=10,
            desc=f"{replica.name} pool metrics {wanted}",
        )
    leader_metrics = _get(leader, "/metrics")[1].splitlines()
    assert 'bgpspeaker_allocation_failures_total{reason="pool_exhausted"} 1.0' in leader_metrics
    assert "bgpspeaker_controller_leader 1.0" in leader_metrics
    assert "bgpspeaker_controller_leader 0.0" in _get(standby, "/metrics")[1].splitlines()
    assert _get(leader, "/readyz") == (200, "ok: leader\n")
    wait_until(  # the standby learns the holder at its next try
        lambda: _get(standby, "/readyz") == (200, f"ok: standby (leader: {leader.name})\n"),
        timeout_s=10,
        desc="the standby's /readyz names the leader",
    )
    assert _get(standby, "/healthz") == (200, "ok\n")


def test_without_pools_the_controller_touches_nothing(cluster: Cluster) -> None:
    """No addressPools: no status write, no Event, even for Services holding addresses (another allocator's)."""
    cluster.api.apply(service("default", "theirs", ips=["198.51.100.9"]))
    cluster.api.apply(service("default", "pending"))
    replica = cluster.controller("c1", config_text([]))  # its first pass sees both
    replica.wait_event("no_address_pools", timeout_s=20)
    assert (cluster.status_writes(), cluster.api.objects("events")) == (0, [])


def test_a_pool_added_by_a_config_edit_serves_the_waiting_service(cluster: Cluster) -> None:
    """The config file is re-read: a pool added while a Service waits on an exhausted one serves it."""
    replica = cluster.controller("c1", config_text([{"name": "tiny", "addresses": ["192.0.2.0/32"]}]))
    cluster.api.apply(service("default", "first"))
    cluster.api.apply(service("default", "second"))
    wait_until(lambda: cluster.events("second", "AllocationFailed"), timeout_s=20, desc="second waits")
    staging = replica.config_path.with_suffix(".new")
    staging.write_text(
        config_text([{"name": "tiny", "addresses": ["192.0.2.0/32"]}, {"name": "more", "addresses": ["192.0.2.64/30"]}])
    )
    staging.replace(replica.config_path)  # atomically, as a ConfigMap update
    replica.wait_event("config_reloaded", timeout_s=10)
    wait_until(lambda: cluster.ips("second") == ["192.0.2.64"], timeout_s=10, desc=f"{cluster.all_ips()}")
    assert cluster.ips("first") == ["192.0.2.0"]
