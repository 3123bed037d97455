"""Hostile input against the real speaker and FRR: a crafted annotation, reserved ingress
IPs and a broken config file each cost one log line, never the process or a route."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, PathSampler, pid_alive, wait_until
from lab.topology import CONFIG_DIR, single_node
from tests.integration.conftest import NODE, Topology, require_prerequisites

CONFIG = """apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
serviceAnnotations: true
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
    families: [ipv4, ipv6]
    ipv6NextHop: fd00::2
advertisements:
  - name: all
    med: 7
"""


def _service(topology: Topology, name: str, ips: list[str], **kwargs: Any) -> None:
    topology.api.apply(service("default", name, ips=ips, **kwargs))
    topology.api.apply(
        endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", NODE, True, True)])
    )


def _start(topology: Topology) -> None:
    topology.speaker.config_path.write_text(CONFIG)
    topology.speaker.start()
    topology.speaker.wait_event("peer_up", timeout_s=20, peer="tor-a")


def _best(topology: Topology, prefix: str, afi: str = "ipv4") -> dict[str, Any]:
    return wait_until(
        lambda: topology.frr.best_paths(afi).get(prefix),
        timeout_s=15,
        desc=f"{prefix} best in FRR; speaker log: {topology.speaker.tail(5)}",
    )


def test_a_5000_digit_med_annotation_costs_one_log_line(topology: Topology) -> None:
    """The annotation that crash-looped every speaker: the service is announced with its
    advertisement's MED, the other VIPs never leave FRR, the process lives on."""
    _service(topology, "good", ["192.0.2.10"])
    _start(topology)
    _best(topology, "192.0.2.10/32")
    with PathSampler(topology.frr, {"192.0.2.10/32"}) as sampler:
        _service(topology, "evil", ["192.0.2.66"], annotations={"bgpspeaker.io/med": "1" * 5000})
        _service(topology, "evil2", ["192.0.2.67"], annotations={"bgpspeaker.io/as-path-prepend": "9" * 4301})
        evil = _best(topology, "192.0.2.66/32")
        _best(topology, "192.0.2.67/32")
        # A later, ordinary change still goes through: the reconciler thread is alive.
        _service(topology, "after", ["192.0.2.11"])
        _best(topology, "192.0.2.11/32")
    assert evil["metric"] == 7, evil
    assert sampler.missing == [], f"192.0.2.10/32 left FRR: {sampler.missing[:3]}"
    assert pid_alive(topology.speaker.pid)
    warned = topology.speaker.events("service_annotation_invalid")
    assert {event["service"] for event in warned} == {"default/evil", "default/evil2"}, warned
    assert all(len(event["detail"]) < 400 for event in warned)
    assert topology.speaker.events("thread_crashed") == []
    assert topology.speaker.events("internal_error") == []


REFUSED_V4 = ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1", "10.0.0.1"]
REFUSED_V6 = ["::", "::1", "ff02::1", "fe80::1", "::ffff:192.0.2.77", "fe80::1%eth0", "fd00::2"]
V6_OVER_V4 = (CONFIG_DIR / "frr" / "bgpd.conf").read_text() + (
    "router bgp 64512\n address-family ipv6 unicast\n  neighbor 10.0.0.2 activate\n exit-address-family\n"
)


@pytest.fixture
def v6_topology() -> Iterator[Topology]:
    """The single-node topology with IPv6 routes accepted over the IPv4 session too."""
    require_prerequisites()
    with Lab() as lab:
        built = single_node(lab, frr_config=V6_OVER_V4)
        try:
            yield built
        finally:
            built.close()


def test_reserved_ingress_ips_are_never_announced(v6_topology: Topology) -> None:
    """Loopback, multicast, broadcast, link-local, mapped, scoped and the router's own
    peering address are refused (logged once each); the ordinary VIPs beside them are best."""
    topology = v6_topology
    _service(topology, "mixed", [*REFUSED_V4, "192.0.2.50", *REFUSED_V6, "2001:db8::50"])
    _start(topology)
    _best(topology, "192.0.2.50/32")
    _best(topology, "2001:db8::50/128", afi="ipv6")
    topology.speaker.wait_event("reconcile_finished")
    assert set(topology.frr.best_paths("ipv4")) == {"192.0.2.50/32"}
    assert set(topology.frr.best_paths("ipv6")) == {"2001:db8::50/128"}
    refused = topology.speaker.events("ingress_ip_refused")
    assert sorted(event["ip"] for event in refused) == sorted(
        [*REFUSED_V4, "::", "::1", "ff02::1", "fe80::1", "::ffff:c000:24d", "fe80::1%eth0", "fd00::2"]
    ), refused
    # Logged once: a later pass (another service) does not repeat them.
    _service(topology, "other", ["192.0.2.51"])
    _best(topology, "192.0.2.51/32")
    assert len(topology.speaker.events("ingress_ip_refused")) == len(refused)


def test_a_broken_config_reload_keeps_the_running_config(topology: Topology) -> None:
    """A Latin-1 byte, 3,000 nested brackets, a 5,000-digit hold time: config_reload_failed,
    the old config stays, the routes stay, the speaker lives."""
    _service(topology, "good", ["192.0.2.10"])
    _start(topology)
    _best(topology, "192.0.2.10/32")
    path = topology.speaker.config_path
    broken = [
        CONFIG.encode() + b"# caf\xe9\n",
        CONFIG.encode() + b"x: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        CONFIG.encode().replace(b"    peerASN: 64512\n", b"    peerASN: 64512\n    holdTime: " + b"1" * 5000 + b"s\n"),
    ]
    with PathSampler(topology.frr, {"192.0.2.10/32"}) as sampler:
        for index, data in enumerate(broken):
            before = len(topology.speaker.events("config_reload_failed"))
            staging = path.with_suffix(".new")
            staging.write_bytes(data)
            staging.replace(path)
            os.kill(topology.speaker.pid, signal.SIGHUP)
            failed = topology.speaker.wait_event("config_reload_failed", after=before, timeout_s=10)
            assert failed["kept"] == "running config", (index, failed)
            assert all(len(problem) <= 1200 for problem in failed["problems"]), failed
    assert sampler.missing == []
    assert pid_alive(topology.speaker.pid)
    assert topology.speaker.events("thread_crashed") == []
