"""Real traffic for the multi-node lab: a UDP responder per node and a flow prober.

    python -m lab.flows respond --name node-a [--port 7000]
    python -m lab.flows probe --target 198.51.100.10:7000 --flows 60 [--interval-ms 20]
                              [--duration-s 5] --out FILE

The responder stands in for kube-proxy: it answers every datagram on its port, on any
address of its namespace (the VIPs sit on ``lo``), with the datagram followed by its
node name. The prober sends from ``--flows`` sockets, each its own source port (so the
router's L4 hash may send each flow to another node), one probe per flow every
``--interval-ms``; it stops after ``--duration-s`` or on SIGTERM/SIGINT, waits
``--linger-ms`` for late answers and writes a JSON report (``FlowReport.to_json``):
per flow, which node answered how often, every run of lost probes and how long it
lasted, and how often the answering node changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["FlowReport", "FlowResult", "probe", "respond"]

_MAX_DATAGRAM = 512
_BURST = 64
"""Probes sent back to back before the prober reads answers for a moment."""


def respond(name: str, port: int) -> None:
    """Answer every datagram on ``port`` (IPv4 and IPv6, any address) with it plus `` name``."""
    suffix = b" " + name.encode("ascii")
    selector = selectors.DefaultSelector()
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # a lab namespace
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # bursts from thousands of flows
        sock.bind((host, port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data, peer = sock.recvfrom(_MAX_DATAGRAM)
                except BlockingIOError:
                    break
                try:
                    sock.sendto(data + suffix, peer)
                except OSError:
                    pass  # the way back is gone (a dark node): the prober counts the loss


@dataclasses.dataclass(frozen=True, slots=True)
class FlowResult:
    """One flow (one source port) over the whole run."""

    port: int
    sent: int
    answered: int
    nodes: dict[str, int]
    """Node name -> probes it answered."""
    moves: int
    """How often the answering node changed from one answered probe to the next."""
    gaps: list[tuple[float, float]]
    """Runs of lost probes: (first lost probe's send time, dark seconds until the next
    answered probe was sent), times relative to the first probe."""

    @property
    def lost(self) -> int:
        """Probes never answered."""
        return self.sent - self.answered

    @property
    def longest_dark_s(self) -> float:
        """The longest run of lost probes, in seconds (0 when none was lost)."""
        return max((dark for _, dark in self.gaps), default=0.0)

    @property
    def last_node(self) -> str | None:
        """The node that answered the most probes (None: no answer at all)."""
        return max(self.nodes, key=self.nodes.__getitem__) if self.nodes else None


@dataclasses.dataclass(frozen=True, slots=True)
class FlowReport:
    """What the prober saw, flow by flow."""

    interval_s: float
    duration_s: float
    flows: list[FlowResult]

    @property
    def sent(self) -> int:
        return sum(flow.sent for flow in self.flows)

    @property
    def lost(self) -> int:
        return sum(flow.lost for flow in self.flows)

    @property
    def moved(self) -> int:
        """Flows whose answering node changed at least once."""
        return sum(1 for flow in self.flows if flow.moves)

    @property
    def longest_dark_s(self) -> float:
        return max((flow.longest_dark_s for flow in self.flows), default=0.0)

    def split(self) -> dict[str, int]:
        """Node -> number of flows it answered most probes of (each flow counted once)."""
        counts: dict[str, int] = {}
        for flow in self.flows:
            if flow.last_node is not None:
                counts[flow.last_node] = counts.get(flow.last_node, 0) + 1
        return dict(sorted(counts.items()))

    def first_loss_s(self) -> float | None:
        """Send time of the earliest lost probe (None: nothing lost)."""
        return min((start for flow in self.flows for start, _ in flow.gaps), default=None)

    def summary(self) -> dict[str, Any]:
        """The figures a test or a bench row reports."""
        return {
            "flows": len(self.flows),
            "probes": self.sent,
            "lost": self.lost,
            "moved": self.moved,
            "longest_dark_s": round(self.longest_dark_s, 3),
            "dark_flows": sum(1 for flow in self.flows if flow.gaps),
            "split": self.split(),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "duration_s": self.duration_s,
            "flows": [dataclasses.asdict(flow) for flow in self.flows],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowReport:
        return cls(
            interval_s=data["interval_s"],
            duration_s=data["duration_s"],
            flows=[
                FlowResult(
                    port=f["port"],
                    sent=f["sent"],
                    answered=f["answered"],
                    nodes=f["nodes"],
                    moves=f["moves"],
                    gaps=[(a, b) for a, b in f["gaps"]],
                )
                for f in data["flows"]
            ],
        )


def _flow_result(port: int, sent_at: Sequence[float], answers: dict[int, str], interval_s: float) -> FlowResult:
    nodes: dict[str, int] = {}
    moves = 0
    previous: str | None = None
    gaps: list[tuple[float, float]] = []
    gap_start: float | None = None
    for seq, at in enumerate(sent_at):
        node = answers.get(seq)
        if node is None:
            if gap_start is None:
                gap_start = at
            continue
        if gap_start is not None:
            gaps.append((round(gap_start, 4), round(at - gap_start, 4)))
            gap_start = None
        nodes[node] = nodes.get(node, 0) + 1
        if previous is not None and node != previous:
            moves += 1
        previous = node
    if gap_start is not None:  # still dark at the end
        gaps.append((round(gap_start, 4), round(sent_at[-1] + interval_s - gap_start, 4)))
    return FlowResult(port=port, sent=len(sent_at), answered=len(answers), nodes=nodes, moves=moves, gaps=gaps)


def probe(
    target: tuple[str, int],
    *,
    flows: int,
    interval_s: float = 0.02,
    duration_s: float | None = None,
    linger_s: float = 0.5,
    first_port: int = 20000,
) -> FlowReport:
    """Probe ``target`` from ``flows`` source ports until ``duration_s`` or SIGTERM/SIGINT."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True  # only a flag: the loop notices it

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < flows + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, flows + 64), hard))
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    for index in range(flows):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", first_port + index))  # a lab namespace
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        sockets.append(sock)
    sent_at: list[float] = []
    answers: list[dict[int, str]] = [{} for _ in range(flows)]
    started = time.monotonic()

    def receive(until: float) -> None:
        while True:
            timeout = until - time.monotonic()
            if timeout <= 0:
                return
            for key, _ in selector.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                while True:
                    try:
                        data = sock.recv(_MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # e.g. ICMP unreachable reported on the socket
                    parts = data.split(b" ")
                    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                        answers[int(parts[0])][int(parts[1])] = parts[2].decode("ascii", "replace")

    while not stop and (duration_s is None or time.monotonic() - started < duration_s):
        seq = len(sent_at)
        tick = started + seq * interval_s
        sent_at.append(time.monotonic() - started)
        for index, sock in enumerate(sockets):
            try:
                sock.sendto(f"{index} {seq}".encode("ascii"), target)
            except OSError:
                pass  # no route right now: counted as lost
            if index % _BURST == _BURST - 1:
                receive(time.monotonic() + 0.0005)  # paced: a burst of thousands overruns socket buffers
        receive(max(tick + interval_s, time.monotonic()))
    receive(time.monotonic() + linger_s)
    for sock in sockets:
        sock.close()
    results = [_flow_result(first_port + index, sent_at, answers[index], interval_s) for index in range(flows)]
    return FlowReport(interval_s=interval_s, duration_s=time.monotonic() - started - linger_s, flows=results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    responder = commands.add_parser("respond")
    responder.add_argument("--name", required=True)
    responder.add_argument("--port", type=int, default=7000)
    prober = commands.add_parser("probe")
    prober.add_argument("--target", required=True, help="VIP:PORT ([v6]:PORT)")
    prober.add_argument("--flows", type=int, default=60)
    prober.add_argument("--interval-ms", type=float, default=20.0)
    prober.add_argument("--duration-s", type=float, default=None)
    prober.add_argument("--linger-ms", type=float, default=500.0)
    prober.add_argument("--first-port", type=int, default=20000)
    prober.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "respond":
        respond(args.name, args.port)
        return 0
    host, _, port = args.target.rpartition(":")
    report = probe(
        (host.strip("[]"), int(port)),
        flows=args.flows,
        interval_s=args.interval_ms / 1000,
        duration_s=args.duration_s,
        linger_s=args.linger_ms / 1000,
        first_port=args.first_port,
    )
    staging = f"{args.out}.new"
    with open(staging, "w") as handle:
        json.dump(report.to_json(), handle)
    os.replace(staging, args.out)  # readers see the whole report or none
    return 0


if __name__ == "__main__":
    sys.exit(main())
