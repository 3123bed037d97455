"""FRR with BFD in a namespace: zebra + bfdd + bgpd (``lab.netns.Frr`` runs bgpd alone).

bgpd reaches bfdd only through zebra (bgpd registers its BFD peers with zebra, which
relays them to bfdd over zebra's API), so ``neighbor X bfd`` needs all three; bgpd
with -Z beside a running bfdd never creates a BFD session (measured: ``show bfd peers``
stays empty). Kept apart from ``lab.netns`` so it can be folded into ``Frr`` later.
"""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Any

from lab.netns import Frr, Lab, stop_pid

__all__ = ["FrrBfd", "bfd_profile_block", "frr_with_bfd"]


def bfd_profile_block(name: str = "fast", *, rx_ms: int = 300, tx_ms: int = 300, mult: int = 3, extra: str = "") -> str:
    """bfdd's config: one profile."""
    return (
        "bfd\n"
        f" profile {name}\n"
        f"  receive-interval {rx_ms}\n"
        f"  transmit-interval {tx_ms}\n"
        f"  detect-multiplier {mult}\n"
        f"{extra}"
        " exit\n"
        "exit\n"
    )


@dataclasses.dataclass
class FrrBfd(Frr):
    """zebra, bfdd and bgpd in one namespace, files in ``workdir``."""

    bfdd_config: str = ""
    zebra_daemon: bool = True
    """False only to show that bgpd -Z cannot reach bfdd."""
    pids: dict[str, int] = dataclasses.field(default_factory=dict)

    def start(self, config: str) -> FrrBfd:
        """zebra, then bfdd, then bgpd (all with -z DIR/zserv.api)."""
        subprocess.run(["install", "-d", "-o", "frr", "-g", "frr", str(self.workdir)], check=True)
        if self.zebra_daemon:
            self.pids["zebra"] = self._daemon("zebra", "")
        self.pids["bfdd"] = self._daemon("bfdd", self.bfdd_config, "--bfdctl", str(self.workdir / "bfdd.sock"))
        self.pid = self._daemon("bgpd", config)
        return self

    def _uses_zebra(self, name: str) -> bool:
        return self.zebra_daemon or name == "bfdd"

    def bfd_peers(self) -> list[dict[str, Any]]:
        """``show bfd peers json``."""
        peers: list[dict[str, Any]] = self.json("show bfd peers json") or []
        return peers if isinstance(peers, list) else []

    def bfd_peer(self, address: str) -> dict[str, Any] | None:
        """bfdd's view of the session with ``address``, or None."""
        return next((p for p in self.bfd_peers() if p.get("peer") == address), None)

    def stop(self) -> None:
        """bgpd, bfdd, zebra by PID."""
        super().stop()
        for name in ("bfdd", "zebra"):
            pid = self.pids.pop(name, 0)
            if pid:
                stop_pid(pid)


def frr_with_bfd(lab: Lab, netns: str, bgpd_config: str, bfdd_config: str, *, zebra: bool = True) -> FrrBfd:
    """Start zebra + bfdd + bgpd in ``netns``; the lab stops them on close."""
    frr = FrrBfd(netns=netns, workdir=lab.root / netns, bfdd_config=bfdd_config, zebra_daemon=zebra).start(bgpd_config)
    lab.frrs.append(frr)
    return frr
