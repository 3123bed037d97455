"""The command line: check-config exit codes and messages (the real console entry point)."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bgpspeaker.cli import DEFAULT_CONFIG_PATH
from bgpspeaker.config import _TOP_KEYS
from bgpspeaker.observe import DEFAULT_STATUS_ADDRESS, Observer
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service

GOOD = """\
apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
"""


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # a file read for ever fails the test instead of hanging it
    )


def test_valid_file_exits_0(tmp_path: Path) -> None:
    """A valid file: exit 0."""
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    result = check_config(path)
    assert (result.returncode, result.stderr) == (0, "")


def test_invalid_file_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    """Each problem on its own line on stderr, exit 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("64513", "0").replace("10.0.0.1", "10.0.0.256") + "extra: 1\n")
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"extra: unknown field (allowed: {', '.join(sorted(_TOP_KEYS))})",
        "myASN: must be an integer 1..4294967295, got 0",
        "peers[0].peerAddress: must be an IPv4 or IPv6 address, got '10.0.0.256'",
    ]


def test_unreadable_and_non_yaml_files_exit_2(tmp_path: Path) -> None:
    """A missing file or broken YAML is a config problem too, not a traceback."""
    missing = check_config(tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("peers: [\n")
    result = check_config(broken)
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_run_with_invalid_config_logs_config_invalid_and_exits_2(tmp_path: Path) -> None:
    """run refuses an invalid config with one structured config_invalid line."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("64513", "0"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bgpspeaker.cli",
            "--log-format",
            "json",
            "run",
            "--config",
            str(path),
            "--node-name",
            "n",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert '"event": "config_invalid"' in result.stderr


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """stderr, asserted to be a single line and no traceback."""
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def test_status_without_a_running_speaker_says_so_and_exits_1() -> None:
    """Nothing listening: one clear line naming the address and the cause, exit 1."""
    port = closed_port()
    result = cli("status", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert one_line(result).startswith(f"status: no speaker answers at 127.0.0.1:{port}: Connection refused (run it in")


def test_status_default_address_is_the_loopback_status_address() -> None:
    """Without --address, status asks the status address (loopback), not the metrics port."""
    result = cli("status")
    if result.returncode == 0:
        pytest.skip("a speaker answers on this host's default status address")
    assert one_line(result).startswith(f"status: no speaker answers at {DEFAULT_STATUS_ADDRESS}:")


def test_explain_without_config_and_without_a_speaker_says_so_and_exits_2() -> None:
    """explain with no --config, no speaker answering and no default config file: one line, exit 2."""
    if Path(DEFAULT_CONFIG_PATH).exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this host")
    port = closed_port()
    result = cli("explain", "default/web", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert one_line(result).startswith(
        f"explain: no config: no speaker answers at 127.0.0.1:{port} (Connection refused)"
        f" and no {DEFAULT_CONFIG_PATH}; pass --config FILE"
    )


def test_explain_with_a_missing_kubeconfig_says_so_and_exits_2(tmp_path: Path) -> None:
    """--kubeconfig naming no file, or no kubeconfig anywhere outside a pod: one line, exit 2."""
    config = tmp_path / "speaker.yaml"
    config.write_text(GOOD)
    result = cli("explain", "default/web", "--config", str(config), "--kubeconfig", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert one_line(result).startswith(f"explain: no Kubernetes credentials (kubeconfig {tmp_path / 'nope'}: ")
    bare = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}}
    result = cli("explain", "default/web", "--config", str(config), env={**bare, "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert one_line(result).startswith("explain: no Kubernetes credentials (no kubeconfig: ")


def test_explain_with_the_api_server_down_says_so_and_exits_1(tmp_path: Path) -> None:
    """A kubeconfig whose server does not listen: one line naming the server, exit 1."""
    config = tmp_path / "speaker.yaml"
    config.write_text(GOOD)
    api = FakeKubeApi()  # its kubeconfig, pointing at a port nothing listens on
    api.port = closed_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    result = cli("explain", "default/web", "--config", str(config), "--kubeconfig", str(kubeconfig))
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"explain: the API server at {api.url} does not answer: "), line
    assert "Connection refused" in line


def test_explain_without_config_uses_the_config_of_the_speaker_on_this_node(tmp_path: Path) -> None:
    """No --config: the config comes from the speaker's /config on its status address."""
    from tests.test_observe_http import stand_in_source

    api = FakeKubeApi().start()
    try:
        api.apply(service("default", "web", ips=["192.0.2.10"]))
        api.apply(
            endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.244.1.5", "node-a", True, True)])
        )
        api.apply(node("node-a"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        # The speaker's config has an advertisement with MED 7: only that config explains "med 7".
        text = GOOD + "advertisements:\n  - name: public\n    med: 7\n"
        source = dataclasses.replace(stand_in_source(), config_text=text.encode)
        observer = Observer(source, "127.0.0.1:0", status_address="127.0.0.1:0")
        observer.start()
        try:
            result = cli("explain", "default/web", "--address", f"127.0.0.1:{observer.status_port}",
                         "--kubeconfig", str(kubeconfig))  # fmt: skip
        finally:
            observer.stop()
    finally:
        api.stop()
    assert result.returncode == 0, result.stderr
    assert "192.0.2.10: announced as 192.0.2.10/32 to tor-a [med 7] (cluster_endpoint)" in result.stdout


def test_config_and_password_paths_to_dev_zero_are_refused_not_read_for_ever(tmp_path: Path) -> None:
    """A config or password file that never ends (/dev/zero) is one problem, read only so far."""
    result = subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "check-config", "/dev/zero"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert "more than a config can be" in result.stderr, result.stderr
    path = tmp_path / "speaker.yaml"
    path.write_text(GOOD.replace("    peerASN: 64512\n", "    peerASN: 64512\n    passwordFile: /dev/zero\n"))
    result = check_config(path)
    assert result.returncode == 2
    assert "passwordFile (/dev/zero): the password must be 1..80 bytes" in result.stderr, result.stderr


IMPLEMENTATION_WORDS = ("``", "thread", "only place that exits", "set a flag", "docstring", "daemon", "reconciler")
"""What the --help texts said before they were written for operators (a module docstring)."""


def subcommands() -> list[str]:
    import argparse

    from bgpspeaker.cli import _parser

    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


@pytest.mark.parametrize("command", ["", *subcommands()], ids=lambda c: c or "top")
def test_help_is_written_for_operators(command: str) -> None:
    """--help of the tool and of every command exits 0 and names no implementation detail."""
    result = cli(*([command] if command else []), "--help")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: bgpspeaker")
    text = result.stdout.lower()
    found = [word for word in IMPLEMENTATION_WORDS if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text)]
    assert not found, f"implementation words in --help: {found}\n{result.stdout}"


def test_check_config_names_the_document_of_each_problem(tmp_path: Path) -> None:
    """A manifest file: other kinds skipped with a note, the ConfigMap's problems prefixed by where it is."""
    body = "".join(f"    {line}\n" for line in GOOD.replace("64513", "0").splitlines())
    path = tmp_path / "all.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bgpspeaker-system}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bgpspeaker-config, namespace: bgpspeaker-system}\n"
        f"data:\n  config.yaml: |\n{body}"
    )
    result = check_config(path)
    assert result.returncode == 2
    assert result.stdout == f"{path}: skipped 1 documents of other kinds (1 Namespace)\n"
    assert result.stderr.splitlines() == [
        "document 2 (ConfigMap bgpspeaker-system/bgpspeaker-config, data['config.yaml']):"
        " myASN: must be an integer 1..4294967295, got 0"
    ]


def test_check_config_reads_standard_input() -> None:
    """`FILE -`: what a pipe gives (kubectl kustomize deploy/ | bgpspeaker check-config -), named (stdin)."""
    for text, code, where in ((GOOD, 0, "stdout"), (GOOD.replace("64513", "0"), 2, "stderr")):
        result = subprocess.run(
            [sys.executable, "-m", "bgpspeaker.cli", "check-config", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == code, result.stderr
        assert (result.stdout if where == "stdout" else result.stderr).strip() == (
            "(stdin): valid" if code == 0 else "myASN: must be an integer 1..4294967295, got 0"
        )
