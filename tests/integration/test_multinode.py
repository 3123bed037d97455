"""Three speaker nodes, one router with kernel ECMP, real UDP flows (lab/multinode.py).

One lab for the module (namespaces, FRR zebra + bgpd, the API server, the responders);
each test writes the nodes' configs, starts the speakers and leaves nothing behind:
its services deleted, the speakers stopped, the router's table empty again. Each flow
is probed every 20 ms from the client namespace through the router.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator

import pytest

from lab.multinode import VIP, MultiNode, multinode_lab, speaker_config
from lab.netns import wait_until
from tests.integration.conftest import require_prerequisites

PREFIX = f"{VIP}/32"
ALL = {"node-1", "node-2", "node-3"}


@pytest.fixture(scope="module")
def built() -> Iterator[MultiNode]:
    require_prerequisites()
    with multinode_lab("mn") as topo:
        yield topo


@pytest.fixture
def mn(built: MultiNode) -> Iterator[MultiNode]:
    yield built
    built.reset()


def configure(mn: MultiNode, make: Callable[[int], str]) -> None:
    for n in mn.nodes.values():
        mn.set_config(n.name, make(n.index))


def test_ecmp_across_three_nodes_with_traffic_on_all(mn: MultiNode) -> None:
    """A Cluster VIP from three nodes: FRR's multipath set and the kernel's next hops are the
    three nodes, and 60 flows reach all three without a lost probe."""
    configure(mn, speaker_config)
    mn.vip_service("web")
    mn.start_speakers()
    mn.wait_multipath(PREFIX, ALL)
    assert set(mn.kernel_nexthops(PREFIX).values()) == {1}, "equal weights without ecmpWeight"
    report = mn.probe(flows=60, duration_s=1.0)
    assert (report.lost, report.moved, set(report.split())) == (0, 0, ALL), report.summary()


def test_local_vip_only_on_the_nodes_with_endpoints(mn: MultiNode) -> None:
    """Local policy, endpoints on node-1 and node-3: next hops exactly those two, traffic only
    there; an endpoint added on node-2 brings it in."""
    configure(mn, speaker_config)
    mn.vip_service("local", policy="Local", endpoints={"node-1": 1, "node-3": 1})
    mn.start_speakers()
    mn.wait_multipath(PREFIX, {"node-1", "node-3"})
    report = mn.probe(flows=60, duration_s=0.5)
    assert (report.lost, set(report.split())) == (0, {"node-1", "node-3"}), report.summary()
    mn.set_endpoints("local", {"node-1": 1, "node-2": 1, "node-3": 1})
    mn.wait_multipath(PREFIX, ALL)


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: count / total for name, count in counts.items()}


def test_weights_follow_local_endpoints(mn: MultiNode) -> None:
    """ecmpWeight: localEndpoints. Endpoints 2:1 on node-1:node-2 give kernel weights 66:33 and
    a 2:1 split of 1,800 flows (each node's share within 5 points: 4 standard deviations of
    the hash's spread, i.e. within 7.5 % of 2/3 and 15 % of 1/3); 1:2 turns both around,
    with one UPDATE per node, no withdraw and no lost probe."""
    configure(mn, functools.partial(speaker_config, advertisements="[{name: w, ecmpWeight: localEndpoints}]"))
    mn.vip_service("weighted", policy="Local", endpoints={"node-1": 2, "node-2": 1})
    mn.start_speakers()
    mn.wait_multipath(PREFIX, {"node-1", "node-2"})
    one, two = mn.nodes["node-1"].address, mn.nodes["node-2"].address
    wait_until(
        lambda: mn.kernel_nexthops(PREFIX) == {one: 66, two: 33},
        timeout_s=15,
        desc=f"kernel weights 66:33; seen {mn.kernel_nexthops(PREFIX)}",
    )
    # The split counts each flow once, by the node that answered it (every flow must have an answer).
    report = mn.probe(flows=1800, duration_s=1.0, interval_ms=200)
    split = shares(report.split())
    assert sum(report.split().values()) == 1800, report.summary()
    assert abs(split["node-1"] - 2 / 3) <= 0.05 and abs(split["node-2"] - 1 / 3) <= 0.05, report.summary()

    before = {
        name: (
            len(mn.nodes[name].speaker.events("route_announced")),
            len(mn.nodes[name].speaker.events("route_withdrawn")),
        )
        for name in ("node-1", "node-2")
    }
    with mn.prober(flows=60) as running:
        mn.set_endpoints("weighted", {"node-1": 1, "node-2": 2})
        wait_until(
            lambda: mn.kernel_nexthops(PREFIX) == {one: 33, two: 66},
            timeout_s=15,
            desc=f"kernel weights 33:66; seen {mn.kernel_nexthops(PREFIX)}",
        )
    during = running.report()
    assert during.lost == 0, during.summary()
    report = mn.probe(flows=1800, duration_s=1.0, interval_ms=200)
    split = shares(report.split())
    assert sum(report.split().values()) == 1800, report.summary()
    assert abs(split["node-1"] - 1 / 3) <= 0.05 and abs(split["node-2"] - 2 / 3) <= 0.05, report.summary()
    for name in ("node-1", "node-2"):
        speaker = mn.nodes[name].speaker
        announced, withdrawn = before[name]
        assert len(speaker.events("route_announced")) == announced + 1, speaker.tail()
        assert len(speaker.events("route_withdrawn")) == withdrawn, speaker.tail()


def test_rolling_restart_with_graceful_restart_and_keep_loses_nothing(mn: MultiNode) -> None:
    """gracefulRestart + shutdown keep: restarting the three speakers one after the other
    loses 0 probes and moves 0 flows (the router keeps each node's path as stale, and the
    restarted speaker refreshes it)."""
    configure(mn, functools.partial(speaker_config, graceful_restart="120s", shutdown="{mode: keep}"))
    mn.vip_service("web")
    mn.start_speakers()
    mn.wait_multipath(PREFIX, ALL)
    with mn.prober(flows=60) as running:
        time.sleep(0.5)  # traffic flowing before the first restart (a measurement window)
        for name in sorted(mn.nodes):
            mn.restart_speaker(name)
            wait_until(
                lambda: (
                    not any(path.get("stale") for path in mn.paths(PREFIX))
                    and mn.multipath(PREFIX) == {n.address for n in mn.nodes.values()}
                ),
                timeout_s=30,
                desc=f"{name}'s path refreshed (not stale) and all three in the multipath set",
            )
    report = running.report()
    assert (report.lost, report.moved, set(report.split())) == (0, 0, ALL), report.summary()


def test_drain_on_sigterm_loses_nothing(mn: MultiNode) -> None:
    """shutdown drain: SIGTERM on node-1's speaker first lowers its path out of the multipath
    set (GRACEFUL_SHUTDOWN), then withdraws it: its flows move once, none loses a probe."""
    configure(mn, functools.partial(speaker_config, shutdown="{mode: drain, drainSeconds: 2}"))
    mn.vip_service("web")
    mn.start_speakers()
    mn.wait_multipath(PREFIX, ALL)
    with mn.prober(flows=60) as running:
        time.sleep(0.5)  # a measurement window before the stop
        code, _took_s = mn.nodes["node-1"].speaker.terminate(timeout_s=30)
        assert code == 0
        mn.wait_multipath(PREFIX, {"node-2", "node-3"})
        time.sleep(0.5)  # and after it
    report = running.report()
    # node-1's flows move; the kernel's hash-threshold multipath also remaps some flows
    # between the other two when a next hop goes (not resilient hashing): each moves once.
    assert report.lost == 0, report.summary()
    assert all(flow.moves <= 1 for flow in report.flows), report.summary()
    assert all(flow.moves for flow in report.flows if "node-1" in flow.nodes), report.summary()


def test_node_hang_with_hold_time_3s(mn: MultiNode) -> None:
    """holdTime 3s: node-2 goes dark (nftables drops everything on its link, the link stays
    up). The router drops its path when the hold timer expires (3 s + a keepalive at most),
    and only node-2's flows go dark, for about that long."""
    configure(mn, functools.partial(speaker_config, hold_time="3s"))
    mn.vip_service("web")
    mn.start_speakers()
    mn.wait_multipath(PREFIX, ALL)
    with mn.prober(flows=60) as running:
        time.sleep(0.5)  # a measurement window before the fault
        dark_at = time.monotonic()
        mn.go_dark("node-2")
        mn.wait_multipath(PREFIX, {"node-1", "node-3"}, timeout_s=15)
        detected_s = time.monotonic() - dark_at
        time.sleep(0.5)
    report = running.report()
    dark_flows = [flow for flow in report.flows if flow.gaps]
    assert detected_s < 6.0, f"path dropped after {detected_s:.2f} s"
    assert dark_flows and all(flow.nodes.get("node-2") for flow in dark_flows), report.summary()
    assert 2.0 < report.longest_dark_s < detected_s + 1.0, (detected_s, report.summary())
