"""Integration fixtures: FRR in one namespace, the real speaker in another, a real-HTTP API server.

    ns "tor" (FRR bgpd, AS 64512)  10.0.0.1/24 ==veth== 10.0.0.2/24  ns "node" (bgpspeaker, AS 64513)
                                   fd00::1/64             fd00::2/64  + Kubernetes API on 127.0.0.1

Every test gets its own topology; everything is removed by PID and name afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.kubeapi import FakeKubeApi, node
from tests.lab.netns import Frr, Lab
from tests.lab.speaker import SpeakerProcess

HERE = Path(__file__).parent
NODE = "node-a"


def _requirements_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "vtysh"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists("/usr/lib/frr/bgpd"):
        return "needs FRR (/usr/lib/frr/bgpd)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _requirements_missing()
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if missing and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=missing))
            # In CI a missing requirement is a failure, not a skip: the fixture raises.


@dataclasses.dataclass
class Topology:
    lab: Lab
    frr: Frr
    api: FakeKubeApi
    speaker: SpeakerProcess
    tmp: Path


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    missing = _requirements_missing()
    if missing:
        raise RuntimeError(f"integration prerequisites missing: {missing}")
    lab = Lab()
    api: FakeKubeApi | None = None
    speaker: SpeakerProcess | None = None
    try:
        tor = lab.netns("tor")
        node_ns = lab.netns("node")
        lab.link(tor, ["10.0.0.1/24", "fd00::1/64"], node_ns, ["10.0.0.2/24", "fd00::2/64"])
        frr = lab.frr(tor, (HERE / "frr" / "bgpd.conf").read_text())
        api = FakeKubeApi(netns=node_ns, bookmark_interval_s=1.0).start()
        api.apply(node(NODE))
        api.apply(node("node-b"))
        speaker = SpeakerProcess(
            netns=node_ns,
            workdir=tmp_path / "speaker",
            config=(HERE / "speaker.yaml").read_text(),
            kubeconfig=api.kubeconfig(),
            node_name=NODE,
        )
        yield Topology(lab=lab, frr=frr, api=api, speaker=speaker, tmp=tmp_path)
    finally:
        if speaker is not None:
            speaker.close()
        if api is not None:
            api.stop()
        lab.close()
