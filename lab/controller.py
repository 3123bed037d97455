"""Run the real ``bgpspeaker controller`` process (on loopback, or in a namespace) and read its JSON log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lab.jsonlog import JsonLogProcess

__all__ = ["ControllerProcess"]

_ROOT = Path(__file__).resolve().parents[1]


class ControllerProcess(JsonLogProcess):
    """One controller replica, identity ``name`` (its POD_NAME)."""

    def __init__(
        self,
        *,
        name: str,
        workdir: Path,
        config: str,
        kubeconfig: str,
        netns: str | None = None,
        lease_namespace: str = "bgpspeaker-system",
        metrics_address: str = "127.0.0.1:0",
    ) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.yaml"
        if not self.config_path.exists():
            self.config_path.write_text(config)
        self.kubeconfig_path = workdir / "kubeconfig"
        self.kubeconfig_path.write_text(kubeconfig)
        self.log_path = workdir / f"{name}.log"
        self.netns = netns
        self.lease_namespace = lease_namespace
        self.metrics_address = metrics_address
        self.label = f"{name}: "

    def start(self) -> ControllerProcess:
        log = self.log_path.open("ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "bgpspeaker.cli",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "controller",
                "--config",
                str(self.config_path),
                "--kubeconfig",
                str(self.kubeconfig_path),
                "--lease-namespace",
                self.lease_namespace,
                "--metrics-address",
                self.metrics_address,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=_ROOT,
            env={**os.environ, "POD_NAME": self.name, "PYTHONPATH": str(_ROOT)},
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no release, no goodbye (a node lost)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit code (None when it had to be killed)."""
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
