"""BFD between the speaker and FRR's bfdd (zebra + bfdd + bgpd in the router's namespace).

holdTime is 90 s on both sides, so a BGP session that goes down within seconds can only
have been taken down by BFD. Each test prints what it measured."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.bfdrouter import FrrBfd, bfd_profile_block, frr_with_bfd
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from lab.netns import Frr, Lab, PathSampler, http_get, pid_alive, run_in, wait_until
from lab.speaker import SpeakerProcess
from tests.integration.conftest import NODE, require_prerequisites

VIPS = {f"192.0.2.{i}/32" for i in range(1, 6)}
LISTEN = "127.0.0.1:17473"

BGPD = """\
frr defaults datacenter
hostname tor-a
log stdout informational
router bgp 64512
 bgp router-id 10.0.0.1
{global_extra} no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.0.0.2 remote-as 64513
 neighbor 10.0.0.2 timers 30 90
 neighbor 10.0.0.2 timers connect 1
{neighbor_extra} address-family ipv4 unicast
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
{peer_extra}{extra}"""


class Rig:
    """Router and node namespaces, the router's FRR, the node's API server and speaker."""

    def __init__(self, lab: Lab, *, router: str, speaker: str, bfdd: bool = True, never_up_s: float = 30) -> None:
        self.lab = lab
        self.tor = lab.netns("tor")
        self.node = lab.netns("node")
        lab.link(self.tor, "10.0.0.1/24", self.node, "10.0.0.2/24")
        self.frr: Frr = frr_with_bfd(lab, self.tor, router, bfd_profile_block()) if bfdd else lab.frr(self.tor, router)
        self.api = FakeKubeApi(netns=self.node, bookmark_interval_s=1.0).start()
        self.api.apply(node(NODE))
        for index, vip in enumerate(sorted(VIPS)):
            name = f"s{index}"
            self.api.apply(service("default", name, ips=[vip.split("/")[0]]))
            self.api.apply(
                endpoint_slice("default", f"{name}-1", service_name=name, endpoints=[("10.244.1.5", NODE, True, True)])
            )
        self.speaker = SpeakerProcess(
            netns=self.node,
            workdir=lab.root / "speaker",
            config=speaker,
            kubeconfig=self.api.kubeconfig(),
            node_name=NODE,
        )
        self.never_up_s = never_up_s

    def start(self) -> None:
        self.speaker.start("--bfd-never-up-warning", str(self.never_up_s), "--listen", LISTEN)

    def metrics(self) -> dict[str, float]:
        """The BFD metrics for tor-a by name."""
        status, body = http_get(self.node, f"http://{LISTEN}/metrics")
        assert status == 200
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name.startswith("bgpspeaker_bfd_") and sample.labels.get("peer") == "tor-a"
        }

    def status(self) -> tuple[str, dict[str, Any]]:
        """``bgpspeaker status``, as text and as JSON."""
        command = [sys.executable, "-m", "bgpspeaker.cli", "status", "--address", LISTEN]
        text = run_in(self.node, *command)
        document = run_in(self.node, *command, "--output", "json")
        assert text.returncode == document.returncode == 0, text.stderr
        return text.stdout, json.loads(document.stdout)

    @property
    def bfd(self) -> FrrBfd:
        assert isinstance(self.frr, FrrBfd)
        return self.frr

    def established(self) -> bool:
        return bool(self.frr.neighbor("10.0.0.2").get("bgpState") == "Established")

    def routes(self) -> set[str]:
        return VIPS & set(self.frr.best_paths())

    def dark(self, on: bool) -> None:
        """Drop everything between the node and the router, on the node's side (nftables)."""
        if on:
            rules = (
                "table inet bfddark {\n"
                " chain in { type filter hook input priority -10; ip saddr 10.0.0.1 drop; }\n"
                " chain out { type filter hook output priority -10; ip daddr 10.0.0.1 drop; }\n"
                "}\n"
            )
            path = self.lab.root / "dark.nft"
            path.write_text(rules)
            result = run_in(self.node, "nft", "-f", str(path))
        else:
            result = run_in(self.node, "nft", "delete", "table", "inet", "bfddark")
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        self.speaker.close()
        self.api.stop()


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_prerequisites()
    with Lab("bf") as built:
        yield built


def test_bfd_down_takes_bgp_down_at_once_and_up_brings_it_back(lab: Lab) -> None:
    """FRR's bfdd shows the speaker up; the node goes dark: the speaker logs bfd_down and closes
    its BGP session within about a second (hold time 90 s) and holds it down (bgpHoldDown 1m,
    longer than the test); light again: BFD and BGP come back."""
    rig = Rig(
        lab,
        router=BGPD.format(global_extra="", neighbor_extra=" neighbor 10.0.0.2 bfd profile fast\n"),
        speaker=SPEAKER.format(peer_extra="", extra="").replace(
            "Multiplier: 3\n", "Multiplier: 3\n    bgpHoldDown: 1m\n"
        ),
    )
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        peer = wait_until(
            lambda: (p := rig.bfd.bfd_peer("10.0.0.2")) and p.get("status") == "up" and p,
            timeout_s=20,
            desc=f"FRR's BFD peer up: {rig.bfd.bfd_peers()}",
        )
        assert peer["receive-interval"] == 300 and peer["transmit-interval"] == 300
        rig.speaker.wait_event("bfd_up", peer="tor-a")
        exabgp = rig.speaker.exabgp_pid()
        assert rig.metrics() == {
            "bgpspeaker_bfd_session_up": 1.0,
            "bgpspeaker_bfd_session_down_events_total": 0.0,
        }
        text, document = rig.status()
        assert any(line.split()[:3] == ["tor-a", "up", "up"] for line in text.splitlines()), text
        [bfd] = document["bfd"]
        assert (bfd["peer"], bfd["state"], bfd["tx_ms"], bfd["detect_ms"]) == ("tor-a", "up", 300.0, 900.0), bfd

        darkened = time.monotonic()
        rig.dark(True)
        down = rig.speaker.wait_event("bfd_down", peer="tor-a", timeout_s=10)
        assert down["diag"] == "control_detection_time_expired" and down["takes_bgp_down"] is True
        rig.speaker.wait_event("session_stopping", peer="tor-a", reason="bfd_down", timeout_s=10)
        wait_until(lambda: not pid_alive(exabgp), timeout_s=5, desc="the peer's ExaBGP stopped")
        closed_s = time.monotonic() - darkened
        wait_until(lambda: not rig.routes(), timeout_s=10, desc="FRR drops the routes (its own BFD)")
        router_s = time.monotonic() - darkened
        assert closed_s < 3.0, closed_s  # BFD 0.9 s + stopping ExaBGP; the hold timer is 90 s
        # Held down while BFD is down: no new ExaBGP for this peer.
        assert not [e for e in rig.speaker.events("exabgp_started") if pid_alive(e["pid"])]
        assert rig.metrics() == {
            "bgpspeaker_bfd_session_up": 0.0,
            "bgpspeaker_bfd_session_down_events_total": 1.0,
        }
        _, document = rig.status()
        assert document["bfd"][0]["blocks_bgp"] is True and document["bfd"][0]["state"] == "down"
        assert document["bfd"][0]["bgp_hold_s"] == 60.0

        lit = time.monotonic()
        rig.dark(False)
        rig.speaker.wait_event("bfd_up", peer="tor-a", after=1, timeout_s=15)
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes back; {rig.speaker.tail(5)}")
        back_s = time.monotonic() - lit
        assert len(rig.speaker.events("bfd_down")) == 1
        print(
            f"BFD dark: speaker closed BGP {closed_s:.2f} s after the rules, FRR dropped the routes"
            f" {router_s:.2f} s after; light: routes back {back_s:.2f} s after"
        )
    finally:
        rig.close()


def test_router_without_bfd_keeps_bgp_and_warns_once(lab: Lab) -> None:
    """bgpd alone (no bfdd, no `neighbor bfd`): BGP stays up, routes stay, one bfd_never_up."""
    rig = Rig(
        lab,
        router=BGPD.format(global_extra="", neighbor_extra=""),
        speaker=SPEAKER.format(peer_extra="", extra=""),
        bfdd=False,
        never_up_s=3,
    )
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        rig.speaker.wait_event("bfd_never_up", peer="tor-a", timeout_s=15)
        since = time.monotonic()
        wait_until(lambda: time.monotonic() - since > 4, timeout_s=10, desc="4 s more")  # one check interval more
        assert len(rig.speaker.events("bfd_never_up")) == 1
        assert rig.established() and rig.routes() == VIPS
        assert not rig.speaker.events("session_stopping") and not rig.speaker.events("bfd_down")
    finally:
        rig.close()


GR_SPEAKER = SPEAKER.format(peer_extra="    gracefulRestart: 120s\n", extra="shutdown: {mode: keep}\n")
GR_ROUTER = BGPD.format(global_extra=" bgp graceful-restart\n", neighbor_extra=" neighbor 10.0.0.2 bfd profile fast\n")


def test_keep_restart_with_bfd_and_graceful_restart_never_drops_a_route(lab: Lab) -> None:
    """SIGTERM with shutdown keep + graceful restart + BFD: BGP closes first (the router keeps the
    routes as stale), then AdminDown; a new speaker comes up. FRR's table sampled throughout."""
    rig = Rig(lab, router=GR_ROUTER, speaker=GR_SPEAKER)
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        wait_until(
            lambda: (p := rig.bfd.bfd_peer("10.0.0.2")) and p.get("status") == "up",
            timeout_s=20,
            desc="FRR's BFD peer up",
        )
        before = rig.frr.neighbor("10.0.0.2")
        drops = int(before.get("connectionsDropped", 0))
        with PathSampler(rig.frr, VIPS) as sampler:
            code, stop_s = rig.speaker.terminate()
            assert code == 0, rig.speaker.tail()
            assert rig.speaker.events("bfd_admin_down_sent", confirmed=True), rig.speaker.tail()
            wait_until(
                lambda: (p := rig.bfd.bfd_peer("10.0.0.2")) and p.get("status") == "down" and p,
                timeout_s=5,
                desc="FRR's BFD session down (AdminDown received)",
            )
            after_stop = rig.frr.neighbor("10.0.0.2")
            rig.speaker.start("--bfd-never-up-warning", "30")
            wait_until(
                lambda: int(rig.frr.neighbor("10.0.0.2").get("connectionsEstablished", 0)) >= 2,
                timeout_s=30,
                desc="BGP re-established",
            )
            rig.speaker.wait_event("end_of_rib_sent", timeout_s=20)
            wait_until(
                lambda: not any(path.get("stale") for path in rig.frr.best_paths().values()),
                timeout_s=10,
                desc="stale flags cleared",
            )
        print(
            f"keep + GR + BFD restart: stop {stop_s:.2f} s; FRR after the stop: bgpState {after_stop.get('bgpState')},"
            f" lastReset {after_stop.get('lastResetDueTo')!r}; fewest routes best {sampler.fewest}/{len(VIPS)}"
            f" over {sampler.samples} samples"
        )
        assert int(rig.frr.neighbor("10.0.0.2").get("connectionsDropped", 0)) == drops + 1
        # The session closed without a NOTIFICATION from FRR: graceful restart held.
        assert after_stop["messageStats"]["notificationsSent"] == before["messageStats"]["notificationsSent"]
        assert sampler.samples > 10
        assert sampler.fewest == len(VIPS), sampler.missing[:3]
    finally:
        rig.close()


def test_frr_8_4_resets_an_established_session_on_bfd_admin_down(lab: Lab) -> None:
    """Why the speaker closes BGP before it sends AdminDown: FRR 8.4's bfdd hands a received
    AdminDown to bgpd as Down (bfdd/bfd.c bs_up_handler -> ptm_bfd_sess_dn), and bgpd resets the
    Established session with NOTIFICATION Cease/BFD Down (bgpd/bgp_bfd.c), which ends graceful
    restart (no N-bit from ExaBGP) and clears the routes. A bare BFD child (not the speaker's)
    sends AdminDown while BGP is Established with graceful restart; bgpd's debug log says what
    it did (a poll of the table misses it: ExaBGP reconnects and re-announces within ~20 ms)."""
    from lab.bfdchild import BfdChild, session_json

    rig = Rig(lab, router=GR_ROUTER, speaker=GR_SPEAKER.replace("    bfdProfile: fast\n", ""))
    child = BfdChild(rig.node)
    try:
        child.send({"op": "set", "sessions": [session_json("tor-a", "10.0.0.2", "10.0.0.1")]})
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        # bgpd acts only on an Up -> Down change of its own view (through zebra).
        before = wait_until(
            lambda: (
                (n := rig.frr.neighbor("10.0.0.2")).get("bgpState") == "Established"
                and n.get("peerBfdInfo", {}).get("status") == "Up"
                and n
            ),
            timeout_s=20,
            desc="Established with BFD Up in bgpd",
        )
        logfile = rig.frr.workdir / "debug.log"
        rig.frr.vtysh(f"configure terminal\nlog file {logfile} debugging")
        rig.frr.vtysh("debug bgp neighbor-events")
        rig.frr.vtysh("debug bgp bfd")
        sent = time.monotonic()
        child.send({"op": "admin-down"})
        wait_until(
            lambda: (
                rig.frr.neighbor("10.0.0.2")["messageStats"]["notificationsSent"]
                > before["messageStats"]["notificationsSent"]
            ),
            timeout_s=5,
            desc="bgpd sends a NOTIFICATION",
        )
        reset_s = time.monotonic() - sent
        text = wait_until(
            lambda: (t := logfile.read_text()) and "went from Established to Clearing" in t and t,
            timeout_s=5,
            desc="bgpd's log of the reset",
        )
        assert "bfd state Up -> Down" in text
        assert "6/10 (Cease/BFD Down)" in text
        print(f"FRR 8.4 on BFD AdminDown: NOTIFICATION Cease/BFD Down and Established -> Clearing, {reset_s:.2f} s")
    finally:
        child.close()
        rig.close()


def test_profile_reload_retunes_bfd_without_touching_bgp(lab: Lab) -> None:
    """A reload that changes the profile (300 -> 600 ms) retunes the running BFD session by a
    Poll sequence: FRR sees the new interval, BGP and the ExaBGP child stay as they were."""
    rig = Rig(
        lab,
        router=BGPD.format(global_extra="", neighbor_extra=" neighbor 10.0.0.2 bfd profile fast\n"),
        speaker=SPEAKER.format(peer_extra="", extra=""),
    )
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        wait_until(
            lambda: (p := rig.bfd.bfd_peer("10.0.0.2")) and p.get("remote-transmit-interval") == 300,
            timeout_s=20,
            desc=f"FRR sees 300 ms: {rig.bfd.bfd_peers()}",
        )
        exabgp = rig.speaker.exabgp_pid()
        established = rig.frr.neighbor("10.0.0.2")["connectionsEstablished"]
        rig.speaker.reload(
            SPEAKER.format(peer_extra="", extra="").replace("transmitInterval: 300ms", "transmitInterval: 600ms")
        )
        peer = wait_until(
            lambda: (p := rig.bfd.bfd_peer("10.0.0.2")) and p.get("remote-transmit-interval") == 600 and p,
            timeout_s=20,
            desc=f"FRR sees 600 ms: {rig.bfd.bfd_peers()}",
        )
        assert peer["status"] == "up"
        assert rig.speaker.exabgp_pid() == exabgp and pid_alive(exabgp)
        assert rig.frr.neighbor("10.0.0.2")["connectionsEstablished"] == established
        assert not rig.speaker.events("session_stopping")
        assert not [e for e in rig.speaker.events("bfd_down") if e["takes_bgp_down"]]
    finally:
        rig.close()


def test_withdraw_mode_withdraws_before_admin_down(lab: Lab) -> None:
    """shutdown withdraw: the routes go first, then BFD AdminDown (the router sees no BFD Down
    while it still has our routes)."""
    rig = Rig(
        lab,
        router=BGPD.format(global_extra="", neighbor_extra=" neighbor 10.0.0.2 bfd profile fast\n"),
        speaker=SPEAKER.format(peer_extra="", extra="shutdown: {mode: withdraw}\n"),
    )
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        rig.speaker.wait_event("bfd_up", peer="tor-a", timeout_s=20)
        code, _ = rig.speaker.terminate()
        assert code == 0, rig.speaker.tail()
        events = [
            e["event"] for e in rig.speaker.events() if e.get("event") in ("route_withdrawn", "bfd_admin_down_sent")
        ]
        assert events.count("route_withdrawn") == len(VIPS) and events[-1] == "bfd_admin_down_sent", events
        assert rig.speaker.events("bfd_admin_down_sent")[0]["confirmed"] is True
        wait_until(lambda: not rig.routes(), timeout_s=5, desc="routes gone")
    finally:
        rig.close()


def test_multihop_bfd_through_a_router(lab: Lab) -> None:
    """An eBGP multihop peer two hops away: BFD on UDP 4784 (RFC 5883) comes Up with FRR's
    multihop session (minimumTtl 254 accepts the one hop between), and a dark path takes BGP
    down within about a second."""
    node_ns, hop, far = lab.netns("node"), lab.netns("hop"), lab.netns("far")
    lab.link(node_ns, "10.0.2.2/24", hop, "10.0.2.1/24")
    lab.link(hop, "10.0.3.1/24", far, "10.0.3.2/24")
    lab.run("ip", "netns", "exec", hop, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.run("ip", "-n", node_ns, "route", "add", "10.0.3.0/24", "via", "10.0.2.1")
    lab.run("ip", "-n", far, "route", "add", "10.0.2.0/24", "via", "10.0.3.1")
    router = (
        BGPD.format(
            global_extra="", neighbor_extra=" neighbor 10.0.2.2 ebgp-multihop 2\n neighbor 10.0.2.2 bfd profile fast\n"
        )
        .replace("10.0.0.2", "10.0.2.2")
        .replace("bgp router-id 10.0.0.1", "bgp router-id 10.0.3.2")
    )
    frr = frr_with_bfd(lab, far, router, bfd_profile_block(extra="  minimum-ttl 254\n"))
    speaker_config = (
        SPEAKER.format(peer_extra="    ebgpMultiHop: 2\n", extra="")
        .replace("10.0.0.1", "10.0.3.2")
        .replace("routerID: 10.0.0.2", "routerID: 10.0.2.2")
        .replace("    detectMultiplier: 3\n", "    detectMultiplier: 3\n    minimumTtl: 254\n")
    )
    api = FakeKubeApi(netns=node_ns, bookmark_interval_s=1.0).start()
    speaker = SpeakerProcess(
        netns=node_ns, workdir=lab.root / "speaker", config=speaker_config, kubeconfig=api.kubeconfig(), node_name=NODE
    )
    try:
        api.apply(node(NODE))
        api.apply(service("default", "s0", ips=["192.0.2.1"]))
        api.apply(endpoint_slice("default", "s0-1", service_name="s0", endpoints=[("10.244.1.5", NODE, True, True)]))
        speaker.start()
        peer = wait_until(
            lambda: (p := frr.bfd_peer("10.0.2.2")) and p.get("status") == "up" and p,
            timeout_s=30,
            desc=f"FRR's multihop BFD peer up: {frr.bfd_peers()}; {speaker.tail(5)}",
        )
        assert peer["multihop"] is True
        speaker.wait_event("bfd_up", peer="tor-a", timeout_s=10)
        wait_until(lambda: "192.0.2.1/32" in frr.best_paths(), timeout_s=30, desc="route at FRR")
        darkened = time.monotonic()
        result = run_in(node_ns, "nft", "add", "table", "inet", "dark")
        assert result.returncode == 0, result.stderr
        for chain, hook, match in (("in", "input", "saddr"), ("out", "output", "daddr")):
            spec = f"{{ type filter hook {hook} priority -10; }}"
            assert run_in(node_ns, "nft", "add", "chain", "inet", "dark", chain, spec).returncode == 0
            assert (
                run_in(node_ns, "nft", "add", "rule", "inet", "dark", chain, "ip", match, "10.0.3.2", "drop").returncode
                == 0
            )
        speaker.wait_event("session_stopping", peer="tor-a", reason="bfd_down", timeout_s=10)
        closed_s = time.monotonic() - darkened
        print(f"multihop BFD: speaker closed BGP {closed_s:.2f} s after the path went dark")
        assert closed_s < 3.0
    finally:
        speaker.close()
        api.stop()


def test_a_killed_bfd_child_is_restarted(lab: Lab) -> None:
    """SIGKILL the BFD child: the daemon logs bfd_exited, starts a new one, and BFD and BGP
    are Up again. The speaker itself does not take BGP down (a new child starts afresh), but
    the router does: its bfdd stops hearing us for longer than 0.9 s (C bit 0: our BFD shares
    fate with the speaker), so FRR resets the session once; the routes come back."""
    rig = Rig(
        lab,
        router=BGPD.format(global_extra="", neighbor_extra=" neighbor 10.0.0.2 bfd profile fast\n"),
        speaker=SPEAKER.format(peer_extra="", extra=""),
    )
    try:
        rig.start()
        wait_until(lambda: rig.routes() == VIPS, timeout_s=30, desc=f"routes at FRR; {rig.speaker.tail(5)}")
        rig.speaker.wait_event("bfd_up", peer="tor-a", timeout_s=20)
        child = rig.speaker.wait_event("bfd_started")["pid"]
        dropped = rig.frr.neighbor("10.0.0.2")["connectionsDropped"]
        killed = time.monotonic()
        os.kill(child, signal.SIGKILL)
        exited = rig.speaker.wait_event("bfd_exited", timeout_s=10)
        assert exited["pid"] == child
        assert rig.speaker.wait_event("bfd_started", after=1, timeout_s=10)["pid"] != child
        rig.speaker.wait_event("bfd_up", peer="tor-a", after=1, timeout_s=20)
        wait_until(
            lambda: rig.routes() == VIPS and rig.established(), timeout_s=30, desc=f"routes back; {rig.speaker.tail(5)}"
        )
        resets = rig.frr.neighbor("10.0.0.2")["connectionsDropped"] - dropped
        print(f"BFD child killed: BFD and routes back after {time.monotonic() - killed:.2f} s; FRR resets: {resets}")
        assert resets <= 1
        assert not rig.speaker.events("session_stopping")
    finally:
        rig.close()
