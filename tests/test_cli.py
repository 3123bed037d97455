"""The command line: check-config exit codes and messages (the real console entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        "extra: unknown field (allowed: addressPools, advertisements, allowedVIPRanges, apiOutage, apiVersion,"
        " controller, holdDown, kind, loadBalancerClass, myASN, peers, routerID, serviceAnnotations, shutdown)",
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


def test_status_without_a_running_speaker_says_so_and_exits_1() -> None:
    """Nothing listening: one clear line, exit 1."""
    result = subprocess.run(
        [sys.executable, "-m", "bgpspeaker.cli", "status", "--address", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("cannot reach the speaker at 127.0.0.1:9:")


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
