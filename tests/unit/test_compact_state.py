"""The daemon's long-lived state in its compact forms answers as the plain forms would.

At 10,000 services the daemon keeps one prefix per VIP, one contribution tuple per
route, one rate-limit bucket per service that had an Event, and one key string per
object: each is kept in a smaller form (docs/performance.md, "The daemon's own memory").
These tests hold each compact form to the plain one it replaces.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from bgpspeaker.cluster.model import parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.cluster.store import ClusterStore
from bgpspeaker.decision import _Contribution, _network, _with_contribution
from bgpspeaker.events import _Bucket, _take, without_full_buckets
from bgpspeaker.routes import Attributes
from lab.kubeapi import endpoint_slice, node, service


@pytest.mark.parametrize(
    ("address", "length"),
    [
        ("198.18.0.1", 32),
        ("198.18.0.1", 31),
        ("198.18.0.77", 24),
        ("2001:db8::1", 128),
        ("2001:db8::1", 127),
        ("2001:db8::1:5", 112),
    ],
    ids=["v4-host", "v4-31", "v4-24", "v6-host", "v6-127", "v6-112"],
)
def test_prefix_answers_as_ipaddress_does(address: str, length: int) -> None:
    """A decision's prefix equals, hashes, prints and lists its hosts like ipaddress's own."""
    ip = ipaddress.ip_address(address)
    ours = _network(ip, length)
    plain = ipaddress.ip_network((int(ip), length), strict=False)
    assert (ours, hash(ours), str(ours)) == (plain, hash(plain), str(plain))
    assert (ours.network_address, ours.broadcast_address, ours.netmask) == (
        plain.network_address,
        plain.broadcast_address,
        plain.netmask,
    )
    assert ip in ours
    hosts, plain_hosts = ours.hosts(), plain.hosts()
    assert type(hosts) is type(plain_hosts)
    assert list(hosts)[:300] == list(plain_hosts)[:300]


def test_host_route_shares_the_vip_address_and_keeps_no_closure() -> None:
    """A /32 keeps the VIP's own address object and no per-object hosts() closure."""
    ip = ipaddress.ip_address("198.18.3.4")
    prefix = _network(ip, 32)
    assert prefix.network_address is ip
    assert "hosts" not in vars(prefix)


def _contribution(service_key: str, source: str) -> _Contribution:
    return _Contribution(service_key, ipaddress.ip_address("198.18.0.1"), Attributes(), source)


def test_contributions_stay_in_service_order() -> None:
    """A route's contributions read in service order, each service's in the order it made them."""
    found: tuple[_Contribution, ...] = ()
    for service_key, source in [("ns/b", "1"), ("ns/d", "1"), ("ns/a", "1"), ("ns/b", "2"), ("ns/c", "1")]:
        found = _with_contribution(found, _contribution(service_key, source))
    assert [(c.service, c.source) for c in found] == [
        ("ns/a", "1"),
        ("ns/b", "1"),
        ("ns/b", "2"),
        ("ns/c", "1"),
        ("ns/d", "1"),
    ]


def test_full_buckets_are_dropped_and_others_kept() -> None:
    """A bucket refilled to its burst is dropped (a new one is the same); a drained one stays."""
    burst, refill_s = 5, 10.0
    drained, used_once = _Bucket(5.0, 0.0), _Bucket(5.0, 0.0)
    for _ in range(5):
        assert _take(drained, 0.0, burst, refill_s)
    assert _take(used_once, 0.0, burst, refill_s)
    buckets = {"ns/drained": drained, "ns/once": used_once}
    assert set(without_full_buckets(buckets, 5.0, burst, refill_s)) == {"ns/drained", "ns/once"}
    assert set(without_full_buckets(buckets, 10.0, burst, refill_s)) == {"ns/drained"}
    assert without_full_buckets(buckets, 50.0, burst, refill_s) == {}


def test_store_keys_objects_by_their_own_key_string() -> None:
    """After a list, each object is keyed by the very string its value carries (one copy)."""
    store = ClusterStore(on_change=lambda: None)
    parsed_service = parse_service(service("ns", "web", ips=["198.18.0.1"]))
    parsed_slice = parse_endpoint_slice(
        endpoint_slice("ns", "web-1", service_name="web", endpoints=[("10.1.0.1", "n1", True, True)])
    )
    parsed_node = parse_node(node("n1"))
    store.replace("services", {"".join(["ns/", "web"]): parsed_service})
    store.replace("endpointslices", {"".join(["ns/", "web-1"]): parsed_slice})
    store.replace("nodes", {"".join(["n", "1"]): parsed_node})
    snapshot = store.snapshot()
    assert [key is parsed_service.key for key in snapshot.services] == [True]
    assert [key is parsed_node.name for key in snapshot.nodes] == [True]
    assert [[key is parsed_slice.key for key in bucket] for bucket in snapshot.slices_by_service.values()] == [[True]]


_ARENAS_PROBE = """
import ctypes, sys, threading
from bgpspeaker.memory import limit_malloc_arenas
if sys.argv[1] == "capped":
    assert limit_malloc_arenas()
barrier = threading.Barrier(8)
def work():
    kept = [bytearray(4096) for _ in range(100)]  # malloc, not Python's small-object allocator
    barrier.wait()  # all eight alive at once: none can inherit an exited one's arena
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # glibc: one "Arena N:" block per arena, on stderr
"""


@pytest.mark.parametrize(("mode", "most"), [("capped", 2), ("default", None)], ids=["capped", "default"])
def test_malloc_arenas_are_capped(mode: str, most: int | None) -> None:
    """After limit_malloc_arenas(), eight allocating threads share two malloc arenas (glibc's own count)."""
    found = subprocess.run(
        [sys.executable, "-c", _ARENAS_PROBE, mode], capture_output=True, text=True, check=True, timeout=60
    )
    arenas = sum(1 for line in found.stderr.splitlines() if line.startswith("Arena "))
    if most is not None:
        assert 1 <= arenas <= most, found.stderr
    else:  # the probe itself can tell: without the cap the threads get arenas of their own
        assert arenas > 2, found.stderr
