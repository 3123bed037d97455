"""The decision as a table: each row a cluster, this node, and the whole expected outcome."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from bgpspeaker.cluster.model import Snapshot, parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from bgpspeaker.routes import Reason
from lab.kubeapi import endpoint_slice, node, service

ME = "node-a"
V4_PEER = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}
V6_PEER = {"name": "tor-v6", "peerAddress": "fd00::1", "peerASN": 64512}


def snapshot(*objects: dict[str, Any]) -> Snapshot:
    services, slices, nodes = {}, {}, {}
    for obj in objects:
        if obj["kind"] == "Service":
            parsed_service = parse_service(obj)
            services[parsed_service.key] = parsed_service
        elif obj["kind"] == "EndpointSlice":
            parsed_slice = parse_endpoint_slice(obj)
            assert parsed_slice.service_key is not None
            slices.setdefault(parsed_slice.service_key, {})[parsed_slice.key] = parsed_slice
        else:
            parsed_node = parse_node(obj)
            nodes[parsed_node.name] = parsed_node
    return Snapshot(services=services, slices_by_service=slices, nodes=nodes)


def eps(name: str, *endpoints: tuple[str, str, bool | None, bool | None]) -> dict[str, Any]:
    return endpoint_slice("default", f"{name}-x", service_name=name, endpoints=list(endpoints))


@dataclasses.dataclass
class Case:
    desc: str
    objects: list[dict[str, Any]]
    want_routes: dict[str, set[str]]
    """prefix -> services announcing it (peers checked separately)."""
    want_reasons: dict[str, Reason]
    """service -> reason of its (first) verdict."""
    peers: list[dict[str, Any]] = dataclasses.field(default_factory=lambda: [V4_PEER])
    lb_class: str = ""


CASES = [
    Case(
        "local policy, endpoint on another node: not announced",
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local"),
            eps("s", ("10.1.0.1", "node-b", True, True)),
        ],
        {},
        {"default/s": Reason.NO_LOCAL_ENDPOINTS},
    ),
    Case(
        "local policy, endpoint on this node: announced",
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local"), eps("s", ("10.1.0.1", ME, True, True))],
        {"192.0.2.1/32": {"default/s"}},
        {"default/s": Reason.LOCAL_ENDPOINT},
    ),
    Case(
        "cluster policy, endpoint anywhere: announced",
        [node(ME), service("default", "s", ips=["192.0.2.1"]), eps("s", ("10.1.0.1", "node-b", True, True))],
        {"192.0.2.1/32": {"default/s"}},
        {"default/s": Reason.CLUSTER_ENDPOINT},
    ),
    Case(
        "cluster policy, no endpoints: withdrawn",
        [node(ME), service("default", "s", ips=["192.0.2.1"])],
        {},
        {"default/s": Reason.NO_ENDPOINTS},
    ),
    Case(
        "local policy, no endpoints anywhere: no_endpoints",
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local")],
        {},
        {"default/s": Reason.NO_ENDPOINTS},
    ),
    Case(
        "ready unset (nil) counts as ready",
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local"), eps("s", ("10.1.0.1", ME, None, None))],
        {"192.0.2.1/32": {"default/s"}},
        {"default/s": Reason.LOCAL_ENDPOINT},
    ),
    Case(
        "not ready but serving (terminating during a rollout) keeps the route",
        [node(ME), service("default", "s", ips=["192.0.2.1"], policy="Local"), eps("s", ("10.1.0.1", ME, False, True))],
        {"192.0.2.1/32": {"default/s"}},
        {"default/s": Reason.LOCAL_ENDPOINT},
    ),
    Case(
        "ready false and serving false: not usable",
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], policy="Local"),
            eps("s", ("10.1.0.1", ME, False, False)),
        ],
        {},
        {"default/s": Reason.NO_ENDPOINTS},
    ),
    Case(
        "ready false, serving unset: not usable",
        [node(ME), service("default", "s", ips=["192.0.2.1"]), eps("s", ("10.1.0.1", ME, False, None))],
        {},
        {"default/s": Reason.NO_ENDPOINTS},
    ),
    Case(
        "cluster policy, only a terminating-serving endpoint elsewhere: announced",
        [node(ME), service("default", "s", ips=["192.0.2.1"]), eps("s", ("10.1.0.1", "node-b", False, True))],
        {"192.0.2.1/32": {"default/s"}},
        {"default/s": Reason.CLUSTER_ENDPOINT},
    ),
    Case(
        "shared IP: one qualifying service keeps it up, and only it is listed",
        [
            node(ME),
            service("default", "tcp", ips=["192.0.2.1"], policy="Local"),
            eps("tcp", ("10.1.0.1", "node-b", True, True)),
            service("default", "udp", ips=["192.0.2.1"]),
            eps("udp", ("10.1.0.2", "node-b", True, True)),
        ],
        {"192.0.2.1/32": {"default/udp"}},
        {"default/tcp": Reason.NO_LOCAL_ENDPOINTS, "default/udp": Reason.CLUSTER_ENDPOINT},
    ),
    Case(
        "shared IP: both qualify, both listed",
        [
            node(ME),
            service("default", "tcp", ips=["192.0.2.1"]),
            eps("tcp", ("10.1.0.1", "node-b", True, True)),
            service("default", "udp", ips=["192.0.2.1"]),
            eps("udp", ("10.1.0.2", "node-b", True, True)),
        ],
        {"192.0.2.1/32": {"default/tcp", "default/udp"}},
        {"default/tcp": Reason.CLUSTER_ENDPOINT, "default/udp": Reason.CLUSTER_ENDPOINT},
    ),
    Case(
        "node labelled exclude-from-external-load-balancers",
        [
            node(ME, labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
            service("default", "s", ips=["192.0.2.1"]),
            eps("s", ("10.1.0.1", ME, True, True)),
        ],
        {},
        {"default/s": Reason.NODE_EXCLUDED},
    ),
    Case(
        "node condition NetworkUnavailable=True",
        [
            node(ME, network_unavailable=True),
            service("default", "s", ips=["192.0.2.1"]),
            eps("s", ("10.1.0.1", ME, True, True)),
        ],
        {},
        {"default/s": Reason.NODE_NETWORK_UNAVAILABLE},
    ),
    Case(
        "this node's Node object is unknown",
        [node("node-b"), service("default", "s", ips=["192.0.2.1"]), eps("s", ("10.1.0.1", ME, True, True))],
        {},
        {"default/s": Reason.NODE_NOT_FOUND},
    ),
    Case(
        "service of another loadBalancerClass is ignored",
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"], lb_class="other.io/lb"),
            eps("s", ("10.1.0.1", ME, True, True)),
        ],
        {},
        {"default/s": Reason.CLASS_MISMATCH},
    ),
    Case(
        "our loadBalancerClass is announced, classless is not",
        [
            node(ME),
            service("default", "ours", ips=["192.0.2.1"], lb_class="example.com/bgp"),
            eps("ours", ("10.1.0.1", ME, True, True)),
            service("default", "plain", ips=["192.0.2.2"]),
            eps("plain", ("10.1.0.1", ME, True, True)),
        ],
        {"192.0.2.1/32": {"default/ours"}},
        {"default/ours": Reason.CLUSTER_ENDPOINT, "default/plain": Reason.CLASS_MISMATCH},
        lb_class="example.com/bgp",
    ),
    Case(
        "hostname-only ingress is skipped with a reason",
        [node(ME), service("default", "s", hostnames=["lb.example.com"]), eps("s", ("10.1.0.1", ME, True, True))],
        {},
        {"default/s": Reason.HOSTNAME_INGRESS},
    ),
    Case(
        "no ingress yet",
        [node(ME), service("default", "s"), eps("s", ("10.1.0.1", ME, True, True))],
        {},
        {"default/s": Reason.NO_INGRESS_IP},
    ),
    Case(
        "IPv6 ingress with only an IPv4 peer: not announced anywhere",
        [node(ME), service("default", "s", ips=["2001:db8::1"]), eps("s", ("10.1.0.1", ME, True, True))],
        {},
        {"default/s": Reason.NO_PEER_FOR_FAMILY},
    ),
    Case(
        "dual-stack ingress with both peers: /32 and /128",
        [node(ME), service("default", "s", ips=["192.0.2.1", "2001:db8::1"]), eps("s", ("10.1.0.1", ME, True, True))],
        {"192.0.2.1/32": {"default/s"}, "2001:db8::1/128": {"default/s"}},
        {"default/s": Reason.CLUSTER_ENDPOINT},
        peers=[V4_PEER, V6_PEER],
    ),
    Case(
        "endpoint without addresses is not usable",
        [
            node(ME),
            service("default", "s", ips=["192.0.2.1"]),
            {**eps("s", ("10.1.0.1", ME, True, True)), "endpoints": [{"addresses": [], "nodeName": ME}]},
        ],
        {},
        {"default/s": Reason.NO_ENDPOINTS},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_decision_table(case: Case) -> None:
    """Each row: the announced prefixes with their services, and each service's reason."""
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": case.peers,
            "loadBalancerClass": case.lb_class,
        }
    )
    decision = decide(snapshot(*case.objects), config, ME)
    got_routes = {str(p): set(a.services) for p, a in decision.announcements.items()}
    got_reasons = {}
    for verdict in decision.verdicts:
        got_reasons.setdefault(verdict.service, verdict.reason)
    assert (got_routes, got_reasons) == (case.want_routes, case.want_reasons)


def test_ipv6_prefix_goes_only_to_peers_carrying_ipv6() -> None:
    """With an IPv4 and an IPv6 peer, the /32 goes to the first and the /128 to the second."""
    config = parse_config(
        {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": [V4_PEER, V6_PEER]}
    )
    snap = snapshot(
        node(ME), service("default", "s", ips=["192.0.2.1", "2001:db8::1"]), eps("s", ("10.1.0.1", ME, True, True))
    )
    decision = decide(snap, config, ME)
    assert {str(p): set(a.peers) for p, a in decision.announcements.items()} == {
        "192.0.2.1/32": {"tor-a"},
        "2001:db8::1/128": {"tor-v6"},
    }


def test_non_load_balancer_services_get_no_verdict() -> None:
    """ClusterIP services are not ours: no route, and no verdict to log or explain."""
    config = parse_config(
        {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": [V4_PEER]}
    )
    snap = snapshot(node(ME), service("default", "s", ips=["192.0.2.1"], type_="ClusterIP"))
    decision = decide(snap, config, ME)
    assert (dict(decision.announcements), decision.verdicts) == ({}, ())


def test_decision_is_pure() -> None:
    """Same inputs, same output: deciding twice gives equal decisions."""
    config = parse_config(
        {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513, "peers": [V4_PEER]}
    )
    snap = snapshot(node(ME), service("default", "s", ips=["192.0.2.1"]), eps("s", ("10.1.0.1", ME, True, True)))
    assert decide(snap, config, ME) == decide(snap, config, ME)
    assert ipaddress.ip_network("192.0.2.1/32") in decide(snap, config, ME).announcements
