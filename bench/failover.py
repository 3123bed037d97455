"""Failover and load-sharing figures with real traffic in the multi-node lab.

    sudo .venv/bin/python -m bench.failover [--flows 120] [--only NAME ...] [--json FILE]
                                            [--full-hold]

Three speaker nodes, FRR (zebra + bgpd, kernel ECMP with an L4 hash) as the router, a
client sending ``--flows`` UDP flows (distinct source ports) through it to one VIP,
each flow probed every 20 ms (lab/multinode.py, lab/flows.py). Each scenario starts
the speakers with its config, lets traffic run, applies one fault, and reports:

- ``detected_s``: fault -> the router's multipath set (FRR) no longer holds the node;
- ``lost``/``probes``, ``dark_flows``, ``longest_dark_s`` (the longest run of lost
  probes of any one flow), ``moved`` (flows whose answering node changed).

Scenarios (``--only``): hang-default, hang-3s, rolling-gr-keep, rolling-withdraw,
drain, link-down, link-down-no-nhg, router-restart, router-restart-gr, router-crash-gr,
split, churn; with BFD on router and nodes: hang-bfd, hang-bfd-long (lit again 20 s
after the path left: past the speaker's 5 s ``bgpHoldDown``), rolling-bfd-gr-keep,
restart-bfd-listen-range, hang-bfd-listen-range, hang-bfd-listen-range-long (the router
accepts nodes by ``bgp listen range``).
The default-holdTime hang stops after 10 s (the path is still there; FIELD-NOTES
measured 85 s) unless ``--full-hold``.
Figures only: nothing here passes or fails. Timings are noisy on a shared 2-core
machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.bfdrouter import FrrBfd
from lab.multinode import BFD_PROFILE, SPEAKER_BFD, VIP, MultiNode, multinode, speaker_config
from lab.netns import Lab, wait_until

PREFIX = f"{VIP}/32"
ALL = {"node-1", "node-2", "node-3"}
SETTLE_S = 1.0
"""Traffic before and after each fault (the measurement windows)."""


def _start(mn: MultiNode, make: Callable[[int], str], *, endpoints: dict[str, int] | None = None) -> None:
    mn.reset()
    for n in mn.nodes.values():
        mn.set_config(n.name, make(n.index))
    mn.vip_service("web", endpoints=endpoints)
    mn.start_speakers()
    mn.wait_multipath(PREFIX, set(endpoints or ALL))
    frr = mn.frr
    if isinstance(frr, FrrBfd) and "bfdProfile" in make(1):
        # A BFD session that never came up never takes BGP down: faults wait for Up.
        wait_until(
            lambda: all((frr.bfd_peer(n.address) or {}).get("status") == "up" for n in mn.nodes.values()),
            timeout_s=30,
            desc="BFD up with every node",
        )


def _wait_gone(mn: MultiNode, node: str, started: float, *, timeout_s: float) -> float | None:
    """Seconds from ``started`` until ``node`` left FRR's multipath set (None: not within timeout)."""
    address = mn.nodes[node].address
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if address not in mn.multipath(PREFIX):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def _row(name: str, config: str, report: Any, **extra: Any) -> dict[str, Any]:
    row = {"scenario": name, "config": config, **report.summary(), **extra}
    print(json.dumps(row), flush=True)
    return row


LONG_DARK_S = 20.0
"""hang-*-long: the node stays dark this long after it left the multipath set (past the 5 s hold)."""
BFD = {"bfd_profile": BFD_PROFILE, "extra": SPEAKER_BFD}
"""speaker_config arguments for BFD 300 ms x 3 (the lab's router has the same profile)."""


def hang(
    mn: MultiNode,
    flows: int,
    *,
    hold_time: str | None,
    watch_s: float,
    bfd: bool = False,
    recover: bool = False,
    dark_s: float = 0.0,
) -> dict[str, Any]:
    """node-2 goes dark (nftables drop, link up); until the router drops its path
    (``recover``: then lit again ``dark_s`` later; how long until it is back in the multipath set)."""
    _start(mn, functools.partial(speaker_config, hold_time=hold_time, **(BFD if bfd else {})))
    with mn.prober(flows=flows) as running:
        time.sleep(SETTLE_S)
        started = time.monotonic()
        mn.go_dark("node-2")
        detected = _wait_gone(mn, "node-2", started, timeout_s=watch_s)
        time.sleep(SETTLE_S)
    label = f"holdTime {hold_time or '90s (default)'}" + (", BFD 300ms x 3" if bfd else "")
    extra: dict[str, Any] = {}
    if recover:
        time.sleep(dark_s)  # the outage itself
        lit = time.monotonic()
        mn.come_back("node-2")
        address = mn.nodes["node-2"].address
        while time.monotonic() - lit < 30.0 and address not in mn.multipath(PREFIX):
            time.sleep(0.1)
        back = address in mn.multipath(PREFIX)
        extra["back_after_lit_s"] = round(time.monotonic() - lit, 2) if back else "> 30 (not back)"
        extra["lit_after_detected_s"] = round(lit - started - (detected or 0.0), 2)
    return _row(
        f"node hang, {label}",
        label,
        running.report(),
        detected_s=round(detected, 2) if detected is not None else f"> {watch_s:.0f} (still in the multipath set)",
        **extra,
    )


def rolling(mn: MultiNode, flows: int, *, graceful: bool, bfd: bool = False, only: str | None = None) -> dict[str, Any]:
    """Restart the three speakers (or ``only`` one) one after another (SIGTERM, start,
    session up, path fresh); a node not back within 30 s is reported, not waited for."""
    if graceful:
        make = functools.partial(
            speaker_config, graceful_restart="120s", shutdown="{mode: keep}", **(BFD if bfd else {})
        )
        label = "gracefulRestart 120s + shutdown keep" + (" + BFD 300ms x 3" if bfd else "")
    else:
        make = speaker_config
        label = "defaults (shutdown withdraw, no GR)"
    _start(mn, make)
    addresses = {n.address for n in mn.nodes.values()}
    started = time.monotonic()
    not_back: list[str] = []
    with mn.prober(flows=flows) as running:
        time.sleep(SETTLE_S)
        for name in [only] if only else sorted(mn.nodes):
            mn.restart_speaker(name)
            try:
                wait_until(
                    lambda: mn.multipath(PREFIX) == addresses and not any(p.get("stale") for p in mn.paths(PREFIX)),
                    timeout_s=30,
                    desc=f"{name} back and fresh",
                )
            except AssertionError:
                not_back.append(name)
        time.sleep(SETTLE_S)
    report = running.report()
    time.sleep(10.0)  # observation window: does every node stay in?
    title = f"restart of {only}" if only else "rolling restart of 3 speakers"
    return _row(
        title,
        label,
        report,
        took_s=round(time.monotonic() - started, 1),
        not_back_within_30s=not_back,
        multipath_10s_later=sorted(mn.node_of(hop) for hop in mn.multipath(PREFIX)),
    )


def drain(mn: MultiNode, flows: int) -> dict[str, Any]:
    """SIGTERM node-1's speaker with shutdown drain (2 s)."""
    _start(mn, functools.partial(speaker_config, shutdown="{mode: drain, drainSeconds: 2}"))
    with mn.prober(flows=flows) as running:
        time.sleep(SETTLE_S)
        started = time.monotonic()
        mn.nodes["node-1"].speaker.signal(15)
        detected = _wait_gone(mn, "node-1", started, timeout_s=15)
        mn.nodes["node-1"].speaker.wait_exit(30)
        time.sleep(SETTLE_S)
    return _row(
        "drain on SIGTERM",
        "shutdown drain, drainSeconds 2",
        running.report(),
        detected_s=round(detected, 2) if detected is not None else None,
    )


def link_down(mn: MultiNode, flows: int, *, nexthop_groups: bool = True) -> dict[str, Any]:
    """node-2's end of its link goes down, then up (defaults: holdTime 90 s). Without
    ``nexthop_groups`` zebra installs plain multipath routes (``no zebra nexthop kernel enable``)."""
    _start(mn, speaker_config)
    if not nexthop_groups:
        mn.frr.vtysh("configure terminal\nno zebra nexthop kernel enable")
    with mn.prober(flows=flows) as running:
        time.sleep(SETTLE_S)
        started = time.monotonic()
        mn.link("node-2", up=False)
        detected = _wait_gone(mn, "node-2", started, timeout_s=15)
        time.sleep(SETTLE_S)
    report = running.report()
    # And back: FRR's view against the kernel's once the session is up again.
    mn.link("node-2", up=True)
    addresses = {n.address for n in mn.nodes.values()}
    back = time.monotonic()
    wait_until(lambda: mn.multipath(PREFIX) == addresses, timeout_s=60, desc="node-2 back in FRR")
    frr_back_s = time.monotonic() - back
    time.sleep(3.0)  # how the kernel looks 3 s later (observation window)
    kernel = sorted(mn.node_of(hop) for hop in mn.kernel_nexthops(PREFIX))
    return _row(
        "link down (node side), then up",
        "defaults" + ("" if nexthop_groups else "; router: no zebra nexthop kernel enable"),
        report,
        detected_s=round(detected, 2) if detected is not None else None,
        link_up_frr_back_s=round(frr_back_s, 2),
        kernel_nexthops_3s_after=kernel,
    )


def router_restart(mn: MultiNode, flows: int, *, graceful: bool, kill: bool = False) -> dict[str, Any]:
    """bgpd on the router stopped (SIGTERM, or SIGKILL: a crash) and started (zebra keeps running)."""
    make = functools.partial(speaker_config, graceful_restart="120s") if graceful else speaker_config
    _start(mn, make)
    addresses = {n.address for n in mn.nodes.values()}
    with mn.prober(flows=flows) as running:
        time.sleep(SETTLE_S)
        started = time.monotonic()
        mn.frr.restart_bgpd(kill=kill)
        wait_until(
            lambda: set(mn.kernel_nexthops(PREFIX)) == addresses, timeout_s=60, desc="all three back in the kernel"
        )
        back = time.monotonic() - started
        time.sleep(SETTLE_S)
    label = "gracefulRestart 120s on the nodes" if graceful else "defaults"
    return _row(
        f"router restart (bgpd {'SIGKILL' if kill else 'SIGTERM'})",
        label,
        running.report(),
        back_in_kernel_s=round(back, 2),
    )


def split(mn: MultiNode, flows: int) -> list[dict[str, Any]]:
    """Traffic split against the endpoint ratio, ecmpWeight localEndpoints (one probe round per flow set)."""
    rows = []
    make = functools.partial(speaker_config, advertisements="[{name: w, ecmpWeight: localEndpoints}]")
    for endpoints in (
        {"node-1": 1, "node-2": 1, "node-3": 1},
        {"node-1": 2, "node-2": 1},
        {"node-1": 3, "node-2": 2, "node-3": 1},
    ):
        mn.reset()
        for n in mn.nodes.values():
            mn.set_config(n.name, make(n.index))
        mn.vip_service("web", policy="Local", endpoints=endpoints)
        mn.start_speakers()
        mn.wait_multipath(PREFIX, set(endpoints))
        total = sum(endpoints.values())
        want = {name: round(count / total, 3) for name, count in endpoints.items()}
        wait_until(
            lambda want=endpoints: (  # type: ignore[misc]
                len(mn.kernel_nexthops(PREFIX)) == len(want)
                and len(set(mn.kernel_nexthops(PREFIX).values())) == len(set(want.values()))
            ),
            timeout_s=15,
            desc="weights installed",
        )
        weights = {mn.node_of(hop): weight for hop, weight in mn.kernel_nexthops(PREFIX).items()}
        report = mn.probe(flows=max(flows, 1800), duration_s=1.0, interval_ms=200)
        counts = report.split()
        got = {name: round(count / sum(counts.values()), 3) for name, count in counts.items()}
        worst = max(abs(got.get(name, 0) - share) / share for name, share in want.items())
        row = {
            "scenario": "traffic split, ecmpWeight localEndpoints",
            "endpoints": endpoints,
            "kernel_weights": dict(sorted(weights.items())),
            "want_share": want,
            "flows": len(report.flows),
            "got_share": got,
            "worst_relative_error": round(worst, 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def churn(mn: MultiNode) -> dict[str, Any]:
    """A scale-out landing on node-1: its ready endpoints step 1, 2, ... 10, one every 0.3 s
    (node-2 keeps 1). Counts endpoint changes against the UPDATEs node-1 sent
    (route_announced) and the time from the last change to the final kernel weights."""
    make = functools.partial(speaker_config, advertisements="[{name: w, ecmpWeight: localEndpoints}]")
    mn.reset()
    for n in mn.nodes.values():
        mn.set_config(n.name, make(n.index))
    mn.vip_service("web", policy="Local", endpoints={"node-1": 1, "node-2": 1})
    mn.start_speakers()
    mn.wait_multipath(PREFIX, {"node-1", "node-2"})
    speaker = mn.nodes["node-1"].speaker
    before = len(speaker.events("route_announced"))
    started = time.monotonic()
    for count in range(2, 11):
        mn.set_endpoints("web", {"node-1": count, "node-2": 1})
        time.sleep(0.3)  # the scale-out's pace, not a synchronization
    last_change = time.monotonic() - 0.3
    one, two = mn.nodes["node-1"].address, mn.nodes["node-2"].address
    wait_until(lambda: mn.kernel_nexthops(PREFIX) == {one: 90, two: 9}, timeout_s=15, desc="weights 10:1")
    row = {
        "scenario": "scale-out on node-1, 1 -> 10 endpoints in 2.7 s (ecmpWeight localEndpoints)",
        "endpoint_changes": 9,
        "updates_sent": len(speaker.events("route_announced")) - before,
        "last_change_to_kernel_s": round(time.monotonic() - last_change, 2),
        "took_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=120)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--full-hold", action="store_true", help="wait out the default 90 s hold time")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    scenarios: dict[str, Callable[[MultiNode], Any]] = {
        "hang-default": lambda mn: hang(mn, args.flows, hold_time=None, watch_s=120.0 if args.full_hold else 10.0),
        "hang-3s": lambda mn: hang(mn, args.flows, hold_time="3s", watch_s=30.0),
        "rolling-gr-keep": lambda mn: rolling(mn, args.flows, graceful=True),
        "rolling-withdraw": lambda mn: rolling(mn, args.flows, graceful=False),
        "drain": lambda mn: drain(mn, args.flows),
        "link-down": lambda mn: link_down(mn, args.flows),
        "link-down-no-nhg": lambda mn: link_down(mn, args.flows, nexthop_groups=False),
        "router-restart": lambda mn: router_restart(mn, args.flows, graceful=False),
        "router-restart-gr": lambda mn: router_restart(mn, args.flows, graceful=True),
        "router-crash-gr": lambda mn: router_restart(mn, args.flows, graceful=True, kill=True),
        "split": lambda mn: split(mn, args.flows),
        "churn": churn,
    }
    with_bfd: dict[str, Callable[[MultiNode], Any]] = {
        "hang-bfd": lambda mn: hang(mn, args.flows, hold_time=None, watch_s=30.0, bfd=True, recover=True),
        "rolling-bfd-gr-keep": lambda mn: rolling(mn, args.flows, graceful=True, bfd=True),
        "hang-bfd-long": lambda mn: hang(
            mn, args.flows, hold_time=None, watch_s=30.0, bfd=True, recover=True, dark_s=LONG_DARK_S
        ),
    }
    listen_range_bfd: dict[str, Callable[[MultiNode], Any]] = {
        "restart-bfd-listen-range": lambda mn: rolling(mn, args.flows, graceful=True, bfd=True, only="node-1"),
        "hang-bfd-listen-range": lambda mn: hang(mn, args.flows, hold_time=None, watch_s=30.0, bfd=True, recover=True),
        "hang-bfd-listen-range-long": lambda mn: hang(
            mn, args.flows, hold_time=None, watch_s=30.0, bfd=True, recover=True, dark_s=LONG_DARK_S
        ),
    }
    results: dict[str, Any] = {}
    if args.json and args.only and Path(args.json).exists():  # a partial run updates the file
        results = json.loads(Path(args.json).read_text())
    results.update({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "flows": args.flows})
    labs: list[tuple[dict[str, Callable[[MultiNode], Any]], Callable[[Lab], MultiNode]]] = [
        (scenarios, multinode),
        (with_bfd, lambda lab: multinode(lab, bfd=True)),
        # BFD, but the router accepts the nodes by listen range (dynamic neighbors).
        (listen_range_bfd, lambda lab: multinode(lab, bfd=True, listen_range=True)),
    ]
    for chosen, build in labs:
        wanted = [name for name in chosen if args.only is None or name in args.only]
        if not wanted:
            continue
        with Lab("fo") as lab:
            mn = build(lab)
            try:
                for name in wanted:
                    results[name] = chosen[name](mn)
                    if args.json:  # after each scenario: a failed one keeps the others' figures
                        with open(args.json, "w") as handle:
                            json.dump(results, handle, indent=1)
            finally:
                mn.close()


if __name__ == "__main__":
    main()
