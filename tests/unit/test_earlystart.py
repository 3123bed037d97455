"""Which peers start their ExaBGP before the Kubernetes client exists (bgpspeaker.earlystart)."""

from __future__ import annotations

from typing import Any

import pytest

from bgpspeaker.config import parse_config
from bgpspeaker.earlystart import early_peers


def peer(name: str, address: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "peerAddress": address, "peerASN": 64512, **extra}


SECRET = {"name": "bgp-auth", "namespace": "bgpspeaker-system", "key": "tor"}
RACK = [{"matchLabels": {"rack": "r1"}}]
ALL_NODES = [{"matchLabels": {}}]


@pytest.mark.parametrize(
    ("peers", "overrides", "want"),
    [
        pytest.param([peer("a", "10.0.0.1")], None, ["a"], id="plain-peer-starts-early"),
        pytest.param(
            [peer("a", "10.0.0.1", passwordFile="/etc/bgpspeaker/a.password")],
            None,
            ["a"],
            id="password-file-needs-no-api",
        ),
        pytest.param([peer("a", "10.0.0.1", passwordSecret=SECRET)], None, [], id="password-secret-needs-the-api"),
        pytest.param([peer("a", "10.0.0.1", nodeSelectors=RACK)], None, [], id="node-selectors-need-the-node"),
        pytest.param(
            [peer("a", "10.0.0.1"), peer("b", "10.0.1.1")],
            [{"name": "r1", "nodeSelectors": RACK, "routerID": "10.1.1.1", "peers": ["b"]}],
            ["a"],
            id="an-override-naming-a-peer-holds-only-that-peer",
        ),
        pytest.param(
            [peer("a", "10.0.0.1"), peer("b", "10.0.1.1")],
            [{"name": "all", "nodeSelectors": ALL_NODES, "myASN": 64999, "peers": []}],
            [],
            id="an-override-for-every-peer-holds-all",
        ),
        pytest.param(
            [peer("a", "10.0.0.1", passwordSecret=SECRET), peer("b", "10.0.1.1"), peer("c", "10.0.2.1")],
            None,
            ["b", "c"],
            id="config-order-kept",
        ),
    ],
)
def test_early_peers(peers: list[dict[str, Any]], overrides: list[dict[str, Any]] | None, want: list[str]) -> None:
    """Only peers that need neither the Node (selectors, overrides) nor the API (passwordSecret) start early."""
    data: dict[str, Any] = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "peers": peers,
    }
    if overrides is not None:
        data["nodeOverrides"] = overrides
    assert [p.name for p in early_peers(parse_config(data))] == want
