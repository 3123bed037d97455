"""bfdProfiles and bfdProfile: parsed like MetalLB's BFDProfile, every problem precise."""

from __future__ import annotations

from typing import Any

import pytest

from bgpspeaker.bfd.config import BfdProfile
from bgpspeaker.config import parse_config
from bgpspeaker.errors import ConfigError
from bgpspeaker.values import parse_duration, parse_duration_ms


def config(profiles: Any, **peer: Any) -> dict[str, Any]:
    """A config with one peer (tor-a) and ``profiles``."""
    document: dict[str, Any] = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": [{"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512, **peer}],
    }
    if profiles is not None:
        document["bfdProfiles"] = profiles
    return document


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(document)
    return raised.value.problems


def test_the_issue_example() -> None:
    """The issue's profile (minimumTtl with a multihop peer) parses to its values."""
    profile = {
        "name": "fast",
        "receiveInterval": "300ms",
        "transmitInterval": "300ms",
        "detectMultiplier": 3,
        "passiveMode": False,
        "minimumTtl": 254,
    }
    parsed = parse_config(config([profile], bfdProfile="fast", ebgpMultiHop=2))
    want = BfdProfile("fast", 300, 300, 3, False, 254)
    assert parsed.peers[0].bfd == want and parsed.bfd_profiles == (want,)


def test_defaults_and_no_bfd() -> None:
    """A profile with only a name is MetalLB's default (300 ms x 3); a peer without bfdProfile has none."""
    parsed = parse_config(config([{"name": "plain"}], bfdProfile="plain"))
    assert parsed.peers[0].bfd == BfdProfile("plain")
    assert parse_config(config(None)).peers[0].bfd is None


@pytest.mark.parametrize(
    ("profiles", "peer", "want"),
    [
        (
            [{"name": "fast"}],
            {"bfdProfile": "slow"},
            "peers[0].bfdProfile: no BFD profile named 'slow' (bfdProfiles: fast)",
        ),
        (None, {"bfdProfile": "fast"}, "peers[0].bfdProfile: no BFD profile named 'fast' (bfdProfiles: none)"),
        ([{"name": "f", "receiveInterval": "5ms"}], {}, "bfdProfiles[0].receiveInterval: must be 10ms..60s, got '5ms'"),
        (
            [{"name": "f", "transmitInterval": "61s"}],
            {},
            "bfdProfiles[0].transmitInterval: must be 10ms..60s, got '61s'",
        ),
        (
            [{"name": "f", "receiveInterval": 300}],
            {},
            "bfdProfiles[0].receiveInterval: must be 10ms..60s (a bare number is seconds: write 300ms), got 300",
        ),
        (
            [{"name": "f", "receiveInterval": "fast"}],
            {},
            "bfdProfiles[0].receiveInterval: must be a duration like 300ms",
        ),
        ([{"name": "f", "detectMultiplier": 1}], {}, "bfdProfiles[0].detectMultiplier: must be"),
        ([{"name": "f", "detectMultiplier": 256}], {}, "bfdProfiles[0].detectMultiplier: must be"),
        ([{"name": "f", "minimumTtl": 255}], {}, "bfdProfiles[0].minimumTtl: must be"),
        ([{"name": "f", "passiveMode": "yes"}], {}, "bfdProfiles[0].passiveMode: must be true or false, got 'yes'"),
        (
            [{"name": "f", "echoMode": True}],
            {},
            "bfdProfiles[0].echoMode: unknown field (allowed: bgpHoldDown, detectMultiplier,",
        ),
        ([{"name": "f", "bgpHoldDown": "2h"}], {}, "bfdProfiles[0].bgpHoldDown: must be 0s..1h, got '2h'"),
        ([{"name": "f", "bgpHoldDown": "soon"}], {}, "bfdProfiles[0].bgpHoldDown: must be a duration like 300ms"),
        ([{"name": "f"}, {"name": "f"}], {}, "bfdProfiles[1].name: duplicate profile name 'f'"),
        ([{"name": "Fast"}], {}, "bfdProfiles[0].name: must be a DNS label"),
        ({"name": "f"}, {}, "bfdProfiles: must be a list of profiles"),
        (
            [{"name": "f", "minimumTtl": 254}],
            {"bfdProfile": "f"},
            "peers[0].bfdProfile: profile 'f' sets minimumTtl, which is for multihop peers only;",
        ),
    ],
    ids=[
        "unknown-profile",
        "no-profiles",
        "rx-too-small",
        "tx-too-large",
        "bare-number",
        "not-a-duration",
        "mult-1",
        "mult-256",
        "ttl-255",
        "passive-not-bool",
        "unknown-key",
        "hold-down-too-long",
        "hold-down-not-a-duration",
        "duplicate",
        "bad-name",
        "not-a-list",
        "ttl-on-single-hop",
    ],
)
def test_problems(profiles: Any, peer: dict[str, Any], want: str) -> None:
    """Each bad input is one precise check-config line."""
    found = problems(config(profiles, **peer))
    assert any(p.startswith(want) for p in found), found


@pytest.mark.parametrize(
    ("value", "milliseconds"), [(None, 5000), ("0s", 0), ("1s500ms", 1500), ("10m", 600_000)], ids=str
)
def test_bgp_hold_down(value: str | None, milliseconds: int) -> None:
    """bgpHoldDown (ours, not MetalLB's): 5 s by default, 0 (reconnect at once) up to 1 h."""
    profile: dict[str, Any] = {"name": "f"} if value is None else {"name": "f", "bgpHoldDown": value}
    assert parse_config(config([profile], bfdProfile="f")).peers[0].bfd == BfdProfile(
        "f", bgp_hold_down_ms=milliseconds
    )


def test_a_broken_profile_is_reported_once() -> None:
    """A peer naming a profile that failed its own checks gets no second line."""
    found = problems(config([{"name": "f", "receiveInterval": "1ms"}], bfdProfile="f"))
    assert found == ["bfdProfiles[0].receiveInterval: must be 10ms..60s, got '1ms'"]


@pytest.mark.parametrize(
    ("text", "seconds", "milliseconds"),
    [
        (90, 90, 90_000),
        ("90s", 90, 90_000),
        ("2m", 120, 120_000),
        ("1h2m3s", 3723, 3_723_000),
        ("0", 0, 0),
        ("2000ms", 2, 2000),
        ("300ms", None, 300),
        ("1s500ms", None, 1500),
        ("2ms5s", None, None),
        ("ms", None, None),
    ],
    ids=str,
)
def test_durations(text: Any, seconds: int | None, milliseconds: int | None) -> None:
    """Durations accept milliseconds; whole-second fields take them only when whole."""
    assert parse_duration(text, "x", []) == seconds
    assert parse_duration_ms(text, "x", []) == milliseconds
