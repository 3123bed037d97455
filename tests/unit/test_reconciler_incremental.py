"""The reconciler's incremental passes converge exactly where full passes would.

A pass whose only news is the decision's changed routes looks at those (and at the
routes left unacknowledged last time) instead of at every route. Here the sessions are
stand-ins for the ExaBGP child that acknowledge or refuse each command line as told;
the assertions are on the reconciler's acknowledged state against the full desired
set computed from scratch, never on what the stand-ins were called with.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bgpspeaker.cluster.model import parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.cluster.store import ClusterStore
from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from bgpspeaker.peers import PeerRuntime
from bgpspeaker.plan import desired_routes
from bgpspeaker.reconciler import Reconciler
from bgpspeaker.routes import Attributes, IPAddress
from lab.kubeapi import endpoint_slice, node, service
from lab.standin import StandInExabgp

ME = "n1"
CONFIG = parse_config(
    {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [
            {"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "sourceAddress": "10.0.0.2"},
            {"name": "b", "peerAddress": "10.0.1.1", "peerASN": 64513, "sourceAddress": "10.0.1.2"},
        ],
        "advertisements": [
            {"name": "x", "serviceSelectors": [{"matchLabels": {"t": "x"}}], "communities": ["1:1"]},
            {"name": "all", "med": 5},
        ],
    }
)
RUNTIMES = {
    peer.name: PeerRuntime(peer, next_hops={4: peer.source_address} if peer.source_address else {})
    for peer in CONFIG.peers
}
IPS = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.1"]


def harness(
    config: Any = CONFIG, session_class: type[StandInExabgp] | None = None, **options: Any
) -> tuple[ClusterStore, Reconciler, dict[str, StandInExabgp]]:
    store = ClusterStore(on_change=lambda: None)
    store.replace("nodes", {ME: parse_node(node(ME))})
    store.replace("services", {})
    store.replace("endpointslices", {})
    sessions: dict[str, StandInExabgp] = {}

    def factory(runtime: PeerRuntime, router_id: IPAddress) -> Any:
        sessions[runtime.peer.name] = (session_class or StandInExabgp)(runtime, router_id)
        return sessions[runtime.peer.name]

    reconciler = Reconciler(
        config,
        {name: runtime for name, runtime in RUNTIMES.items() if name in {p.name for p in config.peers}},
        router_id=ipaddress.ip_address("10.0.0.2"),
        node_name=ME,
        store=store,
        session_factory=factory,
        **options,
    )
    return store, reconciler, sessions


def expected(store: ClusterStore) -> dict[tuple[str, Any], Attributes]:
    """The full desired set, computed from scratch."""
    return desired_routes(decide(store.snapshot(), CONFIG, ME), RUNTIMES)


def set_service(store: ClusterStore, index: int, ip: str, labels: dict[str, str]) -> None:
    store.upsert("services", f"ns/s{index}", parse_service(service("ns", f"s{index}", ips=[ip], labels=labels)))


def set_slice(store: ClusterStore, index: int, service_index: int, where: str | None) -> None:
    endpoints = [] if where is None else [("10.1.0.1", where, True, True)]
    parsed = parse_endpoint_slice(
        endpoint_slice("ns", f"e{index}", service_name=f"s{service_index}", endpoints=endpoints)
    )
    store.upsert("endpointslices", parsed.key, parsed)


step = st.one_of(
    st.tuples(st.just("service"), st.integers(0, 3), st.sampled_from(IPS), st.sampled_from([{}, {"t": "x"}])),
    st.tuples(st.just("slice"), st.integers(0, 3), st.integers(0, 3), st.sampled_from([ME, "n2", None])),
    st.tuples(st.just("delete_service"), st.integers(0, 3), st.none(), st.none()),
    st.tuples(st.just("delete_slice"), st.integers(0, 3), st.none(), st.none()),
    st.tuples(st.just("refuse"), st.sampled_from(["a", "b"]), st.lists(st.booleans(), max_size=4), st.none()),
    st.tuples(st.just("restart"), st.sampled_from(["a", "b"]), st.none(), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_every_clean_pass_leaves_exactly_the_full_desired_set_acknowledged(steps: list[tuple[Any, ...]]) -> None:
    store, reconciler, sessions = harness()
    reconciler.reconcile_once()
    for kind, first, second, third in steps:
        if kind == "service":
            set_service(store, first, second, third)
        elif kind == "slice":
            set_slice(store, first, second, third)
        elif kind == "delete_service":
            store.delete("services", f"ns/s{first}")
        elif kind == "delete_slice":
            store.delete("endpointslices", f"ns/e{first}")
        elif kind == "refuse":  # ExaBGP answers `error` to some of the next lines
            sessions[first].refusals = list(second)
        else:  # ExaBGP restarted: a new process knows no routes
            sessions[first].generation += 1
        reconciler.reconcile_once()
        if not any(s.refusals for s in sessions.values()) and kind != "refuse":
            reconciler.reconcile_once()  # a refused line is retried by the next pass
            assert dict(reconciler.acknowledged) == expected(store)
    for session in sessions.values():
        session.refusals = []
    reconciler.reconcile_once()
    assert dict(reconciler.acknowledged) == expected(store)


def test_one_change_among_many_is_an_incremental_pass() -> None:
    """With 200 services announced, one slice change is converged by an incremental pass."""
    store, reconciler, _ = harness()
    for i in range(200):
        set_service(store, i, f"203.0.113.{i}", {})
        set_slice(store, i, i, "n2")
    reconciler.reconcile_once()
    assert len(reconciler.acknowledged) == 400
    full = reconciler.incremental_passes
    set_slice(store, 7, 7, None)  # s7 loses its endpoints
    reconciler.reconcile_once()
    assert reconciler.incremental_passes == full + 1
    assert dict(reconciler.acknowledged) == expected(store)
    assert ("a", ipaddress.ip_network("203.0.113.7/32")) not in reconciler.acknowledged


def test_a_conflict_is_logged_once_while_it_lasts_and_again_when_it_returns() -> None:
    """Problems are re-checked only for the services decided again: an unrelated change
    (an incremental pass) must neither repeat the warning nor forget the conflict."""
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "sourceAddress": "10.0.0.2"}],
            "advertisements": [
                {"name": "all", "med": 5},
                {"name": "y", "serviceSelectors": [{"matchLabels": {"t": "y"}}], "med": 7},
            ],
        }
    )
    store, reconciler, _ = harness(config)
    set_slice(store, 0, 0, "n2")
    set_slice(store, 1, 1, "n2")
    set_service(store, 1, "192.0.2.2", {})

    def conflicts_logged(change: Any) -> int:
        with capture_logs() as logs:
            change()
            reconciler.reconcile_once()
        return sum(1 for entry in logs if entry["event"] == "advertisements_conflict")

    assert conflicts_logged(lambda: set_service(store, 0, "192.0.2.1", {"t": "y"})) == 1
    passes = reconciler.incremental_passes
    assert conflicts_logged(lambda: set_slice(store, 1, 1, ME)) == 0  # unrelated change
    assert reconciler.incremental_passes == passes + 1
    assert conflicts_logged(lambda: set_service(store, 0, "192.0.2.1", {})) == 0  # resolved
    assert conflicts_logged(lambda: set_service(store, 0, "192.0.2.1", {"t": "y"})) == 1  # back
