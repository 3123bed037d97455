"""The multi-node lab: three (or more) speaker nodes, one router with kernel ECMP, one client.

    ns "client" 10.2.0.2 ==veth== 10.2.0.1  ns "router"  10.1.1.1 ==veth== 10.1.1.2  ns "node-1" (bgpspeaker)
                                            FRR zebra+bgpd 10.1.2.1 ==veth== 10.1.2.2  ns "node-2" (bgpspeaker)
                                            AS 64512       10.1.3.1 ==veth== 10.1.3.2  ns "node-3" (bgpspeaker)
                                            API server on 10.255.0.1 (its lo), reached over the node links

Every node runs the real ``bgpspeaker run`` (AS 64513) against the one test API server
(lab.kubeapi.FakeKubeApi, real HTTP), peers with the router over its own link, and
holds the VIPs on ``lo`` with a UDP responder that answers with the node's name
(lab.flows, standing in for kube-proxy). The router accepts any node in 10.1.0.0/16
(``bgp listen range``), installs up to 8 paths (``maximum-paths``) through zebra into
its kernel, hashes on L4 (``fib_multipath_hash_policy=1``). The client sends flows
through it (lab.flows probe).

Used by tests/integration/test_multinode.py, bench/failover.py and

    python -m lab.multinode [--nodes 3] [--keep]     # builds it, shows ECMP with traffic
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.bfdrouter import bfd_profile_block, frr_with_bfd
from lab.flows import FlowReport
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from lab.netns import Frr, Lab, run_in, stop_pid, wait_until
from lab.speaker import SpeakerProcess

__all__ = [
    "BFD_PROFILE",
    "SPEAKER_BFD",
    "MultiNode",
    "Node",
    "multinode",
    "multinode_lab",
    "router_config",
    "speaker_config",
]

ROOT = Path(__file__).resolve().parents[1]
ROUTER_ASN = 64512
NODE_ASN = 64513
API_ADDRESS = "10.255.0.1"
CLIENT_ADDRESS = "10.2.0.2"
RESPONDER_PORT = 7000
VIP = "198.51.100.10"
"""The default VIP the helpers put on every node's ``lo``."""
VIP6 = "2001:db8:100::10"
"""The IPv6 VIP on every node's ``lo`` when the lab is built with ``ipv6=True``."""
CLIENT_ADDRESS6 = "fd00:2::2"


BFD_PROFILE = "fast"
"""The router's bfdd profile (300 ms x 3) when the lab runs with ``bfd=True``."""
SPEAKER_BFD = f"""\
bfdProfiles:
  - name: {BFD_PROFILE}
    receiveInterval: 300ms
    transmitInterval: 300ms
    detectMultiplier: 3
"""
"""The nodes' matching profile: give ``speaker_config(extra=SPEAKER_BFD, bfd_profile=BFD_PROFILE)``."""


def router_config(
    *,
    graceful_restart: bool = True,
    bfd: bool = False,
    neighbors: int | None = None,
    extra: str = "",
    ipv6: bool = False,
) -> str:
    """bgpd.conf for the router: a peer group for every node of 10.1.0.0/16 (``bgp listen
    range``), or for ``neighbors`` nodes named one by one; multipath. ``ipv6``: the same
    sessions carry IPv6 unicast too (the nodes' global IPv6 addresses as next hops).

    The router's timers (60/180, FRR's traditional defaults) leave the hold time to the
    speaker's ``holdTime`` (the smaller one is negotiated). With BFD and a listen range FRR
    creates a dynamic neighbor's BFD session only once its BGP session is up and deletes
    both together: the speaker lets BGP reconnect after its ``bgpHoldDown``
    (bgpspeaker.bfd.hold) instead of waiting for BFD Up."""
    gr = " bgp graceful-restart\n" if graceful_restart else ""
    if neighbors is None:
        members = " bgp listen range 10.1.0.0/16 peer-group NODES\n"
    else:
        members = "".join(f" neighbor 10.1.{index}.2 peer-group NODES\n" for index in range(1, neighbors + 1))
    return (
        "frr defaults traditional\n"
        "hostname router\n"
        "log stdout informational\n"
        f"router bgp {ROUTER_ASN}\n"
        " bgp router-id 10.255.0.1\n"
        " no bgp ebgp-requires-policy\n"
        " no bgp default ipv4-unicast\n"
        " bgp bestpath as-path multipath-relax\n"
        f"{gr}"
        " neighbor NODES peer-group\n"
        f" neighbor NODES remote-as {NODE_ASN}\n"
        " neighbor NODES timers 60 180\n"
        " neighbor NODES timers connect 1\n"
        + (f" neighbor NODES bfd profile {BFD_PROFILE}\n" if bfd else "")
        + f"{extra}{members}"
        " address-family ipv4 unicast\n"
        "  neighbor NODES activate\n"
        "  maximum-paths 8\n"
        " exit-address-family\n"
        + (
            " address-family ipv6 unicast\n  neighbor NODES activate\n  maximum-paths 8\n exit-address-family\n"
            if ipv6
            else ""
        )
    )


def speaker_config(
    index: int,
    *,
    hold_time: str | None = None,
    graceful_restart: str | None = None,
    shutdown: str | None = None,
    advertisements: str | None = None,
    bfd_profile: str | None = None,
    peer_extra: str = "",
    extra: str = "",
) -> str:
    """One node's SpeakerConfig (YAML): its router peer, and the given optional blocks.

    ``shutdown``: e.g. ``"{mode: keep}"``; ``advertisements``: a YAML list in flow style."""
    lines = [
        "apiVersion: bgpspeaker.io/v1alpha1",
        "kind: SpeakerConfig",
        f"myASN: {NODE_ASN}",
        f"routerID: 10.1.{index}.2",
        "peers:",
        "  - name: router",
        f"    peerAddress: 10.1.{index}.1",
        f"    peerASN: {ROUTER_ASN}",
    ]
    if hold_time is not None:
        lines.append(f"    holdTime: {hold_time}")
    if graceful_restart is not None:
        lines.append(f"    gracefulRestart: {graceful_restart}")
    if bfd_profile is not None:
        lines.append(f"    bfdProfile: {bfd_profile}")
    lines.extend(line for line in peer_extra.splitlines() if line.strip())
    if advertisements is not None:
        lines.append(f"advertisements: {advertisements}")
    if shutdown is not None:
        lines.append(f"shutdown: {shutdown}")
    lines.extend(line for line in extra.splitlines() if line.strip())
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Node:
    """One speaker node: its namespace, addresses, link and processes."""

    name: str
    index: int
    netns: str
    interface: str
    """The node's end of its link to the router."""
    router_interface: str
    speaker: SpeakerProcess
    responder_pid: int = 0

    @property
    def address(self) -> str:
        return f"10.1.{self.index}.2"

    @property
    def router_address(self) -> str:
        return f"10.1.{self.index}.1"

    @property
    def address6(self) -> str:
        """The node's global IPv6 address on its link (labs built with ``ipv6=True``)."""
        return f"fd00:1:{self.index}::2"

    @property
    def router_address6(self) -> str:
        return f"fd00:1:{self.index}::1"

    def address_for(self, prefix: str) -> str:
        """The node's link address of ``prefix``'s family (what the router's next hop is)."""
        return self.address6 if ":" in prefix else self.address


class MultiNode:
    """The built lab; every helper the tests, the bench and the demo share."""

    def __init__(  # noqa: PLR0917  # built once, by multinode()
        self, lab: Lab, router: str, client: str, frr: Frr, api: FakeKubeApi, nodes: list[Node]
    ) -> None:
        self.lab, self.router, self.client, self.frr, self.api = lab, router, client, frr, api
        self.nodes = {n.name: n for n in nodes}
        self._probers: list[subprocess.Popen[bytes]] = []
        self._link_flapped = False

    # -- the cluster ------------------------------------------------------------------

    def vip_service(
        self,
        name: str,
        *,
        vip: str | list[str] = VIP,
        policy: str = "Cluster",
        endpoints: dict[str, int] | None = None,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """A LoadBalancer Service on ``vip`` (one, or a list: dual-stack) with ``endpoints`` =
        {node: ready endpoints} (default: one on every node)."""
        ips = [vip] if isinstance(vip, str) else vip
        self.api.apply(service("default", name, ips=ips, policy=policy, annotations=annotations, labels=labels))
        self.set_endpoints(name, endpoints if endpoints is not None else {n: 1 for n in self.nodes})

    def set_endpoints(self, name: str, endpoints: dict[str, int]) -> None:
        """Replace the Service's one EndpointSlice: ``count`` ready endpoints per node."""
        items: list[tuple[str, str, bool | None, bool | None]] = []
        for node_name, count in endpoints.items():
            index = self.nodes[node_name].index
            items += [(f"10.244.{index}.{k + 10}", node_name, True, True) for k in range(count)]
        self.api.apply(endpoint_slice("default", f"{name}-1", service_name=name, endpoints=items))

    # -- processes --------------------------------------------------------------------

    def start_speakers(self, *extra: str, nodes: list[str] | None = None, timeout_s: float = 30.0) -> None:
        """Start the speakers (all, or ``nodes``) and wait for each one's session to be up."""
        chosen = [self.nodes[name] for name in nodes or self.nodes]
        ups = {n.name: len(n.speaker.events("peer_up")) for n in chosen}
        for n in chosen:
            n.speaker.start(*extra)
        for n in chosen:
            n.speaker.wait_event("peer_up", timeout_s=timeout_s, after=ups[n.name])

    def stop_speakers(self) -> None:
        """Stop every speaker (SIGTERM: its shutdown mode applies) and its ExaBGP, by PID."""
        for n in self.nodes.values():
            n.speaker.close()
            for record in n.speaker.events("bfd_started"):
                stop_pid(record["pid"])  # normally gone with its parent already

    def reset(self) -> None:
        """Back to the state ``multinode()`` left: speakers stopped, no services, every node
        reachable and its link up, the router's table empty (a fresh bgpd when graceful
        restart left stale paths)."""
        self.stop_speakers()
        for obj in self.api.objects("services"):
            meta = obj["metadata"]
            self.api.delete("services", f"{meta['namespace']}/{meta['name']}")
        for name, n in self.nodes.items():
            if "bsp_dark" in self.lab.run("ip", "netns", "exec", n.netns, "nft", "list", "tables"):
                self.come_back(name)
            self.link(name, up=True)
        if self._link_flapped:
            # FRR 8.4's zebra keeps a kernel nexthop group that lost a member while the
            # link was down and reuses it afterwards (zebra lists 3 next hops, the kernel
            # holds 2) until zebra restarts: start the router afresh.
            self.frr.stop()
            self.frr.start((self.frr.workdir / "bgpd.conf").read_text())
            self._link_flapped = False
        elif self.frr.best_paths():
            self.frr.restart_bgpd()
        wait_until(lambda: not self.frr.best_paths(), timeout_s=30, desc="the router's table empty")

    def restart_speaker(self, name: str, *, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM the speaker (its shutdown mode applies), start it again, wait for its
        session; (exit code, seconds the stop took)."""
        speaker = self.nodes[name].speaker
        ups = len(speaker.events("peer_up"))
        result = speaker.terminate(timeout_s=30.0)
        for record in speaker.events("exabgp_started"):
            stop_pid(record["pid"])  # normally gone already; never left peering
        speaker.start()
        speaker.wait_event("peer_up", timeout_s=timeout_s, after=ups)
        return result

    def set_config(self, name: str, config: str) -> None:
        """Write a node's config file (before it starts, or then reload it)."""
        speaker = self.nodes[name].speaker
        if speaker.proc is not None and speaker.proc.poll() is None:
            speaker.reload(config)
        else:
            speaker.config_path.write_text(config)

    # -- faults -----------------------------------------------------------------------

    def go_dark(self, name: str) -> None:
        """Nothing in or out of the node's link any more (nftables drop rules); the link stays up."""
        n = self.nodes[name]
        rules = (
            "table inet bsp_dark {\n"
            f' chain input {{ type filter hook input priority -300; iifname "{n.interface}" drop; }}\n'
            f' chain output {{ type filter hook output priority -300; oifname "{n.interface}" drop; }}\n'
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", n.netns, "nft", "-f", "-"], input=rules, text=True, check=True)

    def come_back(self, name: str) -> None:
        """Remove the drop rules."""
        self.lab.run("ip", "netns", "exec", self.nodes[name].netns, "nft", "delete", "table", "inet", "bsp_dark")

    def link(self, name: str, *, up: bool) -> None:
        """Set the node's end of its link down or up (up: its default route back, which the
        kernel flushed with the link)."""
        n = self.nodes[name]
        self.lab.run("ip", "-n", n.netns, "link", "set", n.interface, "up" if up else "down")
        if not up:
            self._link_flapped = True
        if up:
            self.lab.run("ip", "-n", n.netns, "route", "replace", "default", "via", n.router_address)

    # -- what the router holds ----------------------------------------------------------

    def multipath(self, prefix: str) -> set[str]:
        """Next hops of FRR's multipath set for ``prefix`` (best path plus multipaths)."""
        detail = self.frr.json(f"show bgp {_afi(prefix)} unicast {prefix} json")
        if detail.get("prefix") != prefix:
            return set()
        hops: set[str] = set()
        for path in detail.get("paths", []):
            if path.get("bestpath", {}).get("overall") or path.get("multipath"):
                hops.update(hop["ip"] for hop in path.get("nexthops", []) if hop.get("scope") != "link-local")
        return hops

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        """FRR's paths for ``prefix`` with every attribute."""
        detail = self.frr.json(f"show bgp {_afi(prefix)} unicast {prefix} json")
        paths: list[dict[str, Any]] = detail.get("paths", []) if detail.get("prefix") == prefix else []
        return paths

    def kernel_nexthops(self, prefix: str) -> dict[str, int]:
        """{gateway: weight} of the router kernel's route to ``prefix`` (empty: no route)."""
        result = run_in(self.router, "ip", "-j", "-6" if ":" in prefix else "-4", "route", "show", prefix)
        routes = json.loads(result.stdout or "[]")
        hops: dict[str, int] = {}
        for route in routes:
            if "nexthops" in route:
                for hop in route["nexthops"]:
                    hops[hop["gateway"]] = int(hop.get("weight", 1))
            elif "gateway" in route:
                hops[route["gateway"]] = 1
        return hops

    def node_of(self, address: str) -> str:
        """The node whose link address is ``address``."""
        return next(n.name for n in self.nodes.values() if address in (n.address, n.address6))

    def wait_multipath(self, prefix: str, nodes: set[str], *, timeout_s: float = 30.0) -> None:
        """Wait until FRR's multipath set and the kernel's next hops are exactly ``nodes``."""
        want = {self.nodes[name].address_for(prefix) for name in nodes}

        def observed() -> tuple[set[str], set[str]]:
            return self.multipath(prefix), set(self.kernel_nexthops(prefix))

        wait_until(
            lambda: observed() == (want, want) or None,
            timeout_s=timeout_s,
            desc=f"{prefix} via exactly {sorted(want)} in FRR and the kernel (FRR, kernel): {observed()}",
        )

    # -- traffic ------------------------------------------------------------------------

    def probe(
        self, *, flows: int, duration_s: float, vip: str = VIP, interval_ms: float = 20.0, first_port: int = 20000
    ) -> FlowReport:
        """Probe ``vip`` from the client for ``duration_s``; the report."""
        with self.prober(flows=flows, vip=vip, interval_ms=interval_ms, first_port=first_port) as running:
            time.sleep(duration_s)  # the measurement window itself, not a synchronization
        return running.report()

    @contextmanager
    def prober(
        self, *, flows: int, vip: str = VIP, interval_ms: float = 20.0, first_port: int = 20000
    ) -> Iterator[RunningProbe]:
        """Probe in the background while the block runs; ``.report()`` afterwards."""
        out = Path(tempfile.mkdtemp(prefix="probe-", dir=self.lab.root)) / "report.json"
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", self.client, sys.executable, "-m", "lab.flows", "probe",
                "--target", f"{vip}:{RESPONDER_PORT}", "--flows", str(flows),
                "--interval-ms", str(interval_ms), "--first-port", str(first_port), "--out", str(out),
            ],
            cwd=ROOT,
        )  # fmt: skip
        self._probers.append(proc)
        running = RunningProbe(proc, out)
        try:
            yield running
        finally:
            running.stop()

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop probers, speakers (and their ExaBGPs), responders, the API server, FRR; delete namespaces."""
        for proc in self._probers:
            if proc.poll() is None:
                stop_pid(proc.pid)
        for n in self.nodes.values():
            n.speaker.close()
            if n.responder_pid:
                stop_pid(n.responder_pid)
                n.responder_pid = 0
        self.api.stop()
        self.lab.close()


class RunningProbe:
    """A prober subprocess in the client namespace."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc, self.out = proc, out
        self.started = time.monotonic()

    def stop(self) -> None:
        """Ask it to finish (it writes its report after a short linger)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def report(self) -> FlowReport:
        """The report (after ``stop``)."""
        self.stop()
        return FlowReport.from_json(json.loads(self.out.read_text()))


@contextmanager
def multinode_lab(name: str, **options: Any) -> Iterator[MultiNode]:
    """A ``Lab`` named ``name`` with ``multinode(lab, **options)`` in it, all removed on exit
    (a module-scoped fixture's body)."""
    with Lab(name) as lab:
        topo = multinode(lab, **options)
        try:
            yield topo
        finally:
            topo.close()


def multinode(
    lab: Lab,
    *,
    nodes: int = 3,
    config: Callable[[int], str] | None = None,
    router: str | None = None,
    vips: tuple[str, ...] = (VIP,),
    bfd: bool = False,
    ipv6: bool = False,
    listen_range: bool = False,
) -> MultiNode:
    """Build the lab in ``lab``: namespaces, links, FRR (zebra + bgpd, and bfdd with a
    300 ms x 3 profile for every node when ``bfd``), the API server with a Node per
    node, responders; speakers created, not started. With ``bfd`` the router names the
    nodes as neighbors, or accepts them by ``bgp listen range`` when ``listen_range``.
    ``ipv6``: dual-stack links (router fd00:1:N::1, node fd00:1:N::2; client fd00:2::2),
    ``VIP6`` on every node's ``lo`` too, and a router that takes IPv6 unicast over the
    nodes' sessions (give the nodes ``families: [ipv4, ipv6]``)."""
    router_ns, client_ns = lab.netns("router"), lab.netns("client")
    for ns in (router_ns, client_ns):
        _sysctl(lab, ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
    _sysctl(
        lab,
        router_ns,
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",
        "net.ipv6.fib_multipath_hash_policy=1",
        "net.ipv6.conf.all.forwarding=1",
    )
    lab.run("ip", "-n", router_ns, "addr", "add", f"{API_ADDRESS}/32", "dev", "lo")
    client_if, router_client_if = lab.link(client_ns, f"{CLIENT_ADDRESS}/24", router_ns, "10.2.0.1/24")
    lab.run("ip", "-n", client_ns, "route", "add", "default", "via", "10.2.0.1")
    if ipv6:
        _add6(
            lab,
            client_ns,
            router_ns,
            addresses=(f"{CLIENT_ADDRESS6}/64", "fd00:2::1/64"),
            interfaces=(client_if, router_client_if),
        )
    built: list[tuple[int, str, str, str]] = []
    for index in range(1, nodes + 1):
        ns = lab.netns(f"node-{index}")
        _sysctl(lab, ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        router_if, node_if = lab.link(router_ns, f"10.1.{index}.1/24", ns, f"10.1.{index}.2/24")
        lab.run("ip", "-n", ns, "route", "add", "default", "via", f"10.1.{index}.1")
        for vip in vips:
            lab.run("ip", "-n", ns, "addr", "add", f"{vip}/32", "dev", "lo")
        if ipv6:
            _add6(
                lab,
                ns,
                router_ns,
                addresses=(f"fd00:1:{index}::2/64", f"fd00:1:{index}::1/64"),
                interfaces=(node_if, router_if),
            )
            lab.run("ip", "-n", ns, "addr", "add", f"{VIP6}/128", "dev", "lo")
        built.append((index, ns, node_if, router_if))
    if bfd:
        frr: Frr = frr_with_bfd(
            lab,
            router_ns,
            router or router_config(bfd=True, neighbors=None if listen_range else nodes, ipv6=ipv6),
            bfd_profile_block(BFD_PROFILE),
        )
    else:
        frr = lab.frr(router_ns, router or router_config(ipv6=ipv6), zebra=True)
    api = FakeKubeApi(netns=router_ns, host=API_ADDRESS).start()
    made: list[Node] = []
    try:
        for index, ns, node_if, router_if in built:
            name = f"node-{index}"
            api.apply(node(name, addresses=[f"10.1.{index}.2"]))
            speaker = SpeakerProcess(
                netns=ns,
                workdir=lab.root / f"speaker-{name}",
                config=(config or speaker_config)(index),
                kubeconfig=api.kubeconfig(),
                node_name=name,
            )
            n = Node(name=name, index=index, netns=ns, interface=node_if, router_interface=router_if, speaker=speaker)
            n.responder_pid = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.flows", "respond", "--name", name,
                 "--port", str(RESPONDER_PORT)],
                cwd=ROOT, stdin=subprocess.DEVNULL,
            ).pid  # fmt: skip
            made.append(n)
    except BaseException:
        for n in made:
            stop_pid(n.responder_pid)
        api.stop()
        raise
    return MultiNode(lab, router_ns, client_ns, frr, api, made)


def _afi(prefix: str) -> str:
    return "ipv6" if ":" in prefix else "ipv4"


def _add6(lab: Lab, near: str, router: str, *, addresses: tuple[str, str], interfaces: tuple[str, str]) -> None:
    """IPv6 on an existing link, and the default route from ``near`` to the router."""
    (near_address, router_address), (near_if, router_if) = addresses, interfaces
    lab.run("ip", "-6", "-n", near, "addr", "add", near_address, "dev", near_if, "nodad")
    lab.run("ip", "-6", "-n", router, "addr", "add", router_address, "dev", router_if, "nodad")
    lab.run("ip", "-6", "-n", near, "route", "add", "default", "via", router_address.partition("/")[0])


def _sysctl(lab: Lab, netns: str, *settings: str) -> None:
    lab.run("ip", "netns", "exec", netns, "sysctl", "-qw", *settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--flows", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
    args = parser.parse_args()
    with Lab("mn") as lab:
        topo = multinode(lab, nodes=args.nodes)
        try:
            topo.vip_service("web")
            topo.start_speakers()
            topo.wait_multipath(f"{VIP}/32", set(topo.nodes))
            print(f"$ vtysh -c 'show bgp ipv4 unicast {VIP}/32'")
            print(topo.frr.vtysh(f"show bgp ipv4 unicast {VIP}/32"))
            print(f"$ ip route show {VIP}   (router)")
            print(run_in(topo.router, "ip", "route", "show", VIP).stdout)
            report = topo.probe(flows=args.flows, duration_s=2.0)
            print(f"{args.flows} flows for 2 s, every 20 ms: {report.summary()}")
            if args.keep:
                print(f"Running. vtysh --vty_socket {topo.frr.workdir}   (Ctrl-C stops)")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            topo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
