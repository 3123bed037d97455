"""The memoized decision equals the full one, step after step (hypothesis drives the changes)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bgpspeaker.cluster.model import Snapshot, parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.config import parse_config
from bgpspeaker.decision import Decision, DecisionMemo, decide
from bgpspeaker.routes import Reason, Verdict
from lab.kubeapi import endpoint_slice, node, service

ME = "n1"
PEERS = [
    {"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "families": ["ipv4", "ipv6"]},
    {"name": "b", "peerAddress": "10.0.1.1", "peerASN": 64513, "nodeSelectors": [{"matchLabels": {"rack": "r1"}}]},
]
CONFIGS = [
    parse_config({"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": PEERS}),
    parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "serviceAnnotations": True,
            "peers": PEERS,
            "advertisements": [
                {"name": "x", "serviceSelectors": [{"matchLabels": {"t": "x"}}], "communities": ["1:1"], "med": 5},
                {"name": "y", "peers": ["a"], "aggregationLength": 24, "med": 7},
                {"name": "z", "med": 9, "communities": ["2:2"]},
            ],
        }
    ),
]
IPS = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.1", "2001:db8::1"]

step = st.one_of(
    st.tuples(st.just("endpoint"), st.integers(0, 4), st.sampled_from([ME, "n2", None])),
    st.tuples(st.just("ip"), st.integers(0, 4), st.sampled_from(IPS)),
    st.tuples(st.just("labels"), st.integers(0, 4), st.sampled_from([{}, {"t": "x"}])),
    st.tuples(
        st.just("annotation"),
        st.integers(0, 4),
        st.sampled_from([{}, {"bgpspeaker.io/med": "3"}, {"bgpspeaker.io/med": "x"}]),
    ),
    st.tuples(st.just("policy"), st.integers(0, 4), st.sampled_from(["Cluster", "Local"])),
    st.tuples(st.just("delete"), st.integers(0, 4), st.none()),
    st.tuples(st.just("node"), st.just(0), st.sampled_from([{}, {"rack": "r1"}])),
    st.tuples(st.just("config"), st.integers(0, 1), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_memoized_decision_matches_the_full_one(steps: list[tuple[str, int, Any]]) -> None:
    """Apply each change, rebuild the snapshot reusing unchanged objects, compare both decisions."""
    state = {
        i: {"ip": IPS[i], "labels": {}, "annotations": {}, "policy": "Cluster", "endpoint": "n2"} for i in range(5)
    }
    parsed: dict[int, Any] = {}
    slices: dict[int, Any] = {}
    node_labels: dict[str, str] = {}
    node_obj = parse_node(node(ME))
    config = CONFIGS[0]
    memo = DecisionMemo()

    def build(i: int) -> None:
        fields = state[i]
        parsed[i] = parse_service(
            service(
                "ns", f"s{i}", ips=[fields["ip"]], policy=fields["policy"], labels=fields["labels"],
                annotations=fields["annotations"],
            )
        )  # fmt: skip
        endpoints = [] if fields["endpoint"] is None else [("10.1.0.1", fields["endpoint"], True, True)]
        slices[i] = parse_endpoint_slice(endpoint_slice("ns", f"s{i}-1", service_name=f"s{i}", endpoints=endpoints))

    for i in state:
        build(i)
    for kind, index, value in [("noop", 0, None), *steps]:
        if kind == "config":
            config = CONFIGS[index]
        elif kind == "node":
            node_labels = value
            node_obj = parse_node(node(ME, labels=node_labels))
        elif kind == "delete":
            state.pop(index, None)
            parsed.pop(index, None)
            slices.pop(index, None)
        elif kind != "noop":
            if index not in state:
                state[index] = {
                    "ip": IPS[index],
                    "labels": {},
                    "annotations": {},
                    "policy": "Cluster",
                    "endpoint": "n2",
                }
            state[index][{"annotation": "annotations"}.get(kind, kind)] = value
            build(index)
        snapshot = Snapshot(
            services={p.key: p for p in parsed.values()},
            slices_by_service={s.service_key: {s.key: s} for s in slices.values()},
            nodes={ME: node_obj},
        )
        assert decide(snapshot, config, ME, memo=memo) == decide(snapshot, config, ME)


store_step = st.one_of(
    st.tuples(st.just("service"), st.integers(0, 2), st.sampled_from(IPS), st.sampled_from(["Cluster", "Local"])),
    st.tuples(st.just("service_type"), st.integers(0, 2), st.sampled_from(["LoadBalancer", "ClusterIP"]), st.none()),
    st.tuples(st.just("slice"), st.integers(0, 2), st.integers(0, 2), st.sampled_from([ME, "n2", None])),
    st.tuples(st.just("delete_service"), st.integers(0, 2), st.none(), st.none()),
    st.tuples(st.just("delete_slice"), st.integers(0, 2), st.none(), st.none()),
    st.tuples(st.just("relist"), st.just(0), st.none(), st.none()),
    st.tuples(st.just("node"), st.just(0), st.sampled_from([{}, {"rack": "r1"}]), st.none()),
    st.tuples(st.just("config"), st.integers(0, 1), st.none(), st.none()),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(store_step, min_size=1, max_size=30))
@example([("service", 0, IPS[0], "Cluster"), ("slice", 0, 0, "n2"), ("delete_slice", 0, None, None)])
@example([("service", 0, IPS[0], "Cluster"), ("slice", 0, 0, "n2"), ("slice", 0, 1, "n2")])
@example([("service", 0, IPS[0], "Local"), ("slice", 0, 0, ME), ("delete_service", 0, None, None)])
@example([("service", 0, IPS[0], "Cluster"), ("slice", 0, 0, "n2"), ("service_type", 0, "ClusterIP", None)])
def test_memo_fed_by_the_store_change_log_matches_the_full_decision(steps: list[tuple[str, int, Any, Any]]) -> None:
    """The memo looks only at the services the store's change log names. Step by step it
    must equal the full decision, and what it reports as changed must cover every
    announcement and verdict that really changed."""
    from bgpspeaker.cluster.store import ClusterStore

    store = ClusterStore(on_change=lambda: None)
    store.replace("nodes", {ME: parse_node(node(ME))})
    store.replace("services", {})
    store.replace("endpointslices", {})
    config = CONFIGS[1]
    memo = DecisionMemo()
    previous = decide(store.snapshot(), config, ME, memo=memo)
    for kind, index, value, extra in steps:
        if kind == "service":
            store.upsert(
                "services", f"ns/s{index}", parse_service(service("ns", f"s{index}", ips=[value], policy=extra))
            )
        elif kind == "service_type":
            raw = service("ns", f"s{index}", ips=[IPS[index % len(IPS)]])
            raw["spec"]["type"] = value
            store.upsert("services", f"ns/s{index}", parse_service(raw))
        elif kind == "slice":  # a slice may move from one service to another
            endpoints = [] if extra is None else [("10.1.0.1", extra, True, True)]
            parsed = parse_endpoint_slice(
                endpoint_slice("ns", f"e{index}", service_name=f"s{value}", endpoints=endpoints)
            )
            store.upsert("endpointslices", parsed.key, parsed)
        elif kind == "delete_service":
            store.delete("services", f"ns/s{index}")
        elif kind == "delete_slice":
            store.delete("endpointslices", f"ns/e{index}")
        elif kind == "relist":  # as after a 410: same objects, a new list
            snapshot = store.snapshot()
            store.replace("services", dict(snapshot.services))
        elif kind == "node":
            store.upsert("nodes", ME, parse_node(node(ME, labels=value)))
        else:
            config = CONFIGS[index]
        snapshot = store.snapshot()
        current = decide(snapshot, config, ME, memo=memo)
        assert current == decide(snapshot, config, ME)
        delta = memo.last
        if delta is not None:
            moved = {
                prefix
                for prefix in set(previous.announcements) | set(current.announcements)
                if previous.announcements.get(prefix) != current.announcements.get(prefix)
            }
            assert moved <= delta.prefixes
            before, after = _by_service(previous), _by_service(current)
            differ = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
            assert differ <= delta.services
            assert dict(delta.verdicts_by_service) == after
        previous = current


def _by_service(decision: Decision) -> dict[str, list[Verdict]]:
    """Each service's own verdicts (the conflict verdicts the decision appends left out)."""
    found: dict[str, list[Verdict]] = {}
    for verdict in decision.verdicts:
        if verdict.reason is not Reason.CONFLICTING_ADVERTISEMENTS:
            found.setdefault(verdict.service, []).append(verdict)
    return found
