"""Per-peer ExaBGP config rendering, password handling and session fingerprints (no processes)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from bgpspeaker.config import parse_config
from bgpspeaker.errors import ConfigError
from bgpspeaker.exabgp.render import render_config, session_fingerprint
from bgpspeaker.peers import Password, PeerRuntime, check_password_files

ROUTER_ID = ipaddress.ip_address("10.0.0.2")


def peer(**fields: Any) -> Any:
    data = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512, **fields}],
    }
    return parse_config(data).peers[0]


def render(runtime: PeerRuntime) -> str:
    return render_config(runtime, router_id=ROUTER_ID, relay_command=["/usr/bin/python3", "/x/relay.py"])


def test_every_peer_option_lands_in_the_neighbor_block() -> None:
    """Source address, MD5 (base64), multihop TTL, graceful restart, port, timers, families."""
    runtime = PeerRuntime(
        peer(
            sourceAddress="10.0.0.2",
            ebgpMultiHop=2,
            gracefulRestart="120s",
            holdTime="30s",
            peerPort=1179,
            families=["ipv4", "ipv6"],
        ),
        password=Password(b'p"a ss\\'),
    )
    text = render(runtime)
    for expected in (
        "local-address 10.0.0.2;",
        "md5-password cCJhIHNzXA==;",
        "md5-base64 true;",
        "outgoing-ttl 2;",
        "capability { graceful-restart 120; }",
        "connect 1179;",
        "hold-time 30;",
        "ipv4 unicast;",
        "ipv6 unicast;",
        "local-as 64513;",
        "peer-as 64512;",
    ):
        assert expected in text, expected
    assert 'p"a ss' not in text


def test_direct_ebgp_gets_ttl_1_and_ibgp_no_ttl() -> None:
    """FRR's default: TTL 1 toward a directly connected eBGP peer; iBGP leaves the OS default."""
    assert "outgoing-ttl 1;" in render(PeerRuntime(peer()))
    assert "outgoing-ttl" not in render(PeerRuntime(peer(peerASN=64513)))


def test_password_never_shows_in_repr_or_str() -> None:
    """A runtime (and so any log line holding one) shows <redacted>."""
    runtime = PeerRuntime(peer(), password=Password(b"hunter2"))
    assert "hunter2" not in repr(runtime) and "hunter2" not in str(runtime.password)


def test_fingerprint_ignores_next_hops_but_not_session_settings() -> None:
    """A next hop change keeps the session; a hold time, password or keepalive change does not."""
    base = PeerRuntime(peer())
    same = dataclasses.replace(base, next_hops={6: ipaddress.ip_address("fd00::2")})
    assert session_fingerprint(base, ROUTER_ID) == session_fingerprint(same, ROUTER_ID)
    for other in (
        PeerRuntime(peer(holdTime="30s")),
        PeerRuntime(peer(keepaliveTime="10s")),
        dataclasses.replace(base, password=Password(b"x")),
    ):
        assert session_fingerprint(base, ROUTER_ID) != session_fingerprint(other, ROUTER_ID)


def test_check_password_files(tmp_path: Path) -> None:
    """check-config reads password files: missing and over-long ones are problems; a trailing newline is fine."""
    good = tmp_path / "good"
    good.write_text("secret\n")
    check_password_files(dataclasses.replace(parse_config_with(str(good))))
    long = tmp_path / "long"
    long.write_text("x" * 81)
    with pytest.raises(ConfigError) as raised:
        check_password_files(parse_config_with(str(long)))
    assert raised.value.problems == [f"peers[0].passwordFile ({long}): the password must be 1..80 bytes, got 81 bytes"]
    with pytest.raises(ConfigError) as raised:
        check_password_files(parse_config_with(str(tmp_path / "missing")))
    assert raised.value.problems == [
        f"peers[0].passwordFile: cannot read {tmp_path / 'missing'}: No such file or directory"
    ]


def parse_config_with(password_file: str) -> Any:
    return parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512, "passwordFile": password_file}],
        }
    )
