"""The rtnetlink reader answers as pyroute2 does in namespaces built for it: secondary and
IPv6 addresses (link-local ones too), a default route or none, an unreachable address."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bgpspeaker import netinfo, rtnetlink
from lab.netns import Lab, enter_netns

ADDRESSES = ["10.0.0.1", "10.9.9.9", "203.0.113.9", "fd00::1", "2001:db8::9", "127.0.0.1"]


def _in(netns: str, read: Callable[[list[str]], dict[str, Any]]) -> Any:
    """``read(ADDRESSES)`` on a scratch thread inside ``netns``, as JSON."""
    out: list[Any] = []

    def body() -> None:
        enter_netns(netns)
        out.append(json.loads(json.dumps(read(ADDRESSES))))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    return out[0]


@pytest.mark.parametrize("default_route", [True, False], ids=["default-route", "no-default-route"])
def test_collect_equals_pyroute2_in_a_namespace(default_route: bool) -> None:
    """Same routes, global addresses (sorted, link-local left out) and primary IPv4 as pyroute2."""
    with Lab("rtnl") as lab:
        router, node = lab.netns("router"), lab.netns("node")
        lab.link(router, ["10.0.0.1/24", "fd00::1/64"], node, ["10.0.0.3/24", "10.0.0.2/24", "fd00::2/64"])
        lab.link(router, "10.9.0.1/24", node, "10.9.0.2/24")
        if default_route:
            lab.run("ip", "-n", node, "route", "add", "default", "via", "10.0.0.1", "src", "10.0.0.3")
        ours = _in(node, rtnetlink.collect)
        assert ours == _in(node, netinfo._collect)
        # The default route's source, else the lowest global IPv4 address.
        assert ours["primary_ipv4"] == ("10.0.0.3" if default_route else "10.0.0.2")
        towards_router = ours["routes"]["10.0.0.1"]["interface"]
        assert ours["routes"]["203.0.113.9"]["interface"] == (towards_router if default_route else None)
        assert ours["addresses"][str(towards_router)] == {"4": ["10.0.0.2", "10.0.0.3"], "6": ["fd00::2"]}
