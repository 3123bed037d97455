"""Per-peer connectTime, routerID and dynamicASN: parsed values, what they make of the
session (eBGP or iBGP, ExaBGP's peer-as, the launcher's options) and the router ID order."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bgpspeaker.config import SpeakerConfig, parse_config
from bgpspeaker.errors import ConfigError
from bgpspeaker.exabgp.launcher import launcher_settings
from bgpspeaker.exabgp.render import render_config, session_fingerprint
from bgpspeaker.nodesettings import node_runtime, peers_for_node
from bgpspeaker.peers import PeerRuntime


def config(peer: dict[str, Any], **top: Any) -> SpeakerConfig:
    return parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "routerID": "10.0.0.2",
            "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", **peer}],
            **top,
        }
    )


def problems(peer: dict[str, Any], **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config(peer, **top)
    return raised.value.problems


@pytest.mark.parametrize(
    ("peer", "ebgp", "peer_as"),
    [
        pytest.param({"peerASN": 64512}, True, "peer-as 64512;", id="fixed-external"),
        pytest.param({"peerASN": 64513}, False, "peer-as 64513;", id="fixed-internal"),
        pytest.param({"dynamicASN": "external"}, True, "peer-as auto;", id="dynamic-external"),
        pytest.param({"dynamicASN": "internal"}, False, "peer-as 64513;", id="dynamic-internal"),
        pytest.param({"dynamicASN": "internal", "myASN": 65000}, False, "peer-as 65000;", id="dynamic-internal-own"),
    ],
)
def test_dynamic_asn_session_kind_and_peer_as(peer: dict[str, Any], ebgp: bool, peer_as: str) -> None:
    """dynamicASN internal is exactly our AS; external is ExaBGP's ``peer-as auto``."""
    parsed = config(peer).peers[0]
    assert parsed.ebgp is ebgp
    rendered = render_config(PeerRuntime(peer=parsed), router_id=ipaddress.ip_address("10.0.0.2"), relay_command=["r"])
    assert peer_as in rendered


@pytest.mark.parametrize(
    ("dynamic", "reject"),
    [pytest.param("external", True, id="external"), pytest.param("internal", False, id="internal")],
)
def test_dynamic_external_asks_the_launcher_to_refuse_our_own_asn(dynamic: str, reject: bool) -> None:
    """Only ``external`` needs the launcher's check: ``internal`` has a fixed peer-as."""
    peer = config({"dynamicASN": dynamic}).peers[0]
    settings = launcher_settings(
        keepalive_s=30,
        hold_time_s=90,
        speed_patches=True,
        idle_poll_ms=100,
        reject_own_asn=peer.dynamic_asn == "external",
    )
    assert ("--reject-own-asn" in settings.arguments()) is reject


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        pytest.param(
            {"dynamicASN": "both"}, ["peers[0].dynamicASN: must be one of internal, external, got 'both'"], id="kind"
        ),
        pytest.param(
            {"dynamicASN": "internal", "ebgpMultiHop": 2},
            ["peers[0].ebgpMultiHop: only for eBGP sessions; this one is iBGP (peerASN = myASN = 64513)"],
            id="internal-multihop",
        ),
        pytest.param(
            {"connectTime": True},
            ["peers[0].connectTime: must be a duration in whole seconds like 90s, 2m or 1m30s, got True"],
            id="connect-bool",
        ),
    ],
)
def test_bad_peer_options(peer: dict[str, Any], expected: list[str]) -> None:
    """Each bad option is one precise problem."""
    assert problems(peer if "peerASN" in peer or "dynamicASN" in peer else {"peerASN": 64512, **peer}) == expected


def test_dynamic_external_allows_prepend_and_refuses_local_pref() -> None:
    """The advertisement checks see the session kind dynamicASN gives."""
    advert = {"name": "a", "localPref": 200}
    assert problems({"dynamicASN": "external"}, advertisements=[advert]) == [
        "advertisements[0].localPref: iBGP only, but this advertisement reaches eBGP peer 'tor-a'"
        " (list only iBGP peers in peers, or drop localPref)"
    ]
    assert config({"dynamicASN": "external"}, advertisements=[{"name": "a", "asPathPrepend": 2}]).peers[0].ebgp


def test_connect_time_reaches_the_launcher_and_the_fingerprint() -> None:
    """connectTime is parsed to seconds; changing it restarts the session (it is in the fingerprint)."""
    fast = config({"peerASN": 64512, "connectTime": "2s"}).peers[0]
    slow = config({"peerASN": 64512, "connectTime": "1m"}).peers[0]
    assert (fast.connect_time_s, slow.connect_time_s) == (2, 60)
    router_id = ipaddress.ip_address("10.0.0.2")
    assert session_fingerprint(PeerRuntime(peer=fast), router_id) != session_fingerprint(
        PeerRuntime(peer=slow), router_id
    )
    assert config({"peerASN": 64512}).peers[0].connect_time_s is None


@pytest.mark.parametrize(
    ("peer_router_id", "override", "expected"),
    [
        pytest.param(None, None, "10.0.0.2", id="top-level"),
        pytest.param("10.9.9.9", None, "10.9.9.9", id="peer"),
        pytest.param("10.9.9.9", "10.1.1.1", "10.1.1.1", id="node-override-wins"),
        pytest.param(None, "10.1.1.1", "10.1.1.1", id="node-override"),
    ],
)
def test_router_id_order(peer_router_id: str | None, override: str | None, expected: str) -> None:
    """A node override's routerID wins over the peer's, which wins over the top-level one."""
    peer: dict[str, Any] = {"peerASN": 64512}
    if peer_router_id:
        peer["routerID"] = peer_router_id
    top: dict[str, Any] = {}
    if override:
        top["nodeOverrides"] = [{"name": "o", "nodeSelectors": [{"matchLabels": {"n": "a"}}], "routerID": override}]
    parsed = config(peer, **top)
    chosen = peers_for_node(parsed, {"n": "a"}).peers["tor-a"]
    _, router_id = node_runtime(PeerRuntime(peer=parsed.peers[0]), chosen, ipaddress.ip_address("10.0.0.2"))
    assert str(router_id) == expected


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        pytest.param(
            {"peerAddress": "fe80::1"},
            ["peers[0].interface: required with a link-local peerAddress (fe80::1): the link it is on, like 'eth0'"],
            id="link-local-without-interface",
        ),
        pytest.param(
            {"peerAddress": "fe80::1", "interface": "eth0; x"},
            ["peers[0].interface: must be an interface name (1..15 letters, digits, '_', '-', '.'), got 'eth0; x'"],
            id="interface-with-a-semicolon",
        ),
        pytest.param(
            {"interface": "a-very-long-interface"},
            [
                "peers[0].interface: must be an interface name (1..15 letters, digits, '_', '-', '.'),"
                " got 'a-very-long-interface'"
            ],
            id="interface-too-long",
        ),
    ],
)
def test_bad_interface(peer: dict[str, Any], expected: list[str]) -> None:
    """A link-local peer needs its link; the name is one ExaBGP's config and Linux accept."""
    assert problems({"peerASN": 64512, **peer}) == expected


def test_link_local_peer_renders_source_interface() -> None:
    """``interface`` becomes ExaBGP's source-interface; a link-local source is never named."""
    peer = config({"peerASN": 64512, "peerAddress": "fe80::1", "interface": "eth0", "sourceAddress": "fe80::2"})
    rendered = render_config(
        PeerRuntime(peer=peer.peers[0]), router_id=ipaddress.ip_address("10.0.0.2"), relay_command=["r"]
    )
    assert "source-interface eth0;" in rendered and "local-address" not in rendered
