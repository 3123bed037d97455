"""What a reload changes, by name (the ``config_reloaded`` log line)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from bgpspeaker.config import Advertisement, SpeakerConfig, parse_config
from bgpspeaker.configdiff import ConfigChanges, config_changes
from tests.unit.test_reconciler_incremental import CONFIG, RUNTIMES, harness

TOR_A = {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512}
TOR_B = {"name": "tor-b", "peerAddress": "10.0.1.1", "peerASN": 64513}
TOR_C = {"name": "tor-c", "peerAddress": "10.0.2.1", "peerASN": 64513}
WEB = {"name": "web", "serviceSelectors": [{"matchLabels": {"tier": "web"}}], "communities": ["64512:100"]}
ALL = {"name": "all"}


def config(
    peers: list[dict[str, Any]], advertisements: list[dict[str, Any]] | None = None, **top: Any
) -> SpeakerConfig:
    data: dict[str, Any] = {"apiVersion": "bgpspeaker.io/v1alpha1", "kind": "SpeakerConfig", "myASN": 64513}
    data |= {"peers": peers, **top}
    if advertisements is not None:
        data["advertisements"] = advertisements
    return parse_config(data)


BASE = config([TOR_A, TOR_B], [WEB, ALL])

CASES = [
    ("identical", BASE, ConfigChanges()),
    (
        "peer added",
        config([TOR_A, TOR_B, TOR_C], [WEB, ALL]),
        ConfigChanges(peers_added=("tor-c",)),
    ),
    ("peer removed", config([TOR_A], [WEB, ALL]), ConfigChanges(peers_removed=("tor-b",))),
    (
        "peer hold time",
        config([TOR_A, TOR_B | {"holdTime": "30s"}], [WEB, ALL]),
        ConfigChanges(peers_changed=("tor-b",)),
    ),
    (
        "communities",
        config([TOR_A, TOR_B], [WEB | {"communities": ["64512:200"]}, ALL]),
        ConfigChanges(advertisements_changed=("web",)),
    ),
    (
        "peers list removed, one added",
        config([TOR_A, TOR_B], [WEB, ALL | {"peers": ["tor-a"]}, {"name": "aggregate", "aggregationLength": 24}]),
        ConfigChanges(advertisements_added=("aggregate",), advertisements_changed=("all",)),
    ),
    (
        "no advertisements: the default one",
        config([TOR_A, TOR_B]),
        ConfigChanges(advertisements_added=("default",), advertisements_removed=("all", "web")),
    ),
    (
        "top-level settings",
        config([TOR_A, TOR_B], [WEB, ALL], myASN=64600, holdDown={"withdrawAfter": "5s"}),
        ConfigChanges(peers_changed=("tor-a", "tor-b"), settings_changed=("holdDown", "myASN")),
    ),
]


@pytest.mark.parametrize(("new", "want"), [(new, want) for _, new, want in CASES], ids=[c[0] for c in CASES])
def test_config_changes(new: SpeakerConfig, want: ConfigChanges) -> None:
    """Each difference is named once, under what it is."""
    assert config_changes(BASE, new) == want


def test_fields_say_whether_anything_changed() -> None:
    """The log line carries every list (empty ones too) and ``changed``."""
    assert config_changes(BASE, BASE).fields()["changed"] is False
    fields = config_changes(BASE, config([TOR_A], [WEB, ALL])).fields()
    assert fields == {
        "peers_added": [],
        "peers_removed": ["tor-b"],
        "peers_changed": [],
        "advertisements_added": [],
        "advertisements_removed": [],
        "advertisements_changed": [],
        "settings_changed": [],
        "changed": True,
    }


def test_a_second_reload_before_the_pass_compares_with_the_first() -> None:
    """Two reloads within one pass: the second is compared with the first (requested, not yet
    in force), so what the first changed is not reported again."""
    _, reconciler, _ = harness()
    first = dataclasses.replace(CONFIG, advertisements=(*CONFIG.advertisements, Advertisement(name="extra")))
    reconciler.request_config(first, RUNTIMES, ipaddress.ip_address("10.0.0.2"))
    assert reconciler.config is CONFIG
    assert reconciler.latest_config is first
    assert config_changes(reconciler.latest_config, first) == ConfigChanges()
