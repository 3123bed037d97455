"""The single-node topology shared by the integration tests, the demo and the benchmarks.

    ns "tor" (FRR bgpd, AS 64512)  10.0.0.1/24 ==veth== 10.0.0.2/24  ns "node" (bgpspeaker, AS 64513)
                                   fd00::1/64             fd00::2/64  + Kubernetes API on 127.0.0.1

The router's and the speaker's config files live beside the integration tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.lab.kubeapi import FakeKubeApi, node
from tests.lab.netns import Frr, Lab
from tests.lab.speaker import SpeakerProcess

__all__ = ["CONFIG_DIR", "NODE", "SingleNode", "single_node"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "integration"
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


def single_node(lab: Lab, *, bookmark_interval_s: float = 1.0) -> SingleNode:
    """Build the topology inside ``lab`` (which removes it all on close)."""
    tor = lab.netns("tor")
    node_ns = lab.netns("node")
    lab.link(tor, ["10.0.0.1/24", "fd00::1/64"], node_ns, ["10.0.0.2/24", "fd00::2/64"])
    frr = lab.frr(tor, (CONFIG_DIR / "frr" / "bgpd.conf").read_text())
    api = FakeKubeApi(netns=node_ns, bookmark_interval_s=bookmark_interval_s).start()
    try:
        api.apply(node(NODE))
        api.apply(node("node-b"))
        speaker = SpeakerProcess(
            netns=node_ns,
            workdir=lab.root / "speaker",
            config=(CONFIG_DIR / "speaker.yaml").read_text(),
            kubeconfig=api.kubeconfig(),
            node_name=NODE,
        )
    except BaseException:
        api.stop()
        raise
    return SingleNode(lab=lab, frr=frr, api=api, speaker=speaker)
