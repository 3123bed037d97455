"""ExaBGP starts before the Kubernetes client is imported; nothing is announced any earlier.

Evidence read from the real process: ``python -X importtime`` writes each import to
stderr as it finishes, in the same stream as the JSON log, so the order of ExaBGP's
start and the client's first module is visible in one file. With a broken kubeconfig
the early ExaBGP must be stopped (not left to the kernel) and the work directory go.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, pid_alive, wait_until
from lab.topology import SingleNode, single_node
from tests.integration.conftest import NODE, require_prerequisites

REPO = Path(__file__).resolve().parents[2]

THREE_PEERS = """\
apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
  - name: tor-keyed
    peerAddress: 10.0.0.3
    peerASN: 64512
    passwordSecret: {name: bgp-auth, namespace: bgpspeaker-system, key: tor}
  - name: tor-r1
    peerAddress: 10.0.0.4
    peerASN: 64512
    nodeSelectors: [{matchLabels: {rack: r1}}]
"""


@pytest.fixture(scope="module")
def topology() -> Iterator[SingleNode]:
    require_prerequisites()
    with Lab() as lab:
        built = single_node(lab)
        try:
            yield built
        finally:
            built.close()


def _records(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _imported(line: str) -> str | None:
    """The module an ``-X importtime`` line names, or None for another line."""
    return line.rsplit("|", 1)[-1].strip() if line.startswith("import time:") else None


def test_exabgp_starts_before_the_client_is_imported_and_a_bad_kubeconfig_stops_it(
    topology: SingleNode, tmp_path: Path
) -> None:
    """Only the peer needing neither the API nor the Node starts early, before any kubernetes module
    is imported; a bad kubeconfig is one error line, exit 2, ExaBGP stopped, the work directory gone."""
    config = tmp_path / "speaker.yaml"
    config.write_text(THREE_PEERS)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")  # no cluster, no context
    stderr = tmp_path / "stderr"
    argv = [sys.executable, "-X", "importtime", "-m", "bgpspeaker.cli", "--log-format", "json", "run"]
    argv += ["--config", str(config), "--kubeconfig", str(kubeconfig), "--node-name", NODE]
    with stderr.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", topology.speaker.netns, *argv],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = stderr.read_text().splitlines()
    records = _records(lines)
    tail = "\n".join(lines[-20:])
    assert code == 2, tail
    errors = [r["event"] for r in records if r.get("level") == "error"]
    assert errors == ["kubeconfig_invalid"], tail

    started = [r for r in records if r["event"] == "exabgp_started"]
    assert [r["peer"] for r in started] == ["tor-a"], tail
    assert [r["peers"] for r in records if r["event"] == "sessions_started_early"] == [["tor-a"]]
    first_exabgp = next(i for i, line in enumerate(lines) if '"exabgp_started"' in line)
    first_client = next(i for i, line in enumerate(lines) if (_imported(line) or "").startswith("kubernetes"))
    assert first_exabgp < first_client, "\n".join(lines[first_client - 3 : first_client + 1])

    # Stopped by the daemon on its way out (an info-level exit), not left to die with it.
    exits = [r for r in records if r["event"] == "exabgp_exited" and r["pid"] == started[0]["pid"]]
    assert [r["level"] for r in exits] == ["info"], tail
    assert not pid_alive(started[0]["pid"])
    assert not list(Path(tempfile.gettempdir()).glob(f"bgpspeaker-{proc.pid}-*"))


def test_nothing_is_announced_before_every_kind_is_listed(topology: SingleNode) -> None:
    """The early session is up and Services and EndpointSlices are listed, but the Node list
    keeps failing: no pass runs and nothing reaches the router until it lists; the early
    ExaBGP is kept, not restarted."""
    topology.api.apply(service("default", "web", ips=["192.0.2.10"]))
    topology.api.apply(
        endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-b", True, True)])
    )
    topology.api.inject_list("nodes", b"{not json", times=1000)
    speaker = topology.speaker
    speaker.start()

    def ready_but_nodes_unlisted() -> bool:
        events = [r["event"] + ":" + str(r.get("kind", "")) for r in speaker.events()]
        needed = ["peer_up:", "watch_listed:services", "watch_listed:endpointslices", "waiting_for_initial_sync:"]
        if not all(e in events for e in needed):
            return False
        last_needed = max(events.index(e) for e in needed)
        return "watch_restarted:nodes" in events[last_needed + 1 :]  # a node list failed after all that

    wait_until(
        ready_but_nodes_unlisted,
        timeout_s=30,
        desc="session up, Services and EndpointSlices listed, the reconciler waiting, then a Node list failed",
    )
    assert speaker.events("watch_listed", kind="nodes") == []
    assert speaker.events("reconcile_finished") == []  # not a single pass: the reconciler waits
    assert speaker.events("route_announced") == []
    assert topology.frr.neighbor("10.0.0.2")["bgpState"] == "Established"
    assert topology.frr.best_paths() == {}

    topology.api.drop_injected_lists("nodes")
    wait_until(lambda: "192.0.2.10/32" in topology.frr.best_paths(), timeout_s=30, desc="web announced")
    events = [r["event"] for r in speaker.events()]
    assert events.index("exabgp_started") < min(i for i, e in enumerate(events) if e.startswith("watch_"))
    assert len(speaker.events("exabgp_started")) == 1
    assert speaker.events("session_restarting") == []
