"""MetalLB's BGP e2e scenarios across nodes (docs/metallb-parity.md), in one dual-stack lab.

Three speaker nodes, one router (FRR zebra + bgpd, kernel ECMP), one client; every link
carries IPv4 and IPv6 and each node's one session carries both families (IPv6 with the
node's global address as next hop). MetalLB checks that the router's next hops are
exactly the selected nodes and sends traffic to the VIP; so do these tests, in FRR's
multipath set and in the router kernel's route, per family. One lab for the module;
each test writes the nodes' configs, starts the speakers and leaves nothing behind.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from lab.kubeapi import node
from lab.multinode import VIP, VIP6, MultiNode, multinode_lab, speaker_config
from lab.netns import wait_until
from tests.integration.conftest import require_prerequisites

V4, V6 = f"{VIP}/32", f"{VIP6}/128"
ALL = {"node-1", "node-2", "node-3"}
FAMILIES = "    families: [ipv4, ipv6]"
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


@pytest.fixture(scope="module")
def built() -> Iterator[MultiNode]:
    require_prerequisites()
    with multinode_lab("par", ipv6=True) as topo:
        yield topo


@pytest.fixture
def mn(built: MultiNode) -> Iterator[MultiNode]:
    yield built
    built.reset()
    for n in built.nodes.values():  # labels and conditions as multinode() made them
        set_node(built, n.name)
    wait_until(lambda: not built.frr.best_paths("ipv6"), timeout_s=30, desc="the router's IPv6 table empty")


def set_node(mn: MultiNode, name: str, *, labels: dict[str, str] | None = None, unavailable: bool = False) -> None:
    n = mn.nodes[name]
    mn.api.apply(node(name, labels=labels, network_unavailable=unavailable, addresses=[n.address, n.address6]))


def start(mn: MultiNode, advertisements: str | None = None) -> None:
    for n in mn.nodes.values():
        mn.set_config(n.name, speaker_config(n.index, peer_extra=FAMILIES, advertisements=advertisements))
    mn.start_speakers()


def wait_both(mn: MultiNode, nodes: set[str], prefixes: tuple[str, ...] = (V4, V6)) -> None:
    for prefix in prefixes:
        mn.wait_multipath(prefix, nodes)


def answered_by(mn: MultiNode, vip: str, *, flows: int = 30) -> set[str]:
    report = mn.probe(flows=flows, duration_s=0.5, vip=vip)
    assert report.lost == 0, report.summary()
    return set(report.split())


@pytest.mark.parametrize(
    "vips",
    [pytest.param((VIP,), id="ipv4"), pytest.param((VIP6,), id="ipv6"), pytest.param((VIP, VIP6), id="dual-stack")],
)
def test_cluster_policy_is_announced_by_every_node(mn: MultiNode, vips: tuple[str, ...]) -> None:
    """ETP Cluster with endpoints on node-1 only: every node is a next hop of each of the
    Service's VIPs (FRR's multipath set and the kernel), and flows reach all three; the
    other family's VIP is not announced."""
    mn.vip_service("web", vip=list(vips), endpoints={"node-1": 1})
    start(mn)
    prefixes = tuple(V6 if ":" in vip else V4 for vip in vips)
    wait_both(mn, ALL, prefixes)
    for vip in vips:
        assert answered_by(mn, vip, flows=60) == ALL
    for other in {V4, V6} - set(prefixes):
        assert not mn.paths(other), f"{other} announced without a VIP of its family"


@pytest.mark.parametrize(
    "vips",
    [pytest.param((VIP,), id="ipv4"), pytest.param((VIP6,), id="ipv6"), pytest.param((VIP, VIP6), id="dual-stack")],
)
def test_local_policy_is_announced_by_exactly_the_nodes_with_endpoints(mn: MultiNode, vips: tuple[str, ...]) -> None:
    """ETP Local, endpoints on node-1 and node-3: exactly those two are next hops of each VIP
    and only they answer; the endpoint moving from node-3 to node-2 moves the next hop."""
    mn.vip_service("local", vip=list(vips), policy="Local", endpoints={"node-1": 1, "node-3": 1})
    start(mn)
    prefixes = tuple(V6 if ":" in vip else V4 for vip in vips)
    wait_both(mn, {"node-1", "node-3"}, prefixes)
    for vip in vips:
        assert answered_by(mn, vip) == {"node-1", "node-3"}
    mn.set_endpoints("local", {"node-1": 1, "node-2": 1})
    wait_both(mn, {"node-1", "node-2"}, prefixes)
    for vip in vips:
        assert answered_by(mn, vip) == {"node-1", "node-2"}


def test_network_unavailable_and_exclude_label_take_a_node_out_and_back(mn: MultiNode) -> None:
    """A dual-stack Cluster VIP: node-2 with condition NetworkUnavailable=True leaves both
    families' next hops (and traffic), and is back once the condition clears; the same for
    node-3 with the exclude-from-external-load-balancers label."""
    mn.vip_service("web", vip=[VIP, VIP6])
    start(mn)
    wait_both(mn, ALL)

    set_node(mn, "node-2", unavailable=True)
    wait_both(mn, {"node-1", "node-3"})
    assert answered_by(mn, VIP) == {"node-1", "node-3"}
    set_node(mn, "node-2")
    wait_both(mn, ALL)

    set_node(mn, "node-3", labels={EXCLUDE: ""})
    wait_both(mn, {"node-1", "node-2"})
    assert answered_by(mn, VIP6) == {"node-1", "node-2"}
    set_node(mn, "node-3")
    wait_both(mn, ALL)


NODE_SELECTED = (
    "["
    "{name: a, serviceSelectors: [{matchLabels: {app: a}}], nodeSelectors: [{matchLabels: {tier: gold}}]},"
    " {name: b, serviceSelectors: [{matchLabels: {app: b}}],"
    " nodeSelectors: [{matchExpressions: [{key: tier, operator: In, values: [gold, silver]}]}]}"
    "]"
)


def test_advertisement_node_selectors_on_two_services(mn: MultiNode) -> None:
    """Two Services, two advertisements with different nodeSelectors (MetalLB's "one on the
    first, two on the second"): service a from the gold node only, service b from gold and
    silver; relabelling node-3 silver adds it to b only; relabelling Service a app=b moves it
    to b's nodes, app=none withdraws it; no label on any node announces neither."""
    for name, tier in (("node-1", "gold"), ("node-2", "silver"), ("node-3", "bronze")):
        set_node(mn, name, labels={"tier": tier})
    mn.vip_service("a", vip=VIP, labels={"app": "a"})
    mn.vip_service("b", vip=VIP6, labels={"app": "b"})
    start(mn, NODE_SELECTED)
    mn.wait_multipath(V4, {"node-1"})
    mn.wait_multipath(V6, {"node-1", "node-2"})
    assert answered_by(mn, VIP) == {"node-1"}
    assert answered_by(mn, VIP6) == {"node-1", "node-2"}

    set_node(mn, "node-3", labels={"tier": "silver"})
    mn.wait_multipath(V6, ALL)
    mn.wait_multipath(V4, {"node-1"})

    mn.vip_service("a", vip=VIP, labels={"app": "b"})  # MetalLB: "by updating Service labels"
    mn.wait_multipath(V4, ALL)
    mn.vip_service("a", vip=VIP, labels={"app": "none"})
    wait_until(lambda: not mn.paths(V4), timeout_s=30, desc=f"{V4} withdrawn: no advertisement selects it")
    assert mn.multipath(V6) == {n.address6 for n in mn.nodes.values()}

    for name in ("node-1", "node-2", "node-3"):
        set_node(mn, name)
    wait_until(lambda: not mn.paths(V4) and not mn.paths(V6), timeout_s=30, desc="both withdrawn")


TWO_COMMUNITIES = (
    "["
    "{name: east, communities: ['64512:1'], nodeSelectors: [{matchLabels: {zone: east}}]},"
    " {name: west, communities: ['64512:2', 'large:64512:2:2'], nodeSelectors: [{matchLabels: {zone: west}}]}"
    "]"
)


def communities_by_node(mn: MultiNode, prefix: str) -> dict[str, tuple[str, str]]:
    """{node: (community string, large community string)} of FRR's paths for ``prefix``."""
    seen: dict[str, tuple[str, str]] = {}
    for path in mn.paths(prefix):
        hop = next(h["ip"] for h in path["nexthops"] if h.get("scope") != "link-local")
        seen[mn.node_of(hop)] = (
            path.get("community", {}).get("string", ""),
            path.get("largeCommunity", {}).get("string", ""),
        )
    return seen


def wait_communities(mn: MultiNode, prefix: str, want: dict[str, tuple[str, str]]) -> None:
    seen: dict[str, tuple[str, str]] = {}

    def matches() -> bool:
        seen.clear()
        seen.update(communities_by_node(mn, prefix))
        return seen == want

    try:
        wait_until(matches, timeout_s=30, desc=f"{prefix}: per-node communities {want}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen {seen}") from None


def test_one_service_two_advertisements_give_each_node_its_communities(mn: MultiNode) -> None:
    """One dual-stack Service, two advertisements selecting different nodes with different
    communities: each node's path in FRR carries its own advertisement's communities; a node
    both select carries the union (MetalLB's overlapping advertisements); all three stay in
    the multipath set."""
    for name, labels in (
        ("node-1", {"zone": "east"}),
        ("node-2", {"zone": "west"}),
        ("node-3", {"zone": "west", "zone-east": "yes"}),
    ):
        set_node(mn, name, labels=labels)
    ads = TWO_COMMUNITIES.replace(
        "{matchLabels: {zone: east}}", "{matchLabels: {zone: east}}, {matchLabels: {zone-east: 'yes'}}"
    )
    mn.vip_service("web", vip=[VIP, VIP6])
    start(mn, ads)
    want = {
        "node-1": ("64512:1", ""),
        "node-2": ("64512:2", "64512:2:2"),
        "node-3": ("64512:1 64512:2", "64512:2:2"),
    }
    for prefix in (V4, V6):
        wait_communities(mn, prefix, want)
        mn.wait_multipath(prefix, ALL)


def refreshed(mn: MultiNode, prefix: str, addresses: set[str]) -> bool:
    """No stale path for ``prefix`` and exactly ``addresses`` in FRR's multipath set."""
    return not any(path.get("stale") for path in mn.paths(prefix)) and mn.multipath(prefix) == addresses


def test_graceful_restart_rolling_restart_keeps_both_families(mn: MultiNode) -> None:
    """gracefulRestart + shutdown keep, dual-stack: restarting the three speakers one after
    the other never takes a node out of either family's kernel next hops, and IPv6 flows
    lose nothing (the IPv4 twin with traffic: test_multinode.py)."""
    for n in mn.nodes.values():
        mn.set_config(
            n.name,
            speaker_config(n.index, peer_extra=FAMILIES, graceful_restart="120s", shutdown="{mode: keep}"),
        )
    mn.vip_service("web", vip=[VIP, VIP6])
    mn.start_speakers()
    wait_both(mn, ALL)
    addresses = {prefix: {n.address_for(prefix) for n in mn.nodes.values()} for prefix in (V4, V6)}
    with mn.prober(flows=60, vip=VIP6) as running:
        for name in sorted(mn.nodes):
            mn.restart_speaker(name)
            for prefix in (V4, V6):
                assert set(mn.kernel_nexthops(prefix)) == addresses[prefix], (name, prefix)
                wait_until(
                    functools.partial(refreshed, mn, prefix, addresses[prefix]),
                    timeout_s=30,
                    desc=f"{name}'s {prefix} path refreshed (not stale), all three in the multipath set",
                )
    report = running.report()
    assert (report.lost, report.moved, set(report.split())) == (0, 0, ALL), report.summary()


def test_without_graceful_restart_a_restarting_node_leaves_the_next_hops(mn: MultiNode) -> None:
    """No gracefulRestart (MetalLB's "GR disabled: the dataplane has a downtime"): while
    node-1's speaker is stopped its paths leave both families' next hops and its flows go
    to the other two; once it is back it is a next hop again."""
    start(mn)
    mn.vip_service("web", vip=[VIP, VIP6])
    wait_both(mn, ALL)
    code, _took_s = mn.nodes["node-1"].speaker.terminate(timeout_s=30)
    assert code == 0
    wait_both(mn, {"node-2", "node-3"})
    assert answered_by(mn, VIP) == {"node-2", "node-3"}
    mn.start_speakers(nodes=["node-1"])
    wait_both(mn, ALL)


POOLS = """addressPools:
  - name: blue
    addresses: ["198.51.100.0/24"]
  - name: green
    addresses: ["2001:db8:100::/64"]
advertisements:
  - name: blue-web
    addressPools: [blue]
    serviceSelectors: [{matchLabels: {app: web}}]
    communities: ["64512:7"]
"""


def test_pool_and_service_selectors_together(mn: MultiNode) -> None:
    """An advertisement naming pool blue and selecting app=web: the app=web Service in blue is
    announced from every node with the advertisement's community; an unlabelled Service in
    blue and an app=web Service in pool green are not."""
    for n in mn.nodes.values():
        mn.set_config(n.name, speaker_config(n.index, peer_extra=FAMILIES, extra=POOLS))
    mn.vip_service("web", vip=VIP, labels={"app": "web"})
    mn.vip_service("plain", vip="198.51.100.20")
    mn.vip_service("green-web", vip=VIP6, labels={"app": "web"})
    mn.start_speakers()
    mn.wait_multipath(V4, ALL)
    assert {path.get("community", {}).get("string") for path in mn.paths(V4)} == {"64512:7"}
    for n in mn.nodes.values():
        n.speaker.wait_event("reconcile_finished", desired=1)
    assert not mn.paths("198.51.100.20/32") and not mn.paths(V6)
