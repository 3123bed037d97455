"""deploy/ manifests, the Dockerfile and docker-compose.yml: they parse, agree with each other and
with the code, and the compose topology's API server and config actually work (no Docker, no root)."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from bgpspeaker.cluster.access import CONTROLLER_MODULES, SPEAKER_MODULES, controller_access, speaker_access
from bgpspeaker.cluster.api import api_client
from bgpspeaker.config import parse_config
from bgpspeaker.configfile import CONFIGMAP_KEY
from lab.netns import wait_until

REPO = Path(__file__).resolve().parents[1]


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if doc]


NAMESPACE = "bgpspeaker-system"
KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/`` (offline), as documents in output order."""
    if KUBECTL is None:
        pytest.skip("kubectl missing (scripts/setup.sh installs Debian's kubernetes-client)")
    result = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy")], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in ("DaemonSet", "Deployment")]


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())
    return data


def package_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def test_namespace_first_with_pod_security_that_admits_host_network(rendered: list[dict[str, Any]]) -> None:
    """The Namespace is the first object; it enforces privileged (hostNetwork); everything else lives in it."""
    namespace = rendered[0]
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", NAMESPACE)
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for doc in rendered[1:]:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert [d["kind"] for d in rendered].count("Namespace") == 1


def test_every_reference_resolves(rendered: list[dict[str, Any]]) -> None:
    """ServiceAccounts, ConfigMaps, Secrets (unless optional), roles and subjects all exist in the render."""
    accounts = by_kind(rendered, "ServiceAccount")
    configmaps = by_kind(rendered, "ConfigMap")
    secrets = by_kind(rendered, "Secret")
    for workload in workloads(rendered):
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts, workload["metadata"]["name"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
            if "secret" in volume:
                assert volume["secret"].get("optional") or volume["secret"]["secretName"] in secrets
        for container in pod["containers"]:
            mounted = {m["name"] for m in container["volumeMounts"]}
            assert mounted <= {v["name"] for v in pod["volumes"]}
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref.get("optional") or ref["name"] in secrets
    for binding in by_kind(rendered, "ClusterRoleBinding").values():
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] in by_kind(rendered, "ClusterRole")
    for binding in by_kind(rendered, "RoleBinding").values():
        role = by_kind(rendered, binding["roleRef"]["kind"]).get(binding["roleRef"]["name"])
        assert role is not None and role["metadata"].get("namespace", binding["metadata"]["namespace"]) == NAMESPACE
    for binding in [*by_kind(rendered, "ClusterRoleBinding").values(), *by_kind(rendered, "RoleBinding").values()]:
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            assert subject["name"] in accounts


def test_configmap_needs_no_secret_and_its_secrets_are_granted_by_name(rendered: list[dict[str, Any]]) -> None:
    """The example config validates, names no Secret the render lacks; the optional example's is the granted one."""
    (configmap,) = by_kind(rendered, "ConfigMap").values()
    config = parse_config(yaml.safe_load(configmap["data"]["config.yaml"]))
    rendered_secrets = {(NAMESPACE, name) for name in by_kind(rendered, "Secret")}
    referenced = {(p.password_secret.namespace, p.password_secret.name) for p in config.peers if p.password_secret}
    assert referenced <= rendered_secrets
    (example,) = documents("secret-example.yaml")
    granted = {
        (role["metadata"]["namespace"], name)
        for role in by_kind(rendered, "Role").values()
        for rule in role["rules"]
        if "secrets" in rule["resources"]
        for name in rule.get("resourceNames", [])
    }
    assert (example["metadata"]["namespace"], example["metadata"]["name"]) in granted
    assert "secret-example.yaml" not in kustomization()["resources"]  # optional: nothing needs it to start


def grants_of(rendered: list[dict[str, Any]], account: str) -> dict[tuple[str, str, str], tuple[bool, frozenset[str]]]:
    """(group, resource, verb) -> (cluster-wide?, resourceNames) for everything bound to the ServiceAccount."""
    granted: dict[tuple[str, str, str], tuple[bool, frozenset[str]]] = {}
    for kind, role_kind, cluster_wide in (("ClusterRoleBinding", "ClusterRole", True), ("RoleBinding", "Role", False)):
        for binding in by_kind(rendered, kind).values():
            if not any(s["name"] == account for s in binding["subjects"]):
                continue
            role = by_kind(rendered, role_kind)[binding["roleRef"]["name"]]
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            granted[(group, resource, verb)] = (cluster_wide, frozenset(rule.get("resourceNames", [])))
    return granted


def assert_rbac_equals(granted: dict[tuple[str, str, str], tuple[bool, frozenset[str]]], needed: Any) -> None:
    """Every needed call granted at the right scope, and nothing granted that no call needs."""
    wanted = {}
    for access in needed:
        for grant in access.grants():
            wanted[grant] = not access.own_namespace
    missing = sorted(set(wanted) - set(granted))
    extra = sorted(set(granted) - set(wanted))
    assert not missing, f"calls without a grant (add them to deploy/): {missing}"
    assert not extra, f"grants no call needs (least privilege): {extra}"
    for grant, cluster_wide in wanted.items():
        assert granted[grant][0] == cluster_wide, f"{grant}: cluster-wide {granted[grant][0]}, needed {cluster_wide}"


def test_speaker_rbac_is_exactly_the_api_access_tables(rendered: list[dict[str, Any]]) -> None:
    """The speaker's ServiceAccount is granted exactly the API_ACCESS rows of the modules it runs."""
    (daemonset,) = by_kind(rendered, "DaemonSet").values()
    account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    granted = grants_of(rendered, account)
    assert_rbac_equals(granted, speaker_access())
    assert granted[("", "secrets", "get")][1] == {"bgp-auth"}  # one Secret by name, never all of them


def test_controller_rbac_is_exactly_its_access_table(rendered: list[dict[str, Any]]) -> None:
    """The controller's ServiceAccount: Services and their status, Events, Leases in its own namespace."""
    (deployment,) = by_kind(rendered, "Deployment").values()
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert_rbac_equals(grants_of(rendered, account), controller_access())


API_CALL = re.compile(r"resource_path\(|[\"']/apis?/|V1Api\(|\.call_api\(")


def test_every_module_calling_the_api_server_declares_its_access() -> None:
    """A module that builds an API path declares API_ACCESS and is one of the tables' modules: a new
    call site in a new module cannot slip past the RBAC check above."""
    listed = set(SPEAKER_MODULES) | set(CONTROLLER_MODULES)
    callers = set()
    for path in sorted((REPO / "bgpspeaker").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module == "bgpspeaker.cluster.api":  # the helpers themselves (resource_path, ApiPaths)
            continue
        if API_CALL.search(path.read_text()):
            callers.add(module)
            assert hasattr(importlib.import_module(module), "API_ACCESS"), f"{module}: calls the API, no API_ACCESS"
    assert callers == listed, f"modules calling the API {sorted(callers)} != the tables' {sorted(listed)}"


def container_args(workload: dict[str, Any]) -> list[str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return [*container.get("command", [])[1:], *container["args"]]


def test_commands_parse_and_probes_point_at_the_port_the_process_listens_on(rendered: list[dict[str, Any]]) -> None:
    """Each container's arguments parse with the real CLI; probes, the port and Prometheus' annotation
    name the metrics address's port; --config is the mounted ConfigMap's key."""
    from bgpspeaker.cli import _parser
    from bgpspeaker.observe import parse_listen

    checked = 0
    for workload in workloads(rendered):
        args = container_args(workload)
        parser = _parser()
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        if args[0] not in subcommands:
            assert (workload["kind"], args[0]) == ("Deployment", "controller"), args
            continue  # the controller (issue 14) is not in this tree yet: checked once it is
        parsed = parser.parse_args(args)
        # run's dest is "listen" (--metrics-address, alias --listen); another command may name it after the flag
        _host, port = parse_listen(getattr(parsed, "listen", None) or parsed.metrics_address)
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert port not in (7472, 7473, 7946)  # MetalLB's: both can run during a migration
        config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
        assert parsed.config == f"{config_mount['mountPath']}/{CONFIGMAP_KEY}"
        if args[0] == "run":
            status_host, _ = parse_listen(parsed.status_address)
            assert ipaddress.ip_address(status_host).is_loopback  # /status only from the node itself
        checked += 1
    assert checked >= 1


def test_speaker_daemonset_runs_unprivileged_on_the_host_network(rendered: list[dict[str, Any]]) -> None:
    """hostNetwork, NODE_NAME from the downward API, system-node-critical, no capabilities, non-root,
    read-only root with /tmp (where bgpspeaker writes) an emptyDir; memory sized from the measurements."""
    (daemonset,) = by_kind(rendered, "DaemonSet").values()
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True and pod["priorityClassName"] == "system-node-critical"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert_hardened(pod, container)
    memory = {k: mebibytes(v["memory"]) for k, v in container["resources"].items()}
    # docs/performance.md "Round 2", 10k routes, RSS summed: 2 peers 144 MB, 4 peers 212 MB,
    # the BFD child 13.4 MB.
    assert memory["requests"] >= (144 + 13.4) / 1.048576
    assert memory["limits"] >= 1.3 * (212 + 13.4) / 1.048576


def test_controller_deployment(rendered: list[dict[str, Any]]) -> None:
    """Two replicas, POD_NAME and POD_NAMESPACE from the downward API, the same image and config, hardened."""
    (deployment,) = by_kind(rendered, "Deployment").values()
    (daemonset,) = by_kind(rendered, "DaemonSet").values()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2 and "hostNetwork" not in pod
    assert container_args(deployment)[:2] == ["controller", f"--config=/etc/bgpspeaker/{CONFIGMAP_KEY}"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    (speaker,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == speaker["image"]
    assert_hardened(pod, container)
    assert container["resources"]["limits"]["memory"]


def assert_hardened(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_image_named_once_with_the_package_version(rendered: list[dict[str, Any]]) -> None:
    """images: in kustomization.yaml is the one place; its tag is pyproject's version."""
    (image,) = kustomization()["images"]
    assert image["newTag"] == package_version()
    for workload in workloads(rendered):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
    for name in ("daemonset.yaml", "controller.yaml"):
        for doc in documents(name):
            if doc["kind"] in ("DaemonSet", "Deployment"):
                (container,) = doc["spec"]["template"]["spec"]["containers"]
                assert container["image"] == image["name"]  # no tag outside kustomization.yaml


DOCKERFILE = (REPO / "Dockerfile").read_text() if (REPO / "Dockerfile").exists() else ""
IMAGE_UID = 65532


def test_dockerfile_builds_the_image_the_manifests_name() -> None:
    """Slim Python base, the package (and the pinned ExaBGP) installed, a non-root USER matching the pods'
    runAsUser, the console script as entry point, the version label = pyproject = kustomization's tag."""
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE) == ["python:3.11-slim-bookworm"] * 2
    user = re.search(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    assert user is not None and user.group(1) == f"{IMAGE_UID}:{IMAGE_UID}"
    assert f"--uid {IMAGE_UID}" in DOCKERFILE and "pip install" in DOCKERFILE
    assert re.search(r'"exabgp==5\.0\.15"', (REPO / "pyproject.toml").read_text())
    assert 'ENTRYPOINT ["bgpspeaker"]' in DOCKERFILE
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["bgpspeaker"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    version = re.search(r"^ARG VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert version is not None and version.group(1) == package_version() == kustomization()["images"][0]["newTag"]
    assert "ENV PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE and "TMPDIR=/tmp" in DOCKERFILE
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for name in copied.split():
            assert (REPO / name).exists(), name


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "check-config", str(path)],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=60,
    )  # fmt: skip


def test_check_config_accepts_the_configmap_and_the_rendered_kustomization(tmp_path: Path) -> None:
    """check-config reads deploy/configmap.yaml and the whole render (the other kinds skipped with a note)."""
    result = check_config(REPO / "deploy" / "configmap.yaml")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "ConfigMap bgpspeaker-system/bgpspeaker-config" in result.stdout
    if KUBECTL is None:
        pytest.skip("kubectl missing: the render is not checked")
    render = subprocess.run([KUBECTL, "kustomize", str(REPO / "deploy")], capture_output=True, check=True)
    path = tmp_path / "all.yaml"
    path.write_bytes(render.stdout)
    result = check_config(path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    others = render.stdout.count(b"\nkind: ") + render.stdout.startswith(b"kind: ") - 1  # all but the ConfigMap
    assert f"skipped {others} documents of other kinds (" in result.stdout, result.stdout


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


def test_a_clean_clone_has_every_file_the_kustomization_and_the_image_need() -> None:
    """Every resource of deploy/kustomization.yaml and every file the Dockerfile copies is committed
    (the README's install section starts from a clean clone)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    needed = [f"deploy/{name}" for name in kustomization()["resources"]]
    needed += [
        name for line in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE) for name in line.split()
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--", *needed], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    untracked = [name for name in needed if not any(p == name or p.startswith(f"{name}/") for p in listed)]
    assert not untracked, f"not committed: {untracked}"
