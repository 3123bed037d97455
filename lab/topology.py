"""The single-node topology shared by the integration tests, the demo and the benchmarks.

    ns "tor" (FRR bgpd, AS 64512)  10.0.0.1/24 ==veth== 10.0.0.2/24  ns "node" (bgpspeaker, AS 64513)
                                   fd00::1/64             fd00::2/64  + Kubernetes API on 127.0.0.1

The router's and the speaker's config files live beside the integration tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lab.kubeapi import FakeKubeApi, node
from lab.netns import Frr, Lab
from lab.speaker import SpeakerProcess

__all__ = ["CONFIG_DIR", "NODE", "Peering", "SingleNode", "routed_hop", "single_node", "two_tors"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "tests" / "integration"
NODE = "node-a"


@dataclasses.dataclass
class SingleNode:
    """A router, this node's API server (nodes node-a and node-b exist) and a speaker not yet started."""

    lab: Lab
    frr: Frr
    api: FakeKubeApi
    speaker: SpeakerProcess

    def close(self) -> None:
        """Stop the speaker, the API server, bgpd; delete the namespaces."""
        self.speaker.close()
        self.api.stop()
        self.lab.close()


def single_node(
    lab: Lab,
    *,
    bookmark_interval_s: float = 1.0,
    frr_config: str | None = None,
    speaker_config: str | None = None,
) -> SingleNode:
    """Build the topology inside ``lab`` (which removes it all on close); the configs
    default to the files beside the integration tests."""
    tor = lab.netns("tor")
    node_ns = lab.netns("node")
    lab.link(tor, ["10.0.0.1/24", "fd00::1/64"], node_ns, ["10.0.0.2/24", "fd00::2/64"])
    frr = lab.frr(tor, frr_config or (CONFIG_DIR / "frr" / "bgpd.conf").read_text())
    peering = _speaker_side(
        lab,
        node_ns,
        {"tor": frr},
        speaker_config or (CONFIG_DIR / "speaker.yaml").read_text(),
        bookmark_interval_s=bookmark_interval_s,
    )
    return SingleNode(lab=lab, frr=frr, api=peering.api, speaker=peering.speaker)


@dataclasses.dataclass
class Peering:
    """Several routers around one node: the speaker's namespace, its API server, and FRRs by name."""

    lab: Lab
    node_ns: str
    routers: dict[str, Frr]
    api: FakeKubeApi
    speaker: SpeakerProcess

    close = SingleNode.close


def _speaker_side(
    lab: Lab, node_ns: str, routers: dict[str, Frr], speaker_config: str, *, bookmark_interval_s: float = 1.0
) -> Peering:
    """This node's API server (nodes node-a and node-b exist) and a speaker, not yet started."""
    api = FakeKubeApi(netns=node_ns, bookmark_interval_s=bookmark_interval_s).start()
    try:
        api.apply(node(NODE))
        api.apply(node("node-b"))
        speaker = SpeakerProcess(
            netns=node_ns,
            workdir=lab.root / "speaker",
            config=speaker_config,
            kubeconfig=api.kubeconfig(),
            node_name=NODE,
        )
    except BaseException:
        api.stop()
        raise
    return Peering(lab=lab, node_ns=node_ns, routers=routers, api=api, speaker=speaker)


def two_tors(lab: Lab, *, tor_a: str, tor_b: str, speaker_config: str) -> Peering:
    """A rack with two routers, each on its own link to the node (bgpd configs given).

    ns "tor-a" 10.0.0.1/24 fd00::1/64     ==veth==  10.0.0.2/24 fd00::2/64     ns "node"
    ns "tor-b" 10.0.1.1/24 fd00:1::1/64   ==veth==  10.0.1.2/24 fd00:1::2/64
    """
    node_ns = lab.netns("node")
    routers = {}
    for name, subnet, config in (("tor-a", 0, tor_a), ("tor-b", 1, tor_b)):
        ns = lab.netns(name)
        v6 = "fd00" if subnet == 0 else f"fd00:{subnet}"
        lab.link(ns, [f"10.0.{subnet}.1/24", f"{v6}::1/64"], node_ns, [f"10.0.{subnet}.2/24", f"{v6}::2/64"])
        routers[name] = lab.frr(ns, config)
    return _speaker_side(lab, node_ns, routers, speaker_config)


def routed_hop(lab: Lab, *, far: str, speaker_config: str) -> Peering:
    """A router two hops away, behind a plain IP forwarder (for eBGP multihop).

    ns "node" 10.0.2.2/24 == 10.0.2.1/24 ns "hop" (forwarding) 10.0.3.1/24 == 10.0.3.2/24 ns "far"
    """
    node_ns, hop_ns, far_ns = lab.netns("node"), lab.netns("hop"), lab.netns("far")
    lab.link(node_ns, "10.0.2.2/24", hop_ns, "10.0.2.1/24")
    lab.link(hop_ns, "10.0.3.1/24", far_ns, "10.0.3.2/24")
    lab.run("ip", "netns", "exec", hop_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.run("ip", "-n", node_ns, "route", "add", "10.0.3.0/24", "via", "10.0.2.1")
    lab.run("ip", "-n", far_ns, "route", "add", "10.0.2.0/24", "via", "10.0.3.1")
    routers = {"far": lab.frr(far_ns, far)}
    return _speaker_side(lab, node_ns, routers, speaker_config)
