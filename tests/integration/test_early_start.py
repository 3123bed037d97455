"""ExaBGP starts before the Kubernetes client is imported; nothing is announced any earlier.

Evidence read from the real process: ``python -X importtime`` writes each import to
stderr as it finishes, in the same stream as the JSON log, so the order of ExaBGP's
start and the client's first module is visible in one file. With a broken kubeconfig
the early ExaBGP must be stopped (not left to the kernel) and the work directory go.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
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


def import_started(lines: list[str], module: str) -> int:
    """The index of the first ``-X importtime`` line of ``module``'s import: its own line comes
    when it is done, after its sub-imports' (deeper), so its import began with the first line
    of that deeper block."""
    imports = [(i, line.split("|")) for i, line in enumerate(lines) if line.startswith("import time:")]
    depth = {i: len(name) - len(name.lstrip(" ")) for i, (*_, name) in imports}
    own = next(i for i, (*_, name) in imports if name.strip() == module)
    start = own
    for i, _ in reversed([entry for entry in imports if entry[0] < own]):
        if depth[i] <= depth[own]:
            break
        start = i
    return start


ONE_PEER = THREE_PEERS.partition("  - name: tor-keyed")[0]


@dataclasses.dataclass
class Exited:
    """A speaker run to its exit: its code, PID, stderr lines and the JSON records among them."""

    code: int
    pid: int
    lines: list[str]
    records: list[dict[str, Any]]

    def tail(self) -> str:
        return "\n".join(self.lines[-20:])

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]


def run_to_exit(netns: str, tmp_path: Path, *, config: str, kubeconfig: str, extra: Sequence[str] = ()) -> Exited:
    """``python -X importtime -m bgpspeaker.cli run`` in ``netns``, stderr (log and imports) to a file."""
    config_path, kubeconfig_path, stderr = tmp_path / "speaker.yaml", tmp_path / "kubeconfig", tmp_path / "stderr"
    config_path.write_text(config)
    kubeconfig_path.write_text(kubeconfig)
    argv = [sys.executable, "-X", "importtime", "-m", "bgpspeaker.cli", "--log-format", "json", "run"]
    argv += ["--config", str(config_path), "--kubeconfig", str(kubeconfig_path), "--node-name", NODE, *extra]
    with stderr.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
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
    return Exited(code=code, pid=proc.pid, lines=lines, records=_records(lines))


def assert_cleaned_up(run: Exited) -> None:
    """The early ExaBGP was stopped by the daemon on its way out (an info-level exit, not left
    to die with it), and the work directory is gone."""
    started = run.events("exabgp_started")
    assert [r["peer"] for r in started] == ["tor-a"], run.tail()
    exits = [r for r in run.events("exabgp_exited") if r["pid"] == started[0]["pid"]]
    assert [r["level"] for r in exits] == ["info"], run.tail()
    assert not pid_alive(started[0]["pid"])
    assert not list(Path(tempfile.gettempdir()).glob(f"bgpspeaker-{run.pid}-*"))


def test_exabgp_starts_before_the_client_is_imported_and_a_bad_kubeconfig_stops_it(
    topology: SingleNode, tmp_path: Path
) -> None:
    """Only the peer needing neither the API nor the Node starts early, before any kubernetes module
    is imported; a bad kubeconfig is one error line, exit 2, ExaBGP stopped, the work directory gone."""
    no_cluster = "apiVersion: v1\nkind: Config\n"
    run = run_to_exit(topology.speaker.netns, tmp_path, config=THREE_PEERS, kubeconfig=no_cluster)
    assert run.code == 2, run.tail()
    assert [r["event"] for r in run.records if r.get("level") == "error"] == ["kubeconfig_invalid"], run.tail()
    assert [r["peers"] for r in run.events("sessions_started_early")] == [["tor-a"]]
    first_exabgp = next(i for i, line in enumerate(run.lines) if '"exabgp_started"' in line)
    client = import_started(run.lines, "kubernetes")
    assert first_exabgp < client, "\n".join(run.lines[max(0, first_exabgp - 3) : first_exabgp + 2])
    assert_cleaned_up(run)


@pytest.mark.parametrize(
    ("config", "listen_on_api_port", "error"),
    [
        pytest.param(THREE_PEERS, False, "config_invalid", id="passwordSecret-unreadable"),
        pytest.param(ONE_PEER, True, "http_listen_failed", id="metrics-port-taken"),
    ],
)
def test_later_start_failures_stop_the_early_exabgp(
    topology: SingleNode, tmp_path: Path, config: str, listen_on_api_port: bool, error: str
) -> None:
    """A failure after the early start (the Secret cannot be read; the metrics port is taken, here by
    the API server itself): one error line, exit 2, the early ExaBGP stopped, the directory gone."""
    extra = ["--listen", f"127.0.0.1:{topology.api.port}"] if listen_on_api_port else []
    run = run_to_exit(
        topology.speaker.netns, tmp_path, config=config, kubeconfig=topology.api.kubeconfig(), extra=extra
    )
    assert run.code == 2, run.tail()
    assert [r["event"] for r in run.records if r.get("level") == "error"] == [error], run.tail()
    assert_cleaned_up(run)


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
