"""The operator's view against the live topology: /metrics checked against FRR, probes,
``bgpspeaker status`` and ``explain``, Kubernetes Events, and RBAC = the calls made."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bgpspeaker import report as report_module
from bgpspeaker.cluster.access import speaker_access
from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, http_get, run_in, wait_until
from lab.topology import CONFIG_DIR, SingleNode, single_node
from tests.integration.conftest import NODE, require_prerequisites

REPO = Path(__file__).resolve().parents[2]
LISTEN = "127.0.0.1:7473"
CONFIG = (CONFIG_DIR / "speaker.yaml").read_text() + (
    "advertisements:\n  - name: public\n    communities: ['64512:100']\n    med: 5\n"
)


@pytest.fixture
def topology() -> Iterator[SingleNode]:
    require_prerequisites()
    with Lab() as lab:
        built = single_node(lab, speaker_config=CONFIG)
        try:
            yield built
        finally:
            built.close()


def seed(topology: SingleNode) -> None:
    """web: Cluster, endpoint on node-b (announced); batch: Local, endpoint only on node-b (not here)."""
    topology.api.apply(service("default", "web", ips=["192.0.2.10"]))
    topology.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    topology.api.apply(service("default", "batch", ips=["192.0.2.30"], policy="Local"))
    topology.api.apply(
        endpoint_slice("default", "batch-1", service_name="batch", endpoints=[("10.244.1.6", "node-b", True, True)])
    )


def metrics(topology: SingleNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(topology.speaker.netns, f"http://{LISTEN}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def cli(topology: SingleNode, *args: str) -> str:
    result = run_in(topology.speaker.netns, sys.executable, "-m", "bgpspeaker.cli", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_probes_follow_initial_sync(topology: SingleNode) -> None:
    """/readyz is 503 until the initial lists complete (API answering 503), then 200; /healthz 200 throughout."""
    seed(topology)
    topology.api.set_outage(503)
    topology.speaker.start("--listen", LISTEN)
    netns = topology.speaker.netns
    status, body = wait_until(
        lambda: _try_get(netns, f"http://{LISTEN}/readyz"), timeout_s=15, desc="/readyz answering"
    )
    assert (status, body.strip()) == (503, "initial list of services, endpointslices and nodes not complete")
    assert http_get(netns, f"http://{LISTEN}/healthz")[0] == 200
    topology.api.set_outage(None)
    wait_until(lambda: http_get(netns, f"http://{LISTEN}/readyz")[0] == 200, timeout_s=15, desc="ready")


def _try_get(netns: str, url: str) -> tuple[int, str] | None:
    try:
        return http_get(netns, url)
    except OSError:
        return None


def test_metrics_status_explain_events_against_frr(topology: SingleNode) -> None:
    """Every view agrees with FRR's table; then a flapping service stays within the Event budget."""
    seed(topology)
    topology.speaker.start("--listen", LISTEN)
    wait_until(lambda: "192.0.2.10/32" in topology.frr.best_paths(), timeout_s=20, desc="web announced")
    frr_best = set(topology.frr.best_paths())
    assert "192.0.2.30/32" not in frr_best

    # /metrics against FRR's view
    values = wait_until(
        lambda: (m := metrics(topology)) and m.get(("bgpspeaker_bgp_session_up", (("peer", "tor-a"),))) == 1.0 and m,
        timeout_s=10,
        desc="session_up metric",
    )
    neighbor = topology.frr.neighbor("10.0.0.2")
    assert neighbor["bgpState"] == "Established"
    received = neighbor["addressFamilyInfo"]["ipv4Unicast"]["acceptedPrefixCounter"]
    assert values[("bgpspeaker_bgp_announced_prefixes_total", (("peer", "tor-a"),))] == received == len(frr_best)
    web = (("ip", "192.0.2.10"), ("node", NODE), ("protocol", "bgp"), ("service", "default/web"))
    assert values[("bgpspeaker_speaker_announced", web)] == 1.0
    assert not any(name == "bgpspeaker_speaker_announced" and ("ip", "192.0.2.30") in labels for name, labels in values)
    assert values[("bgpspeaker_config_valid", ())] == 1.0
    assert values[("bgpspeaker_initial_sync_complete", ())] == 1.0
    assert values[("bgpspeaker_api_outage_seconds", ())] == 0.0
    assert values[("bgpspeaker_bgp_updates_total", (("peer", "tor-a"),))] >= 1
    assert values[("bgpspeaker_reconcile_duration_seconds_count", ())] >= 1
    assert values[("bgpspeaker_exabgp_restarts_total", (("peer", "tor-a"),))] == 0
    for thread in ("reconciler", "watch-services", "watch-endpointslices", "watch-nodes"):
        assert values[("bgpspeaker_internal_errors_total", (("thread", thread),))] == 0

    # bgpspeaker status: text and JSON, against FRR
    text = cli(topology, "status", "--address", LISTEN)
    print(text)
    assert any(line.split()[:4] == ["tor-a", "10.0.0.1", "64512", "established"] for line in text.splitlines())
    assert any(line.split() == ["192.0.2.10/32", "tor-a", "default/web"] for line in text.splitlines())
    document = json.loads(cli(topology, "status", "--address", LISTEN, "--output", "json"))
    assert {p["prefix"] for p in document["prefixes"]} == frr_best
    assert document["peers"][0]["prefixes_sent"] == len(frr_best)

    # bgpspeaker explain: the daemon's decision, read-only, for every node
    explain_from = len(topology.api.requests)
    explained = cli(
        topology,
        "explain",
        "default/batch",
        "--config",
        str(topology.speaker.config_path),
        "--kubeconfig",
        str(topology.speaker.kubeconfig_path),
    )
    print(explained)
    assert "node-a:\n  service: not announced, no_local_endpoints" in explained
    assert "node-b:\n  192.0.2.30: announced as 192.0.2.30/32 to tor-a [community 64512:100, med 5]" in explained
    report = json.loads(
        cli(
            topology,
            "explain",
            "default/web",
            "--node",
            NODE,
            "--config",
            str(topology.speaker.config_path),
            "--kubeconfig",
            str(topology.speaker.kubeconfig_path),
            "--output",
            "json",
        )
    )
    explain_calls = range(explain_from, len(topology.api.requests))  # the operator's identity, not the daemon's
    (entry,) = report["nodes"][NODE]
    assert entry["announced"] and set(entry["routes"]) <= frr_best
    path = topology.frr.best_path("192.0.2.10/32") or {}
    assert path.get("metric") == 5 and path["community"]["string"] == "64512:100"

    # Events: Announced for web, by this node
    events = wait_until(
        lambda: [e for e in topology.api.objects("events") if e["involvedObject"]["name"] == "web"],
        timeout_s=10,
        desc="an Event on default/web",
    )
    assert events[0]["reason"] == "Announced" and NODE in events[0]["message"]
    assert events[0]["source"]["host"] == NODE

    # A flapping Local service: 20 flips in a row, the API sees a bounded number of Event calls.
    topology.api.apply(service("default", "flappy", ips=["192.0.2.40"], policy="Local"))
    calls_before = len(topology.api.requests)
    for flip in range(20):
        where = NODE if flip % 2 == 0 else "node-b"
        passes = len(topology.speaker.events("reconcile_finished"))
        topology.api.apply(
            endpoint_slice("default", "flappy-1", service_name="flappy", endpoints=[("10.244.1.7", where, True, True)])
        )
        topology.speaker.wait_event("reconcile_finished", after=passes)
    flappy_calls = [r for r in topology.api.requests[calls_before:] if r[0] in ("POST", "PATCH") and "/events" in r[1]]
    flappy_events = [e for e in topology.api.objects("events") if e["involvedObject"]["name"] == "flappy"]
    counts = sorted(e["count"] for e in flappy_events)
    print(f"flapping service: 20 flips -> {len(flappy_calls)} Event API calls, {len(flappy_events)} Events {counts}")
    assert len(flappy_events) <= 2  # one Announced, one Withdrawn, counts bumped
    assert len(flappy_calls) <= 6  # burst 5 per service (+1 for an in-flight refill)

    # ExaBGP killed: the restart counter moves and the session comes back
    os.kill(topology.speaker.exabgp_pid(), signal.SIGKILL)
    wait_until(
        lambda: metrics(topology).get(("bgpspeaker_exabgp_restarts_total", (("peer", "tor-a"),))) == 1.0,
        timeout_s=10,
        desc="restart counted",
    )

    # RBAC: every call made is in the API_ACCESS tables (explain's too: run with kubectl exec it uses
    # the speaker's ServiceAccount), the daemon made every cluster-wide call its watchers and Events
    # declare, and the ClusterRole in deploy/rbac.yaml grants exactly the tables' cluster-wide rows
    daemon_requests = [r for i, r in enumerate(topology.api.requests) if i not in explain_calls]
    table = {(a.resource, verb) for a in speaker_access() for verb in a.verbs}
    cluster_wide = {(a.resource, verb) for a in speaker_access() if not a.own_namespace for verb in a.verbs}
    assert calls_made(topology.api.requests) <= table
    explain_only = {(a.resource, verb) for a in report_module.API_ACCESS for verb in a.verbs}
    assert calls_made(daemon_requests) | explain_only == cluster_wide
    assert rbac_rules() == cluster_wide


def rbac_rules() -> set[tuple[str, str]]:
    """(resource, verb) granted by the ClusterRole in deploy/rbac.yaml."""
    granted = set()
    for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()):
        if doc["kind"] == "ClusterRole":
            for rule in doc["rules"]:
                granted |= {(resource, verb) for resource in rule["resources"] for verb in rule["verbs"]}
    return granted


def calls_made(requests: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """(resource, verb) of every request, from method, path and query (explain runs with another identity)."""
    made = set()
    for method, target in requests:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
            rest = parts[parts.index("namespaces") + 2 :]
        else:
            rest = parts[2:] if parts[0] == "api" else parts[3:]
        resource, named = rest[0], len(rest) > 1
        verb = {"POST": "create", "PATCH": "patch"}.get(method)
        if verb is None:
            verb = "watch" if "watch=true" in query or "watch=1" in query else ("get" if named else "list")
        made.add((resource, verb))
    return made
