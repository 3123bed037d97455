"""BFD under load: does the speaker's BFD keep its timers while the daemon works hard?

    sudo .venv/bin/python -m bench.bfd_steady [--n 10000] [--churn-seconds 30]

One node peering with FRR (zebra + bfdd + bgpd, profile 300 ms x 3 on both sides, hold
time 90 s). Four phases, each measured the same way:

1. cold start: N services already in the API server, the speaker starts; until all N
   are in FRR and 5 s more;
2. mass delete: all N services deleted at once; until FRR has 0 and 3 s more;
3. mass create: the N services created again while the speaker runs (BFD Up throughout);
4. churn: 50 Local services whose endpoint flips between nodes, 10 flips a second.

Per phase: the longest gap between two of the speaker's BFD packets as they arrived at
the router (kernel timestamps from a packet socket in the router's namespace, counted
once the session is Up at 300 ms; FRR declares the session Down after 900 ms without
one), the 99th percentile gap, the speaker's bfd_down events, FRR's session-down
counter, and the CPU the speaker used in the phase (the load the anchor is: without
its own process, BFD would share that CPU with the reconciler). Prints JSON.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import socket
import statistics
import struct
import threading
import time
from typing import Any

from bench.common import cpu_seconds, received, seed_services, vip
from lab.bfdrouter import bfd_profile_block, frr_with_bfd
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from lab.netns import Lab, enter_netns, wait_until
from lab.speaker import SpeakerProcess
from lab.topology import NODE

ROUTER = """\
frr defaults datacenter
hostname tor-a
router bgp 64512
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.0.0.2 remote-as 64513
 neighbor 10.0.0.2 timers 30 90
 neighbor 10.0.0.2 timers connect 1
 neighbor 10.0.0.2 bfd profile fast
 address-family ipv4 unicast
  neighbor 10.0.0.2 activate
 exit-address-family
"""
SPEAKER = """\
apiVersion: bgpspeaker.io/v1alpha1
kind: SpeakerConfig
myASN: 64513
routerID: 10.0.0.2
bfdProfiles:
  - name: fast
    receiveInterval: 300ms
    transmitInterval: 300ms
    detectMultiplier: 3
peers:
  - name: tor-a
    peerAddress: 10.0.0.1
    peerASN: 64512
    holdTime: 90s
    bfdProfile: fast
"""
_ETH_P_IP = 0x0800
_SO_TIMESTAMPNS = 35


class Sniffer:
    """Arrival times (kernel timestamps) of BFD packets from 10.0.0.2 in the router's namespace:
    (time, state, desired min tx in microseconds)."""

    def __init__(self, netns: str) -> None:
        self.packets: list[tuple[float, int, int]] = []
        self._netns = netns
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        enter_netns(self._netns)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.settimeout(0.2)
        self._ready.set()
        source = socket.inet_aton("10.0.0.2")
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = sock.recvmsg(256, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            if len(data) < 20 + 8 + 24 or data[9] != socket.IPPROTO_UDP or data[12:16] != source:
                continue
            header = (data[0] & 0x0F) * 4
            if struct.unpack_from("!H", data, header + 2)[0] != 3784:
                continue
            stamp = next((struct.unpack("=qq", d[:16]) for lvl, kind, d in ancillary if kind == _SO_TIMESTAMPNS), None)
            at = stamp[0] + stamp[1] / 1e9 if stamp else time.time()
            bfd = data[header + 8 :]
            self.packets.append((at, bfd[1] >> 6, struct.unpack_from("!I", bfd, 12)[0]))

    def gaps_since(self, since: float) -> list[float]:
        """Gaps between consecutive packets after ``since`` (wall clock), both Up at <= 300 ms."""
        fast = [(at, state, tx) for at, state, tx in self.packets if at >= since]
        return [
            later[0] - earlier[0]
            for earlier, later in itertools.pairwise(fast)
            if earlier[1] == later[1] == 3 and earlier[2] <= 300_000
        ]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _phase(
    name: str, sniffer: Sniffer, speaker: SpeakerProcess, frr: Any, *, since: float, cpu0: float
) -> dict[str, Any]:
    gaps = sorted(sniffer.gaps_since(since))
    counters = frr.json("show bfd peers counters json") or []
    downs_at_router = sum(int(c.get("session-down", 0)) for c in counters if c.get("peer") == "10.0.0.2")
    return {
        "phase": name,
        "packets": len(gaps) + 1 if gaps else 0,
        "max_gap_ms": round(gaps[-1] * 1000, 1) if gaps else None,
        "p99_gap_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 1) if gaps else None,
        "median_gap_ms": round(statistics.median(gaps) * 1000, 1) if gaps else None,
        "speaker_bfd_down_events": len(speaker.events("bfd_down")),
        "speaker_bfd_downs": [  # what each one was (cumulative, as the count): a path failure or the router's word
            {k: e.get(k) for k in ("timestamp", "state", "diag", "remote_state", "remote_diag", "takes_bgp_down")}
            for e in speaker.events("bfd_down")
        ],
        "router_session_down_total": downs_at_router,
        "speaker_cpu_s": round(cpu_seconds(speaker.pid) - cpu0, 2),
        "longest_reconcile_pass_ms": max(
            (
                e["duration_ms"]
                for e in speaker.events("reconcile_finished")
                if datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() >= since
            ),
            default=None,
        ),
    }


def measure(count: int, churn_seconds: float) -> list[dict[str, Any]]:
    rows = []
    with Lab("bfdst") as lab:
        tor, node_ns = lab.netns("tor"), lab.netns("node")
        lab.link(tor, "10.0.0.1/24", node_ns, "10.0.0.2/24")
        frr = frr_with_bfd(lab, tor, ROUTER, bfd_profile_block())
        api = FakeKubeApi(netns=node_ns, bookmark_interval_s=5.0).start()
        speaker = SpeakerProcess(
            netns=node_ns, workdir=lab.root / "speaker", config=SPEAKER, kubeconfig=api.kubeconfig(), node_name=NODE
        )
        sniffer = Sniffer(tor)
        try:
            api.apply(node(NODE))
            api.apply(node("node-b"))
            seed_services(api, count)
            for i in range(50):
                api.apply(service("churn", f"c{i}", ips=[vip(count + i)], policy="Local"))
                api.apply(_slice(i, NODE))
            speaker.log_level = "info"
            since = time.time()
            speaker.start()
            wait_until(lambda: received(frr) == count + 50, timeout_s=180, desc="cold start", interval_s=0.2)
            time.sleep(5.0)  # the tail of the cold start (route log, GC) is part of the phase
            rows.append(_phase("cold_start", sniffer, speaker, frr, since=since, cpu0=0.0))

            since, cpu0 = time.time(), cpu_seconds(speaker.pid)
            for i in range(count):
                api.delete("services", f"bench/s{i}")
            wait_until(lambda: received(frr) == 50, timeout_s=180, desc="mass delete", interval_s=0.2)
            time.sleep(3.0)
            rows.append(_phase("mass_delete", sniffer, speaker, frr, since=since, cpu0=cpu0))

            since, cpu0 = time.time(), cpu_seconds(speaker.pid)
            seed_services(api, count)
            wait_until(lambda: received(frr) == count + 50, timeout_s=180, desc="mass create", interval_s=0.2)
            time.sleep(3.0)
            rows.append(_phase("mass_create", sniffer, speaker, frr, since=since, cpu0=cpu0))

            since, cpu0 = time.time(), cpu_seconds(speaker.pid)
            where = dict.fromkeys(range(50), NODE)
            flips = 0
            while time.time() - since < churn_seconds:
                time.sleep(max(0.0, since + flips * 0.1 - time.time()))  # the flip schedule
                i = flips % 50
                where[i] = "node-b" if where[i] == NODE else NODE
                api.apply(_slice(i, where[i]))
                flips += 1
            time.sleep(2.0)
            rows.append({**_phase("churn_10_per_s", sniffer, speaker, frr, since=since, cpu0=cpu0), "flips": flips})
        finally:
            sniffer.stop()
            speaker.close()
            api.stop()
    return rows


def _slice(i: int, node_name: str) -> dict[str, Any]:
    return endpoint_slice("churn", f"c{i}-1", service_name=f"c{i}", endpoints=[("10.244.2.5", node_name, True, True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    args = parser.parse_args()
    for row in measure(args.n, args.churn_seconds):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
