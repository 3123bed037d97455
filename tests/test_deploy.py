"""deploy/ manifests, the Dockerfile and docker-compose.yml: they parse, agree with each other and
with the code, and the compose topology's API server and config actually work (no Docker, no root)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from bgpspeaker.cluster.api import api_client
from bgpspeaker.config import parse_config
from lab.netns import wait_until

REPO = Path(__file__).resolve().parents[1]


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if doc]


def test_daemonset_runs_unprivileged_on_the_host_network_with_probes() -> None:
    """hostNetwork, NODE_NAME from the downward API, probes on the metrics port, no capabilities, non-root."""
    (daemonset,) = documents("daemonset.yaml")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert daemonset["kind"] == "DaemonSet" and pod["hostNetwork"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 7473}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 7473}
    assert "--listen=:7473" in container["args"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["memory"]
    assert pod["serviceAccountName"] == "bgpspeaker"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert any(a == f"--config={mount['mountPath']}/config.yaml" for a in container["args"])


def test_configmap_example_is_a_valid_config_matching_the_rbac() -> None:
    """The example config validates; the Secret it names is the one the optional Role grants."""
    (configmap,) = documents("configmap.yaml")
    config = parse_config(yaml.safe_load(configmap["data"]["config.yaml"]))
    secrets = {p.password_secret for p in config.peers if p.password_secret is not None}
    roles = [d for d in documents("rbac.yaml") if d["kind"] == "Role"]
    granted = {(r["metadata"]["namespace"], n) for r in roles for rule in r["rules"] for n in rule["resourceNames"]}
    assert {(s.namespace, s.name) for s in secrets} <= granted


def test_rbac_binds_the_daemonsets_service_account() -> None:
    """Every binding points at the ServiceAccount the DaemonSet uses."""
    (daemonset,) = documents("daemonset.yaml")
    namespace = daemonset["metadata"]["namespace"]
    for doc in documents("rbac.yaml"):
        if doc["kind"].endswith("Binding"):
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": "bgpspeaker", "namespace": namespace}]


def test_dockerfile_installs_the_package_and_drops_root() -> None:
    """A non-root USER and the package install (which pulls the pinned ExaBGP)."""
    text = (REPO / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", text, re.MULTILINE)
    assert user is not None and not user.group(1).startswith(("0", "root"))
    assert "pip install" in text and 'ENTRYPOINT ["bgpspeaker"]' in text
    assert re.search(r'"exabgp==5\.0\.15"', (REPO / "pyproject.toml").read_text())


COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def host_path(mount: str) -> Path:
    return REPO / mount.split(":", 1)[0]


def test_compose_files_exist_and_addresses_agree() -> None:
    """Every bind mount exists; FRR, the speaker config and the kubeconfig agree on addresses and ASNs."""
    services = COMPOSE["services"]
    assert set(services) == {"frr", "kubeapi", "bgpspeaker"}
    for service in services.values():
        for mount in service.get("volumes", []):
            assert host_path(mount).exists(), mount
    assert (REPO / services["bgpspeaker"]["build"] / "Dockerfile").exists()
    ip = {name: ipaddress.ip_address(s["networks"]["rack"]["ipv4_address"]) for name, s in services.items()}
    subnet = ipaddress.ip_network(COMPOSE["networks"]["rack"]["ipam"]["config"][0]["subnet"])
    gateway = ipaddress.ip_address(COMPOSE["networks"]["rack"]["ipam"]["config"][0]["gateway"])
    assert all(address in subnet for address in ip.values()) and gateway not in ip.values()

    mounts = {m.split(":")[1]: host_path(m) for m in services["bgpspeaker"]["volumes"]}
    config = parse_config(yaml.safe_load(mounts["/etc/bgpspeaker/config.yaml"].read_text()))
    (peer,) = config.peers
    assert peer.peer_address == ip["frr"] and config.router_id == ip["bgpspeaker"]
    frr_conf = next(host_path(m) for m in services["frr"]["volumes"] if m.split(":")[1] == "/etc/frr/frr.conf")
    text = frr_conf.read_text()
    assert f"router bgp {peer.peer_asn}" in text
    assert f"neighbor {ip['bgpspeaker']} remote-as {config.my_asn}" in text
    kubeconfig = yaml.safe_load(mounts["/etc/bgpspeaker/kubeconfig"].read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"http://{ip['kubeapi']}:8080"
    args = services["bgpspeaker"]["command"]
    assert "--node-name=node-a" in args and "run" in args


@pytest.fixture
def compose_api(tmp_path: Path) -> Iterator[Path]:
    """The compose kubeapi service's exact command, on a free loopback port; yields a kubeconfig."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = COMPOSE["services"]["kubeapi"]["command"]
    seed = next(host_path(m) for m in COMPOSE["services"]["kubeapi"]["volumes"] if m.endswith("cluster.json:ro"))
    argv = [sys.executable if part == "python" else part for part in command]
    argv[argv.index("--listen") + 1] = f"127.0.0.1:{port}"
    argv[argv.index("--seed") + 1] = str(seed)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kubeconfig = tmp_path / "kubeconfig"
    document = yaml.safe_load((REPO / "deploy" / "compose" / "kubeconfig").read_text())
    document["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    kubeconfig.write_text(json.dumps(document))
    try:
        assert proc.stdout is not None
        wait_until(lambda: "listening" in proc.stdout.readline(), timeout_s=15, desc="compose API server up")
        yield kubeconfig
    finally:
        proc.terminate()
        proc.wait(10)


def test_compose_api_server_serves_the_example_cluster_and_explain_reads_it(compose_api: Path) -> None:
    """The seeded API server answers the real client; ``bgpspeaker explain`` on it gives the README's verdicts."""
    core = k8s.CoreV1Api(api_client(str(compose_api)))
    services = core.list_service_for_all_namespaces().items
    assert sorted(s.metadata.name for s in services) == ["batch", "ingress", "web"]
    result = subprocess.run(
        [
            sys.executable, "-m", "bgpspeaker.cli", "explain", "default/batch",
            "--config", str(REPO / "tests" / "integration" / "speaker.yaml"), "--kubeconfig", str(compose_api),
        ],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "node-a:\n  service: not announced, no_local_endpoints" in result.stdout
    assert "node-b:\n  192.0.2.30: announced as 192.0.2.30/32 to tor-a (local_endpoint)" in result.stdout
    missing = subprocess.run(
        [
            sys.executable, "-m", "bgpspeaker.cli", "explain", "default/nope",
            "--config", str(REPO / "tests" / "integration" / "speaker.yaml"), "--kubeconfig", str(compose_api),
        ],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert (missing.returncode, missing.stderr.strip()) == (1, "service default/nope not found")


def test_demo_seed_and_configs_exist() -> None:
    """The demo's seed cluster and the lab's router and speaker configs are where the lab looks."""
    from lab.demo import SEED
    from lab.topology import CONFIG_DIR

    assert SEED.is_file(), SEED
    assert (CONFIG_DIR / "frr" / "bgpd.conf").is_file() and (CONFIG_DIR / "speaker.yaml").is_file(), CONFIG_DIR
