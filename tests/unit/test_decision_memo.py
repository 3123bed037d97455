"""The memoized decision equals the full one, step after step (hypothesis drives the changes)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpspeaker.config import parse_config
from bgpspeaker.decision import DecisionMemo, decide
from bgpspeaker.model import Snapshot, parse_endpoint_slice, parse_node, parse_service
from tests.lab.kubeapi import endpoint_slice, node, service

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
