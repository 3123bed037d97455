"""Live config edits against real FRR (MetalLB e2e parity, issue 16 item 3).

One lab for the module: a node with two routers, tor-a (eBGP, AS 64512) and tor-b (iBGP,
AS 64513). Every scenario first reloads to its own "before" config (so none depends on
another's end state), then applies one edit (SIGHUP, or the config-file poll) and checks,
in FRR's JSON, the attributes and the presence or absence of each prefix per router.
Around every edit a ``Witness`` asserts that no other session was reset (the ExaBGP
child's PID; FRR's established and dropped counts unchanged, its uptime not gone back),
that the routes the edit does not concern never left FRR (``PathSampler``), and counts
the UPDATEs each router received (an attribute change is one UPDATE: an implicit replace,
never a withdraw then an announce)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lab.kubeapi import node
from lab.netns import Lab, PathSampler, pid_alive, wait_until
from lab.topology import Peering, two_tors
from tests.integration.conftest import NODE, require_prerequisites
from tests.integration.test_peering import cluster_service, established, frr_config, wait_absent, wait_path

NEIGHBOR = {"tor-a": "10.0.0.2", "tor-b": "10.0.1.2"}
"""The node's address as each router names it."""
PEERS = {
    "tor-a": {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512},
    "tor-b": {"name": "tor-b", "peerAddress": "10.0.1.1", "peerASN": 64513},
}
STABLE = "203.0.113.1/32"
"""Announced to every peer by an advertisement no edit touches: it must never leave FRR."""
STABLE_AD = {"name": "stable", "serviceSelectors": [{"matchLabels": {"tier": "stable"}}]}
WEB, API, DB = "192.0.2.10/32", "192.0.2.20/32", "198.51.100.30/32"
WEB24 = "192.0.2.0/24"


def tier(*names: str) -> list[dict[str, Any]]:
    return [{"matchLabels": {"tier": name}} for name in names]


def speaker_config(
    advertisements: list[dict[str, Any]],
    peers: tuple[str, ...] = ("tor-a", "tor-b"),
    peer_settings: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The speaker's config: these peers (with extra ``peer_settings`` by name) and the stable
    advertisement before ``advertisements``."""
    data = {
        "apiVersion": "bgpspeaker.io/v1alpha1",
        "kind": "SpeakerConfig",
        "myASN": 64513,
        "routerID": "10.0.0.2",
        "peers": [PEERS[name] | (peer_settings or {}).get(name, {}) for name in peers],
        "advertisements": [STABLE_AD, *advertisements],
    }
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def rack() -> Iterator[Peering]:
    """The two routers and a running speaker; Services stable, web, api and db (one endpoint
    each, on node-b: Cluster policy announces from node-a); node-a labelled rack=r1."""
    require_prerequisites()
    with Lab() as lab:
        peering = two_tors(
            lab,
            tor_a=frr_config(64512, "10.0.0.1", "10.0.0.2", 64513, "timers 1 3"),
            tor_b=frr_config(64513, "10.0.1.1", "10.0.1.2", 64513, "timers 1 3"),
            speaker_config=speaker_config([]),
        )
        try:
            peering.api.apply(node(NODE, labels={"rack": "r1"}))
            for name, ip in (("stable", STABLE), ("web", WEB), ("api", API), ("db", DB)):
                cluster_service(peering, name, ip.split("/")[0], labels={"tier": name})
            peering.speaker.start()
            for name, frr in peering.routers.items():
                wait_path(frr, STABLE, timeout_s=30)
                assert established(frr, NEIGHBOR[name])
            yield peering
        finally:
            peering.close()


Expect = dict[str, dict[str, dict[str, Any] | None]]
"""Router -> prefix -> attributes its best path must have ({}: present), or None: absent."""


def converge(peering: Peering, expect: Expect) -> None:
    """Wait until every router shows every expectation."""
    for router, prefixes in expect.items():
        frr = peering.routers[router]
        for prefix, want in prefixes.items():
            if want is None:
                wait_absent(frr, prefix, timeout_s=15)
            else:
                wait_path(frr, prefix, timeout_s=15, **want)


def settle(peering: Peering, expect: Expect, peers: tuple[str, ...] = ("tor-a", "tor-b")) -> None:
    """A scenario's starting point: ``expect`` shown and the sessions to ``peers`` Established."""
    converge(peering, expect)
    wait_until(
        lambda: all(established(peering.routers[name], NEIGHBOR[name]) for name in peers),
        timeout_s=20,
        desc=f"{peers} Established",
    )


def reload(peering: Peering, config: str, *, trigger: str = "sighup") -> dict[str, Any]:
    """Apply ``config`` by SIGHUP, or (``file_changed``) by replacing the file only, as a
    ConfigMap update does; return its ``config_reloaded`` line once the reconciler's pass
    that applied it has finished (a refused config fails the test)."""
    speaker = peering.speaker
    mark = len(speaker.events())
    if trigger == "sighup":
        speaker.reload(config)
    else:
        staging = speaker.config_path.with_suffix(".new")
        staging.write_text(config)
        staging.replace(speaker.config_path)  # found by the 2 s poll

    def applied() -> dict[str, Any] | None:
        since = speaker.events()[mark:]
        refused = [e for e in since if e.get("event") == "config_reload_failed"]
        assert not refused, refused
        names = [e.get("event") for e in since]
        if "config_applied" not in names:
            return None
        if "reconcile_finished" not in names[names.index("config_applied") :]:
            return None
        return next(e for e in since if e.get("event") == "config_reloaded")

    line: dict[str, Any] = wait_until(
        applied, timeout_s=15, desc=f"the reload applied and its pass finished; log tail: {speaker.tail()}"
    )
    return line


@dataclasses.dataclass
class Witness:
    """Watches the sessions named in ``untouched`` and the prefixes in ``kept`` across one edit."""

    peering: Peering
    untouched: tuple[str, ...]
    kept: dict[str, set[str]]
    """Router -> prefixes that must stay best there the whole time (``STABLE`` too, on every
    untouched router: the routers share names with the peers)."""

    def __post_init__(self) -> None:
        speaker = self.peering.speaker
        self.pids = {name: speaker.events("exabgp_started", peer=name)[-1]["pid"] for name in self.untouched}
        self.sessions = {name: self._session(name) for name in self.untouched}
        self.samplers = {
            router: PathSampler(self.peering.routers[router], {STABLE} | self.kept.get(router, set()))
            for router in self.untouched
        }
        self.log_mark = len(speaker.events())
        self.updates = {name: self._updates(name) for name in self.untouched}

    def _session(self, name: str) -> tuple[int, int, int]:
        """(established transitions, drops, uptime ms) of ``name``'s session at its router."""
        neighbor = self.peering.routers[name].neighbor(NEIGHBOR[name])
        assert neighbor.get("bgpState") == "Established", f"{name}: {neighbor.get('bgpState')}"
        return neighbor["connectionsEstablished"], neighbor["connectionsDropped"], neighbor["bgpTimerUpMsec"]

    def _updates(self, name: str) -> int:
        stats: int = self.peering.routers[name].neighbor(NEIGHBOR[name])["messageStats"]["updatesRecv"]
        return stats

    def __enter__(self) -> Witness:
        for sampler in self.samplers.values():
            sampler.__enter__()
        wait_until(lambda: all(s.samples > 0 for s in self.samplers.values()), timeout_s=10, desc="first samples")
        return self

    def __exit__(self, *exc: object) -> None:
        for sampler in self.samplers.values():
            sampler.__exit__()

    def events_since(self, event: str) -> list[dict[str, Any]]:
        """The speaker's ``event`` lines logged since this witness began."""
        return [e for e in self.peering.speaker.events()[self.log_mark :] if e.get("event") == event]

    def updates_since(self, router: str) -> int:
        """UPDATE messages ``router`` received from the node since this witness began."""
        return self._updates(router) - self.updates[router]

    def check(self) -> None:
        """No watched session was reset; no kept prefix ever left its router."""
        for name, pid in self.pids.items():
            assert pid_alive(pid), f"{name}: ExaBGP {pid} is gone"
            assert self.peering.speaker.events("exabgp_started", peer=name)[-1]["pid"] == pid, f"{name} restarted"
            now, before = self._session(name), self.sessions[name]
            assert now[:2] == before[:2] and now[2] >= before[2], f"{name}: session reset at the router: {before} {now}"
        for event in ("session_restarting", "session_stopping"):
            lines = [e for e in self.events_since(event) if e.get("peer") in self.untouched]
            assert not lines, lines
        for router, sampler in self.samplers.items():
            assert sampler.samples > 1
            assert not sampler.missing, (
                f"{router}: kept prefixes missing in {len(sampler.missing)} of {sampler.samples} samples: "
                f"{sampler.missing[:3]}"
            )
        for router, prefixes in self.kept.items():
            withdrawn = [
                e for e in self.events_since("route_withdrawn") if e["prefix"] in prefixes and router in e["peers"]
            ]
            assert not withdrawn, f"withdrawn from {router} on the way: {withdrawn}"


# -- add a peer ---------------------------------------------------------------------------

WEB_TO_ALL = {"name": "web", "serviceSelectors": tier("web")}
BOTH = ("tor-a", "tor-b")


API_TO_A = {"name": "api", "serviceSelectors": tier("api"), "peers": ["tor-a"]}


def test_added_peer_comes_up_with_exactly_its_routes(rack: Peering) -> None:
    """Adding tor-b starts only its session; it gets exactly the VIPs meant for it (not those
    of an advertisement listing tor-a only); tor-a untouched."""
    tor_b = rack.routers["tor-b"]
    reload(rack, speaker_config([WEB_TO_ALL, API_TO_A], peers=("tor-a",)))
    wait_until(lambda: not established(tor_b, NEIGHBOR["tor-b"]), timeout_s=15, desc="tor-b down")
    settle(rack, {"tor-a": {WEB: {}, API: {}}}, peers=("tor-a",))

    with Witness(rack, untouched=("tor-a",), kept={"tor-a": {WEB, API}}) as witness:
        line = reload(rack, speaker_config([WEB_TO_ALL, API_TO_A]))
        wait_until(lambda: established(tor_b, NEIGHBOR["tor-b"]), timeout_s=20, desc="tor-b Established")
        wait_until(
            lambda: set(tor_b.best_paths()) == {STABLE, WEB} or None,
            timeout_s=15,
            desc=f"tor-b has exactly {STABLE} and {WEB}",
        )
        witness.check()
        assert witness.updates_since("tor-a") == 0
    sent_to_b = {e["prefix"] for e in witness.events_since("route_announced") if "tor-b" in e["peers"]}
    assert sent_to_b == {STABLE, WEB}
    assert line["peers_added"] == ["tor-b"]
    assert line["peers_removed"] == line["peers_changed"] == line["advertisements_changed"] == []
    assert set(rack.routers["tor-a"].best_paths()) == {STABLE, WEB, API}


def test_removed_peer_is_withdrawn_then_closed_alone(rack: Peering) -> None:
    """Removing tor-b withdraws its routes and closes its session; tor-a untouched."""
    tor_b = rack.routers["tor-b"]
    reload(rack, speaker_config([WEB_TO_ALL]))
    settle(rack, {r: {WEB: {}} for r in BOTH})
    with Witness(rack, untouched=("tor-a",), kept={"tor-a": {WEB}}) as witness:
        line = reload(rack, speaker_config([WEB_TO_ALL], peers=("tor-a",)))
        wait_until(lambda: not established(tor_b, NEIGHBOR["tor-b"]), timeout_s=15, desc="tor-b closed")
        assert tor_b.best_paths() == {}
        witness.check()
        assert witness.updates_since("tor-a") == 0
    withdrawn = {e["prefix"]: e["reason"] for e in witness.events_since("route_withdrawn") if "tor-b" in e["peers"]}
    assert withdrawn == {STABLE: "peer_removed", WEB: "peer_removed"}
    assert line["peers_removed"] == ["tor-b"]
    assert line["peers_added"] == line["peers_changed"] == line["advertisements_changed"] == []


# -- advertisement edits ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Edit:
    """One advertisement edit: the config before and after, and what FRR shows for each."""

    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    expect_before: Expect
    expect_after: Expect
    kept: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    """Router -> prefixes that stay announced through the edit (attribute changes: replaced in place)."""
    one_update: tuple[tuple[str, str], ...] = ()
    silent: bool = False
    """Nothing to send: neither router gets an UPDATE."""
    """(router, prefix) whose attribute change must reach the router as exactly one UPDATE."""
    trigger: str = "sighup"
    """How the edit is applied: ``sighup``, or ``file_changed`` (the config-file poll)."""
    changed: tuple[str, ...] = ("web",)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def web_ad(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "serviceSelectors": tier("web"), **fields}


EDITS = {
    "communities": Edit(
        before=[web_ad(communities=["64512:100"])],
        after=[web_ad(communities=["64512:200", "large:64512:1:2"])],
        expect_before={r: {WEB: {"community__string": "64512:100"}} for r in BOTH},
        expect_after={
            r: {WEB: {"community__string": "64512:200", "largeCommunity__string": "64512:1:2"}} for r in BOTH
        },
        kept={r: {WEB} for r in BOTH},
        one_update=(("tor-a", WEB), ("tor-b", WEB)),
    ),
    "localPref": Edit(
        before=[web_ad(peers=["tor-b"], localPref=100)],  # iBGP only: the config refuses it toward tor-a
        after=[web_ad(peers=["tor-b"], localPref=300)],
        expect_before={"tor-b": {WEB: {"locPrf": 100}}, "tor-a": {WEB: None}},
        expect_after={"tor-b": {WEB: {"locPrf": 300}}, "tor-a": {WEB: None}},
        kept={"tor-b": {WEB}},
        one_update=(("tor-b", WEB),),
    ),
    "renamed, same meaning: nothing sent": Edit(
        before=[web_ad()],
        after=[
            {
                "name": "www",
                "serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}],
            }
        ],
        expect_before={r: {WEB: {}} for r in BOTH},
        expect_after={r: {WEB: {}} for r in BOTH},
        kept={r: {WEB} for r in BOTH},
        silent=True,
        changed=(),
        added=("www",),
        removed=("web",),
    ),
    "aggregationLength": Edit(
        before=[web_ad()],
        after=[web_ad(aggregationLength=24)],
        expect_before={r: {WEB: {}, WEB24: None} for r in BOTH},
        expect_after={r: {WEB24: {}, WEB: None} for r in BOTH},
    ),
    "serviceSelectors": Edit(
        before=[web_ad()],
        after=[web_ad(serviceSelectors=tier("api"))],
        expect_before={r: {WEB: {}, API: None} for r in BOTH},
        expect_after={r: {API: {}, WEB: None} for r in BOTH},
    ),
    "serviceSelectors, any one selects": Edit(
        before=[web_ad()],
        after=[web_ad(serviceSelectors=tier("web", "api"))],
        expect_before={r: {WEB: {}, API: None, DB: None} for r in BOTH},
        expect_after={r: {WEB: {}, API: {}, DB: None} for r in BOTH},
        kept={r: {WEB} for r in BOTH},
    ),
    "nodeSelectors": Edit(
        before=[web_ad(nodeSelectors=[{"matchLabels": {"rack": "r1"}}])],
        after=[web_ad(nodeSelectors=[{"matchLabels": {"rack": "r2"}}])],
        expect_before={r: {WEB: {}} for r in BOTH},
        expect_after={r: {WEB: None} for r in BOTH},
    ),
    "peers list": Edit(
        before=[web_ad(peers=["tor-a"])],
        after=[web_ad(peers=["tor-b"])],
        expect_before={"tor-a": {WEB: {}}, "tor-b": {WEB: None}},
        expect_after={"tor-a": {WEB: None}, "tor-b": {WEB: {}}},
    ),
    "peers list removed: all peers": Edit(
        before=[web_ad(peers=["tor-a"])],
        after=[web_ad()],
        expect_before={"tor-a": {WEB: {}}, "tor-b": {WEB: None}},
        expect_after={r: {WEB: {}} for r in BOTH},
        kept={"tor-a": {WEB}},
    ),
    "split: /32 to one peer, /24 aggregate to all": Edit(
        before=[web_ad()],
        after=[
            {"name": "web-host", "serviceSelectors": tier("web"), "peers": ["tor-b"]},
            {"name": "web-aggregate", "serviceSelectors": tier("web"), "aggregationLength": 24},
        ],
        expect_before={r: {WEB: {}, WEB24: None} for r in BOTH},
        expect_after={"tor-a": {WEB24: {}, WEB: None}, "tor-b": {WEB: {}, WEB24: {}}},
        kept={"tor-b": {WEB}},
        trigger="file_changed",
        changed=(),
        added=("web-aggregate", "web-host"),
        removed=("web",),
    ),
}


@pytest.mark.parametrize("edit", list(EDITS.values()), ids=list(EDITS))
def test_advertisement_edit_reaches_frr_without_resetting_sessions(rack: Peering, edit: Edit) -> None:
    """The edit shows in FRR's JSON per router; no session resets; unconcerned routes never leave."""
    reload(rack, speaker_config(edit.before))
    settle(rack, edit.expect_before)

    with Witness(rack, untouched=BOTH, kept=edit.kept) as witness:
        started = time.monotonic()
        line = reload(rack, speaker_config(edit.after), trigger=edit.trigger)
        converge(rack, edit.expect_after)
        print(f"edit {edit.after[0]['name']}: in FRR {time.monotonic() - started:.2f} s after the reload")
        for router, _prefix in edit.one_update:
            assert witness.updates_since(router) == 1, f"{router}: {witness.updates_since(router)} UPDATEs"
        if edit.silent:
            assert witness.updates_since("tor-a") == witness.updates_since("tor-b") == 0
        witness.check()
    assert line["trigger"] == edit.trigger
    assert line["advertisements_changed"] == list(edit.changed)
    assert line["advertisements_added"] == list(edit.added)
    assert line["advertisements_removed"] == list(edit.removed)
    assert line["peers_added"] == line["peers_removed"] == line["peers_changed"] == []
    assert line["changed"] is True


def test_unchanged_reload_says_nothing_changed(rack: Peering) -> None:
    """A SIGHUP with the same file: ``config_reloaded`` with ``changed`` false, nothing sent."""
    config = speaker_config([web_ad()])
    reload(rack, config)
    settle(rack, {r: {WEB: {}} for r in BOTH})
    with Witness(rack, untouched=BOTH, kept={r: {WEB} for r in BOTH}) as witness:
        line = reload(rack, config)
        witness.check()
        assert witness.updates_since("tor-a") == witness.updates_since("tor-b") == 0
    assert line["changed"] is False


def test_changed_peer_resets_only_its_own_session(rack: Peering) -> None:
    """A new hold time for tor-b restarts tor-b's session (ExaBGP must reopen it) and nothing else;
    the log names the peer."""
    tor_b = rack.routers["tor-b"]
    reload(rack, speaker_config([web_ad()]))
    settle(rack, {r: {WEB: {}} for r in BOTH})
    reopened = tor_b.neighbor(NEIGHBOR["tor-b"])["connectionsEstablished"] + 1
    slower = speaker_config([web_ad()], peer_settings={"tor-b": {"holdTime": "30s"}})
    with Witness(rack, untouched=("tor-a",), kept={"tor-a": {WEB}}) as witness:
        line = reload(rack, slower)
        wait_until(
            lambda: tor_b.neighbor(NEIGHBOR["tor-b"]).get("connectionsEstablished") == reopened,
            timeout_s=20,
            desc="tor-b re-established once",
        )
        converge(rack, {"tor-b": {WEB: {}, STABLE: {}}})
        witness.check()
    assert line["peers_changed"] == ["tor-b"]
    assert line["peers_added"] == line["peers_removed"] == line["advertisements_changed"] == []
    assert [e["peer"] for e in witness.events_since("session_restarting")] == ["tor-b"]


def test_peer_edit_that_keeps_the_session_resets_nothing(rack: Peering) -> None:
    """tor-b gains nodeSelectors that still select this node: named as changed, but no session
    resets and nothing is sent (only what ExaBGP's own config holds needs a new session)."""
    reload(rack, speaker_config([web_ad()]))
    settle(rack, {r: {WEB: {}} for r in BOTH})
    selected = speaker_config([web_ad()], peer_settings={"tor-b": {"nodeSelectors": [{"matchLabels": {"rack": "r1"}}]}})
    with Witness(rack, untouched=BOTH, kept={r: {WEB} for r in BOTH}) as witness:
        line = reload(rack, selected)
        witness.check()
        assert witness.updates_since("tor-a") == witness.updates_since("tor-b") == 0
    assert line["peers_changed"] == ["tor-b"]
