"""Bad input never crashes and never injects: hostile objects through parse -> decide -> encode.

Services carry random labels and ``bgpspeaker.io/`` annotations (unicode, newlines,
control characters, huge numbers), mixed and invalid ingress IPs and hostnames;
EndpointSlices carry long endpoint lists with missing fields. Whatever parses is
decided with annotations and several advertisements on, and every resulting route is
encoded: no exception escapes and every command is exactly one printable line.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bgpspeaker.cluster.model import ObjectInvalid, Snapshot, parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.config import parse_config
from bgpspeaker.decision import decide
from bgpspeaker.exabgp.commands import announce_line, withdraw_line

NODE = "n1"
CONFIG = parse_config(
    {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "serviceAnnotations": True,
        "peers": [
            {"name": "a", "peerAddress": "10.0.0.1", "peerASN": 64512, "families": ["ipv4", "ipv6"]},
            {"name": "b", "peerAddress": "fd00::1", "peerASN": 64513},
        ],
        "advertisements": [
            {"name": "x", "serviceSelectors": [{"matchLabels": {"t": "x"}}], "communities": ["1:1"], "med": 5},
            {"name": "y", "peers": ["a"], "aggregationLength": 24, "communities": ["large:1:2:3"], "med": 7},
            {"name": "z", "peers": ["b"], "localPref": 300},
        ],
    }
)

hostile_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    [
        "1:2\nshutdown",
        "64512:1, no-export",
        "99999999999",
        "-1",
        "7",
        " 3 ",
        "large:1:2:3",
        "\x00",
        "1" * 5000,
        "9" * 4301,
        "\u0661\u0660",
        "\u0666\u0664\u0665\u0661\u0662:\u0661\u0660\u0660",
        ",".join(["1:1"] * 500),
    ]
)
valid_ip = st.ip_addresses().map(str)
ips = st.one_of(
    valid_ip,
    valid_ip,
    valid_ip,
    st.sampled_from(["10.0.0.300", "::ffff:1.2.3.4", "fe80::1%eth0", "", "192.0.2.1\n", "1.2.3.4/32"]),
    hostile_text,
)


@st.composite
def hostile_service(draw: st.DrawFn, index: int) -> dict[str, Any]:
    ingress = draw(
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"ip": ips}),
                st.fixed_dictionaries({"hostname": hostile_text}),
                st.fixed_dictionaries({"ip": st.none() | st.integers()}),
            ),
            min_size=1,
            max_size=4,
        )
    )
    annotations = draw(
        st.dictionaries(
            st.sampled_from(["bgpspeaker.io/communities", "bgpspeaker.io/med", "bgpspeaker.io/as-path-prepend"]),
            hostile_text,
            max_size=3,
        )
    )
    return {
        "kind": "Service",
        "metadata": {
            "namespace": "ns",
            "name": f"s{index}",
            "labels": draw(
                st.dictionaries(st.sampled_from(["t", "x\n", "é"]), hostile_text | st.just("x"), max_size=2)
            ),
            "annotations": annotations,
        },
        "spec": {
            "type": draw(st.sampled_from(["LoadBalancer"] * 4 + ["ClusterIP", "LoadBalancer\n"])),
            "externalTrafficPolicy": draw(st.sampled_from(["Cluster", "Local", "local", None])),
        },
        "status": {"loadBalancer": {"ingress": ingress}},
    }


@st.composite
def hostile_slice(draw: st.DrawFn, index: int) -> dict[str, Any]:
    usable = st.fixed_dictionaries(
        {"addresses": st.just(["10.1.0.1"]), "nodeName": st.sampled_from([NODE, "other"]), "conditions": st.just({})}
    )
    endpoint = (
        usable
        | usable
        | usable
        | st.fixed_dictionaries(
            {},
            optional={
                "addresses": st.just(["10.1.0.1"]) | st.lists(st.text(max_size=8), max_size=2),
                "nodeName": st.sampled_from([NODE, "other", "n1\n"]),
                "conditions": st.fixed_dictionaries(
                    {}, optional={"ready": st.booleans() | st.none(), "serving": st.booleans() | st.none()}
                ),
            },
        )
    )
    size = draw(st.sampled_from([0, 1, 3, 1000]))
    endpoints = [draw(endpoint)] * size
    return {
        "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": f"s{index}-1", "labels": {"kubernetes.io/service-name": f"s{index}"}},
        "endpoints": endpoints,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=5, unique=True).flatmap(
        lambda ids: st.tuples(
            st.tuples(*(hostile_service(i) for i in ids)), st.tuples(*(hostile_slice(i) for i in ids))
        )
    ),
    st.dictionaries(
        st.sampled_from(["t", "rack", "node.kubernetes.io/exclude-from-external-load-balancers"]),
        st.just("x"),
        max_size=2,
    ),
)
def test_hostile_objects_decide_and_encode_to_single_commands(objects: Any, node_labels: dict[str, str]) -> None:
    """No exception but ObjectInvalid from parsing; every encoded command is one printable line."""
    services_raw, slices_raw = objects
    services, slices = {}, {}
    for raw in services_raw:
        try:
            parsed = parse_service(raw)
        except ObjectInvalid:
            continue
        services[parsed.key] = parsed
    for raw in slices_raw:
        try:
            parsed_slice = parse_endpoint_slice(raw)
        except ObjectInvalid:
            continue
        if parsed_slice.service_key:
            slices.setdefault(parsed_slice.service_key, {})[parsed_slice.key] = parsed_slice
    node = parse_node({"metadata": {"name": NODE, "labels": node_labels}, "status": {"conditions": []}})
    decision = decide(Snapshot(services=services, slices_by_service=slices, nodes={NODE: node}), CONFIG, NODE)
    event(f"announced routes: {'some' if decision.announcements else 'none'}")
    peers = {peer.name: peer for peer in CONFIG.peers}
    for prefix, announcement in decision.announcements.items():
        for name, attributes in announcement.routes.items():
            peer = peers[name]
            for line in (
                announce_line(peer.peer_address, attributes, [prefix], my_asn=peer.my_asn),
                withdraw_line(peer.peer_address, [prefix]),
            ):
                assert line.isprintable() and line.isascii() and "\n" not in line
                assert line.count(" announce ") + line.count(" withdraw ") == 1
    for verdict in decision.verdicts:  # details quote hostile values: one bounded line each
        assert "\n" not in verdict.detail and len(verdict.detail) < 1000, verdict.detail
