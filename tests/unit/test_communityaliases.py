"""communityAliases: names usable wherever a community is (advertisements, the annotation),
each bad alias or unknown name one precise problem."""

from __future__ import annotations

from typing import Any

import pytest

from bgpspeaker.decision import decide
from bgpspeaker.errors import ConfigError
from bgpspeaker.routes import Attributes, Reason
from lab.kubeapi import node
from tests.unit.test_advertisements import config, routes, web
from tests.unit.test_decision import ME, snapshot

ALIASES = [
    {"name": "vpn-only", "value": "64512:100"},
    {"name": "region.eu", "value": "large:64512:1:2"},
    {"name": "keep-local", "value": "no-export"},
]


def problems(**extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config(**extra)
    return raised.value.problems


def test_aliases_in_advertisements_become_their_communities() -> None:
    """A standard, a large and a well-known alias, mixed with a plain community."""
    advertisement = {"name": "a", "communities": ["vpn-only", "region.eu", "keep-local", "64512:7"]}
    parsed = config([advertisement], communityAliases=ALIASES)
    assert parsed.advertisements[0].communities == ("64512:100", "no-export", "64512:7")
    assert parsed.advertisements[0].large_communities == ("64512:1:2",)


def test_aliases_in_the_annotation() -> None:
    """The communities annotation resolves aliases too."""
    snap = snapshot(node(ME), *web(annotations={"bgpspeaker.io/communities": "vpn-only, region.eu"}))
    decision = decide_with(snap, serviceAnnotations=True, communityAliases=ALIASES)
    assert routes(decision)["192.0.2.10/32"]["tor-a"] == Attributes(
        communities=("64512:100",), large_communities=("64512:1:2",)
    )


def test_unknown_alias_in_the_annotation_is_the_usual_invalid_annotation() -> None:
    """An unknown name: the VIP still goes out plain, and the verdict names the alias and the known ones."""
    snap = snapshot(node(ME), *web(annotations={"bgpspeaker.io/communities": "vpn-onyl"}))
    decision = decide_with(snap, serviceAnnotations=True, communityAliases=ALIASES)
    assert routes(decision)["192.0.2.10/32"]["tor-a"] == Attributes()
    verdict = next(v for v in decision.verdicts if v.ip is not None)
    assert verdict.reason is Reason.CLUSTER_ENDPOINT
    assert verdict.detail == (
        "annotation bgpspeaker.io/communities[0]: no community alias named 'vpn-onyl'"
        " (communityAliases: keep-local, region.eu, vpn-only)"
    )


def decide_with(snap: Any, **extra: Any) -> Any:
    return decide(snap, config(**extra), ME)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            {"advertisements": [{"name": "a", "communities": ["vpn-onyl"]}], "communityAliases": ALIASES},
            [
                "advertisements[0].communities[0]: no community alias named 'vpn-onyl'"
                " (communityAliases: keep-local, region.eu, vpn-only)"
            ],
            id="unknown-name",
        ),
        pytest.param(
            {"advertisements": [{"name": "a", "communities": ["vpn-only"]}]},
            ["advertisements[0].communities[0]: no community alias named 'vpn-only' (communityAliases: none defined)"],
            id="no-aliases",
        ),
        pytest.param(
            {"communityAliases": [{"name": "x", "value": "64512:70000"}]},
            [
                "communityAliases[0].value[0]: must be 'ASN:VALUE' (each 0..65535), 'large:GLOBAL:LOCAL1:LOCAL2'"
                " (each 0..4294967295), one of blackhole, graceful-shutdown, no-advertise, no-export,"
                " no-export-subconfed, no-peer or a communityAliases name; got '64512:70000'"
            ],
            id="bad-value",
        ),
        pytest.param(
            {"communityAliases": [{"name": "no-export", "value": "1:1"}]},
            ["communityAliases[0].name: 'no-export' is a well-known community already; pick another name"],
            id="well-known-name",
        ),
        pytest.param(
            {"communityAliases": [{"name": "a", "value": "1:1"}, {"name": "a", "value": "1:2"}]},
            ["communityAliases[1].name: duplicate of communityAliases[0], got 'a'"],
            id="duplicate",
        ),
        pytest.param(
            {"communityAliases": [{"name": "64512:1", "value": "1:1"}]},
            [
                "communityAliases[0].name: must be a lowercase name starting with a letter (letters, digits,"
                " '-', '.', at most 63), got '64512:1'"
            ],
            id="name-is-a-community",
        ),
        pytest.param(
            {"communityAliases": [{"name": "a", "value": 100, "tag": 1}]},
            [
                "communityAliases[0].tag: unknown field (allowed: name, value)",
                "communityAliases[0].value: must be a community like '64512:100' or 'large:64512:1:2', got 100",
            ],
            id="not-a-string-and-unknown-key",
        ),
        pytest.param(
            {"communityAliases": {"vpn-only": "64512:100"}},
            ["communityAliases: must be a list of at most 1000 {name, value} mappings, got {'vpn-only': '64512:100'}"],
            id="mapping",
        ),
    ],
)
def test_bad_aliases(extra: dict[str, Any], expected: list[str]) -> None:
    """Each problem names its path, the bad value and what is allowed."""
    assert problems(**extra) == expected
