"""Run the real ``bgpspeaker run`` process in a namespace and read its JSON log stream."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.jsonlog import JsonLogProcess
from lab.netns import pid_alive, stop_pid

__all__ = ["SpeakerProcess"]


class SpeakerProcess(JsonLogProcess):
    """One bgpspeaker daemon, started with ``ip netns exec`` (which execs: same PID)."""

    def __init__(
        self,
        *,
        netns: str,
        workdir: Path,
        config: str,
        kubeconfig: str,
        node_name: str,
        user: str | None = None,
        log_level: str = "debug",
    ) -> None:
        self.netns = netns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "speaker.yaml"
        self.config_path.write_text(config)
        self.kubeconfig_path = workdir / "kubeconfig"
        self.kubeconfig_path.write_text(kubeconfig)
        self.log_path = workdir / "speaker.log"
        self.node_name = node_name
        self.user = user
        self.log_level = log_level
        """Run as this user with no capabilities (setpriv), instead of root."""

    def start(self, *extra: str) -> SpeakerProcess:
        """Start the daemon; returns at once (wait on log events for readiness)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                *self._as_user(),
                sys.executable,
                "-m",
                "bgpspeaker.cli",
                "--log-format",
                "json",
                "--log-level",
                self.log_level,
                "run",
                "--config",
                str(self.config_path),
                "--kubeconfig",
                str(self.kubeconfig_path),
                "--node-name",
                self.node_name,
                *extra,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def _as_user(self) -> list[str]:
        if self.user is None:
            return []
        entry = pwd.getpwnam(self.user)
        return [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout_s: float = 10.0) -> int:
        """Wait for the daemon to exit on its own; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def reload(self, config: str) -> None:
        """Replace the config file atomically (as a ConfigMap update does) and send SIGHUP."""
        staging = self.config_path.with_suffix(".new")
        staging.write_text(config)
        staging.replace(self.config_path)
        os.kill(self.pid, signal.SIGHUP)

    def exabgp_pid(self) -> int:
        """PID of the ExaBGP child that is running now (the latest exabgp_started)."""
        pid: int = self.wait_event("exabgp_started")["pid"]
        latest: int = self.events("exabgp_started")[-1]["pid"]
        return latest if pid_alive(latest) else pid

    def terminate(self, timeout_s: float = 10.0) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit code or None if it had to be killed, seconds taken)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.terminate()
        try:
            code: int | None = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        return code, time.monotonic() - started

    def close(self) -> None:
        """Stop the daemon and every ExaBGP it started, by PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        for record in self.events("exabgp_started"):
            if pid_alive(record["pid"]):
                stop_pid(record["pid"])
