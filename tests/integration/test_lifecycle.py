"""Lifecycle and reliability against real FRR: rolling restart with graceful restart, RFC 8326
drain, ExaBGP faults, API-server outages, router restarts, hold-down. Each test prints
what it measured."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.kubeapi import endpoint_slice, service
from lab.netns import Lab, PathSampler, pid_alive, wait_until
from lab.speaker import SpeakerProcess
from lab.topology import CONFIG_DIR, SingleNode, single_node
from tests.integration.conftest import NODE, require_prerequisites

N = 20
PREFIXES = {f"192.0.2.{i}/32" for i in range(1, N + 1)}

GR_FRR = (
    (CONFIG_DIR / "frr" / "bgpd.conf")
    .read_text()
    .replace(" bgp router-id 10.0.0.1\n", " bgp router-id 10.0.0.1\n bgp graceful-restart\n")
)
BASE = (CONFIG_DIR / "speaker.yaml").read_text()


def build(lab: Lab, speaker_extra: str = "", *, peer_extra: str = "", frr: str | None = None) -> SingleNode:
    return single_node(lab, frr_config=frr, speaker_config=BASE + peer_extra + speaker_extra)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_prerequisites()
    with Lab() as built:
        yield built


def many_services(topology: SingleNode, *, policy: str = "Cluster", endpoint_node: str = "node-b") -> None:
    for i in range(1, N + 1):
        topology.api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"], policy=policy))
        topology.api.apply(
            endpoint_slice(
                "default", f"s{i}-1", service_name=f"s{i}", endpoints=[("10.244.1.5", endpoint_node, True, True)]
            )
        )


def wait_all_best(topology: SingleNode, timeout_s: float = 20.0) -> float:
    started = time.monotonic()
    wait_until(
        lambda: PREFIXES <= set(topology.frr.best_paths()),
        timeout_s=timeout_s,
        desc=f"all {N} prefixes best; speaker: {topology.speaker.tail(6)}",
    )
    return time.monotonic() - started


def established_count(topology: SingleNode) -> int:
    return int(topology.frr.neighbor("10.0.0.2").get("connectionsEstablished", 0))


# -- 1. rolling restart ------------------------------------------------------------------


def test_rolling_restart_with_graceful_restart_never_drops_a_route(lab: Lab) -> None:
    """gracefulRestart + shutdown keep: SIGTERM then a new speaker, FRR's table sampled throughout."""
    topology = build(lab, "shutdown: {mode: keep}\n", peer_extra="    gracefulRestart: 120s\n", frr=GR_FRR)
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        before = established_count(topology)
        with PathSampler(topology.frr, PREFIXES) as sampler:
            code, stop_s = topology.speaker.terminate()
            assert code == 0, topology.speaker.tail()
            topology.speaker.start()  # the DaemonSet's next pod
            started = time.monotonic()
            wait_until(lambda: established_count(topology) > before, timeout_s=20, desc="session re-established")
            topology.speaker.wait_event("end_of_rib_sent", timeout_s=20)
            wait_until(
                lambda: not any(path.get("stale") for path in topology.frr.best_paths().values()),
                timeout_s=5,
                desc="FRR clears the stale flags after our End-of-RIB",
            )
            recovered_s = time.monotonic() - started
        print(
            f"rolling restart: stop {stop_s:.2f} s, new session + End-of-RIB {recovered_s:.2f} s;"
            f" fewest prefixes seen best {sampler.fewest}/{N} over {sampler.samples} samples"
        )
        assert sampler.samples > 10
        assert sampler.fewest == N, sampler.missing[:3]
        assert topology.speaker.events("routes_kept")
    finally:
        topology.close()


# -- 2. drain ----------------------------------------------------------------------------


def test_drain_marks_routes_graceful_shutdown_then_withdraws(lab: Lab) -> None:
    """shutdown drain: every route gets 65535:0 at once, is withdrawn after drainSeconds; exit 0."""
    topology = build(lab, "shutdown: {mode: drain, drainSeconds: 3}\n")
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        topology.speaker.signal(signal.SIGTERM)
        started = time.monotonic()
        wait_until(
            lambda: all(
                "graceful-shutdown" in (topology.frr.best_path(p) or {}).get("community", {}).get("string", "")
                for p in PREFIXES
            ),
            timeout_s=5,
            desc="every route carries graceful-shutdown",
        )
        marked_s = time.monotonic() - started
        wait_until(lambda: not set(topology.frr.best_paths()) & PREFIXES, timeout_s=10, desc="all withdrawn")
        gone_s = time.monotonic() - started
        code = topology.speaker.wait_exit(timeout_s=10)
        print(f"drain: marked after {marked_s:.2f} s, withdrawn after {gone_s:.2f} s (drainSeconds 3)")
        assert code == 0
        assert 3.0 <= gone_s < 6.0
    finally:
        topology.close()


def test_second_sigterm_cuts_the_drain_short(lab: Lab) -> None:
    """A second SIGTERM during a 60 s drain withdraws at once."""
    topology = build(lab, "shutdown: {mode: drain, drainSeconds: 60}\n")
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        topology.speaker.signal(signal.SIGTERM)
        topology.speaker.wait_event("drain_started")
        started = time.monotonic()
        topology.speaker.signal(signal.SIGTERM)
        wait_until(lambda: not set(topology.frr.best_paths()) & PREFIXES, timeout_s=10, desc="all withdrawn")
        print(f"second SIGTERM: all withdrawn {time.monotonic() - started:.2f} s later")
        assert topology.speaker.wait_exit(timeout_s=10) == 0
        assert topology.speaker.wait_event("drain_finished")["interrupted"] is True
    finally:
        topology.close()


# -- 3. ExaBGP faults ---------------------------------------------------------------------


def test_exabgp_killed_with_graceful_restart_keeps_every_route(lab: Lab) -> None:
    """SIGKILL to ExaBGP: restarted within 2 s; with graceful restart FRR never loses a route."""
    topology = build(lab, peer_extra="    gracefulRestart: 120s\n", frr=GR_FRR)
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        pid = topology.speaker.exabgp_pid()
        with PathSampler(topology.frr, PREFIXES) as sampler:
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            started = topology.speaker.wait_event("exabgp_started", after=1, timeout_s=5)
            topology.speaker.wait_event("end_of_rib_sent", after=1, timeout_s=20)
            recovered_s = time.monotonic() - killed
        restart_s = _log_time(started) - killed
        print(
            f"ExaBGP SIGKILL (GR): new ExaBGP after {restart_s:.2f} s, routes re-sent + EoR after {recovered_s:.2f} s;"
            f" fewest best {sampler.fewest}/{N}"
        )
        assert restart_s < 2.0
        assert sampler.fewest == N, sampler.missing[:3]
    finally:
        topology.close()


def _log_time(event: dict[str, object]) -> float:
    """A log event's timestamp on this process's monotonic clock."""
    from datetime import datetime

    at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
    return time.monotonic() - (time.time() - at)


def test_exabgp_crash_loop_makes_the_speaker_exit_non_zero(lab: Lab) -> None:
    """ExaBGP dying over and over: back off, then exit 1 so the kubelet sees it; no orphan."""
    topology = build(lab)
    try:
        topology.speaker.start()
        pids = []
        for attempt in range(10):
            if topology.speaker.proc is not None and topology.speaker.proc.poll() is not None:
                break
            try:
                started = topology.speaker.wait_event("exabgp_started", after=attempt, timeout_s=15)
            except AssertionError:
                break
            pids.append(started["pid"])
            os.kill(started["pid"], signal.SIGKILL)
        code = topology.speaker.wait_exit(timeout_s=20)
        print(f"crash loop: {len(pids)} ExaBGP starts, then exit {code}")
        assert code == 1
        assert topology.speaker.events("exabgp_gave_up")
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        topology.close()


# -- 4. API server faults --------------------------------------------------------------------


def test_api_outage_keeps_routes_and_resyncs_without_flapping(lab: Lab) -> None:
    """Default policy keep: the API server answers 503, then stops listening; routes stay; one log
    line each way; on return no withdraw/announce pair."""
    topology = build(lab)
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        announced = len(topology.speaker.events("route_announced"))
        with PathSampler(topology.frr, PREFIXES) as sampler:
            topology.api.set_outage(503)
            topology.api.drop_watches()
            topology.speaker.wait_event("api_unreachable", timeout_s=10)
            topology.api.stop()
            time.sleep(3.0)  # the outage itself: nothing to wait for, the routes must simply stay
            topology.api.start()
            topology.api.set_outage(None)
            recovered = topology.speaker.wait_event("api_recovered", timeout_s=30)
        print(f"API outage: {recovered['outage_s']} s; fewest best {sampler.fewest}/{N} over {sampler.samples} samples")
        assert sampler.fewest == N
        assert len(topology.speaker.events("api_unreachable")) == 1
        assert topology.speaker.events("route_withdrawn") == []
        assert len(topology.speaker.events("route_announced")) == announced
    finally:
        topology.close()


def test_api_outage_policy_withdraw_after_grace(lab: Lab) -> None:
    """apiOutage withdraw, graceSeconds 2: routes leave about 2 s into the outage and return with the API."""
    topology = build(lab, "apiOutage: {policy: withdraw, graceSeconds: 2}\n")
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        topology.api.set_outage(503)
        topology.api.drop_watches()
        unreachable = topology.speaker.wait_event("api_unreachable", timeout_s=10)
        wait_until(lambda: not set(topology.frr.best_paths()) & PREFIXES, timeout_s=10, desc="withdrawn")
        withdrawn = topology.speaker.wait_event("route_withdrawn")
        assert withdrawn["reason"] == "api_outage"
        gap_s = _log_time(topology.speaker.wait_event("api_outage_withdraw")) - _log_time(unreachable)
        topology.api.set_outage(None)
        back = wait_all_best(topology, timeout_s=30)
        print(f"apiOutage withdraw: withdrawn {gap_s:.2f} s after the outage was noticed; back {back:.2f} s after")
        assert 1.0 <= gap_s <= 4.0
    finally:
        topology.close()


# -- 5. peer faults ---------------------------------------------------------------------


def test_router_restart_gets_every_route_back_within_a_second(lab: Lab) -> None:
    """bgpd stopped and started: every route is best again within 1 s of Established."""
    topology = build(lab)
    try:
        many_services(topology)
        topology.speaker.start()
        wait_all_best(topology)
        config = (topology.frr.workdir / "bgpd.conf").read_text()
        topology.frr.stop()
        topology.speaker.wait_event("peer_down", timeout_s=10)
        topology.frr.start(config)
        wait_until(
            lambda: topology.frr.neighbor("10.0.0.2").get("bgpState") == "Established",
            timeout_s=30,
            desc="session re-established",
        )
        up = time.monotonic()
        wait_all_best(topology, timeout_s=10)
        back_s = time.monotonic() - up
        print(f"router restart: all {N} routes best {back_s:.2f} s after Established")
        assert back_s < 1.0
        assert len(topology.speaker.events("peer_down")) == 1
    finally:
        topology.close()


# -- 6. hold-down ------------------------------------------------------------------------------


def test_hold_down_rides_out_an_endpoint_flap(lab: Lab) -> None:
    """Local policy, withdrawAfter 3s: the endpoint leaves for 1 s and comes back: the route never
    leaves FRR; when it leaves for good the withdraw follows ~3 s later."""
    topology = build(lab, "holdDown: {withdrawAfter: 3s}\n")
    vip = "192.0.2.1/32"
    here = endpoint_slice("default", "s1-1", service_name="s1", endpoints=[("10.244.1.5", NODE, True, True)])
    away = endpoint_slice("default", "s1-1", service_name="s1", endpoints=[("10.244.1.5", "node-b", True, True)])
    try:
        topology.api.apply(service("default", "s1", ips=["192.0.2.1"], policy="Local"))
        topology.api.apply(here)
        topology.speaker.start()
        wait_until(lambda: vip in topology.frr.best_paths(), timeout_s=20, desc="announced")
        with PathSampler(topology.frr, {vip}) as sampler:
            topology.api.apply(away)
            topology.speaker.wait_event("route_withdraw_held", timeout_s=5)
            time.sleep(1.0)  # the flap's length
            topology.api.apply(here)
            wait_until(
                lambda: topology.speaker.events("reconcile_finished")[-1]["desired"] == 1,
                timeout_s=5,
                desc="the endpoint is back in the decision",
            )
        assert sampler.fewest == 1
        assert topology.speaker.events("route_withdrawn") == []
        topology.api.apply(away)
        left = time.monotonic()
        wait_until(lambda: vip not in topology.frr.best_paths(), timeout_s=10, desc="withdrawn after hold-down")
        delay_s = time.monotonic() - left
        print(f"hold-down 3 s: 1 s flap ridden out ({sampler.samples} samples); real withdraw after {delay_s:.2f} s")
        assert 2.5 <= delay_s <= 5.0
        assert topology.speaker.wait_event("route_withdrawn")["reason"] == "no_local_endpoints"
    finally:
        topology.close()


# -- 8. security -------------------------------------------------------------------------------


def test_runs_without_root_and_keeps_its_files_private(lab: Lab) -> None:
    """As user nobody with no capabilities: session up, route best; ExaBGP's config 0600 in a 0700 dir."""
    topology = build(lab)
    try:
        topology.speaker.close()
        for path in (topology.speaker.config_path, topology.speaker.kubeconfig_path):
            path.chmod(0o644)
        topology.speaker.workdir.chmod(0o755)
        speaker = SpeakerProcess(
            netns=topology.speaker.netns,
            workdir=topology.speaker.workdir,
            config=topology.speaker.config_path.read_text(),
            kubeconfig=topology.speaker.kubeconfig_path.read_text(),
            node_name=NODE,
            user="nobody",
        )
        topology.speaker = speaker
        many_services(topology)
        speaker.start()
        wait_all_best(topology)
        pid = speaker.exabgp_pid()
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        caps = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
        config_path = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()
        mode_file = stat.S_IMODE(os.stat(config_path).st_mode)
        mode_dir = stat.S_IMODE(os.stat(os.path.dirname(config_path)).st_mode)
        print(f"non-root: ExaBGP uid {uid}, CapEff {caps}; config {oct(mode_file)} in {oct(mode_dir)}")
        assert uid != "0" and int(caps, 16) == 0
        assert (mode_file, mode_dir) == (0o600, 0o700)
    finally:
        topology.close()
